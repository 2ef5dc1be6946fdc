// Householder QR, blocked update: C[r, c] -= sum_k Y[r, k] * Vt[k, c] for rows r0 .. r0+rows-1
// and columns c0 .. m-1 of each batch entry's C (rows of length m, the transposed storage of
// qr_panel.wgsl). Y (rows x NB) = (C V) T or (C V) T^T comes from the GEMMs; Vt holds the
// panel's reflectors (NB x m). Tiles of 64 x 64 outputs, 4 x 4 per invocation.
override NB: u32 = 32u;

struct Params {
    m: u32, rows: u32, r0: u32, c0: u32, c_stride: u32, vt_base: u32, vt_stride: u32,
    b0: u32,
}

@group(0) @binding(0) var<storage, read_write> cm: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> vt: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> ys: array<f32, 2048>;   // 64 rows x NB
var<workgroup> vs: array<f32, 2048>;   // NB x 64 columns

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wid.z;
    let m = params.m;
    let col0 = params.c0 + wid.x * 64u;
    let row0 = wid.y * 64u;
    let ybase = b * params.rows * NB;
    let vbase = params.vt_base + b * params.vt_stride;
    for (var e = lid; e < 64u * NB; e += 256u) {
        let r = e / NB;
        let k = e % NB;
        ys[e] = select(0.0, y[ybase + (row0 + r) * NB + k], row0 + r < params.rows);
        let kk = e / 64u;
        let c = e % 64u;
        vs[e] = select(0.0, vt[vbase + kk * m + col0 + c], col0 + c < m);
    }
    workgroupBarrier();
    var acc: array<array<f32, 4>, 4>;
    for (var k = 0u; k < NB; k++) {
        for (var i = 0u; i < 4u; i++) {
            let yv = ys[(lid3.y * 4u + i) * NB + k];
            for (var j = 0u; j < 4u; j++) {
                acc[i][j] = fma(yv, vs[k * 64u + lid3.x + j * 16u], acc[i][j]);
            }
        }
    }
    let cbase = b * params.c_stride;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid3.y * 4u + i;
        if (r >= params.rows) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid3.x + j * 16u;
            if (c < m) {
                let at = cbase + (params.r0 + r) * m + c;
                cm[at] -= acc[i][j];
            }
        }
    }
}
