// BLAS gemv: y = alpha * op(A) @ x + beta * y, A stored row-major rows x cols.
//
// TRANS = false: one workgroup per output row; the row is read contiguously (coalesced) and
// tree-reduced in workgroup memory. TRANS = true: output j is column j of A; a workgroup
// covers COLS adjacent columns (contiguous reads along a row) with WG / COLS row slices whose
// partial sums are added at the end. beta = 0 never reads y (BLAS: y may hold garbage).
alias T = f32;
override WG: u32 = 256u;    // a power of two
override COLS: u32 = 64u;   // TRANS only: columns per workgroup, divides WG
override TRANS: bool = false;

struct Params { rows: u32, cols: u32, alpha: f32, beta: f32 }

@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> sums: array<f32, WG>;

fn finish(i: u32, total: f32) {
    var value = params.alpha * total;
    if (params.beta != 0.0) { value += params.beta * f32(y[i]); }
    y[i] = T(value);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let group = wid.y * nwg.x + wid.x;
    if (!TRANS) {
        let row = group;
        var acc = 0.0;
        if (row < params.rows) {
            for (var j = lid; j < params.cols; j += WG) {
                acc = fma(f32(a[row * params.cols + j]), f32(x[j]), acc);
            }
        }
        sums[lid] = acc;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (lid < s) { sums[lid] += sums[lid + s]; }
            workgroupBarrier();
        }
        if (lid == 0u && row < params.rows) { finish(row, sums[0]); }
    } else {
        let col = group * COLS + lid % COLS;
        let slice = lid / COLS;
        var acc = 0.0;
        if (col < params.cols) {
            for (var i = slice; i < params.rows; i += WG / COLS) {
                acc = fma(f32(a[i * params.cols + col]), f32(x[i]), acc);
            }
        }
        sums[lid] = acc;
        workgroupBarrier();
        for (var s = WG / COLS / 2u; s > 0u; s >>= 1u) {
            if (slice < s) { sums[lid] += sums[lid + s * COLS]; }
            workgroupBarrier();
        }
        if (slice == 0u && col < params.cols) { finish(col, sums[lid]); }
    }
}
