// Flash attention (Dao et al. 2022, FlashAttention-2 loop order): out = softmax(q k^T * scale
// + mask) v, one workgroup per BQ = 4*RG query rows of one (batch, head). Keys and values
// stream through workgroup memory BK = 4*CS at a time under an online softmax (running row
// max m and sum l; the accumulator is rescaled by exp(m_old - m_new)), so the Lq x Lk score
// matrix only ever exists as one BQ x BK tile, in workgroup memory.
//
// Scores: invocation (rs, cs) computes rows 4rs..4rs+3 x keys 4cs..4cs+3 as outer products
// of vec4 columns of q^T and k^T, staged DCH head dims at a time (any D fits 32-48 KiB).
// Output: invocation (rg, dg) accumulates rows 4rg..4rg+3 x the NV dim vec4s dg + j*NDG,
// reading p^T and v (KB keys of v at a time). Register tiles are named variables, never
// indexed arrays: GPU compilers spill dynamically indexed arrays to memory.
// Softmax runs in base 2: exp(x) = exp2(x * log2(e)), log2(e) folded into `scale`.
alias T = f32;
alias M = f32; // mask element: f32 additive, or u32 boolean (nonzero = keep)

override D: u32 = 64u;
override RG: u32 = 16u;
override CS: u32 = 16u;
override NV: u32 = 1u; // 1..8
override NDG: u32 = 16u; // NV * NDG * 4 >= D, RG * NDG <= RG * CS
override DCH: u32 = 32u;
override KB: u32 = 32u; // divides BK
override KV_LEN: u32 = 528u; // max(DCHP * CS, KB * NV * NDG), from the host
override MASK: u32 = 0u; // 0 none, 1 additive, 2 boolean

override BQ: u32 = 4u * RG;
override BK: u32 = 4u * CS;
override WG: u32 = RG * CS;
override NCH: u32 = (D + DCH - 1u) / DCH;
override DV4: u32 = NV * NDG;
// Odd row strides spread the rows neighbouring invocations read over all banks.
override DCHP: u32 = DCH | 1u;
override QT_LEN: u32 = DCHP * RG;
override PT_LEN: u32 = BK * RG;
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

var<workgroup> qt: array<vec4<f32>, QT_LEN>; // [row group][dim]: 4 query rows per vec4
var<workgroup> kv: array<vec4<f32>, KV_LEN>; // k [key group][dim], then v [key][dim vec4]
var<workgroup> pt: array<vec4<f32>, PT_LEN>; // p^T [key][row group]
var<workgroup> red: array<f32, RED_LEN>; // per-invocation row partials
var<workgroup> row_max: array<f32, BQ>;
var<workgroup> row_scale: array<f32, BQ>; // exp2(m_old - m_new), then 1 / l at the end

struct Rows { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> }

fn rows_fma(a: Rows, p: vec4<f32>, x: vec4<f32>) -> Rows {
    return Rows(fma(vec4(p.x), x, a.r0), fma(vec4(p.y), x, a.r1),
                fma(vec4(p.z), x, a.r2), fma(vec4(p.w), x, a.r3));
}

fn rows_scale(a: Rows, s: vec4<f32>) -> Rows {
    return Rows(a.r0 * s.x, a.r1 * s.y, a.r2 * s.z, a.r3 * s.w);
}

fn hmax(x: vec4<f32>) -> f32 { return max(max(x.x, x.y), max(x.z, x.w)); }
fn hsum(x: vec4<f32>) -> f32 { return (x.x + x.y) + (x.z + x.w); }

// Column `dim` of 4 consecutive rows from `row0` (zero past Lq or D).
fn q_col(base: u32, row0: u32, dim: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var u = 0u; u < 4u; u++) {
        if (row0 + u < params.lq && dim < D) {
            r[u] = f32(q[base + (row0 + u) * params.q_sl + dim]);
        }
    }
    return r;
}

fn k_col(base: u32, key0: u32, dim: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var u = 0u; u < 4u; u++) {
        if (key0 + u < params.lk && dim < D) {
            r[u] = f32(k[base + (key0 + u) * params.k_sl + dim]);
        }
    }
    return r;
}

// Dims dim..dim+3 of one v row.
fn v_row(base: u32, key: u32, dim: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    if (key < params.lk) {
        for (var u = 0u; u < 4u; u++) {
            if (dim + u < D) { r[u] = f32(v[base + key * params.v_sl + dim + u]); }
        }
    }
    return r;
}

