//! torchvision DenseNet.

use crate::error::Result;
use crate::fail;
use crate::graph::Graph;
use crate::weights::WeightMap;

/// Whether a state dict's keys are this family's.
pub fn matches(_weights: &WeightMap) -> bool {
    false
}

pub fn build(_weights: &WeightMap) -> Result<Graph> {
    fail!(Weights, "DenseNet is not implemented yet")
}
