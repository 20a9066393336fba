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
