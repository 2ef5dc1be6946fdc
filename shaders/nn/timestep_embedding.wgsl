// Sinusoidal timestep embedding as diffusers' get_timestep_embedding: with freq[j] from
// the host (computed exactly like diffusers, in float32) and arg = scale * (t[b] * freq[j]),
// out[b] = [sin(arg), cos(arg)] (or [cos, sin] when FLIP), zero-padded to an odd dim.
// Arguments reach ~1000 rad, where GPU sin/cos builtins lose digits: they are reduced
// to [-pi, pi] first with a three-part 2*pi (Cody & Waite), exact for k*C1.
alias T = f32;
override WG: u32 = 256u;
override FLIP: bool = false;

struct Params { n: u32, dim: u32, half: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> t: array<f32>;
@group(0) @binding(1) var<storage, read> freq: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> params: Params;

const C1: f32 = 6.28125;  // 2*pi = C1 + C2 + C3, C1 with few mantissa bits
const C2: f32 = 0.0019353071693331003;  // f32(2*pi - C1)
const C3: f32 = 1.0253376e-11;  // 2*pi - C1 - C2

fn reduce(a: f32) -> f32 {
    let k = round(a * 0.15915494309189535);
    return ((a - k * C1) - k * C2) - k * C3;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    let b = i / params.dim;
    let j = i % params.dim;
    var v = 0.0;
    if (j < 2u * params.half) {
        let second = j >= params.half;
        let col = select(j, j - params.half, second);
        let r = reduce(params.scale * (t[b] * freq[col]));
        v = select(sin(r), cos(r), second != FLIP);
    }
    out[i] = T(v);
}
