// Where an invocation of one reduction pass works, shared by reduction/reduce (which describes
// the layout) and reduction/argreduce. A part (`parts` of gpucore.Kernel.cached): the kernel
// declares Acc, the overrides WX, WY and LANES_ON_X, and params with inner, s_outer, s_inner,
// chunks, tiles and items.
struct Place {
    lid: vec2<u32>,  // (column, lane) in the workgroup
    chunk: u32,
    col: u32,        // the column this invocation reduces
    o: u32,
    i: u32,          // col, or inner - 1 past the last column (its lanes still join the
                     // barriers: they read a real column)
    base: u32,       // element (o, 0, i)
    start: u32,      // the first row it folds, then every WY-th: items of them
    slot: u32,       // its cell in the workgroup's arrays
    dst: u32,        // column col's result of this chunk in out (outer, chunks, inner)
}

// Invocation `index` of workgroup g (< outer * tiles * chunks).
fn place(g: u32, index: u32) -> Place {
    var p: Place;
    p.lid = select(vec2<u32>(index % WX, index / WX), vec2<u32>(index / WY, index % WY),
                   LANES_ON_X);
    p.chunk = g % params.chunks;
    let tile = g / params.chunks;
    p.col = (tile % params.tiles) * WX + p.lid.x;
    p.o = tile / params.tiles;
    p.i = min(p.col, params.inner - 1u);
    p.base = p.o * params.s_outer + p.i * params.s_inner;
    p.start = p.chunk * params.items * WY + p.lid.y;
    p.slot = p.lid.y * WX + p.lid.x;
    p.dst = (p.o * params.chunks + p.chunk) * params.inner + p.col;
    return p;
}

// NaN tested on the bits (compilers may fold v != v to false); integers are never NaN.
fn is_nan(v: Acc) -> bool {
    return (bitcast<u32>(f32(v)) & 0x7fffffffu) > 0x7f800000u;
}
