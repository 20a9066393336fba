//! The input gradient of a conv whose output gradient is mostly zeros: each nonzero scatters its
//! taps, instead of the dense product over every output position (W^T times the output gradient,
//! then col2im).
//!
//! Why: a walk back to the pixels (Guided Backprop, Guided Grad-CAM, Integrated Gradients, ...)
//! reaches a ResNet's 7x7 stem through its max pool, which passes each window's gradient to one
//! position, and (guided) through a ReLU that passes only positive values: 9% of ResNet-18's stem
//! output gradient is nonzero. The dense product multiplies the other 91% too.
//!
//! A nonzero `go[co][oy][ox]` adds `go * w[co][ci][ky][..]`, a row of `kw` adjacent taps, to input
//! row `oy * sh + ky - pad_top` from column `ox * sw - pad_left`. The rows land in a plane padded so
//! that every tap falls inside it, in 4-lane steps over `kw` rounded up to 4 (the weight rows padded
//! with zeros, which add nothing). Each input element sums its terms in the nonzeros' order (oy, co,
//! ox), a multiply then an add, on every build and any thread count: the same bits natively and in
//! wasm.

use super::Conv2dGeom;

/// Narrower kernels leave too many of each step's 4 lanes idle (2 of 4 at 3x3, where Winograd
/// or the dense product serve better).
const MIN_KERNEL_WIDTH: usize = 5;

/// The largest share of nonzeros at which the scatter is taken. ResNet-18's stem in wasm, 11.7%
/// nonzero: 3.7 ms scattered against 8.5-9.0 dense. About 1 ms of the scatter is fixed (the census,
/// the scan for nonzeros, the plane) and the rest grows with the nonzeros: even near 30%.
const MAX_DENSITY: f64 = 0.25;

/// `d loss / d x` for `grad_out` (n, cout, oh, ow) where few of its values are nonzero, else `None`
/// (the caller takes the dense path): ungrouped convs at least [`MIN_KERNEL_WIDTH`] wide whose
/// output gradient is finite and at most [`MAX_DENSITY`] nonzero. A non-finite value would turn
/// the weight rows' zero padding into NaNs in the neighbouring columns.
pub(crate) fn input_grad(grad_out: &[f32], weight: &[f32], g: &Conv2dGeom) -> Option<Vec<f32>> {
    if g.groups != 1 || g.kw < MIN_KERNEL_WIDTH || grad_out.is_empty() || g.cin * g.h * g.w == 0 {
        return None;
    }
    let (nonzeros, non_finite) = census(grad_out);
    if non_finite > 0 || nonzeros as f64 > MAX_DENSITY * grad_out.len() as f64 {
        return None;
    }
    Some(crate::profile::time(|| format!("  scatter {}x{}", g.kh, g.kw), || scatter(grad_out, weight, g, nonzeros)))
}

/// [`input_grad`] once it is known to pay.
fn scatter(grad_out: &[f32], weight: &[f32], g: &Conv2dGeom, nonzeros: usize) -> Vec<f32> {
    let geometry = Padded::new(g);
    let rows = weight_rows(weight, g, geometry.kw4);
    let out_len = g.cout * g.out_h() * g.out_w();
    let mut gx = vec![0.0; g.n * g.cin * g.h * g.w];
    for (go, gx) in grad_out.chunks_exact(out_len).zip(gx.chunks_exact_mut(g.cin * g.h * g.w)) {
        let plane = scatter_image(go, &rows, g, &geometry, nonzeros);
        geometry.crop(&plane, g, gx);
    }
    gx
}

/// How many values are nonzero, and how many are not finite: integer tests on the bits (all
/// exponent bits set: infinite or NaN), which vectorise where float tests with an early exit do not.
fn census(values: &[f32]) -> (usize, usize) {
    const EXPONENT: u32 = 0x7f80_0000;
    values.iter().fold((0, 0), |(nonzero, non_finite), v| {
        let bits = v.to_bits();
        (nonzero + (bits << 1 != 0) as usize, non_finite + (bits & EXPONENT == EXPONENT) as usize)
    })
}

/// The padded plane of one image's input gradient, rows outermost: element (row, ci, col) at
/// `(row * cin + ci) * pw + col`, so that a band of rows is one run of memory (a thread's part).
struct Padded {
    /// Rows: every input row plus the pads.
    ph: usize,
    /// Columns: wide enough for the last tap row's 4-lane steps.
    pw: usize,
    /// `kw` rounded up to a multiple of 4.
    kw4: usize,
}

