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

#[derive(Clone, Debug)]
pub enum Op {
    Input,
    Conv(Arc<Conv>),
    Linear(Arc<Linear>),
    Relu,
    Relu6,
    MaxPool(MaxPool),
    AdaptiveAvgPool { out_h: usize, out_w: usize },
    Flatten,
    Add,
    /// Concatenation along channels.
    Concat,
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
            Op::MaxPool(_) => "maxpool",
            Op::AdaptiveAvgPool { .. } => "avgpool",
            Op::Flatten => "flatten",
            Op::Add => "add",
            Op::Concat => "concat",
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
        self.nodes
            .iter()
            .position(|n| n.name == name || n.aliases.iter().any(|a| a == name))
            .ok_or_else(|| {
                let spatial: Vec<&str> = self
                    .nodes
                    .iter()
                    .filter(|n| !matches!(n.op, Op::Linear(_) | Op::Flatten | Op::Input))
                    .map(|n| n.name.as_str())
                    .collect();
                let tail = &spatial[spatial.len().saturating_sub(6)..];
                Error::Option(format!(
                    "unknown layer '{name}'; list the names with `layers()` (the last ones are: {})",
                    tail.join(", ")
                ))
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

    /// Total number of weights, for memory budgets.
    pub fn parameter_count(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv(c) => c.weight.len() + c.bias.len(),
                Op::Linear(l) => l.weight.len() + l.bias.len(),
                _ => 0,
            })
            .sum()
    }
}
