// BLAS-1 reductions in two passes: `partial` leaves one (value, scale) pair per workgroup,
// `finish` combines them in a single workgroup. MODE 0: dot = sum x*y; 1: asum = sum |x|;
// 2: nrm2 = sqrt(sum x^2), kept as scale * sqrt(ssq) as in LAPACK's xLASSQ so squares of
// large elements cannot overflow f32. Accumulation is f32 for f16 inputs too.
alias T = f32;
override WG: u32 = 256u;    // a power of two (tree reduction)
override MODE: u32 = 0u;

struct Params { n: u32, groups: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> y: array<T>;
@group(0) @binding(2) var<storage, read_write> partials: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> shared_value: array<f32, WG>;
var<workgroup> shared_scale: array<f32, WG>;

// (value, scale) pairs: for MODE 2, value is the sum of squares of elements / scale.
fn combine(p: vec2<f32>, q: vec2<f32>) -> vec2<f32> {
    if (MODE != 2u) { return vec2<f32>(p.x + q.x, 0.0); }
    let hi = select(q, p, p.y >= q.y);
    let lo = select(p, q, p.y >= q.y);
    if (hi.y == 0.0) { return vec2<f32>(0.0, 0.0); }
    let r = lo.y / hi.y;
    return vec2<f32>(hi.x + lo.x * r * r, hi.y);
}

fn element(i: u32) -> vec2<f32> {
    let v = f32(x[i]);
    if (MODE == 0u) { return vec2<f32>(v * f32(y[i]), 0.0); }
    if (MODE == 1u) { return vec2<f32>(abs(v), 0.0); }
    return vec2<f32>(select(0.0, 1.0, v != 0.0), abs(v));
}

fn tree(lid: u32, mine: vec2<f32>) -> vec2<f32> {
    shared_value[lid] = mine.x;
    shared_scale[lid] = mine.y;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let r = combine(vec2<f32>(shared_value[lid], shared_scale[lid]),
                            vec2<f32>(shared_value[lid + s], shared_scale[lid + s]));
            shared_value[lid] = r.x;
            shared_scale[lid] = r.y;
        }
        workgroupBarrier();
    }
    return vec2<f32>(shared_value[0], shared_scale[0]);
}

@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(0.0, 0.0);
    for (var i = wid.x * WG + lid; i < params.n; i += params.groups * WG) {
        acc = combine(acc, element(i));
    }
    let total = tree(lid, acc);
    if (lid == 0u) { partials[wid.x] = total; }
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < params.groups; i += WG) {
        acc = combine(acc, partials[i]);
    }
    let total = tree(lid, acc);
    if (lid == 0u) {
        out[0] = T(select(total.x, total.y * sqrt(total.x), MODE == 2u));
    }
}
