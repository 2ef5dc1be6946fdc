// One pass of a power-of-two Stockham autosort FFT (Govindaraju et al., SC'08, Fig. 2) whose
// radix is L, itself computed as an L-point FFT in workgroup memory with radix-8/4/2 stages.
//
// The data are transforms of N points laid out as (batch, N, stride): point k of transform
// (bt, c) sits at (bt * N + k) * stride + c, so any axis is transformed without a transpose.
// A "column" is one L-point sub-FFT of one pass; a workgroup takes B = TILE / L consecutive
// columns. L is a parameter, not an override, so one pipeline serves every length. The pass
// with stride Ns (product of the earlier radices) reads column j's points at j + r * N/L,
// multiplies them by W_{Ns L}^{(j mod Ns) r}, FFTs them and writes them at
// (j / Ns) * Ns * L + j mod Ns + r * Ns. One pass when N <= TILE; two or three up to 2^30.
//
// Each invocation's work is written out straight (no loops over its 16 points): GPU compilers
// then keep the points in registers and issue all memory loads at once; looped versions ran
// latency-bound at a third of the speed. Twiddles W_{2^k}^j = T[j >> (k - 6)] * exp(i x) take
// T, the 64th roots of unity (built in float64 on the host), and a short Taylor series for
// |x| < 2 pi / 64 that is exact in f32: no large table is gathered from, which costs one
// cache line per lane, and no f32 sin/cos of a large argument loses accuracy.
override TILE: u32 = 4096u;  // complex points in workgroup memory (32 KiB)
override WG: u32 = 256u;     // = TILE / 16: each invocation holds 16 points

struct Params {
    n: u32,        // transform length N (a power of two)
    log_l: u32,    // log2 L: points of each local FFT
    log_b: u32,    // log2 B = log2 (TILE / L): columns per workgroup
    log_m: u32,    // log2 (N / L)
    log_ns: u32,   // log2 Ns: product of the radices of the earlier passes (0 for the first)
    stride: u32,   // distance between consecutive points of one transform
    columns: u32,  // batch * (N / L) * stride
    log_read: u32,   // log2 of the run of columns that are contiguous when loading (<= log_b)
    log_write: u32,  // the same when storing
    sign: f32,     // -1 forward, +1 inverse
    scale: f32,    // applied on store (the norm= factor on the last pass)
}

@group(0) @binding(0) var<storage, read> x: array<vec2<f32>>;
@group(0) @binding(1) var<storage, read> tw: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec2<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> s: array<vec2<f32>, TILE>;

fn cmul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

// exp(sign * 2 pi i j / 2^k) for j < 2^k.
fn root(j: u32, k: u32) -> vec2<f32> {
    var w: vec2<f32>;
    if (k <= 6u) {
        w = tw[j << (6u - k)];
    } else {
        let t = tw[j >> (k - 6u)];
        let a = ldexp(f32(j & ((1u << (k - 6u)) - 1u)), -i32(k)) * 6.28318530717958648;
        let a2 = a * a;
        let c = 1.0 + a2 * (-0.5 + a2 * (0.0416666666666666667 - a2 * 0.00138888888888888889));
        let sn = a * (1.0 + a2 * (-0.166666666666666667 + a2 * 0.00833333333333333333));
        w = cmul(t, vec2<f32>(c, sn));
    }
    return vec2<f32>(w.x, params.sign * w.y);
}

// z * (sign * i): the radix-4 rotation, -i forward and +i inverse.
fn rot(z: vec2<f32>) -> vec2<f32> {
    return params.sign * vec2<f32>(-z.y, z.x);
}

// Where butterfly g of a stage with stride 2^log_ns and radix 2^log_r writes output 0; output
// r goes r << (log_ns + log_b) further.
fn out_base(g: u32, log_ns: u32, log_r: u32) -> u32 {
    let i = g >> params.log_b;
    let k = i & ((1u << log_ns) - 1u);
    return ((((i - k) << log_r) + k) << params.log_b) + (g & ((1u << params.log_b) - 1u));
}

// The twiddle exponent of butterfly g in a stage with stride 2^log_ns.
fn phase(g: u32, log_ns: u32) -> u32 {
    return (g >> params.log_b) & ((1u << log_ns) - 1u);
}

fn gather2(g: u32) -> array<vec2<f32>, 2> {
    return array<vec2<f32>, 2>(s[g], s[g + TILE / 2u]);
}

