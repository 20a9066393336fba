//! 3x3 stride-1 convolutions by Winograd's minimal filtering, F(m x m, 3 x 3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", arXiv 1509.09308).
//!
//! Why: ResNet-18 and VGG spend most of their time in 3x3 stride-1 convs, forward and (for the
//! guided methods) backward to the input, and one wasm thread already runs the plain im2col GEMM
//! near its peak. Winograd does the same sums with fewer multiplications: each m x m block of
//! outputs ("tile") reads an (m+2) x (m+2) input patch; in the transformed domain a conv becomes
//! (m+2)^2 independent channel products, `M[xi] = U[xi] * V[xi]` (U: transformed weights, cout x
//! cin; V: transformed patches, cin x tiles), one GEMM each, and an inverse transform turns M back
//! into outputs. F(2x2) does 16 products per 4 outputs (2.25x fewer than 36), F(4x4) 36 per 16 (4x
//! fewer) at the price of larger transforms and slightly larger rounding errors.
//!
//! Every transform is written as whole-row combinations (`dst = sum_k c_k * src_k` over contiguous
//! rows), so LLVM vectorises them with simd128. The transformed weights may be kept with the model
//! ([`Kept`]), one copy for both directions.
//!
//! The input gradient of a stride-1 3x3 conv is itself a 3x3 stride-1 conv of the output gradient
//! with the kernels rotated and cin/cout swapped, so it runs through the same code, with the
//! variant's mirror image ([`Variant`]).

use super::{matmul, Conv2dGeom, MatRef};
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// One F(m x m, 3 x 3) algorithm: tiles of `m` outputs per side read `alpha = m + 2` inputs per side.
/// The matrices are row-major: `bt` (alpha x alpha) transforms inputs, `g` (alpha x 3) kernels,
/// `at` (m x alpha) takes products back to outputs.
///
/// Each variant has a mirror image ([`Variant::mirrored`]): `bt` with its columns reversed, `g`
/// with its columns reversed, `at` with its rows reversed. It computes the same correlation on
/// reversed data, so run on a kernel rotated by 180 degrees it multiplies by the same transformed
/// weights `G w G^T` as the variant does on `w`. An input gradient is the correlation of the output
/// gradient with the rotated kernels, so it reads the forward's U through the mirror image: no
/// flipped copy, and one kept U serves both directions.
#[derive(Debug)]
pub(crate) struct Variant {
    pub m: usize,
    pub alpha: usize,
    bt: &'static [f32],
    g: &'static [f32],
    at: &'static [f32],
}

impl Variant {
    /// The mirror image that input gradients run (see [`Variant`]).
    fn mirrored(&self) -> &'static Variant {
        match self.m {
            2 => &F2_MIRRORED,
            4 => &F4_MIRRORED,
            _ => unreachable!("F(2x2) and F(4x4) only"),
        }
    }
}

/// `m` (row-major, `cols` columns) with each row's columns in reverse order.
const fn reverse_columns<const N: usize>(m: [f32; N], cols: usize) -> [f32; N] {
    let mut out = m;
    let mut i = 0;
    while i < N {
        out[i] = m[i - i % cols + cols - 1 - i % cols];
        i += 1;
    }
    out
}

/// `m` (row-major, `cols` columns) with its rows in reverse order.
const fn reverse_rows<const N: usize>(m: [f32; N], cols: usize) -> [f32; N] {
    let mut out = m;
    let mut i = 0;
    while i < N {
        out[i] = m[N - cols - (i - i % cols) + i % cols];
        i += 1;
    }
    out
}

/// F(2x2, 3x3), interpolation points 0, 1, -1 and infinity: transforms of additions only, nearly
/// as exact as the direct sums.
pub(crate) const F2: Variant = Variant { m: 2, alpha: 4, bt: &F2_BT, g: &F2_G, at: &F2_AT };
const F2_MIRRORED: Variant = Variant { m: 2, alpha: 4, bt: &reverse_columns(F2_BT, 4), g: &reverse_columns(F2_G, 3), at: &reverse_rows(F2_AT, 4) };
#[rustfmt::skip]
const F2_BT: [f32; 16] = [
    1.0,  0.0, -1.0,  0.0,
    0.0,  1.0,  1.0,  0.0,
    0.0, -1.0,  1.0,  0.0,
    0.0,  1.0,  0.0, -1.0,
];
#[rustfmt::skip]
const F2_G: [f32; 12] = [
    1.0,  0.0, 0.0,
    0.5,  0.5, 0.5,
    0.5, -0.5, 0.5,
    0.0,  0.0, 1.0,
];
#[rustfmt::skip]
const F2_AT: [f32; 8] = [
    1.0, 1.0,  1.0,  0.0,
    0.0, 1.0, -1.0, -1.0,
];

