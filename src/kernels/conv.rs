//! 2-D convolution (cross-correlation, as in PyTorch) and its input gradient.
//!
//! groups == 1 goes through gemm: a 1x1 stride-1 unpadded conv is a single
//! product per image; anything else is im2col + gemm over chunks of output
//! rows so the column buffer stays near [`COL_BUDGET_FLOATS`]. Where the output
//! plane is small ([`BATCH_PLANE`]), several images of a batch share one product,
//! side by side as its columns ([`images_per_gemm`]). Depthwise
//! convs use the direct kernels in `depthwise.rs`; other grouped convs run the
//! groups == 1 path on each group's channel slices.

use super::activation::{clamp_in_place, relu_output_grad, Clamp, ReluGate};
use super::sgemm::{self, RowSource};
use super::winograd::Kept;
use super::{depthwise, matmul, own_gemm, scatter, tap_range, winograd, MatRef};
use core::mem::MaybeUninit;
use core::ops::Range;

/// Column-buffer budget (8 MB of f32). Unchunked, VGG-16's 224x224 layers
/// would need 64*9*224*224*4 bytes, about 115 MB, which wasm can ill afford.
const COL_BUDGET_FLOATS: usize = (8 << 20) / 4;

/// Column chunk of an input gradient (1 MB of f32): the product writes it and col2im reads it back
/// while it is still in L2. ResNet-18's stem wrote its whole 7.4 MB column matrix first, and its
/// input gradient took 9.2 ms in wasm against 8.2 chunked.
const CACHED_COLUMNS: usize = (1 << 20) / 4;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2dGeom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_bottom: usize,
    pub pad_left: usize,
    pub pad_right: usize,
    pub groups: usize,
}

impl Conv2dGeom {
    /// `(h + pad_top + pad_bottom - kh) / stride_h + 1`; assumes the kernel fits the padded input.
    pub fn out_h(&self) -> usize {
        (self.h + self.pad_top + self.pad_bottom - self.kh) / self.stride_h + 1
    }

    /// `(w + pad_left + pad_right - kw) / stride_w + 1`.
    pub fn out_w(&self) -> usize {
        (self.w + self.pad_left + self.pad_right - self.kw) / self.stride_w + 1
    }

    /// One filter per channel (channel multiplier 1): handled by direct kernels.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.cin && self.cin == self.cout
    }

    /// A 1x1 stride-1 unpadded conv is a plain matrix product, no im2col needed.
    fn is_pointwise(&self) -> bool {
        let pads = self.pad_top + self.pad_bottom + self.pad_left + self.pad_right;
        self.kh == 1 && self.kw == 1 && self.stride_h == 1 && self.stride_w == 1 && pads == 0
    }

    /// The geometry of one group of one image: what the gemm path works on.
    fn group_view(&self) -> Conv2dGeom {
        Conv2dGeom { n: 1, cin: self.cin / self.groups, cout: self.cout / self.groups, groups: 1, ..*self }
    }

    /// Lengths of one group's (input, output, weight) slices.
    fn group_lens(&self) -> (usize, usize, usize) {
        let g = self.group_view();
        (g.cin * g.h * g.w, g.cout * g.out_h() * g.out_w(), g.cout * g.cin * g.kh * g.kw)
    }
}

/// weight: (cout, cin/groups, kh, kw); bias: cout. Returns (n, cout, out_h, out_w).
pub fn conv2d_forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Conv2dGeom) -> Vec<f32> {
    forward_with_budget(x, weight, bias, g, COL_BUDGET_FLOATS, None, None)
}

/// [`conv2d_forward`] followed by a ReLU/ReLU6 (`act`), applied while the output is still in cache;
/// `kept`: where this conv may keep transformed weights between calls (see [`Kept`]).
pub fn conv2d_forward_act(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Conv2dGeom, act: Option<Clamp>, kept: Option<&Kept>) -> Vec<f32> {
    forward_with_budget(x, weight, bias, g, COL_BUDGET_FLOATS, kept, act)
}

/// `y` clamped as `act` says, in a pass of its own: for the kernels that do not clamp their own blocks.
fn clamped(mut y: Vec<f32>, act: Option<Clamp>) -> Vec<f32> {
    clamp_if(&mut y, act);
    y
}

/// `y` clamped in place as `act` says, if it says.
fn clamp_if(y: &mut [f32], act: Option<Clamp>) {
    if let Some(c) = act {
        clamp_in_place(y, c);
    }
}

/// d loss / d x given d loss / d out (input gradient only; never a weight gradient). Returns (n, cin, h, w).
pub fn conv2d_input_grad(grad_out: &[f32], weight: &[f32], g: &Conv2dGeom, kept: Option<&Kept>) -> Vec<f32> {
    input_grad_with_budget(grad_out, weight, g, COL_BUDGET_FLOATS, kept)
}

/// [`conv2d_input_grad`] of a conv whose ReLU was fused into it ([`conv2d_forward_act`]): the
/// ReLU's backward `gate` is applied to `grad_out` as the products read it (a 1x1 conv's B, a
/// depthwise conv's blocks), where the other kernels get it in a pass of its own first.
pub fn conv2d_input_grad_gated(grad_out: &[f32], weight: &[f32], g: &Conv2dGeom, kept: Option<&Kept>, gate: ReluGate) -> Vec<f32> {
    let plane = g.out_h() * g.out_w();
    if g.is_depthwise() {
        return depthwise::input_grad(grad_out, weight, g, Some(gate));
    }
    if g.is_pointwise() && g.groups == 1 && own_gemm(g.cin, plane, false) {
        return pointwise_input_grad(grad_out, weight, g, Some(gate));
    }
    let gy = relu_output_grad(gate.y, grad_out, gate.clamp, gate.rule);
    input_grad_with_budget(&gy, weight, g, COL_BUDGET_FLOATS, kept)
}

