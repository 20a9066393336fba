//! The smooth activations (sigmoid, SiLU, hard-swish, GELU, ...), per-channel affine maps and the
//! layer norm over channels, forward and input-gradient. Plain loops over (n, c, h, w) data.

use crate::graph::Activation;

/// erf(x) from the Numerical Recipes `erfc` Chebyshev fit (fractional error below 1.2e-7), in f64:
/// Rust's std has no erf, and GELU needs it exact to f32 precision.
pub fn erf(x: f32) -> f32 {
    let z = (x as f64).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68 + t * (0.374_091_96 + t * (0.096_784_18 + t * (-0.186_288_06 + t * (0.278_868_07 + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    (if x >= 0.0 { 1.0 - erfc } else { erfc - 1.0 }) as f32
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi): the normal density's constant.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// f(x) for one activation.
pub fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Sigmoid => sigmoid(x),
        Activation::Silu => x * sigmoid(x),
        Activation::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Activation::Hardsigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
        Activation::Gelu => 0.5 * x * (1.0 + erf(x * INV_SQRT_2)),
        Activation::Tanh => x.tanh(),
        Activation::LeakyRelu(slope) => {
            if x >= 0.0 {
                x
            } else {
                slope * x
            }
        }
        Activation::Clip { min, max } => x.clamp(min, max),
    }
}

/// f'(x), with PyTorch's values at the kinks (the side that `torch.autograd` picks).
pub fn derivative(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Sigmoid => {
            let s = sigmoid(x);
            s * (1.0 - s)
        }
        Activation::Silu => {
            let s = sigmoid(x);
            s * (1.0 + x * (1.0 - s))
        }
        // PyTorch: 0 for x < -3, 1 for x > 3, (2x + 3) / 6 in between (both edges included).
        Activation::Hardswish => {
            if x < -3.0 {
                0.0
            } else if x > 3.0 {
                1.0
            } else {
                (2.0 * x + 3.0) / 6.0
            }
        }
        Activation::Hardsigmoid { alpha, beta } => {
            let y = alpha * x + beta;
            if y > 0.0 && y < 1.0 {
                alpha
            } else {
                0.0
            }
        }
        Activation::Gelu => 0.5 * (1.0 + erf(x * INV_SQRT_2)) + x * INV_SQRT_2PI * (-0.5 * x * x).exp(),
        Activation::Tanh => 1.0 - x.tanh().powi(2),
        Activation::LeakyRelu(slope) => {
            if x > 0.0 {
                1.0
            } else {
                slope
            }
        }
        Activation::Clip { min, max } => ((x > min) & (x < max)) as u8 as f32,
    }
}

/// x + y elementwise, the outputs split across threads where the build has them: every sum is
/// computed alone, so the bits are the same on any number of threads. Candle's own add splits big
/// tensors over a pool of its own, whose threads spin beside ours and took a core the other half of
/// a batch needed (natively, Score-CAM on astronaut.png with 2 threads: 9.5-9.9 s with candle's add).
pub fn add(x: &[f32], y: &[f32]) -> Vec<f32> {
    debug_assert_eq!(x.len(), y.len());
    let mut out = super::fresh(x.len());
    super::parallel::in_runs(&mut out, |at, run| {
        for ((o, a), b) in run.iter_mut().zip(&x[at..]).zip(&y[at..]) {
            o.write(a + b);
        }
    });
    // SAFETY: the runs cover `out`, and each wrote every element of its own.
    unsafe { super::written(out) }
}

pub fn activation_forward(x: &[f32], act: Activation) -> Vec<f32> {
    x.iter().map(|&v| activate(act, v)).collect()
}

pub fn activation_input_grad(x: &[f32], grad_out: &[f32], act: Activation) -> Vec<f32> {
    debug_assert_eq!(x.len(), grad_out.len());
    x.iter().zip(grad_out).map(|(&v, &g)| g * derivative(act, v)).collect()
}

/// y[n, c, p] = x[n, c, p] * scale[c] + shift[c]; `plane` = h * w.
pub fn affine_forward(x: &[f32], scale: &[f32], shift: &[f32], plane: usize) -> Vec<f32> {
    let c = scale.len();
    let mut y = Vec::with_capacity(x.len());
    for (i, chunk) in x.chunks_exact(plane).enumerate() {
        let (s, b) = (scale[i % c], shift[i % c]);
        y.extend(chunk.iter().map(|&v| v * s + b));
    }
    y
}

pub fn affine_input_grad(grad_out: &[f32], scale: &[f32], plane: usize) -> Vec<f32> {
    let c = scale.len();
    let mut g = Vec::with_capacity(grad_out.len());
    for (i, chunk) in grad_out.chunks_exact(plane).enumerate() {
        let s = scale[i % c];
        g.extend(chunk.iter().map(|&v| v * s));
    }
    g
}

/// Mean and 1 / sqrt(var + eps) over the channels of every pixel of every image: (n * plane) each.
fn channel_stats(x: &[f32], c: usize, plane: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / (c * plane);
    let (mut mean, mut inv_std) = (vec![0.0f32; n * plane], vec![0.0f32; n * plane]);
    for b in 0..n {
        let img = &x[b * c * plane..(b + 1) * c * plane];
        let (m, s) = (&mut mean[b * plane..(b + 1) * plane], &mut inv_std[b * plane..(b + 1) * plane]);
        for ch in img.chunks_exact(plane) {
            m.iter_mut().zip(ch).for_each(|(m, &v)| *m += v);
        }
        m.iter_mut().for_each(|v| *v /= c as f32);
        for ch in img.chunks_exact(plane) {
            s.iter_mut().zip(ch).zip(m.iter()).for_each(|((s, &v), &mu)| *s += (v - mu) * (v - mu));
        }
        s.iter_mut().for_each(|v| *v = 1.0 / (*v / c as f32 + eps).sqrt());
    }
    (mean, inv_std)
}

/// Layer norm over channels: y = (x - mean_c) / sqrt(var_c + eps) * weight[c] + bias[c] per pixel
/// (biased variance, as PyTorch's `LayerNorm`).
pub fn channel_norm_forward(x: &[f32], weight: &[f32], bias: &[f32], plane: usize, eps: f32) -> Vec<f32> {
    let c = weight.len();
    let (mean, inv_std) = channel_stats(x, c, plane, eps);
    let mut y = vec![0.0; x.len()];
    for (i, (yc, xc)) in y.chunks_exact_mut(plane).zip(x.chunks_exact(plane)).enumerate() {
        let (b, ch) = (i / c, i % c);
        let (m, s) = (&mean[b * plane..(b + 1) * plane], &inv_std[b * plane..(b + 1) * plane]);
        for p in 0..plane {
            yc[p] = (xc[p] - m[p]) * s[p] * weight[ch] + bias[ch];
        }
    }
    y
}

/// dx = inv_std * (g' - mean_c(g') - x_hat * mean_c(g' x_hat)), g' = g * weight, per pixel.
pub fn channel_norm_input_grad(x: &[f32], grad_out: &[f32], weight: &[f32], plane: usize, eps: f32) -> Vec<f32> {
    let c = weight.len();
    let n = x.len() / (c * plane);
    let (mean, inv_std) = channel_stats(x, c, plane, eps);
    let mut gx = vec![0.0; x.len()];
    let (mut mg, mut mgx) = (vec![0.0f32; plane], vec![0.0f32; plane]);
    for b in 0..n {
        let (m, s) = (&mean[b * plane..(b + 1) * plane], &inv_std[b * plane..(b + 1) * plane]);
        let at = |ch: usize| b * c * plane + ch * plane;
        mg.iter_mut().for_each(|v| *v = 0.0);
        mgx.iter_mut().for_each(|v| *v = 0.0);
        for ch in 0..c {
            let (xc, gc) = (&x[at(ch)..at(ch) + plane], &grad_out[at(ch)..at(ch) + plane]);
            for p in 0..plane {
                let g = gc[p] * weight[ch];
                mg[p] += g;
                mgx[p] += g * (xc[p] - m[p]) * s[p];
            }
        }
        for ch in 0..c {
            let (xc, gc) = (&x[at(ch)..at(ch) + plane], &grad_out[at(ch)..at(ch) + plane]);
            let out = &mut gx[at(ch)..at(ch) + plane];
            for p in 0..plane {
                let xhat = (xc[p] - m[p]) * s[p];
                out[p] = s[p] * (gc[p] * weight[ch] - mg[p] / c as f32 - xhat * mgx[p] / c as f32);
            }
        }
    }
    gx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::parallel::RUN;

    /// The sum is exact per element and the same on 1 and 3 threads, also with a ragged last piece
    /// and lengths too short to split.
    #[test]
    fn add_is_elementwise_on_any_thread_count() {
        let pool = |n: usize| rayon::ThreadPoolBuilder::new().num_threads(n).build().expect("a pool");
        let (one, three) = (pool(1), pool(3));
        let mut rng = crate::synthetic::Rng::new(5);
        let big = 100 * RUN + 3;
        assert_eq!(three.install(|| crate::kernels::parallel::parts(big.div_ceil(RUN), RUN)), 3, "the longest case splits");
        for len in [0, 1, 7, RUN, 3 * RUN + 5, big] {
            let (x, y) = (rng.vec(len, 2.0), rng.vec(len, 2.0));
            let want: Vec<u32> = x.iter().zip(&y).map(|(a, b)| (a + b).to_bits()).collect();
            for p in [&one, &three] {
                let got: Vec<u32> = p.install(|| add(&x, &y)).iter().map(|v| v.to_bits()).collect();
                assert!(got == want, "length {len}");
            }
        }
    }

    const ACTS: [Activation; 8] = [
        Activation::Sigmoid,
        Activation::Silu,
        Activation::Hardswish,
        Activation::Hardsigmoid { alpha: 1.0 / 6.0, beta: 0.5 },
        Activation::Gelu,
        Activation::Tanh,
        Activation::LeakyRelu(0.1),
        Activation::Clip { min: -1.0, max: 2.0 },
    ];

    #[test]
    fn erf_matches_known_values() {
        // erf(0.5), erf(1), erf(2), erf(-1.5) to 8 digits.
        for (x, want) in [(0.5, 0.520_499_9), (1.0, 0.842_700_8), (2.0, 0.995_322_3), (-1.5, -0.966_105_1), (0.0, 0.0)] {
            assert!((erf(x) - want).abs() < 2e-7, "erf({x}) = {} != {want}", erf(x));
        }
    }

    #[test]
    fn derivatives_match_central_differences() {
        for act in ACTS {
            // Points away from the kinks (-3, 3, 0, the clip bounds), where differences are exact enough.
            for &x in &[-4.2f32, -2.1, -0.7, 0.3, 1.3, 2.7, 3.9] {
                let h = 1e-3f64;
                let f = |v: f64| activate(act, v as f32) as f64;
                let fd = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
                let d = derivative(act, x) as f64;
                assert!((fd - d).abs() < 2e-3, "{act:?} at {x}: derivative {d} vs difference {fd}");
            }
        }
    }

    #[test]
    fn channel_norm_normalizes_and_its_gradient_matches_differences() {
        let (n, c, plane) = (2, 5, 3);
        let x: Vec<f32> = (0..n * c * plane).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3).collect();
        let w: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.25).collect();
        let b: Vec<f32> = (0..c).map(|i| i as f32 * 0.1 - 0.2).collect();
        let y = channel_norm_forward(&x, &vec![1.0; c], &vec![0.0; c], plane, 1e-6);
        for img in 0..n {
            for p in 0..plane {
                let vals: Vec<f32> = (0..c).map(|ch| y[img * c * plane + ch * plane + p]).collect();
                let mean: f32 = vals.iter().sum::<f32>() / c as f32;
                let var: f32 = vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / c as f32;
                assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "pixel {p}: mean {mean}, var {var}");
            }
        }
        // d(sum(y * r)) / dx against central differences, r a fixed random-looking weight.
        let r: Vec<f32> = (0..x.len()).map(|i| ((i * 17 % 11) as f32 - 5.0) * 0.2).collect();
        let gx = channel_norm_input_grad(&x, &r, &w, plane, 1e-5);
        let loss = |x: &[f32]| -> f64 { channel_norm_forward(x, &w, &b, plane, 1e-5).iter().zip(&r).map(|(a, b)| (*a as f64) * (*b as f64)).sum() };
        for i in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += 1e-2;
            xm[i] -= 1e-2;
            let fd = (loss(&xp) - loss(&xm)) / 2e-2;
            assert!((fd - gx[i] as f64).abs() < 2e-3 * (1.0 + fd.abs()), "x[{i}]: gradient {} vs difference {fd}", gx[i]);
        }
    }

    #[test]
    fn affine_scales_per_channel() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let y = affine_forward(&x, &[2.0, -1.0], &[0.5, 1.0], 2);
        assert_eq!(y, vec![2.5, 4.5, -2.0, -3.0, 10.5, 12.5, -6.0, -7.0]);
        assert_eq!(affine_input_grad(&[1.0; 8], &[2.0, -1.0], 2), vec![2.0, 2.0, -1.0, -1.0, 2.0, 2.0, -1.0, -1.0]);
    }
}
