//! Builds a `Graph` from a `WeightMap`, checking each tensor's shape against what the layer before it
//! produces, so a mismatched file fails with the key and both shapes named.

use super::{Activation, Affine, Attention, AvgPool, ChannelNorm, Conv, Graph, Linear, MaxPool, Node, NodeId, Op, Padding, Positional};
use crate::error::Result;
use crate::fail;
use crate::weights::WeightMap;
use std::sync::Arc;

/// What the builder knows of a node's output: channels, and the spatial size when it is fixed
/// (after an adaptive pool), so a linear layer's input width can be checked at load time.
#[derive(Clone, Copy)]
struct Known {
    channels: usize,
    spatial: Option<(usize, usize)>,
}

pub struct GraphBuilder<'w> {
    weights: &'w WeightMap,
    nodes: Vec<Node>,
    known: Vec<Known>,
    /// Families whose convs always carry a bias (VGG, AlexNet, SqueezeNet): a missing one is an error.
    conv_bias_required: bool,
}

/// Everything a conv needs besides its weights.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub stride: usize,
    pub padding: Padding,
    pub groups: usize,
    /// Batch-norm epsilon (1e-5 in PyTorch, 1e-3 for TF-born models).
    pub eps: f32,
}

impl ConvSpec {
    pub fn new(stride: usize, pad: usize) -> Self {
        ConvSpec { stride, padding: Padding::Symmetric { h: pad, w: pad }, groups: 1, eps: 1e-5 }
    }
    pub fn same(stride: usize) -> Self {
        ConvSpec { stride, padding: Padding::Same, groups: 1, eps: 1e-3 }
    }
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
}

impl<'w> GraphBuilder<'w> {
    pub fn new(weights: &'w WeightMap) -> Self {
        let input = Node { name: "input".into(), aliases: vec![], op: Op::Input, inputs: vec![] };
        GraphBuilder { weights, nodes: vec![input], known: vec![Known { channels: 3, spatial: None }], conv_bias_required: false }
    }

    /// Every conv of this family has a bias: a file without one is damaged, not bias-free.
    pub fn require_conv_biases(mut self) -> Self {
        self.conv_bias_required = true;
        self
    }

    pub fn input(&self) -> NodeId {
        0
    }

    pub fn weights(&self) -> &WeightMap {
        self.weights
    }

    pub fn channels(&self, id: NodeId) -> usize {
        self.known[id].channels
    }

    fn push(&mut self, name: &str, op: Op, inputs: Vec<NodeId>, known: Known) -> NodeId {
        self.nodes.push(Node { name: name.to_string(), aliases: vec![], op, inputs });
        self.known.push(known);
        self.nodes.len() - 1
    }

    /// Gives a node another name (a block, a stage, a folded batch-norm, a dropout).
    pub fn alias(&mut self, id: NodeId, name: &str) {
        self.nodes[id].aliases.push(name.to_string());
    }

    /// A conv named `name` reading `{name}.weight` (and `{name}.bias` if present), with the
    /// batch-norm `{bn}.*` folded in (in place) when `bn` is given.
    pub fn conv(&mut self, name: &str, bn: Option<&str>, input: NodeId, spec: ConvSpec) -> Result<NodeId> {
        let cin = self.channels(input);
        if spec.groups == 0 || !cin.is_multiple_of(spec.groups) {
            return fail!(Weights, "layer '{name}': {cin} input channels cannot be split in {} groups", spec.groups);
        }
        let w = self.weights.take(&format!("{name}.weight"), &[None, Some(cin / spec.groups), None, None])?;
        let (cout, kh, kw) = (w.shape[0], w.shape[2], w.shape[3]);
        if cout % spec.groups != 0 {
            return fail!(Weights, "tensor '{name}.weight' has {cout} output channels, not a multiple of {} groups", spec.groups);
        }
        let mut weight = w.data;
        let bias_key = format!("{name}.bias");
        let mut bias = if self.conv_bias_required {
            self.weights.take(&bias_key, &[Some(cout)])?.data
        } else {
            match self.weights.take_optional(&bias_key, &[Some(cout)])? {
                Some(b) => b.data,
                None => vec![0.0; cout],
            }
        };
        if let Some(bn) = bn {
            self.fold_batch_norm(bn, cout, spec.eps, &mut weight, &mut bias).map_err(|e| match e {
                crate::error::Error::Numeric(m) => crate::error::Error::Numeric(format!("layer '{name}': {m}")),
                other => other,
            })?;
        }
        let conv = Conv { weight, bias, cin, cout, kh, kw, stride: (spec.stride, spec.stride), padding: spec.padding, groups: spec.groups };
        let id = self.push(name, Op::Conv(Arc::new(conv)), vec![input], Known { channels: cout, spatial: None });
        if let Some(bn) = bn {
            self.alias(id, bn);
        }
        Ok(id)
    }

