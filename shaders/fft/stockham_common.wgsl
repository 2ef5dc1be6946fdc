// What both Stockham kernels (stockham.wgsl for GPUs, stockham_cpu.wgsl for CPU adapters)
// declare: the pass's parameters and bindings, the workgroup's points, complex products,
// the twiddles, the columns' places and a point's read. A part (gpucore.Kernel.cached's
// `parts`): the kernel that takes it declares TILE.

struct Params {
    n: u32,        // transform length N (a power of two)
    log_l: u32,    // log2 L: points of each local FFT
    log_b: u32,    // log2 B = log2 (TILE / L): columns per workgroup
    log_m: u32,    // log2 (N / L)
    log_ns: u32,   // log2 Ns: product of the radices of the earlier passes (0 for the first)
    stride: u32,   // distance between consecutive points of one transform
    columns: u32,  // batch * (N / L) * stride
    log_read: u32,   // log2 of the run of columns that are contiguous when loading (<= log_b)
    log_write: u32,  // the same when storing
    sign: f32,     // -1 forward, +1 inverse
    scale: f32,    // applied on store (the norm= factor on the last pass)
}

@group(0) @binding(0) var<storage, read> x: array<vec2<f32>>;
@group(0) @binding(1) var<storage, read> tw: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec2<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> s: array<vec2<f32>, TILE>;

fn cmul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

// exp(sign * 2 pi i j / 2^k) for j < 2^k.
fn root(j: u32, k: u32) -> vec2<f32> {
    var w: vec2<f32>;
    if (k <= 6u) {
        w = tw[j << (6u - k)];
    } else {
        let t = tw[j >> (k - 6u)];
        let a = ldexp(f32(j & ((1u << (k - 6u)) - 1u)), -i32(k)) * 6.28318530717958648;
        let a2 = a * a;
        let c = 1.0 + a2 * (-0.5 + a2 * (0.0416666666666666667 - a2 * 0.00138888888888888889));
        let sn = a * (1.0 + a2 * (-0.166666666666666667 + a2 * 0.00833333333333333333));
        w = cmul(t, vec2<f32>(c, sn));
    }
    return vec2<f32>(w.x, params.sign * w.y);
}

// z * (sign * i): W_4, -i forward and +i inverse.
fn rot(z: vec2<f32>) -> vec2<f32> {
    return params.sign * vec2<f32>(-z.y, z.x);
}

// Column col of this pass as (batch, j, c); the division only runs for strided axes.
fn column(col: u32) -> vec3<u32> {
    var rest = col;
    var c = 0u;
    if (params.stride != 1u) {
        rest = col / params.stride;
        c = col - rest * params.stride;
    }
    return vec3<u32>(rest >> params.log_m, rest & ((1u << params.log_m) - 1u), c);
}

// Butterfly u of a stage whose butterflies start at points i < 2^log_q of each column, as
// (column, i): runs of 2^run consecutive u take consecutive columns, which lie consecutively
// in memory when the pass is strided, so the loads and stores of a warp coalesce either way.
fn assign(u: u32, run: u32, log_q: u32) -> vec2<u32> {
    let c = ((u >> (run + log_q)) << run) | (u & ((1u << run) - 1u));
    return vec2<u32>(c, (u >> run) & ((1u << log_q) - 1u));
}

// Point p.y of column first + p.x (p: assign's) from memory, twiddled for this pass; 0 past
// the last column.
fn read_point(first: u32, p: vec2<u32>) -> vec2<f32> {
    var v = vec2<f32>(0.0);
    if (first + p.x < params.columns) {
        let col = column(first + p.x);
        v = x[((col.x * params.n + col.y + (p.y << params.log_m)) * params.stride) + col.z];
        if (params.log_ns > 0u) {
            let j = col.y & ((1u << params.log_ns) - 1u);
            v = cmul(v, root(j * p.y, params.log_ns + params.log_l));
        }
    }
    return v;
}