/// F(4x4, 3x3), interpolation points 0, 1, -1, 2, -2 and infinity.
pub(crate) const F4: Variant = Variant { m: 4, alpha: 6, bt: &F4_BT, g: &F4_G, at: &F4_AT };
const F4_MIRRORED: Variant = Variant { m: 4, alpha: 6, bt: &reverse_columns(F4_BT, 6), g: &reverse_columns(F4_G, 3), at: &reverse_rows(F4_AT, 6) };
#[rustfmt::skip]
const F4_BT: [f32; 36] = [
    4.0,  0.0, -5.0,  0.0, 1.0, 0.0,
    0.0, -4.0, -4.0,  1.0, 1.0, 0.0,
    0.0,  4.0, -4.0, -1.0, 1.0, 0.0,
    0.0, -2.0, -1.0,  2.0, 1.0, 0.0,
    0.0,  2.0, -1.0, -2.0, 1.0, 0.0,
    0.0,  4.0,  0.0, -5.0, 0.0, 1.0,
];
#[rustfmt::skip]
const F4_G: [f32; 18] = [
    1.0 / 4.0,   0.0,         0.0,
    -1.0 / 6.0,  -1.0 / 6.0,  -1.0 / 6.0,
    -1.0 / 6.0,  1.0 / 6.0,   -1.0 / 6.0,
    1.0 / 24.0,  1.0 / 12.0,  1.0 / 6.0,
    1.0 / 24.0,  -1.0 / 12.0, 1.0 / 6.0,
    0.0,         0.0,         1.0,
];
#[rustfmt::skip]
const F4_AT: [f32; 24] = [
    1.0, 1.0,  1.0, 1.0,  1.0, 0.0,
    0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
    0.0, 1.0,  1.0, 4.0,  4.0, 0.0,
    0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
];

/// Bytes that a model's kept transformed weights ([`Kept`]) may still take, shared by its convs.
#[derive(Debug)]
pub struct KeepBudget {
    total: usize,
    left: AtomicUsize,
}

impl KeepBudget {
    pub fn new(bytes: usize) -> Arc<KeepBudget> {
        Arc::new(KeepBudget { total: bytes, left: AtomicUsize::new(bytes) })
    }

    fn left(&self) -> usize {
        self.left.load(Ordering::Relaxed)
    }

    /// The bytes kept so far.
    pub fn taken(&self) -> usize {
        self.total - self.left()
    }

    /// Takes `bytes` if that many are left.
    fn take(&self, bytes: usize) -> bool {
        self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(bytes)).is_ok()
    }
}

/// The transformed weights of one conv, built on its first Winograd call and kept with the model,
/// within its [`KeepBudget`], for the variant that call ran (F(2x2): 16/9 of the conv's weights,
/// F(4x4): 4x). One copy serves both directions: the input gradient reads it through the variant's
/// mirror image ([`Variant`]). Kept, U costs neither its transform on every call (F(4x4) at 28x28:
/// about a fifth of the conv's time) nor, at 7x7, the trip through memory that made ResNet-18's
/// layer4 faster direct.
#[derive(Debug)]
pub struct Kept {
    /// The variant's `m` and its U.
    u: OnceLock<Option<(usize, Vec<f32>)>>,
    budget: Arc<KeepBudget>,
}

impl Kept {
    pub fn new(budget: Arc<KeepBudget>) -> Kept {
        Kept { u: OnceLock::new(), budget }
    }

    fn bytes(g: &Conv2dGeom, v: &Variant) -> usize {
        v.alpha * v.alpha * g.cout * g.cin * size_of::<f32>()
    }

    /// Whether `v`'s U is kept already, or the budget has room for it.
    fn possible(&self, g: &Conv2dGeom, v: &Variant) -> bool {
        if !super::tuning::current().keep_transformed_weights {
            return false;
        }
        match self.u.get() {
            Some(u) => u.as_ref().is_some_and(|(m, _)| *m == v.m),
            None => self.budget.left() >= Self::bytes(g, v),
        }
    }

    /// `v`'s U, built now if the budget still allows (`w`: this conv's weights, (cout, cin, 3, 3));
    /// `None` where another variant's U is kept (a conv run at two input sizes).
    fn get(&self, w: &[f32], g: &Conv2dGeom, v: &Variant) -> Option<&[f32]> {
        let build = || crate::profile::time(|| format!("  winograd F{} U kept {}@{}", v.m, g.cout, g.h), || (v.m, kept_u(w, g, v)));
        let u = self.u.get_or_init(|| self.budget.take(Self::bytes(g, v)).then(build));
        u.as_ref().filter(|(m, _)| *m == v.m).map(|(_, u)| &u[..])
    }
}

/// The U that a conv keeps, `U[xi][ci][co]`: the input gradient reads it in place, the forward
/// transposed. Kept weights are read from memory on every call, and our GEMM reads a transposed A
/// from memory faster than rows in place (one strided stream against four short ones): cold, 512 x
/// 16 x 512 ran at 29.9-30.7 GFLOP/s transposed against 20.1-29.4, 256 x 49 x 256 at 31.6-32.5
/// against 29.0-31.0 (`GEMM_COLD=1`, docs/performance.md section 28). Kept the other way, the
/// input gradient had the faster read and the forward, which every method runs, the slower.
fn kept_u(w: &[f32], g: &Conv2dGeom, v: &Variant) -> Vec<f32> {
    transform_weights(w, g.cout, g.cin, true, v)
}

/// How a conv runs by Winograd: the variant, and its kept U if any.
pub(crate) struct Plan<'k> {
    pub v: &'static Variant,
    kept: Option<&'k [f32]>,
}

