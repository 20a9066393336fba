//! torchvision RegNet X and Y, every size: stem conv 3x3/s2 + BN + ReLU, stages `trunk_output.blockN`
//! of ResBottleneckBlocks (1x1 -> grouped 3x3 -> [squeeze-excitation, Y only] -> 1x1, projected
//! shortcut when the size changes, ReLU after the add), average pool, linear `fc`.
//! Depths, widths, group counts and SE widths come from the file; every stage starts with stride 2.

use super::blocks::{conv_norm_act, squeeze_excitation, Act};
use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Activation, Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

/// Whether a state dict's keys are this family's.
pub fn matches(weights: &WeightMap) -> bool {
    weights.contains("stem.0.weight") && weights.contains("trunk_output.block1.block1-0.f.a.0.weight")
}

fn block_name(stage: usize, i: usize) -> String {
    format!("trunk_output.block{stage}.block{stage}-{i}")
}

fn has_block(weights: &WeightMap, stage: usize, i: usize) -> bool {
    weights.contains(&format!("{}.f.a.0.weight", block_name(stage, i)))
}

pub fn build(weights: &WeightMap) -> Result<Graph> {
    let mut b = GraphBuilder::new(weights);
    let input = b.input();
    let mut x = conv_norm_act(&mut b, "stem", input, ConvSpec::new(2, 1), Act::Relu)?;
    let mut stage = 1;
    while has_block(weights, stage, 0) {
        for i in (0..).take_while(|&i| has_block(weights, stage, i)) {
            x = res_bottleneck(&mut b, &block_name(stage, i), x, if i == 0 { 2 } else { 1 })?;
        }
        if !has_block(weights, stage + 1, 0) {
            b.alias(x, "trunk_output"); // before the stage name, which the default layer is shown by
        }
        b.alias(x, &format!("trunk_output.block{stage}"));
        stage += 1;
    }
    let x = b.adaptive_avg_pool("avgpool", x, 1, 1);
    let x = b.flatten("flatten", x);
    b.linear("fc", x)?;
    b.finish()
}

/// relu(proj(x) + f(x)); the projection (1x1 conv + BN, stride here) is there when the block changes
/// size, which the first block of every stage does.
fn res_bottleneck(b: &mut GraphBuilder, name: &str, x: NodeId, stride: usize) -> Result<NodeId> {
    let f = format!("{name}.f");
    let y = conv_norm_act(b, &format!("{f}.a"), x, ConvSpec::new(1, 0), Act::Relu)?;
    let groups = groups(b, &format!("{f}.b.0.weight"), b.channels(y))?;
    let mut y = conv_norm_act(b, &format!("{f}.b"), y, ConvSpec::new(stride, 1).groups(groups), Act::Relu)?;
    if b.weights().contains(&format!("{f}.se.fc1.weight")) {
        y = squeeze_excitation(b, &format!("{f}.se"), y, Act::Relu, Activation::Sigmoid)?;
    }
    let y = conv_norm_act(b, &format!("{f}.c"), y, ConvSpec::new(1, 0), Act::None)?;
    b.alias(y, &f);
    let proj = format!("{name}.proj");
    let shortcut = if stride != 1 || b.weights().contains(&format!("{proj}.0.weight")) { conv_norm_act(b, &proj, x, ConvSpec::new(stride, 0), Act::None)? } else { x };
    let y = b.add(&format!("{name}.add"), shortcut, y)?;
    let y = b.relu(&format!("{name}.activation"), y);
    b.alias(y, name);
    Ok(y)
}

/// The group count of the grouped 3x3 conv: its width over the input channels per group in its weight.
fn groups(b: &GraphBuilder, key: &str, width: usize) -> Result<usize> {
    let per_group = b.weights().check(key, &[Some(width), None, Some(3), Some(3)])?[1];
    if per_group == 0 || !width.is_multiple_of(per_group) {
        return fail!(Weights, "tensor '{key}' takes {per_group} input channels per group, which does not divide the block width {width}");
    }
    Ok(width / per_group)
}