impl Padded {
    fn new(g: &Conv2dGeom) -> Padded {
        let kw4 = g.kw.next_multiple_of(4);
        let ph = g.h + g.pad_top + g.pad_bottom;
        let pw = (g.w + g.pad_left + g.pad_right).max((g.out_w() - 1) * g.stride_w + kw4);
        Padded { ph, pw, kw4 }
    }

    /// `gx[ci][iy][ix] = plane(iy + pad_top, ci, ix + pad_left)`: the image's part of the plane.
    fn crop(&self, plane: &[f32], g: &Conv2dGeom, gx: &mut [f32]) {
        for (ci, gx_plane) in gx.chunks_exact_mut(g.h * g.w).enumerate() {
            for (iy, gx_row) in gx_plane.chunks_exact_mut(g.w).enumerate() {
                let row = (iy + g.pad_top) * g.cin + ci;
                gx_row.copy_from_slice(&plane[row * self.pw + g.pad_left..][..g.w]);
            }
        }
    }
}

/// The weights as rows of `kw4` taps (zeros past `kw`), in the order the plane's rows run under
/// one output position: row `(co * kh + ky) * cin + ci`.
fn weight_rows(weight: &[f32], g: &Conv2dGeom, kw4: usize) -> Vec<f32> {
    let mut rows = vec![0.0; g.cout * g.kh * g.cin * kw4];
    for (r, src) in weight.chunks_exact(g.kw).enumerate() {
        let (co, ci, ky) = (r / (g.cin * g.kh), r / g.kh % g.cin, r % g.kh);
        rows[((co * g.kh + ky) * g.cin + ci) * kw4..][..g.kw].copy_from_slice(src);
    }
    rows
}

/// One image's padded input gradient. The pool takes bands of plane rows; each band's part goes
/// through the nonzeros whose taps reach it, in the same order as one thread would.
fn scatter_image(go: &[f32], rows: &[f32], g: &Conv2dGeom, p: &Padded, nonzeros: usize) -> Vec<f32> {
    let mut plane = vec![0.0; p.ph * g.cin * p.pw];
    let work_per_row = (nonzeros * g.cin * g.kh * p.kw4 / p.ph.max(1)).max(1);
    let parts = super::parallel::parts(p.ph, work_per_row);
    super::parallel::for_each_run(&mut plane, g.cin * p.pw, parts, |first_row, band| {
        scatter_band(go, rows, g, p, first_row..first_row + band.len() / (g.cin * p.pw), band);
    });
    plane
}

/// Adds every nonzero's taps that land in plane rows `band_rows`, whose elements are `band`.
fn scatter_band(go: &[f32], rows: &[f32], g: &Conv2dGeom, p: &Padded, band_rows: core::ops::Range<usize>, band: &mut [f32]) {
    let (oh, ow, kw4) = (g.out_h(), g.out_w(), p.kw4);
    // Output rows whose taps (rows oy * sh .. oy * sh + kh) reach the band.
    let first_oy = (band_rows.start + 1).saturating_sub(g.kh).div_ceil(g.stride_h);
    let last_oy = ((band_rows.end - 1) / g.stride_h).min(oh - 1);
    let mut hits = vec![0u32; ow];
    // Output rows outermost: one output row's taps cover kh plane rows (a 7x7 stem's: 7 x 3 x 232
    // floats), which stay in L1 while every channel co adds to them.
    for oy in first_oy..=last_oy {
        let top = oy * g.stride_h;
        // Kernel rows of this output row that land in the band.
        let kys = band_rows.start.saturating_sub(top)..(band_rows.end - top).min(g.kh);
        // Plane rows (top + ky, ci), ky in kys and ci in 0..cin, follow each other `pw` apart, and
        // their taps' rows `kw4` apart: one loop with two strides, `steps` long.
        let (steps, first_row) = (kys.len() * g.cin, (top + kys.start - band_rows.start) * g.cin * p.pw);
        for co in 0..g.cout {
            let row = &go[(co * oh + oy) * ow..][..ow];
            let taps = (co * g.kh + kys.start) * g.cin * kw4;
            for &ox in nonzero_columns(row, &mut hits) {
                let ox = ox as usize;
                let dst = first_row + ox * g.stride_w;
                add_scaled_rows(&mut band[dst..], p.pw, row[ox], &rows[taps..taps + steps * kw4], kw4);
            }
        }
    }
}

