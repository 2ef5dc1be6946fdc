// Rows picked by an index list along one axis of x viewed as (outer, len, inner): numpy's
// take and advanced indexing. Gather: dst[o, k, j] = src[o, indices[k], j]; SCATTER (the
// assignment x[idx] = v): dst[o, indices[k], j] = src[o, k, j]. A negative index counts from
// the end, as numpy's. The host checks the indices first (numpy raises IndexError; a shader
// cannot), so an index still outside [0, len) only reads as 0 or is skipped, never touching
// memory past the rows.
alias T = f32;
override SCATTER: bool = false;
override WG: u32 = 256u;

struct Params { n: u32, count: u32, len: u32, inner: u32 }  // n = outer * count * inner

@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var<storage, read> indices: array<i32>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    let j = i % params.inner;
    let row = i / params.inner;
    var index = indices[row % params.count];
    if (index < 0) {
        index += i32(params.len);
    }
    let inside = index >= 0 && u32(index) < params.len;
    let at = ((row / params.count) * params.len + u32(index)) * params.inner + j;
    if (SCATTER) {
        if (inside) {
            dst[at] = src[i];
        }
    } else {
        var v = T(0);
        if (inside) {
            v = src[at];
        }
        dst[i] = v;
    }
}