/// The plan worth using for this conv, if any: 3x3, stride 1, ungrouped, and at most 0.8x the
/// direct product's cost by the estimate in [`cost`]. With `kept`, F(2x2) may keep its U where that
/// makes it the cheapest, and F(4x4) keeps its U where it is the cheapest without: the estimate
/// leaves out that a kept U comes from memory on every call, 2.25x F(2x2)'s bytes for F(4x4), and
/// would send 14x14 and 7x7 planes to F(4x4) for the saved transform alone.
pub(crate) fn choose<'k>(g: &Conv2dGeom, w: &[f32], kept: Option<&'k Kept>) -> Option<Plan<'k>> {
    // Pads above 2 would make the input gradient's pads (2 - pad) negative.
    let max_pad = g.pad_top.max(g.pad_bottom).max(g.pad_left).max(g.pad_right);
    let eligible = g.kh == 3 && g.kw == 3 && g.stride_h == 1 && g.stride_w == 1 && g.groups == 1 && max_pad <= 2;
    if !eligible || !super::tuning::current().winograd {
        return None;
    }
    let direct = cost(g, None, false);
    let can_keep = |v: &Variant| kept.is_some_and(|k| k.possible(g, v));
    let (v, keeps) = [(&F2, false), (&F4, false), (&F2, true)]
        .into_iter()
        .filter(|&(v, keeps)| !keeps || can_keep(v))
        .map(|(v, keeps)| (cost(g, Some(v), keeps), v, keeps))
        .filter(|(c, ..)| *c < 0.8 * direct)
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v, keeps)| (v, keeps))?;
    let keeps = keeps || (v.m == 4 && can_keep(v));
    Some(Plan { v, kept: if keeps { kept.and_then(|k| k.get(w, g, v)) } else { None } })
}

/// Estimated time of one conv in units of one GEMM multiply-add (about 0.05 ns in wasm here),
/// directly (`None`) or by Winograd, with U transformed per call or kept. The constants are fits to
/// wasm profiles of ResNet-18 and VGG (`PROFILE=1 scripts/wasm-bench.sh`): a product of N columns
/// costs about N + 2 columns' worth (loop and packing overhead; A is read in place); transforming
/// an element of U costs about 10, an element of V (per channel) 10 + 160 / (tiles across), one of
/// M 5 + 120 / (tiles across): short rows of tiles pay the transforms' loop overhead. Hence 56x56
/// and 28x28 planes take F(4x4), 14x14 ones F(2x2), and ResNet's 7x7 x 512-channel layer4 F(2x2)
/// with U kept, else the direct product.
fn cost(g: &Conv2dGeom, v: Option<&Variant>, kept: bool) -> f64 {
    let (oh, ow) = (g.out_h(), g.out_w());
    let (n, ci, co) = (g.n as f64, g.cin as f64, g.cout as f64);
    let gemm = |columns: usize, depth: f64| co * depth * (columns as f64 + 2.0);
    let Some(v) = v else {
        return n * gemm(oh * ow, 9.0 * ci);
    };
    let (across, tiles) = (ow.div_ceil(v.m) as f64, (oh.div_ceil(v.m) * ow.div_ceil(v.m)));
    let a2 = (v.alpha * v.alpha) as f64;
    let transforms = tiles as f64 * a2 * (ci * (10.0 + 160.0 / across) + co * (5.0 + 120.0 / across));
    let u = if kept { 0.0 } else { 10.0 * a2 * co * ci };
    n * (a2 * gemm(tiles, ci) + transforms) + u
}

/// `dst = sum_k coef[k] * src(k)` over whole rows, in one pass over `dst` (zero coefficients skipped).
fn combine<'a>(coef: &[f32], src: impl Fn(usize) -> &'a [f32], dst: &mut [f32]) {
    let n = dst.len();
    let mut terms: [(f32, &[f32]); 6] = [(0.0, &[]); 6];
    let mut len = 0;
    for (k, &c) in coef.iter().enumerate() {
        if c != 0.0 {
            terms[len] = (c, &src(k)[..n]);
            len += 1;
        }
    }
    // One loop per term count, so each output element is loaded and stored once.
    match terms[..len] {
        [] => dst.fill(0.0),
        [(c0, s0)] => dst.iter_mut().zip(s0).for_each(|(d, &a)| *d = c0 * a),
        [(c0, s0), (c1, s1)] => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = c0 * s0[i] + c1 * s1[i];
            }
        }
        [(c0, s0), (c1, s1), (c2, s2)] => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = c0 * s0[i] + c1 * s1[i] + c2 * s2[i];
            }
        }
        [(c0, s0), (c1, s1), (c2, s2), (c3, s3)] => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = c0 * s0[i] + c1 * s1[i] + c2 * s2[i] + c3 * s3[i];
            }
        }
        _ => {
            dst.iter_mut().zip(terms[0].1).for_each(|(d, &a)| *d = terms[0].0 * a);
            for &(c, s) in &terms[1..len] {
                dst.iter_mut().zip(s).for_each(|(d, &a)| *d += c * a);
            }
        }
    }
}

