//! Direct depthwise convolution (groups == cin == cout, one filter per channel).
//!
//! im2col would copy each pixel kh*kw times to do one multiply-add per copy, so these kernels work
//! on the planes directly, vectorised across 4 channels rather than along a row: a row-wise vector
//! wastes most of its lanes on EfficientNet's 14x14 and 7x7 planes. Each block of 4 channel
//! planes is copied once (4x4 transposes) into a zero-padded, pixel-interleaved buffer
//! (`[rows][cols][4]`), so that every tap of every output pixel is one vector load times one
//! vector of 4 weights, for any plane size, stride and padding. [`correlate4`] sums all taps of
//! 8 neighbouring output pixels in registers, and the result goes back to planes the same way.
//! The input gradient is the same correlation over a zero-padded copy of the output gradient with
//! the taps mirrored, one stride phase of the input at a time (see [`input_grad`]).

use super::activation::{Clamp, ReluGate};
use super::conv::Conv2dGeom;
use core::mem::MaybeUninit;

/// 4 lanes of f32: a simd128 vector on wasm32, a plain array (which autovectorises) elsewhere.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    use core::arch::wasm32::*;
    pub type V = v128;

    #[inline(always)]
    pub fn splat(a: [f32; 4]) -> V {
        f32x4(a[0], a[1], a[2], a[3])
    }

    /// # Safety
    /// `p..p + 4` must be readable.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> V {
        v128_load(p as *const v128)
    }

    /// # Safety
    /// `p..p + 4` must be writable.
    #[inline(always)]
    pub unsafe fn store(p: *mut f32, v: V) {
        v128_store(p as *mut v128, v)
    }

    #[inline(always)]
    pub fn mul_add(acc: V, a: V, b: V) -> V {
        crate::kernels::madd(a, b, acc)
    }

    /// 4x4 transpose: vector i lane j <-> vector j lane i.
    #[inline(always)]
    pub fn transpose(r: [V; 4]) -> [V; 4] {
        let t0 = i32x4_shuffle::<0, 4, 1, 5>(r[0], r[1]);
        let t1 = i32x4_shuffle::<0, 4, 1, 5>(r[2], r[3]);
        let t2 = i32x4_shuffle::<2, 6, 3, 7>(r[0], r[1]);
        let t3 = i32x4_shuffle::<2, 6, 3, 7>(r[2], r[3]);
        [i32x4_shuffle::<0, 1, 4, 5>(t0, t1), i32x4_shuffle::<2, 3, 6, 7>(t0, t1), i32x4_shuffle::<0, 1, 4, 5>(t2, t3), i32x4_shuffle::<2, 3, 6, 7>(t2, t3)]
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    pub type V = [f32; 4];

    #[inline(always)]
    pub fn splat(a: [f32; 4]) -> V {
        a
    }

    /// # Safety
    /// `p..p + 4` must be readable.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> V {
        (p as *const V).read_unaligned()
    }

    /// # Safety
    /// `p..p + 4` must be writable.
    #[inline(always)]
    pub unsafe fn store(p: *mut f32, v: V) {
        (p as *mut V).write_unaligned(v)
    }

    #[inline(always)]
    pub fn mul_add(acc: V, a: V, b: V) -> V {
        core::array::from_fn(|l| acc[l] + a[l] * b[l])
    }

    #[inline(always)]
    pub fn transpose(r: [V; 4]) -> [V; 4] {
        core::array::from_fn(|i| core::array::from_fn(|j| r[j][i]))
    }
}

/// Pixels `(a, b)` of a pixel-interleaved buffer (4 floats per pixel, one per channel of a block)
/// at pixel index `base + a * row + b * col`.
#[derive(Clone, Copy)]
struct Grid {
    base: usize,
    row: usize,
    col: usize,
}

impl Grid {
    fn at(&self, a: usize, b: usize) -> usize {
        self.base + a * self.row + b * self.col
    }
}

/// Output pixels per register block of [`correlate4`].
const PIXELS: usize = 8;

