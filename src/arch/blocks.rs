//! torchvision's building blocks shared by MobileNetV3, EfficientNet and RegNet:
//! `Conv2dNormActivation` (conv, batch-norm, optional activation as `.0`, `.1`, `.2`),
//! `SqueezeExcitation` (`avgpool`, `fc1`, `activation`, `fc2`, `scale_activation`, then `x * scale`)
//! and the inverted residual of MobileNetV3 / EfficientNet's MBConv.

use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Activation, GraphBuilder, NodeId};

/// The activation a torchvision block applies (ReLU is its own op: the guided unit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    Smooth(Activation),
}

/// PyTorch's `nn.Hardsigmoid`: relu6(x + 3) / 6.
pub const HARDSIGMOID: Activation = Activation::Hardsigmoid { alpha: 1.0 / 6.0, beta: 0.5 };

pub fn apply(b: &mut GraphBuilder, name: &str, x: NodeId, act: Act) -> NodeId {
    match act {
        Act::None => x,
        Act::Relu => b.relu(name, x),
        Act::Smooth(a) => b.act(name, x, a),
    }
}

/// `Conv2dNormActivation` at `prefix`: conv `{prefix}.0` with batch-norm `{prefix}.1` folded in,
/// then the activation `{prefix}.2`; the output answers to `prefix`.
pub fn conv_norm_act(b: &mut GraphBuilder, prefix: &str, x: NodeId, spec: ConvSpec, act: Act) -> Result<NodeId> {
    let y = b.conv(&format!("{prefix}.0"), Some(&format!("{prefix}.1")), x, spec)?;
    let y = apply(b, &format!("{prefix}.2"), y, act);
    b.alias(y, prefix);
    Ok(y)
}

/// `SqueezeExcitation` at `prefix`: x * gate(fc2(act(fc1(avgpool(x))))), fc1/fc2 1x1 convs with bias.
pub fn squeeze_excitation(b: &mut GraphBuilder, prefix: &str, x: NodeId, act: Act, gate: Activation) -> Result<NodeId> {
    // torchvision's fc1/fc2 always have biases: a file without one is damaged.
    for fc in ["fc1", "fc2"] {
        b.weights().check(&format!("{prefix}.{fc}.bias"), &[None])?;
    }
    let s = b.adaptive_avg_pool(&format!("{prefix}.avgpool"), x, 1, 1);
    let s = b.conv(&format!("{prefix}.fc1"), None, s, ConvSpec::new(1, 0))?;
    let s = apply(b, &format!("{prefix}.activation"), s, act);
    let s = b.conv(&format!("{prefix}.fc2"), None, s, ConvSpec::new(1, 0))?;
    let s = b.act(&format!("{prefix}.scale_activation"), s, gate);
    let y = b.mul(&format!("{prefix}.mul"), x, s)?;
    b.alias(y, prefix);
    Ok(y)
}

/// The kernel size of a conv weight `key` ((cout, cin, k, k)), for the blocks whose kernel only the
/// file says; None when the key is absent or not a 4-D tensor.
pub fn kernel(b: &GraphBuilder, key: &str) -> Option<usize> {
    b.weights().shape(key).filter(|s| s.len() == 4).map(|s| s[2])
}

/// What differs between MobileNetV3's inverted residual and EfficientNet's MBConv.
#[derive(Clone, Copy, Debug)]
pub struct InvertedResidual {
    pub act: Act,
    /// The squeeze-excitation's inner activation and gate (used where the file has `fc1`).
    pub se: (Act, Activation),
    pub eps: f32,
}

impl InvertedResidual {
    /// `{name}.block.K`: [expand 1x1] -> depthwise kxk (stride here) -> [squeeze-excitation] ->
    /// project 1x1 (no activation), plus the input when the block keeps the size. The expand conv is
    /// absent at expansion ratio 1, the excitation where the family leaves it out; the file says both.
    pub fn build(&self, b: &mut GraphBuilder, name: &str, x: NodeId, stride: usize) -> Result<NodeId> {
        let cin = b.channels(x);
        let mut part = 0;
        let mut y = x;
        // The expand conv is the only 1x1 conv before the depthwise one (whose kernel is 3 or more).
        if kernel(b, &format!("{name}.block.0.0.weight")) == Some(1) {
            y = conv_norm_act(b, &format!("{name}.block.0"), y, ConvSpec::new(1, 0).eps(self.eps), self.act)?;
            part = 1;
        }
        let dw = format!("{name}.block.{part}");
        let k = kernel(b, &format!("{dw}.0.weight")).unwrap_or(3);
        if k.is_multiple_of(2) {
            return fail!(Weights, "tensor '{dw}.0.weight' has a {k}x{k} kernel; a depthwise conv of this family has an odd kernel size");
        }
        let hidden = b.channels(y);
        y = conv_norm_act(b, &dw, y, ConvSpec::new(stride, k / 2).groups(hidden).eps(self.eps), self.act)?;
        part += 1;
        let se = format!("{name}.block.{part}");
        if b.weights().contains(&format!("{se}.fc1.weight")) {
            y = squeeze_excitation(b, &se, y, self.se.0, self.se.1)?;
            part += 1;
        }
        y = conv_norm_act(b, &format!("{name}.block.{part}"), y, ConvSpec::new(1, 0).eps(self.eps), Act::None)?;
        b.alias(y, &format!("{name}.block"));
        if stride == 1 && b.channels(y) == cin {
            y = b.add(&format!("{name}.add"), x, y)?;
        }
        b.alias(y, name);
        Ok(y)
    }
}

/// Whether block `name` (`{name}.block.K`) has a squeeze-excitation, right after its depthwise conv.
pub fn has_se(weights: &crate::weights::WeightMap, name: &str) -> bool {
    (1..=2).any(|k| weights.contains(&format!("{name}.block.{k}.fc1.weight")))
}