/// The columns of `row`'s nonzero values, listed without a branch per value (at 9% nonzeros a
/// branch per value mispredicted often enough to cost a third of the scatter).
fn nonzero_columns<'h>(row: &[f32], hits: &'h mut [u32]) -> &'h [u32] {
    let mut n = 0;
    for (x, &v) in row.iter().enumerate() {
        hits[n] = x as u32;
        n += (v != 0.0) as usize;
    }
    &hits[..n]
}

/// `dst[s * stride..][..width] += v * src[s * width..][..width]` for each row `s` of `src`, 4
/// lanes at a time (`width` a multiple of 4): a multiply then an add, never fused, as the portable
/// version below does.
#[cfg(target_arch = "wasm32")]
#[inline(always)]
fn add_scaled_rows(dst: &mut [f32], stride: usize, v: f32, src: &[f32], width: usize) {
    let rows = src.len() / width;
    assert!(width.is_multiple_of(4) && rows > 0 && (rows - 1) * stride + width <= dst.len());
    // SAFETY: row s writes dst[s * stride..][..width], inside dst by the assert, and reads
    // src[s * width..][..width], inside src.
    unsafe {
        let (d, t) = (dst.as_mut_ptr(), src.as_ptr());
        match width {
            // The widths of 3x3-7x7 and 9x9-11x11 kernels, whose loops unroll.
            8 => add_rows::<2>(d, stride, v, t, width, rows),
            12 => add_rows::<3>(d, stride, v, t, width, rows),
            _ => (0..width).step_by(4).for_each(|j| add_rows::<1>(d.add(j), stride, v, t.add(j), width, rows)),
        }
    }
}