/// Transformed kernels `U[xi][co][ci] = (G w[co][ci] G^T)[xi]`: one (cout x cin) matrix per xi, the A
/// operand of its product. `w` is (cout, cin, 3, 3). With `transposed`, `U[xi][ci][co]`. Built a
/// group of rows at a time, each step one `combine` over the group's rows (vectors over the depth).
fn transform_weights(w: &[f32], cout: usize, cin: usize, transposed: bool, v: &Variant) -> Vec<f32> {
    let (a, a2) = (v.alpha, v.alpha * v.alpha);
    let (rows, depth) = if transposed { (cin, cout) } else { (cout, cin) };
    let mut u = vec![0.0; a2 * rows * depth];
    let per_group = group(depth);
    let (mut taps, mut half) = (vec![0.0; 9 * per_group * depth], vec![0.0; a * 3 * per_group * depth]);
    for row0 in (0..rows).step_by(per_group) {
        let len = per_group.min(rows - row0) * depth; // one tap's (or one xi's) rows of the group
        for (gi, row) in (row0..row0 + len / depth).enumerate() {
            for d in 0..depth {
                let k = if transposed { &w[(d * cin + row) * 9..][..9] } else { &w[(row * cin + d) * 9..][..9] };
                for (t, &tap) in k.iter().enumerate() {
                    taps[t * len + gi * depth + d] = tap;
                }
            }
        }
        // half[r][kx] = sum_ky G[r][ky] * taps[ky][kx]
        for r in 0..a {
            for kx in 0..3 {
                let dst = &mut half[(r * 3 + kx) * len..][..len];
                combine(&v.g[r * 3..][..3], |ky| &taps[(ky * 3 + kx) * len..][..len], dst);
            }
        }
        // U[r][c] = sum_kx G[c][kx] * half[r][kx], straight into U's rows for the group.
        for r in 0..a {
            for c in 0..a {
                let dst = &mut u[((r * a + c) * rows + row0) * depth..][..len];
                combine(&v.g[c * 3..][..3], |kx| &half[(r * 3 + kx) * len..][..len], dst);
            }
        }
    }
    u
}

/// The geometry of a stride-1 3x3 conv of one image as the tiles see it.
struct Tiling {
    h: usize,
    w: usize,
    pad_top: usize,
    pad_left: usize,
    oh: usize,
    ow: usize,
    ty: usize,
    tx: usize,
}

impl Tiling {
    fn new(h: usize, w: usize, pad_top: usize, pad_left: usize, oh: usize, ow: usize, v: &Variant) -> Self {
        Tiling { h, w, pad_top, pad_left, oh, ow, ty: oh.div_ceil(v.m), tx: ow.div_ceil(v.m) }
    }
}

/// Two buffers the transforms reuse from chunk to chunk.
#[derive(Default)]
struct Scratch(Vec<f32>, Vec<f32>);

/// Floats of one channel group's scratch rows in the transforms: the group's rows stay in L1, and
/// each `combine` runs over a whole group (small planes have rows of a few tiles per channel, and
/// per-channel combines were mostly loop overhead).
const GROUP_FLOATS: usize = 4096;

/// Channels per group for rows of `per_channel` floats.
fn group(per_channel: usize) -> usize {
    (GROUP_FLOATS / per_channel.max(1)).max(1)
}

/// V[xi][ci][t] for the tiles of tile rows `rows` (t counts from the first of them). The channels
/// go to the thread pool in parts of whole groups; each part writes its channels' rows of every
/// V[xi], which no other part touches.
fn transform_input(x: &[f32], cin: usize, tl: &Tiling, rows: core::ops::Range<usize>, v: &Variant, vbuf: &mut Vec<f32>, scratch: &mut Scratch) {
    let a2 = v.alpha * v.alpha;
    let nt = rows.len() * tl.tx;
    vbuf.resize(a2 * cin * nt, 0.0);
    let per_group = group(nt);
    let parts = super::parallel::parts(cin.div_ceil(per_group), a2 * per_group * nt * v.alpha);
    if parts <= 1 {
        let mut rows_of_v: Vec<&mut [f32]> = vbuf.chunks_exact_mut(cin * nt).collect();
        return input_channels(x, 0..cin, tl, rows, v, &mut rows_of_v, scratch);
    }
    let channel_parts = super::parallel::ranges(cin, parts, per_group);
    let mut jobs: Vec<(core::ops::Range<usize>, Vec<&mut [f32]>)> = channel_parts.iter().map(|c| (c.clone(), Vec::with_capacity(a2))).collect();
    for v_xi in vbuf.chunks_exact_mut(cin * nt) {
        let mut rest = v_xi;
        for (channels, slices) in jobs.iter_mut() {
            let (mine, tail) = rest.split_at_mut(channels.len() * nt);
            slices.push(mine);
            rest = tail;
        }
    }
    super::parallel::for_each(jobs, |_, (channels, mut slices)| input_channels(x, channels, tl, rows.clone(), v, &mut slices, &mut Scratch::default()));
}

