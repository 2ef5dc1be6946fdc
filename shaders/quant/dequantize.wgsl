// GGML block formats to floats: out[i] = the i-th value of the tensor whose raw blocks (the
// bytes of a GGUF file's tensor, little-endian, padded to whole u32 words) are `blocks`.
// One invocation per value; entry point per format (q8_0, q4_0, ... as gguf names them).
// Every step mirrors gguf-py's numpy dequantize_blocks in f32, operation by operation, so the
// results are bitwise equal to gguf.quants.dequantize (layouts: ggml-common.h).
alias Dst = f32;
override WG: u32 = 256u;

struct Params { n: u32 }

@group(0) @binding(0) var<storage, read> blocks: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<Dst>;
@group(0) @binding(2) var<uniform> params: Params;

fn byte_at(i: u32) -> u32 {
    return (blocks[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn u16_at(i: u32) -> u32 {
    return byte_at(i) | (byte_at(i + 1u) << 8u);
}

fn f16_at(i: u32) -> f32 {
    return unpack2x16float(u16_at(i)).x;
}

fn signed8(v: u32) -> i32 {
    return i32(v << 24u) >> 24u;
}

// Low nibble for the first half of a 32-value group, high nibble for the second.
fn nibble(qs: u32, j: u32) -> u32 {
    return (byte_at(qs + (j & 15u)) >> ((j >> 4u) * 4u)) & 0xfu;
}

// Q4_K/Q5_K: 6-bit scale and min of sub-block s (0..7) from the 12 packed bytes at `at`.
fn k_scale_min(at: u32, s: u32) -> vec2<u32> {
    if (s < 4u) {
        return vec2<u32>(byte_at(at + s) & 63u, byte_at(at + s + 4u) & 63u);
    }
    let k = s - 4u;
    let low = byte_at(at + 8u + k);
    return vec2<u32>((low & 0xfu) | ((byte_at(at + k) >> 2u) & 0x30u),
                     (low >> 4u) | ((byte_at(at + 4u + k) >> 2u) & 0x30u));
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn q8_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= params.n) { return; }
    let base = (i / 32u) * 34u;
    out[i] = Dst(f32(signed8(byte_at(base + 2u + i % 32u))) * f16_at(base));
}

@compute @workgroup_size(WG)
fn q4_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= params.n) { return; }
    let base = (i / 32u) * 18u;
    out[i] = Dst(f16_at(base) * f32(i32(nibble(base + 2u, i % 32u)) - 8));
}

@compute @workgroup_size(WG)
fn q4_1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= params.n) { return; }
    let base = (i / 32u) * 20u;
    let scaled = f16_at(base) * f32(nibble(base + 4u, i % 32u));
    out[i] = Dst(scaled + f16_at(base + 2u));
}

// Q5_0/Q5_1: the fifth bit of value j is bit j of the u32 after the scale(s).
fn five_bits(qh: u32, qs: u32, j: u32) -> u32 {
    let high = (u16_at(qh) | (u16_at(qh + 2u) << 16u)) >> j;
    return nibble(qs, j) | ((high & 1u) << 4u);
}

@compute @workgroup_size(WG)
fn q5_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= params.n) { return; }
    let base = (i / 32u) * 22u;
    out[i] = Dst(f16_at(base) * f32(i32(five_bits(base + 2u, base + 6u, i % 32u)) - 16));
}

@compute @workgroup_size(WG)
fn q5_1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= params.n) { return; }
    let base = (i / 32u) * 24u;
    let scaled = f16_at(base) * f32(five_bits(base + 4u, base + 8u, i % 32u));
    out[i] = Dst(scaled + f16_at(base + 2u));
}

// Q4_K/Q5_K: 8 sub-blocks of 32; value = (d * scale) * q - dmin * min.
fn k_value(base: u32, j: u32, q: u32) -> f32 {
    let sm = k_scale_min(base + 4u, j / 32u);
    let scale = f16_at(base) * f32(sm.x);
    let shift = f16_at(base + 2u) * f32(sm.y);
    let scaled = scale * f32(q);
    return scaled - shift;
}

// The 4 low bits of Q4_K/Q5_K value j: 32-byte chunks, each holding two sub-blocks.
fn k_nibble(qs: u32, j: u32) -> u32 {
    let s = j / 32u;
    return (byte_at(qs + (s / 2u) * 32u + j % 32u) >> ((s % 2u) * 4u)) & 0xfu;
}

@compute @workgroup_size(WG)
fn q4_k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= params.n) { return; }
    let base = (i / 256u) * 144u;
    let j = i % 256u;
    out[i] = Dst(k_value(base, j, k_nibble(base + 16u, j)));
}

@compute @workgroup_size(WG)
fn q5_k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= params.n) { return; }
    let base = (i / 256u) * 176u;
    let j = i % 256u;
    let high = (byte_at(base + 16u + j % 32u) >> (j / 32u)) & 1u;
    out[i] = Dst(k_value(base, j, k_nibble(base + 48u, j) | (high << 4u)));
}

@compute @workgroup_size(WG)
fn q6_k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= params.n) { return; }
    let base = (i / 256u) * 210u;
    let j = i % 256u;
    let half = j / 128u;
    let low = (byte_at(base + half * 64u + j % 64u) >> (((j % 128u) / 64u) * 4u)) & 0xfu;
    let high = (byte_at(base + 128u + half * 32u + j % 32u) >> (((j % 128u) / 32u) * 2u)) & 3u;
    let scale = f16_at(base + 208u) * f32(signed8(byte_at(base + 192u + j / 16u)));
    out[i] = Dst(scale * f32(i32(low | (high << 4u)) - 32));
}

@compute @workgroup_size(WG)
fn float16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= params.n) { return; }
    out[i] = Dst(f16_at(i * 2u));
}

@compute @workgroup_size(WG)
fn bfloat16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= params.n) { return; }
    out[i] = Dst(bitcast<f32>(u16_at(i * 2u) << 16u));
}
