// Constant padding (or cropping, for negative amounts) of the last two dimensions:
// out[p, oh, ow] = x[p, oh - top, ow - left] inside x, else `value`; with REFLECT the outside
// mirrors x about its edge rows/columns (torch's "reflect": amounts below the size), with
// CIRCULAR it wraps around to the opposite edge (torch's "circular": amounts up to the size),
// with REPLICATE it repeats the nearest edge row/column (torch's "replicate": any amount).
// One invocation per output element (p runs over all leading dimensions).
alias T = f32;
override WG: u32 = 256u;
override REFLECT: bool = false;
override CIRCULAR: bool = false;
override REPLICATE: bool = false;

struct Params { n: u32, h: u32, w: u32, ho: u32, wo: u32, top: i32, left: i32, value: f32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        let plane = i / (params.ho * params.wo);
        let r = i % (params.ho * params.wo);
        var ih = i32(r / params.wo) - params.top;
        var iw = i32(r % params.wo) - params.left;
        if (REFLECT) {
            ih = select(ih, -ih, ih < 0);
            ih = select(ih, 2 * (i32(params.h) - 1) - ih, ih >= i32(params.h));
            iw = select(iw, -iw, iw < 0);
            iw = select(iw, 2 * (i32(params.w) - 1) - iw, iw >= i32(params.w));
        }
        if (CIRCULAR) {
            ih = (ih + i32(params.h)) % i32(params.h);
            iw = (iw + i32(params.w)) % i32(params.w);
        }
        if (REPLICATE) {
            ih = clamp(ih, 0, i32(params.h) - 1);
            iw = clamp(iw, 0, i32(params.w) - 1);
        }
        var v = T(params.value);
        if (ih >= 0 && ih < i32(params.h) && iw >= 0 && iw < i32(params.w)) {
            v = x[(plane * params.h + u32(ih)) * params.w + u32(iw)];
        }
        out[i] = v;
    }
}
