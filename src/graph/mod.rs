//! The network as one graph of named layers. Every executor (candle CPU, WebGPU) runs this same graph;
//! the architectures only build it.
//!
//! Names follow torchvision's module paths (`layer4`, `features.28`, `_blocks.15`), so any layer can be
//! an explanation's target. Batch-norm is folded into the preceding conv at load time, so a conv node
//! also answers to its batch-norm's name; dropout is the identity and only adds an alias.

pub mod builder;
pub mod shapes;

pub use builder::GraphBuilder;

use crate::error::{Error, Result};
use std::sync::Arc;

pub type NodeId = usize;

/// How a conv pads its input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Padding {
    /// PyTorch style: the same amount on both sides of an axis.
    Symmetric { h: usize, w: usize },
    /// TensorFlow "SAME": out = ceil(n / stride), the odd pixel of padding goes after (bottom/right).
    Same,
    /// Fixed amounts per side, as an ONNX file with a fixed input size may give them (asymmetric
    /// pads, `auto_pad = SAME_LOWER`).
    Explicit(Pads),
}

/// Resolved padding of one conv for one input size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pads {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

fn same_padding(n: usize, k: usize, s: usize) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out.saturating_sub(1)) * s + k).saturating_sub(n);
    (total / 2, total - total / 2)
}

impl Padding {
    pub fn resolve(&self, h: usize, w: usize, kh: usize, kw: usize, sh: usize, sw: usize) -> Pads {
        match *self {
            Padding::Symmetric { h: ph, w: pw } => Pads { top: ph, bottom: ph, left: pw, right: pw },
            Padding::Same => {
                let (top, bottom) = same_padding(h, kh, sh);
                let (left, right) = same_padding(w, kw, sw);
                Pads { top, bottom, left, right }
            }
            Padding::Explicit(pads) => pads,
        }
    }
}

/// A convolution with batch-norm already folded in: y = W * x + b.
#[derive(Debug)]
pub struct Conv {
    /// (cout, cin / groups, kh, kw), PyTorch layout.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: Padding,
    pub groups: usize,
}

impl Conv {
    /// The kernels' geometry of this conv on an n x cin x h x w input.
    pub fn geom(&self, n: usize, h: usize, w: usize) -> crate::kernels::Conv2dGeom {
        let Pads { top, bottom, left, right } = self.padding.resolve(h, w, self.kh, self.kw, self.stride.0, self.stride.1);
        crate::kernels::Conv2dGeom {
            n,
            cin: self.cin,
            h,
            w,
            cout: self.cout,
            kh: self.kh,
            kw: self.kw,
            stride_h: self.stride.0,
            stride_w: self.stride.1,
            pad_top: top,
            pad_bottom: bottom,
            pad_left: left,
            pad_right: right,
            groups: self.groups,
        }
    }
}

/// A fully connected layer, PyTorch layout: weight (out, in).
#[derive(Debug)]
pub struct Linear {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub in_features: usize,
    pub out_features: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaxPool {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub ceil_mode: bool,
}

/// Elementwise activations without a guided-backprop rule (ReLU and ReLU6 are their own ops: the
/// guided units, fused into the conv before them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Sigmoid,
    /// x * sigmoid(x) (EfficientNet's swish).
    Silu,
    /// x * relu6(x + 3) / 6 (MobileNetV3).
    Hardswish,
    /// clamp(alpha * x + beta, 0, 1): PyTorch's is alpha 1/6, beta 1/2; ONNX's default 0.2, 0.5.
    Hardsigmoid {
        alpha: f32,
        beta: f32,
    },
    /// x * Phi(x) with the exact normal CDF (erf): PyTorch's default GELU.
    Gelu,
    Tanh,
    /// max(x, 0) + slope * min(x, 0).
    LeakyRelu(f32),
    /// clamp(x, min, max) with bounds other than ReLU's and ReLU6's.
    Clip {
        min: f32,
        max: f32,
    },
}

impl Activation {
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Silu => "silu",
            Activation::Hardswish => "hardswish",
            Activation::Hardsigmoid { .. } => "hardsigmoid",
            Activation::Gelu => "gelu",
            Activation::Tanh => "tanh",
            Activation::LeakyRelu(_) => "leaky-relu",
            Activation::Clip { .. } => "clip",
        }
    }
}