/// [`transform_input`] for channels `channels`, whose rows of V[xi] are `v_rows[xi]`: a group of
/// channels at a time is gathered into `patch[ky][kx][ci][t]` (zeros outside the image), then
/// transformed along y and x, each step one `combine` over the whole group.
fn input_channels(x: &[f32], channels: core::ops::Range<usize>, tl: &Tiling, rows: core::ops::Range<usize>, v: &Variant, v_rows: &mut [&mut [f32]], scratch: &mut Scratch) {
    let Scratch(patch, half) = scratch;
    let (a, a2) = (v.alpha, v.alpha * v.alpha);
    let nt = rows.len() * tl.tx;
    // The input rows that the chunk's tiles read, one channel at a time, in a zero-padded plane:
    // row py is input row `rows.start * m + py - pad_top`, input column ix sits at ix + pad_left,
    // and tile tx's patch starts at column tx * m. Zeros outside the image are written once: each
    // channel overwrites only the image's part.
    let (pw, ph) = (tl.tx * v.m + a, (rows.len() - 1) * v.m + a);
    let mut padded = vec![0.0; pw * ph];
    let image_rows: Vec<(usize, usize)> = (0..ph).filter_map(|py| (rows.start * v.m + py).checked_sub(tl.pad_top).filter(|&iy| iy < tl.h).map(|iy| (py, iy))).collect();
    let copied = tl.w.min(pw.saturating_sub(tl.pad_left));
    let per_group = group(nt);
    for c0 in channels.clone().step_by(per_group) {
        let g = per_group.min(channels.end - c0);
        let len = g * nt; // one (ky, kx) row of the group
        patch.resize(a2 * len, 0.0);
        half.resize(a2 * len, 0.0);
        for (gi, ci) in (c0..c0 + g).enumerate() {
            let plane = &x[ci * tl.h * tl.w..][..tl.h * tl.w];
            for &(py, iy) in &image_rows {
                padded[py * pw + tl.pad_left..][..copied].copy_from_slice(&plane[iy * tl.w..][..copied]);
            }
            for r in 0..rows.len() {
                for ky in 0..a {
                    // Patch column kx of tile t is prow[t * m + kx]: for kx < m, phase kx of the row;
                    // for kx = m, m + 1 (alpha = m + 2), phases 0 and 1 one tile on.
                    let prow = &padded[(r * v.m + ky) * pw..][..pw];
                    let dst = &mut patch[ky * a * len + gi * nt + r * tl.tx..];
                    match v.m {
                        2 => {
                            deinterleave::<2, 2>(prow, dst, len, tl.tx);
                            deinterleave::<2, 2>(&prow[2..], &mut dst[2 * len..], len, tl.tx);
                        }
                        4 => {
                            deinterleave::<4, 4>(prow, dst, len, tl.tx);
                            deinterleave::<4, 2>(&prow[4..], &mut dst[4 * len..], len, tl.tx);
                        }
                        _ => unreachable!("F(2x2) and F(4x4) only"),
                    }
                }
            }
        }
        // half[r][kx] = sum_ky Bt[r][ky] * patch[ky][kx]: rows of a * len at once.
        for r in 0..a {
            combine(&v.bt[r * a..][..a], |ky| &patch[ky * a * len..][..a * len], &mut half[r * a * len..][..a * len]);
        }
        // V[r][c] = sum_kx Bt[c][kx] * half[r][kx], straight into V's rows for the group.
        for r in 0..a {
            for c in 0..a {
                let dst = &mut v_rows[r * a + c][(c0 - channels.start) * nt..][..len];
                combine(&v.bt[c * a..][..a], |kx| &half[(r * a + kx) * len..][..len], dst);
            }
        }
    }
}

/// `dst[j * ld + t] = src[t * M + j]` for the first `K` phases `j` of a row cut in groups of `M`,
/// `t < n`. In wasm, four groups at a time: `M` loads, a transpose in lane shuffles, a store per
/// phase. One element at a time, the gather was over half of the input transform (`PROFILE=1`: F(4x4)
/// at 56x56 4.6 -> 3.3 ms per pass, docs/performance.md section 30).
fn deinterleave<const M: usize, const K: usize>(src: &[f32], dst: &mut [f32], ld: usize, n: usize) {
    assert!(K <= M && src.len() >= M * n && (n == 0 || dst.len() >= (K - 1) * ld + n));
    #[allow(unused_mut)]
    let mut t0 = 0;
    #[cfg(target_arch = "wasm32")]
    // SAFETY: t0 + 4 <= n and the assert bound every load (src[M * t0..][..4 * M]) and store
    // (dst[j * ld + t0..][..4], j < K).
    unsafe {
        use core::arch::wasm32::*;
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        let put = |j: usize, t0: usize, x: v128| {
            if j < K {
                v128_store(dp.add(j * ld + t0) as *mut v128, x)
            }
        };
        while t0 + 4 <= n && (M == 2 || M == 4) {
            let s = sp.add(M * t0);
            if M == 2 {
                let (v0, v1) = (v128_load(s as *const v128), v128_load(s.add(4) as *const v128));
                put(0, t0, i32x4_shuffle::<0, 2, 4, 6>(v0, v1));
                put(1, t0, i32x4_shuffle::<1, 3, 5, 7>(v0, v1));
            } else {
                let v: [v128; 4] = core::array::from_fn(|q| v128_load(s.add(4 * q) as *const v128));
                let (lo01, lo23) = (i32x4_shuffle::<0, 4, 1, 5>(v[0], v[1]), i32x4_shuffle::<0, 4, 1, 5>(v[2], v[3]));
                put(0, t0, i32x4_shuffle::<0, 1, 4, 5>(lo01, lo23));
                put(1, t0, i32x4_shuffle::<2, 3, 6, 7>(lo01, lo23));
                if K > 2 {
                    let (hi01, hi23) = (i32x4_shuffle::<2, 6, 3, 7>(v[0], v[1]), i32x4_shuffle::<2, 6, 3, 7>(v[2], v[3]));
                    put(2, t0, i32x4_shuffle::<0, 1, 4, 5>(hi01, hi23));
                    put(3, t0, i32x4_shuffle::<2, 3, 6, 7>(hi01, hi23));
                }
            }
            t0 += 4;
        }
    }
    for t in t0..n {
        for j in 0..K {
            dst[j * ld + t] = src[t * M + j];
        }
    }
}