fn butterfly2(g: u32, log_ns: u32, a: array<vec2<f32>, 2>) {
    var a1 = a[1];
    if (log_ns > 0u) {
        a1 = cmul(a1, root(phase(g, log_ns), log_ns + 1u));
    }
    let base = out_base(g, log_ns, 1u);
    s[base] = a[0] + a1;
    s[base + (1u << (log_ns + params.log_b))] = a[0] - a1;
}

fn gather4(g: u32) -> array<vec2<f32>, 4> {
    let d = TILE / 4u;
    return array<vec2<f32>, 4>(s[g], s[g + d], s[g + 2u * d], s[g + 3u * d]);
}

fn butterfly4(g: u32, log_ns: u32, a: array<vec2<f32>, 4>) {
    var a1 = a[1];
    var a2 = a[2];
    var a3 = a[3];
    if (log_ns > 0u) {
        let k = phase(g, log_ns);
        a1 = cmul(a1, root(k, log_ns + 2u));
        a2 = cmul(a2, root(2u * k, log_ns + 2u));
        a3 = cmul(a3, root(3u * k, log_ns + 2u));
    }
    let t0 = a[0] + a2;
    let t1 = a[0] - a2;
    let t2 = a1 + a3;
    let t3 = rot(a1 - a3);
    let base = out_base(g, log_ns, 2u);
    let d = 1u << (log_ns + params.log_b);
    s[base] = t0 + t2;
    s[base + d] = t1 + t3;
    s[base + 2u * d] = t0 - t2;
    s[base + 3u * d] = t1 - t3;
}

fn gather8(g: u32) -> array<vec2<f32>, 8> {
    let d = TILE / 8u;
    return array<vec2<f32>, 8>(s[g], s[g + d], s[g + 2u * d], s[g + 3u * d], s[g + 4u * d],
                               s[g + 5u * d], s[g + 6u * d], s[g + 7u * d]);
}

fn butterfly8(g: u32, log_ns: u32, p: array<vec2<f32>, 8>) {
    var a = p;
    if (log_ns > 0u) {
        let k = phase(g, log_ns);
        let bits = log_ns + 3u;
        a[1] = cmul(a[1], root(k, bits));
        a[2] = cmul(a[2], root(2u * k, bits));
        a[3] = cmul(a[3], root(3u * k, bits));
        a[4] = cmul(a[4], root(4u * k, bits));
        a[5] = cmul(a[5], root(5u * k, bits));
        a[6] = cmul(a[6], root(6u * k, bits));
        a[7] = cmul(a[7], root(7u * k, bits));
    }
    // Radix-8 as two radix-4 butterflies (even and odd points) joined by W_8^r.
    let e0 = a[0] + a[4];
    let e1 = a[0] - a[4];
    let e2 = a[2] + a[6];
    let e3 = rot(a[2] - a[6]);
    let o0 = a[1] + a[5];
    let o1 = a[1] - a[5];
    let o2 = a[3] + a[7];
    let o3 = rot(a[3] - a[7]);
    let ev0 = e0 + e2;
    let ev1 = e1 + e3;
    let ev2 = e0 - e2;
    let ev3 = e1 - e3;
    let h = 0.70710678118654752;
    let od0 = o0 + o2;
    let od1 = cmul(o1 + o3, vec2<f32>(h, params.sign * h));
    let od2 = rot(o0 - o2);
    let od3 = cmul(o1 - o3, vec2<f32>(-h, params.sign * h));
    let base = out_base(g, log_ns, 3u);
    let d = 1u << (log_ns + params.log_b);
    s[base] = ev0 + od0;
    s[base + d] = ev1 + od1;
    s[base + 2u * d] = ev2 + od2;
    s[base + 3u * d] = ev3 + od3;
    s[base + 4u * d] = ev0 - od0;
    s[base + 5u * d] = ev1 - od1;
    s[base + 6u * d] = ev2 - od2;
    s[base + 7u * d] = ev3 - od3;
}

// Radix-8/4/2 stages read every point before any is overwritten (one barrier between), so a
// single TILE buffer suffices; each invocation owns TILE / WG = 16 points.
fn stage8(lid: u32, log_ns: u32) {
    let p0 = gather8(lid);
    let p1 = gather8(lid + WG);
    workgroupBarrier();
    butterfly8(lid, log_ns, p0);
    butterfly8(lid + WG, log_ns, p1);
    workgroupBarrier();
}