    /// y = gamma * (x - mean) / sqrt(var + eps) + beta, folded: W' = W * s, b' = (b - mean) * s + beta.
    fn fold_batch_norm(&self, bn: &str, cout: usize, eps: f32, weight: &mut [f32], bias: &mut [f32]) -> Result<()> {
        let shape = [Some(cout)];
        let gamma = self.weights.take(&format!("{bn}.weight"), &shape)?.data;
        let beta = self.weights.take(&format!("{bn}.bias"), &shape)?.data;
        let mean = self.weights.take(&format!("{bn}.running_mean"), &shape)?.data;
        let var = self.weights.take(&format!("{bn}.running_var"), &shape)?.data;
        let per_out = weight.len() / cout;
        for o in 0..cout {
            if var[o] < 0.0 {
                return fail!(Weights, "tensor '{bn}.running_var' has a negative variance ({}) at channel {o}", var[o]);
            }
            let s = gamma[o] / (var[o] + eps).sqrt();
            let row = &mut weight[o * per_out..(o + 1) * per_out];
            row.iter_mut().for_each(|v| *v *= s);
            bias[o] = (bias[o] - mean[o]) * s + beta[o];
            // A fold that overflows f32 would put infinities into the network (and a ReLU would
            // later hide them as zeros): refuse it here, naming the batch-norm and the channel.
            if !s.is_finite() || !bias[o].is_finite() || row.iter().any(|v| !v.is_finite()) {
                return fail!(
                    Numeric,
                    "folding batch-norm '{bn}' gives non-finite values at channel {o}: its scale gamma / sqrt(running_var + eps) = {} / sqrt({} + {eps}) = {s} overflows f32 in the weights; check '{bn}.weight' and '{bn}.running_var'",
                    gamma[o],
                    var[o]
                );
            }
        }
        Ok(())
    }

    pub fn linear(&mut self, name: &str, input: NodeId) -> Result<NodeId> {
        let k = self.known[input];
        let in_features = match k.spatial {
            Some((h, w)) => k.channels * h * w,
            None => return fail!(Weights, "layer '{name}' follows a layer of unknown size (internal: add a pool before it)"),
        };
        let w = self.weights.take(&format!("{name}.weight"), &[None, Some(in_features)])?;
        let out_features = w.shape[0];
        // Every torchvision classifier layer has a bias.
        let bias = self.weights.take(&format!("{name}.bias"), &[Some(out_features)])?.data;
        let lin = Linear { weight: w.data, bias, in_features, out_features };
        Ok(self.push(name, Op::Linear(Arc::new(lin)), vec![input], Known { channels: out_features, spatial: Some((1, 1)) }))
    }

    pub fn relu(&mut self, name: &str, input: NodeId) -> NodeId {
        let k = self.known[input];
        self.push(name, Op::Relu, vec![input], k)
    }

    pub fn relu6(&mut self, name: &str, input: NodeId) -> NodeId {
        let k = self.known[input];
        self.push(name, Op::Relu6, vec![input], k)
    }

    pub fn max_pool(&mut self, name: &str, input: NodeId, kernel: usize, stride: usize, padding: usize, ceil_mode: bool) -> NodeId {
        let k = Known { channels: self.channels(input), spatial: None };
        self.push(name, Op::MaxPool(MaxPool { kernel, stride, padding, ceil_mode }), vec![input], k)
    }

    pub fn adaptive_avg_pool(&mut self, name: &str, input: NodeId, out_h: usize, out_w: usize) -> NodeId {
        let k = Known { channels: self.channels(input), spatial: Some((out_h, out_w)) };
        self.push(name, Op::AdaptiveAvgPool { out_h, out_w }, vec![input], k)
    }

    pub fn flatten(&mut self, name: &str, input: NodeId) -> NodeId {
        let k = self.known[input];
        let features = k.channels * k.spatial.map_or(1, |(h, w)| h * w);
        self.push(name, Op::Flatten, vec![input], Known { channels: features, spatial: k.spatial.map(|_| (1, 1)) })
    }

    pub fn add(&mut self, name: &str, a: NodeId, b: NodeId) -> Result<NodeId> {
        if self.channels(a) != self.channels(b) {
            return fail!(Weights, "layer '{name}' adds {} channels to {} channels: the file's layer sizes do not fit together", self.channels(a), self.channels(b));
        }
        let k = self.known[a];
        Ok(self.push(name, Op::Add, vec![a, b], k))
    }