/// out[co] += the outputs of M[xi][co][t] (tile rows `rows`), clipped to the output plane. The
/// channels go to the thread pool in parts of whole groups, each with its own output planes.
fn transform_output(mbuf: &[f32], cout: usize, tl: &Tiling, rows: core::ops::Range<usize>, v: &Variant, out: &mut [f32], scratch: &mut Scratch) {
    let nt = rows.len() * tl.tx;
    let per_group = group(nt);
    let plane = tl.oh * tl.ow;
    let parts = super::parallel::parts(cout.div_ceil(per_group), v.alpha * v.alpha * per_group * nt * v.m);
    if parts <= 1 {
        return output_channels(mbuf, cout, 0..cout, tl, rows, v, out, scratch);
    }
    super::parallel::for_each_run(&mut out[..cout * plane], per_group * plane, parts, |first_group, planes| {
        let co0 = first_group * per_group;
        let channels = co0..co0 + planes.len() / plane;
        output_channels(mbuf, cout, channels, tl, rows.clone(), v, planes, &mut Scratch::default());
    });
}

/// [`transform_output`] for channels `channels`, whose output planes are `out` (from its first): a
/// group of channels at a time, each transform step one `combine` over the whole group.
#[allow(clippy::too_many_arguments)]
fn output_channels(mbuf: &[f32], cout: usize, channels: core::ops::Range<usize>, tl: &Tiling, rows: core::ops::Range<usize>, v: &Variant, out: &mut [f32], scratch: &mut Scratch) {
    let Scratch(half, tile) = scratch;
    let (a, m) = (v.alpha, v.m);
    let nt = rows.len() * tl.tx;
    let per_group = group(nt);
    for co0 in channels.clone().step_by(per_group) {
        let g = per_group.min(channels.end - co0);
        let len = g * nt; // one (i, c) row of the group
        half.resize(m * a * len, 0.0);
        tile.resize(m * m * len, 0.0);
        // half[i][c] = sum_r At[i][r] * M[r][c], then tile[i][j] = sum_c At[j][c] * half[i][c].
        for i in 0..m {
            for c in 0..a {
                let dst = &mut half[(i * a + c) * len..][..len];
                combine(&v.at[i * a..][..a], |r| &mbuf[((r * a + c) * cout + co0) * nt..][..len], dst);
            }
        }
        for i in 0..m {
            for j in 0..m {
                let dst = &mut tile[(i * m + j) * len..][..len];
                combine(&v.at[j * a..][..a], |c| &half[(i * a + c) * len..][..len], dst);
            }
        }
        for (gi, co) in (co0..co0 + g).enumerate() {
            let plane = &mut out[(co - channels.start) * tl.oh * tl.ow..][..tl.oh * tl.ow];
            for (r, ty) in rows.clone().enumerate() {
                for i in 0..m.min(tl.oh - ty * m) {
                    let orow = &mut plane[(ty * m + i) * tl.ow..][..tl.ow];
                    let src = |j: usize| &tile[(i * m + j) * len + gi * nt + r * tl.tx..][..tl.tx];
                    match m {
                        2 => add_interleaved::<2>(orow, [src(0), src(1)]),
                        4 => add_interleaved::<4>(orow, [src(0), src(1), src(2), src(3)]),
                        _ => unreachable!("F(2x2) and F(4x4) only"),
                    }
                }
            }
        }
    }
}

/// `row[t * M + j] += src[j][t]` for the columns inside `row`: M rows of tile outputs interleaved
/// into one output row (M a constant, so the whole tiles' loop unrolls).
fn add_interleaved<const M: usize>(row: &mut [f32], src: [&[f32]; M]) {
    let whole = row.len() / M;
    for (t, out) in row.chunks_exact_mut(M).enumerate() {
        for j in 0..M {
            out[j] += src[j][t];
        }
    }
    for (j, out) in row[whole * M..].iter_mut().enumerate() {
        *out += src[j][whole];
    }
}

/// `out (cout, oh, ow) += conv3x3(x (cin, h, w))` for one image; `u(xi)`: U[xi], (cout x cin).
#[allow(clippy::too_many_arguments)]
fn conv_image<'u>(x: &[f32], u: impl Fn(usize) -> MatRef<'u> + Sync, cin: usize, cout: usize, tl: &Tiling, v: &Variant, out: &mut [f32], budget: usize) {
    let a2 = v.alpha * v.alpha;
    // Tile rows per chunk: V and M together stay near `budget` floats.
    let per_row = a2 * (cin + cout) * tl.tx;
    let rows_per = (budget / per_row.max(1)).clamp(1, tl.ty.max(1));
    let (mut vbuf, mut mbuf, mut scratch) = (Vec::new(), Vec::new(), Scratch::default());
    for r0 in (0..tl.ty).step_by(rows_per) {
        let rows = r0..(r0 + rows_per).min(tl.ty);
        let nt = rows.len() * tl.tx;
        let t = |name: &str| format!("  winograd F{} {name} {}@{}", v.m, cout, tl.oh);
        crate::profile::time(|| t("in"), || transform_input(x, cin, tl, rows.clone(), v, &mut vbuf, &mut scratch));
        mbuf.resize(a2 * cout * nt, 0.0);
        // The a2 products are independent: the thread pool takes them in parts.
        let parts = super::parallel::parts(a2, cout * nt * cin);
        let vbuf = &vbuf;
        crate::profile::time(
            || t("gemm"),
            || {
                super::parallel::for_each_run(&mut mbuf, cout * nt, parts, |first, run| {
                    for (xi, m) in (first..).zip(run.chunks_exact_mut(cout * nt)) {
                        let b = MatRef::new(&vbuf[xi * cin * nt..][..cin * nt], nt);
                        matmul(cout, nt, cin, u(xi), b, m, nt, false);
                    }
                })
            },
        );
        crate::profile::time(|| t("out"), || transform_output(&mbuf, cout, tl, rows, v, out, &mut scratch));
    }
}

