//! Bilinear resize with antialiasing, as torchvision `Resize(antialias=True)`
//! and PIL `Image.resize(..., BILINEAR)` do it.
//!
//! Both libraries compute the same thing: a triangle filter whose support is
//! widened by the scale factor when downscaling (so every input pixel
//! contributes, which is what "antialias" means), sampled at half-pixel
//! centres, with the weights of each output pixel normalised to sum 1 (taps
//! that fall outside the image are dropped, not clamped). The filter is
//! separable: a horizontal pass, then a vertical pass.
//!
//! Rounding: PIL on 8-bit images rounds to `u8` after each pass and at the
//! end; torchvision on float tensors (the `ToTensor()` then `Resize()` path)
//! does not. We follow the float-tensor path: the output is `f32` in 0..255,
//! never rounded. Expect differences of up to ~1 grey level against a
//! PIL-resized 8-bit image.

use super::rgb::RgbImage;

/// The input pixels that feed one output pixel, with their normalised weights.
struct Taps {
    start: usize,
    weights: Vec<f64>,
}

/// The triangle (bilinear) kernel, support 1.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Taps for resizing one axis from `in_size` to `out_size` samples.
///
/// Coordinates are pixel-edge based: output pixel `i` has its centre at
/// `(i + 0.5) * in/out` in input units. The `+ 0.5` before truncation and the
/// truncation itself follow PIL's `precompute_coeffs` (torchvision's
/// antialiased kernel copies it), so the tap windows are identical.
fn axis_taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    axis_taps_range(in_size, out_size, 0..out_size)
}

/// `axis_taps`, for the output samples in `range` only (a crop of the resized axis): the same
/// taps, computed without ever holding the whole output axis.
fn axis_taps_range(in_size: usize, out_size: usize, range: std::ops::Range<usize>) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    // Downscaling stretches the kernel so it covers `scale` input pixels;
    // upscaling keeps the plain bilinear kernel.
    let filter_scale = scale.max(1.0);
    let support = filter_scale;
    range
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let hi = ((center + support + 0.5).trunc() as usize).min(in_size);
            let lo = ((center - support + 0.5).trunc().max(0.0) as usize).min(hi);
            let mut weights: Vec<f64> = (lo..hi).map(|j| triangle((j as f64 - center + 0.5) / filter_scale)).collect();
            let sum: f64 = weights.iter().sum();
            if sum != 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            }
            Taps { start: lo, weights }
        })
        .collect()
}

/// Horizontal pass on one plane: (in_w x h) -> (out_w x h).
fn resize_rows(src: &[f32], in_w: usize, h: usize, out_w: usize) -> Vec<f32> {
    let taps = axis_taps(in_w, out_w);
    let mut out = Vec::with_capacity(out_w * h);
    for row in src.chunks_exact(in_w).take(h) {
        for t in &taps {
            let px = &row[t.start..t.start + t.weights.len()];
            let v: f64 = px.iter().zip(&t.weights).map(|(&p, &w)| p as f64 * w).sum();
            out.push(v as f32);
        }
    }
    out
}

/// Vertical pass on one plane: (w x in_h) -> (w x out_h). Accumulates whole
/// rows so the inner loop walks memory contiguously.
fn resize_cols(src: &[f32], w: usize, in_h: usize, out_h: usize) -> Vec<f32> {
    let taps = axis_taps(in_h, out_h);
    let mut out = Vec::with_capacity(w * out_h);
    let mut acc = vec![0f64; w];
    for t in &taps {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (k, &wgt) in t.weights.iter().enumerate() {
            let row = &src[(t.start + k) * w..(t.start + k + 1) * w];
            acc.iter_mut().zip(row).for_each(|(a, &p)| *a += p as f64 * wgt);
        }
        out.extend(acc.iter().map(|&a| a as f32));
    }
    out
}

/// Resizes one plane (row-major, in_w x in_h) to out_w x out_h.
/// A pass whose size does not change is skipped: its weights would be the
/// identity anyway (PIL skips it too).
fn resize_plane(src: &[f32], in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> Vec<f32> {
    let horizontal = if out_w == in_w { src.to_vec() } else { resize_rows(src, in_w, in_h, out_w) };
    if out_h == in_h {
        horizontal
    } else {
        resize_cols(&horizontal, out_w, in_h, out_h)
    }
}

/// Splits an interleaved RGB image into three f32 planes (CHW), values 0..255.
pub fn to_planes(img: &RgbImage) -> Vec<f32> {
    let n = img.width * img.height;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = px[c] as f32;
        }
    }
    out
}

/// Resizes `channels` planes stored one after another (CHW).
pub fn resize_planes(planes: &[f32], channels: usize, in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> Result<Vec<f32>, String> {
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return Err(format!("cannot resize {in_w}x{in_h} to {out_w}x{out_h}: zero size"));
    }
    let n = in_w * in_h;
    if planes.len() != channels * n {
        return Err(format!("plane data length mismatch: expected {} ({channels}x{in_h}x{in_w}), got {}", channels * n, planes.len()));
    }
    Ok(planes.chunks_exact(n).flat_map(|p| resize_plane(p, in_w, in_h, out_w, out_h)).collect())
}

