//! The one data type that crosses from executors to explanation methods: a C x H x W block of f32
//! for a single image. Methods never see which executor produced it.

#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMap {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Row-major CHW.
    pub data: Vec<f32>,
}

impl FeatureMap {
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), channels * height * width);
        FeatureMap { channels, height, width, data }
    }

    pub fn plane_len(&self) -> usize {
        self.height * self.width
    }

    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.plane_len();
        &self.data[c * n..(c + 1) * n]
    }

    /// A Vision Transformer's C x 1 x T token map as the C x g x g grid of its patches: the first
    /// `leading` tokens (the class token) are dropped and the other T - leading = g * g tokens laid
    /// out row by row, the order the patch embedding flattened them in. This is pytorch-grad-cam's
    /// ViT `reshape_transform`; applied to the activation and its gradient alike, it lets every
    /// method explain a token layer. Errors when the patches do not form a square grid.
    pub fn tokens_to_grid(&self, leading: usize) -> Result<FeatureMap, String> {
        let patches = self.width.checked_sub(leading).filter(|_| self.height == 1).unwrap_or(0);
        let g = (patches as f64).sqrt().round() as usize;
        if patches == 0 || g * g != patches {
            return Err(format!("a {} x {} x {} token map with {leading} leading token(s) has no square grid of patches (the input must be square)", self.channels, self.height, self.width));
        }
        let data = self.data.chunks_exact(self.width).flat_map(|tokens| tokens[leading..].iter().copied()).collect();
        Ok(FeatureMap::new(self.channels, g, g, data))
    }
}

/// A single-channel map on some grid (feature grid, network input or original image).
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Map {
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), width * height);
        Map { width, height, data }
    }

    pub fn max(&self) -> f32 {
        self.data.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }

    pub fn min(&self) -> f32 {
        self.data.iter().copied().fold(f32::INFINITY, f32::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_to_grid_drops_the_class_token_and_lays_patches_out_by_rows() {
        // 2 channels, class token then 4 patches: channel c, patch p holds 10 c + p, the token -1.
        let data = (0..2).flat_map(|c| std::iter::once(-1.0).chain((0..4).map(move |p| (10 * c + p) as f32))).collect();
        let grid = FeatureMap::new(2, 1, 5, data).tokens_to_grid(1).unwrap();
        assert_eq!((grid.channels, grid.height, grid.width), (2, 2, 2));
        assert_eq!(grid.data, vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]);
        assert!(FeatureMap::new(1, 1, 6, vec![0.0; 6]).tokens_to_grid(1).is_err());
        assert!(FeatureMap::new(1, 2, 2, vec![0.0; 4]).tokens_to_grid(0).is_err());
    }
}
