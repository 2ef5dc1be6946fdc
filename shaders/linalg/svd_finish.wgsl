// One-sided Jacobi SVD, after convergence (see jacobi.wgsl): `norms` gives each row of w its
// length (the singular value); `order` ranks them (descending, ties by index), writes the
// sorted values times `scale` to `out` and the permutation to `perm`; `gather` writes the
// rows of src in that order, divided by their singular value when NORMALIZE (rows whose value
// is below `tiny` become 0: the caller completes them to an orthonormal basis), transposed
// when TRANSPOSE; `merge` copies the rows of src whose sorted value `sv` is above `tiny` into
// out (out_rows rows per batch entry: a completed basis whose first rows should be src's).
override WG: u32 = 64u;
override NORMALIZE: bool = false;
override TRANSPOSE: bool = false;

struct Params { rows: u32, len: u32, scale: f32, tiny: f32, b0: u32, out_rows: u32 }

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> sv: array<f32>;
@group(0) @binding(2) var<storage, read_write> perm: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn norms(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wid.y;
    let row = (b * params.rows + wid.x) * params.len;
    var acc = 0.0;
    for (var i = lid; i < params.len; i += WG) { let x = src[row + i]; acc = fma(x, x, acc); }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) { sv[b * params.rows + wid.x] = sqrt(red[0]); }
}

@compute @workgroup_size(WG)
fn order(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wid.y;
    let i = wid.x * WG + lid;
    if (i >= params.rows) { return; }
    let base = b * params.rows;
    let mine = sv[base + i];
    var rank = 0u;
    for (var j = 0u; j < params.rows; j++) {
        let other = sv[base + j];
        if (other > mine || (other == mine && j < i)) { rank++; }
    }
    perm[base + rank] = i;
    out[base + rank] = params.scale * mine;
}

@compute @workgroup_size(16, 16)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let b = params.b0 + wid.z;
    let r = wid.y * 16u + l.y;
    let c = wid.x * 16u + l.x;
    if (r >= params.rows || c >= params.len) { return; }
    let source = perm[b * params.rows + r];
    var value = src[(b * params.rows + source) * params.len + c];
    if (NORMALIZE) {
        let sigma = sv[b * params.rows + source];
        value = select(0.0, value / sigma, sigma > params.tiny);
    }
    var at = (b * params.rows + r) * params.len + c;
    if (TRANSPOSE) { at = (b * params.len + c) * params.rows + r; }
    out[at] = value;
}

@compute @workgroup_size(16, 16)
fn merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let b = params.b0 + wid.z;
    let r = wid.y * 16u + l.y;
    let c = wid.x * 16u + l.x;
    if (r >= params.rows || c >= params.len || !(sv[b * params.rows + r] > params.tiny)) {
        return;
    }
    out[(b * params.out_rows + r) * params.len + c] = src[(b * params.rows + r) * params.len + c];
}
