//! parts: fft/stockham_common
// One pass of a power-of-two Stockham autosort FFT (Govindaraju et al., SC'08, Fig. 2) whose
// radix is L, itself computed as an L-point FFT: radix-16 butterflies held in registers, with
// workgroup memory only for the exchanges between them.
//
// The data are transforms of N points laid out as (batch, N, stride): point k of transform
// (bt, c) sits at (bt * N + k) * stride + c, so any axis is transformed without a transpose.
// A "column" is one L-point sub-FFT of one pass; a workgroup takes B = TILE / L consecutive
// columns. L is a parameter, not an override, so one pipeline serves every length. The pass
// with stride Ns (product of the earlier radices) reads column j's points at j + r * N/L,
// multiplies them by W_{Ns L}^{(j mod Ns) r}, FFTs them and writes them at
// (j / Ns) * Ns * L + j mod Ns + r * Ns. One pass when N <= TILE; two or three up to 2^30.
//
// Within a pass the L-point FFT is itself Stockham: radix-16 stages, then one of radix 2, 4
// or 8 for the rest of log2 L. The first stage reads its 16 points straight from memory and
// the last writes straight to memory; only the exchanges between stages go through workgroup
// memory (two for L = 1024 or 4096). Each invocation's work is written out straight (no loops
// over its points) so compilers keep the points in registers and issue all loads at once.
//
// Twiddles W_{2^k}^j = T[j >> (k - 6)] * exp(i x) take T, the 64th roots of unity (built in
// float64 on the host), and a short Taylor series for |x| < 2 pi / 64 that is exact in f32:
// no large table is gathered from (a cache line per lane) and no f32 sin/cos of a large
// argument loses accuracy. The parameters, bindings and those shared with stockham_cpu.wgsl:
// stockham_common.wgsl.
override TILE: u32 = 4096u;  // complex points in workgroup memory (32 KiB)
override WG: u32 = 256u;     // = TILE / 16: each invocation holds 16 points

alias Points2 = array<vec2<f32>, 2>;
alias Points4 = array<vec2<f32>, 4>;
alias Points8 = array<vec2<f32>, 8>;
alias Points16 = array<vec2<f32>, 16>;

// exp(sign * 2 pi i m / 16) as (cos, sign * sin) constants.
fn w16(c: f32, sn: f32) -> vec2<f32> {
    return vec2<f32>(c, params.sign * sn);
}

fn dft2(a: Points2) -> Points2 {
    return Points2(a[0] + a[1], a[0] - a[1]);
}

fn dft4(a0: vec2<f32>, a1: vec2<f32>, a2: vec2<f32>, a3: vec2<f32>) -> Points4 {
    let t0 = a0 + a2;
    let t1 = a0 - a2;
    let t2 = a1 + a3;
    let t3 = rot(a1 - a3);
    return Points4(t0 + t2, t1 + t3, t0 - t2, t1 - t3);
}

// Radix-8 as two radix-4 butterflies (even and odd points) joined by W_8^r.
fn dft8(a: Points8) -> Points8 {
    let h = 0.707106781186547524;
    let e = dft4(a[0], a[2], a[4], a[6]);
    let o = dft4(a[1], a[3], a[5], a[7]);
    let o1 = cmul(o[1], w16(h, h));
    let o2 = rot(o[2]);
    let o3 = cmul(o[3], w16(-h, h));
    return Points8(e[0] + o[0], e[1] + o1, e[2] + o2, e[3] + o3,
                   e[0] - o[0], e[1] - o1, e[2] - o2, e[3] - o3);
}

// Radix-16 as 4 x 4: DFT4 down the columns x[n2 + 4 n1], twiddle W_16^(n2 k1), DFT4 across.
fn dft16(x: Points16) -> Points16 {
    let c1 = 0.923879532511286756;
    let s1 = 0.382683432365089772;
    let h = 0.707106781186547524;
    let y0 = dft4(x[0], x[4], x[8], x[12]);
    let y1 = dft4(x[1], x[5], x[9], x[13]);
    let y2 = dft4(x[2], x[6], x[10], x[14]);
    let y3 = dft4(x[3], x[7], x[11], x[15]);
    let r0 = dft4(y0[0], y1[0], y2[0], y3[0]);
    let r1 = dft4(y0[1], cmul(y1[1], w16(c1, s1)), cmul(y2[1], w16(h, h)),
                  cmul(y3[1], w16(s1, c1)));
    let r2 = dft4(y0[2], cmul(y1[2], w16(h, h)), rot(y2[2]), cmul(y3[2], w16(-h, h)));
    let r3 = dft4(y0[3], cmul(y1[3], w16(s1, c1)), cmul(y2[3], w16(-h, h)),
                  cmul(y3[3], w16(-c1, -s1)));
    return Points16(r0[0], r1[0], r2[0], r3[0], r0[1], r1[1], r2[1], r3[1],
                    r0[2], r1[2], r2[2], r3[2], r0[3], r1[3], r2[3], r3[3]);
}

