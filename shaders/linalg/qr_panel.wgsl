// Householder QR, panel step (LAPACK sgeqr2 + slarft on one block of columns).
//
// The matrix is stored transposed: row c of `at` (length m) is column c of A, so a column's
// elements are contiguous. One workgroup factors the panel of columns j0 .. j0+width-1 of
// one batch entry: for each column it forms the reflector H = I - tau v v^T (v[col] = 1,
// beta = -sign(alpha) ||x||, as LAPACK's slarfg), leaves beta on the diagonal and v below it,
// and applies H to the panel's later columns. It then writes the panel's reflectors as rows
// of `vt` (nb x m, zero above the diagonal, so GEMMs can run over whole rows) and the
// compact-WY factor T (nb x nb, upper triangular: H_0 H_1 ... = I - V T V^T) to `tm`.
// Rows of vt / T past `width` are zero, so every panel is nb wide for the GEMMs.
override WG: u32 = 256u;     // a power of two, = NB * LANES
override NB: u32 = 32u;      // panel width (reflectors per panel)
const LANES: u32 = 8u;       // invocations per column when applying a reflector

struct Params {
    m: u32, j0: u32, width: u32, at_stride: u32,
    vt_base: u32, vt_stride: u32, t_base: u32, t_stride: u32, batch: u32,
}

@group(0) @binding(0) var<storage, read_write> at: array<f32>;
@group(0) @binding(1) var<storage, read_write> vt: array<f32>;
@group(0) @binding(2) var<storage, read_write> tm: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> red: array<f32, WG>;
var<workgroup> taus: array<f32, NB>;
var<workgroup> gram: array<f32, 1024>;   // NB * NB, NB <= 32
var<workgroup> tsh: array<f32, 1024>;

fn sum_all(lid: u32, value: f32) -> f32 {
    red[lid] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let b = wid.y * nwg.x + wid.x;
    let m = params.m;
    let base = min(b, params.batch - 1u) * params.at_stride;  // spare groups redo the last
    let live = b < params.batch;
    let end = params.j0 + params.width;
    for (var p = 0u; p < params.width; p++) {
        let col = params.j0 + p;
        let row = base + col * m;
        var acc = 0.0;
        for (var i = col + 1u + lid; i < m; i += WG) { let x = at[row + i]; acc = fma(x, x, acc); }
        let sigma2 = sum_all(lid, acc);
        let alpha = at[row + col];
        let norm = sqrt(fma(alpha, alpha, sigma2));
        let beta = select(norm, -norm, alpha >= 0.0);
        let reflect = sigma2 > 0.0;
        let tau = select(0.0, (beta - alpha) / beta, reflect);
        let scale = select(0.0, 1.0 / (alpha - beta), reflect);
        workgroupBarrier();  // everyone has read alpha
        if (live) {
            if (reflect) {
                for (var i = col + 1u + lid; i < m; i += WG) { at[row + i] *= scale; }
            }
            if (lid == 0u) { at[row + col] = select(alpha, beta, reflect); }
        }
        if (lid == 0u) { taus[p] = tau; }
        storageBarrier();
        workgroupBarrier();
        // Apply H to the panel's later columns, LANES invocations per column.
        let slot = lid / LANES;
        let lane = lid % LANES;
        let q = col + 1u + slot;
        let qrow = base + q * m;
        var d = 0.0;
        if (q < end) {
            if (lane == 0u) { d = at[qrow + col]; }
            for (var i = col + 1u + lane; i < m; i += LANES) { d = fma(at[row + i], at[qrow + i], d); }
        }
        red[lid] = d;
        workgroupBarrier();
        for (var s = LANES / 2u; s > 0u; s >>= 1u) {
            if (lane < s) { red[lid] += red[lid + s]; }
            workgroupBarrier();
        }
        let w = tau * red[slot * LANES];
        workgroupBarrier();
        if (live && q < end && tau != 0.0) {
            if (lane == 0u) { at[qrow + col] -= w; }
            for (var i = col + 1u + lane; i < m; i += LANES) { at[qrow + i] -= w * at[row + i]; }
        }
        storageBarrier();
        workgroupBarrier();
    }
    // Reflectors as full rows of vt: 0 above the diagonal, 1 on it, v below.
    let vbase = min(b, params.batch - 1u) * params.vt_stride + params.vt_base;
    for (var p = 0u; p < NB; p++) {
        let col = params.j0 + p;
        for (var i = lid; i < m; i += WG) {
            var value = 0.0;
            if (p < params.width && i >= col) {
                value = select(at[base + col * m + i], 1.0, i == col);
            }
            if (live) { vt[vbase + p * m + i] = value; }
        }
    }
    storageBarrier();
    workgroupBarrier();
    // Gram matrix of the reflectors (upper part), from the rows just written.
    for (var e = lid; e < NB * NB; e += WG) {
        let r = e / NB;
        let c = e % NB;
        var g = 0.0;
        if (r < c && c < params.width) {
            for (var i = params.j0 + c; i < m; i++) {
                g = fma(vt[vbase + r * m + i], vt[vbase + c * m + i], g);
            }
        }
        gram[e] = g;
        tsh[e] = 0.0;
    }
    workgroupBarrier();
    // slarft (forward, columnwise): T[0:c, c] = -tau_c T[0:c, 0:c] (V^T v_c), T[c, c] = tau_c.
    for (var c = 0u; c < params.width; c++) {
        var s = 0.0;
        if (lid < c) {
            for (var l = lid; l < c; l++) { s = fma(tsh[lid * NB + l], gram[l * NB + c], s); }
        }
        workgroupBarrier();
        if (lid < c) { tsh[lid * NB + c] = -taus[c] * s; }
        if (lid == c) { tsh[c * NB + c] = taus[c]; }
        workgroupBarrier();
    }
    let tbase = min(b, params.batch - 1u) * params.t_stride + params.t_base;
    for (var e = lid; e < NB * NB; e += WG) {
        if (live) { tm[tbase + e] = tsh[e]; }
    }
}
