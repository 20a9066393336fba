//! torchvision GoogLeNet (Inception v1): BasicConv2d stem, nine Inception modules between ceil-mode
//! max pools, global average pool, dropout, fc. Kernel sizes come from the file (torchvision's
//! "5x5" branch3 is a 3x3 conv); every conv pads to keep the size (k / 2) except for the stride.
//!
//! Pretrained torchvision GoogLeNet runs with `transform_input=True`: it rescales each input channel
//! from ImageNet mean/std normalization to (x - 0.5) / 0.5 before conv1. The state dict cannot say
//! whether a model was trained that way, so the graph does not apply it: the network starts at conv1
//! (torchvision's behaviour with `transform_input=False`).

use crate::error::Result;
use crate::graph::builder::ConvSpec;
use crate::graph::{Graph, GraphBuilder, NodeId, Padding};
use crate::weights::WeightMap;

/// The Inception modules, with the max pool that follows some of them: (name, pool name, kernel).
const MODULES: [(&str, Option<(&str, usize)>); 9] = [
    ("inception3a", None),
    ("inception3b", Some(("maxpool3", 3))),
    ("inception4a", None),
    ("inception4b", None),
    ("inception4c", None),
    ("inception4d", None),
    ("inception4e", Some(("maxpool4", 2))),
    ("inception5a", None),
    ("inception5b", None),
];

/// Whether a state dict's keys are this family's.
pub fn matches(weights: &WeightMap) -> bool {
    weights.contains("conv1.conv.weight") && weights.contains("inception3a.branch1.conv.weight")
}

pub fn build(weights: &WeightMap) -> Result<Graph> {
    drop_auxiliary(weights, &["aux1.", "aux2."])?;
    let mut b = GraphBuilder::new(weights);
    let input = b.input();
    let x = basic_conv(&mut b, "conv1", input, 2, true)?;
    let x = b.max_pool("maxpool1", x, 3, 2, 0, true);
    let x = basic_conv(&mut b, "conv2", x, 1, true)?;
    let x = basic_conv(&mut b, "conv3", x, 1, true)?;
    let mut x = b.max_pool("maxpool2", x, 3, 2, 0, true);
    for (name, pool) in MODULES {
        x = inception(&mut b, name, x)?;
        if let Some((pool, k)) = pool {
            x = b.max_pool(pool, x, k, 2, 0, true);
        }
    }
    let x = b.adaptive_avg_pool("avgpool", x, 1, 1);
    let x = b.flatten("flatten", x);
    b.alias(x, "dropout");
    b.linear("fc", x)?;
    b.finish()
}

/// Four branches: 1x1; 1x1 -> kxk; 1x1 -> kxk; 3x3 max pool (stride 1) -> 1x1; concatenated.
fn inception(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<NodeId> {
    let b1 = basic_conv(b, &format!("{name}.branch1"), x, 1, true)?;
    let b2 = basic_conv(b, &format!("{name}.branch2.0"), x, 1, true)?;
    let b2 = basic_conv(b, &format!("{name}.branch2.1"), b2, 1, true)?;
    let b3 = basic_conv(b, &format!("{name}.branch3.0"), x, 1, true)?;
    let b3 = basic_conv(b, &format!("{name}.branch3.1"), b3, 1, true)?;
    let b4 = b.max_pool(&format!("{name}.branch4.0"), x, 3, 1, 1, true);
    let b4 = basic_conv(b, &format!("{name}.branch4.1"), b4, 1, true)?;
    let out = b.concat(&format!("{name}.cat"), &[b1, b2, b3, b4]);
    b.alias(out, name);
    Ok(out)
}

/// torchvision's BasicConv2d (GoogLeNet and Inception v3): conv without bias, batch-norm with eps
/// 1e-3, functional ReLU (named `{name}.relu`; the block's name is an alias of its output).
/// `padded`: pad k / 2 on each axis of the file's kernel (1x7 -> (0, 3)); else no padding.
pub(super) fn basic_conv(b: &mut GraphBuilder, name: &str, x: NodeId, stride: usize, padded: bool) -> Result<NodeId> {
    let conv = format!("{name}.conv");
    let (kh, kw) = match b.weights().shape(&format!("{conv}.weight")) {
        Some(&[_, _, kh, kw]) => (kh, kw),
        _ => (1, 1), // missing or malformed: `conv` reports the key
    };
    let padding = if padded { Padding::Symmetric { h: kh / 2, w: kw / 2 } } else { Padding::Symmetric { h: 0, w: 0 } };
    let spec = ConvSpec { padding, ..ConvSpec::new(stride, 0).eps(1e-3) };
    let y = b.conv(&conv, Some(&format!("{name}.bn")), x, spec)?;
    let y = b.relu(&format!("{name}.relu"), y);
    b.alias(y, name);
    Ok(y)
}

/// Auxiliary classifiers only matter in training (torchvision skips them in eval mode): their keys
/// are taken, so that `finish` does not report them, and dropped.
pub(super) fn drop_auxiliary(weights: &WeightMap, prefixes: &[&str]) -> Result<()> {
    let aux: Vec<String> = weights.names().filter(|n| prefixes.iter().any(|p| n.starts_with(p))).map(String::from).collect();
    for name in aux {
        let shape: Vec<Option<usize>> = weights.shape(&name).unwrap_or_default().iter().map(|&d| Some(d)).collect();
        weights.take(&name, &shape)?;
    }
    Ok(())
}
