//! parts: nn/gelu
// Activations of the SD networks, one invocation per output element, f32 math.
//   main:  out[i] = f(x[i]), f chosen by OP (0 silu, 1 gelu erf, 2 gelu tanh, 3 quick_gelu)
//   geglu: x is [rows, 2d]; out[r, j] = x[r, j] * gelu(x[r, d + j]) (diffusers GEGLU: the
//          projection's first half is the value, the second the gate), GELU by OP (1 or 2).
// erf and gelu come from the part nn/gelu (shared with quant/gelu_i8).
alias T = f32;
override WG: u32 = 256u;
override OP: u32 = 0u;

struct Params { n: u32, d: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));  // exp overflow gives 1/inf = 0, the right limit
}

fn activate(v: f32) -> f32 {
    switch OP {
        case 0u: { return v * sigmoid(v); }
        case 3u: { return v * sigmoid(1.702 * v); }
        default: { return gelu(v); }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        out[i] = T(activate(f32(x[i])));
    }
}

@compute @workgroup_size(WG)
fn geglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        let row = i / params.d;
        let base = row * 2u * params.d + i % params.d;
        out[i] = T(f32(x[base]) * gelu(f32(x[base + params.d])));
    }
}
