//! Fully connected layer, PyTorch layout: x (n, in), weight (out, in), bias (out).

use super::{matmul, MatRef};

/// y[n, out] = x[n, in] * W^T + bias, one gemm reading W transposed in place.
pub fn linear_forward(x: &[f32], n: usize, weight: &[f32], out_f: usize, in_f: usize, bias: Option<&[f32]>) -> Vec<f32> {
    debug_assert_eq!(x.len(), n * in_f);
    debug_assert_eq!(weight.len(), out_f * in_f);
    debug_assert!(bias.is_none_or(|b| b.len() == out_f));
    let mut y = vec![0.0; n * out_f];
    if let Some(b) = bias {
        // Start from the bias and let gemm accumulate onto it.
        y.chunks_exact_mut(out_f.max(1)).for_each(|row| row.copy_from_slice(b));
    }
    matmul(n, out_f, in_f, MatRef::new(x, in_f), MatRef::new(weight, in_f).t(), &mut y, out_f, true);
    y
}

/// d loss / d x = grad_out[n, out] * W[out, in]; returns (n, in).
pub fn linear_input_grad(grad_out: &[f32], n: usize, weight: &[f32], out_f: usize, in_f: usize) -> Vec<f32> {
    debug_assert_eq!(grad_out.len(), n * out_f);
    debug_assert_eq!(weight.len(), out_f * in_f);
    let mut gx = vec![0.0; n * in_f];
    matmul(n, in_f, out_f, MatRef::new(grad_out, out_f), MatRef::new(weight, in_f), &mut gx, in_f, false);
    gx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, check_grad, dot, Rng};

    #[test]
    fn linear_forward_matches_naive() {
        let mut rng = Rng::new(41);
        let (n, o, i) = (3, 10, 17);
        let (x, w, b) = (rng.vec(n * i), rng.vec(o * i), rng.vec(o));
        let want: Vec<f64> = (0..n * o).map(|k| b[k % o] as f64 + (0..i).map(|j| x[k / o * i + j] as f64 * w[k % o * i + j] as f64).sum::<f64>()).collect();
        assert_close("linear", &linear_forward(&x, n, &w, o, i, Some(&b)), &want, 1e-5);
    }

    #[test]
    fn linear_input_grad_matches_finite_differences_and_adjoint() {
        let mut rng = Rng::new(42);
        let (n, o, i) = (2, 9, 25);
        let (x, w, b, r) = (rng.vec(n * i), rng.vec(o * i), rng.vec(o), rng.vec(n * o));
        let analytic = linear_input_grad(&r, n, &w, o, i);
        check_grad("linear", |x| linear_forward(x, n, &w, o, i, Some(&b)), &x, &r, &analytic, &mut rng);
        let (lhs, rhs) = (dot(&linear_forward(&x, n, &w, o, i, None), &r), dot(&x, &analytic));
        assert!((lhs - rhs).abs() <= 1e-4 * lhs.abs().max(rhs.abs()));
    }
}