// a[r] * W_{2^bits}^(k r), r = 0..15, with W^k (mod 2^bits) from four roots and products
// (at most three roundings each).
fn twiddle16(a: Points16, k: u32, bits: u32) -> Points16 {
    let mask = (1u << bits) - 1u;
    let w1 = root(k & mask, bits);
    let w2 = root((2u * k) & mask, bits);
    let w4 = root((4u * k) & mask, bits);
    let w8 = root((8u * k) & mask, bits);
    let w3 = cmul(w1, w2);
    let w5 = cmul(w1, w4);
    let w6 = cmul(w2, w4);
    let w7 = cmul(w3, w4);
    return Points16(a[0], cmul(a[1], w1), cmul(a[2], w2), cmul(a[3], w3), cmul(a[4], w4),
                    cmul(a[5], w5), cmul(a[6], w6), cmul(a[7], w7), cmul(a[8], w8),
                    cmul(a[9], cmul(w1, w8)), cmul(a[10], cmul(w2, w8)),
                    cmul(a[11], cmul(w3, w8)), cmul(a[12], cmul(w4, w8)),
                    cmul(a[13], cmul(w5, w8)), cmul(a[14], cmul(w6, w8)),
                    cmul(a[15], cmul(w7, w8)));
}

// Stage one (radix 16, stride 1) straight from memory, with the pass's twiddles.
fn first16(first: u32, lid: u32) {
    let log_q = params.log_l - 4u;
    let bi = assign(lid, params.log_read, log_q);
    var a: Points16;
    if (first + bi.x < params.columns) {
        let col = column(first + bi.x);
        let at = (col.x * params.n + col.y + (bi.y << params.log_m)) * params.stride + col.z;
        let d = params.stride << (params.log_m + log_q);
        a = Points16(x[at], x[at + d], x[at + 2u * d], x[at + 3u * d], x[at + 4u * d],
                     x[at + 5u * d], x[at + 6u * d], x[at + 7u * d], x[at + 8u * d],
                     x[at + 9u * d], x[at + 10u * d], x[at + 11u * d], x[at + 12u * d],
                     x[at + 13u * d], x[at + 14u * d], x[at + 15u * d]);
        if (params.log_ns > 0u) {
            // Point i + r Q of column j takes W^(j (i + r Q)) = W^(j i) * (W^(j Q))^r.
            let j = col.y & ((1u << params.log_ns) - 1u);
            let bits = params.log_ns + params.log_l;
            a = twiddle16(a, j << log_q, bits);
            let w = root((j * bi.y) & ((1u << bits) - 1u), bits);
            a = Points16(cmul(a[0], w), cmul(a[1], w), cmul(a[2], w), cmul(a[3], w),
                         cmul(a[4], w), cmul(a[5], w), cmul(a[6], w), cmul(a[7], w),
                         cmul(a[8], w), cmul(a[9], w), cmul(a[10], w), cmul(a[11], w),
                         cmul(a[12], w), cmul(a[13], w), cmul(a[14], w), cmul(a[15], w));
        }
    }
    let z = dft16(a);
    if (params.log_l == 4u) {
        let t = last_slot(first, lid, 4u);
        if (first + t.x < params.columns) {
            put16(t, z);
        }
        return;
    }
    let at = ((bi.y << 4u) << params.log_b) + bi.x;
    let d = 1u << params.log_b;
    s[at] = z[0];
    s[at + d] = z[1];
    s[at + 2u * d] = z[2];
    s[at + 3u * d] = z[3];
    s[at + 4u * d] = z[4];
    s[at + 5u * d] = z[5];
    s[at + 6u * d] = z[6];
    s[at + 7u * d] = z[7];
    s[at + 8u * d] = z[8];
    s[at + 9u * d] = z[9];
    s[at + 10u * d] = z[10];
    s[at + 11u * d] = z[11];
    s[at + 12u * d] = z[12];
    s[at + 13u * d] = z[13];
    s[at + 14u * d] = z[14];
    s[at + 15u * d] = z[15];
}

