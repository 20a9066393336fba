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
//! rows), so LLVM vectorises them with simd128. The weights are transformed on every call: kept
//! transformed, they would cost 1.8-4x the weights' memory, twice (forward and backward).
//!
//! The input gradient of a stride-1 3x3 conv is itself a 3x3 stride-1 conv of the output gradient
//! with the kernels flipped and cin/cout swapped, so it runs through the same code.

use super::{matmul, Conv2dGeom, MatRef};

/// One F(m x m, 3 x 3) algorithm: tiles of `m` outputs per side read `alpha = m + 2` inputs per side.
/// The matrices are row-major: `bt` (alpha x alpha) transforms inputs, `g` (alpha x 3) kernels,
/// `at` (m x alpha) takes products back to outputs.
#[derive(Debug)]
pub(crate) struct Variant {
    pub m: usize,
    pub alpha: usize,
    bt: &'static [f32],
    g: &'static [f32],
    at: &'static [f32],
}

/// F(2x2, 3x3), interpolation points 0, 1, -1 and infinity: transforms of additions only, nearly
/// as exact as the direct sums.
pub(crate) const F2: Variant = Variant {
    m: 2,
    alpha: 4,
    #[rustfmt::skip]
    bt: &[
        1.0,  0.0, -1.0,  0.0,
        0.0,  1.0,  1.0,  0.0,
        0.0, -1.0,  1.0,  0.0,
        0.0,  1.0,  0.0, -1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0,  0.0, 0.0,
        0.5,  0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0,  0.0, 1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0,  1.0,  0.0,
        0.0, 1.0, -1.0, -1.0,
    ],
};

/// F(4x4, 3x3), interpolation points 0, 1, -1, 2, -2 and infinity.
pub(crate) const F4: Variant = Variant {
    m: 4,
    alpha: 6,
    #[rustfmt::skip]
    bt: &[
        4.0,  0.0, -5.0,  0.0, 1.0, 0.0,
        0.0, -4.0, -4.0,  1.0, 1.0, 0.0,
        0.0,  4.0, -4.0, -1.0, 1.0, 0.0,
        0.0, -2.0, -1.0,  2.0, 1.0, 0.0,
        0.0,  2.0, -1.0, -2.0, 1.0, 0.0,
        0.0,  4.0,  0.0, -5.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0 / 4.0,   0.0,         0.0,
        -1.0 / 6.0,  -1.0 / 6.0,  -1.0 / 6.0,
        -1.0 / 6.0,  1.0 / 6.0,   -1.0 / 6.0,
        1.0 / 24.0,  1.0 / 12.0,  1.0 / 6.0,
        1.0 / 24.0,  -1.0 / 12.0, 1.0 / 6.0,
        0.0,         0.0,         1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0,  1.0, 1.0,  1.0, 0.0,
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
        0.0, 1.0,  1.0, 4.0,  4.0, 0.0,
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ],
};

/// A/B switch for `scripts/wasm-bench.sh` (`AB=winograd`) and the accuracy comparison in the
/// tests: sends every conv through im2col + GEMM again.
#[doc(hidden)]
pub static WINOGRAD_OFF: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The variant worth using for this conv, if any: 3x3, stride 1, ungrouped, and at most 0.8x the
/// direct product's cost by the estimate in [`cost`].
pub(crate) fn choose(g: &Conv2dGeom) -> Option<&'static Variant> {
    // Pads above 2 would make the input gradient's pads (2 - pad) negative.
    let max_pad = g.pad_top.max(g.pad_bottom).max(g.pad_left).max(g.pad_right);
    let eligible = g.kh == 3 && g.kw == 3 && g.stride_h == 1 && g.stride_w == 1 && g.groups == 1 && max_pad <= 2;
    if !eligible || WINOGRAD_OFF.load(core::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let direct = cost(g, None);
    [&F2, &F4]
        .into_iter()
        .map(|v| (cost(g, Some(v)), v))
        .filter(|(c, _)| *c < 0.8 * direct)
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v)
}

