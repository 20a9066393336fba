//! Image -> network input tensor, remembering where the input sits on the
//! original image so a map computed on the input can be put back.

use super::resize::resize_bilinear_window;
use super::rgb::RgbImage;

/// The most pixels a network input may have (the crop, or the exact resize): 4096 x 4096, the
/// largest `--size` / `inputSize` a model takes. Checked before anything is allocated; the
/// resized image around the crop is never materialized, so its size is not limited (an image of
/// any aspect ratio, e.g. 30000 x 1, is resized only where the crop lies).
pub const MAX_NETWORK_INPUT_PIXELS: usize = 4096 * 4096;

/// torchvision's ImageNet channel means, for `Normalize::MeanStd` (on x/255).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// torchvision's ImageNet channel standard deviations (on x/255).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How the image is brought to the network's input size.
#[derive(Clone, Debug, PartialEq)]
pub enum Resize {
    /// Stretch to exactly this size (aspect ratio not kept).
    Exact { width: usize, height: usize },
    /// torchvision `Resize(size)` with an int: the shorter side becomes
    /// `size`, the longer `int(size * long / short)`; then, if given,
    /// `CenterCrop((height, width))`. `crop` is `(width, height)`.
    ShorterSide { size: usize, crop: Option<(usize, usize)> },
}

/// How resized pixel values (0..255) become network inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum Normalize {
    /// torchvision `ToTensor()` + `Normalize(mean, std)`: `(x/255 - mean) / std`.
    MeanStd { mean: [f32; 3], std: [f32; 3] },
    /// `(x - offset) / scale` on 0..255 values, e.g. offset 127.5, scale 127.5 for [-1, 1].
    Affine { offset: f32, scale: f32 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub resize: Resize,
    pub normalize: Normalize,
}

impl Preprocess {
    /// The usual torchvision ImageNet evaluation transform:
    /// Resize(256), CenterCrop(224), ToTensor, Normalize(IMAGENET_MEAN, IMAGENET_STD).
    pub fn imagenet() -> Self {
        Preprocess { resize: Resize::ShorterSide { size: 256, crop: Some((224, 224)) }, normalize: Normalize::MeanStd { mean: IMAGENET_MEAN, std: IMAGENET_STD } }
    }
}

/// The network input and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// 3 x height x width, CHW, normalised.
    pub tensor: Vec<f32>,
    pub width: usize,
    pub height: usize,
    pub geometry: Geometry,
}

/// Where the network input sits on the original image, per axis: original
/// pixel u (centre at u + 0.5) lands at input coordinate
/// (u + 0.5) * scale - 0.5 - offset (in input pixel-centre coordinates;
/// without the -0.5 it is the continuous pixel-edge coordinate).
/// `scale` is resized/original size, exactly the ratio the resize used;
/// `offset` is the crop's left/top in resized pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Geometry {
    pub scale_x: f64,
    pub scale_y: f64,
    pub offset_x: f64,
    pub offset_y: f64,
    pub input_w: usize,
    pub input_h: usize,
    pub orig_w: usize,
    pub orig_h: usize,
}

impl Geometry {
    /// The input is the original image, untouched.
    pub fn identity(width: usize, height: usize) -> Self {
        Geometry { scale_x: 1.0, scale_y: 1.0, offset_x: 0.0, offset_y: 0.0, input_w: width, input_h: height, orig_w: width, orig_h: height }
    }

    /// Original edge coordinate of input edge coordinate `x`.
    pub fn orig_x(&self, x: f64) -> f64 {
        (x + self.offset_x) / self.scale_x
    }

    /// Original edge coordinate of input edge coordinate `y`.
    pub fn orig_y(&self, y: f64) -> f64 {
        (y + self.offset_y) / self.scale_y
    }
}

/// torchvision's output size for `Resize(size)` with an int, as (width, height).
/// The long side is truncated, not rounded, as torchvision's `int(...)` does;
/// f64 division of these integers rounds like Python's `/`, so results agree.
/// Computed in u128 (no overflow); a long side beyond `usize` saturates (it is never allocated:
/// `preprocess` resizes only the crop's window).
pub fn shorter_side_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    let new_long = ((size as u128 * long as u128) as f64 / short.max(1) as f64) as usize;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Left/top of torchvision's `CenterCrop`: `int(round((size - crop) / 2))`,
/// Python's round, i.e. halves go to the even neighbour.
pub fn center_crop_origin(width: usize, height: usize, crop_w: usize, crop_h: usize) -> Result<(usize, usize), String> {
    if crop_w == 0 || crop_h == 0 {
        return Err(format!("center crop has zero size ({crop_w}x{crop_h})"));
    }
    if crop_w > width || crop_h > height {
        // torchvision would pad with zeros; a padded border would only add
        // fake evidence to the map, so refuse and let the caller pick sizes.
        return Err(format!("center crop {crop_w}x{crop_h} is larger than the resized image {width}x{height}"));
    }
    let half = |n: usize| ((n as f64) / 2.0).round_ties_even() as usize;
    Ok((half(width - crop_w), half(height - crop_h)))
}

