//! parts: fft/stockham_common
// One pass of the power-of-two Stockham FFT for CPU adapters (gpustd/_fft_plan.py picks it
// where device.info.type == "cpu"): stockham.wgsl's passes, parameters, bindings and twiddles,
// but each column's L-point FFT runs in place in workgroup memory (its points loaded in
// bit-reversed order) as radix-4 stages, after one radix-2 stage for odd log2 L, and each
// invocation's points and butterflies are loops bounded by the parameters, which a compiler
// cannot unroll. llvmpipe compiles stockham.wgsl's straight-line radix-16 code at a variant's
// first dispatch in 3.3-4.7 s of CPU (8-14 s in CI's two busy workers), on each adapter; this
// in about 0.1 s, and runs as fast there (bench/NOTES.md, "the FFT on CPU adapters").
//
// Layout as in stockham.wgsl: a workgroup takes B = TILE / L consecutive columns, point i of
// column c at s[(i << log_b) + c]; the pass with stride Ns twiddles column j's point r by
// W_{Ns L}^{(j mod Ns) r} on loading and writes its output r at (j / Ns) * Ns * L + j mod Ns +
// r * Ns. The parameters, bindings, cmul, root, rot, column, assign, read_point: stockham_common.
override TILE: u32 = 4096u;  // complex points in workgroup memory (32 KiB)
override WG: u32 = 256u;     // invocations: each takes every WG-th point and butterfly

// Point t of the workgroup from memory, twiddled for this pass, to its bit-reversed place.
fn load(first: u32, t: u32) {
    let p = assign(t, params.log_read, params.log_l);
    s[((reverseBits(p.y) >> (32u - params.log_l)) << params.log_b) + p.x] = read_point(first, p);
}

// Index of butterfly u's first point when each takes 2^log_r points 2^st apart, in place.
fn first_point(u: u32, st: u32, log_r: u32) -> u32 {
    let v = u >> params.log_b;
    let k = v & ((1u << st) - 1u);
    return ((((v - k) << log_r) + k) << params.log_b) + (u & ((1u << params.log_b) - 1u));
}

// Butterfly u of the first radix-2 stage (twiddles all 1), for odd log2 L.
fn butterfly2(u: u32) {
    let lo = first_point(u, 0u, 1u);
    let hi = lo + (1u << params.log_b);
    let a = s[lo];
    let b = s[hi];
    s[lo] = a + b;
    s[hi] = a - b;
}

// Butterfly u of the radix-4 stage that joins fours of 2^st-point FFTs, in place: the two
// radix-2 stages st and st + 1 at once, with W_{4h}^k and its square (h = 2^st).
fn butterfly4(u: u32, st: u32) {
    let k = (u >> params.log_b) & ((1u << st) - 1u);
    let at = first_point(u, st, 2u);
    let d = 1u << (st + params.log_b);
    let w = root(k, st + 2u);
    let w2 = root(2u * k, st + 2u);
    let a0 = s[at];
    let a1 = cmul(s[at + d], w2);
    let a2 = s[at + 2u * d];
    let a3 = cmul(s[at + 3u * d], w2);
    let b0 = a0 + a1;
    let b1 = a0 - a1;
    let b2 = cmul(a2 + a3, w);
    let b3 = rot(cmul(a2 - a3, w));
    s[at] = b0 + b2;
    s[at + d] = b1 + b3;
    s[at + 2u * d] = b0 - b2;
    s[at + 3u * d] = b1 - b3;
}

// Point t of the workgroup's outputs to memory, normalized.
fn store(first: u32, t: u32) {
    let p = assign(t, params.log_write, params.log_l);
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
    let points = 1u << (params.log_l + params.log_b);  // TILE, from the parameters
    for (var t = lid; t < points; t += WG) {
        load(first, t);
    }
    var st = params.log_l & 1u;
    if (st == 1u) {
        workgroupBarrier();
        for (var u = lid; u < points / 2u; u += WG) {
            butterfly2(u);
        }
    }
    for (; st < params.log_l; st += 2u) {
        workgroupBarrier();
        for (var u = lid; u < points / 4u; u += WG) {
            butterfly4(u, st);
        }
    }
    workgroupBarrier();
    for (var t = lid; t < points; t += WG) {
        store(first, t);
    }
}
