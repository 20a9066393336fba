//! torchvision ConvNeXt (tiny, small, base, large): patchify stem (4x4/s4 conv + LayerNorm2d), stages
//! of CNBlocks (depthwise 7x7, channels-last LayerNorm, Linear C->4C, GELU, Linear 4C->C times the
//! layer scale, plus the input) at features.1/3/5/7, downsampling (LayerNorm2d + 2x2/s2 conv) at
//! features.2/4/6, average pool, then LayerNorm2d on the pooled C x 1 x 1, flatten, linear.
//! Every norm has eps 1e-6; every conv and linear a bias. The channels-last permutes need no node:
//! the channel layer norm and the per-pixel linears work on C x H x W directly.

use super::blocks::kernel;
use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Activation, Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

const EPS: f32 = 1e-6;

/// Whether a state dict's keys are this family's.
pub fn matches(weights: &WeightMap) -> bool {
    weights.contains("features.0.0.weight") && weights.contains("features.1.0.layer_scale")
}

fn is_stage(weights: &WeightMap, i: usize) -> bool {
    weights.contains(&format!("features.{i}.0.block.0.weight"))
}

fn is_downsample(weights: &WeightMap, i: usize) -> bool {
    weights.contains(&format!("features.{i}.0.weight")) && weights.contains(&format!("features.{i}.1.weight"))
}

pub fn build(weights: &WeightMap) -> Result<Graph> {
    let mut b = GraphBuilder::new(weights).require_conv_biases();
    // The stem's stride is its kernel size (non-overlapping 4x4 patches).
    let x = b.conv("features.0.0", None, b.input(), ConvSpec::new(4, 0))?;
    let mut x = b.channel_norm("features.0.1", x, EPS)?;
    b.alias(x, "features.0");
    let mut i = 1;
    loop {
        let name = format!("features.{i}");
        if is_stage(weights, i) {
            for j in (0..).take_while(|j| weights.contains(&format!("{name}.{j}.block.0.weight"))) {
                x = cn_block(&mut b, &format!("{name}.{j}"), x)?;
            }
        } else if i > 1 && is_downsample(weights, i) {
            x = b.channel_norm(&format!("{name}.0"), x, EPS)?;
            x = b.conv(&format!("{name}.1"), None, x, ConvSpec::new(2, 0))?;
        } else {
            break;
        }
        if !is_stage(weights, i + 1) && !is_downsample(weights, i + 1) {
            b.alias(x, "features"); // before the stage name, which the default layer is shown by
        }
        b.alias(x, &name);
        i += 1;
    }
    if i == 1 {
        return fail!(Weights, "a ConvNeXt needs a stage of blocks at features.1 (missing tensor 'features.1.0.block.0.weight')");
    }
    let x = b.adaptive_avg_pool("avgpool", x, 1, 1);
    let x = b.channel_norm("classifier.0", x, EPS)?;
    let x = b.flatten("classifier.1", x);
    b.linear("classifier.2", x)?;
    b.finish()
}

/// input + layer_scale * (Linear(GELU(Linear(LayerNorm(dwconv7x7(input)))))), the scale folded into
/// the second linear.
fn cn_block(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<NodeId> {
    let c = b.channels(x);
    let k = kernel(b, &format!("{name}.block.0.weight")).unwrap_or(7);
    if k.is_multiple_of(2) {
        return fail!(Weights, "tensor '{name}.block.0.weight' has a {k}x{k} kernel; a CNBlock's depthwise conv has an odd kernel size");
    }
    let y = b.conv(&format!("{name}.block.0"), None, x, ConvSpec::new(1, k / 2).groups(c))?;
    let y = b.channel_norm(&format!("{name}.block.2"), y, EPS)?;
    let y = b.pointwise_linear(&format!("{name}.block.3"), y, None)?;
    let y = b.act(&format!("{name}.block.4"), y, Activation::Gelu);
    let scale = format!("{name}.layer_scale");
    let y = b.pointwise_linear(&format!("{name}.block.5"), y, Some((&scale, &[Some(c), Some(1), Some(1)])))?;
    b.alias(y, &format!("{name}.block"));
    let y = b.add(&format!("{name}.add"), x, y)?;
    b.alias(y, name);
    Ok(y)
}
