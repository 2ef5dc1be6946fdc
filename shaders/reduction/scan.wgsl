// Inclusive prefix sums of x, viewed as (outer, len, inner), along len: one workgroup per
// (column, block of WG * ITEMS rows). The block is staged in workgroup memory (coalesced
// loads when inner == 1); each lane scans ITEMS consecutive rows serially, a Hillis-Steele
// scan over the lane totals gives each lane its offset. Block totals go to `sums`
// (column-major: column * blocks + block); the host scans those and scan_add.wgsl adds
// them back when a column spans several blocks.
alias T = f32;
alias Acc = f32;  // f32 for float storage (f16 included), else T
override WG: u32 = 256u;
override ITEMS: u32 = 4u;

struct Params { columns: u32, len: u32, inner: u32, blocks: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<storage, read_write> sums: array<Acc>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> block: array<Acc, WG * ITEMS>;
var<workgroup> totals: array<Acc, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.y * nwg.x + wid.x;
    if (g >= params.columns * params.blocks) {
        return;
    }
    let column = g / params.blocks;
    let first = (g % params.blocks) * WG * ITEMS;
    let base = (column / params.inner) * params.len * params.inner + column % params.inner;
    for (var k = 0u; k < ITEMS; k++) {
        let l = first + k * WG + lid;
        var v = Acc(0);
        if (l < params.len) {
            v = Acc(x[base + l * params.inner]);
        }
        block[k * WG + lid] = v;
    }
    workgroupBarrier();
    var running = Acc(0);
    for (var k = 0u; k < ITEMS; k++) {
        running += block[lid * ITEMS + k];
        block[lid * ITEMS + k] = running;
    }
    totals[lid] = running;
    workgroupBarrier();
    for (var offset = 1u; offset < WG; offset <<= 1u) {
        var v = totals[lid];
        if (lid >= offset) {
            v += totals[lid - offset];
        }
        workgroupBarrier();
        totals[lid] = v;
        workgroupBarrier();
    }
    if (lid > 0u) {
        let before = totals[lid - 1u];
        for (var k = 0u; k < ITEMS; k++) {
            block[lid * ITEMS + k] += before;
        }
    }
    workgroupBarrier();
    for (var k = 0u; k < ITEMS; k++) {
        let l = first + k * WG + lid;
        if (l < params.len) {
            out[base + l * params.inner] = T(block[k * WG + lid]);
        }
    }
    if (lid == WG - 1u) {
        sums[g] = totals[lid];
    }
}
