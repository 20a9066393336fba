//! Putting a map computed on the network input back onto the original image.
//!
//! Sampling follows `torch.nn.functional.interpolate(mode="bilinear",
//! align_corners=False)`: sample centres at half pixels, source coordinates
//! below 0 clamped to 0, the last row/column repeated past the edge.

use super::preprocess::Geometry;

/// Where one output sample reads along an axis: two neighbours and the
/// weight of the second. `inside == false` means "no map here" (0).
#[derive(Clone, Copy, Debug)]
struct AxisSample {
    i0: usize,
    i1: usize,
    t: f64,
    inside: bool,
}

/// Bilinear neighbours of source coordinate `f` (pixel-centre units) on an
/// axis of `n` samples, clamped at both edges like torch.
fn axis_sample(f: f64, n: usize) -> AxisSample {
    let f = f.max(0.0);
    let i0 = (f.floor() as usize).min(n - 1);
    let i1 = (i0 + 1).min(n - 1);
    let t = if i1 == i0 { 0.0 } else { f - i0 as f64 };
    AxisSample { i0, i1, t, inside: true }
}

/// Samples for resizing an axis from `n_in` to `n_out` (align_corners=False).
fn upsample_axis(n_in: usize, n_out: usize) -> Vec<AxisSample> {
    let ratio = n_in as f64 / n_out as f64;
    (0..n_out).map(|d| axis_sample((d as f64 + 0.5) * ratio - 0.5, n_in)).collect()
}

/// Samples along one original-image axis: pixel centre -> input edge
/// coordinate `x` -> map coordinate. Outside [0, input) the network never
/// saw the pixel (it was cropped away), so there is no map value.
fn project_axis(orig: usize, scale: f64, offset: f64, input: usize, map: usize) -> Vec<AxisSample> {
    (0..orig)
        .map(|u| {
            let x = (u as f64 + 0.5) * scale - offset;
            let mut s = axis_sample(x * map as f64 / input as f64 - 0.5, map);
            s.inside = x >= 0.0 && x < input as f64;
            s
        })
        .collect()
}

/// Combines per-axis samples into a row-major image (rows = `ys`), split by rows across the
/// kernels' threads where there are any (each pixel is computed alone, so the split changes no bit).
fn bilinear(map: &[f32], map_w: usize, xs: &[AxisSample], ys: &[AxisSample]) -> Vec<f32> {
    let at = |x: usize, y: usize| map[y * map_w + x] as f64;
    let pixel = |sx: &AxisSample, sy: &AxisSample| {
        if !(sx.inside && sy.inside) {
            return 0.0;
        }
        let top = (1.0 - sx.t) * at(sx.i0, sy.i0) + sx.t * at(sx.i1, sy.i0);
        let bottom = (1.0 - sx.t) * at(sx.i0, sy.i1) + sx.t * at(sx.i1, sy.i1);
        ((1.0 - sy.t) * top + sy.t * bottom) as f32
    };
    let mut out = vec![0f32; xs.len() * ys.len()];
    let width = xs.len().max(1);
    // About a dozen multiply-adds a pixel.
    let parts = crate::kernels::parallel::parts(ys.len(), xs.len() * 12);
    crate::kernels::parallel::for_each_run(&mut out, width, parts, |first_row, rows| {
        for (sy, row) in ys[first_row..].iter().zip(rows.chunks_mut(width)) {
            for (sx, o) in xs.iter().zip(row) {
                *o = pixel(sx, sy);
            }
        }
    });
    out
}

fn check_map(map: &[f32], map_w: usize, map_h: usize) -> Result<(), String> {
    if map_w == 0 || map_h == 0 {
        return Err(format!("map has zero size ({map_w}x{map_h})"));
    }
    if map.len() != map_w * map_h {
        return Err(format!("map length mismatch for {map_w}x{map_h}: expected {}, got {}", map_w * map_h, map.len()));
    }
    Ok(())
}

/// The most pixels a map on the image grid (and its crop mask) may have: 2^28 (e.g. 16384 x 16384),
/// checked before the map is allocated, so a geometry handed in from outside (a result object in
/// the browser) cannot claim a huge grid.
pub const MAX_IMAGE_MAP_PIXELS: usize = 1 << 28;