/// The taps of one correlation, by kernel rows: tap `i < k` of row `r` reads input pixel
/// `rows[r] + i` (relative to the output's input pixel) with weight `wts[r * k + i]`, which is
/// tap `kernel[r * k + i]` of the channels' filters.
#[derive(Clone)]
struct Taps {
    rows: Vec<usize>,
    k: usize,
    kernel: Vec<usize>,
    wts: Vec<[f32; 4]>,
}

impl Taps {
    fn new(mut rows: Vec<usize>, k: usize, kernel: Vec<usize>) -> Taps {
        if k == 0 {
            rows.clear(); // no taps at all (a stride larger than the kernel)
        }
        assert_eq!(rows.len() * k, kernel.len());
        let wts = vec![[0.0; 4]; kernel.len()];
        Taps { rows, k, kernel, wts }
    }

    /// Loads the weights of channels `c0..c0 + m` (zero in unused lanes); `taps` per filter.
    fn set_weights(&mut self, weight: &[f32], taps: usize, c0: usize, m: usize) {
        for (w, &t) in self.wts.iter_mut().zip(&self.kernel) {
            *w = core::array::from_fn(|l| if l < m { weight[(c0 + l) * taps + t] } else { 0.0 });
        }
    }
}

/// For `a < rows`, `b < cols`, all 4 lanes: `out[og(a, b)] = init + sum_t w_t * inp[ig(a, b) + off_t]`.
/// Every output pixel is one vector and every tap one multiply-add of vectors, so no lane is
/// wasted however small the plane; [`PIXELS`] neighbouring outputs share each weight load.
fn correlate4(out: &mut [f32], og: Grid, inp: &[f32], ig: Grid, dims: (usize, usize), taps: &Taps, init: [f32; 4]) {
    let (rows, cols) = dims;
    if rows == 0 || cols == 0 {
        return;
    }
    // The largest pixel indices addressed below: these asserts make the unchecked accesses sound.
    let max_off = taps.rows.iter().map(|r| r + taps.k.max(1) - 1).max().unwrap_or(0);
    assert!((ig.at(rows - 1, cols - 1) + max_off + 1) * 4 <= inp.len(), "correlate4: input too small");
    assert!((og.at(rows - 1, cols - 1) + 1) * 4 <= out.len(), "correlate4: output too small");
    assert_eq!(taps.rows.len() * taps.k, taps.wts.len());
    // Row lengths and input steps known at compile time let the taps of a row unroll and share
    // the loads of pixels that several outputs of a block read.
    let args = (out, og, inp, ig, dims, taps, init);
    match (taps.k, ig.col) {
        (1, 1) => fixed::<1, 1>(args),
        (2, 1) => fixed::<2, 1>(args),
        (3, 1) => fixed::<3, 1>(args),
        (5, 1) => fixed::<5, 1>(args),
        (3, 2) => fixed::<3, 2>(args),
        (5, 2) => fixed::<5, 2>(args),
        (k, s) => each_block(args, k, s),
    }
}

type Args<'a> = (&'a mut [f32], Grid, &'a [f32], Grid, (usize, usize), &'a Taps, [f32; 4]);

fn fixed<const K: usize, const S: usize>(args: Args) {
    each_block(args, K, S)
}

/// The body of [`correlate4`] for `k` taps per row and input step `s` (= `ig.col`).
#[inline(always)]
fn each_block((out, og, inp, ig, (rows, cols), taps, init): Args, k: usize, s: usize) {
    for a in 0..rows {
        let mut b = 0;
        while b + PIXELS <= cols {
            block::<PIXELS>(out, og, inp, ig.at(a, b), taps, init, k, s, og.at(a, b));
            b += PIXELS;
        }
        // The rest of the row in one block too: 7x7 planes are one block a row, 14x14 ones 8 + 6.
        let (i0, o0) = (ig.at(a, b), og.at(a, b));
        match cols - b {
            0 => {}
            1 => block::<1>(out, og, inp, i0, taps, init, k, s, o0),
            2 => block::<2>(out, og, inp, i0, taps, init, k, s, o0),
            3 => block::<3>(out, og, inp, i0, taps, init, k, s, o0),
            4 => block::<4>(out, og, inp, i0, taps, init, k, s, o0),
            5 => block::<5>(out, og, inp, i0, taps, init, k, s, o0),
            6 => block::<6>(out, og, inp, i0, taps, init, k, s, o0),
            _ => block::<7>(out, og, inp, i0, taps, init, k, s, o0),
        }
    }
}

