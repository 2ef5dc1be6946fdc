// One pass of a power-of-two Stockham autosort FFT (Govindaraju et al., SC'08, Fig. 2) whose
// radix is L, itself computed as an L-point FFT in workgroup memory with radix-8/4/2 stages.
//
// The data are transforms of N points laid out as (batch, N, stride): point k of transform
// (bt, c) sits at (bt * N + k) * stride + c, so any axis is transformed without a transpose.
// A "column" is one L-point sub-FFT of one pass; a workgroup takes B = TILE / L consecutive
// columns. L is a parameter, not an override, so one pipeline serves every length. The pass with stride Ns (product of the earlier radices) reads column j's points at
// j + r * N/L, multiplies by W_{Ns L}^{(j mod Ns) r}, FFTs them and writes them at
// (j / Ns) * Ns * L + j mod Ns + r * Ns. One pass when N <= TILE; two or three up to 2^22+.
//
// Twiddles come from a two-level table of W = exp(+2 pi i k / N) computed in float64 on the
// host: tw[k & mask] * tw[2^bits + (k >> bits)], so no sin/cos runs in f32 and the tables stay
// small enough (2 * sqrt(N)) to live in cache.
override TILE: u32 = 4096u;  // complex points in workgroup memory (32 KiB)
override WG: u32 = 256u;     // = TILE / E
const E: u32 = 16u;          // points held by one invocation

