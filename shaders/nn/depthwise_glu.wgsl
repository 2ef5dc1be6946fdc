// A depthwise 3x3 convolution (zero padding 1, stride 1) of NCHW planes of 2C channels and a
// gated linear unit over it: out[n, c] = a * silu(g), a = conv(x)[n, c], g = conv(x)[n, c + C]
// (each with its channel's bias). SILU_IN: silu applied to x as it is read (the 1x1 conv's
// activation before it; silu(0) = 0, so the zero padding is the same either way). One
// invocation per output element, both convolutions in float32.
alias T = f32;
override WG: u32 = 256u;
override SILU_IN: bool = true;

struct Params { n: u32, c: u32, h: u32, w: u32 }  // n = output elements; c = output channels

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> weight: array<T>;  // [2C, 1, 3, 3]
@group(0) @binding(2) var<storage, read> bias: array<T>;  // [2C]
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// bias[ch] + the 3x3 window of plane `plane` (of x) at (row, col) times channel ch's weights
fn window(plane: u32, ch: u32, row: u32, col: u32) -> f32 {
    let h = i32(params.h);
    let w = i32(params.w);
    var acc = f32(bias[ch]);
    for (var dy = 0; dy < 3; dy++) {
        let y = i32(row) + dy - 1;
        if (y < 0 || y >= h) {
            continue;
        }
        for (var dx = 0; dx < 3; dx++) {
            let xx = i32(col) + dx - 1;
            if (xx < 0 || xx >= w) {
                continue;
            }
            var v = f32(x[(plane * params.h + u32(y)) * params.w + u32(xx)]);
            if (SILU_IN) {
                v = silu(v);
            }
            acc += f32(weight[ch * 9u + u32(dy * 3 + dx)]) * v;
        }
    }
    return acc;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    let hw = params.h * params.w;
    let plane = i / hw;  // n * C + c
    let r = i % hw;
    let c = plane % params.c;
    let image = plane / params.c;
    let row = r / params.w;
    let col = r % params.w;
    let a = window(image * 2u * params.c + c, c, row, col);
    let g = window(image * 2u * params.c + params.c + c, params.c + c, row, col);
    out[i] = T(a * silu(g));
}