/// `N` neighbouring outputs of [`correlate4`], from input pixel `i0` on, to output pixel `o0` on,
/// accumulated in `N` vectors.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<const N: usize>(out: &mut [f32], og: Grid, inp: &[f32], i0: usize, taps: &Taps, init: [f32; 4], k: usize, s: usize, o0: usize) {
    let mut acc = [lanes::splat(init); N];
    let at = inp.as_ptr();
    for (&row, w) in taps.rows.iter().zip(taps.wts.chunks_exact(k.max(1))) {
        for (i, w) in w.iter().enumerate() {
            let w = lanes::splat(*w);
            for (j, acc) in acc.iter_mut().enumerate() {
                // SAFETY: pixel i0 + row + i + j * s lies inside `inp` (asserted by `correlate4`).
                *acc = lanes::mul_add(*acc, w, unsafe { lanes::load(at.add((i0 + row + i + j * s) * 4)) });
            }
        }
    }
    let at = out.as_mut_ptr();
    for (j, acc) in acc.into_iter().enumerate() {
        // SAFETY: pixel o0 + j * og.col lies inside `out` (asserted by `correlate4`).
        unsafe { lanes::store(at.add((o0 + j * og.col) * 4), acc) };
    }
}

/// Copies `m <= 4` planes (h x w each, consecutive in `planes`) into lanes `0..m` of the
/// pixel-interleaved `dst`, plane pixel (y, x) to pixel `base + y * stride + x`. Lanes `m..4`
/// keep what they held: they only ever feed lanes that are discarded.
fn interleave(planes: &[f32], m: usize, (h, w): (usize, usize), dst: &mut [f32], base: usize, stride: usize) {
    let hw = h * w;
    if hw == 0 {
        return;
    }
    assert!(planes.len() >= m * hw && dst.len() >= (base + (h - 1) * stride + w) * 4 && stride >= w);
    for y in 0..h {
        let row = (base + y * stride) * 4;
        if m < 4 || w < 4 {
            for x in 0..w {
                for l in 0..m {
                    dst[row + x * 4 + l] = planes[l * hw + y * w + x];
                }
            }
            continue;
        }
        for x in chunks4(w) {
            // SAFETY: the 4 planes hold pixels (y, x..x + 4) and `dst` pixels row/4 + x..x + 4
            // (asserted above).
            unsafe { transpose4(planes.as_ptr().add(y * w + x), hw, dst.as_mut_ptr().add(row + x * 4), 4) };
        }
    }
}

/// Copies lanes `0..m` of the pixel-interleaved `src` (h x w pixels, rows w apart) into `m`
/// consecutive planes: the inverse of [`interleave`] with no padding.
fn deinterleave(src: &[f32], m: usize, (h, w): (usize, usize), planes: &mut [f32]) {
    let hw = h * w;
    assert!(src.len() >= hw * 4 && planes.len() >= m * hw);
    if m < 4 || w < 4 {
        for (i, p) in src[..hw * 4].chunks_exact(4).enumerate() {
            for (l, v) in p[..m].iter().enumerate() {
                planes[l * hw + i] = *v;
            }
        }
        return;
    }
    for y in 0..h {
        for x in chunks4(w) {
            // SAFETY: in bounds as asserted above.
            unsafe { transpose4(src.as_ptr().add((y * w + x) * 4), 4, planes.as_mut_ptr().add(y * w + x), hw) };
        }
    }
}

/// Starts of 4-wide chunks covering `0..w` (w >= 4). The last chunk may overlap the one before it
/// (rewriting the same values), which beats a scalar tail on 7- and 14-wide rows.
fn chunks4(w: usize) -> impl Iterator<Item = usize> {
    (0..w).step_by(4).map(move |x| x.min(w - 4))
}

