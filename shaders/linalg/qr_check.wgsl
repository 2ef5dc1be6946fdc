// The largest |x| of a whole buffer as its f32 bit pattern (atomicMax): for non-negative
// floats the bit patterns order like the values, and inf (0x7f800000) and NaN (above it)
// sort past every finite value, so one pass both finds the scale and detects non-finite input.
struct Params { n: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> best: atomic<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) { atomicStore(&best, 0u); }  // workgroup memory may start uninitialized
    workgroupBarrier();
    let stride = nwg.x * nwg.y * 256u;
    var found = 0u;
    for (var i = (wid.y * nwg.x + wid.x) * 256u + lid; i < params.n; i += stride) {
        found = max(found, bitcast<u32>(x[i]) & 0x7fffffffu);
    }
    atomicMax(&best, found);
    workgroupBarrier();
    if (lid == 0u) { atomicMax(&out[0], atomicLoad(&best)); }
}