/// The window (left, top, w, h) of `img` resized to out_w x out_h: CHW f32 planes in 0..255,
/// `3 * h * w` values, exactly the values `resize_bilinear(img, out_w, out_h)` has there (same taps,
/// same order of sums, same f32 rounding after the horizontal pass). Only the input rows and
/// columns the window's taps read are touched, and the horizontal pass keeps only the window's
/// columns: memory is `w * (input rows read) + 3 * w * h` values whatever out_w x out_h is, so
/// a 30000 x 1 photo whose shorter side becomes 256 (7.68M x 256 resized) costs no more than a
/// square one.
pub fn resize_bilinear_window(img: &RgbImage, out_w: usize, out_h: usize, (left, top, w, h): (usize, usize, usize, usize)) -> Result<Vec<f32>, String> {
    let (in_w, in_h) = (img.width, img.height);
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 || w == 0 || h == 0 {
        return Err(format!("cannot resize {in_w}x{in_h} to {out_w}x{out_h} (window {w}x{h}): zero size"));
    }
    if left.checked_add(w).is_none_or(|r| r > out_w) || top.checked_add(h).is_none_or(|b| b > out_h) {
        return Err(format!("window {w}x{h} at ({left}, {top}) is outside the {out_w}x{out_h} resized image"));
    }
    let in_pixels = in_w.checked_mul(in_h).filter(|&n| n.checked_mul(3) == Some(img.data.len()));
    if in_pixels.is_none() {
        return Err(format!("image data length {} does not match {in_w}x{in_h} RGB", img.data.len()));
    }
    let out_len = w.checked_mul(h).and_then(|n| n.checked_mul(3)).ok_or_else(|| format!("window {w}x{h} is too large"))?;
    // An axis whose size does not change keeps its pixels (PIL skips that pass; the taps would be
    // the identity anyway).
    let identity = |start: usize, n: usize| (start..start + n).map(|i| Taps { start: i, weights: vec![1.0] }).collect::<Vec<_>>();
    let xt = if out_w == in_w { identity(left, w) } else { axis_taps_range(in_w, out_w, left..left + w) };
    let yt = if out_h == in_h { identity(top, h) } else { axis_taps_range(in_h, out_h, top..top + h) };
    let span = |t: &[Taps]| {
        let lo = t.iter().map(|t| t.start).min().unwrap_or(0);
        let hi = t.iter().map(|t| t.start + t.weights.len()).max().unwrap_or(lo);
        (lo, hi.max(lo))
    };
    let (y_lo, y_hi) = span(&yt);
    let rows = y_hi - y_lo;
    let horizontal_len = rows.checked_mul(w).ok_or("resize window too large")?;
    let mut out = vec![0f32; out_len];
    // The three channels are independent: one plane per part, across the kernels' threads where
    // there are any (each channel's sums are the same in any split).
    let per_channel = horizontal_len.saturating_mul(xt.first().map_or(1, |t| t.weights.len())) + w * h * yt.first().map_or(1, |t| t.weights.len());
    let parts = crate::kernels::parallel::parts(3, per_channel);
    crate::kernels::parallel::for_each_run(&mut out, w * h, parts, |first, planes| {
        let mut horizontal = vec![0f32; horizontal_len];
        let mut acc = vec![0f64; w];
        for (c, plane) in (first..3).zip(planes.chunks_mut(w * h)) {
            for (r, y) in (y_lo..y_hi).enumerate() {
                let row = &img.data[y * in_w * 3..(y + 1) * in_w * 3];
                for (o, t) in horizontal[r * w..(r + 1) * w].iter_mut().zip(&xt) {
                    let v: f64 = t.weights.iter().enumerate().map(|(k, &wgt)| row[(t.start + k) * 3 + c] as f64 * wgt).sum();
                    *o = v as f32;
                }
            }
            for (t, out_row) in yt.iter().zip(plane.chunks_mut(w)) {
                if out_h == in_h {
                    let r = t.start - y_lo;
                    out_row.copy_from_slice(&horizontal[r * w..(r + 1) * w]);
                    continue;
                }
                acc.iter_mut().for_each(|a| *a = 0.0);
                for (k, &wgt) in t.weights.iter().enumerate() {
                    let r = t.start + k - y_lo;
                    acc.iter_mut().zip(&horizontal[r * w..(r + 1) * w]).for_each(|(a, &p)| *a += p as f64 * wgt);
                }
                out_row.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
            }
        }
    });
    Ok(out)
}