/// An ungrouped 1x1 conv's input gradient by our GEMM, `W^T * G` image by image, into a fresh
/// output that the products' parts zero; `gate` (a fused ReLU's backward) is applied to G as the
/// products pack it.
fn pointwise_input_grad(grad_out: &[f32], weight: &[f32], g: &Conv2dGeom, gate: Option<ReluGate>) -> Vec<f32> {
    let plane = g.out_h() * g.out_w();
    if g.cin * g.cout * plane == 0 {
        return vec![0.0; g.n * g.cin * plane]; // no image to cut, or nothing to sum over
    }
    let mut gx = super::fresh(g.n * g.cin * plane);
    let wt = MatRef::new(weight, g.cin).t();
    let images = gx.chunks_exact_mut(g.cin * plane).zip(grad_out.chunks_exact(g.cout * plane)).enumerate();
    for (i, (gxi, goi)) in images {
        match gate {
            Some(gate) => sgemm::sgemm_fresh(g.cin, plane, g.cout, wt, &Gated { g: goi, at: i * g.cout * plane, plane, gate }, gxi, plane, sgemm::Start::Zero, None),
            None => sgemm::sgemm_fresh(g.cin, plane, g.cout, wt, &MatRef::new(goi, plane), gxi, plane, sgemm::Start::Zero, None),
        }
    }
    // SAFETY: each image's product wrote its cin x plane elements, and the images cover `gx`.
    unsafe { super::written(gx) }
}

/// One image's output gradient (channels x plane) as B of a 1x1 conv's input-gradient product, each
/// row through the ReLU's backward as it is packed; `at`: the image's first element in the gate's `y`.
struct Gated<'a> {
    g: &'a [f32],
    at: usize,
    plane: usize,
    gate: ReluGate<'a>,
}

impl RowSource for Gated<'_> {
    fn row(&self, k: usize, cols: Range<usize>, dst: &mut [f32]) {
        let first = k * self.plane + cols.start;
        self.gate.apply(self.at + first, &self.g[first..][..cols.len()], dst);
    }
}

/// [`conv2d_forward_act`] with an explicit column budget (in floats), so tests can force chunking.
pub(crate) fn forward_with_budget(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Conv2dGeom, budget: usize, kept: Option<&Kept>, act: Option<Clamp>) -> Vec<f32> {
    debug_assert_eq!(x.len(), g.n * g.cin * g.h * g.w);
    debug_assert_eq!(weight.len(), g.cout * (g.cin / g.groups) * g.kh * g.kw);
    debug_assert!(bias.is_none_or(|b| b.len() == g.cout));
    if g.is_depthwise() {
        return depthwise::forward(x, weight, bias, g, act);
    }
    let plane = g.out_h() * g.out_w();
    let len = g.n * g.cout * plane;
    let (in_len, out_len, w_len) = g.group_lens();
    if in_len == 0 || out_len == 0 || w_len == 0 {
        let mut out = vec![0.0; len];
        fill_bias(&mut out, bias, plane);
        return clamped(out, act); // nothing to sum over: the output is just the bias
    }
    if let Some(plan) = winograd::choose(g, weight, kept) {
        let mut out = vec![0.0; len];
        fill_bias(&mut out, bias, plane);
        winograd::forward(x, weight, g, &plan, &mut out, budget);
        return clamped(out, act);
    }
    // The products start from the bias themselves (`sgemm::Start::Rows`): no pass over the output
    // before them, which on two threads was a serial part of every conv.
    let (gv, mut cols) = (g.group_view(), Vec::new());
    let per_gemm = images_per_gemm(g, budget);
    if per_gemm > 1 {
        // Small planes: several images side by side as the columns of one product.
        let mut out = vec![0.0; len];
        for (xs, os) in x.chunks(per_gemm * in_len).zip(out.chunks_mut(per_gemm * out_len)) {
            forward_images(xs, weight, bias, os, &gv, xs.len() / in_len, &mut cols, act);
        }
        return out;
    }
    // Slices come image-major then group-major, so the weight groups (and the bias's) cycle.
    let mut out = super::fresh(len);
    let slices = x.chunks_exact(in_len).zip(out.chunks_exact_mut(out_len)).zip(weight.chunks_exact(w_len).cycle());
    for (i, ((xs, os), ws)) in slices.enumerate() {
        let group_bias = bias.map(|b| &b[(i % g.groups) * gv.cout..][..gv.cout]);
        forward_group(xs, ws, group_bias, os, &gv, &mut cols, budget, act);
    }
    // SAFETY: the slices cover `out`, and `forward_group` writes every element of its slice.
    unsafe { super::written(out) }
}

/// Every plane of channel c (planes `plane` long, channels cycling) := bias[c], if there is a bias.
fn fill_bias(out: &mut [f32], bias: Option<&[f32]>, plane: usize) {
    if let Some(b) = bias {
        for (o, bc) in out.chunks_exact_mut(plane).zip(b.iter().cycle()) {
            o.fill(*bc);
        }
    }
}

/// Where a product's sums start: row r (an output channel) from `bias[r]`, else from zero.
fn start_from(bias: Option<&[f32]>) -> sgemm::Start<'_> {
    bias.map_or(sgemm::Start::Zero, sgemm::Start::Rows)
}

