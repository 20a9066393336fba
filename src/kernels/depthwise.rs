//! Direct depthwise convolution (groups == cin == cout, one filter per channel).
//!
//! im2col would copy each pixel kh*kw times to do one multiply-add per copy, so these kernels work
//! on the planes directly. Each input plane is first copied once into a zero-padded buffer split
//! into `stride_w` column phases (phase p holds padded columns p, p + s, p + 2s, ...). Then every
//! tap of every output row reads one *contiguous* run of a phase row, for any stride and padding,
//! and [`correlate`] sums all taps of a block of 16 outputs in registers (4 SIMD vectors on wasm32
//! simd128) before storing it once. The input gradient is the same correlation the other way round
//! (a zero-padded copy of the output gradient, the taps mirrored), then one pass back onto the plane.

use super::conv::Conv2dGeom;

/// Outputs per register block.
const BLOCK: usize = 16;

/// `out[j] = init + sum_t w_t * src[off_t + j]` for `j < out.len()`. `src` must hold `BLOCK - 1`
/// readable values past the last one used (their products only reach discarded lanes).
fn correlate(out: &mut [f32], init: f32, src: &[f32], taps: &[(usize, f32)]) {
    for (b, dst) in out.chunks_mut(BLOCK).enumerate() {
        let j0 = b * BLOCK;
        let mut acc = [init; BLOCK];
        for &(off, wt) in taps {
            let s: &[f32; BLOCK] = src[off + j0..off + j0 + BLOCK].try_into().expect("slack");
            for l in 0..BLOCK {
                acc[l] += wt * s[l];
            }
        }
        dst.copy_from_slice(&acc[..dst.len()]);
    }
}

/// The padded, phase-split layout of one plane: `phases` blocks of `rows` x `cols`, plus slack.
struct Phased {
    rows: usize,
    cols: usize,
    phases: usize,
}

impl Phased {
    fn new(g: &Conv2dGeom) -> Phased {
        let (rows, width) = (g.h + g.pad_top + g.pad_bottom, g.w + g.pad_left + g.pad_right);
        // Every tap of every output reads padded column ox*s + kx < width, so this is enough.
        Phased { rows, cols: width.div_ceil(g.stride_w), phases: g.stride_w }
    }

    fn len(&self) -> usize {
        self.rows * self.cols * self.phases + BLOCK
    }

    /// Offset of (padded row r, phase p) in the buffer.
    fn row(&self, r: usize, p: usize) -> usize {
        (p * self.rows + r) * self.cols
    }

    /// Copies plane `x` (h x w) into the interior of `buf`. The padding is never written, so a
    /// zeroed buffer stays zero there across planes.
    fn fill(&self, x: &[f32], g: &Conv2dGeom, buf: &mut [f32]) {
        let s = g.stride_w;
        for (iy, xrow) in x.chunks_exact(g.w).enumerate() {
            let r = iy + g.pad_top;
            if s == 1 {
                buf[self.row(r, 0) + g.pad_left..][..g.w].copy_from_slice(xrow);
                continue;
            }
            for p in 0..s {
                // The first input column landing in phase p, and where it lands.
                let ix0 = (p + s - g.pad_left % s) % s;
                if ix0 >= g.w {
                    continue;
                }
                let dst = &mut buf[self.row(r, p) + (ix0 + g.pad_left) / s..];
                dst.iter_mut().zip(xrow[ix0..].iter().step_by(s)).for_each(|(d, v)| *d = *v);
            }
        }
    }

    /// Copies the interior of `buf` onto plane `gx` (h x w): the adjoint of `fill`.
    fn drain(&self, buf: &[f32], g: &Conv2dGeom, gx: &mut [f32]) {
        let s = g.stride_w;
        for (iy, row) in gx.chunks_exact_mut(g.w).enumerate() {
            let r = iy + g.pad_top;
            for p in 0..s {
                let ix0 = (p + s - g.pad_left % s) % s;
                if ix0 >= g.w {
                    continue;
                }
                let src = &buf[self.row(r, p) + (ix0 + g.pad_left) / s..];
                row[ix0..].iter_mut().step_by(s).zip(src).for_each(|(d, v)| *d = *v);
            }
        }
    }
}

