// RMS norm over the channels of each pixel of x [N, C, S] in one pass (LTX-2's VAEs' pixel
// norms): y = x / sqrt(mean over C of x^2 + eps), then with MODULATE y * (1 + scale[c]) +
// shift[c], with SILU y / (1 + e^-y). One invocation per pixel (n, s): it reads its C values
// twice, neighbouring invocations reading neighbouring pixels (coalesced); the sum of squares
// in float32.
alias T = f32;
override WG: u32 = 256u;
override MODULATE: bool = false;
override SILU: bool = false;

struct Params { n: u32, channels: u32, size: u32, eps: f32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> shift: array<T>;
@group(0) @binding(2) var<storage, read> scale: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    let size = params.size;
    let base = i / size * params.channels * size + i % size;
    var q = 0.0;
    for (var c = 0u; c < params.channels; c++) {
        let v = f32(x[base + c * size]);
        q = fma(v, v, q);
    }
    let rms = sqrt(q / f32(params.channels) + params.eps);
    for (var c = 0u; c < params.channels; c++) {
        var y = f32(x[base + c * size]) / rms;
        if (MODULATE) {
            y = y * (1.0 + f32(scale[c])) + f32(shift[c]);
        }
        if (SILU) {
            y = y / (1.0 + exp(-y));
        }
        out[base + c * size] = T(y);
    }
}
