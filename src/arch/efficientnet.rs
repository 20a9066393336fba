//! torchvision EfficientNet B0-B7 and EfficientNetV2 S/M/L: SiLU stem, stages of blocks, a 1x1 head
//! conv + SiLU, average pool, dropout, linear. B0-B7 blocks are all MBConv (expand 1x1, depthwise kxk,
//! squeeze-excitation with SiLU and a sigmoid gate, project 1x1); V2 starts with FusedMBConv stages
//! (one full kxk conv that expands, then a 1x1 projection; or the kxk conv alone at expansion 1) and
//! no squeeze-excitation. Stochastic depth is the identity at inference. Widths, depths and kernel
//! sizes come from the file; strides and batch-norm eps are torchvision's.

use super::blocks::{conv_norm_act, has_se, kernel, Act, InvertedResidual};
use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Activation, Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

const SILU: Act = Act::Smooth(Activation::Silu);

/// Stride of each stage's first block (features.1 ..), the same for B0-B7 (7 stages), V2-S (6) and
/// V2-M/L (7).
const STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];

/// Blocks per stage of B5, B6 and B7, which torchvision builds with batch-norm eps 1e-3 (their weights
/// were ported from TF); B0-B4 use PyTorch's 1e-5. Only the depths tell them apart (B1 and B2 share
/// theirs, both 1e-5).
const TF_EPS_DEPTHS: [[usize; 7]; 3] = [[3, 5, 5, 7, 7, 9, 3], [3, 6, 6, 8, 8, 11, 3], [4, 7, 7, 10, 10, 13, 4]];

/// Whether a state dict's keys are this family's (`v2`: EfficientNetV2). B0-B7's first block has a
/// squeeze-excitation, V2's (a FusedMBConv) has none.
pub fn matches(weights: &WeightMap, v2: bool) -> bool {
    weights.contains("features.1.0.block.0.0.weight") && weights.contains("classifier.1.weight") && has_se(weights, "features.1.0") != v2
}

/// torchvision's evaluation (crop, resize) of each variant, told apart by the head conv's width
/// (B1-B7 scale it) and, for B0/B1 and the V2 sizes, by the first stage's depth.
pub fn eval_size(weights: &WeightMap, v2: bool) -> (usize, usize) {
    let depths = stage_depths(weights);
    let head = format!("features.{}.0.weight", depths.len() + 1);
    let width = weights.shape(&head).and_then(|s| s.first().copied()).unwrap_or(0);
    let first = depths.first().copied().unwrap_or(0);
    match (v2, width, first) {
        (true, _, 2) => (384, 384), // V2-S
        (true, _, _) => (480, 480), // V2-M, V2-L
        (false, 1280, 1) => (224, 256),
        (false, 1280, _) => (240, 255),
        (false, 1408, _) => (288, 288),
        (false, 1536, _) => (300, 320),
        (false, 1792, _) => (380, 384),
        (false, 2048, _) => (456, 456),
        (false, 2304, _) => (528, 528),
        (false, 2560, _) => (600, 600),
        _ => (224, 256), // a narrowed or fine-tuned variant: the common ImageNet crop
    }
}

fn stage_depths(weights: &WeightMap) -> Vec<usize> {
    (1..).map(|s| (0..).take_while(|i| weights.contains(&format!("features.{s}.{i}.block.0.0.weight"))).count()).take_while(|&n| n > 0).collect()
}

pub fn build(weights: &WeightMap, v2: bool) -> Result<Graph> {
    let depths = stage_depths(weights);
    let family = if v2 { "EfficientNetV2" } else { "EfficientNet" };
    if depths.is_empty() || depths.len() > STRIDES.len() {
        return fail!(Weights, "an {family} has 6 or 7 stages of blocks (features.1.0 ..), the file has {}", depths.len());
    }
    if v2 && has_se(weights, "features.1.0") {
        return fail!(Weights, "block 'features.1.0' has a squeeze-excitation: an EfficientNet B0-B7 file, not EfficientNetV2 (use efficientnet)");
    }
    let eps = if v2 || TF_EPS_DEPTHS.iter().any(|d| d[..] == depths[..]) { 1e-3 } else { 1e-5 };
    let mut b = GraphBuilder::new(weights);
    let input = b.input();
    let mut x = conv_norm_act(&mut b, "features.0", input, ConvSpec::new(2, 1).eps(eps), SILU)?;
    for (s, &n) in depths.iter().enumerate() {
        let stage = format!("features.{}", s + 1);
        for i in 0..n {
            let stride = if i == 0 { STRIDES[s] } else { 1 };
            x = block(&mut b, &format!("{stage}.{i}"), x, stride, eps, v2)?;
        }
        b.alias(x, &stage);
    }
    let head = format!("features.{}", depths.len() + 1);
    let x = b.conv(&format!("{head}.0"), Some(&format!("{head}.1")), x, ConvSpec::new(1, 0).eps(eps))?;
    let x = b.act(&format!("{head}.2"), x, Activation::Silu);
    b.alias(x, "features");
    b.alias(x, &head); // the last alias is the name the default layer is shown by
    let x = b.adaptive_avg_pool("avgpool", x, 1, 1);
    let x = b.flatten("flatten", x);
    b.alias(x, "classifier.0"); // dropout
    b.linear("classifier.1", x)?;
    b.finish()
}

/// An MBConv (it has a squeeze-excitation) or, in V2, a FusedMBConv.
fn block(b: &mut GraphBuilder, name: &str, x: NodeId, stride: usize, eps: f32, v2: bool) -> Result<NodeId> {
    if has_se(b.weights(), name) {
        let mbconv = InvertedResidual { act: SILU, se: (SILU, Activation::Sigmoid), eps };
        return mbconv.build(b, name, x, stride);
    }
    if !v2 {
        return fail!(
            Weights,
            "block '{name}' has no squeeze-excitation ('{name}.block.1.fc1.weight' or '.block.2.fc1.weight'): an EfficientNetV2 block in an EfficientNet B0-B7 file (use efficientnet_v2)"
        );
    }
    fused_mbconv(b, name, x, stride, eps)
}

/// V2's FusedMBConv: kxk conv (stride here) + SiLU, then a 1x1 projection when the kxk conv expands.
fn fused_mbconv(b: &mut GraphBuilder, name: &str, x: NodeId, stride: usize, eps: f32) -> Result<NodeId> {
    let cin = b.channels(x);
    let first = format!("{name}.block.0");
    let k = kernel(b, &format!("{first}.0.weight")).unwrap_or(3);
    if k.is_multiple_of(2) {
        return fail!(Weights, "tensor '{first}.0.weight' has a {k}x{k} kernel; a FusedMBConv has an odd kernel size");
    }
    let mut y = conv_norm_act(b, &first, x, ConvSpec::new(stride, k / 2).eps(eps), SILU)?;
    if b.weights().contains(&format!("{name}.block.1.0.weight")) {
        y = conv_norm_act(b, &format!("{name}.block.1"), y, ConvSpec::new(1, 0).eps(eps), Act::None)?;
    }
    b.alias(y, &format!("{name}.block"));
    if stride == 1 && b.channels(y) == cin {
        y = b.add(&format!("{name}.add"), x, y)?;
    }
    b.alias(y, name);
    Ok(y)
}
