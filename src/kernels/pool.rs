//! Max pooling and adaptive average pooling, following PyTorch's conventions.

use core::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub ceil_mode: bool,
}

impl PoolGeom {
    pub fn out_h(&self) -> usize {
        pool_out_len(self.h, self.kh, self.stride_h, self.pad_h, self.ceil_mode)
    }

    pub fn out_w(&self) -> usize {
        pool_out_len(self.w, self.kw, self.stride_w, self.pad_w, self.ceil_mode)
    }
}

/// PyTorch's rule: floor or ceil of (len + 2p - k) / s, plus one; in ceil mode
/// the last window is dropped if it would start inside the right padding.
fn pool_out_len(len: usize, k: usize, s: usize, p: usize, ceil_mode: bool) -> usize {
    let span = len + 2 * p - k;
    let out = if ceil_mode { span.div_ceil(s) } else { span / s } + 1;
    if ceil_mode && (out - 1) * s >= len + p {
        out - 1
    } else {
        out
    }
}

/// Input indices covered by output `o` along one axis, clipped to the image
/// (padding never wins a max, and ceil_mode windows may overhang the edge).
fn window(o: usize, k: usize, s: usize, p: usize, len: usize) -> Range<usize> {
    let lo = (o * s).saturating_sub(p).min(len);
    let hi = (o * s + k).saturating_sub(p).min(len);
    lo..hi.max(lo)
}

/// Index (in the plane) and value of the window's maximum. Ties go to the first
/// element in row-major order and NaN wins, as in PyTorch's CPU kernel, so the
/// forward value and the backward routing always agree. None for an empty window.
fn window_max(plane: &[f32], w: usize, ys: Range<usize>, xs: Range<usize>) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for y in ys {
        for (i, &v) in plane[y * w..][xs.clone()].iter().enumerate() {
            if best.is_none_or(|(_, b)| v > b || v.is_nan()) {
                best = Some((y * w + xs.start + i, v));
            }
        }
    }
    best
}

/// Calls `f(plane_index, out_index, argmax_in_plane, max)` for every output of max pooling.
fn for_each_window_max(x: &[f32], g: &PoolGeom, mut f: impl FnMut(usize, usize, Option<(usize, f32)>)) {
    let (oh, ow, hw) = (g.out_h(), g.out_w(), g.h * g.w);
    for (p, plane) in x.chunks_exact(hw.max(1)).take(g.n * g.c).enumerate() {
        for oy in 0..oh {
            let ys = window(oy, g.kh, g.stride_h, g.pad_h, g.h);
            for ox in 0..ow {
                let xs = window(ox, g.kw, g.stride_w, g.pad_w, g.w);
                f(p, oy * ow + ox, window_max(plane, g.w, ys.clone(), xs));
            }
        }
    }
}

/// The max of two values where NaN wins, as PyTorch's kernel: a compare and a select, which
/// vectorises (`f32::max` ignores NaN and does not).
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if a > b || a.is_nan() {
        a
    } else {
        b
    }
}

/// Max pooling; padding acts as -inf. Returns (n, c, out_h, out_w).
///
/// The window max is separable: for each output row, the max over the window's input rows is taken
/// column by column (whole rows at once, so it vectorises), then each output is the max of its
/// columns in that row. The value is the same as a window search's; only the backward needs to know
/// *where* the max was, and it finds that itself (see [`max_pool2d_forward_argmax`]).
pub fn max_pool2d_forward(x: &[f32], g: &PoolGeom) -> Vec<f32> {
    debug_assert_eq!(x.len(), g.n * g.c * g.h * g.w);
    let (oh, ow, hw) = (g.out_h(), g.out_w(), g.h * g.w);
    let mut out = vec![f32::NEG_INFINITY; g.n * g.c * oh * ow];
    if hw == 0 {
        return out;
    }
    let cols: Vec<Range<usize>> = (0..ow).map(|ox| window(ox, g.kw, g.stride_w, g.pad_w, g.w)).collect();
    let four = four_windows(&cols, g);
    let mut column_max = vec![f32::NEG_INFINITY; g.w];
    for (plane, o) in x.chunks_exact(hw).zip(out.chunks_exact_mut(oh * ow)) {
        for (oy, orow) in o.chunks_exact_mut(ow).enumerate() {
            column_max.fill(f32::NEG_INFINITY);
            for y in window(oy, g.kh, g.stride_h, g.pad_h, g.h) {
                let row = &plane[y * g.w..][..g.w];
                column_max.iter_mut().zip(row).for_each(|(m, &v)| *m = nan_max(v, *m));
            }
            let mut ox = 0;
            while ox < ow {
                if four[ox] {
                    max4(&column_max[cols[ox].start..][..10], &mut orow[ox..ox + 4]);
                    ox += 4;
                    continue;
                }
                orow[ox] = column_max[cols[ox].clone()].iter().fold(f32::NEG_INFINITY, |m, &v| nan_max(v, m));
                ox += 1;
            }
        }
    }
    out
}