/// Estimated time of one conv in units of one GEMM multiply-add (about 0.05 ns in wasm here),
/// directly (`None`) or by Winograd. The constants are fits to wasm profiles of ResNet-18 and VGG
/// (`PROFILE=1 scripts/wasm-bench.sh`): a product of N columns costs about N + 8 columns' worth
/// (packing and loop overhead dominate small N); transforming an element of U costs about 10, an
/// element of V (per channel) 10 + 160 / (tiles across), one of M 5 + 120 / (tiles across): short
/// rows of tiles pay the transforms' loop overhead. Hence 56x56 and 28x28 planes take F(4x4),
/// 14x14 ones F(2x2), and ResNet's 7x7 x 512-channel layer4 stays direct.
fn cost(g: &Conv2dGeom, v: Option<&Variant>) -> f64 {
    let (oh, ow) = (g.out_h(), g.out_w());
    let (n, ci, co) = (g.n as f64, g.cin as f64, g.cout as f64);
    let gemm = |columns: usize, depth: f64| co * depth * (columns as f64 + 8.0);
    let Some(v) = v else {
        return n * gemm(oh * ow, 9.0 * ci);
    };
    let (across, tiles) = (ow.div_ceil(v.m) as f64, (oh.div_ceil(v.m) * ow.div_ceil(v.m)));
    let a2 = (v.alpha * v.alpha) as f64;
    let transforms = tiles as f64 * a2 * (ci * (10.0 + 160.0 / across) + co * (5.0 + 120.0 / across));
    n * (a2 * gemm(tiles, ci) + transforms) + 10.0 * a2 * co * ci
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
/// operand of its product, read in place by the GEMM. `w` is (cout, cin, 3, 3). With `flip`, the
/// input gradient's kernels: rotated by 180 degrees and cin/cout swapped, `U[xi][ci][co]`. Built one
/// row at a time (vectors over the depth, so the arithmetic vectorises).
fn transform_weights(w: &[f32], cout: usize, cin: usize, flip: bool, v: &Variant) -> Vec<f32> {
    let (a, a2) = (v.alpha, v.alpha * v.alpha);
    let (rows, depth) = if flip { (cin, cout) } else { (cout, cin) };
    let mut u = vec![0.0; a2 * rows * depth];
    let mut taps = vec![0.0; 9 * depth];
    let mut half = vec![0.0; a * 3 * depth];
    let mut one = vec![0.0; depth];
    for row in 0..rows {
        for d in 0..depth {
            let k = if flip { &w[(d * cin + row) * 9..][..9] } else { &w[(row * cin + d) * 9..][..9] };
            for t in 0..9 {
                taps[t * depth + d] = k[if flip { 8 - t } else { t }];
            }
        }
        // half[r][kx] = sum_ky G[r][ky] * taps[ky][kx]
        for r in 0..a {
            for kx in 0..3 {
                let dst = &mut half[(r * 3 + kx) * depth..][..depth];
                combine(&v.g[r * 3..][..3], |ky| &taps[(ky * 3 + kx) * depth..][..depth], dst);
            }
        }
        // U[r][c] = sum_kx G[c][kx] * half[r][kx]
        for r in 0..a {
            for c in 0..a {
                combine(&v.g[c * 3..][..3], |kx| &half[(r * 3 + kx) * depth..][..depth], &mut one);
                u[((r * a + c) * rows + row) * depth..][..depth].copy_from_slice(&one);
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

/// V[xi][ci][t] for the tiles of tile rows `rows` (t counts from the first of them): each channel
/// is gathered into `patch[ky][kx][t]` (zeros outside the image), then transformed along y and x.
fn transform_input(x: &[f32], cin: usize, tl: &Tiling, rows: core::ops::Range<usize>, v: &Variant, vbuf: &mut Vec<f32>, scratch: &mut Scratch) {
    let Scratch(patch, half) = scratch;
    let (a, a2) = (v.alpha, v.alpha * v.alpha);
    let nt = rows.len() * tl.tx;
    vbuf.resize(a2 * cin * nt, 0.0);
    patch.resize(a2 * nt, 0.0);
    half.resize(a2 * nt, 0.0);
    // One input row at a time, copied into a zero-padded row so the gathers need no bounds tests.
    let mut padded = vec![0.0; tl.tx * v.m + a];
    for ci in 0..cin {
        let plane = &x[ci * tl.h * tl.w..][..tl.h * tl.w];
        for (r, ty) in rows.clone().enumerate() {
            for ky in 0..a {
                let iy = (ty * v.m + ky).checked_sub(tl.pad_top).filter(|&iy| iy < tl.h);
                padded.fill(0.0);
                if let Some(iy) = iy {
                    // Input column ix sits at padded[ix + pad_left]; tile tx's patch starts at tx * m.
                    let src = &plane[iy * tl.w..][..tl.w];
                    let (lo, len) = (tl.pad_left, tl.w.min(padded.len().saturating_sub(tl.pad_left)));
                    padded[lo..lo + len].copy_from_slice(&src[..len]);
                }
                for kx in 0..a {
                    let dst = &mut patch[(ky * a + kx) * nt + r * tl.tx..][..tl.tx];
                    dst.iter_mut().zip(padded[kx..].iter().step_by(v.m)).for_each(|(d, &s)| *d = s);
                }
            }
        }
        // half[r][kx] = sum_ky Bt[r][ky] * patch[ky][kx]: rows of a * nt at once.
        for r in 0..a {
            combine(&v.bt[r * a..][..a], |ky| &patch[ky * a * nt..][..a * nt], &mut half[r * a * nt..][..a * nt]);
        }
        // V[r][c] = sum_kx Bt[c][kx] * half[r][kx]
        for r in 0..a {
            for c in 0..a {
                let dst = &mut vbuf[((r * a + c) * cin + ci) * nt..][..nt];
                combine(&v.bt[c * a..][..a], |kx| &half[(r * a + kx) * nt..][..nt], dst);
            }
        }
    }
}

/// out[co] += the outputs of M[xi][co][t] (tile rows `rows`), clipped to the output plane.
fn transform_output(mbuf: &[f32], cout: usize, tl: &Tiling, rows: core::ops::Range<usize>, v: &Variant, out: &mut [f32], scratch: &mut Scratch) {
    let Scratch(half, tile) = scratch;
    let (a, m) = (v.alpha, v.m);
    let nt = rows.len() * tl.tx;
    half.resize(m * a * nt, 0.0);
    tile.resize(m * m * nt, 0.0);
    for co in 0..cout {
        // half[i][c] = sum_r At[i][r] * M[r][c], then tile[i][j] = sum_c At[j][c] * half[i][c].
        for i in 0..m {
            for c in 0..a {
                let dst = &mut half[(i * a + c) * nt..][..nt];
                combine(&v.at[i * a..][..a], |r| &mbuf[((r * a + c) * cout + co) * nt..][..nt], dst);
            }
        }
        for i in 0..m {
            for j in 0..m {
                let dst = &mut tile[(i * m + j) * nt..][..nt];
                combine(&v.at[j * a..][..a], |c| &half[(i * a + c) * nt..][..nt], dst);
            }
        }
        let plane = &mut out[co * tl.oh * tl.ow..][..tl.oh * tl.ow];
        for (r, ty) in rows.clone().enumerate() {
            for i in 0..m.min(tl.oh - ty * m) {
                let orow = &mut plane[(ty * m + i) * tl.ow..][..tl.ow];
                for j in 0..m {
                    let src = &tile[(i * m + j) * nt + r * tl.tx..][..tl.tx];
                    // Output column tx * m + j, for the tiles whose column is inside the plane.
                    let live = (tl.ow + m - 1 - j) / m;
                    for (tx, &s) in src[..live].iter().enumerate() {
                        orow[tx * m + j] += s;
                    }
                }
            }
        }
    }
}

/// `out (cout, oh, ow) += conv3x3(x (cin, h, w))` for one image, with `u` from
/// [`transform_weights`] (cout x cin per xi).
fn conv_image(x: &[f32], u: &[f32], cin: usize, cout: usize, tl: &Tiling, v: &Variant, out: &mut [f32], budget: usize) {
    let a2 = v.alpha * v.alpha;
    // Tile rows per chunk: V and M together stay near `budget` floats.
    let per_row = a2 * (cin + cout) * tl.tx;
    let rows_per = (budget / per_row.max(1)).clamp(1, tl.ty.max(1));
    let (mut vbuf, mut mbuf, mut scratch) = (Vec::new(), Vec::new(), Scratch::default());
    for r0 in (0..tl.ty).step_by(rows_per) {
        let rows = r0..(r0 + rows_per).min(tl.ty);
        let nt = rows.len() * tl.tx;
        let t = |name: &str| format!("  winograd F{} {name} {}@{}", v.m, cout, tl.oh);
        crate::exec::profile::time(|| t("in"), || transform_input(x, cin, tl, rows.clone(), v, &mut vbuf, &mut scratch));
        mbuf.resize(a2 * cout * nt, 0.0);
        for xi in 0..a2 {
            let a = MatRef::new(&u[xi * cout * cin..][..cout * cin], cin);
            let b = MatRef::new(&vbuf[xi * cin * nt..][..cin * nt], nt);
            crate::exec::profile::time(|| t("gemm"), || matmul(cout, nt, cin, a, b, &mut mbuf[xi * cout * nt..][..cout * nt], nt, false));
        }
        crate::exec::profile::time(|| t("out"), || transform_output(&mbuf, cout, tl, rows, v, out, &mut scratch));
    }
}

/// `out (n, cout, oh, ow) += conv(x)`: the forward of a conv that [`choose`] accepted.
pub(crate) fn forward(x: &[f32], w: &[f32], g: &Conv2dGeom, v: &Variant, out: &mut [f32], budget: usize) {
    let u = crate::exec::profile::time(|| format!("  winograd F{} U {}@{}", v.m, g.cout, g.h), || transform_weights(w, g.cout, g.cin, false, v));
    let tl = Tiling::new(g.h, g.w, g.pad_top, g.pad_left, g.out_h(), g.out_w(), v);
    let (in_len, out_len) = (g.cin * g.h * g.w, g.cout * tl.oh * tl.ow);
    for (xs, os) in x.chunks_exact(in_len).zip(out.chunks_exact_mut(out_len)) {
        conv_image(xs, &u, g.cin, g.cout, &tl, v, os, budget);
    }
}

/// `gx (n, cin, h, w) += d loss / d x` given `go` (n, cout, oh, ow): the same conv run backwards,
/// over the output gradient padded by `2 - pad` on each side, with flipped kernels and cin/cout swapped.
pub(crate) fn input_grad(go: &[f32], w: &[f32], g: &Conv2dGeom, v: &Variant, gx: &mut [f32], budget: usize) {
    let u = crate::exec::profile::time(|| format!("  winograd F{} U {}@{}", v.m, g.cout, g.h), || transform_weights(w, g.cout, g.cin, true, v));
    let (oh, ow) = (g.out_h(), g.out_w());
    let tl = Tiling::new(oh, ow, 2 - g.pad_top, 2 - g.pad_left, g.h, g.w, v);
    let (in_len, out_len) = (g.cin * g.h * g.w, g.cout * oh * ow);
    for (gos, gxs) in go.chunks_exact(out_len).zip(gx.chunks_exact_mut(in_len)) {
        conv_image(gos, &u, g.cout, g.cin, &tl, v, gxs, budget);
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

    #[test]
    fn forward_matches_naive_for_both_variants_and_chunkings() {
        let mut rng = Rng::new(21);
        for g in cases() {
            let x = rng.vec(g.n * g.cin * g.h * g.w);
            let w = rng.vec(g.cout * g.cin * 9);
            let want = naive_conv(&x, &w, None, &g);
            for v in [&F2, &F4] {
                for budget in [1, 1 << 20] {
                    let mut got = vec![0.0; want.len()];
                    forward(&x, &w, &g, v, &mut got, budget);
                    // F(4x4)'s transforms scale values by up to ~10x before they cancel.
                    let rel = if v.m == 4 { 2e-5 } else { 1e-5 };
                    assert_close(&format!("F{} {g:?} budget {budget}", v.m), &got, &want, rel);
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
            // <conv x, y> computed directly must equal <x, conv^T y> computed by Winograd.
            let lhs: f64 = naive_conv(&x, &w, None, &g).iter().zip(&y).map(|(a, b)| a * *b as f64).sum();
            for v in [&F2, &F4] {
                let mut gx = vec![0.0; x.len()];
                input_grad(&y, &w, &g, v, &mut gx, 1 << 20);
                let rhs = dot(&x, &gx);
                assert!((lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0), "F{} {g:?}: {lhs} vs {rhs}", v.m);
            }
        }
    }

    #[test]
    fn choice_follows_the_plane_size() {
        let g = |c, hw| geom((1, c, hw, hw, c), (3, 3), (1, 1), (1, 1, 1, 1), 1);
        // ResNet-18's stride-1 3x3 layers, as measured fastest in wasm: 56x56 and 28x28 take F(4x4),
        // 14x14 F(2x2); 7x7 with 512 channels stays direct.
        assert_eq!(choose(&g(64, 56)).map(|v| v.m), Some(4));
        assert_eq!(choose(&g(128, 28)).map(|v| v.m), Some(4));
        assert_eq!(choose(&g(256, 14)).map(|v| v.m), Some(2));
        assert!(choose(&g(512, 7)).is_none());
        // VGG-16's first layers: 224x224.
        assert_eq!(choose(&g(64, 224)).map(|v| v.m), Some(4));
        // Not 3x3 stride 1 ungrouped: never.
        assert!(choose(&geom((1, 8, 16, 16, 8), (3, 3), (2, 2), (1, 1, 1, 1), 1)).is_none());
        assert!(choose(&geom((1, 8, 16, 16, 8), (3, 3), (1, 1), (1, 1, 1, 1), 2)).is_none());
        assert!(choose(&geom((1, 8, 16, 16, 8), (5, 5), (1, 1), (2, 2, 2, 2), 1)).is_none());
    }
}