/// Columns (images x output positions) one batched product may take: past a few hundred the
/// kernel's tiles are full and B's packed blocks are reused across every row strip of the weights.
const MAX_BATCH_COLUMNS: usize = 1024;

/// The largest output plane that takes several images per product: two fit `MAX_BATCH_COLUMNS`.
pub const BATCH_PLANE: usize = MAX_BATCH_COLUMNS / 2;

/// How many images of a batch one product takes as its columns (1: one image at a time). Only
/// ungrouped convs with small output planes batch: there a single image leaves the product a few
/// columns wide (EfficientNet-Lite0's 7 x 7 = 49, 6 tiles of 8 and a ragged one), so the weights
/// are streamed once per image and threads split only a handful of column blocks. Capped so the
/// product's output (and, where the `gemm` crate runs it, its materialised B) stays within `budget`.
fn images_per_gemm(g: &Conv2dGeom, budget: usize) -> usize {
    let plane = g.out_h() * g.out_w();
    if g.n < 2 || g.groups != 1 || plane == 0 || plane > BATCH_PLANE || !super::tuning::current().batch_columns {
        return 1;
    }
    let floats_per_column = g.cout.max(g.cin * g.kh * g.kw);
    let columns = MAX_BATCH_COLUMNS.min(budget / floats_per_column.max(1));
    (columns / plane).min(g.n).max(1)
}

/// The columns of `images` consecutive images side by side: column j is image `j / plane`'s
/// column `j % plane`. Each output's sum runs over the same depth in the same order as it does for
/// one image, so batching changes no bit.
struct SideBySide<S> {
    images: Vec<S>,
    plane: usize,
}

impl<S: RowSource> RowSource for SideBySide<S> {
    fn row(&self, k: usize, cols: Range<usize>, dst: &mut [f32]) {
        let (mut j, mut dst) = (cols.start, dst);
        while j < cols.end {
            let (image, c0) = (j / self.plane, j % self.plane);
            let c1 = self.plane.min(c0 + cols.end - j);
            let (seg, rest) = dst.split_at_mut(c1 - c0);
            self.images[image].row(k, c0..c1, seg);
            (j, dst) = (j + c1 - c0, rest);
        }
    }
}

/// out[image, cout, plane] = bias + W[cout, k] * B[k, (image, plane)] for `images` images of one
/// (ungrouped) conv in one product, through a `cout x images * plane` buffer.
#[allow(clippy::too_many_arguments)]
fn forward_images(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], g: &Conv2dGeom, images: usize, cols: &mut Vec<f32>, act: Option<Clamp>) {
    let in_len = g.cin * g.h * g.w;
    let xs = x.chunks_exact(in_len);
    if g.is_pointwise() {
        let plane = g.h * g.w;
        let b = SideBySide { images: xs.map(|xi| MatRef::new(xi, plane)).collect(), plane };
        product_side_by_side(w, g.cin, &b, bias, out, g.cout, images * plane, plane, cols, act);
    } else {
        let b = SideBySide { images: xs.map(|x| Im2col { x, g }).collect(), plane: g.out_h() * g.out_w() };
        product_side_by_side(w, g.cin * g.kh * g.kw, &b, bias, out, g.cout, images * b.plane, b.plane, cols, act);
    }
}

/// `out` (images x m x plane) = bias + W[m, k] * B[k, n], where B's columns are the images' planes
/// side by side (`n = images * plane`), clamped as `act` says.
#[allow(clippy::too_many_arguments)]
fn product_side_by_side(w: &[f32], k: usize, b: &(impl RowSource + Sync), bias: Option<&[f32]>, out: &mut [f32], m: usize, n: usize, plane: usize, cols: &mut Vec<f32>, act: Option<Clamp>) {
    let mut c = vec![0.0; m * n];
    if own_gemm(m, n, false) {
        sgemm::sgemm(m, n, k, MatRef::new(w, k), b, &mut c, n, start_from(bias), act);
    } else {
        // C starts from the bias (the one-image path's order of sums), and the `gemm` crate, which
        // reads B from memory, gets it materialised (within the caller's budget).
        fill_bias(&mut c, bias, n);
        cols.resize(k * n, 0.0);
        for (r, dst) in cols.chunks_exact_mut(n).enumerate() {
            b.row(r, 0..n, dst);
        }
        matmul(m, n, k, MatRef::new(w, k), MatRef::new(&cols[..k * n], n), &mut c, n, true);
        c = clamped(c, act);
    }
    // Back to image-major: image i's channel r is row r's columns i * plane...
    for (i, image) in out.chunks_exact_mut(m * plane).enumerate() {
        for (r, dst) in image.chunks_exact_mut(plane).enumerate() {
            dst.copy_from_slice(&c[r * n + i * plane..][..plane]);
        }
    }
}

