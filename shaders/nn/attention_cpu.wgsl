// Attention for CPU adapters: out = softmax(q k^T * scale + mask) v without workgroup memory
// or barriers (attention.wgsl's tiles are a GPU's). llvmpipe runs eight invocations as the
// lanes of one vector and pays for every load lane by lane (a vec4 costs little more than a
// scalar) and for every barrier once a group of eight, so each invocation owns 4 query rows
// of one (batch, head) with all their head dims in registers and walks the keys itself,
// four at a time: one vec4 load of a key's (value's) dims feeds the 4 rows, 16 fmas a load
// (bench/NOTES.md, "A direct attention for CPU adapters").
// Per block of 4 keys: the 4 x 4 scores (head dims summed in order), scaled (log2(e) folded
// into `scale`) and masked, an online softmax in base 2 (running row max m and sum l; the
// accumulators rescaled by exp2(m_old - m_new) once a block), then acc += p v.
// Head dims up to 32, in 8 vec4 slots (one kernel for a tiny model's 8, 16 and 32: each
// kernel more is a second or more of llvmpipe compiling in every process; 16 slots compiled
// 3x as long); slots from params.dv4 = ceil(D / 4) on are skipped.
// Grid: (ceil(Lq / 32), B * H); 8 invocations a workgroup.
alias T = f32;
alias M = f32; // mask element: f32 additive, or u32 boolean (nonzero = keep)
alias V = vec4<T>; // T where D or a row stride is not a multiple of 4 (no vec4 reads)
override VEC: bool = true;
override MASK: u32 = 0u; // 0 none, 1 additive, 2 boolean

const LOG2E: f32 = 1.4426950408889634;
const M_START: f32 = -3.0e38; // finite, so exp2(M_START - M_START) is 1, not NaN

struct Params {
    lq: u32, lk: u32, heads: u32, causal: u32, scale: f32, d: u32, dv4: u32,
    q_sb: u32, q_sh: u32, q_sl: u32,
    k_sb: u32, k_sh: u32, k_sl: u32,
    v_sb: u32, v_sh: u32, v_sl: u32,
    o_sb: u32, o_sh: u32, o_sl: u32,
    m_sb: u32, m_sh: u32, m_sq: u32, m_sk: u32,
}

@group(0) @binding(0) var<storage, read> q: array<V>;
@group(0) @binding(1) var<storage, read> k: array<V>;
@group(0) @binding(2) var<storage, read> v: array<V>;
@group(0) @binding(3) var<storage, read> mask: array<M>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<uniform> params: Params;

// A row's head dims, four a slot: named registers (llvmpipe keeps an indexed array in memory
// and reads it lane by lane).
struct Dims {
    x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
    x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>,
}

// Whether slot j holds dims of this call.
fn live(j: u32) -> bool {
    return j < params.dv4;
}

// Dims 4j..4j+3 of the row starting at element `at`, zero past D. The three buffers'
// twins: WGSL passes no storage pointer to a function.
fn q4(at: u32, j: u32) -> vec4<f32> {
    let d = 4u * j;
    if (VEC) { return vec4<f32>(vec4<T>(q[(at + d) / 4u])); }
    let last = at + params.d - 1u;
    return vec4<f32>(f32(vec4<T>(q[at + d]).x),
                     select(0.0, f32(vec4<T>(q[min(at + d + 1u, last)]).x), d + 1u < params.d),
                     select(0.0, f32(vec4<T>(q[min(at + d + 2u, last)]).x), d + 2u < params.d),
                     select(0.0, f32(vec4<T>(q[min(at + d + 3u, last)]).x), d + 3u < params.d));
}

fn k4(at: u32, j: u32) -> vec4<f32> {
    let d = 4u * j;
    if (VEC) { return vec4<f32>(vec4<T>(k[(at + d) / 4u])); }
    let last = at + params.d - 1u;
    return vec4<f32>(f32(vec4<T>(k[at + d]).x),
                     select(0.0, f32(vec4<T>(k[min(at + d + 1u, last)]).x), d + 1u < params.d),
                     select(0.0, f32(vec4<T>(k[min(at + d + 2u, last)]).x), d + 2u < params.d),
                     select(0.0, f32(vec4<T>(k[min(at + d + 3u, last)]).x), d + 3u < params.d));
}

fn v4(at: u32, j: u32) -> vec4<f32> {
    let d = 4u * j;
    if (VEC) { return vec4<f32>(vec4<T>(v[(at + d) / 4u])); }
    let last = at + params.d - 1u;
    return vec4<f32>(f32(vec4<T>(v[at + d]).x),
                     select(0.0, f32(vec4<T>(v[min(at + d + 1u, last)]).x), d + 1u < params.d),
                     select(0.0, f32(vec4<T>(v[min(at + d + 2u, last)]).x), d + 2u < params.d),
                     select(0.0, f32(vec4<T>(v[min(at + d + 3u, last)]).x), d + 3u < params.d));
}

