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
///
/// A class score's gradient is one-hot: its input gradient is one row of W. So a gradient with few
/// nonzeros sums just their rows, not a product that reads all of W (5 MB on EfficientNet-Lite0's
/// head, 0.7 ms per explanation in wasm). The terms it skips are zeros times finite weights (the
/// loaders refuse any other), which add nothing.
pub fn linear_input_grad(grad_out: &[f32], n: usize, weight: &[f32], out_f: usize, in_f: usize) -> Vec<f32> {
    debug_assert_eq!(grad_out.len(), n * out_f);
    debug_assert_eq!(weight.len(), out_f * in_f);
    let mut gx = vec![0.0; n * in_f];
    let nonzeros = |g: &[f32]| g.iter().filter(|&&v| v != 0.0).count();
    if out_f > 0 && grad_out.chunks_exact(out_f).all(|g| nonzeros(g) <= out_f / SPARSE_FRACTION) {
        for (g, gx) in grad_out.chunks_exact(out_f).zip(gx.chunks_exact_mut(in_f.max(1))) {
            for (j, &gj) in g.iter().enumerate().filter(|&(_, &v)| v != 0.0) {
                gx.iter_mut().zip(&weight[j * in_f..][..in_f]).for_each(|(o, &w)| *o += gj * w);
            }
        }
        return gx;
    }
    matmul(n, in_f, out_f, MatRef::new(grad_out, out_f), MatRef::new(weight, in_f), &mut gx, in_f, false);
    gx
}

/// A gradient whose nonzeros are at most 1 / this of its entries takes their rows of W one by one.
const SPARSE_FRACTION: usize = 8;

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

    /// A class score's gradient (one-hot, per image) takes its rows of W alone: exactly `g * W[c]`,
    /// and, with a second nonzero, what the product over all of W gives.
    #[test]
    fn a_sparse_gradient_sums_its_rows_of_w() {
        let mut rng = Rng::new(43);
        let (n, o, i) = (2, 40, 37);
        let w = rng.vec(o * i);
        let mut g = vec![0.0; n * o];
        (g[7], g[o + 31]) = (1.5, -0.25);
        let gx = linear_input_grad(&g, n, &w, o, i);
        assert!(gx[..i].iter().zip(&w[7 * i..][..i]).all(|(x, w)| x.to_bits() == (1.5 * w).to_bits()));
        assert!(gx[i..].iter().zip(&w[31 * i..][..i]).all(|(x, w)| x.to_bits() == (-0.25 * w).to_bits()));
        g[3] = 2.0;
        let want: Vec<f64> = (0..n * i).map(|k| (0..o).map(|j| g[k / i * o + j] as f64 * w[j * i + k % i] as f64).sum()).collect();
        assert_close("two nonzeros", &linear_input_grad(&g, n, &w, o, i), &want, 1e-6);
    }
}
