// Flash attention (Dao et al. 2022, FlashAttention-2 loop order): out = softmax(q k^T * scale
// + mask) v, one workgroup per BQ query rows of one (batch, head). Keys/values stream through
// workgroup memory BK at a time with an online softmax (running row max m, running sum l,
// accumulator rescaled by exp(m_old - m_new)), so the Lq x Lk score matrix only ever exists
// one BQ x BK tile at a time, in workgroup memory.
//
// Head dims are processed in NCH chunks of DC4 vec4s so any D up to 512 fits 32-48 KiB of
// workgroup memory: q k^T sums over the chunks, and each invocation keeps NCH * TQO output
// vec4s in registers. Two thread layouts share the workgroup:
//   scores: RS x CS invocations, each TQ rows (rs + i*RS) x TK keys (cs + j*CS)
//   output: RO x DC4 invocations, each TQO rows (ro + i*RO) x one vec4 of dims per chunk
// The host picks the overrides (gpustd/nn/attention.py) so that RS*CS == RO*DC4 == WG.
// Softmax runs in base 2: exp(x) = exp2(x * log2(e)), with log2(e) folded into `scale`.
alias T = f32;
alias M = f32; // mask element: f32 additive, or u32 boolean (nonzero = keep)

override D: u32 = 64u;
override DC4: u32 = 16u;
override NCH: u32 = 1u;
override BQ: u32 = 64u;
override BK: u32 = 32u;
override WG: u32 = 256u;
override TQ: u32 = 4u;
override TK: u32 = 2u;
override TQO: u32 = 4u;
override MASK: u32 = 0u; // 0 none, 1 additive, 2 boolean

override RS: u32 = BQ / TQ;
override CS: u32 = BK / TK;
override RO: u32 = BQ / TQO;
// Odd row strides (in vec4s) spread rows read by neighbouring invocations over all banks.
override DC4P: u32 = DC4 | 1u;
override BK4P: u32 = (BK / 4u) | 1u;
override QS_LEN: u32 = BQ * DC4P;
override KV_LEN: u32 = BK * DC4P;
override PS_LEN: u32 = BQ * BK4P;
override RED_LEN: u32 = BQ * CS;

const LOG2E: f32 = 1.4426950408889634;
const M_START: f32 = -3.0e38; // finite, so exp2(M_START - M_START) is 1, not NaN

struct Params {
    lq: u32, lk: u32, heads: u32, causal: u32, scale: f32,
    q_sb: u32, q_sh: u32, q_sl: u32,
    k_sb: u32, k_sh: u32, k_sl: u32,
    v_sb: u32, v_sh: u32, v_sl: u32,
    o_sb: u32, o_sh: u32, o_sl: u32,
    m_sb: u32, m_sh: u32, m_sq: u32, m_sk: u32,
}

@group(0) @binding(0) var<storage, read> q: array<T>;
@group(0) @binding(1) var<storage, read> k: array<T>;
@group(0) @binding(2) var<storage, read> v: array<T>;
@group(0) @binding(3) var<storage, read> mask: array<M>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> qs: array<vec4<f32>, QS_LEN>;
var<workgroup> kv: array<vec4<f32>, KV_LEN>; // the K chunk, then the V chunk
var<workgroup> ps: array<vec4<f32>, PS_LEN>; // probabilities, 4 keys per vec4
var<workgroup> red: array<f32, RED_LEN>; // per-invocation row partials
var<workgroup> row_max: array<f32, BQ>;
var<workgroup> row_scale: array<f32, BQ>; // exp2(m_old - m_new), then 1 / l at the end

fn q4(base: u32, dim: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var u = 0u; u < 4u; u++) {
        if (dim + u < D) { r[u] = f32(q[base + dim + u]); }
    }
    return r;
}

fn k4(base: u32, dim: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var u = 0u; u < 4u; u++) {
        if (dim + u < D) { r[u] = f32(k[base + dim + u]); }
    }
    return r;
}

fn v4(base: u32, dim: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var u = 0u; u < 4u; u++) {
        if (dim + u < D) { r[u] = f32(v[base + dim + u]); }
    }
    return r;
}

