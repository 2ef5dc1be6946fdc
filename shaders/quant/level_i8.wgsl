// A row's int8 quantization, shared by quant/quantize_rows_i8 and the producers that quantize
// the rows they write (quant/layer_norm_i8, quant/gelu_i8): the row's largest magnitude, the
// reciprocal step, each value's level (scaled, rounded to nearest even, clamped to +-127) and
// the little-endian words of levels. A part: the kernel declares WG, q: array<i32>, params
// with kw (words a row), and level_value(at, i), the value quantized for element i of a row
// (stored at `at`).
var<workgroup> peaks: array<f32, WG>;

// Largest |level_value| over the words first, first + step, ... of the k values at base: the
// words store_levels packs with the same first and step.
fn words_peak(base: u32, k: u32, first: u32, step: u32) -> f32 {
    var peak = 0.0;
    for (var i = first * 4u; i < k; i += step * 4u) {
        for (var j = i; j < min(i + 4u, k); j++) {
            peak = max(peak, abs(level_value(base + j, j)));
        }
    }
    return peak;
}

// Largest v over the `width` invocations of this invocation's row, `lane` its place in the row
// (width a power of two; every invocation of the workgroup calls it).
fn row_peak(v: f32, lid: u32, lane: u32, width: u32) -> f32 {
    peaks[lid] = v;
    workgroupBarrier();
    for (var half = width / 2u; half > 0u; half /= 2u) {
        if (lane < half) { peaks[lid] = max(peaks[lid], peaks[lid + half]); }
        workgroupBarrier();
    }
    return peaks[lid - lane];
}

fn row_inverse(largest: f32) -> f32 {
    return select(127.0 / largest, 0.0, largest == 0.0);
}

fn level_byte(v: f32, inverse: f32, j: u32) -> u32 {
    let level = clamp(round(v * inverse), -127.0, 127.0);
    return (bitcast<u32>(i32(level)) & 0xffu) << (8u * j);
}

// Words first, first + step, ... of row `row`'s levels (its k values at base) into q.
fn store_levels(row: u32, base: u32, k: u32, inverse: f32, first: u32, step: u32) {
    for (var w = first; w < params.kw; w += step) {
        var word = 0u;
        for (var j = 0u; j < 4u; j++) {
            let i = w * 4u + j;
            if (i < k) { word |= level_byte(level_value(base + i, i), inverse, j); }
        }
        q[row * params.kw + w] = bitcast<i32>(word);
    }
}