struct Params {
    n: u32,        // transform length N (a power of two)
    log_l: u32,    // log2 L: points of each local FFT
    log_b: u32,    // log2 B = log2 (TILE / L): columns per workgroup
    log_m: u32,    // log2 (N / L)
    ns: u32,       // product of the radices of the earlier passes (1 for the first)
    stride: u32,   // distance between consecutive points of one transform
    columns: u32,  // batch * (N / L) * stride
    s_read: u32,   // power of two <= B: run of columns that are contiguous when loading
    s_write: u32,  // the same when storing
    tw_bits: u32,  // log2 of the low twiddle table's length
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

// W_N^k in the transform's direction.
fn twiddle(k: u32) -> vec2<f32> {
    let mask = (1u << params.tw_bits) - 1u;
    let w = cmul(tw[k & mask], tw[(1u << params.tw_bits) + (k >> params.tw_bits)]);
    return vec2<f32>(w.x, params.sign * w.y);
}

// z * (sign * i): the radix-4 rotation, -i forward and +i inverse.
fn rot(z: vec2<f32>) -> vec2<f32> {
    return params.sign * vec2<f32>(-z.y, z.x);
}

// Writes the R outputs of butterfly g of a stage with stride ns (slot (i/ns)*ns*R + i%ns + r*ns
// of column g % B).
fn out_base(g: u32, ns: u32, radix: u32) -> u32 {
    let i = g >> params.log_b;
    let k = i & (ns - 1u);
    return (((i - k) * radix + k) << params.log_b) + (g & ((1u << params.log_b) - 1u));
}

fn stage2(lid: u32, ns: u32) {
    var v: array<vec2<f32>, E>;
    for (var q = 0u; q < E / 2u; q++) {
        let g = lid + q * WG;
        v[2u * q] = s[g];
        v[2u * q + 1u] = s[g + TILE / 2u];
    }
    workgroupBarrier();
    let step = params.n / (ns * 2u);
    for (var q = 0u; q < E / 2u; q++) {
        let g = lid + q * WG;
        let k = (g >> params.log_b) & (ns - 1u);
        var a1 = v[2u * q + 1u];
        if (ns > 1u) { a1 = cmul(a1, twiddle(k * step)); }
        let base = out_base(g, ns, 2u);
        s[base] = v[2u * q] + a1;
        s[base + (ns << params.log_b)] = v[2u * q] - a1;
    }
    workgroupBarrier();
}

fn stage4(lid: u32, ns: u32) {
    var v: array<vec2<f32>, E>;
    for (var q = 0u; q < E / 4u; q++) {
        let g = lid + q * WG;
        for (var r = 0u; r < 4u; r++) { v[4u * q + r] = s[g + r * (TILE / 4u)]; }
    }
    workgroupBarrier();
    let step = params.n / (ns * 4u);
    for (var q = 0u; q < E / 4u; q++) {
        let g = lid + q * WG;
        let k = (g >> params.log_b) & (ns - 1u);
        let a0 = v[4u * q];
        var a1 = v[4u * q + 1u];
        var a2 = v[4u * q + 2u];
        var a3 = v[4u * q + 3u];
        if (ns > 1u) {
            a1 = cmul(a1, twiddle(k * step));
            a2 = cmul(a2, twiddle(2u * k * step));
            a3 = cmul(a3, twiddle(3u * k * step));
        }
        let t0 = a0 + a2;
        let t1 = a0 - a2;
        let t2 = a1 + a3;
        let t3 = rot(a1 - a3);
        let base = out_base(g, ns, 4u);
        let d = ns << params.log_b;
        s[base] = t0 + t2;
        s[base + d] = t1 + t3;
        s[base + 2u * d] = t0 - t2;
        s[base + 3u * d] = t1 - t3;
    }
    workgroupBarrier();
}

fn stage8(lid: u32, ns: u32) {
    var v: array<vec2<f32>, E>;
    for (var q = 0u; q < E / 8u; q++) {
        let g = lid + q * WG;
        for (var r = 0u; r < 8u; r++) { v[8u * q + r] = s[g + r * (TILE / 8u)]; }
    }
    workgroupBarrier();
    let step = params.n / (ns * 8u);
    let h = 0.70710678118654752;
    for (var q = 0u; q < E / 8u; q++) {
        let g = lid + q * WG;
        let k = (g >> params.log_b) & (ns - 1u);
        var a: array<vec2<f32>, 8>;
        a[0] = v[8u * q];
        for (var r = 1u; r < 8u; r++) {
            a[r] = v[8u * q + r];
            if (ns > 1u) { a[r] = cmul(a[r], twiddle(r * k * step)); }
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
        let w1 = vec2<f32>(h, params.sign * h);
        let w3 = vec2<f32>(-h, params.sign * h);
        let od0 = o0 + o2;
        let od1 = cmul(o1 + o3, w1);
        let od2 = rot(o0 - o2);
        let od3 = cmul(o1 - o3, w3);
        let base = out_base(g, ns, 8u);
        let d = ns << params.log_b;
        s[base] = ev0 + od0;
        s[base + d] = ev1 + od1;
        s[base + 2u * d] = ev2 + od2;
        s[base + 3u * d] = ev3 + od3;
        s[base + 4u * d] = ev0 - od0;
        s[base + 5u * d] = ev1 - od1;
        s[base + 6u * d] = ev2 - od2;
        s[base + 7u * d] = ev3 - od3;
    }
    workgroupBarrier();
}

// Column col of this pass as (batch, j, c).
fn column(col: u32) -> vec3<u32> {
    let rest = col / params.stride;
    return vec3<u32>(rest >> params.log_m, rest & ((1u << params.log_m) - 1u),
                     col - rest * params.stride);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let L = 1u << params.log_l;
    let B = 1u << params.log_b;
    let first = (wid.y * nwg.x + wid.x) * B;
    let m = 1u << params.log_m;
    let step = params.n / (params.ns * L);
    // Invocation t takes (column b, point r) so that runs of s_read columns are contiguous in
    // memory: consecutive invocations then read consecutive addresses.
    let sr = countTrailingZeros(params.s_read);
    for (var q = 0u; q < E; q++) {
        let t = lid + q * WG;
        let b = ((t >> (sr + params.log_l)) << sr) | (t & ((1u << sr) - 1u));
        let r = (t >> sr) & (L - 1u);
        var v = vec2<f32>(0.0);
        if (first + b < params.columns) {
            let col = column(first + b);
            v = x[((col.x * params.n + col.y + r * m) * params.stride) + col.z];
            if (params.ns > 1u) { v = cmul(v, twiddle((col.y & (params.ns - 1u)) * r * step)); }
        }
        s[r * B + b] = v;
    }
    workgroupBarrier();
    var ns = 1u;
    for (; ns * 8u <= L; ns *= 8u) { stage8(lid, ns); }
    if (ns * 4u == L) {
        stage4(lid, ns);
    } else if (ns * 2u == L) {
        stage2(lid, ns);
    }
    let sw = countTrailingZeros(params.s_write);
    let big = params.ns;
    for (var q = 0u; q < E; q++) {
        let t = lid + q * WG;
        let b = ((t >> (sw + params.log_l)) << sw) | (t & ((1u << sw) - 1u));
        let r = (t >> sw) & (L - 1u);
        if (first + b < params.columns) {
            let col = column(first + b);
            let j = col.y & (big - 1u);
            let k = (col.y - j) * L + j + r * big;
            y[(col.x * params.n + k) * params.stride + col.z] = s[r * B + b] * params.scale;
        }
    }
}