fn mask_value(b: u32, h: u32, row: u32, key: u32) -> f32 {
    let x = mask[b * params.m_sb + h * params.m_sh + row * params.m_sq + key * params.m_sk];
    if (MASK == 2u) {
        return select(-bitcast<f32>(0x7f800000u), 0.0, f32(x) != 0.0);
    }
    return f32(x) * LOG2E;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let b = wid.y / params.heads;
    let h = wid.y % params.heads;
    let q0 = wid.x * BQ;
    let q_base = b * params.q_sb + h * params.q_sh;
    let k_base = b * params.k_sb + h * params.k_sh;
    let v_base = b * params.v_sb + h * params.v_sh;
    let o_base = b * params.o_sb + h * params.o_sh;
    let neg_inf = -bitcast<f32>(0x7f800000u);
    let rs = t / CS;
    let cs = t % CS;
    let ro = t / DC4;
    let dd = t % DC4;

    var s: array<f32, 16>; // TQ * TK <= 16
    var qr: array<vec4<f32>, 8>; // TQ <= 8
    var pr: array<vec4<f32>, 8>; // TQO <= 8
    var lsum: array<f32, 8>; // TQ <= 8
    var acc: array<vec4<f32>, 32>; // NCH * TQO <= 32
    for (var i = 0u; i < NCH * TQO; i++) { acc[i] = vec4<f32>(0.0); }
    for (var i = 0u; i < TQ; i++) { lsum[i] = 0.0; }
    if (t < BQ) { row_max[t] = M_START; }

    // Causal rows never see keys past the last row of this tile.
    var key_end = params.lk;
    if (params.causal != 0u) { key_end = min(key_end, q0 + BQ); }
    let tiles = (key_end + BK - 1u) / BK;
    for (var tile = 0u; tile < tiles; tile++) {
        let k0 = tile * BK;
        // 1. scores s = q k^T over the head-dim chunks
        for (var i = 0u; i < TQ * TK; i++) { s[i] = 0.0; }
        for (var c = 0u; c < NCH; c++) {
            workgroupBarrier();
            if (NCH > 1u || tile == 0u) {
                for (var e = t; e < BQ * DC4; e += WG) {
                    let r = e / DC4;
                    let d4 = e % DC4;
                    var x = vec4<f32>(0.0);
                    if (q0 + r < params.lq) {
                        x = q4(q_base + (q0 + r) * params.q_sl, (c * DC4 + d4) * 4u);
                    }
                    qs[r * DC4P + d4] = x;
                }
            }
            for (var e = t; e < BK * DC4; e += WG) {
                let r = e / DC4;
                let d4 = e % DC4;
                var x = vec4<f32>(0.0);
                if (k0 + r < params.lk) {
                    x = k4(k_base + (k0 + r) * params.k_sl, (c * DC4 + d4) * 4u);
                }
                kv[r * DC4P + d4] = x;
            }
            workgroupBarrier();
            for (var d4 = 0u; d4 < DC4; d4++) {
                for (var i = 0u; i < TQ; i++) { qr[i] = qs[(rs + i * RS) * DC4P + d4]; }
                for (var j = 0u; j < TK; j++) {
                    let kk = kv[(cs + j * CS) * DC4P + d4];
                    for (var i = 0u; i < TQ; i++) {
                        var x = s[i * TK + j];
                        x = fma(qr[i].x, kk.x, x);
                        x = fma(qr[i].y, kk.y, x);
                        x = fma(qr[i].z, kk.z, x);
                        x = fma(qr[i].w, kk.w, x);
                        s[i * TK + j] = x;
                    }
                }
            }
        }
        // 2. scale, mask, and the row maxima of this tile
        for (var i = 0u; i < TQ; i++) {
            let r = rs + i * RS;
            let row = q0 + r;
            var m = neg_inf;
            for (var j = 0u; j < TK; j++) {
                let key = k0 + cs + j * CS;
                var x = s[i * TK + j] * params.scale;
                if (MASK != 0u && row < params.lq && key < params.lk) {
                    x += mask_value(b, h, row, key);
                }
                if (key >= params.lk || (params.causal != 0u && key > row)) { x = neg_inf; }
                s[i * TK + j] = x;
                m = max(m, x);
            }
            red[r * CS + cs] = m;
        }
        workgroupBarrier();
        if (t < BQ) {
            var m = row_max[t];
            let m_old = m;
            for (var c = 0u; c < CS; c++) { m = max(m, red[t * CS + c]); }
            row_max[t] = m;
            row_scale[t] = exp2(m_old - m);
        }
        workgroupBarrier();
        // 3. probabilities into workgroup memory; this invocation's share of the row sums
        for (var i = 0u; i < TQ; i++) {
            let r = rs + i * RS;
            let m = row_max[r];
            var l = 0.0;
            for (var j = 0u; j < TK; j++) {
                let key = cs + j * CS;
                let p = exp2(s[i * TK + j] - m);
                ps[r * BK4P + key / 4u][key % 4u] = p;
                l += p;
            }
            lsum[i] = lsum[i] * row_scale[r] + l;
        }
        for (var i = 0u; i < TQO; i++) {
            let a = row_scale[ro + i * RO];
            for (var c = 0u; c < NCH; c++) { acc[c * TQO + i] *= a; }
        }
        // 4. acc += p v, one head-dim chunk of v at a time
        for (var c = 0u; c < NCH; c++) {
            workgroupBarrier();
            for (var e = t; e < BK * DC4; e += WG) {
                let r = e / DC4;
                let d4 = e % DC4;
                var x = vec4<f32>(0.0);
                if (k0 + r < params.lk) {
                    x = v4(v_base + (k0 + r) * params.v_sl, (c * DC4 + d4) * 4u);
                }
                kv[r * DC4P + d4] = x;
            }
            workgroupBarrier();
            for (var k4i = 0u; k4i < BK / 4u; k4i++) {
                for (var i = 0u; i < TQO; i++) { pr[i] = ps[(ro + i * RO) * BK4P + k4i]; }
                for (var u = 0u; u < 4u; u++) {
                    let vv = kv[(k4i * 4u + u) * DC4P + dd];
                    for (var i = 0u; i < TQO; i++) {
                        acc[c * TQO + i] = fma(vec4<f32>(pr[i][u]), vv, acc[c * TQO + i]);
                    }
                }
            }
        }
    }

    // 5. out = acc / l (0 for rows whose keys were all masked, as torch does)
    for (var i = 0u; i < TQ; i++) { red[(rs + i * RS) * CS + cs] = lsum[i]; }
    workgroupBarrier();
    if (t < BQ) {
        var l = 0.0;
        for (var c = 0u; c < CS; c++) { l += red[t * CS + c]; }
        row_scale[t] = select(0.0, 1.0 / l, l > 0.0);
    }
    workgroupBarrier();
    for (var i = 0u; i < TQO; i++) {
        let row = q0 + ro + i * RO;
        if (row >= params.lq) { continue; }
        let inv = row_scale[ro + i * RO];
        let base = o_base + row * params.o_sl;
        for (var c = 0u; c < NCH; c++) {
            let y = acc[c * TQO + i] * inv;
            let dim = (c * DC4 + dd) * 4u;
            for (var u = 0u; u < 4u; u++) {
                if (dim + u < D) { out[base + dim + u] = T(y[u]); }
            }
        }
    }
}
