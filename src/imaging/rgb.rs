//! The image as it comes from the browser.

/// An 8-bit RGB image, channels interleaved (`r, g, b, r, g, b, ...`), rows top to bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Builds an image from RGBA bytes, the layout of a canvas `ImageData`.
    /// The alpha channel is dropped (not composited): canvas data of a decoded
    /// photo is opaque, and networks are trained on plain RGB.
    pub fn from_rgba(width: usize, height: usize, rgba: &[u8]) -> Result<Self, String> {
        let pixels = checked_pixels(width, height)?;
        let expected = pixels.checked_mul(4).ok_or_else(|| format!("image {width}x{height} is too large"))?;
        if rgba.len() != expected {
            return Err(format!("RGBA data length mismatch for {width}x{height}: expected {expected} bytes (4 per pixel), got {}", rgba.len()));
        }
        let data = rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        Ok(RgbImage { width, height, data })
    }

    /// Builds an image from RGBA rows delivered one at a time, shrunk by the integer `factor`
    /// (each output pixel the mean of a factor x factor box; boxes at the right/bottom edge are
    /// partial). Lets a huge canvas be read without ever holding it at full size.
    pub fn from_rgba_rows_reduced(width: usize, height: usize, factor: usize, mut read_row: impl FnMut(usize, &mut [u8])) -> Result<Self, String> {
        checked_pixels(width, height)?;
        let f = factor.max(1);
        let (ow, oh) = (width.div_ceil(f), height.div_ceil(f));
        let mut row = vec![0u8; width * 4];
        let mut sums = vec![0u32; ow * 3];
        let mut data = Vec::with_capacity(ow * oh * 3);
        for oy in 0..oh {
            sums.iter_mut().for_each(|s| *s = 0);
            let rows = (oy * f..((oy + 1) * f).min(height)).len();
            for y in oy * f..oy * f + rows {
                read_row(y, &mut row);
                for (x, px) in row.chunks_exact(4).enumerate() {
                    let o = (x / f) * 3;
                    sums[o] += px[0] as u32;
                    sums[o + 1] += px[1] as u32;
                    sums[o + 2] += px[2] as u32;
                }
            }
            for ox in 0..ow {
                let n = (rows * (ox * f..((ox + 1) * f).min(width)).len()) as u32;
                data.extend((0..3).map(|c| ((sums[ox * 3 + c] + n / 2) / n) as u8));
            }
        }
        Ok(RgbImage { width: ow, height: oh, data })
    }

    /// Builds an image from interleaved RGB bytes, checking the length.
    pub fn from_rgb(width: usize, height: usize, rgb: Vec<u8>) -> Result<Self, String> {
        let pixels = checked_pixels(width, height)?;
        let expected = pixels.checked_mul(3).ok_or_else(|| format!("image {width}x{height} is too large"))?;
        if rgb.len() != expected {
            return Err(format!("RGB data length mismatch for {width}x{height}: expected {expected} bytes (3 per pixel), got {}", rgb.len()));
        }
        Ok(RgbImage { width, height, data: rgb })
    }

    /// The `[r, g, b]` of pixel (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = 3 * (y * self.width + x);
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// Pixel count, refusing empty images (nothing downstream can use them).
fn checked_pixels(width: usize, height: usize) -> Result<usize, String> {
    if width == 0 || height == 0 {
        return Err(format!("image has zero size ({width}x{height})"));
    }
    width.checked_mul(height).ok_or_else(|| format!("image {width}x{height} is too large"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reduced_reading_averages_boxes_including_partial_edges() {
        // 5x3 RGBA, factor 2 -> 3x2; value = x + 10 y in every channel.
        let (w, h) = (5, 3);
        let img = super::RgbImage::from_rgba_rows_reduced(w, h, 2, |y, row| {
            for x in 0..w {
                let v = (x + 10 * y) as u8;
                row[x * 4..x * 4 + 4].copy_from_slice(&[v, v, v, 255]);
            }
        })
        .unwrap();
        assert_eq!((img.width, img.height), (3, 2));
        // Box (0..2, 0..2): (0 + 1 + 10 + 11) / 4 = 5.5 -> 6; edge box (4, 0..2): (4 + 14) / 2 = 9;
        // bottom row (0..2, 2): (20 + 21) / 2 = 20.5 -> 21; corner (4, 2): 24.
        assert_eq!(img.pixel(0, 0), [6, 6, 6]);
        assert_eq!(img.pixel(2, 0), [9, 9, 9]);
        assert_eq!(img.pixel(0, 1), [21, 21, 21]);
        assert_eq!(img.pixel(2, 1), [24, 24, 24]);
    }

    use super::*;

    #[test]
    fn drops_alpha_and_keeps_order() {
        let rgba = [1, 2, 3, 255, 4, 5, 6, 0];
        let img = RgbImage::from_rgba(2, 1, &rgba).unwrap();
        assert_eq!(img.data, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(img.pixel(1, 0), [4, 5, 6]);
    }

    #[test]
    fn zero_size_is_an_error() {
        let e = RgbImage::from_rgba(0, 3, &[]).unwrap_err();
        assert!(e.contains("zero size") && e.contains("0x3"), "{e}");
    }

    #[test]
    fn length_mismatch_states_expected_and_got() {
        let e = RgbImage::from_rgba(2, 2, &[0; 15]).unwrap_err();
        assert!(e.contains("expected 16") && e.contains("got 15"), "{e}");
        let e = RgbImage::from_rgb(2, 2, vec![0; 11]).unwrap_err();
        assert!(e.contains("expected 12") && e.contains("got 11"), "{e}");
    }
}