fn stage4(lid: u32, log_ns: u32) {
    let p0 = gather4(lid);
    let p1 = gather4(lid + WG);
    let p2 = gather4(lid + 2u * WG);
    let p3 = gather4(lid + 3u * WG);
    workgroupBarrier();
    butterfly4(lid, log_ns, p0);
    butterfly4(lid + WG, log_ns, p1);
    butterfly4(lid + 2u * WG, log_ns, p2);
    butterfly4(lid + 3u * WG, log_ns, p3);
    workgroupBarrier();
}

fn stage2(lid: u32, log_ns: u32) {
    let p0 = gather2(lid);
    let p1 = gather2(lid + WG);
    let p2 = gather2(lid + 2u * WG);
    let p3 = gather2(lid + 3u * WG);
    let p4 = gather2(lid + 4u * WG);
    let p5 = gather2(lid + 5u * WG);
    let p6 = gather2(lid + 6u * WG);
    let p7 = gather2(lid + 7u * WG);
    workgroupBarrier();
    butterfly2(lid, log_ns, p0);
    butterfly2(lid + WG, log_ns, p1);
    butterfly2(lid + 2u * WG, log_ns, p2);
    butterfly2(lid + 3u * WG, log_ns, p3);
    butterfly2(lid + 4u * WG, log_ns, p4);
    butterfly2(lid + 5u * WG, log_ns, p5);
    butterfly2(lid + 6u * WG, log_ns, p6);
    butterfly2(lid + 7u * WG, log_ns, p7);
    workgroupBarrier();
}

// Column col of this pass as (batch, j, c); the division only runs for strided axes.
fn column(col: u32) -> vec3<u32> {
    var rest = col;
    var c = 0u;
    if (params.stride != 1u) {
        rest = col / params.stride;
        c = col - rest * params.stride;
    }
    return vec3<u32>(rest >> params.log_m, rest & ((1u << params.log_m) - 1u), c);
}

// Point t of the workgroup as (column b, point r): runs of 2^run consecutive invocations take
// consecutive columns, which are consecutive in memory, so loads and stores coalesce.
fn slot(t: u32, run: u32) -> vec2<u32> {
    let b = ((t >> (run + params.log_l)) << run) | (t & ((1u << run) - 1u));
    return vec2<u32>(b, (t >> run) & ((1u << params.log_l) - 1u));
}

fn load(first: u32, t: u32) {
    let p = slot(t, params.log_read);
    var v = vec2<f32>(0.0);
    if (first + p.x < params.columns) {
        let col = column(first + p.x);
        v = x[((col.x * params.n + col.y + (p.y << params.log_m)) * params.stride) + col.z];
        if (params.log_ns > 0u) {
            let j = col.y & ((1u << params.log_ns) - 1u);
            v = cmul(v, root(j * p.y, params.log_ns + params.log_l));
        }
    }
    s[(p.y << params.log_b) + p.x] = v;
}

fn store(first: u32, t: u32) {
    let p = slot(t, params.log_write);
    if (first + p.x < params.columns) {
        let col = column(first + p.x);
        let j = col.y & ((1u << params.log_ns) - 1u);
        let k = ((col.y - j) << params.log_l) + j + (p.y << params.log_ns);
        y[(col.x * params.n + k) * params.stride + col.z] =
            s[(p.y << params.log_b) + p.x] * params.scale;
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let first = (wid.y * nwg.x + wid.x) << params.log_b;
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
    var log_ns = 0u;
    for (; log_ns + 3u <= params.log_l; log_ns += 3u) {
        stage8(lid, log_ns);
    }
    if (log_ns + 2u == params.log_l) {
        stage4(lid, log_ns);
    } else if (log_ns + 1u == params.log_l) {
        stage2(lid, log_ns);
    }
    store(first, lid);
    store(first, lid + WG);
    store(first, lid + 2u * WG);
    store(first, lid + 3u * WG);
    store(first, lid + 4u * WG);
    store(first, lid + 5u * WG);
    store(first, lid + 6u * WG);
    store(first, lid + 7u * WG);
    store(first, lid + 8u * WG);
    store(first, lid + 9u * WG);
    store(first, lid + 10u * WG);
    store(first, lid + 11u * WG);
    store(first, lid + 12u * WG);
    store(first, lid + 13u * WG);
    store(first, lid + 14u * WG);
    store(first, lid + 15u * WG);
}
