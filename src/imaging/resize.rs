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
    let scale = in_size as f64 / out_size as f64;
    // Downscaling stretches the kernel so it covers `scale` input pixels;
    // upscaling keeps the plain bilinear kernel.
    let filter_scale = scale.max(1.0);
    let support = filter_scale;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = (center - support + 0.5).trunc().max(0.0) as usize;
            let hi = ((center + support + 0.5).trunc() as usize).min(in_size);
            let mut weights: Vec<f64> = (lo..hi)
                .map(|j| triangle((j as f64 - center + 0.5) / filter_scale))
                .collect();
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
            acc.iter_mut()
                .zip(row)
                .for_each(|(a, &p)| *a += p as f64 * wgt);
        }
        out.extend(acc.iter().map(|&a| a as f32));
    }
    out
}

/// Resizes one plane (row-major, in_w x in_h) to out_w x out_h.
/// A pass whose size does not change is skipped: its weights would be the
/// identity anyway (PIL skips it too).
fn resize_plane(src: &[f32], in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> Vec<f32> {
    let horizontal = if out_w == in_w {
        src.to_vec()
    } else {
        resize_rows(src, in_w, in_h, out_w)
    };
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
pub fn resize_planes(
    planes: &[f32],
    channels: usize,
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
) -> Result<Vec<f32>, String> {
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return Err(format!(
            "cannot resize {in_w}x{in_h} to {out_w}x{out_h}: zero size"
        ));
    }
    let n = in_w * in_h;
    if planes.len() != channels * n {
        return Err(format!(
            "plane data length mismatch: expected {} ({channels}x{in_h}x{in_w}), got {}",
            channels * n,
            planes.len()
        ));
    }
    Ok(planes
        .chunks_exact(n)
        .flat_map(|p| resize_plane(p, in_w, in_h, out_w, out_h))
        .collect())
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
            assert!(
                (g - w).abs() <= tol,
                "index {i}: got {g}, want {w}\n got {got:?}"
            );
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
        assert_close(
            &out,
            &[25.0 / 7.0, 36.0 / 7.0, 69.0 / 7.0, 80.0 / 7.0],
            1e-5,
        );
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
        assert_eq!(
            resize_bilinear(&img, 2, 1).unwrap(),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }

    #[test]
    fn zero_output_size_is_an_error() {
        let img = RgbImage::from_rgb(1, 1, vec![0, 0, 0]).unwrap();
        assert!(resize_bilinear(&img, 0, 4)
            .unwrap_err()
            .contains("zero size"));
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
