//! parts: linalg/register_tile
// conv2d (NCHW) for CPU adapters: a direct convolution without workgroup memory or barriers.
// llvmpipe runs eight invocations at a time as the lanes of one vector, so an invocation's
// every load is a gather (~1.4 ns a lane, uniform address or not) and an FMA costs a tenth of
// that (bench/NOTES.md, "CI's time on lavapipe"). conv2d.wgsl's tiles are built for a GPU:
// 64 channels at least, a patch gather and a workgroup-memory round trip per value. Here each
// invocation owns 8 output channels x 8 neighbouring pixels of one output row, loads each
// input row segment once for up to three taps of the kernel row (10 values serve 192
// products at unit stride), and reads the weights as vec4s of 4 channels from the layout
// conv2d_cpu_weights.wgsl writes: [c_in][kh][kw][cpad] (channels of a group padded to 8).
// Grid: (x, groups * c_blocks, z) with x * z * 8 >= n * ho * row_blocks; a workgroup is 8
// invocations, one vector, along the pixel blocks. The epilogue and the prologue mean what they mean in
// conv2d.wgsl: ADD 1 a residual of the output's shape, 2 one value per (image, channel);
// PROLOGUE 1 y = (x - t.x) * t.y + t.z per input channel, 2 the same then SiLU, the zero
// padding left zero; UP_SHIFT 1 reads x upsampled 2x (nearest); x_offset where the first
// image read starts in x.
alias T = f32;  // element type of x, bias, addend and out
override HAS_BIAS: bool = true;
override ADD: u32 = 0u;
override PROLOGUE: u32 = 0u;
override UP_SHIFT: u32 = 0u;
override STEP: u32 = 3u;  // taps an iteration: 3 (kw % 3 == 0, stride 1 or 2, dilation 1) or 1