/// `out (n, cout, oh, ow) += conv(x)`: the forward of a conv that [`choose`] planned. Its U is built
/// per call, (cout x cin) per xi, or kept ([`kept_u`], read transposed).
pub(crate) fn forward(x: &[f32], w: &[f32], g: &Conv2dGeom, plan: &Plan, out: &mut [f32], budget: usize) {
    let v = plan.v;
    let per_call;
    let u = match plan.kept {
        Some(u) => u,
        None => {
            per_call = crate::profile::time(|| format!("  winograd F{} U {}@{}", v.m, g.cout, g.h), || transform_weights(w, g.cout, g.cin, false, v));
            &per_call
        }
    };
    let tl = Tiling::new(g.h, g.w, g.pad_top, g.pad_left, g.out_h(), g.out_w(), v);
    let (in_len, out_len, u_len) = (g.cin * g.h * g.w, g.cout * tl.oh * tl.ow, g.cout * g.cin);
    let a = |xi: usize| match plan.kept {
        Some(_) => MatRef::new(&u[xi * u_len..][..u_len], g.cout).t(),
        None => MatRef::new(&u[xi * u_len..][..u_len], g.cin),
    };
    for (xs, os) in x.chunks_exact(in_len).zip(out.chunks_exact_mut(out_len)) {
        conv_image(xs, a, g.cin, g.cout, &tl, v, os, budget);
    }
}