/// [`conv2d_input_grad`] with an explicit column budget (in floats).
pub(crate) fn input_grad_with_budget(grad_out: &[f32], weight: &[f32], g: &Conv2dGeom, budget: usize, kept: Option<&Kept>) -> Vec<f32> {
    debug_assert_eq!(grad_out.len(), g.n * g.cout * g.out_h() * g.out_w());
    debug_assert_eq!(weight.len(), g.cout * (g.cin / g.groups) * g.kh * g.kw);
    if g.is_depthwise() {
        return depthwise::input_grad(grad_out, weight, g, None);
    }
    if let Some(gx) = scatter::input_grad(grad_out, weight, g) {
        return gx;
    }
    if g.is_pointwise() && g.groups == 1 && own_gemm(g.cin, g.out_h() * g.out_w(), false) {
        return pointwise_input_grad(grad_out, weight, g, None);
    }
    let mut gx = vec![0.0; g.n * g.cin * g.h * g.w];
    let (in_len, out_len, w_len) = g.group_lens();
    if in_len == 0 || out_len == 0 || w_len == 0 {
        return gx;
    }
    if let Some(plan) = winograd::choose(g, weight, kept) {
        winograd::input_grad(grad_out, weight, g, &plan, &mut gx, budget);
        return gx;
    }
    let (gv, mut cols) = (g.group_view(), Vec::new());
    let slices = gx.chunks_exact_mut(in_len).zip(grad_out.chunks_exact(out_len)).zip(weight.chunks_exact(w_len).cycle());
    for ((gxs, gos), ws) in slices {
        input_grad_group(gos, ws, gxs, &gv, &mut cols, budget);
    }
    gx
}

/// How many output rows fit in the column budget (at least one, at most all).
fn rows_per_chunk(col_rows: usize, out_h: usize, out_w: usize, budget: usize) -> usize {
    (budget / (col_rows * out_w).max(1)).clamp(1, out_h.max(1))
}

/// Output-row chunks `r0..r1` covering `0..out_h`.
fn row_chunks(out_h: usize, rows: usize) -> impl Iterator<Item = Range<usize>> {
    (0..out_h).step_by(rows).map(move |r0| r0..(r0 + rows).min(out_h))
}

/// out[cout, oh*ow] = bias + W[cout, k] * cols[k, oh*ow] for one image and group.
#[allow(clippy::too_many_arguments)]
fn forward_group(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [MaybeUninit<f32>], g: &Conv2dGeom, cols: &mut Vec<f32>, budget: usize, act: Option<Clamp>) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let plane = oh * ow;
    let k = g.cin * g.kh * g.kw;
    if own_gemm(g.cout, plane, false) {
        // Our GEMM reads a 1x1 conv's input as it is, and packs any other's im2col matrix straight
        // from the image, a row at a time.
        let a = MatRef::new(w, k);
        match g.is_pointwise() {
            true => sgemm::sgemm_fresh(g.cout, plane, k, a, &MatRef::new(x, plane), out, plane, start_from(bias), act),
            false => sgemm::sgemm_fresh(g.cout, plane, k, a, &Im2col { x, g }, out, plane, start_from(bias), act),
        }
        return;
    }
    let out = super::zeroed(out);
    fill_bias(out, bias, plane);
    if g.is_pointwise() {
        matmul(g.cout, plane, g.cin, MatRef::new(w, g.cin), MatRef::new(x, plane), out, plane, true);
        clamp_if(out, act);
        return;
    }
    let rows = rows_per_chunk(k, oh, ow, budget);
    cols.resize(k * rows * ow, 0.0);
    for chunk in row_chunks(oh, rows) {
        let nc = chunk.len() * ow;
        let buf = &mut cols[..k * nc];
        im2col(x, g, chunk.clone(), buf);
        // The chunk's outputs are a column block of `out`, rows `plane` apart.
        matmul(g.cout, nc, k, MatRef::new(w, k), MatRef::new(buf, nc), &mut out[chunk.start * ow..], plane, true);
    }
    clamp_if(out, act);
}

/// gx[cin, h*w] += col2im(W^T[k, cout] * G[cout, oh*ow]) for one image and group.
fn input_grad_group(go: &[f32], w: &[f32], gx: &mut [f32], g: &Conv2dGeom, cols: &mut Vec<f32>, budget: usize) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let plane = oh * ow;
    if g.is_pointwise() {
        matmul(g.cin, plane, g.cout, MatRef::new(w, g.cin).t(), MatRef::new(go, plane), gx, plane, false);
        return;
    }
    let k = g.cin * g.kh * g.kw;
    let rows = rows_per_chunk(k, oh, ow, budget.min(CACHED_COLUMNS));
    cols.resize(k * rows * ow, 0.0);
    for chunk in row_chunks(oh, rows) {
        let nc = chunk.len() * ow;
        let buf = &mut cols[..k * nc];
        matmul(k, nc, g.cout, MatRef::new(w, k).t(), MatRef::new(&go[chunk.start * ow..], plane), buf, nc, false);
        crate::profile::time(|| format!("  col2im {}x{}", g.kh, g.kw), || col2im_add(buf, g, chunk, gx));
    }
}

/// Splits a column-matrix row index into (input channel, ky, kx).
fn unpack_row(r: usize, g: &Conv2dGeom) -> (usize, usize, usize) {
    (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw)
}

/// Input row read by output row `oy` at kernel row `ky`, if it is not padding.
fn input_row(oy: usize, ky: usize, g: &Conv2dGeom) -> Option<usize> {
    (oy * g.stride_h + ky).checked_sub(g.pad_top).filter(|&iy| iy < g.h)
}

/// Fills cols[(ci, ky, kx), (oy - rows.start, ox)] with the input pixel each
/// output position sees through that tap (0 for padding).
fn im2col(x: &[f32], g: &Conv2dGeom, rows: Range<usize>, cols: &mut [f32]) {
    let ow = g.out_w();
    for (r, col_row) in cols.chunks_exact_mut(rows.len() * ow).enumerate() {
        let (ci, ky, kx) = unpack_row(r, g);
        let xplane = &x[ci * g.h * g.w..][..g.h * g.w];
        let valid = tap_range(ow, g.w, g.stride_w, kx, g.pad_left);
        for (oy, dst) in rows.clone().zip(col_row.chunks_exact_mut(ow)) {
            match input_row(oy, ky, g) {
                Some(iy) => gather_row(dst, &xplane[iy * g.w..][..g.w], valid.clone(), g.stride_w, kx, g.pad_left),
                None => dst.fill(0.0),
            }
        }
    }
}

