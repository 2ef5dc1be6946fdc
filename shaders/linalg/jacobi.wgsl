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

// The rotation that zeroes w_p . w_q: (c, s, tau = s / (1 + c)).
fn rotation(alpha: f32, beta: f32, gamma: f32) -> vec3<f32> {
    let zeta = (beta - alpha) / (2.0 * gamma);
    var t = 0.5 / zeta;  // |zeta| huge: 1 + zeta^2 would overflow
    if (abs(zeta) < 1e15) {
        t = select(-1.0, 1.0, zeta >= 0.0) / (abs(zeta) + sqrt(fma(zeta, zeta, 1.0)));
    }
    let c = 1.0 / sqrt(fma(t, t, 1.0));
    let s = c * t;
    return vec3<f32>(c, s, s / (1.0 + c));
}

// Rotate rows at offsets p and q (elements first, first + step, ... < n) of w, or of v.
// x' = c x - s y, y' = s x + c y written as small corrections (Rutishauser): in float32 this
// keeps V orthogonal to ~5e-7 at n = 128, against ~3e-5 for the plain products.
fn rotate_w(p: u32, q: u32, first: u32, n: u32, step: u32, r: vec3<f32>) {
    for (var i = first; i < n; i += step) {
        let x = w[p + i];
        let y = w[q + i];
        w[p + i] = fma(-r.y, fma(r.z, x, y), x);
        w[q + i] = fma(r.y, fma(-r.z, y, x), y);
    }
}

fn rotate_v(p: u32, q: u32, first: u32, n: u32, step: u32, r: vec3<f32>) {
    for (var i = first; i < n; i += step) {
        let x = v[p + i];
        let y = v[q + i];
        v[p + i] = fma(-r.y, fma(r.z, x, y), x);
        v[q + i] = fma(r.y, fma(-r.z, y, x), y);
    }
}

// Rotate a pair's rows (at: rows_at's) of w, and of v when WITH_V.
fn rotate(at: vec4<u32>, first: u32, step: u32, r: vec3<f32>) {
    rotate_w(at.x, at.y, first, params.len, step, r);
    if (WITH_V) {
        rotate_v(at.z, at.w, first, params.rows, step, r);
    }
}

// The rows (lo, hi) that pair k of round r rotates (hi = npad - 1 >= rows: the dummy partner
// of an odd row count).
fn pair(r: u32, k: u32) -> vec2<u32> {
    let last = params.npad - 1u;
    var p = r;
    var q = last;
    if (k > 0u) {
        p = (r + k) % last;
        q = (r + last - k) % last;
    }
    return vec2<u32>(min(p, q), max(p, q));
}

// Where rows pq of batch entry b start: (in w, in w, in v, in v).
fn rows_at(b: u32, pq: vec2<u32>) -> vec4<u32> {
    return vec4<u32>(b * params.w_stride + pq * params.len, b * params.v_stride + pq * params.rows);
}

// (w_p . w_p, w_q . w_q, w_p . w_q) over elements first, first + step, ... of the rows of w
// at p and q.
fn gram(p: u32, q: u32, first: u32, step: u32) -> vec3<f32> {
    var a = 0.0;
    var bb = 0.0;
    var g = 0.0;
    for (var i = first; i < params.len; i += step) {
        let x = w[p + i];
        let y = w[q + i];
        a = fma(x, x, a);
        bb = fma(y, y, bb);
        g = fma(x, y, g);
    }
    return vec3<f32>(a, bb, g);
}

fn rotates(alpha: f32, beta: f32, gamma: f32) -> bool {
    return abs(gamma) > params.tol * sqrt(alpha) * sqrt(beta) && alpha > 0.0 && beta > 0.0;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pq = pair(params.round, wid.x);
    if (pq.y >= params.rows) { return; }  // the dummy partner of an odd row count
    let at = rows_at(params.b0 + wid.y, pq);
    let sums = gram(at.x, at.y, lid, WG);
    sa[lid] = sums.x;
    sb[lid] = sums.y;
    sg[lid] = sums.z;
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
    if (!rotates(alpha, beta, gamma)) { return; }
    rotate(at, lid, WG, rotation(alpha, beta, gamma));
    if (lid == 0u) { atomicAdd(&count[params.sweep], 1u); }
}

// A whole sweep in one workgroup per batch entry, for rows <= 64: each round's (up to 32)
// pairs run side by side, LANES invocations each, rounds separated by barriers. Small
// batched matrices then need one dispatch per sweep instead of npad-1.
const LANES: u32 = 8u;
var<workgroup> fa: array<f32, 256>;
var<workgroup> fb: array<f32, 256>;
var<workgroup> fg: array<f32, 256>;

@compute @workgroup_size(256)
fn sweep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = params.b0 + wid.x;
    let slot = lid / LANES;
    let lane = lid % LANES;
    var rotated = 0u;
    for (var r = 0u; r < params.npad - 1u; r++) {
        let pq = pair(r, slot);
        let live = slot < params.npad / 2u && pq.y < params.rows;
        let at = rows_at(b, pq);
        var sums = vec3<f32>(0.0);
        if (live) {
            sums = gram(at.x, at.y, lane, LANES);
        }
        fa[lid] = sums.x;
        fb[lid] = sums.y;
        fg[lid] = sums.z;
        workgroupBarrier();
        for (var s = LANES / 2u; s > 0u; s >>= 1u) {
            if (lane < s) {
                fa[lid] += fa[lid + s];
                fb[lid] += fb[lid + s];
                fg[lid] += fg[lid + s];
            }
            workgroupBarrier();
        }
        let alpha = fa[slot * LANES];
        let beta = fb[slot * LANES];
        let gamma = fg[slot * LANES];
        if (live && rotates(alpha, beta, gamma)) {
            rotate(at, lane, LANES, rotation(alpha, beta, gamma));
            rotated++;
        }
        storageBarrier();
        workgroupBarrier();
    }
    if (lane == 0u && rotated > 0u) { atomicAdd(&count[params.sweep], rotated); }
}
