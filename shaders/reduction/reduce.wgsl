//! parts: reduction/layout
// One pass of a tree reduction of x, viewed as (outer, len, inner), along len. Element
// (o, l, i) sits at o * s_outer + l * s_len + i * s_inner. A workgroup owns WX columns
// (WX consecutive i) of one o and one chunk of items * WY rows; each of its WY lanes folds
// `items` rows serially, then the lanes meet in a tree. Consecutive invocations take
// consecutive columns, or with LANES_ON_X consecutive lanes: the host picks whichever
// walks memory contiguously (contiguous rows are passed as columns with s_len = 1).
// out is (outer, chunks, inner): with chunks > 1 the host runs another pass over it.
// PRE applies to the elements of the first pass only, POST to the last pass.
alias In = f32;
alias Acc = f32;  // f32 for float input (f16 included), else In
alias Out = f32;
override WX: u32 = 1u;
override WY: u32 = 256u;  // a power of two; WX * WY <= 256
override LANES_ON_X: bool = false;
override OP: u32 = 0u;  // 0 sum, 1 max, 2 min
override PRE: u32 = 0u;  // 0 x, 1 (x - c)^2, 2 exp(x - c)
override POST: u32 = 0u;  // 0 acc, 1 acc * scale, 2 log(acc) + c, 3 sqrt(acc * scale)
override USES_CENTER: bool = false;  // c = center[o * inner + i] is read (PRE or POST 2)

struct Params {
    outer: u32, len: u32, inner: u32, s_outer: u32, s_len: u32, s_inner: u32,
    chunks: u32, tiles: u32, items: u32, scale: f32,
}

@group(0) @binding(0) var<storage, read> x: array<In>;
@group(0) @binding(1) var<storage, read> center: array<Acc>;
@group(0) @binding(2) var<storage, read_write> out: array<Out>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> partial: array<Acc, WX * WY>;

fn combine(a: Acc, b: Acc) -> Acc {
    if (OP != 0u && is_nan(b)) {
        return b;  // max/min propagate NaN, as numpy's do (GPU max/min drop it)
    }
    switch OP {
        case 1u: { return select(max(a, b), a, is_nan(a)); }
        case 2u: { return select(min(a, b), a, is_nan(a)); }
        default: { return a + b; }
    }
}

fn pre(v: In, c: Acc) -> Acc {
    switch PRE {
        case 1u: {
            let d = Acc(v) - c;
            return d * d;
        }
        case 2u: { return Acc(exp(f32(Acc(v) - c))); }
        default: { return Acc(v); }
    }
}

fn post(a: Acc, c: Acc) -> Out {
    switch POST {
        case 1u: { return Out(f32(a) * params.scale); }
        case 2u: { return Out(log(f32(a)) + f32(c)); }
        case 3u: { return Out(sqrt(f32(a) * params.scale)); }
        default: { return Out(a); }
    }
}

@compute @workgroup_size(WX * WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) index: u32) {
    let g = wid.y * nwg.x + wid.x;
    if (g >= params.outer * params.tiles * params.chunks) {
        return;
    }
    let p = place(g, index);
    var c = Acc(0);
    if (USES_CENTER) {
        c = center[p.o * params.inner + p.i];
    }
    // max/min start from the row's first element: repeating an element changes neither.
    var acc = Acc(0);
    if (OP != 0u) {
        acc = pre(x[p.base], c);
    }
    for (var k = 0u; k < params.items; k++) {
        let l = p.start + k * WY;
        if (l < params.len) {
            acc = combine(acc, pre(x[p.base + l * params.s_len], c));
        }
    }
    partial[p.slot] = acc;
    workgroupBarrier();
    for (var s = WY / 2u; s > 0u; s >>= 1u) {
        if (p.lid.y < s) {
            partial[p.slot] = combine(partial[p.slot], partial[p.slot + s * WX]);
        }
        workgroupBarrier();
    }
    if (p.lid.y == 0u && p.col < params.inner) {
        out[p.dst] = post(partial[p.lid.x], c);
    }
}