/// The im2col matrix of one image and group (rows (ci, ky, kx), columns oy * out_w + ox), as a
/// source for our GEMM's packing: it never exists whole.
struct Im2col<'a> {
    x: &'a [f32],
    g: &'a Conv2dGeom,
}

impl RowSource for Im2col<'_> {
    fn row(&self, r: usize, cols: Range<usize>, dst: &mut [f32]) {
        let (g, ow) = (self.g, self.g.out_w());
        let (ci, ky, kx) = unpack_row(r, g);
        let xplane = &self.x[ci * g.h * g.w..][..g.h * g.w];
        let valid = tap_range(ow, g.w, g.stride_w, kx, g.pad_left);
        // `cols` may start and end inside output rows: one output row's part at a time.
        let (mut j, mut out) = (cols.start, dst);
        while j < cols.end {
            let (oy, ox0) = (j / ow, j % ow);
            let ox1 = ow.min(ox0 + cols.end - j);
            let (seg, rest) = out.split_at_mut(ox1 - ox0);
            match input_row(oy, ky, g) {
                Some(iy) => {
                    // The part of the row inside `valid`, shifted to this segment.
                    let v = valid.start.clamp(ox0, ox1)..valid.end.clamp(ox0, ox1);
                    let v = v.start - ox0..v.end.max(v.start) - ox0;
                    let src = &xplane[iy * g.w..][..g.w];
                    gather_row(seg, src, v, g.stride_w, kx + ox0 * g.stride_w, g.pad_left);
                }
                None => seg.fill(0.0),
            }
            (j, out) = (j + ox1 - ox0, rest);
        }
    }
}

/// dst[ox] = src[ox * stride + tap - pad] inside `valid`, 0 outside.
fn gather_row(dst: &mut [f32], src: &[f32], valid: Range<usize>, stride: usize, tap: usize, pad: usize) {
    dst[..valid.start].fill(0.0);
    dst[valid.end..].fill(0.0);
    if valid.is_empty() {
        return;
    }
    let src = &src[valid.start * stride + tap - pad..];
    let dst = &mut dst[valid];
    if stride == 1 {
        dst.copy_from_slice(&src[..dst.len()]);
    } else {
        dst.iter_mut().zip(src.iter().step_by(stride)).for_each(|(d, s)| *d = *s);
    }
}