// Scaled, masked scores of one row for keys key0..key0+3 (-inf where masked or past Lk).
fn adjust(x: vec4<f32>, b: u32, h: u32, row: u32, key0: u32) -> vec4<f32> {
    var r = x * params.scale;
    for (var u = 0u; u < 4u; u++) {
        let key = key0 + u;
        if (MASK != 0u && row < params.lq && key < params.lk) {
            let m = mask[b * params.m_sb + h * params.m_sh + row * params.m_sq + key * params.m_sk];
            if (MASK == 2u) {
                if (f32(m) == 0.0) { r[u] = -bitcast<f32>(0x7f800000u); }
            } else {
                r[u] += f32(m) * LOG2E;
            }
        }
        if (key >= params.lk || (params.causal != 0u && key > row)) {
            r[u] = -bitcast<f32>(0x7f800000u);
        }
    }
    return r;
}

fn store(base: u32, row: u32, dv: u32, y: vec4<f32>) {
    if (row < params.lq && dv < DV4) {
        for (var u = 0u; u < 4u; u++) {
            if (dv * 4u + u < D) { out[base + row * params.o_sl + dv * 4u + u] = T(y[u]); }
        }
    }
}

fn store_rows(base: u32, row0: u32, dv: u32, a: Rows, inv: vec4<f32>) {
    store(base, row0, dv, a.r0 * inv.x);
    store(base, row0 + 1u, dv, a.r1 * inv.y);
    store(base, row0 + 2u, dv, a.r2 * inv.z);
    store(base, row0 + 3u, dv, a.r3 * inv.w);
}

