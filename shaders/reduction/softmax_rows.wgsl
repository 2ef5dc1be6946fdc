// softmax (or log_softmax) of contiguous rows: a workgroup takes WX rows with WY lanes
// each (consecutive invocations walk a row). Per row: the max, then sum(exp(x - max)),
// then the outputs, each a strided loop plus a tree over the row's lanes. Subtracting the
// max keeps exp in (0, 1]: no overflow for any input. T is the input's type, U the output's
// (attention's wide path reads f32 scores and writes f16 probabilities).
alias T = f32;
alias U = f32;
override WX: u32 = 1u;  // rows per workgroup
override WY: u32 = 256u;  // lanes per row, a power of two; WX * WY <= 256
override LOG: bool = false;

struct Params { rows: u32, len: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<U>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> lanes: array<f32, WX * WY>;

@compute @workgroup_size(WX * WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) index: u32) {
    let g = wid.y * nwg.x + wid.x;
    if (g * WX >= params.rows) {
        return;
    }
    let lane = index % WY;
    let home = index - lane;  // this row's first slot in `lanes`
    // Lanes of rows past the end still join the barriers; they recompute the last row.
    let row = min(g * WX + index / WY, params.rows - 1u);
    let base = row * params.len;
    var m = f32(x[base]);
    for (var l = lane; l < params.len; l += WY) {
        m = max(m, f32(x[base + l]));
    }
    lanes[index] = m;
    workgroupBarrier();
    for (var s = WY / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            lanes[index] = max(lanes[index], lanes[index + s]);
        }
        workgroupBarrier();
    }
    m = lanes[home];
    workgroupBarrier();  // every lane has read the max before the sums overwrite it
    var total = 0.0;
    for (var l = lane; l < params.len; l += WY) {
        total += exp(f32(x[base + l]) - m);
    }
    lanes[index] = total;
    workgroupBarrier();
    for (var s = WY / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            lanes[index] += lanes[index + s];
        }
        workgroupBarrier();
    }
    total = lanes[home];
    let log_total = log(total);
    if (g * WX + index / WY >= params.rows) {
        return;
    }
    for (var l = lane; l < params.len; l += WY) {
        let d = f32(x[base + l]) - m;
        if (LOG) {
            out[base + l] = U(d - log_total);
        } else {
            out[base + l] = U(exp(d) / total);
        }
    }
}
