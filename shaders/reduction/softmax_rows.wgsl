// softmax (or log_softmax) of each contiguous row, one workgroup per row: the row max,
// then sum(exp(x - max)), then the outputs, each a strided loop over the row plus a tree
// over the lanes. Subtracting the max keeps exp in (0, 1]: no overflow for any input.
alias T = f32;
override WG: u32 = 256u;  // a power of two
override LOG: bool = false;

struct Params { rows: u32, len: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> lanes: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.len;
    var m = f32(x[base]);
    for (var l = lid; l < params.len; l += WG) {
        m = max(m, f32(x[base + l]));
    }
    lanes[lid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            lanes[lid] = max(lanes[lid], lanes[lid + s]);
        }
        workgroupBarrier();
    }
    m = lanes[0];
    workgroupBarrier();  // every lane has read the max before the sums overwrite it
    var total = 0.0;
    for (var l = lid; l < params.len; l += WG) {
        total += exp(f32(x[base + l]) - m);
    }
    lanes[lid] = total;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            lanes[lid] += lanes[lid + s];
        }
        workgroupBarrier();
    }
    total = lanes[0];
    let log_total = log(total);
    for (var l = lid; l < params.len; l += WG) {
        let d = f32(x[base + l]) - m;
        if (LOG) {
            out[base + l] = T(d - log_total);
        } else {
            out[base + l] = T(exp(d) / total);
        }
    }
}
