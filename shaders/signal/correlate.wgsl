// Direct 1-D correlation: out[i'] = sum_j a[i + offset + j] * w[j'] for i < count, where a
// reads 0 outside [0, n), j' = m - 1 - j when flip_w (a convolution) else j, and i' = count -
// 1 - i when flip_out (numpy.correlate with the longer signal second). A workgroup makes
// WG * PER outputs; each chunk of up to WG taps is staged in workgroup memory with the
// WG * PER + WG samples it touches, so every input is read from memory once per chunk.
override WG: u32 = 256u;
const PER: u32 = 4u;  // outputs per invocation, WG apart so workgroup reads are consecutive

struct Params {
    n: u32,
    m: u32,
    count: u32,
    offset: i32,  // a index of output 0's first tap
    flip_w: u32,
    flip_out: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> samples: array<f32, WG * (PER + 1u)>;
var<workgroup> taps: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let first = (wid.y * nwg.x + wid.x) * WG * PER;
    var acc: array<f32, PER>;
    for (var j0 = 0u; j0 < params.m; j0 += WG) {
        let j = j0 + lid;
        var tap = 0.0;
        if (j < params.m) {
            tap = w[select(j, params.m - 1u - j, params.flip_w != 0u)];
        }
        taps[lid] = tap;
        let base = i32(first + j0) + params.offset;
        for (var q = 0u; q < PER + 1u; q++) {
            let k = base + i32(lid + q * WG);
            var v = 0.0;
            if (k >= 0 && k < i32(params.n)) {
                v = a[k];
            }
            samples[lid + q * WG] = v;
        }
        workgroupBarrier();
        let chunk = min(WG, params.m - j0);
        for (var jj = 0u; jj < chunk; jj++) {
            let t = taps[jj];
            for (var o = 0u; o < PER; o++) {
                acc[o] = fma(samples[lid + o * WG + jj], t, acc[o]);
            }
        }
        workgroupBarrier();
    }
    for (var o = 0u; o < PER; o++) {
        let i = first + lid + o * WG;
        if (i < params.count) {
            out[select(i, params.count - 1u - i, params.flip_out != 0u)] = acc[o];
        }
    }
}
