//! torchvision MobileNetV2: stem conv, 17 inverted residual blocks, a 1x1 conv to 1280, a linear head.
//! The file does not say the strides; they are the paper's table.

use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

/// Stride of features.1 ..= features.17 (the first block of each stage of the paper's table).
const STRIDES: [usize; 17] = [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1];

pub fn build(weights: &WeightMap) -> Result<Graph> {
    let mut b = GraphBuilder::new(weights);
    let x = b.conv("features.0.0", Some("features.0.1"), b.input(), ConvSpec::new(2, 1))?;
    let mut x = b.relu6("features.0.2", x);
    b.alias(x, "features.0");
    for (i, &stride) in STRIDES.iter().enumerate() {
        x = inverted_residual(&mut b, &format!("features.{}", i + 1), x, stride)?;
    }
    if !weights.contains("features.18.0.weight") || weights.contains("features.19.0.weight") {
        return fail!(Weights, "MobileNetV2 needs exactly 19 feature stages (features.0 ..= features.18)");
    }
    let x = b.conv("features.18.0", Some("features.18.1"), x, ConvSpec::new(1, 0))?;
    let x = b.relu6("features.18.2", x);
    b.alias(x, "features.18");
    b.alias(x, "features");
    let x = b.adaptive_avg_pool("avgpool", x, 1, 1);
    let x = b.flatten("flatten", x);
    b.alias(x, "classifier.0"); // dropout
    b.linear("classifier.1", x)?;
    b.finish()
}

fn inverted_residual(b: &mut GraphBuilder, name: &str, x: NodeId, stride: usize) -> Result<NodeId> {
    let cin = b.channels(x);
    // Expansion ratio 1 (features.1) has no 1x1 expand conv: conv.0 is then the depthwise one, and the
    // block ends at conv.2 (its batch-norm) instead of conv.3.
    let expands = b.weights().contains(&format!("{name}.conv.3.weight"));
    let mut y = x;
    let mut part = 0;
    if expands {
        y = b.conv(&format!("{name}.conv.0.0"), Some(&format!("{name}.conv.0.1")), y, ConvSpec::new(1, 0))?;
        y = b.relu6(&format!("{name}.conv.0.2"), y);
        b.alias(y, &format!("{name}.conv.0"));
        part = 1;
    }
    let hidden = b.channels(y);
    let k = b.weights().shape(&format!("{name}.conv.{part}.0.weight")).map_or(3, |s| s[2]);
    let dw = ConvSpec::new(stride, k / 2).groups(hidden);
    y = b.conv(&format!("{name}.conv.{part}.0"), Some(&format!("{name}.conv.{part}.1")), y, dw)?;
    y = b.relu6(&format!("{name}.conv.{part}.2"), y);
    b.alias(y, &format!("{name}.conv.{part}"));
    y = b.conv(&format!("{name}.conv.{}", part + 1), Some(&format!("{name}.conv.{}", part + 2)), y, ConvSpec::new(1, 0))?;
    if stride == 1 && b.channels(y) == cin {
        y = b.add(&format!("{name}.add"), x, y)?;
    }
    b.alias(y, name);
    Ok(y)
}