fn check_geometry(g: &Geometry) -> Result<(), String> {
    if g.orig_w.checked_mul(g.orig_h).is_none_or(|n| n > MAX_IMAGE_MAP_PIXELS) || g.input_w.checked_mul(g.input_h).is_none_or(|n| n > MAX_IMAGE_MAP_PIXELS) {
        return Err(format!("geometry of a {}x{} image ({}x{} input) is over the {MAX_IMAGE_MAP_PIXELS}-pixel limit of a map", g.orig_w, g.orig_h, g.input_w, g.input_h));
    }
    let sizes_ok = g.input_w > 0 && g.input_h > 0 && g.orig_w > 0 && g.orig_h > 0;
    let scale_ok = g.scale_x > 0.0 && g.scale_y > 0.0 && g.scale_x.is_finite() && g.scale_y.is_finite();
    if !(sizes_ok && scale_ok && g.offset_x.is_finite() && g.offset_y.is_finite()) {
        return Err(format!("invalid geometry {g:?}"));
    }
    Ok(())
}

/// `torch.nn.functional.interpolate(map, (out_h, out_w), mode="bilinear",
/// align_corners=False)` on one plane (no antialiasing). Row-major output.
pub fn upsample_bilinear(map: &[f32], map_w: usize, map_h: usize, out_w: usize, out_h: usize) -> Result<Vec<f32>, String> {
    check_map(map, map_w, map_h)?;
    if out_w == 0 || out_h == 0 {
        return Err(format!("output has zero size ({out_w}x{out_h})"));
    }
    Ok(bilinear(map, map_w, &upsample_axis(map_w, out_w), &upsample_axis(map_h, out_h)))
}

/// Puts a map whose grid (map_w x map_h) tiles the network input onto the
/// original image's pixels: `orig_h * orig_w` values, row-major. Pixels the
/// crop cut away get 0 (see [`crop_mask`] to tell them from a real 0).
pub fn project_to_image(map: &[f32], map_w: usize, map_h: usize, geom: &Geometry) -> Result<Vec<f32>, String> {
    check_map(map, map_w, map_h)?;
    check_geometry(geom)?;
    let xs = project_axis(geom.orig_w, geom.scale_x, geom.offset_x, geom.input_w, map_w);
    let ys = project_axis(geom.orig_h, geom.scale_y, geom.offset_y, geom.input_h, map_h);
    Ok(bilinear(map, map_w, &xs, &ys))
}

/// Which original pixels the network saw (centre inside the crop), row-major.
pub fn crop_mask(geom: &Geometry) -> Result<Vec<bool>, String> {
    check_geometry(geom)?;
    let xs = project_axis(geom.orig_w, geom.scale_x, geom.offset_x, geom.input_w, 1);
    let ys = project_axis(geom.orig_h, geom.scale_y, geom.offset_y, geom.input_h, 1);
    Ok(ys.iter().flat_map(|sy| xs.iter().map(move |sx| sx.inside && sy.inside)).collect())
}

#[cfg(test)]
mod tests {
    use super::super::preprocess::{preprocess, Preprocess};
    use super::super::rgb::RgbImage;
    use super::*;

    fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-5, "index {i}: got {g}, want {w}\n got {got:?}");
        }
    }

    #[test]
    fn upsample_2x2_matches_torch() {
        let out = upsample_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4).unwrap();
        #[rustfmt::skip]
        assert_close(&out, &[
            0.0, 0.25, 0.75, 1.0,
            0.5, 0.75, 1.25, 1.5,
            1.5, 1.75, 2.25, 2.5,
            2.0, 2.25, 2.75, 3.0,
        ]);
        // Downsampling without antialias reads at 0.5 and 2.5: pair averages.
        let ramp: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_close(&upsample_bilinear(&ramp, 4, 4, 2, 2).unwrap(), &[2.5, 4.5, 10.5, 12.5]);
        // Non-square: 2x1 -> 3x2; x reads at -1/6 (clamped), 0.5, 7/6 (clamped).
        assert_close(&upsample_bilinear(&[0.0, 6.0], 2, 1, 3, 2).unwrap(), &[0.0, 3.0, 6.0, 0.0, 3.0, 6.0]);
    }

    #[test]
    fn identity_geometry_returns_the_map() {
        let map = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_close(&project_to_image(&map, 3, 2, &Geometry::identity(3, 2)).unwrap(), &map);
    }

    #[test]
    fn coarse_map_on_uncropped_image_equals_upsample() {
        let map = [0.0, 1.0, 5.0, 2.0, 7.0, 3.0];
        let projected = project_to_image(&map, 3, 2, &Geometry::identity(7, 5)).unwrap();
        assert_close(&projected, &upsample_bilinear(&map, 3, 2, 7, 5).unwrap());
    }

    #[test]
    fn hot_cell_lands_top_right_on_non_square_image() {
        // Original 6 wide x 3 high stretched to a 4x4 input; 2x2 map, hot cell (x=1, y=0).
        let g = Geometry { scale_x: 4.0 / 6.0, scale_y: 4.0 / 3.0, input_w: 4, input_h: 4, orig_w: 6, orig_h: 3, ..Geometry::identity(1, 1) };
        let out = project_to_image(&[0.0, 1.0, 0.0, 0.0], 2, 2, &g).unwrap();
        // Column weights of map column 1: clamp((u + 0.5) / 3 - 0.5, 0, 1);
        // row weights of map row 0: 1 - clamp((v + 0.5) * 2/3 - 0.5, 0, 1).
        #[rustfmt::skip]
        assert_close(&out, &[
            0.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0,
            0.0, 0.0, 1.0 / 6.0, 1.0 / 3.0, 0.5, 0.5,
            0.0, 0.0, 0.0,       0.0,       0.0, 0.0,
        ]);
    }

    #[test]
    fn crop_maps_back_to_the_centre_and_zero_outside() {
        // 8x8 original, input = centre 4x4 (offset 2, scale 1), 2x2 map.
        let g = Geometry { offset_x: 2.0, offset_y: 2.0, input_w: 4, input_h: 4, ..Geometry::identity(8, 8) };
        let out = project_to_image(&[0.0, 1.0, 2.0, 3.0], 2, 2, &g).unwrap();
        let inner = upsample_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4).unwrap();
        for y in 0..8 {
            for x in 0..8 {
                let inside = (2..6).contains(&x) && (2..6).contains(&y);
                let want = if inside { inner[(y - 2) * 4 + (x - 2)] } else { 0.0 };
                assert_eq!(out[y * 8 + x], want, "pixel ({x}, {y})");
            }
        }
        let mask = crop_mask(&g).unwrap();
        assert_eq!(mask.iter().filter(|&&m| m).count(), 16);
        assert!(mask[2 * 8 + 2] && !mask[2 * 8 + 1] && !mask[6 * 8 + 5]);
    }

    #[test]
    fn imagenet_crop_of_300x400_covers_columns_19_to_280_rows_68_to_330() {
        let img = RgbImage::from_rgb(300, 400, vec![0; 300 * 400 * 3]).unwrap();
        let g = preprocess(&img, &Preprocess::imagenet()).unwrap().geometry;
        let out = project_to_image(&[1.0; 49], 7, 7, &g).unwrap();
        let mask = crop_mask(&g).unwrap();
        for y in 0..400 {
            for x in 0..300 {
                let inside = (19..=280).contains(&x) && (68..=330).contains(&y);
                assert_eq!(mask[y * 300 + x], inside, "pixel ({x}, {y})");
                assert_eq!(out[y * 300 + x], if inside { 1.0 } else { 0.0 }, "pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(upsample_bilinear(&[0.0; 3], 2, 2, 4, 4).unwrap_err().contains("expected 4, got 3"));
        assert!(upsample_bilinear(&[0.0; 4], 2, 2, 0, 4).is_err());
        let g = Geometry { scale_x: 0.0, ..Geometry::identity(2, 2) };
        assert!(project_to_image(&[0.0; 4], 2, 2, &g).is_err());
    }
}
