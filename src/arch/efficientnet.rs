//! torchvision EfficientNet B0-B7 and EfficientNetV2 (S/M/L).

use crate::error::Result;
use crate::fail;
use crate::graph::Graph;
use crate::weights::WeightMap;

/// Whether a state dict's keys are this family's (`v2`: EfficientNetV2).
pub fn matches(_weights: &WeightMap, _v2: bool) -> bool {
    false
}

pub fn build(_weights: &WeightMap, _v2: bool) -> Result<Graph> {
    fail!(Weights, "EfficientNet is not implemented yet")
}