// A middle radix-16 stage with stride 2^log_ns, workgroup memory to workgroup memory.
fn stage16(lid: u32, log_ns: u32) {
    let d = TILE / 16u;
    var a = Points16(s[lid], s[lid + d], s[lid + 2u * d], s[lid + 3u * d], s[lid + 4u * d],
                     s[lid + 5u * d], s[lid + 6u * d], s[lid + 7u * d], s[lid + 8u * d],
                     s[lid + 9u * d], s[lid + 10u * d], s[lid + 11u * d], s[lid + 12u * d],
                     s[lid + 13u * d], s[lid + 14u * d], s[lid + 15u * d]);
    workgroupBarrier();
    let i = lid >> params.log_b;
    let k = i & ((1u << log_ns) - 1u);
    let z = dft16(twiddle16(a, k, log_ns + 4u));
    let at = ((((i - k) << 4u) + k) << params.log_b) + (lid & ((1u << params.log_b) - 1u));
    let e = 1u << (log_ns + params.log_b);
    s[at] = z[0];
    s[at + e] = z[1];
    s[at + 2u * e] = z[2];
    s[at + 3u * e] = z[3];
    s[at + 4u * e] = z[4];
    s[at + 5u * e] = z[5];
    s[at + 6u * e] = z[6];
    s[at + 7u * e] = z[7];
    s[at + 8u * e] = z[8];
    s[at + 9u * e] = z[9];
    s[at + 10u * e] = z[10];
    s[at + 11u * e] = z[11];
    s[at + 12u * e] = z[12];
    s[at + 13u * e] = z[13];
    s[at + 14u * e] = z[14];
    s[at + 15u * e] = z[15];
    workgroupBarrier();
}

// Butterfly u of the last stage (radix 2^log_r, stride L / 2^log_r) as (column, i, memory
// index of its output 0, memory distance between its outputs).
fn last_slot(first: u32, u: u32, log_r: u32) -> vec4<u32> {
    let log_q = params.log_l - log_r;
    let bi = assign(u, params.log_write, log_q);
    let col = column(min(first + bi.x, params.columns - 1u));
    let j = col.y & ((1u << params.log_ns) - 1u);
    let k = ((col.y - j) << params.log_l) + j + (bi.y << params.log_ns);
    return vec4<u32>(bi.x, bi.y, (col.x * params.n + k) * params.stride + col.z,
                     params.stride << (log_q + params.log_ns));
}

// The outputs of a last-stage butterfly to memory (t from last_slot), normalized.
fn put16(t: vec4<u32>, z: Points16) {
    let k = params.scale;
    y[t.z] = z[0] * k;
    y[t.z + t.w] = z[1] * k;
    y[t.z + 2u * t.w] = z[2] * k;
    y[t.z + 3u * t.w] = z[3] * k;
    y[t.z + 4u * t.w] = z[4] * k;
    y[t.z + 5u * t.w] = z[5] * k;
    y[t.z + 6u * t.w] = z[6] * k;
    y[t.z + 7u * t.w] = z[7] * k;
    y[t.z + 8u * t.w] = z[8] * k;
    y[t.z + 9u * t.w] = z[9] * k;
    y[t.z + 10u * t.w] = z[10] * k;
    y[t.z + 11u * t.w] = z[11] * k;
    y[t.z + 12u * t.w] = z[12] * k;
    y[t.z + 13u * t.w] = z[13] * k;
    y[t.z + 14u * t.w] = z[14] * k;
    y[t.z + 15u * t.w] = z[15] * k;
}

fn put8(t: vec4<u32>, z: Points8) {
    let k = params.scale;
    y[t.z] = z[0] * k;
    y[t.z + t.w] = z[1] * k;
    y[t.z + 2u * t.w] = z[2] * k;
    y[t.z + 3u * t.w] = z[3] * k;
    y[t.z + 4u * t.w] = z[4] * k;
    y[t.z + 5u * t.w] = z[5] * k;
    y[t.z + 6u * t.w] = z[6] * k;
    y[t.z + 7u * t.w] = z[7] * k;
}

fn put4(t: vec4<u32>, z: Points4) {
    let k = params.scale;
    y[t.z] = z[0] * k;
    y[t.z + t.w] = z[1] * k;
    y[t.z + 2u * t.w] = z[2] * k;
    y[t.z + 3u * t.w] = z[3] * k;
}

// Input r of last-stage butterfly (column c, index i) in workgroup memory.
fn last_in(t: vec4<u32>, r: u32, log_r: u32) -> vec2<f32> {
    return s[((t.y + (r << (params.log_l - log_r))) << params.log_b) + t.x];
}

fn last16(first: u32, lid: u32) {
    let t = last_slot(first, lid, 4u);
    let a = Points16(last_in(t, 0u, 4u), last_in(t, 1u, 4u), last_in(t, 2u, 4u),
                     last_in(t, 3u, 4u), last_in(t, 4u, 4u), last_in(t, 5u, 4u),
                     last_in(t, 6u, 4u), last_in(t, 7u, 4u), last_in(t, 8u, 4u),
                     last_in(t, 9u, 4u), last_in(t, 10u, 4u), last_in(t, 11u, 4u),
                     last_in(t, 12u, 4u), last_in(t, 13u, 4u), last_in(t, 14u, 4u),
                     last_in(t, 15u, 4u));
    let z = dft16(twiddle16(a, t.y, params.log_l));
    if (first + t.x < params.columns) {
        put16(t, z);
    }
}

