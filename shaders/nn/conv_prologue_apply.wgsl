// A conv prologue (gpustd/nn/prologue.py) written out: out[i] = (x[i] - t.x) * t.y + t.z,
// then SiLU when SILU, with t = table[i / hw] (one entry per image and channel). What a conv
// reads when the prologue is not fused into its gather (prologue.FUSED off): GroupNorm's
// apply pass from the same table.
alias T = f32;
override WG: u32 = 256u;
override SILU: bool = false;

struct Params { n: u32, hw: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> table: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        let t = table[i / params.hw];
        var y = fma(f32(x[i]) - t.x, t.y, t.z);
        if (SILU) {
            y = y / (1.0 + exp(-y));
        }
        out[i] = T(y);
    }
}