/// [`add_scaled_rows`] for the first `V` 4-lane vectors of each row.
///
/// # Safety
/// `d + s * stride + 4 * V` and `t + s * t_stride + 4 * V` stay inside their slices for `s < rows`.
#[cfg(target_arch = "wasm32")]
#[inline(always)]
unsafe fn add_rows<const V: usize>(mut d: *mut f32, stride: usize, v: f32, mut t: *const f32, t_stride: usize, rows: usize) {
    use core::arch::wasm32::*;
    let vv = f32x4_splat(v);
    for _ in 0..rows {
        for j in 0..V {
            // v128 loads and stores may be unaligned.
            let dj = d.add(4 * j) as *mut v128;
            v128_store(dj, f32x4_add(v128_load(dj), f32x4_mul(vv, v128_load(t.add(4 * j) as *const v128))));
        }
        d = d.add(stride);
        t = t.add(t_stride);
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn add_scaled_rows(dst: &mut [f32], stride: usize, v: f32, src: &[f32], width: usize) {
    for (s, taps) in src.chunks_exact(width).enumerate() {
        dst[s * stride..][..width].iter_mut().zip(taps).for_each(|(d, &t)| *d += v * t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// d loss / d x by its definition: every output gradient value times every tap it was summed
    /// through, skipping padding.
    fn naive(go: &[f32], w: &[f32], g: &Conv2dGeom) -> Vec<f32> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut gx = vec![0.0f32; g.n * g.cin * g.h * g.w];
        for n in 0..g.n {
            for oy in 0..oh {
                for co in 0..g.cout {
                    for ox in 0..ow {
                        let v = go[((n * g.cout + co) * oh + oy) * ow + ox];
                        for ci in 0..g.cin {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let (iy, ix) = ((oy * g.stride_h + ky) as isize - g.pad_top as isize, (ox * g.stride_w + kx) as isize - g.pad_left as isize);
                                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                        gx[((n * g.cin + ci) * g.h + iy as usize) * g.w + ix as usize] += v * w[((co * g.cin + ci) * g.kh + ky) * g.kw + kx];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        gx
    }

    /// A sparse output gradient: about `density` of its values nonzero.
    fn sparse(len: usize, density: f64, seed: u64) -> Vec<f32> {
        let mut rng = crate::synthetic::Rng::new(seed);
        let v = rng.vec(len, 1.0);
        let keep = rng.vec(len, 1.0);
        v.iter().zip(&keep).map(|(&x, &k)| if ((k as f64) + 1.0) / 2.0 < density { x } else { 0.0 }).collect()
    }

    /// The scatter against the definition on a stem, odd sizes, asymmetric pads, strides 1-4 and a
    /// batch of two: the same terms in the same order, so the same bits.
    #[test]
    fn matches_the_dense_input_gradient() {
        let geoms = [
            Conv2dGeom { n: 1, cin: 3, h: 32, w: 30, cout: 8, kh: 7, kw: 7, stride_h: 2, stride_w: 2, pad_top: 3, pad_bottom: 3, pad_left: 3, pad_right: 3, groups: 1 },
            Conv2dGeom { n: 2, cin: 2, h: 17, w: 19, cout: 5, kh: 5, kw: 6, stride_h: 1, stride_w: 3, pad_top: 0, pad_bottom: 2, pad_left: 4, pad_right: 1, groups: 1 },
            Conv2dGeom { n: 1, cin: 3, h: 35, w: 35, cout: 4, kh: 11, kw: 11, stride_h: 4, stride_w: 4, pad_top: 2, pad_bottom: 2, pad_left: 2, pad_right: 2, groups: 1 },
        ];
        for (i, g) in geoms.iter().enumerate() {
            let w = crate::synthetic::Rng::new(i as u64).vec(g.cout * g.cin * g.kh * g.kw, 0.5);
            let go = sparse(g.n * g.cout * g.out_h() * g.out_w(), 0.1, 7 + i as u64);
            let got = input_grad(&go, &w, g).expect("sparse enough to scatter");
            let want = naive(&go, &w, g);
            assert!(want.iter().any(|&v| v != 0.0));
            assert_eq!(got, want, "{g:?}");
        }
    }

    /// Thread parts take bands of plane rows: every way of cutting the rows gives the same bits
    /// as one band, whatever the pool's size on the machine running the test.
    #[test]
    fn bands_of_rows_add_up_to_the_whole_plane() {
        let g = Conv2dGeom { n: 1, cin: 3, h: 23, w: 21, cout: 6, kh: 7, kw: 7, stride_h: 2, stride_w: 2, pad_top: 3, pad_bottom: 2, pad_left: 3, pad_right: 3, groups: 1 };
        let w = crate::synthetic::Rng::new(4).vec(g.cout * g.cin * 49, 0.5);
        let go = sparse(g.cout * g.out_h() * g.out_w(), 0.2, 5);
        let p = Padded::new(&g);
        let rows = weight_rows(&w, &g, p.kw4);
        let row_len = g.cin * p.pw;
        let whole = {
            let mut plane = vec![0.0; p.ph * row_len];
            scatter_band(&go, &rows, &g, &p, 0..p.ph, &mut plane);
            plane
        };
        for cuts in [vec![1], vec![6, 7], vec![3, 9, 20], (1..p.ph).collect()] {
            let mut plane = vec![0.0; p.ph * row_len];
            let mut rest = &mut plane[..];
            let mut start = 0;
            for end in cuts.iter().copied().chain([p.ph]) {
                let (band, tail) = rest.split_at_mut((end - start) * row_len);
                scatter_band(&go, &rows, &g, &p, start..end, band);
                (rest, start) = (tail, end);
            }
            assert_eq!(plane, whole, "cut at {cuts:?}");
        }
        assert!(whole.iter().any(|&v| v != 0.0));
    }

    #[test]
    fn dense_or_non_finite_or_narrow_gradients_are_left_to_the_product() {
        let g = Conv2dGeom { n: 1, cin: 3, h: 16, w: 16, cout: 4, kh: 7, kw: 7, stride_h: 2, stride_w: 2, pad_top: 3, pad_bottom: 3, pad_left: 3, pad_right: 3, groups: 1 };
        let w = vec![0.1; 4 * 3 * 49];
        let len = 4 * g.out_h() * g.out_w();
        assert!(input_grad(&sparse(len, 0.6, 1), &w, &g).is_none(), "dense");
        let mut inf = sparse(len, 0.05, 2);
        inf[3] = f32::INFINITY;
        assert!(input_grad(&inf, &w, &g).is_none(), "non-finite");
        let narrow = Conv2dGeom { kh: 3, kw: 3, pad_top: 1, pad_bottom: 1, pad_left: 1, pad_right: 1, ..g };
        assert!(input_grad(&sparse(4 * narrow.out_h() * narrow.out_w(), 0.05, 3), &vec![0.1; 4 * 3 * 9], &narrow).is_none(), "3x3");
        let empty = Conv2dGeom { cin: 0, ..g };
        assert!(input_grad(&sparse(len, 0.05, 4), &[], &empty).is_none(), "no input channels");
    }
}
