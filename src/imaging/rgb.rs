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
        let expected = pixels
            .checked_mul(4)
            .ok_or_else(|| format!("image {width}x{height} is too large"))?;
        if rgba.len() != expected {
            return Err(format!(
                "RGBA data length mismatch for {width}x{height}: expected {expected} bytes (4 per pixel), got {}",
                rgba.len()
            ));
        }
        let data = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }

    /// Builds an image from interleaved RGB bytes, checking the length.
    pub fn from_rgb(width: usize, height: usize, rgb: Vec<u8>) -> Result<Self, String> {
        let pixels = checked_pixels(width, height)?;
        let expected = pixels
            .checked_mul(3)
            .ok_or_else(|| format!("image {width}x{height} is too large"))?;
        if rgb.len() != expected {
            return Err(format!(
                "RGB data length mismatch for {width}x{height}: expected {expected} bytes (3 per pixel), got {}",
                rgb.len()
            ));
        }
        Ok(RgbImage {
            width,
            height,
            data: rgb,
        })
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
    width
        .checked_mul(height)
        .ok_or_else(|| format!("image {width}x{height} is too large"))
}

#[cfg(test)]
mod tests {
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