/// For each output column `ox`, whether the four 3x3 stride-2 windows from it can be taken at once
/// ([`max4`], [`argmax4`]): whole windows, every load inside the input row. Only in wasm, where
/// those are vectorised by hand.
fn four_windows(cols: &[Range<usize>], g: &PoolGeom) -> Vec<bool> {
    let ow = cols.len();
    let four = |ox: usize| {
        let c0 = cols[ox].start;
        cfg!(target_arch = "wasm32") && g.kw == 3 && g.stride_w == 2 && ox + 4 <= ow && c0 + 10 <= g.w && (0..4).all(|j| cols[ox + j] == (c0 + 2 * j..c0 + 2 * j + 3))
    };
    (0..ow).map(four).collect()
}

/// Columns c = 0, 1, 2 of four 3-wide stride-2 windows side by side in `row` (from the first
/// one's first column), lane j for window j: element 2j + c, the even and odd lanes of two loads.
#[cfg(target_arch = "wasm32")]
#[inline(always)]
fn window_columns(row: &[f32]) -> [core::arch::wasm32::v128; 3] {
    use core::arch::wasm32::*;
    assert!(row.len() >= 10);
    // SAFETY: `row` holds 10 floats; the loads read row[0..8] and row[2..10].
    let (lo, hi, lo2, hi2) = unsafe {
        let q = row.as_ptr();
        (v128_load(q as *const v128), v128_load(q.add(4) as *const v128), v128_load(q.add(2) as *const v128), v128_load(q.add(6) as *const v128))
    };
    [i32x4_shuffle::<0, 2, 4, 6>(lo, hi), i32x4_shuffle::<1, 3, 5, 7>(lo, hi), i32x4_shuffle::<0, 2, 4, 6>(lo2, hi2)]
}

/// The lanes where `v` takes over from `best` under the scalar rule: greater, or NaN.
#[cfg(target_arch = "wasm32")]
#[inline(always)]
fn takes_over(v: core::arch::wasm32::v128, best: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    v128_or(f32x4_gt(v, best), f32x4_ne(v, v))
}

/// The max of four 3-wide stride-2 windows of a row of column maxima, `cm` starting at the first
/// one's first column. Same fold as the scalar path (c = 0, 1, 2 in order, NaN wins), so the same
/// bits.
#[cfg(target_arch = "wasm32")]
fn max4(cm: &[f32], out: &mut [f32]) {
    use core::arch::wasm32::*;
    assert!(out.len() == 4);
    let [c0, c1, c2] = window_columns(cm);
    let m = v128_bitselect(c1, c0, takes_over(c1, c0));
    let m = v128_bitselect(c2, m, takes_over(c2, m));
    // SAFETY: `out` holds 4 floats.
    unsafe { v128_store(out.as_mut_ptr() as *mut v128, m) }
}

#[cfg(not(target_arch = "wasm32"))]
fn max4(_: &[f32], _: &mut [f32]) {
    unreachable!("only wasm32 takes four windows at once")
}

/// Routes each output gradient to the first maximal element of its window;
/// overlapping windows (kernel > stride) accumulate. Returns (n, c, h, w).
pub fn max_pool2d_input_grad(x: &[f32], grad_out: &[f32], g: &PoolGeom) -> Vec<f32> {
    debug_assert_eq!(x.len(), g.n * g.c * g.h * g.w);
    debug_assert_eq!(grad_out.len(), g.n * g.c * g.out_h() * g.out_w());
    let (plane, hw) = (g.out_h() * g.out_w(), g.h * g.w);
    let mut gx = vec![0.0; x.len()];
    for_each_window_max(x, g, |p, o, m| {
        if let Some((i, _)) = m {
            gx[p * hw + i] += grad_out[p * plane + o];
        }
    });
    gx
}

