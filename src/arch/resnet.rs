//! torchvision ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck, stride on the 3x3 conv: v1.5).

use crate::error::Result;
use crate::graph::builder::ConvSpec;
use crate::graph::{Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

/// `blocks`: residual blocks per stage ([2, 2, 2, 2] for ResNet-18); keys beyond them are reported as extra.
pub fn build(weights: &WeightMap, blocks: [usize; 4], bottleneck: bool) -> Result<Graph> {
    let mut b = GraphBuilder::new(weights);
    let x = b.conv("conv1", Some("bn1"), b.input(), ConvSpec::new(2, 3))?;
    let x = b.relu("relu", x);
    let mut x = b.max_pool("maxpool", x, 3, 2, 1, false);
    for layer in 1..=4 {
        for i in 0..blocks[layer - 1] {
            let stride = if layer > 1 && i == 0 { 2 } else { 1 };
            let name = format!("layer{layer}.{i}");
            x = if bottleneck { bottleneck_block(&mut b, &name, x, stride)? } else { basic_block(&mut b, &name, x, stride)? };
        }
        b.alias(x, &format!("layer{layer}"));
    }
    let x = b.adaptive_avg_pool("avgpool", x, 1, 1);
    let x = b.flatten("flatten", x);
    b.linear("fc", x)?;
    b.finish()
}

/// The identity, or the 1x1 conv + BN that reshapes it when the block changes size.
fn shortcut(b: &mut GraphBuilder, name: &str, x: NodeId, stride: usize) -> Result<NodeId> {
    if b.weights().contains(&format!("{name}.downsample.0.weight")) {
        b.conv(&format!("{name}.downsample.0"), Some(&format!("{name}.downsample.1")), x, ConvSpec::new(stride, 0))
    } else {
        Ok(x)
    }
}

fn basic_block(b: &mut GraphBuilder, name: &str, x: NodeId, stride: usize) -> Result<NodeId> {
    let y = b.conv(&format!("{name}.conv1"), Some(&format!("{name}.bn1")), x, ConvSpec::new(stride, 1))?;
    let y = b.relu(&format!("{name}.relu1"), y);
    let y = b.conv(&format!("{name}.conv2"), Some(&format!("{name}.bn2")), y, ConvSpec::new(1, 1))?;
    let s = shortcut(b, name, x, stride)?;
    let y = b.add(&format!("{name}.add"), y, s)?;
    let out = b.relu(&format!("{name}.relu"), y);
    b.alias(out, name);
    Ok(out)
}

fn bottleneck_block(b: &mut GraphBuilder, name: &str, x: NodeId, stride: usize) -> Result<NodeId> {
    let y = b.conv(&format!("{name}.conv1"), Some(&format!("{name}.bn1")), x, ConvSpec::new(1, 0))?;
    let y = b.relu(&format!("{name}.relu1"), y);
    let y = b.conv(&format!("{name}.conv2"), Some(&format!("{name}.bn2")), y, ConvSpec::new(stride, 1))?;
    let y = b.relu(&format!("{name}.relu2"), y);
    let y = b.conv(&format!("{name}.conv3"), Some(&format!("{name}.bn3")), y, ConvSpec::new(1, 0))?;
    let s = shortcut(b, name, x, stride)?;
    let y = b.add(&format!("{name}.add"), y, s)?;
    let out = b.relu(&format!("{name}.relu"), y);
    b.alias(out, name);
    Ok(out)
}

/// Whether a file is a ResNet other than resnet18/34/50 (ResNet-101/152, ResNeXt, Wide ResNet).
pub fn matches_other(_weights: &WeightMap) -> bool {
    false
}

/// Any torchvision ResNet, its depths, groups and widths read from the file.
pub fn build_any(weights: &WeightMap) -> Result<Graph> {
    crate::fail!(Weights, "this ResNet variant is not implemented yet (keys: {})", weights.names().take(3).collect::<Vec<_>>().join(", "))
}
