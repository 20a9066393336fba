//! torchvision ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck, stride on the 3x3 conv: v1.5),
//! and every other torchvision ResNet: ResNet-101/152, ResNeXt and Wide ResNet differ only in block
//! counts, bottleneck widths and the 3x3 conv's groups, all of which the file says.

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
    let groups = conv2_groups(b.weights(), name, b.channels(y));
    let y = b.conv(&format!("{name}.conv2"), Some(&format!("{name}.bn2")), y, ConvSpec::new(stride, 1).groups(groups))?;
    let y = b.relu(&format!("{name}.relu2"), y);
    let y = b.conv(&format!("{name}.conv3"), Some(&format!("{name}.bn3")), y, ConvSpec::new(1, 0))?;
    let s = shortcut(b, name, x, stride)?;
    let y = b.add(&format!("{name}.add"), y, s)?;
    let out = b.relu(&format!("{name}.relu"), y);
    b.alias(out, name);
    Ok(out)
}

/// The 3x3 conv's groups (ResNeXt: 32 or 64; 1 otherwise): its weight is (width, width / groups, 3, 3).
/// A shape that does not divide gives 1, and the conv then reports the key and both shapes.
fn conv2_groups(weights: &WeightMap, block: &str, width: usize) -> usize {
    match weights.shape(&format!("{block}.conv2.weight")) {
        Some(&[_, per_group, _, _]) if per_group > 0 && width.is_multiple_of(per_group) => width / per_group,
        _ => 1,
    }
}

/// Residual blocks per stage, and whether they are bottlenecks, when the keys are a torchvision ResNet's.
pub fn layout(weights: &WeightMap) -> Option<([usize; 4], bool)> {
    let has = |k: &str| weights.contains(k);
    if !(has("conv1.weight") && has("layer4.0.conv1.weight")) {
        return None;
    }
    let blocks = |layer: usize| (0..).take_while(|i| has(&format!("layer{layer}.{i}.conv1.weight"))).count();
    Some(([blocks(1), blocks(2), blocks(3), blocks(4)], has("layer1.0.conv3.weight")))
}

/// Whether a ResNet is exactly resnet18, resnet34 or resnet50: their block counts, and the plain
/// 64-wide first bottleneck without groups (ResNeXt and Wide ResNet-50 share resnet50's counts).
fn is_standard(weights: &WeightMap, blocks: [usize; 4], bottleneck: bool) -> bool {
    let counts = matches!((blocks, bottleneck), ([2, 2, 2, 2], false) | ([3, 4, 6, 3], _));
    let width = weights.shape("layer1.0.conv1.weight").and_then(|s| s.first().copied());
    let per_group = weights.shape("layer1.0.conv2.weight").and_then(|s| s.get(1).copied());
    counts && width == Some(64) && per_group == Some(64)
}

/// Whether a file is a ResNet other than resnet18/34/50 (ResNet-101/152, ResNeXt, Wide ResNet).
pub fn matches_other(weights: &WeightMap) -> bool {
    layout(weights).is_some_and(|(blocks, bottleneck)| !is_standard(weights, blocks, bottleneck))
}

/// Any torchvision ResNet, its depths, groups and widths read from the file.
pub fn build_any(weights: &WeightMap) -> Result<Graph> {
    let Some((blocks, bottleneck)) = layout(weights) else {
        return crate::fail!(Weights, "not a torchvision ResNet: it needs conv1.weight and layer4.0.conv1.weight");
    };
    if let Some(empty) = blocks.iter().position(|&n| n == 0) {
        return crate::fail!(Weights, "missing tensor 'layer{}.0.conv1.weight': a ResNet has at least one block in each of layer1 ..= layer4", empty + 1);
    }
    build(weights, blocks, bottleneck)
}
