//! The fused row loops of the forward pass: bias, GELU (with a branch-free `erf`), residual +
//! LayerNorm, softmax, each one pass over rows already in cache; and `first_rows`, each
//! sequence's first token.

use super::LayerNorm;

/// Each sequence's first row of `x` (`[tokens, h]`), `[sequences, h]`; zeros for an empty one.
pub(super) fn first_rows(x: &[f32], offsets: &[usize], h: usize) -> Vec<f32> {
    let mut first = vec![0f32; (offsets.len() - 1) * h];
    for (s, w) in offsets.windows(2).enumerate() {
        if w[1] > w[0] {
            first[s * h..(s + 1) * h].copy_from_slice(&x[w[0] * h..(w[0] + 1) * h]);
        }
    }
    first
}

pub(super) fn add_bias_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

pub(super) fn bias_gelu_rows(x: &mut [f32], bias: &[f32]) {
    const INV_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            let t = *v + b;
            *v = 0.5 * t * (1.0 + erf(t * INV_SQRT2));
        }
    }
}

/// erf for f32 as a rational approximation on [-4, 4] (Eigen's and XLA's `fast_erf`;
/// absolute error below 1e-7 there, and erf is ±1 to f32 precision outside). Branch-free,
/// so the GELU loop vectorizes; `libm::erff` made GELU a third of the forward pass.
#[inline(always)]
pub(super) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_2e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_2e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

/// `x = LayerNorm(x + y + bias)`, row by row.
pub(super) fn residual_bias_layer_norm(
    x: &mut [f32],
    y: &[f32],
    bias: &[f32],
    ln: &LayerNorm,
    eps: f32,
) {
    let h = bias.len();
    for (xr, yr) in x.chunks_exact_mut(h).zip(y.chunks_exact(h)) {
        for i in 0..h {
            xr[i] += yr[i] + bias[i];
        }
        normalize_row(xr, ln, eps);
    }
}

pub(super) fn layer_norm_rows(x: &mut [f32], h: usize, ln: &LayerNorm, eps: f32) {
    for row in x.chunks_exact_mut(h) {
        normalize_row(row, ln, eps);
    }
}

fn normalize_row(row: &mut [f32], ln: &LayerNorm, eps: f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(&ln.gamma).zip(&ln.beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

pub(super) fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}