fn row_vec(x: u32) -> vec4<f32> {
    return vec4(row_scale[x], row_scale[x + 1u], row_scale[x + 2u], row_scale[x + 3u]);
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
    let rs = t / CS;
    let cs = t % CS;
    let rg = t / NDG;
    let dg = t % NDG;
    let owns_output = rg < RG; // output-phase invocations: RG * NDG of the WG

    let zero = Rows(vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
    var a0 = zero; var a1 = zero; var a2 = zero; var a3 = zero;
    var a4 = zero; var a5 = zero; var a6 = zero; var a7 = zero;
    var lsum = vec4<f32>(0.0);
    for (var r = t; r < BQ; r += WG) { row_max[r] = M_START; }

    // Causal rows never see keys past the last row of this tile.
    var key_end = params.lk;
    if (params.causal != 0u) { key_end = min(key_end, q0 + BQ); }
    let tiles = (key_end + BK - 1u) / BK;
    for (var tile = 0u; tile < tiles; tile++) {
        let k0 = tile * BK;
        // 1. scores: 4x4 outer products over the head dims, DCH dims per chunk
        var s0 = vec4<f32>(0.0); var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0); var s3 = vec4<f32>(0.0);
        for (var c = 0u; c < NCH; c++) {
            let d0 = c * DCH;
            workgroupBarrier();
            if (NCH > 1u || tile == 0u) {
                for (var e = t; e < DCH * RG; e += WG) {
                    let g = e / DCH;
                    qt[g * DCHP + e % DCH] = q_col(q_base, q0 + g * 4u, d0 + e % DCH);
                }
            }
            for (var e = t; e < DCH * CS; e += WG) {
                let g = e / DCH;
                kv[g * DCHP + e % DCH] = k_col(k_base, k0 + g * 4u, d0 + e % DCH);
            }
            workgroupBarrier();
            for (var d = 0u; d < DCH; d++) {
                let x = qt[rs * DCHP + d];
                let y = kv[cs * DCHP + d];
                s0 = fma(vec4(x.x), y, s0);
                s1 = fma(vec4(x.y), y, s1);
                s2 = fma(vec4(x.z), y, s2);
                s3 = fma(vec4(x.w), y, s3);
            }
        }
        // 2. scale and mask; row maxima across the CS invocations sharing the rows
        let row0 = q0 + 4u * rs;
        let key0 = k0 + 4u * cs;
        s0 = adjust(s0, b, h, row0, key0);
        s1 = adjust(s1, b, h, row0 + 1u, key0);
        s2 = adjust(s2, b, h, row0 + 2u, key0);
        s3 = adjust(s3, b, h, row0 + 3u, key0);
        red[(4u * rs) * CS + cs] = hmax(s0);
        red[(4u * rs + 1u) * CS + cs] = hmax(s1);
        red[(4u * rs + 2u) * CS + cs] = hmax(s2);
        red[(4u * rs + 3u) * CS + cs] = hmax(s3);
        workgroupBarrier();
        for (var r = t; r < BQ; r += WG) {
            let m_old = row_max[r];
            var m = m_old;
            for (var i = 0u; i < CS; i++) { m = max(m, red[r * CS + i]); }
            row_max[r] = m;
            row_scale[r] = exp2(m_old - m);
        }
        workgroupBarrier();
        // 3. probabilities, stored transposed for the output phase; partial row sums
        let m = vec4(row_max[4u * rs], row_max[4u * rs + 1u], row_max[4u * rs + 2u],
                     row_max[4u * rs + 3u]);
        s0 = exp2(s0 - m.x);
        s1 = exp2(s1 - m.y);
        s2 = exp2(s2 - m.z);
        s3 = exp2(s3 - m.w);
        lsum = lsum * row_vec(4u * rs) + vec4(hsum(s0), hsum(s1), hsum(s2), hsum(s3));
        pt[(4u * cs) * RG + rs] = vec4(s0.x, s1.x, s2.x, s3.x);
        pt[(4u * cs + 1u) * RG + rs] = vec4(s0.y, s1.y, s2.y, s3.y);
        pt[(4u * cs + 2u) * RG + rs] = vec4(s0.z, s1.z, s2.z, s3.z);
        pt[(4u * cs + 3u) * RG + rs] = vec4(s0.w, s1.w, s2.w, s3.w);
        if (owns_output) {
            let alpha = row_vec(4u * rg);
            a0 = rows_scale(a0, alpha); a1 = rows_scale(a1, alpha);
            a2 = rows_scale(a2, alpha); a3 = rows_scale(a3, alpha);
            a4 = rows_scale(a4, alpha); a5 = rows_scale(a5, alpha);
            a6 = rows_scale(a6, alpha); a7 = rows_scale(a7, alpha);
        }
        // 4. acc += p v, KB keys of v at a time
        for (var kb = 0u; kb < BK; kb += KB) {
            workgroupBarrier();
            for (var e = t; e < KB * DV4; e += WG) {
                kv[e] = v_row(v_base, k0 + kb + e / DV4, (e % DV4) * 4u);
            }
            workgroupBarrier();
            if (owns_output) {
                for (var r = 0u; r < KB; r++) {
                    let p = pt[(kb + r) * RG + rg];
                    let x = r * DV4 + dg;
                    a0 = rows_fma(a0, p, kv[x]);
                    if (NV > 1u) { a1 = rows_fma(a1, p, kv[x + NDG]); }
                    if (NV > 2u) { a2 = rows_fma(a2, p, kv[x + 2u * NDG]); }
                    if (NV > 3u) { a3 = rows_fma(a3, p, kv[x + 3u * NDG]); }
                    if (NV > 4u) { a4 = rows_fma(a4, p, kv[x + 4u * NDG]); }
                    if (NV > 5u) { a5 = rows_fma(a5, p, kv[x + 5u * NDG]); }
                    if (NV > 6u) { a6 = rows_fma(a6, p, kv[x + 6u * NDG]); }
                    if (NV > 7u) { a7 = rows_fma(a7, p, kv[x + 7u * NDG]); }
                }
            }
        }
    }

    // 5. out = acc / l (0 for rows whose keys were all masked, as torch does)
    red[(4u * rs) * CS + cs] = lsum.x;
    red[(4u * rs + 1u) * CS + cs] = lsum.y;
    red[(4u * rs + 2u) * CS + cs] = lsum.z;
    red[(4u * rs + 3u) * CS + cs] = lsum.w;
    workgroupBarrier();
    for (var r = t; r < BQ; r += WG) {
        var l = 0.0;
        for (var i = 0u; i < CS; i++) { l += red[r * CS + i]; }
        row_scale[r] = select(0.0, 1.0 / l, l > 0.0);
    }
    workgroupBarrier();
    if (owns_output) {
        let inv = row_vec(4u * rg);
        let row0 = q0 + 4u * rg;
        store_rows(o_base, row0, dg, a0, inv);
        if (NV > 1u) { store_rows(o_base, row0, dg + NDG, a1, inv); }
        if (NV > 2u) { store_rows(o_base, row0, dg + 2u * NDG, a2, inv); }
        if (NV > 3u) { store_rows(o_base, row0, dg + 3u * NDG, a3, inv); }
        if (NV > 4u) { store_rows(o_base, row0, dg + 4u * NDG, a4, inv); }
        if (NV > 5u) { store_rows(o_base, row0, dg + 5u * NDG, a5, inv); }
        if (NV > 6u) { store_rows(o_base, row0, dg + 6u * NDG, a6, inv); }
        if (NV > 7u) { store_rows(o_base, row0, dg + 7u * NDG, a7, inv); }
    }
}
