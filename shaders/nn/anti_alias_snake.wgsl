// BigVGAN's anti-aliased SnakeBeta of (rows = B x C, length) signals in one pass: each
// output sample j computes the R x upsampled samples its low-pass reads, the activation on
// each, and the strided low-pass (R = params.ratio, the output as long as the input).
// Upsampling: polyphase weight up[p, d] (every channel's) over x replicate-padded by `before`
// (sample m = R q + p of the upsampled signal is sum_d x[clamp(q + d - before)] up[p, d]);
// activation: v + sin(v e^alpha)^2 / (e^beta + 1e-9); downsampling: out[j] = sum_k down[k]
// u'[clamp(R j + k - left)], the upsampled, activated signal replicate-padded by `left`.
// Each upsampled sample is rounded to T where the unfused path stores it (its conv's output,
// the activation's); the sums are float32. One invocation per output sample.
alias T = f32;
override WG: u32 = 256u;

struct Params { n: u32, length: u32, channels: u32, ratio: u32, phase_taps: u32, taps: u32,
                before: i32, left: i32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> up: array<T>;
@group(0) @binding(2) var<storage, read> down: array<T>;
@group(0) @binding(3) var<storage, read> alpha: array<T>;
@group(0) @binding(4) var<storage, read> beta: array<T>;
@group(0) @binding(5) var<storage, read_write> out: array<T>;
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    let length = i32(params.length);
    let ratio = i32(params.ratio);
    let row = i / params.length;
    let j = i32(i % params.length);
    let c = row % params.channels;
    let base = row * params.length;
    let frequency = exp(f32(alpha[c]));
    let amplitude = exp(f32(beta[c])) + 1e-9;
    var acc = 0.0;
    for (var k = 0; k < i32(params.taps); k++) {
        let m = clamp(ratio * j + k - params.left, 0, ratio * length - 1);
        let q = m / ratio;
        let phase = u32(m % ratio) * params.phase_taps;
        var u = 0.0;
        for (var d = 0; d < i32(params.phase_taps); d++) {
            let at = u32(clamp(q + d - params.before, 0, length - 1));
            u = fma(f32(x[base + at]), f32(up[phase + u32(d)]), u);
        }
        let v = f32(T(u));
        let s = sin(v * frequency);
        acc = fma(f32(down[k]), f32(T(v + s * s / amplitude)), acc);
    }
    out[i] = T(acc);
}
