// Batched copies for QR/SVD: `transpose` writes dst[b, i, c] = scale * src[b, c, i] for a
// dst of rows x cols read from a src of cols x src_cols (src_cols >= rows), keeping only
// i <= c when UPPER (R from the transposed factorization); `eye` writes identity rows.
override UPPER: bool = false;

struct Params { rows: u32, cols: u32, src_cols: u32, scale: f32, b0: u32 }

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> tile: array<f32, 272>;  // 16 x 17: the pad avoids bank conflicts

@compute @workgroup_size(16, 16)
fn transpose(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let b = params.b0 + wid.z;
    // Read a 16 x 16 block of src (its rows are dst's columns) with contiguous x ...
    let c_in = wid.x * 16u + l.y;
    let i_in = wid.y * 16u + l.x;
    var value = 0.0;
    if (c_in < params.cols && i_in < params.rows) {
        value = src[b * params.cols * params.src_cols + c_in * params.src_cols + i_in];
    }
    tile[l.y * 17u + l.x] = value;
    workgroupBarrier();
    // ... and write it transposed, again with contiguous x.
    let i = wid.y * 16u + l.y;
    let c = wid.x * 16u + l.x;
    if (i < params.rows && c < params.cols) {
        let keep = !UPPER || i <= c;
        dst[b * params.rows * params.cols + i * params.cols + c] =
            select(0.0, params.scale * tile[l.x * 17u + l.y], keep);
    }
}

@compute @workgroup_size(16, 16)
fn eye(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let b = params.b0 + wid.z;
    let i = wid.y * 16u + l.y;
    let c = wid.x * 16u + l.x;
    if (i < params.rows && c < params.cols) {
        dst[b * params.rows * params.cols + i * params.cols + c] = select(0.0, 1.0, i == c);
    }
}