fn last8(first: u32, u: u32) {
    let t = last_slot(first, u, 3u);
    var a = Points8(last_in(t, 0u, 3u), last_in(t, 1u, 3u), last_in(t, 2u, 3u),
                    last_in(t, 3u, 3u), last_in(t, 4u, 3u), last_in(t, 5u, 3u),
                    last_in(t, 6u, 3u), last_in(t, 7u, 3u));
    if (params.log_l > 3u) {
        let l = params.log_l;
        a[1] = cmul(a[1], root(t.y, l));
        a[2] = cmul(a[2], root(2u * t.y, l));
        a[3] = cmul(a[3], root(3u * t.y, l));
        a[4] = cmul(a[4], root(4u * t.y, l));
        a[5] = cmul(a[5], root(5u * t.y, l));
        a[6] = cmul(a[6], root(6u * t.y, l));
        a[7] = cmul(a[7], root(7u * t.y, l));
    }
    let z = dft8(a);
    if (first + t.x < params.columns) {
        put8(t, z);
    }
}

fn last4(first: u32, u: u32) {
    let t = last_slot(first, u, 2u);
    var a = Points4(last_in(t, 0u, 2u), last_in(t, 1u, 2u), last_in(t, 2u, 2u),
                    last_in(t, 3u, 2u));
    if (params.log_l > 2u) {
        a[1] = cmul(a[1], root(t.y, params.log_l));
        a[2] = cmul(a[2], root(2u * t.y, params.log_l));
        a[3] = cmul(a[3], root(3u * t.y, params.log_l));
    }
    let z = dft4(a[0], a[1], a[2], a[3]);
    if (first + t.x < params.columns) {
        put4(t, z);
    }
}

fn last2(first: u32, u: u32) {
    let t = last_slot(first, u, 1u);
    var a = Points2(last_in(t, 0u, 1u), last_in(t, 1u, 1u));
    if (params.log_l > 1u) {
        a[1] = cmul(a[1], root(t.y, params.log_l));
    }
    let z = dft2(a);
    if (first + t.x < params.columns) {
        y[t.z] = z[0] * params.scale;
        y[t.z + t.w] = z[1] * params.scale;
    }
}

// Point t of the workgroup from memory into workgroup memory (lengths below 16).
fn load(first: u32, t: u32) {
    let p = assign(t, params.log_read, params.log_l);
    s[(p.y << params.log_b) + p.x] = read_point(first, p);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let first = (wid.y * nwg.x + wid.x) << params.log_b;
    if (params.log_l < 4u) {
        load(first, lid);
        load(first, lid + WG);
        load(first, lid + 2u * WG);
        load(first, lid + 3u * WG);
        load(first, lid + 4u * WG);
        load(first, lid + 5u * WG);
        load(first, lid + 6u * WG);
        load(first, lid + 7u * WG);
        load(first, lid + 8u * WG);
        load(first, lid + 9u * WG);
        load(first, lid + 10u * WG);
        load(first, lid + 11u * WG);
        load(first, lid + 12u * WG);
        load(first, lid + 13u * WG);
        load(first, lid + 14u * WG);
        load(first, lid + 15u * WG);
        workgroupBarrier();
        if (params.log_l == 3u) {
            last8(first, lid);
            last8(first, lid + WG);
        } else if (params.log_l == 2u) {
            last4(first, lid);
            last4(first, lid + WG);
            last4(first, lid + 2u * WG);
            last4(first, lid + 3u * WG);
        } else {
            last2(first, lid);
            last2(first, lid + WG);
            last2(first, lid + 2u * WG);
            last2(first, lid + 3u * WG);
            last2(first, lid + 4u * WG);
            last2(first, lid + 5u * WG);
            last2(first, lid + 6u * WG);
            last2(first, lid + 7u * WG);
        }
        return;
    }
    first16(first, lid);
    if (params.log_l == 4u) {
        return;
    }
    workgroupBarrier();
    var log_ns = 4u;
    for (; log_ns + 4u < params.log_l; log_ns += 4u) {
        stage16(lid, log_ns);
    }
    let log_r = params.log_l - log_ns;
    if (log_r == 4u) {
        last16(first, lid);
    } else if (log_r == 3u) {
        last8(first, lid);
        last8(first, lid + WG);
    } else if (log_r == 2u) {
        last4(first, lid);
        last4(first, lid + WG);
        last4(first, lid + 2u * WG);
        last4(first, lid + 3u * WG);
    } else {
        last2(first, lid);
        last2(first, lid + WG);
        last2(first, lid + 2u * WG);
        last2(first, lid + 3u * WG);
        last2(first, lid + 4u * WG);
        last2(first, lid + 5u * WG);
        last2(first, lid + 6u * WG);
        last2(first, lid + 7u * WG);
    }
}