/// Per-channel y = x * scale + shift: a batch-norm that no conv precedes (DenseNet's pre-activation
/// norms), ConvNeXt's layer scale, or a constant Mul/Add of an ONNX graph.
#[derive(Debug)]
pub struct Affine {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

/// Layer norm over the channels of each pixel (ConvNeXt's LayerNorm2d, and its channels-last
/// LayerNorm), then a per-channel affine.
#[derive(Debug)]
pub struct ChannelNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

/// Average pooling, PyTorch's `AvgPool2d` (and ONNX's `AveragePool`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AvgPool {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub ceil_mode: bool,
    /// Whether the zero padding counts in each window's divisor (PyTorch's default: yes).
    pub count_include_pad: bool,
}

/// A position embedding added to every token: the learned (C x T) table of a Vision Transformer,
/// stored channel-major as the C x 1 x T token map it is added to.
#[derive(Debug)]
pub struct Positional {
    pub data: Vec<f32>,
    pub channels: usize,
    pub tokens: usize,
    /// The (height, width) of the image the table was trained for: its token count fixes the input
    /// size (torchvision refuses any other), so shape checks and the evaluation crop use it.
    pub input_size: Option<(usize, usize)>,
}

/// Multi-head self-attention over the tokens of a C x 1 x T map (PyTorch's `nn.MultiheadAttention`
/// with query = key = value): `in_proj` (3C x C: query, key and value rows) and `out_proj` (C x C).
#[derive(Debug)]
pub struct Attention {
    pub heads: usize,
    pub in_proj: Linear,
    pub out_proj: Linear,
}

impl Attention {
    pub fn channels(&self) -> usize {
        self.out_proj.out_features
    }
}

#[derive(Clone, Debug)]
pub enum Op {
    Input,
    Conv(Arc<Conv>),
    Linear(Arc<Linear>),
    Relu,
    Relu6,
    Act(Activation),
    MaxPool(MaxPool),
    AvgPool(AvgPool),
    AdaptiveAvgPool {
        out_h: usize,
        out_w: usize,
    },
    Flatten,
    Add,
    /// Elementwise product; the second input may be C x 1 x 1 (squeeze-excitation's channel gate).
    Mul,
    /// Concatenation along channels.
    Concat,
    Affine(Arc<Affine>),
    ChannelNorm(Arc<ChannelNorm>),
    /// Channels `start..end` of the input (ShuffleNet's split; ONNX Split and Slice on channels).
    Slice {
        start: usize,
        end: usize,
    },
    /// ShuffleNet's channel shuffle: channel g * (C / groups) + i moves to i * groups + g.
    ChannelShuffle {
        groups: usize,
    },
    /// A C x H x W map as a C x 1 x (H * W) sequence of tokens, patch (r, c) at r * W + c (the
    /// order of torch's `flatten(2)`): the patch embedding of a Vision Transformer.
    Tokens,
    /// A learned C-vector (the class token) put before the tokens: C x 1 x T -> C x 1 x (T + 1).
    PrependToken(Arc<Vec<f32>>),
    /// Adds a fixed C x 1 x T table (the position embedding).
    AddPositional(Arc<Positional>),
    SelfAttention(Arc<Attention>),
    /// Token 0 of a sequence (the class token): C x 1 x T -> C x 1 x 1.
    ClassToken,
}

impl Op {
    /// A short type name for listings.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv(c) if c.groups > 1 && c.groups == c.cin => "depthwise-conv",
            Op::Conv(_) => "conv",
            Op::Linear(_) => "linear",
            Op::Relu => "relu",
            Op::Relu6 => "relu6",
            Op::Act(a) => a.name(),
            Op::MaxPool(_) => "maxpool",
            Op::AvgPool(_) => "avgpool",
            Op::AdaptiveAvgPool { .. } => "avgpool",
            Op::Flatten => "flatten",
            Op::Add => "add",
            Op::Concat => "concat",
            Op::Mul => "mul",
            Op::Affine(_) => "affine",
            Op::ChannelNorm(_) => "layernorm",
            Op::Slice { .. } => "slice",
            Op::ChannelShuffle { .. } => "shuffle",
            Op::Tokens => "tokens",
            Op::PrependToken(_) => "prepend-token",
            Op::AddPositional(_) => "add-positional",
            Op::SelfAttention(_) => "self-attention",
            Op::ClassToken => "class-token",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    /// Other names this node answers to (a folded batch-norm, a dropout, a block or stage name).
    pub aliases: Vec<String>,
    pub op: Op,
    pub inputs: Vec<NodeId>,
}

