//! FullGrad (Srinivas & Fleuret, 2019), as pytorch-grad-cam computes it. A ReLU network's score
//! splits exactly into the input's share and every bias's share (the full-gradient decomposition):
//! y = x . dy/dx + sum over layers of b . dy/db. The map takes the magnitude of each part on its own
//! grid, |x * dy/dx| and, for every conv (batch-norm folded into it) or affine layer, |b_k * dy/dz_k|
//! at its output z, scales each channel to [0, 1] (min-max per image), brings it to the input's
//! size, and sums everything. It has no target layer: every layer with a 2-D bias takes part.

use super::{Computed, Evidence, Grid, Method, MethodDef, Needs, Sign};
use crate::error::{Error, Result};
use crate::feature_map::{FeatureMap, Map};
use crate::graph::NodeId;
use crate::imaging::project::upsample_bilinear;

/// What FullGrad reads of one backward walk: the input gradient and each bias layer's reduction.
pub struct FullGradient {
    /// d score / d input, 3 x H x W.
    pub input_gradient: FeatureMap,
    pub layers: Vec<BiasTerm>,
}

/// One bias layer's part, reduced while the walk passed it (its full gradient is not kept).
pub struct BiasTerm {
    pub node: NodeId,
    /// sum_k minmax(|b_k g_k|) on the layer's H x W; `None` for a linear layer, which has no map
    /// (FullGrad's maps read the 2-D biases only) but a share of the score.
    pub map: Option<Map>,
    /// sum over k, h, w of b_k g_k: the layer's share of the score in the decomposition.
    pub signed: f64,
}

impl Method {
    pub const FULLGRAD: Method = Method(&MethodDef {
        name: "fullgrad",
        aliases: &["full-gradient"],
        label: "FullGrad",
        help: "|input x gradient| plus every conv bias x its output gradient, each scaled and summed (Srinivas & Fleuret); ignores the layer.",
        needs: Needs { full_gradient: true, ..Needs::NOTHING },
        grid: Grid::Input,
        sign: Sign::AsComputed,
        compute: |e| Ok(Computed::from(fullgrad(e.input, e.full_gradient()?)?)),
    });
}

impl Evidence<'_> {
    pub fn full_gradient(&self) -> Result<&FullGradient> {
        self.full_gradient.ok_or_else(|| Error::Internal("the full gradient was not gathered".into()))
    }
}

/// `plane - min`, divided by (its max + 1e-7): pytorch-grad-cam's per-image scaling (so a constant
/// plane becomes 0).
fn min_max(plane: &[f32]) -> impl Iterator<Item = f32> + '_ {
    let min = plane.iter().copied().fold(f32::INFINITY, f32::min);
    let max = plane.iter().map(|v| v - min).fold(0.0, f32::max);
    plane.iter().map(move |v| (v - min) / (max + 1e-7))
}

/// sum over channels k of minmax(|b_k g_k|): one bias layer's map on its own grid, from the
/// gradient `g` at its output.
pub fn bias_map(bias: &[f32], g: &FeatureMap) -> Result<Map> {
    if bias.len() != g.channels {
        return Err(Error::Internal(format!("{} biases for a gradient of {} channels", bias.len(), g.channels)));
    }
    let n = g.plane_len();
    let mut sum = vec![0.0f32; n];
    for (k, b) in bias.iter().enumerate() {
        let plane: Vec<f32> = g.data[k * n..(k + 1) * n].iter().map(|v| (b * v).abs()).collect();
        sum.iter_mut().zip(min_max(&plane)).for_each(|(s, v)| *s += v);
    }
    Ok(Map::new(g.width, g.height, sum))
}

/// sum over k, h, w of b_k g_k.
pub fn bias_share(bias: &[f32], g: &FeatureMap) -> f64 {
    let n = g.plane_len();
    bias.iter().enumerate().map(|(k, &b)| b as f64 * g.data[k * n..(k + 1) * n].iter().map(|&v| v as f64).sum::<f64>()).sum()
}

/// The FullGrad map on the input grid (before the explainer's final min-max): the input term
/// sum_c minmax(|x_c g_c|), plus each bias layer's map, bilinearly resized to the input.
pub fn fullgrad(x: &FeatureMap, fg: &FullGradient) -> Result<Map> {
    let g = &fg.input_gradient;
    if (g.channels, g.height, g.width) != (x.channels, x.height, x.width) {
        return Err(Error::Internal("the input gradient's shape differs from the input's".into()));
    }
    let n = x.plane_len();
    let mut sum = vec![0.0f32; n];
    for c in 0..x.channels {
        let plane: Vec<f32> = (c * n..(c + 1) * n).map(|i| (x.data[i] * g.data[i]).abs()).collect();
        sum.iter_mut().zip(min_max(&plane)).for_each(|(s, v)| *s += v);
    }
    for map in fg.layers.iter().filter_map(|l| l.map.as_ref()) {
        let up = upsample_bilinear(&map.data, map.width, map.height, x.width, x.height).map_err(Error::Internal)?;
        sum.iter_mut().zip(up).for_each(|(s, v)| *s += v);
    }
    Ok(Map::new(x.width, x.height, sum))
}
