//! Direct depthwise convolution (groups == cin == cout, one filter per channel).
//!
//! im2col would copy each pixel kh*kw times to do one multiply-add per copy,
//! so these kernels work on the planes directly. For each output row and each
//! tap, the valid output columns are computed once (padding hoisted out), and
//! the inner loop is a branch-free multiply-add over contiguous outputs.

use super::conv::Conv2dGeom;
use super::{axpy_gather, axpy_scatter, tap_range};
use core::ops::Range;

/// Depthwise forward; called by `conv2d_forward` when `g.is_depthwise()`.
pub(crate) fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Conv2dGeom) -> Vec<f32> {
    debug_assert_eq!(weight.len(), g.cin * g.kh * g.kw);
    let (plane, hw, taps) = (g.out_h() * g.out_w(), g.h * g.w, g.kh * g.kw);
    let mut out = vec![0.0; g.n * g.cout * plane];
    if plane == 0 || hw == 0 || taps == 0 {
        return out;
    }
    let cols = col_ranges(g);
    for (i, (o, xp)) in out
        .chunks_exact_mut(plane)
        .zip(x.chunks_exact(hw))
        .enumerate()
    {
        let c = i % g.cin;
        o.fill(bias.map_or(0.0, |b| b[c]));
        forward_plane(xp, &weight[c * taps..][..taps], o, g, &cols);
    }
    out
}

/// Depthwise input gradient; called by `conv2d_input_grad` when `g.is_depthwise()`.
pub(crate) fn input_grad(grad_out: &[f32], weight: &[f32], g: &Conv2dGeom) -> Vec<f32> {
    debug_assert_eq!(weight.len(), g.cin * g.kh * g.kw);
    let (plane, hw, taps) = (g.out_h() * g.out_w(), g.h * g.w, g.kh * g.kw);
    let mut gx = vec![0.0; g.n * g.cin * hw];
    if plane == 0 || hw == 0 || taps == 0 {
        return gx;
    }
    let cols = col_ranges(g);
    for (i, (gxp, gop)) in gx
        .chunks_exact_mut(hw)
        .zip(grad_out.chunks_exact(plane))
        .enumerate()
    {
        let c = i % g.cin;
        input_grad_plane(gop, &weight[c * taps..][..taps], gxp, g, &cols);
    }
    gx
}

/// For each kernel column kx, the output columns whose tap lands inside the image.
fn col_ranges(g: &Conv2dGeom) -> Vec<Range<usize>> {
    (0..g.kw)
        .map(|kx| tap_range(g.out_w(), g.w, g.stride_w, kx, g.pad_left))
        .collect()
}

/// Input row under output row `oy` at kernel row `ky`, unless it is padding.
fn input_row(oy: usize, ky: usize, g: &Conv2dGeom) -> Option<usize> {
    (oy * g.stride_h + ky)
        .checked_sub(g.pad_top)
        .filter(|&iy| iy < g.h)
}

/// One channel: out[oy, ox] += sum over taps of k[ky, kx] * x[iy, ix].
/// Output rows are the outer loop so each stays in L1 while all taps add into it.
fn forward_plane(x: &[f32], k: &[f32], out: &mut [f32], g: &Conv2dGeom, cols: &[Range<usize>]) {
    for (oy, orow) in out.chunks_exact_mut(g.out_w()).enumerate() {
        for ky in 0..g.kh {
            let Some(iy) = input_row(oy, ky, g) else {
                continue;
            };
            let xrow = &x[iy * g.w..][..g.w];
            for (kx, valid) in cols.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
                let x0 = valid.start * g.stride_w + kx - g.pad_left;
                axpy_gather(
                    &mut orow[valid.clone()],
                    &xrow[x0..],
                    g.stride_w,
                    k[ky * g.kw + kx],
                );
            }
        }
    }
}

/// Adjoint of [`forward_plane`]: each output gradient is scattered back
/// through every tap onto the input pixel it read.
fn input_grad_plane(go: &[f32], k: &[f32], gx: &mut [f32], g: &Conv2dGeom, cols: &[Range<usize>]) {
    for (oy, grow) in go.chunks_exact(g.out_w()).enumerate() {
        for ky in 0..g.kh {
            let Some(iy) = input_row(oy, ky, g) else {
                continue;
            };
            let gxrow = &mut gx[iy * g.w..][..g.w];
            for (kx, valid) in cols.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
                let x0 = valid.start * g.stride_w + kx - g.pad_left;
                axpy_scatter(
                    &mut gxrow[x0..],
                    &grow[valid.clone()],
                    g.stride_w,
                    k[ky * g.kw + kx],
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::conv::tests::{check_adjoint, check_forward, check_input_grad, geom, Case};
    use crate::kernels::testutil::Rng;

    fn cases() -> Vec<Case> {
        let case = |name, g| Case {
            name,
            g,
            budget: usize::MAX,
        };
        vec![
            case(
                "dw 3x3 s1 p1",
                geom((2, 4, 9, 8, 4), (3, 3), (1, 1), (1, 1, 1, 1), 4),
            ),
            case(
                "dw 3x3 s2 pad t0 b1 l0 r1",
                geom((1, 4, 8, 10, 4), (3, 3), (2, 2), (0, 1, 0, 1), 4),
            ),
            case(
                "dw 5x5 s1 p2",
                geom((1, 3, 9, 9, 3), (5, 5), (1, 1), (2, 2, 2, 2), 3),
            ),
            case(
                "dw 5x5 s2 SAME",
                geom((2, 3, 10, 11, 3), (5, 5), (2, 2), (1, 2, 2, 2), 3),
            ),
            case(
                "dw 3x5 s1x2 non-square",
                geom((1, 2, 7, 13, 2), (3, 5), (1, 2), (0, 2, 1, 2), 2),
            ),
            case(
                "dw 7x7 p3 on 3x3 (taps off both edges)",
                geom((1, 2, 3, 3, 2), (7, 7), (1, 1), (3, 3, 3, 3), 2),
            ),
        ]
    }

    #[test]
    fn depthwise_forward_matches_naive() {
        let mut rng = Rng::new(21);
        cases().iter().for_each(|c| check_forward(c, &mut rng));
    }

    #[test]
    fn depthwise_input_grad_matches_finite_differences() {
        let mut rng = Rng::new(22);
        cases().iter().for_each(|c| check_input_grad(c, &mut rng));
    }

    #[test]
    fn depthwise_input_grad_is_adjoint_of_forward() {
        let mut rng = Rng::new(23);
        cases().iter().for_each(|c| check_adjoint(c, &mut rng));
    }
}