/// [`max_pool2d_forward`] that also returns, per output, the flat input index of its maximum
/// (u32::MAX for an empty window), so the backward needs no copy of the input.
pub fn max_pool2d_forward_argmax(x: &[f32], g: &PoolGeom) -> (Vec<f32>, Vec<u32>) {
    debug_assert_eq!(x.len(), g.n * g.c * g.h * g.w);
    let (oh, ow, hw) = (g.out_h(), g.out_w(), g.h * g.w);
    let mut out = vec![f32::NEG_INFINITY; g.n * g.c * oh * ow];
    let mut arg = vec![u32::MAX; out.len()];
    if hw == 0 {
        return (out, arg);
    }
    // The same rule as `window_max` (first maximum in row-major order, NaN wins), as one tight loop
    // per window (or, in wasm, per four windows) with the column windows computed once.
    let cols: Vec<Range<usize>> = (0..ow).map(|ox| window(ox, g.kw, g.stride_w, g.pad_w, g.w)).collect();
    let four = four_windows(&cols, g);
    let planes = x.chunks_exact(hw).zip(out.chunks_exact_mut(oh * ow).zip(arg.chunks_exact_mut(oh * ow)));
    for (p, (plane, (o, a))) in planes.enumerate() {
        for oy in 0..oh {
            let ys = window(oy, g.kh, g.stride_h, g.pad_h, g.h);
            let mut ox = 0;
            while ox < ow {
                if ys.len() == 3 && four[ox] {
                    let first = ys.start * g.w + cols[ox].start;
                    argmax4(&plane[first..][..2 * g.w + 10], g.w, (p * hw + first) as u32, &mut o[oy * ow + ox..][..4], &mut a[oy * ow + ox..][..4]);
                    ox += 4;
                    continue;
                }
                let xs = &cols[ox];
                // An empty window keeps -inf and no argmax.
                if !ys.is_empty() && !xs.is_empty() {
                    let (best, at) = argmax1(plane, g.w, &ys, xs);
                    o[oy * ow + ox] = best;
                    a[oy * ow + ox] = (p * hw + at) as u32;
                }
                ox += 1;
            }
        }
    }
    (out, arg)
}

/// Max and argmax (in the plane) of one non-empty window: the first maximum in row-major order, NaN
/// wins. Branch-free selects: on random data a compare-and-branch mispredicts half the time.
fn argmax1(plane: &[f32], w: usize, ys: &Range<usize>, xs: &Range<usize>) -> (f32, usize) {
    let first = ys.start * w + xs.start;
    let (mut best, mut at) = (plane[first], first);
    if ys.len() == 3 && xs.len() == 3 {
        // The common 3x3 window (ResNet's stem), written out: no loop bounds, no slice checks per
        // element. Same order, same rule.
        let win = &plane[first..][..2 * w + 3];
        for (r, c) in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)] {
            let i = r * w + c;
            let v = win[i];
            let take = v > best || v.is_nan();
            best = if take { v } else { best };
            at = if take { first + i } else { at };
        }
        return (best, at);
    }
    for y in ys.clone() {
        let row = &plane[y * w..][..w];
        for ix in xs.clone() {
            let v = row[ix];
            let take = v > best || v.is_nan();
            best = if take { v } else { best };
            at = if take { y * w + ix } else { at };
        }
    }
    (best, at)
}