    pub fn concat(&mut self, name: &str, inputs: &[NodeId]) -> NodeId {
        let channels = inputs.iter().map(|&i| self.channels(i)).sum();
        self.push(name, Op::Concat, inputs.to_vec(), Known { channels, spatial: None })
    }

    pub fn act(&mut self, name: &str, input: NodeId, act: Activation) -> NodeId {
        let k = self.known[input];
        self.push(name, Op::Act(act), vec![input], k)
    }

    pub fn avg_pool(&mut self, name: &str, input: NodeId, pool: AvgPool) -> NodeId {
        let k = Known { channels: self.channels(input), spatial: None };
        self.push(name, Op::AvgPool(pool), vec![input], k)
    }

    /// `x * gate`, the gate C x H x W or C x 1 x 1 (squeeze-excitation).
    pub fn mul(&mut self, name: &str, x: NodeId, gate: NodeId) -> Result<NodeId> {
        if self.channels(x) != self.channels(gate) {
            return fail!(Weights, "layer '{name}' multiplies {} channels by {} channels: the file's layer sizes do not fit together", self.channels(x), self.channels(gate));
        }
        let k = self.known[x];
        Ok(self.push(name, Op::Mul, vec![x, gate], k))
    }

    /// A batch-norm with no conv before it to fold into (DenseNet's pre-activation norms), as a
    /// per-channel affine.
    pub fn batch_norm(&mut self, name: &str, input: NodeId, eps: f32) -> Result<NodeId> {
        let c = self.channels(input);
        let (mut scale, mut shift) = (vec![1.0; c], vec![0.0; c]);
        self.fold_batch_norm(name, c, eps, &mut scale, &mut shift)?;
        Ok(self.affine(name, input, scale, shift))
    }

    /// Per-channel `x * scale + shift`.
    pub fn affine(&mut self, name: &str, input: NodeId, scale: Vec<f32>, shift: Vec<f32>) -> NodeId {
        let k = self.known[input];
        self.push(name, Op::Affine(Arc::new(Affine { scale, shift })), vec![input], k)
    }

    /// Layer norm over each pixel's channels, reading `{name}.weight` and `{name}.bias`.
    pub fn channel_norm(&mut self, name: &str, input: NodeId, eps: f32) -> Result<NodeId> {
        let c = Some(self.channels(input));
        let weight = self.weights.take(&format!("{name}.weight"), &[c])?.data;
        let bias = self.weights.take(&format!("{name}.bias"), &[c])?.data;
        let k = self.known[input];
        Ok(self.push(name, Op::ChannelNorm(Arc::new(ChannelNorm { weight, bias, eps })), vec![input], k))
    }

    /// A `Linear` applied to every pixel's channels (ConvNeXt's channels-last MLP), as a 1x1 conv;
    /// `scale` (a layer scale after it, key `scale.0` of shape `scale.1`) is folded in.
    pub fn pointwise_linear(&mut self, name: &str, input: NodeId, scale: Option<(&str, &[Option<usize>])>) -> Result<NodeId> {
        let cin = self.channels(input);
        let w = self.weights.take(&format!("{name}.weight"), &[None, Some(cin)])?;
        let cout = w.shape[0];
        let (mut weight, mut bias) = (w.data, self.weights.take(&format!("{name}.bias"), &[Some(cout)])?.data);
        if let Some((key, shape)) = scale {
            let gamma = self.weights.take(key, shape)?.data;
            if gamma.len() != cout {
                return fail!(Weights, "tensor '{key}' scales {} channels but '{name}' has {cout}", gamma.len());
            }
            for (o, g) in gamma.iter().enumerate() {
                weight[o * cin..(o + 1) * cin].iter_mut().for_each(|v| *v *= g);
                bias[o] *= g;
            }
        }
        let conv = Conv { weight, bias, cin, cout, kh: 1, kw: 1, stride: (1, 1), padding: Padding::Symmetric { h: 0, w: 0 }, groups: 1 };
        Ok(self.push(name, Op::Conv(Arc::new(conv)), vec![input], Known { channels: cout, spatial: None }))
    }

    /// Channels `start..end` of `input`.
    pub fn slice(&mut self, name: &str, input: NodeId, start: usize, end: usize) -> Result<NodeId> {
        let c = self.channels(input);
        if start >= end || end > c {
            return fail!(Weights, "layer '{name}' takes channels {start}..{end} of a {c}-channel map");
        }
        let k = Known { channels: end - start, spatial: self.known[input].spatial };
        Ok(self.push(name, Op::Slice { start, end }, vec![input], k))
    }