/// Reads 4 vectors `src + i * src_step` and writes their transpose to `dst + i * dst_step`.
///
/// # Safety
/// Those 8 runs of 4 floats must be in bounds, and the destination ones must not overlap the sources.
#[inline(always)]
unsafe fn transpose4(src: *const f32, src_step: usize, dst: *mut f32, dst_step: usize) {
    let r = core::array::from_fn(|i| lanes::load(src.add(i * src_step)));
    for (i, v) in lanes::transpose(r).into_iter().enumerate() {
        lanes::store(dst.add(i * dst_step), v);
    }
}

/// Depthwise forward; called by `conv2d_forward` when `g.is_depthwise()`.
///
/// Each block of 4 planes is copied once into a zero-padded pixel-interleaved buffer, correlated by
/// [`correlate4`] (any stride: the input grid just steps `stride` pixels) and copied back to planes.
/// A ReLU `act` is applied to each block's outputs before they go back to planes, while they are in L1.
pub(crate) fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Conv2dGeom, act: Option<Clamp>) -> Vec<f32> {
    let (oh, ow, hw, ntaps) = (g.out_h(), g.out_w(), g.h * g.w, g.kh * g.kw);
    if oh * ow == 0 || hw == 0 || ntaps == 0 {
        return vec![0.0; g.n * g.cout * oh * ow];
    }
    let mut out = super::fresh(g.n * g.cout * oh * ow);
    let (ph, pw) = (g.h + g.pad_top + g.pad_bottom, g.w + g.pad_left + g.pad_right);
    let (ig, og) = (Grid { base: 0, row: g.stride_h * pw, col: g.stride_w }, Grid { base: 0, row: ow, col: 1 });
    let work = ph * pw * 4 + oh * ow * 4 * ntaps;
    for_each_part_of_blocks(&mut out, oh * ow, (g.n, g.cin), work, |blocks, planes| {
        // The padding is never written, so it stays zero across blocks.
        let mut buf = vec![0.0; ph * pw * 4];
        let mut obuf = vec![0.0; oh * ow * 4];
        let mut taps = Taps::new((0..g.kh).map(|ky| ky * pw).collect(), g.kw, (0..ntaps).collect());
        for &Block { plane0, c0, m, at } in blocks {
            interleave(&x[plane0 * hw..][..m * hw], m, (g.h, g.w), &mut buf, g.pad_top * pw + g.pad_left, pw);
            taps.set_weights(weight, ntaps, c0, m);
            let init = core::array::from_fn(|l| bias.map_or(0.0, |b| if l < m { b[c0 + l] } else { 0.0 }));
            correlate4(&mut obuf, og, &buf, ig, (oh, ow), &taps, init);
            if let Some(act) = act {
                super::activation::clamp_slice(&mut obuf, act);
            }
            deinterleave(&obuf, m, (oh, ow), super::zeroed(&mut planes[at * oh * ow..][..m * oh * ow]));
        }
    });
    // SAFETY: the parts' blocks cover every plane, and each block's planes were written.
    unsafe { super::written(out) }
}

/// A block of up to 4 channel planes: its first plane in the tensor, its first channel, its
/// channel count, and its first plane in the part's slice.
#[derive(Clone, Copy)]
struct Block {
    plane0: usize,
    c0: usize,
    m: usize,
    at: usize,
}

/// Splits the blocks of 4 planes of an (n, c, plane_len) tensor into parts of whole blocks and runs
/// `f(blocks, planes)` on each, the parts spread over the thread pool ([`super::parallel`]); `work`
/// estimates one block's multiply-adds.
fn for_each_part_of_blocks(tensor: &mut [MaybeUninit<f32>], plane_len: usize, (n, c): (usize, usize), work: usize, f: impl Fn(&[Block], &mut [MaybeUninit<f32>]) + Sync) {
    let all: Vec<(usize, usize, usize)> = (0..n).flat_map(|img| (0..c).step_by(4).map(move |c0| (img * c + c0, c0, (c - c0).min(4)))).collect();
    let parts = super::parallel::parts(all.len(), work);
    let mut jobs = Vec::with_capacity(parts);
    let mut rest = tensor;
    for r in super::parallel::ranges(all.len(), parts, 1) {
        let first = all.get(r.start).map_or(0, |b| b.0);
        let blocks: Vec<Block> = all[r.clone()].iter().map(|&(plane0, c0, m)| Block { plane0, c0, m, at: plane0 - first }).collect();
        let planes = blocks.last().map_or(0, |b| b.at + b.m);
        let (mine, tail) = rest.split_at_mut(planes * plane_len);
        jobs.push((blocks, mine));
        rest = tail;
    }
    super::parallel::for_each(jobs, |_, (blocks, planes)| f(&blocks, planes));
}