/// Depthwise forward; called by `conv2d_forward` when `g.is_depthwise()`.
pub(crate) fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Conv2dGeom) -> Vec<f32> {
    debug_assert_eq!(weight.len(), g.cin * g.kh * g.kw);
    let (oh, ow, hw, taps) = (g.out_h(), g.out_w(), g.h * g.w, g.kh * g.kw);
    let mut out = vec![0.0; g.n * g.cout * oh * ow];
    if oh * ow == 0 || hw == 0 || taps == 0 {
        return out;
    }
    let ph = Phased::new(g);
    let mut buf = vec![0.0; ph.len()];
    let mut tap_list = Vec::with_capacity(taps);
    for (i, (o, xp)) in out.chunks_exact_mut(oh * ow).zip(x.chunks_exact(hw)).enumerate() {
        let c = i % g.cin;
        let k = &weight[c * taps..][..taps];
        ph.fill(xp, g, &mut buf);
        let init = bias.map_or(0.0, |b| b[c]);
        for (oy, orow) in o.chunks_exact_mut(ow).enumerate() {
            tap_list.clear();
            for ky in 0..g.kh {
                let r = oy * g.stride_h + ky;
                for kx in 0..g.kw {
                    tap_list.push((ph.row(r, kx % g.stride_w) + kx / g.stride_w, k[ky * g.kw + kx]));
                }
            }
            correlate(orow, init, &buf, &tap_list);
        }
    }
    out
}

/// Depthwise input gradient; called by `conv2d_input_grad` when `g.is_depthwise()`.
///
/// Padded input (r, column c = cp * s + p) receives k[ky, kx] * go[oy, ox] for every r = oy*sh + ky
/// and kx = p + s*t, ox = cp - t. With the output gradient copied into rows padded by
/// `lead = (kw - 1) / s` zeros on the left, each phase row of the padded input gradient is a
/// correlation of those rows: one [`correlate`] per (r, p).
pub(crate) fn input_grad(grad_out: &[f32], weight: &[f32], g: &Conv2dGeom) -> Vec<f32> {
    debug_assert_eq!(weight.len(), g.cin * g.kh * g.kw);
    let (oh, ow, hw, taps) = (g.out_h(), g.out_w(), g.h * g.w, g.kh * g.kw);
    let mut gx = vec![0.0; g.n * g.cin * hw];
    if oh * ow == 0 || hw == 0 || taps == 0 {
        return gx;
    }
    let ph = Phased::new(g);
    let (s, lead) = (g.stride_w, (g.kw - 1) / g.stride_w);
    // Padded output-gradient rows: `lead` zeros, the row, zeros up to `lead + cols`, plus slack.
    let gw = lead + ph.cols.max(ow);
    let mut gpad = vec![0.0; oh * gw + BLOCK];
    let mut buf = vec![0.0; ph.len()];
    let mut tap_list = Vec::with_capacity(taps);
    for (i, (gxp, gop)) in gx.chunks_exact_mut(hw).zip(grad_out.chunks_exact(oh * ow)).enumerate() {
        let c = i % g.cin;
        let k = &weight[c * taps..][..taps];
        for (oy, grow) in gop.chunks_exact(ow).enumerate() {
            gpad[oy * gw + lead..][..ow].copy_from_slice(grow);
        }
        for r in g.pad_top..g.pad_top + g.h {
            for p in 0..s {
                tap_list.clear();
                for ky in 0..g.kh {
                    let Some(dy) = r.checked_sub(ky) else { continue };
                    if dy % g.stride_h != 0 || dy / g.stride_h >= oh {
                        continue;
                    }
                    let oy = dy / g.stride_h;
                    for (t, kx) in (p..g.kw).step_by(s).enumerate() {
                        tap_list.push((oy * gw + lead - t, k[ky * g.kw + kx]));
                    }
                }
                let at = ph.row(r, p);
                correlate(&mut buf[at..at + ph.cols], 0.0, &gpad, &tap_list);
            }
        }
        ph.drain(&buf, g, gxp);
    }
    gx
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