/// Applies `norm` in place to 3 planes of `n` values each.
fn normalize_planes(planes: &mut [f32], n: usize, norm: &Normalize) -> Result<(), String> {
    match norm {
        Normalize::MeanStd { mean, std } => {
            if std.iter().any(|s| *s == 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
                return Err(format!("invalid normalisation mean {mean:?} std {std:?}: std must be finite and non-zero"));
            }
            for (c, plane) in planes.chunks_exact_mut(n).enumerate() {
                // Same order of operations as ToTensor (x/255) then Normalize.
                plane.iter_mut().for_each(|x| *x = (*x / 255.0 - mean[c]) / std[c]);
            }
        }
        Normalize::Affine { offset, scale } => {
            if *scale == 0.0 || !scale.is_finite() || !offset.is_finite() {
                return Err(format!("invalid normalisation offset {offset} scale {scale}: scale must be finite and non-zero"));
            }
            planes.iter_mut().for_each(|x| *x = (*x - offset) / scale);
        }
    }
    Ok(())
}

/// Resizes, crops and normalises `img` for the network, keeping the geometry.
pub fn preprocess(img: &RgbImage, p: &Preprocess) -> Result<Prepared, String> {
    if img.width == 0 || img.height == 0 {
        return Err(format!("image has zero size ({}x{})", img.width, img.height));
    }
    let ((rw, rh), crop) = match p.resize {
        Resize::Exact { width, height } => ((width, height), None),
        Resize::ShorterSide { size, crop } => {
            if size == 0 {
                return Err("resize size must be positive".to_string());
            }
            (shorter_side_size(img.width, img.height, size), crop)
        }
    };
    if rw == 0 || rh == 0 {
        return Err(format!("cannot resize {}x{} to {rw}x{rh}: zero size", img.width, img.height));
    }
    let (width, height, left, top) = match crop {
        None => (rw, rh, 0, 0),
        Some((cw, ch)) => {
            let (left, top) = center_crop_origin(rw, rh, cw, ch)?;
            (cw, ch, left, top)
        }
    };
    // The budget, before anything is allocated: only the network's input is materialized.
    if width.checked_mul(height).is_none_or(|n| n > MAX_NETWORK_INPUT_PIXELS) {
        return Err(match crop {
            None => format!(
                "resizing the {}x{} image to {width}x{height} would make a network input of more than {MAX_NETWORK_INPUT_PIXELS} pixels (4096 x 4096); use a center crop or a smaller exact size",
                img.width, img.height
            ),
            Some(_) => format!("a {width}x{height} crop is more than the {MAX_NETWORK_INPUT_PIXELS}-pixel (4096 x 4096) network input limit; use a smaller input size"),
        });
    }
    let mut tensor = resize_bilinear_window(img, rw, rh, (left, top, width, height))?;
    normalize_planes(&mut tensor, width * height, &p.normalize)?;
    let geometry = Geometry {
        scale_x: rw as f64 / img.width as f64,
        scale_y: rh as f64 / img.height as f64,
        offset_x: left as f64,
        offset_y: top as f64,
        input_w: width,
        input_h: height,
        orig_w: img.width,
        orig_h: img.height,
    };
    Ok(Prepared { tensor, width, height, geometry })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(resize: Resize) -> Preprocess {
        Preprocess { resize, normalize: Normalize::Affine { offset: 0.0, scale: 1.0 } }
    }

    fn gray(width: usize, height: usize, v: u8) -> RgbImage {
        RgbImage::from_rgb(width, height, vec![v; 3 * width * height]).unwrap()
    }

    #[test]
    fn shorter_side_truncates_like_torchvision() {
        assert_eq!(shorter_side_size(300, 400, 256), (256, 341)); // 341.33
        assert_eq!(shorter_side_size(640, 480, 256), (341, 256));
        assert_eq!(shorter_side_size(333, 500, 224), (224, 336)); // 336.34
        assert_eq!(shorter_side_size(100, 199, 128), (128, 254)); // 254.72, not 255
        assert_eq!(shorter_side_size(50, 50, 7), (7, 7));
    }

    #[test]
    fn center_crop_rounds_half_to_even() {
        assert_eq!(center_crop_origin(256, 341, 224, 224).unwrap(), (16, 58)); // 58.5 -> 58
        assert_eq!(center_crop_origin(259, 257, 224, 224).unwrap(), (18, 16)); // 17.5 -> 18, 16.5 -> 16
        let e = center_crop_origin(200, 300, 224, 224).unwrap_err();
        assert!(e.contains("larger"), "{e}");
    }

    #[test]
    fn imagenet_geometry_for_300x400() {
        let out = preprocess(&gray(300, 400, 128), &Preprocess::imagenet()).unwrap();
        let g = &out.geometry;
        assert_eq!((out.width, out.height, out.tensor.len()), (224, 224, 3 * 224 * 224));
        assert_eq!((g.scale_x, g.scale_y), (256.0 / 300.0, 341.0 / 400.0));
        assert_eq!((g.offset_x, g.offset_y), (16.0, 58.0));
        assert_eq!((g.input_w, g.input_h, g.orig_w, g.orig_h), (224, 224, 300, 400));
        // Crop edges on the original: x 16*300/256 .. 240*300/256, y 58*400/341 .. 282*400/341.
        assert!((g.orig_x(0.0) - 18.75).abs() < 1e-9 && (g.orig_x(224.0) - 281.25).abs() < 1e-9);
        assert!((g.orig_y(0.0) - 68.035_190).abs() < 1e-5 && (g.orig_y(224.0) - 330.791_789).abs() < 1e-5);
        // So original columns 19..=280 and rows 68..=330 have their centres in the crop.
        // Constant 128 normalises per channel.
        let want = [0usize, 1, 2].map(|c| (128.0 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]);
        for (c, w) in want.iter().enumerate() {
            assert!((out.tensor[c * 224 * 224 + 1000] - w).abs() < 1e-5);
        }
        assert!((want[0] - 0.074_064_6).abs() < 1e-5); // (128/255 - 0.485) / 0.229
    }

    #[test]
    fn crop_takes_the_centre_window() {
        // 6x4, shorter side 4 -> no resize; crop 2x2 at left 2, top 1.
        let data: Vec<u8> = (0..24u8).flat_map(|v| [v, v + 100, 0]).collect();
        let img = RgbImage::from_rgb(6, 4, data).unwrap();
        let p = raw(Resize::ShorterSide { size: 4, crop: Some((2, 2)) });
        let out = preprocess(&img, &p).unwrap();
        assert_eq!(out.tensor[..4], [8.0, 9.0, 14.0, 15.0]);
        assert_eq!(out.tensor[4..8], [108.0, 109.0, 114.0, 115.0]);
        assert_eq!((out.geometry.offset_x, out.geometry.offset_y), (2.0, 1.0));
        assert_eq!((out.geometry.scale_x, out.geometry.scale_y), (1.0, 1.0));
    }

    #[test]
    fn exact_resize_geometry_and_affine_normalize() {
        let p = Preprocess { resize: Resize::Exact { width: 10, height: 4 }, normalize: Normalize::Affine { offset: 127.5, scale: 127.5 } };
        let out = preprocess(&gray(5, 8, 255), &p).unwrap();
        let g = &out.geometry;
        assert_eq!((g.scale_x, g.scale_y, g.offset_x, g.offset_y), (2.0, 0.5, 0.0, 0.0));
        assert!(out.tensor.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn extreme_aspect_ratios_resize_only_the_crop() {
        for (w, h) in [(30000, 1), (1, 30000), (20000, 3), (3, 20000)] {
            let out = preprocess(&gray(w, h, 200), &Preprocess::imagenet()).unwrap();
            assert_eq!((out.width, out.height, out.tensor.len()), (224, 224, 3 * 224 * 224));
            let want = (200.0 / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
            assert!(out.tensor[..224 * 224].iter().all(|v| (v - want).abs() < 1e-5));
        }
        let e = preprocess(&gray(30000, 1, 0), &raw(Resize::ShorterSide { size: 256, crop: None })).unwrap_err();
        assert!(e.contains("4096 x 4096") && e.contains("center crop"), "{e}");
        let e = preprocess(&gray(4, 4, 0), &raw(Resize::Exact { width: 100_000, height: 100_000 })).unwrap_err();
        assert!(e.contains("network input"), "{e}");
    }

    #[test]
    fn rejects_bad_parameters() {
        let img = gray(4, 4, 0);
        assert!(preprocess(&img, &raw(Resize::ShorterSide { size: 4, crop: Some((5, 4)) })).is_err());
        assert!(preprocess(&img, &raw(Resize::ShorterSide { size: 0, crop: None })).is_err());
        assert!(preprocess(&img, &raw(Resize::Exact { width: 0, height: 3 })).is_err());
        let zero_std = Preprocess { resize: Resize::Exact { width: 2, height: 2 }, normalize: Normalize::MeanStd { mean: IMAGENET_MEAN, std: [0.2, 0.0, 0.2] } };
        assert!(preprocess(&img, &zero_std).unwrap_err().contains("std"));
    }
}