    pub fn channel_shuffle(&mut self, name: &str, input: NodeId, groups: usize) -> Result<NodeId> {
        let c = self.channels(input);
        if groups == 0 || !c.is_multiple_of(groups) {
            return fail!(Weights, "layer '{name}' shuffles {c} channels in {groups} groups");
        }
        let k = self.known[input];
        Ok(self.push(name, Op::ChannelShuffle { groups }, vec![input], k))
    }

    /// A C x H x W map as a C x 1 x (H * W) token sequence.
    pub fn tokens(&mut self, name: &str, input: NodeId) -> NodeId {
        let k = Known { channels: self.channels(input), spatial: None };
        self.push(name, Op::Tokens, vec![input], k)
    }

    /// Puts the learned token `key` (shape (1, 1, C), as torchvision's `class_token`) before the tokens.
    pub fn prepend_token(&mut self, name: &str, input: NodeId, key: &str) -> Result<NodeId> {
        let c = self.channels(input);
        let token = self.weights.take(key, &[Some(1), Some(1), Some(c)])?.data;
        let k = self.known[input];
        Ok(self.push(name, Op::PrependToken(Arc::new(token)), vec![input], k))
    }

    /// Adds the position embedding `key`, shape (1, T, C) as torchvision stores it (token-major),
    /// kept channel-major (C x T) like the token map. `input_size`: the image size it fixes.
    pub fn add_positional(&mut self, name: &str, input: NodeId, key: &str, input_size: Option<(usize, usize)>) -> Result<NodeId> {
        let c = self.channels(input);
        let p = self.weights.take(key, &[Some(1), None, Some(c)])?;
        let tokens = p.shape[1];
        let data = (0..c).flat_map(|ch| p.data.iter().skip(ch).step_by(c).copied()).collect();
        let k = self.known[input];
        let positional = Positional { data, channels: c, tokens, input_size };
        Ok(self.push(name, Op::AddPositional(Arc::new(positional)), vec![input], k))
    }

    /// `nn.MultiheadAttention` named `name` over the tokens: `{name}.in_proj_weight` (3C, C),
    /// `{name}.in_proj_bias`, `{name}.out_proj.weight` (C, C), `{name}.out_proj.bias`.
    pub fn self_attention(&mut self, name: &str, input: NodeId, heads: usize) -> Result<NodeId> {
        let c = self.channels(input);
        if heads == 0 || !c.is_multiple_of(heads) {
            return fail!(Weights, "layer '{name}': {c} channels cannot be split in {heads} attention heads; give the number of heads the model was trained with");
        }
        let in_w = self.weights.take(&format!("{name}.in_proj_weight"), &[Some(3 * c), Some(c)])?.data;
        let in_b = self.weights.take(&format!("{name}.in_proj_bias"), &[Some(3 * c)])?.data;
        let out_w = self.weights.take(&format!("{name}.out_proj.weight"), &[Some(c), Some(c)])?.data;
        let out_b = self.weights.take(&format!("{name}.out_proj.bias"), &[Some(c)])?.data;
        let attention =
            Attention { heads, in_proj: Linear { weight: in_w, bias: in_b, in_features: c, out_features: 3 * c }, out_proj: Linear { weight: out_w, bias: out_b, in_features: c, out_features: c } };
        let k = self.known[input];
        Ok(self.push(name, Op::SelfAttention(Arc::new(attention)), vec![input], k))
    }

    /// Token 0 of the sequence, as a C x 1 x 1 map (so a flatten and linear layers may follow).
    pub fn class_token(&mut self, name: &str, input: NodeId) -> NodeId {
        let k = Known { channels: self.channels(input), spatial: Some((1, 1)) };
        self.push(name, Op::ClassToken, vec![input], k)
    }

    /// Ends the graph at `output`, which must be the last node; every key of the file must have been used.
    pub fn finish(self) -> Result<Graph> {
        let unused = self.weights.untaken();
        if !unused.is_empty() {
            let shown: Vec<&str> = unused.iter().take(5).map(|s| s.as_str()).collect();
            return fail!(Weights, "{} tensor(s) in the file are not part of this architecture, e.g. {}: the file belongs to another model (check --arch)", unused.len(), shown.join(", "));
        }
        let num_classes = *self.known.last().map(|k| &k.channels).unwrap_or(&0);
        Ok(Graph { nodes: self.nodes, num_classes })
    }
}
