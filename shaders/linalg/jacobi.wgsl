// One-sided (Hestenes) Jacobi SVD, one round of a sweep: rotates disjoint pairs of rows of
// `w` (batch x rows x len; the rows are the columns being orthogonalized) and the same rows
// of `v` (batch x rows x rows, the accumulated right rotations) when WITH_V.
//
// Pairs follow the round-robin (circle) ordering: with npad = rows rounded up to even, round
// r pairs (r, npad-1) and ((r + k) % (npad-1), (r - k) % (npad-1)) for k = 1 .. npad/2-1, so
// npad-1 rounds visit every pair once. A pair is rotated when |w_p . w_q| > tol ||w_p|| ||w_q||
// (the relative off-diagonal test of Demmel & Veselic); each rotation adds 1 to count[sweep],
// which the host reads to detect convergence. The rotation zeroes w_p . w_q (Rutishauser's
// formulas, as in LAPACK's sgesvj).

override WG: u32 = 64u;   // a power of two
override WITH_V: bool = true;

struct Params {
    rows: u32, len: u32, npad: u32, round: u32, tol: f32, sweep: u32,
    w_stride: u32, v_stride: u32, b0: u32,
}

@group(0) @binding(0) var<storage, read_write> w: array<f32>;
@group(0) @binding(1) var<storage, read_write> v: array<f32>;
@group(0) @binding(2) var<storage, read_write> count: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> sa: array<f32, WG>;
var<workgroup> sb: array<f32, WG>;
var<workgroup> sg: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = wid.x;
    let b = params.b0 + wid.y;
    let last = params.npad - 1u;
    var p = params.round;
    var q = last;
    if (k > 0u) {
        p = (params.round + k) % last;
        q = (params.round + last - k) % last;
    }
    let lo = min(p, q);
    let hi = max(p, q);
    if (hi >= params.rows) { return; }  // the dummy partner of an odd row count
    let len = params.len;
    let wp = b * params.w_stride + lo * len;
    let wq = b * params.w_stride + hi * len;
    var a = 0.0;
    var bb = 0.0;
    var g = 0.0;
    for (var i = lid; i < len; i += WG) {
        let x = w[wp + i];
        let y = w[wq + i];
        a = fma(x, x, a);
        bb = fma(y, y, bb);
        g = fma(x, y, g);
    }
    sa[lid] = a;
    sb[lid] = bb;
    sg[lid] = g;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            sa[lid] += sa[lid + s];
            sb[lid] += sb[lid + s];
            sg[lid] += sg[lid + s];
        }
        workgroupBarrier();
    }
    let alpha = sa[0];
    let beta = sb[0];
    let gamma = sg[0];
    if (!(abs(gamma) > params.tol * sqrt(alpha) * sqrt(beta)) || alpha == 0.0 || beta == 0.0) {
        return;
    }
    let zeta = (beta - alpha) / (2.0 * gamma);
    var t = 0.5 / zeta;  // |zeta| huge: 1 + zeta^2 would overflow
    if (abs(zeta) < 1e15) {
        t = select(-1.0, 1.0, zeta >= 0.0) / (abs(zeta) + sqrt(fma(zeta, zeta, 1.0)));
    }
    let c = 1.0 / sqrt(fma(t, t, 1.0));
    let s = c * t;
    // x' = c x - s y, y' = s x + c y written as small corrections (Rutishauser): in float32
    // this keeps V orthogonal to ~5e-7 at n = 128, against ~3e-5 for the plain products.
    let tau = s / (1.0 + c);
    for (var i = lid; i < len; i += WG) {
        let x = w[wp + i];
        let y = w[wq + i];
        w[wp + i] = fma(-s, fma(tau, x, y), x);
        w[wq + i] = fma(s, fma(-tau, y, x), y);
    }
    if (WITH_V) {
        let vp = b * params.v_stride + lo * params.rows;
        let vq = b * params.v_stride + hi * params.rows;
        for (var i = lid; i < params.rows; i += WG) {
            let x = v[vp + i];
            let y = v[vq + i];
            v[vp + i] = fma(-s, fma(tau, x, y), x);
            v[vq + i] = fma(s, fma(-tau, y, x), y);
        }
    }
    if (lid == 0u) { atomicAdd(&count[params.sweep], 1u); }
}
