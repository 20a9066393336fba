//! Drawing a [0, 1] heatmap, alone or over the photo, as canvas RGBA bytes.
//!
//! Blend decision: a constant-alpha blend, out = (1 - alpha) * image +
//! alpha * colour(heat), on every pixel where the map is defined, including
//! heat 0 (which gets the colormap's low colour, as in the usual Grad-CAM
//! figures, so "no evidence" is visibly different from "not looked at").
//! Where the map is not defined (outside the centre crop, see
//! `project::crop_mask`) the photo is shown unchanged. Output alpha is 255.

use super::colormap::Colormap;
use super::rgb::RgbImage;

fn check_len(what: &str, got: usize, expected: usize) -> Result<(), String> {
    if got != expected {
        return Err(format!("{what} length mismatch: expected {expected}, got {got}"));
    }
    Ok(())
}

/// The pixel count of a `width x height` overlay, checked so that its RGBA bytes (4 per pixel)
/// fit in memory's address range; the caller's buffers must then match it.
fn pixels(width: usize, height: usize) -> Result<usize, String> {
    width.checked_mul(height).filter(|n| n.checked_mul(4).is_some()).ok_or_else(|| format!("an overlay of {width}x{height} pixels is too large"))
}

/// Blends `heat` (same grid as `img`, values in [0, 1]) over every pixel (its tests' shorthand).
#[cfg(test)]
fn overlay_rgba(img: &RgbImage, heat: &[f32], cmap: Colormap, alpha: f32) -> Result<Vec<u8>, String> {
    overlay_rgba_masked(img, heat, &vec![true; heat.len()], cmap, alpha)
}

/// Blends `heat` where `mask` is true; elsewhere copies the photo.
pub fn overlay_rgba_masked(img: &RgbImage, heat: &[f32], mask: &[bool], cmap: Colormap, alpha: f32) -> Result<Vec<u8>, String> {
    let n = pixels(img.width, img.height)?;
    check_len("heat", heat.len(), n)?;
    check_len("mask", mask.len(), n)?;
    check_len("image data", img.data.len(), 3 * n)?;
    if !(0.0..=1.0).contains(&alpha) {
        return Err(format!("alpha must be in [0, 1], got {alpha}"));
    }
    let mut out = Vec::with_capacity(4 * n);
    for ((px, &h), &m) in img.data.chunks_exact(3).zip(heat).zip(mask) {
        let a = if m { alpha } else { 0.0 };
        let color = cmap.color(h);
        for c in 0..3 {
            let v = (1.0 - a) * px[c] as f32 + a * color[c] as f32;
            out.push(v.round().clamp(0.0, 255.0) as u8);
        }
        out.push(255);
    }
    Ok(out)
}

/// The heatmap alone, opaque RGBA, `width * height` values in [0, 1].
pub fn heat_to_rgba(heat: &[f32], width: usize, height: usize, cmap: Colormap) -> Result<Vec<u8>, String> {
    check_len("heat", heat.len(), pixels(width, height)?)?;
    Ok(heat
        .iter()
        .flat_map(|&h| {
            let [r, g, b] = cmap.color(h);
            [r, g, b, 255]
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img() -> RgbImage {
        RgbImage::from_rgb(2, 1, vec![100, 100, 100, 0, 0, 0]).unwrap()
    }

    #[test]
    fn heat_alone_uses_the_colormap() {
        let out = heat_to_rgba(&[0.0, 1.0], 2, 1, Colormap::Viridis).unwrap();
        assert_eq!(out, vec![68, 1, 84, 255, 253, 231, 37, 255]);
        assert!(heat_to_rgba(&[0.0], 2, 1, Colormap::Jet).unwrap_err().contains("expected 2, got 1"));
    }

    #[test]
    fn constant_alpha_blend() {
        // Pixel 0: 0.6 * 100 + 0.4 * viridis(0) = [60 + 27.2, 60 + 0.4, 60 + 33.6].
        let out = overlay_rgba(&img(), &[0.0, 1.0], Colormap::Viridis, 0.4).unwrap();
        assert_eq!(out[..4], [87, 60, 94, 255]);
        // Pixel 1 (black): 0.4 * viridis(1) = [101.2, 92.4, 14.8].
        assert_eq!(out[4..], [101, 92, 15, 255]);
        // alpha 0 is the photo, alpha 1 the heatmap.
        assert_eq!(overlay_rgba(&img(), &[0.3, 0.9], Colormap::Jet, 0.0).unwrap(), vec![100, 100, 100, 255, 0, 0, 0, 255]);
        assert_eq!(overlay_rgba(&img(), &[0.3, 0.9], Colormap::Jet, 1.0).unwrap(), heat_to_rgba(&[0.3, 0.9], 2, 1, Colormap::Jet).unwrap());
    }

    #[test]
    fn outside_the_mask_is_the_plain_photo() {
        let out = overlay_rgba_masked(&img(), &[1.0, 1.0], &[false, true], Colormap::Viridis, 0.4).unwrap();
        assert_eq!(out, vec![100, 100, 100, 255, 101, 92, 15, 255]);
    }

    #[test]
    fn rejects_bad_alpha_and_lengths() {
        assert!(overlay_rgba(&img(), &[0.0, 0.0], Colormap::Jet, 1.5).unwrap_err().contains("alpha"));
        assert!(overlay_rgba(&img(), &[0.0, 0.0], Colormap::Jet, f32::NAN).is_err());
        assert!(overlay_rgba(&img(), &[0.0], Colormap::Jet, 0.5).unwrap_err().contains("heat"));
    }
}
