//! parts: reduction/layout
// One pass of argmax / argmin over x viewed as (outer, len, inner) along len; the layout,
// the lane/column mapping (reduction/layout) and the pass structure are those of reduce.wgsl.
// Values travel with their indices; on ties the smaller index wins, so the result is numpy's
// first occurrence. The first pass takes indices from the position (FIRST), later passes
// from idx_in.
alias In = f32;
alias Acc = f32;  // f32 for float input (f16 included), else In
override WX: u32 = 1u;
override WY: u32 = 256u;
override LANES_ON_X: bool = false;
override OP: u32 = 0u;  // 0 argmax, 1 argmin
override FIRST: bool = true;

struct Params {
    outer: u32, len: u32, inner: u32, s_outer: u32, s_len: u32, s_inner: u32,
    chunks: u32, tiles: u32, items: u32,
}

@group(0) @binding(0) var<storage, read> x: array<In>;
@group(0) @binding(1) var<storage, read> idx_in: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<Acc>;
@group(0) @binding(3) var<storage, read_write> idx_out: array<i32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> values: array<Acc, WX * WY>;
var<workgroup> indices: array<i32, WX * WY>;

// Does (v, j) beat (best, at)? A NaN beats every number, as in numpy (its first index).
fn better(v: Acc, j: i32, best: Acc, at: i32) -> bool {
    let v_nan = is_nan(v);
    let best_nan = is_nan(best);
    if (v_nan || best_nan) {
        return v_nan && (!best_nan || j < at);
    }
    if (v == best) {
        return j < at;
    }
    return select((v < best), (v > best), OP == 0u);
}

@compute @workgroup_size(WX * WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) index: u32) {
    let g = wid.y * nwg.x + wid.x;
    if (g >= params.outer * params.tiles * params.chunks) {
        return;
    }
    let p = place(g, index);
    var best = Acc(x[p.base]);
    var at = 0;
    if (!FIRST) {
        at = idx_in[p.base];
    }
    for (var k = 0u; k < params.items; k++) {
        let l = p.start + k * WY;
        if (l < params.len) {
            let q = p.base + l * params.s_len;
            let v = Acc(x[q]);
            var j = i32(l);
            if (!FIRST) {
                j = idx_in[q];
            }
            if (better(v, j, best, at)) {
                best = v;
                at = j;
            }
        }
    }
    let slot = p.slot;
    values[slot] = best;
    indices[slot] = at;
    workgroupBarrier();
    for (var s = WY / 2u; s > 0u; s >>= 1u) {
        if (p.lid.y < s && better(values[slot + s * WX], indices[slot + s * WX], values[slot],
                                  indices[slot])) {
            values[slot] = values[slot + s * WX];
            indices[slot] = indices[slot + s * WX];
        }
        workgroupBarrier();
    }
    if (p.lid.y == 0u && p.col < params.inner) {
        out[p.dst] = values[p.lid.x];
        idx_out[p.dst] = indices[p.lid.x];
    }
}
