//! torchvision MNASNet (B1; 0.5, 0.75, 1.0, 1.3: the width multiplier only changes sizes the file
//! carries). `layers` is one Sequential: stem conv (0-2), depthwise separable conv (3-7), six stacks of
//! inverted residuals (8-13), head conv 1x1 to 1280 + BN + ReLU (14-16); then a mean over the map and
//! `classifier.1`. Batch-norm eps is PyTorch's default (torchvision's _BN_MOMENTUM only affects
//! training).

use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

/// Stride of the first block of the stacks `layers.8 ..= layers.13` (the paper's table); repeats
/// and kernel sizes come from the file.
const STACK_STRIDES: [usize; 6] = [2, 2, 2, 1, 2, 1];

/// Whether a state dict's keys are this family's.
pub fn matches(weights: &WeightMap) -> bool {
    weights.contains("layers.0.weight") && weights.contains("layers.8.0.layers.0.weight")
}

pub fn build(weights: &WeightMap) -> Result<Graph> {
    let mut b = GraphBuilder::new(weights);
    let x = b.conv("layers.0", Some("layers.1"), b.input(), ConvSpec::new(2, 1))?;
    let x = b.relu("layers.2", x);
    let dw = ConvSpec::new(1, 1).groups(b.channels(x));
    let x = b.conv("layers.3", Some("layers.4"), x, dw)?;
    let x = b.relu("layers.5", x);
    let mut x = b.conv("layers.6", Some("layers.7"), x, ConvSpec::new(1, 0))?;
    for (i, &stride) in STACK_STRIDES.iter().enumerate() {
        x = stack(&mut b, &format!("layers.{}", 8 + i), x, stride)?;
    }
    let x = b.conv("layers.14", Some("layers.15"), x, ConvSpec::new(1, 0))?;
    let x = b.relu("layers.16", x);
    let x = b.adaptive_avg_pool("mean", x, 1, 1);
    let x = b.flatten("flatten", x);
    b.alias(x, "classifier.0"); // dropout
    b.linear("classifier.1", x)?;
    b.finish()
}

fn stack(b: &mut GraphBuilder, name: &str, mut x: NodeId, stride: usize) -> Result<NodeId> {
    let repeats = (0..).take_while(|i| b.weights().contains(&format!("{name}.{i}.layers.0.weight"))).count();
    if repeats == 0 {
        return fail!(Weights, "MNASNet stack '{name}' has no blocks (missing tensor '{name}.0.layers.0.weight')");
    }
    for i in 0..repeats {
        x = inverted_residual(b, &format!("{name}.{i}"), x, if i == 0 { stride } else { 1 })?;
    }
    b.alias(x, name);
    Ok(x)
}

/// expand 1x1 -> ReLU -> depthwise kxk -> ReLU -> project 1x1, plus the input when the size holds.
fn inverted_residual(b: &mut GraphBuilder, name: &str, x: NodeId, stride: usize) -> Result<NodeId> {
    let p = format!("{name}.layers");
    let cin = b.channels(x);
    let y = b.conv(&format!("{p}.0"), Some(&format!("{p}.1")), x, ConvSpec::new(1, 0))?;
    let y = b.relu(&format!("{p}.2"), y);
    let k = b.weights().shape(&format!("{p}.3.weight")).and_then(|s| s.last().copied()).unwrap_or(3);
    let dw = ConvSpec::new(stride, k / 2).groups(b.channels(y));
    let y = b.conv(&format!("{p}.3"), Some(&format!("{p}.4")), y, dw)?;
    let y = b.relu(&format!("{p}.5"), y);
    let mut y = b.conv(&format!("{p}.6"), Some(&format!("{p}.7")), y, ConvSpec::new(1, 0))?;
    if stride == 1 && b.channels(y) == cin {
        y = b.add(&format!("{name}.add"), y, x)?;
    }
    b.alias(y, name);
    Ok(y)
}