/// Adjoint of [`im2col`]: adds every column entry back onto the pixel it came from.
fn col2im_add(cols: &[f32], g: &Conv2dGeom, rows: Range<usize>, gx: &mut [f32]) {
    let ow = g.out_w();
    for (r, col_row) in cols.chunks_exact(rows.len() * ow).enumerate() {
        let (ci, ky, kx) = unpack_row(r, g);
        let gplane = &mut gx[ci * g.h * g.w..][..g.h * g.w];
        let valid = tap_range(ow, g.w, g.stride_w, kx, g.pad_left);
        if valid.is_empty() {
            continue;
        }
        let x0 = valid.start * g.stride_w + kx - g.pad_left;
        for (oy, src) in rows.clone().zip(col_row.chunks_exact(ow)) {
            if let Some(iy) = input_row(oy, ky, g) {
                let dst = &mut gplane[iy * g.w..][..g.w][x0..];
                super::axpy_scatter(dst, &src[valid.clone()], g.stride_w, 1.0);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::activation::ReluRule;
    use crate::kernels::testutil::{assert_close, check_grad, dot, Rng};

    /// A test case: geometry plus the column budget (small values force chunking).
    pub(crate) struct Case {
        pub name: &'static str,
        pub g: Conv2dGeom,
        pub budget: usize,
    }

    /// Builds a geometry from (n, cin, h, w, cout), (kh, kw), (sh, sw), (top, bottom, left, right), groups.
    #[allow(clippy::type_complexity)]
    pub(crate) fn geom(
        (n, cin, h, w, cout): (usize, usize, usize, usize, usize),
        (kh, kw): (usize, usize),
        (stride_h, stride_w): (usize, usize),
        (pad_top, pad_bottom, pad_left, pad_right): (usize, usize, usize, usize),
        groups: usize,
    ) -> Conv2dGeom {
        Conv2dGeom { n, cin, h, w, cout, kh, kw, stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, groups }
    }

    /// The plain 7-loop definition (accumulated in f64), the reference for everything else.
    pub(crate) fn naive_conv(x: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Conv2dGeom) -> Vec<f64> {
        let (oh, ow, cin_g, cout_g) = (g.out_h(), g.out_w(), g.cin / g.groups, g.cout / g.groups);
        let mut out = vec![0.0; g.n * g.cout * oh * ow];
        for b in 0..g.n {
            for co in 0..g.cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias.map_or(0.0, |bs| bs[co] as f64);
                        for ci in 0..cin_g {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride_h + ky) as isize - g.pad_top as isize;
                                    let ix = (ox * g.stride_w + kx) as isize - g.pad_left as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                        continue;
                                    }
                                    let c = co / cout_g * cin_g + ci;
                                    let xv = x[((b * g.cin + c) * g.h + iy as usize) * g.w + ix as usize];
                                    let wv = wt[((co * cin_g + ci) * g.kh + ky) * g.kw + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        out[((b * g.cout + co) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    /// Random (x, weight, bias) for a case.
    fn inputs(g: &Conv2dGeom, rng: &mut Rng) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let x = rng.vec(g.n * g.cin * g.h * g.w);
        let w = rng.vec(g.cout * (g.cin / g.groups) * g.kh * g.kw);
        (x, w, rng.vec(g.cout))
    }

    pub(crate) fn check_forward(c: &Case, rng: &mut Rng) {
        let (x, w, b) = inputs(&c.g, rng);
        let got = forward_with_budget(&x, &w, Some(&b), &c.g, c.budget, None, None);
        assert_close(c.name, &got, &naive_conv(&x, &w, Some(&b), &c.g), 1e-5);
        let got = forward_with_budget(&x, &w, None, &c.g, c.budget, None, None);
        assert_close(c.name, &got, &naive_conv(&x, &w, None, &c.g), 1e-5);
    }

    pub(crate) fn check_input_grad(c: &Case, rng: &mut Rng) {
        let (x, w, b) = inputs(&c.g, rng);
        let r = rng.vec(c.g.n * c.g.cout * c.g.out_h() * c.g.out_w());
        let analytic = input_grad_with_budget(&r, &w, &c.g, c.budget, None);
        let f = |x: &[f32]| forward_with_budget(x, &w, Some(&b), &c.g, c.budget, None, None);
        check_grad(c.name, f, &x, &r, &analytic, rng);
    }

    pub(crate) fn check_adjoint(c: &Case, rng: &mut Rng) {
        let (x, w, _) = inputs(&c.g, rng);
        let y = rng.vec(c.g.n * c.g.cout * c.g.out_h() * c.g.out_w());
        let lhs = dot(&forward_with_budget(&x, &w, None, &c.g, c.budget, None, None), &y);
        let rhs = dot(&x, &input_grad_with_budget(&y, &w, &c.g, c.budget, None));
        assert!((lhs - rhs).abs() <= 1e-4 * lhs.abs().max(rhs.abs()), "{}: <conv x, y> = {lhs} but <x, conv^T y> = {rhs}", c.name);
    }

    fn cases() -> Vec<Case> {
        let big = COL_BUDGET_FLOATS;
        let case = |name, g, budget| Case { name, g, budget };
        vec![
            case("3x3 s1 p1", geom((1, 3, 8, 8, 4), (3, 3), (1, 1), (1, 1, 1, 1), 1), big),
            case("3x3 s2 pad t0 b1 l0 r1", geom((1, 3, 8, 8, 4), (3, 3), (2, 2), (0, 1, 0, 1), 1), big),
            case("5x5 s2 SAME", geom((1, 3, 10, 10, 4), (5, 5), (2, 2), (1, 2, 1, 2), 1), big),
            case("7x7 s2 p3", geom((1, 3, 12, 12, 4), (7, 7), (2, 2), (3, 3, 3, 3), 1), big),
            case("11x11 s4 p2", geom((1, 3, 23, 23, 4), (11, 11), (4, 4), (2, 2, 2, 2), 1), big),
            case("1x1 s1", geom((1, 5, 6, 7, 6), (1, 1), (1, 1), (0, 0, 0, 0), 1), big),
            case("1x1 s2", geom((1, 5, 7, 8, 6), (1, 1), (2, 2), (0, 0, 0, 0), 1), big),
            case("non-square 9x14 k3x2 s2x3", geom((1, 3, 9, 14, 4), (3, 2), (2, 3), (1, 2, 0, 1), 1), big),
            case("groups=2 3x3 p1", geom((1, 4, 7, 6, 6), (3, 3), (1, 1), (1, 1, 1, 1), 2), big),
            case("groups=2 1x1", geom((2, 4, 5, 5, 6), (1, 1), (1, 1), (0, 0, 0, 0), 2), big),
            case("batch 2 3x3 s2 p1", geom((2, 3, 9, 8, 5), (3, 3), (2, 2), (1, 1, 1, 1), 1), big),
            case("batch 2 1x1 s1", geom((2, 4, 5, 6, 3), (1, 1), (1, 1), (0, 0, 0, 0), 1), big),
            // 5 rows of 64 columns per chunk: 13 chunks, the last one partial.
            case("chunked 16x64x64 -> 8", geom((1, 16, 64, 64, 8), (3, 3), (1, 1), (1, 1, 1, 1), 1), 16 * 9 * 64 * 5),
            case("chunked batch 2 s2", geom((2, 4, 20, 18, 3), (3, 3), (2, 2), (0, 1, 0, 1), 1), 1),
        ]
    }

    #[test]
    fn forward_matches_naive() {
        let mut rng = Rng::new(11);
        cases().iter().for_each(|c| check_forward(c, &mut rng));
    }

    #[test]
    fn input_grad_matches_finite_differences() {
        let mut rng = Rng::new(12);
        cases().iter().for_each(|c| check_input_grad(c, &mut rng));
    }

    #[test]
    fn input_grad_is_adjoint_of_forward() {
        let mut rng = Rng::new(13);
        cases().iter().for_each(|c| check_adjoint(c, &mut rng));
    }

    #[test]
    fn column_buffer_stays_under_budget() {
        // VGG-16 conv1_2: 64 -> 64 channels, 3x3, 224x224.
        let k = 64 * 9;
        let rows = rows_per_chunk(k, 224, 224, COL_BUDGET_FLOATS);
        assert!(rows >= 1 && k * rows * 224 * 4 <= 8 << 20, "{rows} rows");
        // A single row larger than the budget still makes progress.
        assert_eq!(rows_per_chunk(k, 224, 224, 1), 1);
        assert_eq!(row_chunks(10, 4).collect::<Vec<_>>(), vec![0..4, 4..8, 8..10]);
    }

    /// A batch's images taken side by side as one product's columns give bitwise what each image
    /// gives alone: every output sums over the same depth blocks in the same order.
    #[test]
    fn batched_columns_change_no_bit() {
        let mut rng = Rng::new(19);
        let cases = [
            ("pointwise 7x7", geom((5, 24, 7, 7, 40), (1, 1), (1, 1), (0, 0, 0, 0), 1), COL_BUDGET_FLOATS),
            // 300 deep: two depth blocks of our GEMM, so the order across blocks is covered too.
            ("pointwise deep 5x3", geom((3, 300, 5, 3, 12), (1, 1), (1, 1), (0, 0, 0, 0), 1), COL_BUDGET_FLOATS),
            ("im2col 3x3 s2", geom((4, 8, 14, 14, 16), (3, 3), (2, 2), (1, 1, 1, 1), 1), COL_BUDGET_FLOATS),
            ("im2col 1x1 s2", geom((3, 6, 9, 9, 10), (1, 1), (2, 2), (0, 0, 0, 0), 1), COL_BUDGET_FLOATS),
            // Room for 2 images per product (16 x 25 x 49 floats each): chunks of 2, 2 and 1.
            ("chunked 5 images", geom((5, 16, 7, 7, 8), (5, 5), (1, 1), (2, 2, 2, 2), 1), 16 * 25 * 49 * 2),
        ];
        for (name, g, budget) in cases {
            assert!(images_per_gemm(&g, budget) > 1, "{name}: not batched");
            let x = rng.vec(g.n * g.cin * g.h * g.w);
            let w = rng.vec(g.cout * g.cin * g.kh * g.kw);
            let b = rng.vec(g.cout);
            let batched = forward_with_budget(&x, &w, Some(&b), &g, budget, None, None);
            let one = Conv2dGeom { n: 1, ..g };
            let alone: Vec<f32> = x.chunks_exact(g.cin * g.h * g.w).flat_map(|xi| forward_with_budget(xi, &w, Some(&b), &one, budget, None, None)).collect();
            assert!(bits(&batched) == bits(&alone), "{name}: batched differs from one image at a time");
            check_forward(&Case { name, g, budget }, &mut rng);
        }
    }

    /// A conv whose output plane is too wide, a grouped one, or a lone image keeps to one product per image.
    #[test]
    fn only_small_ungrouped_planes_batch() {
        let big = COL_BUDGET_FLOATS;
        assert_eq!(images_per_gemm(&geom((8, 320, 7, 7, 1280), (1, 1), (1, 1), (0, 0, 0, 0), 1), big), 8);
        assert_eq!(images_per_gemm(&geom((8, 112, 14, 14, 672), (1, 1), (1, 1), (0, 0, 0, 0), 1), big), 5);
        assert_eq!(images_per_gemm(&geom((8, 24, 56, 56, 144), (1, 1), (1, 1), (0, 0, 0, 0), 1), big), 1);
        assert_eq!(images_per_gemm(&geom((1, 320, 7, 7, 1280), (1, 1), (1, 1), (0, 0, 0, 0), 1), big), 1);
        assert_eq!(images_per_gemm(&geom((8, 8, 7, 7, 8), (1, 1), (1, 1), (0, 0, 0, 0), 2), big), 1);
        // The product's output (cout x columns floats) stays within the budget.
        let g = geom((8, 320, 7, 7, 1280), (1, 1), (1, 1), (0, 0, 0, 0), 1);
        assert_eq!(images_per_gemm(&g, 1280 * 49 * 3), 3);
        assert_eq!(images_per_gemm(&g, 10), 1);
    }

    /// Each value's bits.
    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Random input (in [-4, 4), so that outputs pass both of ReLU6's kinks), weights and bias of `g`.
    fn operands(rng: &mut Rng, g: &Conv2dGeom) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let x = rng.vec(g.n * g.cin * g.h * g.w).iter().map(|v| 4.0 * v).collect();
        (x, rng.vec(g.cout * (g.cin / g.groups) * g.kh * g.kw), rng.vec(g.cout))
    }

    /// A ReLU / ReLU6 applied by the conv's kernels (each finished block of a product, each block of
    /// depthwise outputs) gives the bits of a pass of its own after the conv, on every path:
    /// pointwise, im2col (with a depth over one block, where only the last block's sums may be
    /// clamped), images side by side, Winograd, depthwise; edge tiles; a NaN passes through.
    #[test]
    fn a_fused_clamp_is_a_clamp_pass() {
        let mut rng = Rng::new(31);
        let cases = [
            ("pointwise", geom((1, 24, 9, 13, 30), (1, 1), (1, 1), (0, 0, 0, 0), 1)),
            ("im2col depth 360", geom((1, 40, 11, 10, 19), (3, 3), (2, 2), (1, 1, 1, 1), 1)),
            ("side by side 7x7", geom((5, 48, 7, 7, 21), (1, 1), (1, 1), (0, 0, 0, 0), 1)),
            ("winograd", geom((1, 16, 12, 12, 8), (3, 3), (1, 1), (1, 1, 1, 1), 1)),
            ("depthwise", geom((1, 6, 9, 9, 6), (3, 3), (1, 1), (1, 1, 1, 1), 6)),
        ];
        for (name, g) in cases {
            let (mut x, w, b) = operands(&mut rng, &g);
            x[5] = f32::NAN;
            for act in [Clamp::Relu, Clamp::Relu6] {
                let fused = conv2d_forward_act(&x, &w, Some(&b), &g, Some(act), None);
                let mut pass = conv2d_forward(&x, &w, Some(&b), &g);
                clamp_in_place(&mut pass, act);
                let top = if act == Clamp::Relu6 { pass.contains(&6.0) } else { pass.iter().any(|v| *v > 6.0) };
                assert!(top && pass.contains(&0.0) && pass.iter().any(|v| v.is_nan()), "{name}: the case reaches both kinks");
                assert!(bits(&fused) == bits(&pass), "{name} {act:?}: the fused clamp differs from a pass");
            }
        }
    }

    /// The input gradient through a fused ReLU gives the bits of the ReLU's backward in a pass of its
    /// own and then the conv's, on every path (the 1x1 product's gated B, the depthwise blocks, the
    /// pass before the others), for every rule, with a second image (whose `y` starts further on).
    #[test]
    fn a_gated_input_grad_is_the_relu_backward_then_the_conv() {
        let mut rng = Rng::new(32);
        let cases = [
            ("pointwise", geom((2, 24, 9, 13, 30), (1, 1), (1, 1), (0, 0, 0, 0), 1)),
            ("depthwise", geom((2, 6, 9, 9, 6), (3, 3), (1, 1), (1, 1, 1, 1), 6)),
            ("depthwise s2", geom((1, 9, 10, 11, 9), (5, 5), (2, 2), (1, 2, 2, 2), 9)),
            ("im2col", geom((2, 5, 8, 8, 7), (3, 3), (2, 2), (1, 1, 1, 1), 1)),
        ];
        for (name, g) in cases {
            let (x, w, b) = operands(&mut rng, &g);
            let go = rng.vec(g.n * g.cout * g.out_h() * g.out_w());
            for clamp in [Clamp::Relu, Clamp::Relu6] {
                let y = conv2d_forward_act(&x, &w, Some(&b), &g, Some(clamp), None);
                assert!(y.contains(&0.0) && (clamp == Clamp::Relu || y.contains(&6.0)), "{name}: y reaches the kinks");
                for rule in [ReluRule::Plain, ReluRule::Guided, ReluRule::Deconv] {
                    let gated = conv2d_input_grad_gated(&go, &w, &g, None, ReluGate { y: &y, clamp, rule });
                    let apart = conv2d_input_grad(&relu_output_grad(&y, &go, clamp, rule), &w, &g, None);
                    assert!(bits(&gated) == bits(&apart), "{name} {clamp:?} {rule:?}: the gated input gradient differs");
                }
            }
        }
    }

    /// Every conv kernel split across a pool of 3 threads gives bitwise what one thread gives: the
    /// splits are by outputs only (`kernels::parallel`), never inside a sum.
    /// A 1x1 conv with no output channels has nothing to sum: its input gradient is zeros, fused
    /// ReLU or not, rather than a product over empty images.
    #[test]
    fn an_empty_pointwise_sum_gives_a_zero_gradient() {
        let g = geom((2, 16, 8, 8, 0), (1, 1), (1, 1), (0, 0, 0, 0), 1);
        assert_eq!(conv2d_input_grad(&[], &[], &g, None), vec![0.0; 2 * 16 * 64]);
        let gate = ReluGate { y: &[], clamp: Clamp::Relu, rule: crate::kernels::ReluRule::Guided };
        assert_eq!(conv2d_input_grad_gated(&[], &[], &g, None, gate), vec![0.0; 2 * 16 * 64]);
    }

    #[test]
    fn threads_change_no_bit() {
        let pool = |n: usize| rayon::ThreadPoolBuilder::new().num_threads(n).build().expect("a pool");
        let (one, three) = (pool(1), pool(3));
        let mut rng = Rng::new(17);
        let cases = [
            ("winograd 3x3", geom((1, 48, 28, 28, 40), (3, 3), (1, 1), (1, 1, 1, 1), 1)),
            ("im2col 5x5 s2", geom((1, 24, 30, 30, 36), (5, 5), (2, 2), (2, 2, 2, 2), 1)),
            ("pointwise", geom((2, 64, 14, 14, 96), (1, 1), (1, 1), (0, 0, 0, 0), 1)),
            ("pointwise batched 7x7", geom((6, 48, 7, 7, 64), (1, 1), (1, 1), (0, 0, 0, 0), 1)),
            ("im2col batched 3x3 s2", geom((4, 16, 13, 13, 24), (3, 3), (2, 2), (1, 1, 1, 1), 1)),
            ("depthwise 3x3 s2", geom((2, 40, 29, 29, 40), (3, 3), (2, 2), (1, 1, 1, 1), 40)),
        ];
        for (name, g) in cases {
            let x = rng.vec(g.n * g.cin * g.h * g.w);
            let w = rng.vec(g.cout * (g.cin / g.groups) * g.kh * g.kw);
            let go = rng.vec(g.n * g.cout * g.out_h() * g.out_w());
            let run = |p: &rayon::ThreadPool| p.install(|| (conv2d_forward(&x, &w, None, &g), conv2d_input_grad(&go, &w, &g, None)));
            assert_eq!(three.install(crate::kernels::parallel::threads), 3);
            let ((f1, g1), (f3, g3)) = (run(&one), run(&three));
            assert!(bits(&f1) == bits(&f3), "{name}: the forward differs across thread counts");
            assert!(bits(&g1) == bits(&g3), "{name}: the input gradient differs across thread counts");
        }
    }
}