/// Max and argmax of four 3x3 stride-2 windows side by side, `win` starting at the first one's
/// top-left element (flat index `base` in the input): the scalar loop's rule and order (row-major,
/// the first maximum, NaN wins), four windows per vector ([`window_columns`]).
#[cfg(target_arch = "wasm32")]
fn argmax4(win: &[f32], w: usize, base: u32, best_out: &mut [f32], at_out: &mut [u32]) {
    use core::arch::wasm32::*;
    assert!(win.len() >= 2 * w + 10 && best_out.len() == 4 && at_out.len() == 4);
    let (mut best, mut at) = (f32x4_splat(0.0), u32x4_splat(0));
    for r in 0..3 {
        for (c, v) in window_columns(&win[r * w..][..10]).into_iter().enumerate() {
            let offset = (r * w + c) as u32;
            let idx = u32x4_add(u32x4_splat(base + offset), u32x4(0, 2, 4, 6));
            if r == 0 && c == 0 {
                (best, at) = (v, idx);
                continue;
            }
            let take = takes_over(v, best);
            best = v128_bitselect(v, best, take);
            at = v128_bitselect(idx, at, take);
        }
    }
    best_out.copy_from_slice(&[f32x4_extract_lane::<0>(best), f32x4_extract_lane::<1>(best), f32x4_extract_lane::<2>(best), f32x4_extract_lane::<3>(best)]);
    at_out.copy_from_slice(&[u32x4_extract_lane::<0>(at), u32x4_extract_lane::<1>(at), u32x4_extract_lane::<2>(at), u32x4_extract_lane::<3>(at)]);
}

#[cfg(not(target_arch = "wasm32"))]
fn argmax4(_: &[f32], _: usize, _: u32, _: &mut [f32], _: &mut [u32]) {
    unreachable!("only wasm32 searches four windows at once")
}

/// [`max_pool2d_input_grad`] from the argmax of [`max_pool2d_forward_argmax`].
pub fn max_pool2d_input_grad_argmax(arg: &[u32], grad_out: &[f32], g: &PoolGeom) -> Vec<f32> {
    debug_assert_eq!(arg.len(), grad_out.len());
    let mut gx = vec![0.0; g.n * g.c * g.h * g.w];
    for (&i, &d) in arg.iter().zip(grad_out) {
        if let Some(v) = gx.get_mut(i as usize) {
            *v += d;
        }
    }
    gx
}

/// PyTorch's adaptive bin `i` of `out` over `len`: floor(i*len/out) .. ceil((i+1)*len/out).
fn bin(i: usize, len: usize, out: usize) -> Range<usize> {
    (i * len / out)..((i + 1) * len).div_ceil(out)
}

/// Average of each adaptive bin. x: (n, c, h, w); returns (n, c, out_h, out_w).
pub fn adaptive_avg_pool2d_forward(x: &[f32], n: usize, c: usize, h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    debug_assert_eq!(x.len(), n * c * h * w);
    let mut out = vec![0.0; n * c * out_h * out_w];
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return out;
    }
    for (plane, o) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(out_h * out_w)) {
        for oy in 0..out_h {
            let ys = bin(oy, h, out_h);
            for ox in 0..out_w {
                let xs = bin(ox, w, out_w);
                let sum: f32 = ys.clone().map(|y| plane[y * w..][xs.clone()].iter().sum::<f32>()).sum();
                o[oy * out_w + ox] = sum / (ys.len() * xs.len()) as f32;
            }
        }
    }
    out
}