fn zero_dims() -> Dims {
    let z = vec4<f32>(0.0);
    return Dims(z, z, z, z, z, z, z, z);
}

// which: 0 q, 1 k, 2 v.
fn load4(which: u32, at: u32, j: u32) -> vec4<f32> {
    if (which == 0u) { return q4(at, j); }
    if (which == 1u) { return k4(at, j); }
    return v4(at, j);
}

fn load(which: u32, at: u32) -> Dims {
    var r = zero_dims();
    r.x0 = load4(which, at, 0u);
    if (live(1u)) { r.x1 = load4(which, at, 1u); }
    if (live(2u)) { r.x2 = load4(which, at, 2u); }
    if (live(3u)) { r.x3 = load4(which, at, 3u); }
    if (live(4u)) { r.x4 = load4(which, at, 4u); }
    if (live(5u)) { r.x5 = load4(which, at, 5u); }
    if (live(6u)) { r.x6 = load4(which, at, 6u); }
    if (live(7u)) { r.x7 = load4(which, at, 7u); }
    return r;
}

// sum over the head dims of a * b, an fma a dim in order.
fn dot_dims(a: Dims, b: Dims) -> f32 {
    var s = a.x0.x * b.x0.x;
    s = fma(a.x0.y, b.x0.y, s); s = fma(a.x0.z, b.x0.z, s); s = fma(a.x0.w, b.x0.w, s);
    if (live(1u)) { s = dot_more(s, a.x1, b.x1); }
    if (live(2u)) { s = dot_more(s, a.x2, b.x2); }
    if (live(3u)) { s = dot_more(s, a.x3, b.x3); }
    if (live(4u)) { s = dot_more(s, a.x4, b.x4); }
    if (live(5u)) { s = dot_more(s, a.x5, b.x5); }
    if (live(6u)) { s = dot_more(s, a.x6, b.x6); }
    if (live(7u)) { s = dot_more(s, a.x7, b.x7); }
    return s;
}

fn dot_more(s: f32, a: vec4<f32>, b: vec4<f32>) -> f32 {
    return fma(a.w, b.w, fma(a.z, b.z, fma(a.y, b.y, fma(a.x, b.x, s))));
}

// a + p * x, slot by slot (p: one key's probability for the row).
fn dims_fma(a: Dims, p: f32, x: Dims) -> Dims {
    var r = a;
    r.x0 = fma(vec4(p), x.x0, r.x0);
    if (live(1u)) { r.x1 = fma(vec4(p), x.x1, r.x1); }
    if (live(2u)) { r.x2 = fma(vec4(p), x.x2, r.x2); }
    if (live(3u)) { r.x3 = fma(vec4(p), x.x3, r.x3); }
    if (live(4u)) { r.x4 = fma(vec4(p), x.x4, r.x4); }
    if (live(5u)) { r.x5 = fma(vec4(p), x.x5, r.x5); }
    if (live(6u)) { r.x6 = fma(vec4(p), x.x6, r.x6); }
    if (live(7u)) { r.x7 = fma(vec4(p), x.x7, r.x7); }
    return r;
}

fn dims_scale(a: Dims, s: f32) -> Dims {
    var r = a;
    r.x0 *= s;
    if (live(1u)) { r.x1 *= s; }
    if (live(2u)) { r.x2 *= s; }
    if (live(3u)) { r.x3 *= s; }
    if (live(4u)) { r.x4 *= s; }
    if (live(5u)) { r.x5 *= s; }
    if (live(6u)) { r.x6 *= s; }
    if (live(7u)) { r.x7 *= s; }
    return r;
}

// One scaled, masked score (-inf where masked out, past Lk or, causal, past the row).
fn adjust(x: f32, b: u32, h: u32, row: u32, key: u32) -> f32 {
    var inf_bits = 0x7f800000u;  // a var: Tint refuses inf as a constant expression
    let neg_inf = -bitcast<f32>(inf_bits);
    var r = x * params.scale;
    if (MASK != 0u) {
        let m = mask[b * params.m_sb + h * params.m_sh + min(row, params.lq - 1u) * params.m_sq
                     + min(key, params.lk - 1u) * params.m_sk];
        if (MASK == 2u) {
            r = select(neg_inf, r, f32(m) != 0.0);
        } else {
            r += f32(m) * LOG2E;
        }
    }
    return select(neg_inf, r, key < params.lk && (params.causal == 0u || key <= row));
}

