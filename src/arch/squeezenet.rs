//! torchvision SqueezeNet 1.0 and 1.1: Fire modules between ceil-mode 3x3/stride-2 max pools, and a
//! conv classifier (1x1 conv -> ReLU -> global average pool).

use crate::error::Result;
use crate::graph::builder::ConvSpec;
use crate::graph::{Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

/// 1.0 (7x7 stem, 96 filters) and 1.1 (3x3 stem, 64 filters) differ only in sizes the file carries
/// and in where the pools sit, which the Fire indices tell.
pub fn build(weights: &WeightMap) -> Result<Graph> {
    let mut b = GraphBuilder::new(weights).require_conv_biases();
    let mut x = b.conv("features.0", None, b.input(), ConvSpec::new(2, 0))?;
    x = b.relu("features.1", x);
    for i in 2..=12 {
        let name = format!("features.{i}");
        x = if weights.contains(&format!("{name}.squeeze.weight")) { fire(&mut b, &name, x)? } else { b.max_pool(&name, x, 3, 2, 0, true) };
    }
    b.alias(x, "features");
    b.alias(x, "classifier.0"); // dropout
    let y = b.conv("classifier.1", None, x, ConvSpec::new(1, 0))?;
    let y = b.relu("classifier.2", y);
    let y = b.adaptive_avg_pool("classifier.3", y, 1, 1);
    b.flatten("flatten", y);
    b.finish()
}

fn fire(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<NodeId> {
    let s = b.conv(&format!("{name}.squeeze"), None, x, ConvSpec::new(1, 0))?;
    let s = b.relu(&format!("{name}.squeeze_activation"), s);
    let e1 = b.conv(&format!("{name}.expand1x1"), None, s, ConvSpec::new(1, 0))?;
    let e1 = b.relu(&format!("{name}.expand1x1_activation"), e1);
    let e3 = b.conv(&format!("{name}.expand3x3"), None, s, ConvSpec::new(1, 1))?;
    let e3 = b.relu(&format!("{name}.expand3x3_activation"), e3);
    Ok(b.concat(name, &[e1, e3]))
}