/// Depthwise input gradient; called by `conv2d_input_grad` when `g.is_depthwise()`.
///
/// Input pixel (y, x) = (sh * a + py, sw * b + px) receives k[ky, kx] * go[oy, ox] for every tap
/// with y + pad_top = oy * sh + ky, i.e. oy = a + (py + pad_top - ky) / sh where that divides.
/// So each of the sh x sw phases (py, px) of the input gradient is a stride-1 correlation of the
/// output gradient (copied, zero-padded by `lead` rows/columns, into a pixel-interleaved buffer)
/// with the taps of that phase, which [`correlate4`] writes onto the phase's pixels of an
/// interleaved buffer that then goes back to planes.
/// A ReLU's backward `gate` (of a ReLU fused after this conv) is applied to each block's planes of
/// `grad_out` as they are read.
pub(crate) fn input_grad(grad_out: &[f32], weight: &[f32], g: &Conv2dGeom, gate: Option<ReluGate>) -> Vec<f32> {
    let (oh, ow, hw, ntaps) = (g.out_h(), g.out_w(), g.h * g.w, g.kh * g.kw);
    if oh * ow == 0 || hw == 0 || ntaps == 0 {
        return vec![0.0; g.n * g.cin * hw];
    }
    let (sh, sw) = (g.stride_h, g.stride_w);
    // Leading zero rows/columns so that every tap's output row/column is >= 0, and enough
    // trailing ones that every tap of every input pixel stays inside its row.
    let (lead_y, lead_x) = ((g.kh - 1).saturating_sub(g.pad_top).div_ceil(sh), (g.kw - 1).saturating_sub(g.pad_left).div_ceil(sw));
    let gh = lead_y + oh.max((g.h - 1 + g.pad_top) / sh + 1);
    let gw = lead_x + ow.max((g.w - 1 + g.pad_left) / sw + 1);
    // (output grid, rows, cols, taps) of each phase.
    let mut phases = Vec::with_capacity(sh * sw);
    for py in 0..sh.min(g.h) {
        for px in 0..sw.min(g.w) {
            let (y, x) = (py + g.pad_top, px + g.pad_left);
            // Taps with ky = y (mod sh) read output row a + (y - ky) / sh, i.e. buffer row
            // a + lead_y + y / sh - ky / sh (>= a by the choice of lead_y); columns likewise, so
            // the taps of a kernel row read consecutive pixels, the last kx first.
            let kys: Vec<usize> = (0..g.kh).filter(|ky| ky % sh == y % sh).collect();
            let kxs: Vec<usize> = (0..g.kw).rev().filter(|kx| kx % sw == x % sw).collect();
            let first = kxs.first().map_or(0, |kx| lead_x + x / sw - kx / sw);
            let rows = kys.iter().map(|ky| (lead_y + y / sh - ky / sh) * gw + first).collect();
            let kernel = kys.iter().flat_map(|ky| kxs.iter().map(move |kx| ky * g.kw + kx)).collect();
            let taps = Taps::new(rows, kxs.len(), kernel);
            let og = Grid { base: py * g.w + px, row: sh * g.w, col: sw };
            phases.push((og, (g.h - py).div_ceil(sh), (g.w - px).div_ceil(sw), taps));
        }
    }
    let ig = Grid { base: 0, row: gw, col: 1 };
    let work = gh * gw * 4 + hw * 4 * ntaps;
    let mut gx = super::fresh(g.n * g.cin * hw);
    for_each_part_of_blocks(&mut gx, hw, (g.n, g.cin), work, |blocks, planes| {
        let (mut buf, mut xbuf, mut phases) = (vec![0.0; gh * gw * 4], vec![0.0; hw * 4], phases.clone());
        let mut gated = Vec::new();
        for &Block { plane0, c0, m, at } in blocks {
            let (first, len) = (plane0 * oh * ow, m * oh * ow);
            let src = match gate {
                Some(gate) => {
                    gated.resize(len, 0.0);
                    gate.apply(first, &grad_out[first..][..len], &mut gated);
                    &gated[..]
                }
                None => &grad_out[first..][..len],
            };
            interleave(src, m, (oh, ow), &mut buf, lead_y * gw + lead_x, gw);
            for (og, rows, cols, taps) in &mut phases {
                taps.set_weights(weight, ntaps, c0, m);
                correlate4(&mut xbuf, *og, &buf, ig, (*rows, *cols), taps, [0.0; 4]);
            }
            deinterleave(&xbuf, m, (g.h, g.w), super::zeroed(&mut planes[at * hw..][..m * hw]));
        }
    });
    // SAFETY: the parts' blocks cover every plane, and each block's planes were written.
    unsafe { super::written(gx) }
}