/// Resizes an RGB image to out_w x out_h; returns CHW f32 planes in 0..255,
/// `3 * out_h * out_w` values, unrounded.
pub fn resize_bilinear(img: &RgbImage, out_w: usize, out_h: usize) -> Result<Vec<f32>, String> {
    resize_planes(&to_planes(img), 3, img.width, img.height, out_w, out_h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol, "index {i}: got {g}, want {w}\n got {got:?}");
        }
    }

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|v| v as f32).collect()
    }

    #[test]
    fn upscale_2x2_to_4x4_is_half_pixel_bilinear() {
        // torch interpolate(bilinear, align_corners=False) and PIL agree here.
        let out = resize_plane(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4);
        #[rustfmt::skip]
        let want = [
            0.0, 0.25, 0.75, 1.0,
            0.5, 0.75, 1.25, 1.5,
            1.5, 1.75, 2.25, 2.5,
            2.0, 2.25, 2.75, 3.0,
        ];
        assert_close(&out, &want, 1e-6);
    }

    #[test]
    fn downscale_4x4_to_2x2_antialiases() {
        // Support 2 around centres 1 and 3: taps [3/7, 3/7, 1/7] and
        // [1/7, 3/7, 3/7]; on v = 4y + x that gives 4Y + X with X, Y in
        // {5/7, 16/7}. PIL mode "F" gives the same to 1e-6.
        let out = resize_plane(&ramp(16), 4, 4, 2, 2);
        assert_close(&out, &[25.0 / 7.0, 36.0 / 7.0, 69.0 / 7.0, 80.0 / 7.0], 1e-5);
    }

    #[test]
    fn non_square_matches_pil_float_mode() {
        // Image.fromarray(np.arange(35, dtype=np.float32).reshape(5, 7), "F")
        //     .resize((3, 4), Image.BILINEAR)  (w 7 -> 3 down, h 5 -> 4 down)
        let out = resize_plane(&ramp(35), 7, 5, 3, 4);
        assert_close(&out, &PIL_7X5_TO_3X4, 1e-4);
        // ... .resize((9, 2)): width up, height down.
        let out = resize_plane(&ramp(35), 7, 5, 9, 2);
        assert_close(&out, &PIL_7X5_TO_9X2, 1e-4);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_rgb(13, 7, [10u8, 20, 30].repeat(13 * 7)).unwrap();
        for (w, h) in [(5, 3), (20, 11), (13, 2), (1, 1)] {
            let out = resize_bilinear(&img, w, h).unwrap();
            let n = w * h;
            assert_close(&out[..n], &vec![10.0; n], 1e-4);
            assert_close(&out[n..2 * n], &vec![20.0; n], 1e-4);
            assert_close(&out[2 * n..], &vec![30.0; n], 1e-4);
        }
    }

    #[test]
    fn channels_are_planar_and_separate() {
        let img = RgbImage::from_rgb(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(to_planes(&img), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(resize_bilinear(&img, 2, 1).unwrap(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }

    #[test]
    fn window_equals_the_same_window_of_the_full_resize() {
        let data: Vec<u8> = (0..13 * 7 * 3).map(|i| (i * 37 % 251) as u8).collect();
        let img = RgbImage::from_rgb(13, 7, data).unwrap();
        for (ow, oh, l, t, w, h) in [(5, 3, 1, 0, 3, 3), (20, 11, 4, 2, 9, 5), (13, 2, 0, 0, 13, 2), (13, 7, 2, 3, 4, 4), (40, 7, 17, 1, 6, 5), (1, 1, 0, 0, 1, 1)] {
            let full = resize_bilinear(&img, ow, oh).unwrap();
            let win = resize_bilinear_window(&img, ow, oh, (l, t, w, h)).unwrap();
            let want: Vec<f32> = (0..3).flat_map(|c| (t..t + h).flat_map(move |y| (l..l + w).map(move |x| (c, y, x)))).map(|(c, y, x)| full[c * ow * oh + y * ow + x]).collect();
            assert_eq!(win, want, "{ow}x{oh} window {w}x{h} at ({l}, {t})");
        }
        assert!(resize_bilinear_window(&img, 5, 3, (3, 0, 3, 3)).unwrap_err().contains("outside"));
    }

    #[test]
    fn zero_output_size_is_an_error() {
        let img = RgbImage::from_rgb(1, 1, vec![0, 0, 0]).unwrap();
        assert!(resize_bilinear(&img, 0, 4).unwrap_err().contains("zero size"));
    }

    // Generated with Pillow in float mode (no rounding), see the tests above.
    #[rustfmt::skip]
    const PIL_7X5_TO_3X4: [f32; 12] = [
        2.607143, 4.75, 6.892857,
        10.773809, 12.916667, 15.059524,
        18.940476, 21.083334, 23.22619,
        27.107143, 29.25, 31.392857,
    ];
    #[rustfmt::skip]
    const PIL_7X5_TO_9X2: [f32; 18] = [
        7.0, 7.6666665, 8.444445, 9.222222, 10.0, 10.777778, 11.555555, 12.333333, 13.0,
        21.0, 21.666666, 22.444445, 23.222221, 24.0, 24.777779, 25.555555, 26.333334, 27.0,
    ];
}