/// `gx (n, cin, h, w) += d loss / d x` given `go` (n, cout, oh, ow): the correlation of the output
/// gradient, padded by `2 - pad` on each side, with the kernels rotated by 180 degrees and cin/cout
/// swapped. The variant's mirror image runs it on the forward's U ([`Variant`]), (cin x cout) per
/// xi: built so per call, or kept.
pub(crate) fn input_grad(go: &[f32], w: &[f32], g: &Conv2dGeom, plan: &Plan, gx: &mut [f32], budget: usize) {
    let v = plan.v.mirrored();
    let (oh, ow) = (g.out_h(), g.out_w());
    let tl = Tiling::new(oh, ow, 2 - g.pad_top, 2 - g.pad_left, g.h, g.w, v);
    let (in_len, out_len, u_len) = (g.cin * g.h * g.w, g.cout * oh * ow, g.cout * g.cin);
    let per_call;
    let u = match plan.kept {
        Some(u) => u,
        None => {
            per_call = crate::profile::time(|| format!("  winograd F{} U {}@{}", v.m, g.cout, g.h), || transform_weights(w, g.cout, g.cin, true, plan.v));
            &per_call
        }
    };
    let a = |xi: usize| MatRef::new(&u[xi * u_len..][..u_len], g.cout);
    for (gos, gxs) in go.chunks_exact(out_len).zip(gx.chunks_exact_mut(in_len)) {
        conv_image(gos, a, g.cout, g.cin, &tl, v, gxs, budget);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::tests::{geom, naive_conv};
    use crate::kernels::testutil::{assert_close, dot, Rng};

    fn cases() -> Vec<Conv2dGeom> {
        vec![
            geom((1, 3, 8, 8, 4), (3, 3), (1, 1), (1, 1, 1, 1), 1),
            // Planes that are not a multiple of the tile, uneven pads, a batch of two.
            geom((2, 5, 11, 9, 6), (3, 3), (1, 1), (1, 1, 1, 1), 1),
            geom((1, 4, 10, 13, 7), (3, 3), (1, 1), (0, 2, 2, 0), 1),
            geom((1, 6, 7, 7, 5), (3, 3), (1, 1), (0, 0, 0, 0), 1),
            geom((1, 9, 14, 14, 8), (3, 3), (1, 1), (2, 2, 1, 1), 1),
        ]
    }

    /// Every plan a conv can run by: F(2x2) and F(4x4), each with U per call or kept.
    fn plans<'u>(kept: &'u [Vec<f32>; 2]) -> [Plan<'u>; 4] {
        [Plan { v: &F2, kept: None }, Plan { v: &F4, kept: None }, Plan { v: &F2, kept: Some(&kept[0]) }, Plan { v: &F4, kept: Some(&kept[1]) }]
    }

    fn kept_both(w: &[f32], g: &Conv2dGeom) -> [Vec<f32>; 2] {
        [kept_u(w, g, &F2), kept_u(w, g, &F4)]
    }

    #[test]
    fn mirror_images_are_variants_of_their_own() {
        // Reversing columns and rows: the mirror's mirror is the variant.
        assert_eq!(reverse_columns(reverse_columns(F4_BT, 6), 6), F4_BT);
        assert_eq!(reverse_rows(F4_AT, 6)[..6], F4_AT[18..]);
        assert_eq!(reverse_columns(F2_G, 3)[..3], [0.0, 0.0, 1.0]);
        // Each mirror image computes the forward correlation by itself (U from its own G).
        let mut rng = Rng::new(20);
        for g in cases() {
            let (x, w) = (rng.vec(g.n * g.cin * g.h * g.w), rng.vec(g.cout * g.cin * 9));
            let want = naive_conv(&x, &w, None, &g);
            for v in [&F2_MIRRORED, &F4_MIRRORED] {
                let mut got = vec![0.0; want.len()];
                forward(&x, &w, &g, &Plan { v, kept: None }, &mut got, 1 << 20);
                assert_close(&format!("mirrored F{} {g:?}", v.m), &got, &want, 2e-5);
            }
        }
    }

    #[test]
    fn forward_matches_naive_for_every_plan_and_chunking() {
        let mut rng = Rng::new(21);
        for g in cases() {
            let x = rng.vec(g.n * g.cin * g.h * g.w);
            let w = rng.vec(g.cout * g.cin * 9);
            let want = naive_conv(&x, &w, None, &g);
            let kept = kept_both(&w, &g);
            for plan in plans(&kept) {
                for budget in [1, 1 << 20] {
                    let mut got = vec![0.0; want.len()];
                    forward(&x, &w, &g, &plan, &mut got, budget);
                    // F(4x4)'s transforms scale values by up to ~10x before they cancel.
                    let rel = if plan.v.m == 4 { 2e-5 } else { 1e-5 };
                    let name = format!("F{} kept {} {g:?} budget {budget}", plan.v.m, plan.kept.is_some());
                    assert_close(&name, &got, &want, rel);
                }
            }
        }
    }

    #[test]
    fn input_grad_is_adjoint_of_forward() {
        let mut rng = Rng::new(22);
        for g in cases() {
            let x = rng.vec(g.n * g.cin * g.h * g.w);
            let w = rng.vec(g.cout * g.cin * 9);
            let y = rng.vec(g.n * g.cout * g.out_h() * g.out_w());
            // <conv x, y> computed directly must equal <x, conv^T y> computed by Winograd: the mirror
            // image on the forward's U, built per call or kept.
            let lhs: f64 = naive_conv(&x, &w, None, &g).iter().zip(&y).map(|(a, b)| a * *b as f64).sum();
            let kept = kept_both(&w, &g);
            for plan in plans(&kept) {
                let mut gx = vec![0.0; x.len()];
                input_grad(&y, &w, &g, &plan, &mut gx, 1 << 20);
                let rhs = dot(&x, &gx);
                assert!((lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0), "F{} kept {} {g:?}: {lhs} vs {rhs}", plan.v.m, plan.kept.is_some());
            }
        }
    }

    #[test]
    fn kept_weights_stay_within_their_budget() {
        let g = geom((1, 8, 7, 7, 8), (3, 3), (1, 1), (1, 1, 1, 1), 1);
        let w = Rng::new(23).vec(8 * 8 * 9);
        let bytes = Kept::bytes(&g, &F2);
        // Room for one U: the first conv keeps its U (the same one on every call), the second not.
        let budget = KeepBudget::new(bytes + bytes / 2);
        let (first, second) = (Kept::new(budget.clone()), Kept::new(budget.clone()));
        let u = first.get(&w, &g, &F2).expect("room for one").as_ptr();
        assert_eq!(first.get(&w, &g, &F2).map(<[f32]>::as_ptr), Some(u));
        assert!(!second.possible(&g, &F2) && second.get(&w, &g, &F2).is_none());
        assert_eq!(budget.left(), bytes / 2);
        // A conv keeps one variant's U: asked for another's (a second input size), it has none.
        assert!(!first.possible(&g, &F4) && first.get(&w, &g, &F4).is_none());
        assert_eq!(Kept::bytes(&g, &F4), 9 * bytes / 4);
    }

    #[test]
    fn choice_follows_the_plane_size_and_the_budget() {
        let g = |c, hw| geom((1, c, hw, hw, c), (3, 3), (1, 1), (1, 1, 1, 1), 1);
        let choice = |g: &Conv2dGeom, budget: usize| {
            let (w, kept) = (vec![0.0; g.cout * g.cin * 9], Kept::new(KeepBudget::new(budget)));
            choose(g, &w, Some(&kept)).map(|p| (p.v.m, p.kept.is_some()))
        };
        // ResNet-18's stride-1 3x3 layers, as measured fastest in wasm: 56x56 and 28x28 take F(4x4),
        // kept where the budget allows, 14x14 F(2x2), 7x7 with 512 channels F(2x2) with U kept,
        // else the direct product.
        for (budget, keeps) in [(0, false), (usize::MAX, true)] {
            assert_eq!(choice(&g(64, 56), budget), Some((4, keeps)));
            assert_eq!(choice(&g(128, 28), budget), Some((4, keeps)));
        }
        assert_eq!(choice(&g(256, 14), 0), Some((2, false)));
        assert_eq!(choice(&g(256, 14), usize::MAX), Some((2, true)));
        assert_eq!(choice(&g(512, 7), 0), None);
        assert_eq!(choice(&g(512, 7), usize::MAX), Some((2, true)));
        // VGG-16's first layers (224x224) and its last (512 channels at 14x14).
        assert_eq!(choice(&g(64, 224), usize::MAX), Some((4, true)));
        assert_eq!(choice(&g(512, 14), usize::MAX), Some((2, true)));
        // Not 3x3 stride 1 ungrouped: never.
        assert_eq!(choice(&geom((1, 8, 16, 16, 8), (3, 3), (2, 2), (1, 1, 1, 1), 1), usize::MAX), None);
        assert_eq!(choice(&geom((1, 8, 16, 16, 8), (3, 3), (1, 1), (1, 1, 1, 1), 2), usize::MAX), None);
        assert_eq!(choice(&geom((1, 8, 16, 16, 8), (5, 5), (1, 1), (2, 2, 2, 2), 1), usize::MAX), None);
    }
}