// n, but read from the params so that the compiler keeps the loop as a loop: llvmpipe turns a
// kernel into machine code at its first dispatch, seconds for each unrolled copy of a body.
fn kept(n: u32) -> u32 {
    return min(n, params.lk + n);
}

fn hmax(x: vec4<f32>) -> f32 { return max(max(x.x, x.y), max(x.z, x.w)); }
fn hsum(x: vec4<f32>) -> f32 { return (x.x + x.y) + (x.z + x.w); }

// Row `row`'s output: acc * inv (inv 0 where every key was masked, as torch gives), a slot at a
// time, the next slot shifted into x0 (no slot indexed at run time).
fn store(base: u32, row: u32, a: Dims, inv: f32) {
    if (row >= params.lq) {
        return;
    }
    let at = base + row * params.o_sl;
    var rest = a;
    for (var j = 0u; j < params.dv4; j++) {
        let x = rest.x0 * inv;
        for (var c = 0u; c < min(4u, params.d - 4u * j); c++) {
            out[at + 4u * j + c] = T(x[c]);
        }
        rest = Dims(rest.x1, rest.x2, rest.x3, rest.x4, rest.x5, rest.x6, rest.x7, rest.x7);
    }
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row0 = (wid.x * 8u + lid) * 4u;
    if (row0 >= params.lq) {
        return;
    }
    let b = wid.y / params.heads;
    let h = wid.y % params.heads;
    let q_base = b * params.q_sb + h * params.q_sh;
    let k_base = b * params.k_sb + h * params.k_sh;
    let v_base = b * params.v_sb + h * params.v_sh;
    let last = params.lq - 1u; // rows past Lq read the last one (never stored)
    let q0 = load(0u, q_base + row0 * params.q_sl);
    let q1 = load(0u, q_base + min(row0 + 1u, last) * params.q_sl);
    let q2 = load(0u, q_base + min(row0 + 2u, last) * params.q_sl);
    let q3 = load(0u, q_base + min(row0 + 3u, last) * params.q_sl);
    var a0 = zero_dims(); var a1 = zero_dims(); var a2 = zero_dims(); var a3 = zero_dims();
    var m_run = vec4<f32>(M_START);
    var lsum = vec4<f32>(0.0);
    var key_end = params.lk;
    if (params.causal != 0u) { key_end = min(key_end, row0 + 4u); }
    for (var key0 = 0u; key0 < key_end; key0 += 4u) {
        // scores: s[r][j] of row r and key key0 + j
        var s0 = vec4<f32>(0.0); var s1 = s0; var s2 = s0; var s3 = s0;
        for (var j = 0u; j < kept(4u); j++) {
            let key = key0 + j;
            let kd = load(1u, k_base + min(key, params.lk - 1u) * params.k_sl);
            s0[j] = adjust(dot_dims(q0, kd), b, h, row0, key);
            s1[j] = adjust(dot_dims(q1, kd), b, h, row0 + 1u, key);
            s2[j] = adjust(dot_dims(q2, kd), b, h, row0 + 2u, key);
            s3[j] = adjust(dot_dims(q3, kd), b, h, row0 + 3u, key);
        }
        let m_new = max(m_run, vec4(hmax(s0), hmax(s1), hmax(s2), hmax(s3)));
        let alpha = exp2(m_run - m_new);
        m_run = m_new;
        s0 = exp2(s0 - m_new.x); s1 = exp2(s1 - m_new.y);
        s2 = exp2(s2 - m_new.z); s3 = exp2(s3 - m_new.w);
        lsum = lsum * alpha + vec4(hsum(s0), hsum(s1), hsum(s2), hsum(s3));
        a0 = dims_scale(a0, alpha.x); a1 = dims_scale(a1, alpha.y);
        a2 = dims_scale(a2, alpha.z); a3 = dims_scale(a3, alpha.w);
        for (var j = 0u; j < kept(4u); j++) {
            let vd = load(2u, v_base + min(key0 + j, params.lk - 1u) * params.v_sl);
            a0 = dims_fma(a0, s0[j], vd); a1 = dims_fma(a1, s1[j], vd);
            a2 = dims_fma(a2, s2[j], vd); a3 = dims_fma(a3, s3[j], vd);
        }
    }
    let inv = select(vec4(0.0), 1.0 / lsum, lsum > vec4(0.0));
    let o_base = b * params.o_sb + h * params.o_sh;
    // one store's code, each row's sums shifted into a0 in turn
    var scale = inv;
    for (var r = 0u; r < 4u; r++) {
        store(o_base, row0 + r, a0, scale.x);
        a0 = a1; a1 = a2; a2 = a3; scale = scale.yzwx;
    }
}