/// Spreads each output gradient evenly over its bin (bins may overlap). Returns (n, c, h, w).
pub fn adaptive_avg_pool2d_input_grad(grad_out: &[f32], n: usize, c: usize, h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    debug_assert_eq!(grad_out.len(), n * c * out_h * out_w);
    let mut gx = vec![0.0; n * c * h * w];
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return gx;
    }
    for (plane, go) in gx.chunks_exact_mut(h * w).zip(grad_out.chunks_exact(out_h * out_w)) {
        for oy in 0..out_h {
            let ys = bin(oy, h, out_h);
            for ox in 0..out_w {
                let xs = bin(ox, w, out_w);
                let share = go[oy * out_w + ox] / (ys.len() * xs.len()) as f32;
                for y in ys.clone() {
                    plane[y * w..][xs.clone()].iter_mut().for_each(|v| *v += share);
                }
            }
        }
    }
    gx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, check_grad, Rng};

    #[allow(clippy::too_many_arguments)]
    fn pg(n: usize, c: usize, h: usize, w: usize, k: usize, s: usize, p: usize, ceil_mode: bool) -> PoolGeom {
        PoolGeom { n, c, h, w, kh: k, kw: k, stride_h: s, stride_w: s, pad_h: p, pad_w: p, ceil_mode }
    }

    /// Distinct values 0.05 apart in shuffled order: no ties, and a +-0.01
    /// nudge never changes which element is the maximum.
    fn distinct(len: usize, rng: &mut Rng) -> Vec<f32> {
        let mut v: Vec<f32> = (0..len).map(|i| i as f32 * 0.05 - 2.0).collect();
        for i in (1..len).rev() {
            v.swap(i, rng.below(i + 1));
        }
        v
    }

    /// Max over the unclipped window with explicit bounds checks.
    fn naive_max_pool(x: &[f32], g: &PoolGeom) -> Vec<f64> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut out = Vec::new();
        for p in 0..g.n * g.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut m = f64::NEG_INFINITY;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.stride_h + ky) as isize - g.pad_h as isize;
                            let ix = (ox * g.stride_w + kx) as isize - g.pad_w as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                m = m.max(x[(p * g.h + iy as usize) * g.w + ix as usize] as f64);
                            }
                        }
                    }
                    out.push(m);
                }
            }
        }
        out
    }

    #[test]
    fn pool_output_sizes_follow_pytorch() {
        assert_eq!(pg(1, 1, 224, 224, 2, 2, 0, false).out_h(), 112); // VGG
        assert_eq!(pg(1, 1, 112, 112, 3, 2, 1, false).out_h(), 56); // ResNet stem
        assert_eq!(pg(1, 1, 112, 112, 3, 2, 0, true).out_h(), 56); // GoogLeNet, ceil
        assert_eq!(pg(1, 1, 112, 112, 3, 2, 0, false).out_h(), 55);
        assert_eq!(pg(1, 1, 14, 14, 3, 2, 0, true).out_h(), 7);
        assert_eq!(pg(1, 1, 13, 13, 3, 2, 0, true).out_h(), 6);
        // ceil would give 8, but the last window would start in the padding.
        assert_eq!(pg(1, 1, 13, 13, 3, 2, 1, true).out_h(), 7);
        let g = PoolGeom { w: 9, kw: 2, stride_w: 1, pad_w: 0, ..pg(1, 1, 13, 13, 3, 2, 1, true) };
        assert_eq!((g.out_h(), g.out_w()), (7, 8));
    }

    #[test]
    fn max_pool_forward_matches_naive() {
        let mut rng = Rng::new(31);
        for g in [pg(2, 2, 13, 13, 3, 2, 0, true), pg(1, 3, 14, 11, 3, 2, 1, true), pg(1, 2, 8, 8, 2, 2, 0, false), pg(1, 1, 9, 9, 3, 2, 1, false)] {
            let x = rng.vec(g.n * g.c * g.h * g.w);
            assert_close("max pool", &max_pool2d_forward(&x, &g), &naive_max_pool(&x, &g), 0.0);
        }
    }

    #[test]
    fn max_pool_input_grad_matches_finite_differences() {
        let mut rng = Rng::new(32);
        for g in [pg(2, 2, 13, 13, 3, 2, 0, true), pg(1, 2, 13, 13, 3, 2, 1, true), pg(1, 2, 8, 8, 2, 2, 0, false)] {
            let x = distinct(g.n * g.c * g.h * g.w, &mut rng);
            let r = rng.vec(g.n * g.c * g.out_h() * g.out_w());
            let analytic = max_pool2d_input_grad(&x, &r, &g);
            check_grad("max pool", |x| max_pool2d_forward(x, &g), &x, &r, &analytic, &mut rng);
        }
    }

    #[test]
    fn argmax_variants_match_the_plain_ones() {
        let mut rng = Rng::new(33);
        for g in [pg(2, 2, 13, 13, 3, 2, 0, true), pg(1, 2, 13, 13, 3, 2, 1, true), pg(1, 3, 14, 11, 3, 2, 1, false), pg(1, 2, 8, 8, 2, 2, 0, false)] {
            let x = rng.vec(g.n * g.c * g.h * g.w);
            // Also with only five distinct values, so windows tie often.
            let ties: Vec<f32> = x.iter().map(|v| (v * 2.0).round()).collect();
            let r = rng.vec(g.n * g.c * g.out_h() * g.out_w());
            for x in [x, ties] {
                let (y, arg) = max_pool2d_forward_argmax(&x, &g);
                assert_eq!(y, max_pool2d_forward(&x, &g));
                assert_eq!(max_pool2d_input_grad_argmax(&arg, &r, &g), max_pool2d_input_grad(&x, &r, &g));
            }
        }
    }

    #[test]
    fn max_pool_ties_go_to_first_and_overlaps_accumulate() {
        // All equal: each 2x2 window routes its gradient to its top-left element.
        let g = pg(1, 1, 4, 4, 2, 2, 0, false);
        let gx = max_pool2d_input_grad(&[1.0; 16], &[1.0, 2.0, 3.0, 4.0], &g);
        let want = [1., 0., 2., 0., 0., 0., 0., 0., 3., 0., 4., 0., 0., 0., 0., 0.];
        assert_eq!(gx, want);
        // 5x5, kernel 3 stride 2: the centre is the max of all four windows.
        let g = pg(1, 1, 5, 5, 3, 2, 0, false);
        let mut x = [0.0f32; 25];
        x[12] = 1.0;
        let gx = max_pool2d_input_grad(&x, &[1.0, 2.0, 3.0, 4.0], &g);
        assert_eq!(gx[12], 10.0);
        // Elsewhere the windows tie at 0 and route to their first element.
        assert_eq!((gx[0], gx[2], gx[10]), (0.0, 0.0, 0.0));
        assert_eq!(gx.iter().sum::<f32>(), 10.0);
    }

    #[test]
    fn max_pool_nan_wins_in_value_and_route() {
        // 4x4, kernel 2 stride 2: a NaN anywhere in a window is that window's max (PyTorch's rule),
        // whether it comes before or after larger values in the window.
        let g = pg(1, 1, 4, 4, 2, 2, 0, false);
        let mut x: Vec<f32> = (0..16).map(|i| i as f32).collect();
        x[0] = f32::NAN; // window 0, first element
        x[7] = f32::NAN; // window 1, last element
        let y = max_pool2d_forward(&x, &g);
        assert!(y[0].is_nan() && y[1].is_nan());
        assert_eq!((y[2], y[3]), (13.0, 15.0));
        let (ya, arg) = max_pool2d_forward_argmax(&x, &g);
        assert!(ya[0].is_nan() && ya[1].is_nan());
        assert_eq!(arg, vec![0, 7, 13, 15]);
    }

    #[test]
    fn adaptive_avg_pool_bins_follow_pytorch() {
        assert_eq!((0..3).map(|i| bin(i, 7, 3)).collect::<Vec<_>>(), vec![0..3, 2..5, 4..7]);
        assert_eq!(bin(0, 7, 1), 0..7);
        let x: Vec<f32> = (0..7).map(|v| v as f32).collect(); // one row of 0..6
        assert_eq!(adaptive_avg_pool2d_forward(&x, 1, 1, 1, 7, 1, 3), vec![1.0, 3.0, 5.0]);
        // Upsampling (out > in) repeats values.
        assert_eq!(adaptive_avg_pool2d_forward(&[1.0, 2.0], 1, 1, 1, 2, 1, 4), vec![1.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn adaptive_avg_pool_input_grad_matches_finite_differences() {
        let mut rng = Rng::new(33);
        for (n, c, h, w, oh, ow) in [(2, 3, 7, 7, 3, 3), (1, 4, 7, 7, 1, 1), (1, 2, 6, 9, 4, 5)] {
            let x = rng.vec(n * c * h * w);
            let r = rng.vec(n * c * oh * ow);
            let analytic = adaptive_avg_pool2d_input_grad(&r, n, c, h, w, oh, ow);
            let f = |x: &[f32]| adaptive_avg_pool2d_forward(x, n, c, h, w, oh, ow);
            check_grad("adaptive avg pool", f, &x, &r, &analytic, &mut rng);
        }
    }
}

/// One output's window along an axis of average pooling: the input indices it covers, and its
/// length counting padding (PyTorch clips a ceil-mode window to the padded extent, not beyond).
fn avg_window(o: usize, k: usize, s: usize, p: usize, len: usize) -> (Range<usize>, usize) {
    let start = (o * s) as isize - p as isize;
    let end = (start + k as isize).min((len + p) as isize);
    let padded = (end - start).max(0) as usize;
    let lo = start.clamp(0, len as isize) as usize;
    let hi = end.clamp(0, len as isize) as usize;
    (lo..hi.max(lo), padded)
}

/// Calls `f(plane_index, out_index, rows, cols, 1 / divisor)` for every output of average pooling.
fn for_each_avg_window(g: &PoolGeom, count_include_pad: bool, mut f: impl FnMut(usize, usize, Range<usize>, Range<usize>, f32)) {
    let (oh, ow) = (g.out_h(), g.out_w());
    for p in 0..g.n * g.c {
        for oy in 0..oh {
            let (ys, ph) = avg_window(oy, g.kh, g.stride_h, g.pad_h, g.h);
            for ox in 0..ow {
                let (xs, pw) = avg_window(ox, g.kw, g.stride_w, g.pad_w, g.w);
                let count = if count_include_pad { ph * pw } else { ys.len() * xs.len() };
                let inv = if count == 0 { 0.0 } else { 1.0 / count as f32 };
                f(p, oy * ow + ox, ys.clone(), xs, inv);
            }
        }
    }
}

/// Average pooling (PyTorch's `AvgPool2d`, ONNX's `AveragePool`). Returns (n, c, out_h, out_w).
pub fn avg_pool2d_forward(x: &[f32], g: &PoolGeom, count_include_pad: bool) -> Vec<f32> {
    let (hw, ohw) = (g.h * g.w, g.out_h() * g.out_w());
    let mut out = vec![0.0; g.n * g.c * ohw];
    for_each_avg_window(g, count_include_pad, |p, o, ys, xs, inv| {
        let plane = &x[p * hw..(p + 1) * hw];
        let sum: f32 = ys.map(|y| plane[y * g.w..][xs.clone()].iter().sum::<f32>()).sum();
        out[p * ohw + o] = sum * inv;
    });
    out
}

/// Spreads each output gradient over its window, divided as in the forward. Returns (n, c, h, w).
pub fn avg_pool2d_input_grad(grad_out: &[f32], g: &PoolGeom, count_include_pad: bool) -> Vec<f32> {
    let (hw, ohw) = (g.h * g.w, g.out_h() * g.out_w());
    let mut gx = vec![0.0; g.n * g.c * hw];
    for_each_avg_window(g, count_include_pad, |p, o, ys, xs, inv| {
        let share = grad_out[p * ohw + o] * inv;
        let plane = &mut gx[p * hw..(p + 1) * hw];
        for y in ys {
            plane[y * g.w..][xs.clone()].iter_mut().for_each(|v| *v += share);
        }
    });
    gx
}

#[cfg(test)]
mod avg_tests {
    use super::*;

    fn geom(h: usize, w: usize, k: usize, s: usize, p: usize, ceil_mode: bool) -> PoolGeom {
        PoolGeom { n: 1, c: 1, h, w, kh: k, kw: k, stride_h: s, stride_w: s, pad_h: p, pad_w: p, ceil_mode }
    }

    #[test]
    fn avg_pool_divisors_follow_pytorch() {
        // 3x3 input 1..9, 3x3 kernel, stride 1, pad 1 (Inception v3's branch pool).
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let g = geom(3, 3, 3, 1, 1, false);
        // Corner: (1 + 2 + 4 + 5) / 9 with padding counted, / 4 without.
        assert_eq!(avg_pool2d_forward(&x, &g, true)[0], 12.0 / 9.0);
        assert_eq!(avg_pool2d_forward(&x, &g, false)[0], 3.0);
        assert_eq!(avg_pool2d_forward(&x, &g, true)[4], 5.0);
        // ceil mode, 2x2 stride 2 on 3x3: the last window overhangs and divides by what it covers.
        let g = geom(3, 3, 2, 2, 0, true);
        assert_eq!(avg_pool2d_forward(&x, &g, true), vec![3.0, 4.5, 7.5, 9.0]);
    }

    #[test]
    fn avg_pool_backward_is_the_adjoint() {
        let g = PoolGeom { n: 2, c: 3, h: 7, w: 6, kh: 3, kw: 2, stride_h: 2, stride_w: 1, pad_h: 1, pad_w: 1, ceil_mode: true };
        let x: Vec<f32> = (0..2 * 3 * 42).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.25).collect();
        for include in [true, false] {
            let y = avg_pool2d_forward(&x, &g, include);
            let r: Vec<f32> = (0..y.len()).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.5).collect();
            let gx = avg_pool2d_input_grad(&r, &g, include);
            let lhs: f64 = y.iter().zip(&r).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
            let rhs: f64 = x.iter().zip(&gx).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
            assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "<Ax, r> {lhs} != <x, A^T r> {rhs}");
        }
    }
}
