// What image/correlate and image/resample share: reading a source element, placing an output
// element in the source's layout, and writing one invocation's output. A part (`parts` of
// gpucore.Kernel.cached): the kernel declares src: array<Src>, out: array<Dst>, params with
// n, channels and hwc, the overrides IN_U8, OUT_U8 and WG, and value(j), output element j.
//
// Images are planes of (channels, height, width) stored HWC (params.hwc == 1) or CHW.
// uint8 images travel packed 4 per u32 word (Src/Dst = u32 with IN_U8/OUT_U8); WGSL has no
// 8-bit storage.

fn load(i: u32) -> f32 {
    if (IN_U8) {
        return f32(extractBits(bitcast<u32>(src[i >> 2u]), (i & 3u) * 8u, 8u));
    }
    return bitcast<f32>(src[i]);
}

// Output element j (of an h x w image) as its (y, x), and where the source image (h_in x w_in,
// the same channels) keeps element (c, y', x') of that plane: plane + y' * row + x' * col.
struct Place { y: u32, x: u32, plane: u32, row: u32, col: u32 }

fn place(j: u32, h: u32, w: u32, h_in: u32, w_in: u32) -> Place {
    if (params.hwc == 1u) {
        let c = j % params.channels;
        return Place(j / (params.channels * w), (j / params.channels) % w, c,
                     w_in * params.channels, params.channels);
    }
    let c = j / (w * h);
    return Place((j / w) % h, j % w, c * h_in * w_in, w_in, 1u);
}

// Invocation t's output: element t, or with OUT_U8 word t, four consecutive bytes (so no two
// invocations write one word), rounded half to even and clamped to 0..255.
fn put(t: u32) {
    if (OUT_U8) {
        if (t * 4u < params.n) {
            var word = 0u;
            for (var k = 0u; k < 4u && t * 4u + k < params.n; k++) {
                word |= u32(clamp(round(value(t * 4u + k)), 0.0, 255.0)) << (8u * k);
            }
            out[t] = bitcast<Dst>(word);
        }
    } else if (t < params.n) {
        out[t] = bitcast<Dst>(value(t));
    }
}