#[cfg(test)]
mod tests {
    use crate::kernels::conv::tests::{check_adjoint, check_forward, check_input_grad, geom, Case};
    use crate::kernels::testutil::Rng;

    fn cases() -> Vec<Case> {
        let case = |name, g| Case { name, g, budget: usize::MAX };
        vec![
            case("dw 3x3 s1 p1", geom((2, 4, 9, 8, 4), (3, 3), (1, 1), (1, 1, 1, 1), 4)),
            case("dw 3x3 s2 pad t0 b1 l0 r1", geom((1, 4, 8, 10, 4), (3, 3), (2, 2), (0, 1, 0, 1), 4)),
            case("dw 5x5 s1 p2", geom((1, 3, 9, 9, 3), (5, 5), (1, 1), (2, 2, 2, 2), 3)),
            case("dw 5x5 s2 SAME", geom((2, 3, 10, 11, 3), (5, 5), (2, 2), (1, 2, 2, 2), 3)),
            case("dw 3x5 s1x2 non-square", geom((1, 2, 7, 13, 2), (3, 5), (1, 2), (0, 2, 1, 2), 2)),
            case("dw 7x7 p3 on 3x3 (taps off both edges)", geom((1, 2, 3, 3, 2), (7, 7), (1, 1), (3, 3, 3, 3), 2)),
            // EfficientNet-Lite0's small planes, with channel counts that leave a partial block of 4.
            case("dw 3x3 s1 p1 14x14, 6 channels", geom((1, 6, 14, 14, 6), (3, 3), (1, 1), (1, 1, 1, 1), 6)),
            case("dw 5x5 s1 p2 7x7, batch 2, 9 channels", geom((2, 9, 7, 7, 9), (5, 5), (1, 1), (2, 2, 2, 2), 9)),
            case("dw 5x5 s2 SAME 14 -> 7, 5 channels", geom((1, 5, 14, 14, 5), (5, 5), (2, 2), (1, 2, 1, 2), 5)),
            case("dw 3x3 s2 SAME 28 -> 14, 7 channels", geom((1, 7, 28, 28, 7), (3, 3), (2, 2), (0, 1, 0, 1), 7)),
            case("dw 3x3 s1 13x11 pad t0 b2 l2 r0", geom((1, 4, 13, 11, 4), (3, 3), (1, 1), (0, 2, 2, 0), 4)),
            case("dw 3x3 s3 pad t1 b1 l0 r2", geom((1, 5, 11, 10, 5), (3, 3), (3, 3), (1, 1, 0, 2), 5)),
            case("dw 2x2 s1, bottom/left pad >= kernel", geom((1, 4, 4, 5, 4), (2, 2), (1, 1), (0, 3, 3, 0), 4)),
            case("dw 2x2 s3 (phases without taps)", geom((1, 4, 8, 7, 4), (2, 2), (3, 3), (0, 1, 1, 0), 4)),
            case("dw 1x1 s2", geom((1, 5, 7, 6, 5), (1, 1), (2, 2), (0, 0, 0, 0), 5)),
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
