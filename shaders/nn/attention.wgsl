//! parts: nn/attention_reduce_subgroup | nn/attention_reduce_shared
// Flash attention (Dao et al. 2022, FlashAttention-2 loop order): out = softmax(q k^T * scale
// + mask) v, one workgroup per BQ = 4*RG query rows of one (batch, head). Keys and values
// stream through workgroup memory BK = 4*CS at a time under an online softmax (running row
// max m and sum l; the accumulator is rescaled by exp(m_old - m_new)), so the Lq x Lk score
// matrix only ever exists as one BQ x BK tile, in workgroup memory.
//
// Scores: invocation (rs, cs) computes rows 4rs..4rs+3 x keys 4cs..4cs+3 as outer products
// of vec4 columns of q^T and k^T, staged DCH head dims at a time (any D fits 32-48 KiB).
// Output: invocation (kh, rg, dg) accumulates rows 4rg..4rg+3 x the NV dim vec4s dg + j*NDG
// over keys kh, kh+KS, ... of each tile, reading p^T and v (KB keys of v at a time). KS > 1
// puts every invocation to work when RG * NDG < WG (small head dims); the KS partial sums
// are added once, after the last tile. Register tiles are named variables, never
// indexed arrays: GPU compilers spill dynamically indexed arrays to memory.
// PF = 1 (one q/k chunk, v in one block) software-pipelines the global loads: each tile's v
// is fetched into registers while its scores are computed, and the next tile's k while its
// output is, so load latency hides behind FMAs instead of stalling between barriers.
// Softmax runs in base 2: exp(x) = exp2(x * log2(e)), log2(e) folded into `scale`.
// The host appends reduce_max/reduce_sum (row reductions across the CS invocations sharing
// rows) from attention_reduce_subgroup.wgsl or, without subgroups, _shared.wgsl.
alias T = f32;
alias M = f32; // mask element: f32 additive, or u32 boolean (nonzero = keep)

override D: u32 = 64u;
override RG: u32 = 8u; // defaults: a plan that fits 32 KiB; the host picks per shape
override CS: u32 = 16u;
override NV: u32 = 1u; // 1..8
override NDG: u32 = 16u; // NV * NDG * 4 >= D, RG * NDG <= RG * CS
override DCH: u32 = 32u; // a multiple of 4
override KB: u32 = 32u; // a multiple of 4 * KS dividing BK
override KS: u32 = 1u; // key slices of the output phase: RG * NDG * KS <= WG
override KV_LEN: u32 = 528u; // max(DCHP * CS, KB * NV * NDG), from the host
override MASK: u32 = 0u; // 0 none, 1 additive, 2 boolean
override PF: u32 = 0u; // 1: prefetch k and v into registers (needs NCH == 1, KB == BK)
// Loops kept as loops; KS, D, DCH, NDG and KB read from the params (CPU adapters:
// attention.py); the constants DCH and KV_LEN then only size qt and kv (PF stays 0).
override LOOPS: bool = false;

override BQ: u32 = 4u * RG;
override BK: u32 = 4u * CS;
override WG: u32 = RG * CS;
override NCH: u32 = (D + DCH - 1u) / DCH;
override DV4: u32 = NV * NDG;
// Odd row strides spread the rows neighbouring invocations read over all banks.
override DCHP: u32 = DCH | 1u;
override QT_LEN: u32 = DCHP * RG;
override PT_LEN: u32 = BK * RG;
override K_SLOTS: u32 = (DCH * CS + WG - 1u) / WG; // prefetched vec4s per invocation (<= 4)
override V_SLOTS: u32 = (BK * DV4 + WG - 1u) / WG;

const LOG2E: f32 = 1.4426950408889634;
const M_START: f32 = -3.0e38; // finite, so exp2(M_START - M_START) is 1, not NaN

