//! torchvision ShuffleNet V2 (x0.5, x1.0, x1.5, x2.0: widths and repeats come from the file).
//! conv1 (3x3/2 + BN + ReLU) -> 3x3/2 max pool -> stage2..4 of InvertedResidual blocks -> conv5 (1x1 +
//! BN + ReLU) -> mean over the map -> fc.
//!
//! A stage's first block (stride 2) runs branch1 and branch2 on the whole input; the others split
//! the channels in half and run branch2 on the second half only. Either way the two halves are
//! concatenated and channel-shuffled in 2 groups.

use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

/// Whether a state dict's keys are this family's.
pub fn matches(weights: &WeightMap) -> bool {
    weights.contains("stage2.0.branch1.0.weight") && weights.contains("conv5.0.weight")
}

pub fn build(weights: &WeightMap) -> Result<Graph> {
    let mut b = GraphBuilder::new(weights);
    let x = b.conv("conv1.0", Some("conv1.1"), b.input(), ConvSpec::new(2, 1))?;
    let x = b.relu("conv1.2", x);
    b.alias(x, "conv1");
    let mut x = b.max_pool("maxpool", x, 3, 2, 1, false);
    for stage in ["stage2", "stage3", "stage4"] {
        x = stage_blocks(&mut b, stage, x)?;
    }
    let x = b.conv("conv5.0", Some("conv5.1"), x, ConvSpec::new(1, 0))?;
    let x = b.relu("conv5.2", x);
    b.alias(x, "conv5");
    let x = b.adaptive_avg_pool("mean", x, 1, 1);
    let x = b.flatten("flatten", x);
    b.linear("fc", x)?;
    b.finish()
}

fn stage_blocks(b: &mut GraphBuilder, stage: &str, mut x: NodeId) -> Result<NodeId> {
    for key in ["branch1.0", "branch2.0"] {
        if !b.weights().contains(&format!("{stage}.0.{key}.weight")) {
            return fail!(Weights, "missing tensor '{stage}.0.{key}.weight': each ShuffleNet V2 stage starts with a stride-2 block");
        }
    }
    let blocks = (0..).take_while(|i| b.weights().contains(&format!("{stage}.{i}.branch2.0.weight"))).count();
    for i in 0..blocks {
        x = inverted_residual(b, &format!("{stage}.{i}"), x, i == 0)?;
    }
    b.alias(x, stage);
    Ok(x)
}

fn inverted_residual(b: &mut GraphBuilder, name: &str, x: NodeId, downsample: bool) -> Result<NodeId> {
    let (left, right) = if downsample {
        (branch1(b, name, x)?, branch2(b, name, x, 2)?)
    } else {
        let c = b.channels(x);
        if !c.is_multiple_of(2) {
            return fail!(Weights, "ShuffleNet V2 block '{name}' splits {c} channels in half");
        }
        let first = b.slice(&format!("{name}.chunk.0"), x, 0, c / 2)?;
        let second = b.slice(&format!("{name}.chunk.1"), x, c / 2, c)?;
        (first, branch2(b, name, second, 1)?)
    };
    let y = b.concat(&format!("{name}.cat"), &[left, right]);
    let y = b.channel_shuffle(&format!("{name}.shuffle"), y, 2)?;
    b.alias(y, name);
    Ok(y)
}

/// Stride-2 blocks only: depthwise 3x3/2 + BN -> 1x1 + BN + ReLU.
fn branch1(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<NodeId> {
    let p = format!("{name}.branch1");
    let dw = ConvSpec::new(2, 1).groups(b.channels(x));
    let y = b.conv(&format!("{p}.0"), Some(&format!("{p}.1")), x, dw)?;
    let y = b.conv(&format!("{p}.2"), Some(&format!("{p}.3")), y, ConvSpec::new(1, 0))?;
    Ok(b.relu(&format!("{p}.4"), y))
}

/// 1x1 + BN + ReLU -> depthwise 3x3 (stride) + BN -> 1x1 + BN + ReLU.
fn branch2(b: &mut GraphBuilder, name: &str, x: NodeId, stride: usize) -> Result<NodeId> {
    let p = format!("{name}.branch2");
    let y = b.conv(&format!("{p}.0"), Some(&format!("{p}.1")), x, ConvSpec::new(1, 0))?;
    let y = b.relu(&format!("{p}.2"), y);
    let dw = ConvSpec::new(stride, 1).groups(b.channels(y));
    let y = b.conv(&format!("{p}.3"), Some(&format!("{p}.4")), y, dw)?;
    let y = b.conv(&format!("{p}.5"), Some(&format!("{p}.6")), y, ConvSpec::new(1, 0))?;
    Ok(b.relu(&format!("{p}.7"), y))
}
