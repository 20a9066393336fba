//! torchvision MobileNetV3 large and small: hard-swish stem, inverted residual blocks (squeeze-
//! excitation with a hard-sigmoid gate where the file has one), a 1x1 conv to 6x the last width,
//! then linear -> hard-swish -> dropout -> linear. Batch-norm eps 1e-3.
//! Which blocks have stride 2 and which use ReLU or hard-swish is not in the file: those are the
//! paper's tables (torchvision's `_mobilenet_v3_conf`), large and small told apart by their block count.

use super::blocks::{conv_norm_act, Act, InvertedResidual, HARDSIGMOID};
use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Activation, Graph, GraphBuilder};
use crate::weights::WeightMap;

const EPS: f32 = 1e-3;
const HS: Act = Act::Smooth(Activation::Hardswish);

/// (stride, hard-swish) of features.1 ..= features.15 of the large model.
const LARGE: [(usize, bool); 15] =
    [(1, false), (2, false), (1, false), (2, false), (1, false), (1, false), (2, true), (1, true), (1, true), (1, true), (1, true), (1, true), (2, true), (1, true), (1, true)];
/// (stride, hard-swish) of features.1 ..= features.11 of the small model.
const SMALL: [(usize, bool); 11] = [(2, false), (2, false), (1, false), (2, true), (1, true), (1, true), (1, true), (1, true), (2, true), (1, true), (1, true)];

/// Whether a state dict's keys are this family's.
pub fn matches(weights: &WeightMap) -> bool {
    weights.contains("features.1.block.0.0.weight") && weights.contains("classifier.3.weight")
}

pub fn build(weights: &WeightMap) -> Result<Graph> {
    let blocks = (1..).take_while(|i| weights.contains(&format!("features.{i}.block.0.0.weight"))).count();
    let table: &[(usize, bool)] = match blocks {
        15 => &LARGE,
        11 => &SMALL,
        n => return fail!(Weights, "a MobileNetV3 has 15 (large) or 11 (small) inverted residual blocks, the file has {n} (features.1 ..)"),
    };
    let mut b = GraphBuilder::new(weights);
    let input = b.input();
    let mut x = conv_norm_act(&mut b, "features.0", input, ConvSpec::new(2, 1).eps(EPS), HS)?;
    for (i, &(stride, hs)) in table.iter().enumerate() {
        let block = InvertedResidual { act: if hs { HS } else { Act::Relu }, se: (Act::Relu, HARDSIGMOID), eps: EPS };
        x = block.build(&mut b, &format!("features.{}", i + 1), x, stride)?;
    }
    let last = format!("features.{}", table.len() + 1);
    let x = b.conv(&format!("{last}.0"), Some(&format!("{last}.1")), x, ConvSpec::new(1, 0).eps(EPS))?;
    let x = b.act(&format!("{last}.2"), x, Activation::Hardswish);
    b.alias(x, "features");
    b.alias(x, &last); // the last alias is the name the default layer is shown by
    let x = b.adaptive_avg_pool("avgpool", x, 1, 1);
    let x = b.flatten("flatten", x);
    let x = b.linear("classifier.0", x)?;
    let x = b.act("classifier.1", x, Activation::Hardswish);
    b.alias(x, "classifier.2"); // dropout
    b.linear("classifier.3", x)?;
    b.finish()
}