struct Params {
    lq: u32, lk: u32, heads: u32, causal: u32, scale: f32,
    q_sb: u32, q_sh: u32, q_sl: u32,
    k_sb: u32, k_sh: u32, k_sl: u32,
    v_sb: u32, v_sh: u32, v_sl: u32,
    o_sb: u32, o_sh: u32, o_sl: u32,
    m_sb: u32, m_sh: u32, m_sq: u32, m_sk: u32,
    ks: u32, d: u32, dch: u32, ndg: u32, kb: u32, // KS, D, DCH, NDG, KB where LOOPS
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
var<workgroup> row_scale: array<vec4<f32>, RG>; // exp2(m_old - m_new), then 1 / l

struct Rows { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> }

fn rows_fma(a: Rows, p: vec4<f32>, x: vec4<f32>) -> Rows {
    return Rows(fma(vec4(p.x), x, a.r0), fma(vec4(p.y), x, a.r1),
                fma(vec4(p.z), x, a.r2), fma(vec4(p.w), x, a.r3));
}

fn rows_scale(a: Rows, s: vec4<f32>) -> Rows {
    return Rows(a.r0 * s.x, a.r1 * s.y, a.r2 * s.z, a.r3 * s.w);
}

struct Acc { a0: Rows, a1: Rows, a2: Rows, a3: Rows, a4: Rows, a5: Rows, a6: Rows, a7: Rows }

// acc += p (4 rows) x v[x + j*NDG] for the NV dim vec4s j.
fn acc_step(acc: Acc, p: vec4<f32>, x: u32) -> Acc {
    let ndg = dim_groups();
    var r = acc;
    r.a0 = rows_fma(r.a0, p, kv[x]);
    if (NV > 1u) { r.a1 = rows_fma(r.a1, p, kv[x + ndg]); }
    if (NV > 2u) { r.a2 = rows_fma(r.a2, p, kv[x + 2u * ndg]); }
    if (NV > 3u) { r.a3 = rows_fma(r.a3, p, kv[x + 3u * ndg]); }
    if (NV > 4u) { r.a4 = rows_fma(r.a4, p, kv[x + 4u * ndg]); }
    if (NV > 5u) { r.a5 = rows_fma(r.a5, p, kv[x + 5u * ndg]); }
    if (NV > 6u) { r.a6 = rows_fma(r.a6, p, kv[x + 6u * ndg]); }
    if (NV > 7u) { r.a7 = rows_fma(r.a7, p, kv[x + 7u * ndg]); }
    return r;
}

fn acc_scale(a: Acc, s: vec4<f32>) -> Acc {
    return Acc(rows_scale(a.a0, s), rows_scale(a.a1, s), rows_scale(a.a2, s),
               rows_scale(a.a3, s), rows_scale(a.a4, s), rows_scale(a.a5, s),
               rows_scale(a.a6, s), rows_scale(a.a7, s));
}

// The KS key slices' partial sums of one Rows, added into slice 0 through pt (free after
// the last tile): slices 1..KS-1 post theirs, then slice 0 reads them.
fn rows_combine(a: Rows, kh: u32, slot: u32, ks: u32) -> Rows {
    workgroupBarrier();
    let at = 4u * ((kh - 1u) * RG * dim_groups() + slot);
    if (kh > 0u && kh < ks) {
        pt[at] = a.r0;
        pt[at + 1u] = a.r1;
        pt[at + 2u] = a.r2;
        pt[at + 3u] = a.r3;
    }
    workgroupBarrier();
    var r = a;
    if (kh == 0u) {
        for (var s = 1u; s < bound(ks); s++) {
            let src = 4u * ((s - 1u) * RG * dim_groups() + slot);
            r = Rows(r.r0 + pt[src], r.r1 + pt[src + 1u], r.r2 + pt[src + 2u],
                     r.r3 + pt[src + 3u]);
        }
    }
    return r;
}

fn acc_combine(acc: Acc, kh: u32, slot: u32, ks: u32) -> Acc {
    var r = acc;
    r.a0 = rows_combine(r.a0, kh, slot, ks);
    if (NV > 1u) { r.a1 = rows_combine(r.a1, kh, slot, ks); }
    if (NV > 2u) { r.a2 = rows_combine(r.a2, kh, slot, ks); }
    if (NV > 3u) { r.a3 = rows_combine(r.a3, kh, slot, ks); }
    if (NV > 4u) { r.a4 = rows_combine(r.a4, kh, slot, ks); }
    if (NV > 5u) { r.a5 = rows_combine(r.a5, kh, slot, ks); }
    if (NV > 6u) { r.a6 = rows_combine(r.a6, kh, slot, ks); }
    if (NV > 7u) { r.a7 = rows_combine(r.a7, kh, slot, ks); }
    return r;
}

// A loop's bound `n` as a value the compiler cannot see through (with LOOPS): llvmpipe then
// compiles one copy of its body instead of unrolling it. The same iterations either way.
fn bound(n: u32) -> u32 {
    if (LOOPS) { return min(n, params.lk + n); }
    return n;
}

// The plan's sizes: the constants, or with LOOPS the params (one kernel for the plans that
// differ only in them).
fn key_slices() -> u32 { if (LOOPS) { return params.ks; } return KS; }
fn head_dim() -> u32 { if (LOOPS) { return params.d; } return D; }
fn chunk() -> u32 { if (LOOPS) { return params.dch; } return DCH; }
fn dim_groups() -> u32 { if (LOOPS) { return params.ndg; } return NDG; }
fn v_block() -> u32 { if (LOOPS) { return params.kb; } return KB; }

fn chunk_stride() -> u32 { return chunk() | 1u; } // DCHP
fn chunks() -> u32 { return (head_dim() + chunk() - 1u) / chunk(); } // NCH
fn dim_vec4s() -> u32 { return NV * dim_groups(); } // DV4

fn hmax(x: vec4<f32>) -> f32 { return max(max(x.x, x.y), max(x.z, x.w)); }
fn hsum(x: vec4<f32>) -> f32 { return (x.x + x.y) + (x.z + x.w); }

// Global reads and writes one element at a time, guarded; vec4 components are never
// indexed dynamically (that too would put the vector in memory).
fn q_at(base: u32, row: u32, dim: u32) -> f32 {
    if (row < params.lq && dim < head_dim()) { return f32(q[base + row * params.q_sl + dim]); }
    return 0.0;
}

fn k_at(base: u32, key: u32, dim: u32) -> f32 {
    if (key < params.lk && dim < head_dim()) { return f32(k[base + key * params.k_sl + dim]); }
    return 0.0;
}

fn v_at(base: u32, key: u32, dim: u32) -> f32 {
    if (key < params.lk && dim < head_dim()) { return f32(v[base + key * params.v_sl + dim]); }
    return 0.0;
}

// Column `dim` of 4 consecutive rows from `row0` (zero past Lq or D).
fn q_col(base: u32, row0: u32, dim: u32) -> vec4<f32> {
    return vec4(q_at(base, row0, dim), q_at(base, row0 + 1u, dim),
                q_at(base, row0 + 2u, dim), q_at(base, row0 + 3u, dim));
}

fn k_col(base: u32, key0: u32, dim: u32) -> vec4<f32> {
    return vec4(k_at(base, key0, dim), k_at(base, key0 + 1u, dim),
                k_at(base, key0 + 2u, dim), k_at(base, key0 + 3u, dim));
}

// Dims dim..dim+3 of one v row.
fn v_row(base: u32, key: u32, dim: u32) -> vec4<f32> {
    return vec4(v_at(base, key, dim), v_at(base, key, dim + 1u),
                v_at(base, key, dim + 2u), v_at(base, key, dim + 3u));
}

// Up to 4 prefetched vec4s of one tile's k or v, held until the tile's memory is free.
struct Stage { s0: vec4<f32>, s1: vec4<f32>, s2: vec4<f32>, s3: vec4<f32> }

// Element e of the k tile laid out as kv's [key group][dim] (zero past the tile).
fn k_elem(base: u32, k0: u32, e: u32) -> vec4<f32> {
    if (e < DCH * CS) { return k_col(base, k0 + (e / DCH) * 4u, e % DCH); }
    return vec4(0.0);
}

fn k_fetch(base: u32, k0: u32, t: u32) -> Stage {
    var r = Stage(k_elem(base, k0, t), vec4(0.0), vec4(0.0), vec4(0.0));
    if (K_SLOTS > 1u) { r.s1 = k_elem(base, k0, t + WG); }
    if (K_SLOTS > 2u) { r.s2 = k_elem(base, k0, t + 2u * WG); }
    if (K_SLOTS > 3u) { r.s3 = k_elem(base, k0, t + 3u * WG); }
    return r;
}

fn k_put1(e: u32, x: vec4<f32>) {
    if (e < DCH * CS) { kv[(e / DCH) * DCHP + e % DCH] = x; }
}

fn k_put(r: Stage, t: u32) {
    k_put1(t, r.s0);
    if (K_SLOTS > 1u) { k_put1(t + WG, r.s1); }
    if (K_SLOTS > 2u) { k_put1(t + 2u * WG, r.s2); }
    if (K_SLOTS > 3u) { k_put1(t + 3u * WG, r.s3); }
}

// Element e of the v tile laid out as kv's [key][dim vec4].
fn v_elem(base: u32, k0: u32, e: u32) -> vec4<f32> {
    if (e < BK * DV4) { return v_row(base, k0 + e / DV4, (e % DV4) * 4u); }
    return vec4(0.0);
}

fn v_fetch(base: u32, k0: u32, t: u32) -> Stage {
    var r = Stage(v_elem(base, k0, t), vec4(0.0), vec4(0.0), vec4(0.0));
    if (V_SLOTS > 1u) { r.s1 = v_elem(base, k0, t + WG); }
    if (V_SLOTS > 2u) { r.s2 = v_elem(base, k0, t + 2u * WG); }
    if (V_SLOTS > 3u) { r.s3 = v_elem(base, k0, t + 3u * WG); }
    return r;
}

fn v_put1(e: u32, x: vec4<f32>) {
    if (e < BK * DV4) { kv[e] = x; }
}

fn v_put(r: Stage, t: u32) {
    v_put1(t, r.s0);
    if (V_SLOTS > 1u) { v_put1(t + WG, r.s1); }
    if (V_SLOTS > 2u) { v_put1(t + 2u * WG, r.s2); }
    if (V_SLOTS > 3u) { v_put1(t + 3u * WG, r.s3); }
}

// One scaled, masked score (-inf where masked out or past Lk).
fn adjust1(x: f32, b: u32, h: u32, row: u32, key: u32) -> f32 {
    var inf_bits = 0x7f800000u;  // a var: Tint refuses inf as a constant expression
    let neg_inf = -bitcast<f32>(inf_bits);
    if (key >= params.lk || (params.causal != 0u && key > row)) { return neg_inf; }
    var r = x * params.scale;
    if (MASK != 0u && row < params.lq) {
        let m = mask[b * params.m_sb + h * params.m_sh + row * params.m_sq + key * params.m_sk];
        if (MASK == 2u) {
            r = select(neg_inf, r, f32(m) != 0.0);
        } else {
            r += f32(m) * LOG2E;
        }
    }
    return r;
}

fn adjust(x: vec4<f32>, b: u32, h: u32, row: u32, key0: u32) -> vec4<f32> {
    return vec4(adjust1(x.x, b, h, row, key0), adjust1(x.y, b, h, row, key0 + 1u),
                adjust1(x.z, b, h, row, key0 + 2u), adjust1(x.w, b, h, row, key0 + 3u));
}

fn store1(at: u32, dim: u32, y: f32) {
    if (dim < head_dim()) { out[at + dim] = T(y); }
}

fn store(base: u32, row: u32, dv: u32, y: vec4<f32>) {
    if (row < params.lq && dv < dim_vec4s()) {
        let at = base + row * params.o_sl;
        store1(at, dv * 4u, y.x);
        store1(at, dv * 4u + 1u, y.y);
        store1(at, dv * 4u + 2u, y.z);
        store1(at, dv * 4u + 3u, y.w);
    }
}

fn store_rows(base: u32, row0: u32, dv: u32, a: Rows, inv: vec4<f32>) {
    store(base, row0, dv, a.r0 * inv.x);
    store(base, row0 + 1u, dv, a.r1 * inv.y);
    store(base, row0 + 2u, dv, a.r2 * inv.z);
    store(base, row0 + 3u, dv, a.r3 * inv.w);
}

fn acc_store(base: u32, row0: u32, dg: u32, a: Acc, inv: vec4<f32>) {
    let ndg = dim_groups();
    store_rows(base, row0, dg, a.a0, inv);
    if (NV > 1u) { store_rows(base, row0, dg + ndg, a.a1, inv); }
    if (NV > 2u) { store_rows(base, row0, dg + 2u * ndg, a.a2, inv); }
    if (NV > 3u) { store_rows(base, row0, dg + 3u * ndg, a.a3, inv); }
    if (NV > 4u) { store_rows(base, row0, dg + 4u * ndg, a.a4, inv); }
    if (NV > 5u) { store_rows(base, row0, dg + 5u * ndg, a.a5, inv); }
    if (NV > 6u) { store_rows(base, row0, dg + 6u * ndg, a.a6, inv); }
    if (NV > 7u) { store_rows(base, row0, dg + 7u * ndg, a.a7, inv); }
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
    let ndg = dim_groups();
    let kh = t / (RG * ndg);
    let rg = (t / ndg) % RG;
    let dg = t % ndg;
    let dch = chunk();
    let dchp = chunk_stride();
    let nch = chunks();
    let kb_len = v_block();
    let dv4 = dim_vec4s();
    let ks = key_slices();
    let owns_output = kh < ks; // output-phase invocations: RG * NDG * KS of the WG

    let zero = Rows(vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
    var acc = Acc(zero, zero, zero, zero, zero, zero, zero, zero);
    var m_run = vec4<f32>(M_START); // running max of rows 4rs..4rs+3 (same in all CS lanes)
    var lsum = vec4<f32>(0.0); // this invocation's share of their running sums

    // Causal rows never see keys past the last row of this tile.
    var key_end = params.lk;
    if (params.causal != 0u) { key_end = min(key_end, q0 + BQ); }
    let tiles = (key_end + BK - 1u) / BK;
    var k_next = Stage(vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
    var v_next = k_next;
    if (PF != 0u) { k_next = k_fetch(k_base, 0u, t); }
    for (var tile = 0u; tile < tiles; tile++) {
        let k0 = tile * BK;
        // 1. scores: 4x4 outer products over the head dims, DCH dims per chunk
        var sc = zero;
        for (var c = 0u; c < nch; c++) {
            let d0 = c * dch;
            workgroupBarrier();
            if (nch > 1u || tile == 0u) {
                for (var e = t; e < dch * RG; e += WG) {
                    let g = e / dch;
                    qt[g * dchp + e % dch] = q_col(q_base, q0 + g * 4u, d0 + e % dch);
                }
            }
            if (PF != 0u) {
                k_put(k_next, t);
            } else {
                for (var e = t; e < dch * CS; e += WG) {
                    let g = e / dch;
                    kv[g * dchp + e % dch] = k_col(k_base, k0 + g * 4u, d0 + e % dch);
                }
            }
            workgroupBarrier();
            if (PF != 0u) { v_next = v_fetch(v_base, k0, t); }
            for (var d = 0u; d < bound(dch); d += 4u) {
                let x = rs * dchp + d;
                let y = cs * dchp + d;
                sc = rows_fma(sc, qt[x], kv[y]);
                sc = rows_fma(sc, qt[x + 1u], kv[y + 1u]);
                sc = rows_fma(sc, qt[x + 2u], kv[y + 2u]);
                sc = rows_fma(sc, qt[x + 3u], kv[y + 3u]);
            }
        }
        // 2. online softmax: scale, mask, new row maxima, probabilities
        let row0 = q0 + 4u * rs;
        let key0 = k0 + 4u * cs;
        sc = Rows(adjust(sc.r0, b, h, row0, key0), adjust(sc.r1, b, h, row0 + 1u, key0),
                  adjust(sc.r2, b, h, row0 + 2u, key0), adjust(sc.r3, b, h, row0 + 3u, key0));
        let m_tile = reduce_max(vec4(hmax(sc.r0), hmax(sc.r1), hmax(sc.r2), hmax(sc.r3)), rs, cs);
        let m_new = max(m_run, m_tile);
        let alpha = exp2(m_run - m_new);
        m_run = m_new;
        sc = Rows(exp2(sc.r0 - m_new.x), exp2(sc.r1 - m_new.y), exp2(sc.r2 - m_new.z),
                  exp2(sc.r3 - m_new.w));
        lsum = lsum * alpha + vec4(hsum(sc.r0), hsum(sc.r1), hsum(sc.r2), hsum(sc.r3));
        if (cs == 0u) { row_scale[rs] = alpha; }
        pt[(4u * cs) * RG + rs] = vec4(sc.r0.x, sc.r1.x, sc.r2.x, sc.r3.x);
        pt[(4u * cs + 1u) * RG + rs] = vec4(sc.r0.y, sc.r1.y, sc.r2.y, sc.r3.y);
        pt[(4u * cs + 2u) * RG + rs] = vec4(sc.r0.z, sc.r1.z, sc.r2.z, sc.r3.z);
        pt[(4u * cs + 3u) * RG + rs] = vec4(sc.r0.w, sc.r1.w, sc.r2.w, sc.r3.w);
        // 3. acc = acc * alpha + p v, KB keys of v at a time
        for (var kb = 0u; kb < BK; kb += kb_len) {
            workgroupBarrier();
            if (PF != 0u) {
                v_put(v_next, t);
                k_next = k_fetch(k_base, k0 + BK, t);
            } else {
                for (var e = t; e < kb_len * dv4; e += WG) {
                    kv[e] = v_row(v_base, k0 + kb + e / dv4, (e % dv4) * 4u);
                }
            }
            workgroupBarrier();
            if (owns_output) {
                if (kb == 0u) { acc = acc_scale(acc, row_scale[rg]); }
                for (var r = kh; r < bound(kb_len); r += 4u * ks) {
                    let x = r * dv4 + dg;
                    acc = acc_step(acc, pt[(kb + r) * RG + rg], x);
                    acc = acc_step(acc, pt[(kb + r + ks) * RG + rg], x + ks * dv4);
                    acc = acc_step(acc, pt[(kb + r + 2u * ks) * RG + rg], x + 2u * ks * dv4);
                    acc = acc_step(acc, pt[(kb + r + 3u * ks) * RG + rg], x + 3u * ks * dv4);
                }
            }
        }
    }

    // 4. out = acc / l (0 for rows whose keys were all masked, as torch does)
    let l = reduce_sum(lsum, rs, cs);
    if (ks > 1u) { acc = acc_combine(acc, kh, rg * ndg + dg, ks); }
    workgroupBarrier(); // the last tile's readers of row_scale are done
    if (cs == 0u) { row_scale[rs] = select(vec4(0.0), 1.0 / l, l > vec4(0.0)); }
    workgroupBarrier();
    if (kh == 0u) { acc_store(o_base, q0 + 4u * rg, dg, acc, row_scale[rg]); }
}
