// conv2d_cpu.wgsl's weight layout: w [c_out][cin_g][kh][kw] (groups of cout_g output
// channels reading cin_g input channels each) as f32 [c_in][kh * kw][cpad], cpad the group's
// cout_g rounded up to 8; the padding channels are zero. Grid (cpad / 8, c_in): an invocation
// copies one channel's taps of one input channel (no division by a runtime value: one per
// lane on llvmpipe).
alias T = f32;

struct Params {
    cpad: u32,
    taps: u32,  // kh * kw
    cin_g: u32, cout_g: u32,
}

@group(0) @binding(0) var<storage, read> w: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let ci = gid.y;
    let group = ci / params.cin_g;
    let inside = c < params.cout_g;
    let src = ((group * params.cout_g + min(c, params.cout_g - 1u)) * params.cin_g
                + ci - group * params.cin_g) * params.taps;
    let dst = ci * params.taps * params.cpad + c;
    for (var tap = 0u; tap < params.taps; tap++) {
        out[dst + tap * params.cpad] = select(0.0, f32(w[src + tap]), inside);
    }
}