struct Params {
    c_in: u32, h: u32, w: u32,  // input channels (all groups) and size (upsampled, if read so)
    c_out: u32, ho: u32, wo: u32,
    cin_g: u32, cout_g: u32,  // channels per group
    kh: u32, kw: u32,
    cpad4: u32,  // vec4s of one weight row (cout_g rounded up to 8, over 4)
    c_blocks: u32,  // blocks of 8 output channels a group
    row_blocks: u32,  // blocks of 8 pixels an output row
    rows: u32,  // n * ho
    stride_h: u32, stride_w: u32,
    pad_h: u32, pad_w: u32,
    dil_h: u32, dil_w: u32,
    x_offset: u32,
    span: u32,  // output pixels an invocation: 8, or 4 with STEP 3 at stride 2
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read> addend: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<storage, read> norm: array<vec4<f32>>;  // [N * C_in] with PROLOGUE
@group(0) @binding(6) var<uniform> params: Params;

// Where an invocation reads one value of a row segment: its column's offset in a row of x,
// or a mask for a column in the padding.
struct Column {
    at: u32,
    inside: bool,
}

fn column(iw: i32) -> Column {
    return Column(min(u32(iw), params.w - 1u) >> UP_SHIFT, u32(iw) < params.w);
}

// x at column `c` of the row at `at` (`row_ok`: the row lies inside x), the prologue applied;
// zero in the padding.
fn value(at: u32, row_ok: bool, c: Column, t: vec4<f32>) -> f32 {
    let v = f32(x[at + c.at]);
    var y = v;
    if (PROLOGUE != 0u) {
        y = fma(v - t.x, t.y, t.z);
        if (PROLOGUE == 2u) {
            y = y / (1.0 + exp(-y));
        }
    }
    return select(0.0, y, row_ok && c.inside);
}

// The prologue's table entry at `at` (zero without a prologue).
fn entry(at: u32) -> vec4<f32> {
    if (PROLOGUE == 0u) {
        return vec4<f32>(0.0);
    }
    return norm[at];
}

// Where input row ih starts in a channel of x (clamped into it; the caller masks a row
// outside).
fn row_offset(ih: i32, w_in: u32) -> u32 {
    return (min(u32(ih), params.h - 1u) >> UP_SHIFT) * w_in;
}

// Output channel `co` at pixels ow0.. of output row `row` (of all images' rows): span of them,
// from every stride_w-th of the 8 sums with STEP 3 (the 8 columns then lie at unit stride).
fn store8(m: u32, co: u32, row: u32, ow0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (m >= params.cout_g) {
        return;
    }
    var b = 0.0;
    if (HAS_BIAS) {
        b = f32(bias[co]);
    }
    let img = row / params.ho;
    let o = ((img * params.c_out + co) * params.ho + row % params.ho) * params.wo + ow0;
    let every = select(1u, params.stride_w, STEP == 3u);
    for (var j = 0u; j < params.span; j++) {
        if (ow0 + j < params.wo) {
            let i = j * every;
            var e = 0.0;
            if (ADD == 1u) {
                e = f32(addend[o + j]);
            } else if (ADD == 2u) {
                e = f32(addend[img * params.c_out + co]);
            }
            out[o + j] = T(select(hi, lo, i < 4u)[i % 4u] + b + e);
        }
    }
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) grid: vec3<u32>) {
    let block = (wid.z * grid.x + wid.x) * 8u + lid;
    let row = block / params.row_blocks;  // image * ho + output row
    if (row >= params.rows) {
        return;
    }
    let ow0 = (block % params.row_blocks) * params.span;
    let img = row / params.ho;
    let group = wid.y / params.c_blocks;
    let m0 = (wid.y % params.c_blocks) * 8u;  // first output channel in the group
    let ih0 = i32((row % params.ho) * params.stride_h) - i32(params.pad_h);
    let iw0 = i32(ow0 * params.stride_w) - i32(params.pad_w);
    let w_in = params.w >> UP_SHIFT;
    let hw_in = (params.h >> UP_SHIFT) * w_in;
    let x_img = params.x_offset + (img * params.c_in + group * params.cin_g) * hw_in;
    let norm_img = img * params.c_in + group * params.cin_g;
    let w_group = group * params.cin_g * params.kh * params.kw;
    let w_tap = params.kw * params.cpad4;  // the next kernel row's weights (STEP 3)
    if (STEP == 3u) {
        // Three taps of a kernel row at a time, their columns found once for all input
        // channels: a row segment's 10 values serve all three (pixels 0-3 and 4-7 of tap 0
        // in b0 and b1, the others shifted by one and two). With a kernel row of three, the
        // sums are conv2d.wgsl's, in its order (ci, ky, kx).
        for (var kx = 0u; kx < params.kw; kx += 3u) {
            let i0 = iw0 + i32(kx);
            let q0 = column(i0); let q1 = column(i0 + 1); let q2 = column(i0 + 2);
            let q3 = column(i0 + 3); let q4 = column(i0 + 4); let q5 = column(i0 + 5);
            let q6 = column(i0 + 6); let q7 = column(i0 + 7); let q8 = column(i0 + 8);
            let q9 = column(i0 + 9);
            var w_at = (w_group + kx) * params.cpad4 + m0 / 4u;
            var x_at = x_img;
            for (var ci = 0u; ci < params.cin_g; ci++) {
                let t = entry(norm_img + ci);
                for (var ky = 0u; ky < params.kh; ky++) {
                    let ih = ih0 + i32(ky * params.dil_h);
                    let r = u32(ih) < params.h;
                    let at = x_at + row_offset(ih, w_in);
                    let b0 = vec4<f32>(value(at, r, q0, t), value(at, r, q1, t),
                                       value(at, r, q2, t), value(at, r, q3, t));
                    let b1 = vec4<f32>(value(at, r, q4, t), value(at, r, q5, t),
                                       value(at, r, q6, t), value(at, r, q7, t));
                    let b2 = vec2<f32>(value(at, r, q8, t), value(at, r, q9, t));
                    outer(wt[w_at], wt[w_at + 1u], b0, b1);
                    let v = w_at + params.cpad4;
                    outer(wt[v], wt[v + 1u], vec4<f32>(b0.yzw, b1.x), vec4<f32>(b1.yzw, b2.x));
                    let u = v + params.cpad4;
                    outer(wt[u], wt[u + 1u], vec4<f32>(b0.zw, b1.xy), vec4<f32>(b1.zw, b2));
                    w_at += w_tap;
                }
                x_at += hw_in;
            }
        }
    } else {
        // A tap at a time in conv2d.wgsl's order (ci, ky, kx), its 8 columns found each time
        // (any stride and dilation).
        let sw = i32(params.stride_w);
        var w_at = w_group * params.cpad4 + m0 / 4u;
        var x_at = x_img;
        for (var ci = 0u; ci < params.cin_g; ci++) {
            let t = entry(norm_img + ci);
            for (var ky = 0u; ky < params.kh; ky++) {
                let ih = ih0 + i32(ky * params.dil_h);
                let r = u32(ih) < params.h;
                let at = x_at + row_offset(ih, w_in);
                for (var kx = 0u; kx < params.kw; kx++) {
                    let i0 = iw0 + i32(kx * params.dil_w);
                    let b0 = vec4<f32>(value(at, r, column(i0), t),
                                       value(at, r, column(i0 + sw), t),
                                       value(at, r, column(i0 + 2 * sw), t),
                                       value(at, r, column(i0 + 3 * sw), t));
                    let b1 = vec4<f32>(value(at, r, column(i0 + 4 * sw), t),
                                       value(at, r, column(i0 + 5 * sw), t),
                                       value(at, r, column(i0 + 6 * sw), t),
                                       value(at, r, column(i0 + 7 * sw), t));
                    outer(wt[w_at], wt[w_at + 1u], b0, b1);
                    w_at += params.cpad4;
                }
            }
            x_at += hw_in;
        }
    }
    // The stores as one loop over the 8 channels, each channel's sums shifted into c00 and
    // c01 in turn (one copy of the store's code, no private array indexed at run time:
    // llvmpipe compiles a kernel at its first dispatch).
    let co0 = group * params.cout_g + m0;
    for (var i = 0u; i < 8u; i++) {
        store8(m0 + i, co0 + i, row, ow0, c00, c01);
        c00 = c10; c01 = c11; c10 = c20; c11 = c21; c20 = c30; c21 = c31; c30 = c40; c31 = c41;
        c40 = c50; c41 = c51; c50 = c60; c51 = c61; c60 = c70; c61 = c71;
    }
}
