// A real n-point FFT (n = 2h even) through an h-point complex one: the even and odd samples
// are packed as z = x[2k] + i x[2k+1] (a float32 row *is* that complex64 row), and
//   X[k] = E[k] + W^k O[k],  E = (Z[k] + conj Z[h-k]) / 2,  O = (Z[k] - conj Z[h-k]) / 2i,
// with W = exp(-2 pi i / n) from a float64-built table w[k], k = 0..h. rfft_post turns Z into
// X[0..h]; irfft_pre inverts it (E = (X[k] + conj X[h-k]) / 2, O = (X[k] - conj X[h-k]) W^-k / 2,
// Z = E + i O) so that an h-point inverse FFT yields the interleaved real signal.
override WG: u32 = 256u;

struct Params {
    h: u32,      // half the real length
    m_in: u32,   // points per input row (h for rfft_post; the given spectrum for irfft_pre)
    total: u32,  // rows * (h + 1) for rfft_post, rows * h for irfft_pre
    scale: f32,
}

@group(0) @binding(0) var<storage, read> z: array<vec2<f32>>;
@group(0) @binding(1) var<storage, read> w: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec2<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

fn cmul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

fn conj(a: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x, -a.y);
}

@compute @workgroup_size(WG)
fn rfft_post(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.total) {
        return;
    }
    let h = params.h;
    let row = i / (h + 1u);
    let k = i % (h + 1u);
    let a = z[row * h + k % h];
    let b = conj(z[row * h + (h - k) % h]);
    let even = 0.5 * (a + b);
    let d = 0.5 * (a - b);
    let odd = vec2<f32>(d.y, -d.x);  // d / i
    out[i] = (even + cmul(w[k], odd)) * params.scale;
}

// Point k of the given spectrum row, 0 past its end; DC and Nyquist keep only their real
// part, as numpy.fft.irfft does.
fn spectrum(row: u32, k: u32) -> vec2<f32> {
    if (k >= params.m_in) {
        return vec2<f32>(0.0);
    }
    let v = z[row * params.m_in + k];
    return select(v, vec2<f32>(v.x, 0.0), k == 0u || k == params.h);
}

@compute @workgroup_size(WG)
fn irfft_pre(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.total) {
        return;
    }
    let h = params.h;
    let row = i / h;
    let k = i % h;
    let a = spectrum(row, k);
    let b = conj(spectrum(row, h - k));
    let even = 0.5 * (a + b);
    let odd = cmul(0.5 * (a - b), conj(w[k]));
    out[i] = (even + vec2<f32>(-odd.y, odd.x)) * params.scale;  // E + i O
}
