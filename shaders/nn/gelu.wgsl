// GELU of the activations' kernels, shared by nn/activation and quant/gelu_i8 (each declares
// the override OP: 2 the tanh approximation, otherwise exact through erf), f32 math.
// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): WGSL has no erf builtin.
fn erf(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
        + t * (-1.453152027 + t * 1.061405429))));
    return sign(v) * (1.0 - poly * exp(-a * a));
}

fn gelu(v: f32) -> f32 {
    if (OP == 2u) {
        // Clamped: some drivers compute tanh through exp and return NaN for large inputs.
        let inner = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0);
        return 0.5 * v * (1.0 + tanh(inner));
    }
    return 0.5 * v * (1.0 + erf(v * 0.7071067811865476));
}