/// A network: nodes in topological order, node 0 the image input, the last node the logits.
#[derive(Clone, Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub num_classes: usize,
}

impl Graph {
    pub fn output(&self) -> NodeId {
        self.nodes.len() - 1
    }

    /// Finds a node by name or alias.
    pub fn find(&self, name: &str) -> Result<NodeId> {
        self.nodes.iter().position(|n| n.name == name || n.aliases.iter().any(|a| a == name)).ok_or_else(|| {
            let spatial: Vec<&str> = self.nodes.iter().filter(|n| !matches!(n.op, Op::Linear(_) | Op::Flatten | Op::Input)).map(|n| n.name.as_str()).collect();
            let tail = &spatial[spatial.len().saturating_sub(6)..];
            Error::Option(format!("unknown layer '{name}'; list the names with `layers()` (the last ones are: {})", tail.join(", ")))
        })
    }

    /// For each node, the index of the last node that reads it (so executors can free early).
    pub fn last_uses(&self) -> Vec<NodeId> {
        let mut last: Vec<NodeId> = (0..self.nodes.len()).collect();
        for (i, n) in self.nodes.iter().enumerate() {
            for &j in &n.inputs {
                last[j] = last[j].max(i);
            }
        }
        last
    }

    /// The last spatial activation: the map that the last global pooling reads (a 1x1 adaptive
    /// average pool), which is the default Grad-CAM target of every CNN.
    ///
    /// A head that makes per-class maps with a 1x1 conv (+ ReLU) before that pool (SqueezeNet,
    /// Network in Network) is the classifier, not a feature layer: the map it reads is returned.
    pub fn pooled_layer(&self) -> Option<NodeId> {
        let pool = self.nodes.iter().rposition(|n| matches!(n.op, Op::AdaptiveAvgPool { out_h: 1, out_w: 1 }))?;
        let mut id = *self.nodes[pool].inputs.first()?;
        if matches!(self.nodes[id].op, Op::Relu | Op::Relu6) {
            id = self.nodes[id].inputs[0];
        }
        match &self.nodes[id].op {
            Op::Conv(c) if c.kh == 1 && c.kw == 1 && c.cout == self.num_classes => Some(self.nodes[id].inputs[0]),
            _ => self.nodes[pool].inputs.first().copied(),
        }
    }

    /// The name a node is best known by: its last alias (a block or stage name such as `layer4`),
    /// else its own name.
    pub fn display_name(&self, id: NodeId) -> &str {
        let n = &self.nodes[id];
        n.aliases.last().unwrap_or(&n.name)
    }

    /// How many leading tokens that are not image patches (the class token) the value of node `id`
    /// has, when it is a token sequence (C x 1 x T) of a Vision Transformer: its first input chain
    /// leads back to the `Tokens` op without passing a `ClassToken`. `None` for spatial maps and
    /// for what follows the class token's selection.
    pub fn leading_tokens(&self, id: NodeId) -> Option<usize> {
        let mut prepended = 0;
        let mut at = id;
        loop {
            match self.nodes[at].op {
                Op::Tokens => return Some(prepended),
                Op::ClassToken | Op::Input | Op::Flatten | Op::Linear(_) => return None,
                Op::PrependToken(_) => prepended += 1,
                _ => {}
            }
            at = *self.nodes[at].inputs.first()?;
        }
    }

    /// The input size a position embedding fixes (see `Positional::input_size`), if any.
    pub fn fixed_input_size(&self) -> Option<(usize, usize)> {
        self.nodes.iter().find_map(|n| match &n.op {
            Op::AddPositional(p) => p.input_size,
            _ => None,
        })
    }

    /// Total number of weights, for memory budgets.
    pub fn parameter_count(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv(c) => c.weight.len() + c.bias.len(),
                Op::Linear(l) => l.weight.len() + l.bias.len(),
                Op::Affine(a) => a.scale.len() + a.shift.len(),
                Op::ChannelNorm(n) => n.weight.len() + n.bias.len(),
                Op::PrependToken(t) => t.len(),
                Op::AddPositional(p) => p.data.len(),
                Op::SelfAttention(a) => [&a.in_proj, &a.out_proj].iter().map(|l| l.weight.len() + l.bias.len()).sum(),
                _ => 0,
            })
            .sum()
    }
}
