// Canny edges as OpenCV's cv::Canny computes them (imgproc/src/canny.cpp), in three passes
// chosen by PASS:
//   0 gradient: 3x3 Sobel of every channel of a uint8 HWC image (borders replicated, as
//     OpenCV's BORDER_REPLICATE), magnitude |dx| + |dy| (or dx^2 + dy^2 with L2); a pixel
//     keeps the channel of largest magnitude (the first on ties), as OpenCV does for colour.
//   1 suppress: non-maximum suppression with OpenCV's integer sector test (tan 22.5 degrees in
//     15-bit fixed point) and its asymmetric comparisons (> before, >= after), magnitudes
//     outside the image 0; then the double threshold: above `high` strong (2), above `low`
//     weak (1), else 0.
//   2 hysteresis: weak pixels 8-connected to strong ones become strong. One 16x16 tile per
//     workgroup propagates in workgroup memory until it settles; `flag` says whether any
//     pixel changed, and the host repeats the pass until none does (a chain crossing tiles).
// Everything is integer arithmetic, so the edges are OpenCV's bit for bit.
override PASS: u32 = 0u;

const TILE: u32 = 16u;
const SIDE: u32 = 18u;  // the tile and its 1-pixel halo
const CANNY_SHIFT: u32 = 15u;
const TG22: i32 = 13573;  // round(tan(22.5 degrees) * 2^15), OpenCV's TG22

struct Params {
    height: u32,
    width: u32,
    channels: u32,
    low: i32,
    high: i32,
    l2: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;           // uint8 HWC, 4 per word
@group(0) @binding(1) var<storage, read_write> grad: array<i32>;    // per pixel: mag, dx, dy
@group(0) @binding(2) var<storage, read_write> state: array<u32>;   // 0 none, 1 weak, 2 strong
@group(0) @binding(3) var<storage, read_write> flag: array<u32>;    // [0]: a pixel changed
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> tile: array<u32, 324>;  // SIDE * SIDE
var<workgroup> changed: u32;

fn pixel(y: i32, x: i32, c: u32) -> i32 {
    let yy = u32(clamp(y, 0, i32(params.height) - 1));
    let xx = u32(clamp(x, 0, i32(params.width) - 1));
    let i = (yy * params.width + xx) * params.channels + c;
    return i32(extractBits(src[i >> 2u], (i & 3u) * 8u, 8u));
}

fn gradient(y: i32, x: i32, i: u32) {
    var best = -1;
    var best_dx = 0;
    var best_dy = 0;
    for (var c = 0u; c < params.channels; c++) {
        let a = pixel(y - 1, x - 1, c);
        let b = pixel(y - 1, x, c);
        let d = pixel(y - 1, x + 1, c);
        let l = pixel(y, x - 1, c);
        let r = pixel(y, x + 1, c);
        let e = pixel(y + 1, x - 1, c);
        let f = pixel(y + 1, x, c);
        let g = pixel(y + 1, x + 1, c);
        let dx = (d + 2 * r + g) - (a + 2 * l + e);
        let dy = (e + 2 * f + g) - (a + 2 * b + d);
        var m = abs(dx) + abs(dy);
        if (params.l2 != 0u) {
            m = dx * dx + dy * dy;
        }
        if (m > best) {
            best = m;
            best_dx = dx;
            best_dy = dy;
        }
    }
    grad[3u * i] = best;
    grad[3u * i + 1u] = best_dx;
    grad[3u * i + 2u] = best_dy;
}

fn magnitude(y: i32, x: i32) -> i32 {
    if (y < 0 || x < 0 || y >= i32(params.height) || x >= i32(params.width)) {
        return 0;
    }
    return grad[3u * (u32(y) * params.width + u32(x))];
}

fn suppress(y: i32, x: i32, i: u32) {
    let m = grad[3u * i];
    var kept = false;
    if (m > params.low) {
        let xs = grad[3u * i + 1u];
        let ys = grad[3u * i + 2u];
        let ax = abs(xs);
        let ay = abs(ys) << CANNY_SHIFT;
        let tg22x = ax * TG22;
        if (ay < tg22x) {
            kept = m > magnitude(y, x - 1) && m >= magnitude(y, x + 1);
        } else {
            let tg67x = tg22x + (ax << (CANNY_SHIFT + 1u));
            if (ay > tg67x) {
                kept = m > magnitude(y - 1, x) && m >= magnitude(y + 1, x);
            } else {
                let s = select(1, -1, (xs ^ ys) < 0);
                kept = m > magnitude(y - 1, x - s) && m > magnitude(y + 1, x + s);
            }
        }
    }
    state[i] = select(0u, select(1u, 2u, m > params.high), kept);
}

fn tile_at(ty: u32, tx: u32) -> u32 {
    return tile[ty * SIDE + tx];
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    let y = i32(group.y * TILE + local.y);
    let x = i32(group.x * TILE + local.x);
    let inside = y < i32(params.height) && x < i32(params.width);
    let i = u32(y) * params.width + u32(x);
    if (PASS == 0u) {
        if (inside) {
            gradient(y, x, i);
        }
        return;
    }
    if (PASS == 1u) {
        if (inside) {
            suppress(y, x, i);
        }
        return;
    }
    // PASS 2: load the tile and its halo (0 outside the image)
    let flat = local.y * TILE + local.x;
    for (var k = flat; k < SIDE * SIDE; k += TILE * TILE) {
        let hy = i32(group.y * TILE + k / SIDE) - 1;
        let hx = i32(group.x * TILE + k % SIDE) - 1;
        var v = 0u;
        if (hy >= 0 && hx >= 0 && hy < i32(params.height) && hx < i32(params.width)) {
            v = state[u32(hy) * params.width + u32(hx)];
        }
        tile[k] = v;
    }
    workgroupBarrier();  // the tile is loaded by other invocations
    let ty = local.y + 1u;
    let tx = local.x + 1u;
    let first = tile_at(ty, tx);
    for (var sweep = 0u; sweep < TILE * TILE; sweep++) {
        workgroupBarrier();  // every invocation has read `changed` before it is reset
        if (flat == 0u) {
            changed = 0u;
        }
        workgroupBarrier();
        if (inside && tile_at(ty, tx) == 1u) {
            let near = max(max(max(tile_at(ty - 1u, tx - 1u), tile_at(ty - 1u, tx)),
                               max(tile_at(ty - 1u, tx + 1u), tile_at(ty, tx - 1u))),
                           max(max(tile_at(ty, tx + 1u), tile_at(ty + 1u, tx - 1u)),
                               max(tile_at(ty + 1u, tx), tile_at(ty + 1u, tx + 1u))));
            if (near == 2u) {
                tile[ty * SIDE + tx] = 2u;
                changed = 1u;
            }
        }
        if (workgroupUniformLoad(&changed) == 0u) {
            break;
        }
    }
    if (inside && first != 2u && tile_at(ty, tx) == 2u) {
        state[i] = 2u;
        flag[0] = 1u;
    }
}
