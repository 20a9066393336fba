//! The op-by-op translation of an ONNX graph into our layer graph (batch 1, CHW maps).
//!
//! Every ONNX tensor becomes either a constant (initializers, `Constant`, and whatever is computed
//! from constants alone: shape arithmetic is folded) or a view of one of our nodes. A view has a
//! layout: plain NCHW, channels-last NHWC (between ConvNeXt's `Transpose [0,2,3,1]` and
//! `Transpose [0,3,1,2]`, where LayerNormalization over the last axis is a channel norm and a
//! MatMul a 1x1 conv), a reshape of the node's CHW order not yet materialized (`Rows`: a flatten
//! waiting for its Gemm, the `[1, g, C/g, H, W]` of a channel shuffle), the transposed middle of a
//! channel shuffle, or a zero padding waiting for the conv that absorbs it. Layout-only ops create
//! no nodes. A per-channel constant scale or shift (BatchNormalization, Mul/Add/Sub/Div by a
//! constant) is folded into the conv or linear layer before it when nothing else reads that
//! layer, else becomes an `Affine` node.
//!
//! Naming (see `names`): a conv or linear layer whose weight initializer is `X.weight` is named
//! `X`; otherwise a node is named by its module path when that module is a leaf (`layer1.0.relu`),
//! or `<module>.<kind>` for an op written in a container's forward (`layer1.0.add`, `flatten` at
//! the top). A name used twice gets `_1`, `_2`, ... (a module called twice: `layer1.0.relu_1`,
//! as the TorchScript exporter writes it). Each node answers to the ONNX tensor names it
//! produces, to a folded leaf module's path (the batch-norm `layer1.0.bn1` on the conv
//! `layer1.0.conv1`), and every module path is an alias of the last node made inside that module
//! (`layer4.1`, `layer4`), outermost last.

use super::names;
use super::proto::{AttributeProto, ModelProto, NodeProto, TensorProto};
use super::tensors::{self, Budget, Const, Data};
use crate::error::{Error, Result};
use crate::fail;
use crate::graph::shapes::Chw;
use crate::graph::{Activation, Affine, AvgPool, ChannelNorm, Conv, Graph, Linear, MaxPool, Node, NodeId, Op, Padding, Pads};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

/// The ops this importer maps (for error messages).
const SUPPORTED: &str = "Conv, BatchNormalization, Relu, Clip, LeakyRelu, Sigmoid, HardSigmoid, HardSwish, Tanh, Gelu (and the erf pattern), \
x*Sigmoid(x), Add, Sub, Mul, Div (of two maps, or by a per-channel constant), MatMul/Gemm with constant weights, MaxPool, AveragePool, \
GlobalAveragePool, ReduceMean over H and W, Concat and Split/Slice on channels, Flatten, Reshape, Transpose (channels-last, channel shuffle), \
LayerNormalization over channels, Pad (zeros, before a conv), Softmax/LogSoftmax at the end (dropped), Identity, Dropout, Constant, \
Shape, Gather, Unsqueeze, Squeeze, Cast, ConstantOfShape, Range on constants; \
from the dynamo exporter also ViT token tensors and nn.MultiheadAttention self-attention";

/// The most layers an imported graph may have (DenseNet-201 has about 700); shape inference
/// runs over the graph so far at each layer.
const MAX_LAYERS: usize = 10_000;

type PoolParams = ((usize, usize), (usize, usize), (usize, usize));

/// The class of the module whose decomposed calls `find_adaptive_pools` collapses.
const ADAPTIVE_AVG_POOL: &str = "torch.nn.modules.pooling.AdaptiveAvgPool2d";
/// The module class of a (self-)attention call, which the dynamo exporter decomposes.
const MULTIHEAD_ATTENTION: &str = "torch.nn.modules.activation.MultiheadAttention";

/// The largest kernel, stride or padding accepted (a guard against overflow in hostile files).
const MAX_EXTENT: i64 = 1 << 16;
/// A dilated conv runs as a dense kernel with zeros between its taps: at most this many times the
/// taps (a 3x3 kernel with dilation 3 becomes 7x7, 5.4x).
const MAX_DILATED_GROWTH: usize = 8;

pub struct Imported {
    pub graph: Graph,
    /// (height, width) of the input when the file fixes it.
    pub input_size: Option<(usize, usize)>,
    pub default_layer: Option<String>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum Layout {
    Nchw,
    Nhwc,
    /// A shape whose row-major order is the node's (C, H, W) order; `by`: the reshape that made it
    /// (the name of a flatten it turns into).
    Rows {
        dims: Vec<usize>,
        by: Option<usize>,
    },
    /// `[1, C/g, g, H, W]`: the middle of a channel shuffle, waiting for its reshape back.
    Shuffled {
        groups: usize,
        dims: Vec<usize>,
    },
    /// Zero padding (top, left, bottom, right) made by the Pad node `by`, waiting for a conv.
    Padded {
        pads: [usize; 4],
        by: usize,
    },
    /// A token sequence `[1, T, C]` (a Vision Transformer's): the node is a C x 1 x T token map.
    Tokens,
}

#[derive(Clone, Debug)]
enum Val {
    Const(Rc<Const>),
    Map { node: NodeId, layout: Layout },
}

/// A pattern of several ONNX nodes recognized up front, emitted at its last node.
#[derive(Clone, Debug)]
struct Fused {
    op: FusedOp,
    input: String,
}

#[derive(Clone, Copy, Debug)]
enum FusedOp {
    Act(Activation),
    /// (x - mean) / sqrt(var + eps) over the last axis, as exporters before opset 17 spell layer norm
    /// (its scale and shift follow as a Mul and an Add of constants).
    LayerNorm {
        eps: f32,
    },
}

/// An `nn.AdaptiveAvgPool2d` call the dynamo exporter decomposed (see `find_adaptive_pools`),
/// emitted as one `AdaptiveAvgPool` at its last ONNX node.
#[derive(Clone, Debug)]
struct Pooled {
    /// The tensors the call reads from outside itself (initializers left out): the feature map
    /// and any constants computed before it.
    inputs: Vec<String>,
    out_h: usize,
    out_w: usize,
}

/// An `nn.MultiheadAttention` call the dynamo exporter decomposed (see `find_attention`), emitted
/// as one `SelfAttention` at its last ONNX node.
#[derive(Clone, Debug)]
struct AttentionCall {
    /// The tensors the call reads from outside itself, initializers left out.
    inputs: Vec<String>,
    /// The initializers it reads: (name, reading ONNX node, input position).
    weights: Vec<(String, usize, usize)>,
    /// The shape targets of its Reshapes (initializer names).
    reshapes: Vec<String>,
}

pub struct Importer<'a> {
    onnx: &'a [NodeProto],
    paths: Vec<Option<String>>,
    /// Nodes whose path was inferred from their readers (no metadata): always `<path>.<kind>`.
    inferred: HashSet<usize>,
    containers: HashSet<String>,
    /// Tensor -> the ONNX nodes that read it.
    readers: HashMap<&'a str, Vec<usize>>,
    inits: HashMap<&'a str, &'a TensorProto>,
    external: Option<&'a [u8]>,
    budget: Budget,
    values: HashMap<String, Val>,
    consumers: HashMap<String, usize>,
    skip: HashSet<usize>,
    fused: HashMap<usize, Fused>,
    pooled: HashMap<usize, Pooled>,
    attention: HashMap<usize, AttentionCall>,
    /// Whether the file comes from the dynamo exporter (module metadata): token maps import only then.
    dynamo: bool,
    graph: Graph,
    shapes: Vec<Chw>,
    /// Rank-2 nodes (after a flatten): (features, 1, 1), read as [1, features].
    flat: Vec<bool>,
    /// The ONNX tensor holding each node's value as made, while no other reader has seen it (what
    /// a following constant scale may be folded into).
    primary: Vec<Option<String>>,
    /// The ONNX node each node was made for.
    origin: Vec<usize>,
    names: HashSet<String>,
    /// The next `_k` suffix to try per base name.
    suffix: HashMap<String, usize>,
    aliases: Vec<(NodeId, String)>,
    /// Module path -> (order, node): the last node made (or passed on) inside that module.
    last_in: HashMap<String, NodeId>,
    size: (usize, usize),
    warnings: Vec<String>,
}

fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}
fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}
fn attr_f(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map_or(default, |a| a.f)
}
fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}
fn attr_s(n: &NodeProto, name: &str, default: &str) -> String {
    attr(n, name).map_or(default.to_string(), |a| String::from_utf8_lossy(&a.s).into_owned())
}

fn describe(n: &NodeProto) -> String {
    let name = if n.name.is_empty() { n.output.first().map(String::as_str).unwrap_or("?") } else { n.name.as_str() };
    format!("node '{name}' ({})", n.op_type)
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * b.abs().max(1.0)
}

/// The conv / linear module a weight initializer belongs to: `layer1.0.conv1.weight` -> `layer1.0.conv1`.
fn weight_module(w: &str) -> Option<&str> {
    let m = w.strip_suffix(".weight")?;
    (!m.is_empty() && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') && !m.starts_with('.')).then_some(m)
}

/// Normalizes an axis of a rank-`rank` tensor.
fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

fn token_error<T>(n: &NodeProto, dims: &[usize]) -> Result<T> {
    fail!(
        Weights,
        "{} turns a feature map into a {}-D tensor {dims:?}: token tensors are not supported yet (transformers such as Swin, or a ViT from the TorchScript exporter); convolutional classifiers import, and torchvision's ViT when exported with torch.onnx.export(..., dynamo=True)",
        describe(n),
        dims.len()
    )
}

impl<'a> Importer<'a> {
    pub fn run(model: &'a ModelProto, meta: &[Vec<(String, String)>], external: Option<&'a [u8]>) -> Result<Imported> {
        let g = model.graph.as_ref().ok_or_else(|| Error::Weights("the ONNX file holds no graph".into()))?;
        let onnx = g.node.as_slice();
        let mut paths: Vec<Option<String>> = onnx.iter().enumerate().map(|(i, n)| names::module_path(&n.name, meta.get(i).map(Vec::as_slice).unwrap_or(&[]))).collect();
        let mut containers = HashSet::new();
        for p in paths.iter().flatten() {
            for a in names::ancestors(p) {
                containers.insert(a.to_string());
            }
        }
        let mut consumers: HashMap<String, usize> = HashMap::new();
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in onnx.iter().enumerate() {
            for t in n.input.iter().filter(|t| !t.is_empty()) {
                *consumers.entry(t.clone()).or_default() += 1;
                readers.entry(t.as_str()).or_default().push(i);
            }
        }
        for o in &g.output {
            *consumers.entry(o.name.clone()).or_default() += 1;
        }
        // Nodes the exporter left without a path (the dynamo exporter's Split): the common path
        // of their readers, as an op in that module's forward.
        let mut inferred = HashSet::new();
        if paths.iter().any(Option::is_some) {
            for i in (0..onnx.len()).rev() {
                if paths[i].is_some() {
                    continue;
                }
                let reader_paths: Vec<&str> = onnx[i].output.iter().flat_map(|t| readers.get(t.as_str()).into_iter().flatten()).filter_map(|&r| paths[r].as_deref()).collect();
                if let Some(p) = names::common_prefix(reader_paths.iter().copied()) {
                    let p = if containers.contains(&p) || p.is_empty() { p } else { names::ancestors(&p).next().unwrap_or("").to_string() };
                    paths[i] = Some(p);
                    inferred.insert(i);
                }
            }
        }
        super::tensors::external_location(&g.initializer)?;
        tensors::check_all(&g.initializer, external)?;
        let inits: HashMap<&str, &TensorProto> = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();

        // The image input: the one graph input that is not an initializer.
        let inputs: Vec<_> = g.input.iter().filter(|i| !inits.contains_key(i.name.as_str())).collect();
        if inputs.len() != 1 {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            return fail!(Weights, "the model has {} inputs ({}); only single-input image classifiers import", inputs.len(), names.join(", "));
        }
        let input = inputs[0];
        let dims = input_dims(input)?;
        let input_size = match dims.as_slice() {
            [n, c, h, w] => {
                if let Some(n) = n.filter(|&n| n != 1) {
                    return fail!(Weights, "the model's input '{}' has a fixed batch of {n}; export it with batch 1 (or a dynamic batch)", input.name);
                }
                if let Some(c) = c.filter(|&c| c != 3) {
                    return fail!(Weights, "the model's input '{}' has {c} channels; only RGB (3-channel) image models import", input.name);
                }
                match (h, w) {
                    (Some(h), Some(w)) if *h > 4096 || *w > 4096 => {
                        return fail!(Weights, "the model's input '{}' is {h}x{w} pixels; inputs up to 4096 x 4096 import", input.name);
                    }
                    (Some(h), Some(w)) if *h > 0 && *w > 0 => Some((*h, *w)),
                    _ => None,
                }
            }
            _ => return fail!(Weights, "the model's input '{}' has shape {dims:?}; an image classifier takes [batch, 3, height, width]", input.name),
        };
        if g.output.len() != 1 {
            return fail!(Weights, "the model has {} outputs; only single-output classifiers (logits) import", g.output.len());
        }

        let input_node = Node { name: "input".into(), aliases: vec![], op: Op::Input, inputs: vec![] };
        let size = input_size.unwrap_or((224, 224));
        let mut imp = Importer {
            onnx,
            paths,
            inferred,
            containers,
            readers,
            inits,
            external,
            budget: Budget::default(),
            values: HashMap::new(),
            consumers,
            skip: HashSet::new(),
            fused: HashMap::new(),
            pooled: HashMap::new(),
            attention: HashMap::new(),
            dynamo: meta.iter().any(|m| m.iter().any(|(k, _)| k == "namespace")),
            graph: Graph { nodes: vec![input_node], num_classes: 0 },
            shapes: vec![(3, size.0, size.1)],
            flat: vec![false],
            primary: vec![None],
            origin: vec![usize::MAX],
            names: HashSet::from(["input".to_string()]),
            suffix: HashMap::new(),
            aliases: vec![(0, input.name.clone())],
            last_in: HashMap::new(),
            size,
            warnings: vec![],
        };
        imp.values.insert(input.name.clone(), Val::Map { node: 0, layout: Layout::Nchw });
        imp.find_patterns()?;
        let adaptive: Vec<bool> = (0..onnx.len()).map(|i| names::module_class(meta.get(i).map(Vec::as_slice).unwrap_or(&[])) == Some(ADAPTIVE_AVG_POOL)).collect();
        imp.find_adaptive_pools(g, &adaptive);
        let attention: Vec<bool> = (0..onnx.len()).map(|i| names::module_class(meta.get(i).map(Vec::as_slice).unwrap_or(&[])) == Some(MULTIHEAD_ATTENTION)).collect();
        imp.find_attention(g, &attention);
        for i in 0..onnx.len() {
            if imp.skip.contains(&i) {
                continue;
            }
            imp.node(i)?;
        }
        let out_name = &g.output[0].name;
        imp.finish(out_name, input_size)
    }

    // ----- values -----

    fn consumers(&self, t: &str) -> usize {
        self.consumers.get(t).copied().unwrap_or(0)
    }

    fn value(&mut self, i: usize, name: &str) -> Result<Val> {
        if let Some(v) = self.values.get(name) {
            return Ok(v.clone());
        }
        if let Some(t) = self.inits.get(name) {
            let c = Rc::new(tensors::decode(t, self.external, &mut self.budget)?);
            // Small constants (shapes, scalars) are kept for their next readers; a weight is
            // decoded for its layer and moved into it, never held twice.
            if c.numel() <= 4096 {
                self.values.insert(name.to_string(), Val::Const(c.clone()));
            }
            return Ok(Val::Const(c));
        }
        fail!(Weights, "{} reads '{name}', which no earlier node produces: the graph is damaged or not in topological order", describe(&self.onnx[i]))
    }

    fn input(&mut self, i: usize, k: usize) -> Result<Val> {
        match self.onnx[i].input.get(k).filter(|s| !s.is_empty()) {
            Some(name) => {
                let name = name.clone();
                self.value(i, &name)
            }
            None => fail!(Weights, "{} lacks its input {k}", describe(&self.onnx[i])),
        }
    }

    fn opt_input(&mut self, i: usize, k: usize) -> Result<Option<Val>> {
        if self.onnx[i].input.get(k).is_some_and(|s| !s.is_empty()) {
            self.input(i, k).map(Some)
        } else {
            Ok(None)
        }
    }

    fn konst(&mut self, i: usize, k: usize, what: &str) -> Result<Rc<Const>> {
        match self.input(i, k)? {
            Val::Const(c) => Ok(c),
            Val::Map { .. } => {
                fail!(Weights, "{}: its {what} (input {k}, '{}') is computed from the image, not a constant; such graphs are not supported", describe(&self.onnx[i]), self.onnx[i].input[k])
            }
        }
    }

    fn opt_konst(&mut self, i: usize, k: usize, what: &str) -> Result<Option<Rc<Const>>> {
        if self.onnx[i].input.get(k).is_some_and(|s| !s.is_empty()) {
            self.konst(i, k, what).map(Some)
        } else {
            Ok(None)
        }
    }

    fn ints(&mut self, i: usize, k: usize, what: &str) -> Result<Vec<i64>> {
        let c = self.konst(i, k, what)?;
        c.to_i64().ok_or_else(|| Error::Weights(format!("{}: its {what} must be integers", describe(&self.onnx[i]))))
    }

    /// A map input (a zero padding only for a conv).
    fn map_in(&mut self, i: usize, k: usize) -> Result<(NodeId, Layout)> {
        match self.input(i, k)? {
            Val::Map { layout: Layout::Padded { by, .. }, .. } if self.onnx[i].op_type != "Conv" => {
                fail!(Weights, "{} follows the Pad {}; only a zero Pad right before a Conv is supported", describe(&self.onnx[i]), describe(&self.onnx[by]))
            }
            Val::Map { node, layout } => Ok((node, layout)),
            Val::Const(_) => fail!(Weights, "{}: input {k} ('{}') is a constant where a feature map was expected", describe(&self.onnx[i]), self.onnx[i].input[k]),
        }
    }

    fn dims_of(&self, node: NodeId, layout: &Layout) -> Vec<usize> {
        let (c, h, w) = self.shapes[node];
        match layout {
            Layout::Nchw if self.flat[node] => vec![1, c],
            Layout::Nchw => vec![1, c, h, w],
            Layout::Nhwc => vec![1, h, w, c],
            Layout::Rows { dims, .. } | Layout::Shuffled { dims, .. } => dims.clone(),
            Layout::Padded { pads, .. } => vec![1, c, h + pads[0] + pads[2], w + pads[1] + pads[3]],
            Layout::Tokens => vec![1, h * w, c],
        }
    }

    fn set(&mut self, i: usize, k: usize, v: Val) {
        let Some(name) = self.onnx[i].output.get(k).cloned() else { return };
        if name.is_empty() {
            return;
        }
        if let Val::Map { node, .. } = &v {
            let node = *node;
            if self.graph.nodes[node].name != name {
                self.aliases.push((node, name.clone()));
            }
            if let Some(p) = self.paths[i].clone() {
                if !self.inferred.contains(&i) && !p.is_empty() {
                    self.last_in.insert(p.clone(), node);
                }
                for a in names::ancestors(&p) {
                    self.last_in.insert(a.to_string(), node);
                }
            }
        }
        self.values.insert(name, v);
    }

    /// Passes a map on unchanged (a layout-only op): a constant scale after it may still fold
    /// into the node when this op was its only reader.
    fn pass_on(&mut self, i: usize, node: NodeId, layout: Layout) {
        let input = &self.onnx[i].input[0];
        if self.primary[node].as_deref() == Some(input.as_str()) && self.consumers(input) == 1 {
            self.primary[node] = self.onnx[i].output.first().cloned();
        }
        self.set(i, 0, Val::Map { node, layout });
    }

    // ----- nodes -----

    fn unique(&mut self, base: String) -> String {
        let mut name = base.clone();
        let k = self.suffix.entry(base.clone()).or_insert(1);
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            *k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Name (and leaf-module alias) of a node made for ONNX node `i`.
    fn name_for(&mut self, i: usize, kind: &str, weight: Option<&str>) -> (String, Option<String>) {
        let path = self.paths[i].clone().filter(|p| !p.is_empty());
        let leaf = path.clone().filter(|p| !self.containers.contains(p) && !self.inferred.contains(&i));
        let from_weight = weight.and_then(weight_module).is_some();
        let base = match (weight.and_then(weight_module), &leaf, &path) {
            (Some(w), _, _) => w.to_string(),
            (None, Some(l), _) => l.clone(),
            (None, None, Some(p)) => format!("{p}.{kind}"),
            (None, None, None) if self.paths[i].is_some() => kind.to_string(),
            _ => {
                let n = &self.onnx[i];
                if !n.name.is_empty() {
                    n.name.clone()
                } else {
                    n.output.first().cloned().unwrap_or_else(|| kind.to_string())
                }
            }
        };
        let name = self.unique(base);
        // A conv named by its weight answers to the module that made it too (the dynamo exporter
        // files a conv with its batch-norm folded in under the batch-norm's path).
        (name.clone(), leaf.filter(|l| from_weight && *l != name))
    }

    /// Adds a node for ONNX node `i`; its output becomes `Val::Map` in `layout` (rank-2 nodes: `Nchw`).
    fn push(&mut self, i: usize, kind: &str, weight: Option<&str>, op: Op, inputs: Vec<NodeId>, flat: bool) -> Result<NodeId> {
        if self.graph.nodes.len() >= MAX_LAYERS {
            return fail!(Weights, "the network has more than {MAX_LAYERS} layers; that is more than this importer accepts");
        }
        let (name, leaf) = self.name_for(i, kind, weight);
        self.graph.nodes.push(Node { name, aliases: vec![], op, inputs });
        let id = self.graph.nodes.len() - 1;
        if let Some(l) = leaf {
            self.aliases.push((id, l));
        }
        let shapes = self.graph.shapes(self.size.0, self.size.1).map_err(|e| match e {
            Error::Input(m) => Error::Weights(format!("{} does not fit the layers before it: {m}", describe(&self.onnx[i]))),
            other => other,
        })?;
        self.shapes.push(shapes[id]);
        self.flat.push(flat);
        self.primary.push(self.onnx[i].output.first().cloned());
        self.origin.push(i);
        Ok(id)
    }

    /// Materializes a rank-2 `[1, features]` view: a Flatten node unless the node already is one.
    fn as_flat(&mut self, i: usize, node: NodeId, layout: &Layout) -> Result<NodeId> {
        if self.flat[node] {
            return Ok(node);
        }
        let dims = self.dims_of(node, layout);
        let by = match layout {
            Layout::Nchw => i,
            Layout::Rows { dims, by } if dims.len() == 2 && dims[0] == 1 => by.unwrap_or(i),
            Layout::Nhwc if self.shapes[node].1 * self.shapes[node].2 == 1 => i,
            _ => return fail!(Weights, "{} needs a [1, features] vector but reads a tensor of shape {dims:?}", describe(&self.onnx[i])),
        };
        self.push(by, "flatten", None, Op::Flatten, vec![node], true)
    }

    fn node(&mut self, i: usize) -> Result<()> {
        let n = &self.onnx[i];
        if n.output.first().is_none_or(|o| o.is_empty()) {
            return fail!(Weights, "{} has no output: the graph is damaged", describe(n));
        }
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return fail!(Weights, "{} is from the op domain '{}'; only standard ONNX ops import (supported: {SUPPORTED})", describe(n), n.domain);
        }
        if let Some(p) = self.pooled.get(&i).cloned() {
            return self.adaptive_pool(i, p);
        }
        if let Some(a) = self.attention.get(&i).cloned() {
            return self.self_attention(i, a);
        }
        if let Some(f) = self.fused.get(&i).cloned() {
            let (x, layout) = match self.value(i, &f.input)? {
                Val::Map { node, layout } => (node, layout),
                Val::Const(_) => return fail!(Weights, "{}: an activation of a constant is not supported", describe(n)),
            };
            let id = match f.op {
                FusedOp::Act(act) => {
                    let flat = self.flat[x];
                    self.push(i, act.name(), None, Op::Act(act), vec![x], flat)?
                }
                FusedOp::LayerNorm { eps } => {
                    let c = self.shapes[x].0;
                    self.channel_norm(i, x, &layout, -1, ChannelNorm { weight: vec![1.0; c], bias: vec![0.0; c], eps })?
                }
            };
            self.set(i, 0, Val::Map { node: id, layout });
            return Ok(());
        }
        let op = n.op_type.as_str();
        // Ops on constants alone are folded, whatever they are.
        let all_const = !n.input.is_empty() && n.input.iter().filter(|s| !s.is_empty()).all(|s| self.inits.contains_key(s.as_str()) || matches!(self.values.get(s), Some(Val::Const(_))));
        if all_const && op != "Constant" {
            let c = self.fold(i)?;
            self.set(i, 0, Val::Const(Rc::new(c)));
            return Ok(());
        }
        match op {
            "Constant" => {
                let c = self.constant(i)?;
                self.set(i, 0, Val::Const(Rc::new(c)));
            }
            "Identity" | "Dropout" => {
                if op == "Dropout" && n.output.get(1).is_some_and(|m| !m.is_empty() && self.consumers(m) > 0) {
                    return fail!(Weights, "{}: its mask output is used; only inference-mode dropout is supported", describe(n));
                }
                let (node, layout) = self.map_in(i, 0)?;
                self.pass_on(i, node, layout);
            }
            "Conv" => self.conv(i)?,
            "BatchNormalization" => self.batch_norm(i)?,
            "Relu" => self.unary(i, Op::Relu, "relu")?,
            "Sigmoid" => self.unary(i, Op::Act(Activation::Sigmoid), "sigmoid")?,
            "Tanh" => self.unary(i, Op::Act(Activation::Tanh), "tanh")?,
            "HardSwish" => self.unary(i, Op::Act(Activation::Hardswish), "hardswish")?,
            "HardSigmoid" => {
                let (alpha, beta) = (attr_f(n, "alpha", 0.2), attr_f(n, "beta", 0.5));
                if !(alpha.is_finite() && beta.is_finite()) {
                    return fail!(Weights, "{}: alpha {alpha} / beta {beta} are not finite", describe(n));
                }
                let act = Activation::Hardsigmoid { alpha, beta };
                self.unary(i, Op::Act(act), "hardsigmoid")?
            }
            "LeakyRelu" => {
                let a = attr_f(n, "alpha", 0.01);
                if !a.is_finite() {
                    return fail!(Weights, "{}: alpha {a} is not finite", describe(n));
                }
                self.unary(i, Op::Act(Activation::LeakyRelu(a)), "leaky-relu")?
            }
            "Gelu" => {
                let approx = attr_s(n, "approximate", "none");
                if approx != "none" {
                    return fail!(Weights, "{}: GELU with approximate='{approx}' is not supported (only the exact erf form)", describe(n));
                }
                self.unary(i, Op::Act(Activation::Gelu), "gelu")?
            }
            "Clip" => self.clip(i)?,
            "Add" | "Sub" | "Mul" | "Div" => self.binary(i)?,
            "MatMul" => self.matmul(i)?,
            "Gemm" => self.gemm(i)?,
            "MaxPool" => self.max_pool(i)?,
            "AveragePool" => self.avg_pool(i)?,
            "GlobalAveragePool" => {
                let (x, layout) = self.map_in(i, 0)?;
                if layout != Layout::Nchw || self.flat[x] {
                    return fail!(Weights, "{} reads a tensor of shape {:?}; it needs an NCHW map", describe(n), self.dims_of(x, &layout));
                }
                let id = self.push(i, "avgpool", None, Op::AdaptiveAvgPool { out_h: 1, out_w: 1 }, vec![x], false)?;
                self.set(i, 0, Val::Map { node: id, layout: Layout::Nchw });
            }
            "ReduceMean" => self.reduce_mean(i)?,
            "Flatten" => self.flatten(i)?,
            "Reshape" => {
                let target = self.ints(i, 1, "shape")?;
                let allowzero = attr_i(n, "allowzero", 0) != 0;
                self.reshape(i, target, allowzero)?
            }
            "Squeeze" | "Unsqueeze" => {
                let (x, layout) = self.map_in(i, 0)?;
                let dims = self.dims_of(x, &layout);
                let axes = match attr_ints(n, "axes") {
                    Some(a) => a,
                    None => match self.opt_input(i, 1)? {
                        Some(Val::Const(c)) => c.to_i64().unwrap_or_default(),
                        _ => vec![],
                    },
                };
                let target = squeeze_dims(&dims, &axes, op == "Unsqueeze").ok_or_else(|| Error::Weights(format!("{}: axes {axes:?} do not fit shape {dims:?}", describe(n))))?;
                self.reshape(i, target.iter().map(|&d| d as i64).collect(), true)?
            }
            "Transpose" => self.transpose(i)?,
            "Concat" => self.concat(i)?,
            "Split" => self.split(i)?,
            "Slice" => self.slice(i)?,
            "Gather" => self.gather_map(i)?,
            "Shape" => {
                let (x, layout) = self.map_in(i, 0)?;
                let dims: Vec<i64> = self.dims_of(x, &layout).iter().map(|&d| d as i64).collect();
                let c = shape_slice(n, dims);
                self.set(i, 0, Val::Const(Rc::new(c)));
            }
            "Cast" => {
                let (x, layout) = self.map_in(i, 0)?;
                let to = attr_i(n, "to", 1) as i32;
                if !matches!(to, 1 | 10 | 11 | 16) {
                    return fail!(Weights, "{} casts a feature map to {}; only float casts are supported", describe(n), tensors::dtype_name(to));
                }
                self.pass_on(i, x, layout);
            }
            "Pad" => self.pad(i)?,
            "LayerNormalization" => self.layer_norm(i)?,
            "Softmax" | "LogSoftmax" => {
                let (x, layout) = self.map_in(i, 0)?;
                let out = n.output[0].as_str();
                let is_output = self.consumers(out) == 1 && !self.readers.contains_key(out);
                if !is_output {
                    return fail!(Weights, "{} is not at the end of the network; only a final softmax (dropped: explanations use the logits) is supported", describe(n));
                }
                self.warnings.push(format!("the model ends in a {op} ({}); it was dropped: scores are the logits before it", describe(n)));
                self.set(i, 0, Val::Map { node: x, layout });
            }
            "Erf" => return fail!(Weights, "{}: an Erf outside the GELU pattern x * 0.5 * (1 + erf(x / sqrt(2))) is not supported", describe(n)),
            _ => return fail!(Weights, "unsupported ONNX op '{op}' at {}; supported: {SUPPORTED}", describe(n)),
        }
        Ok(())
    }

    fn unary(&mut self, i: usize, op: Op, kind: &str) -> Result<()> {
        let (x, layout) = self.map_in(i, 0)?;
        let flat = self.flat[x];
        let id = self.push(i, kind, None, op, vec![x], flat)?;
        self.set(i, 0, Val::Map { node: id, layout });
        Ok(())
    }

    fn clip(&mut self, i: usize) -> Result<()> {
        let n = &self.onnx[i];
        let (mut lo, mut hi) = (attr(n, "min").map(|a| a.f), attr(n, "max").map(|a| a.f));
        if let Some(c) = self.opt_konst(i, 1, "min")? {
            lo = c.scalar_f32();
        }
        if let Some(c) = self.opt_konst(i, 2, "max")? {
            hi = c.scalar_f32();
        }
        let (lo, hi) = (lo.unwrap_or(f32::NEG_INFINITY), hi.unwrap_or(f32::INFINITY));
        match (lo, hi) {
            (l, h) if l == 0.0 && h == 6.0 => self.unary(i, Op::Relu6, "relu6"),
            (l, h) if l == 0.0 && h == f32::INFINITY => self.unary(i, Op::Relu, "relu"),
            (l, h) if l < h => self.unary(i, Op::Act(Activation::Clip { min: l, max: h }), "clip"),
            _ => fail!(Weights, "{}: clip bounds [{lo}, {hi}] are empty", describe(&self.onnx[i])),
        }
    }

    // ----- convolutions and batch-norm -----

    fn conv(&mut self, i: usize) -> Result<()> {
        let n = &self.onnx[i];
        let (x, layout) = self.map_in(i, 0)?;
        let extra = match &layout {
            Layout::Nchw if !self.flat[x] => [0; 4],
            Layout::Padded { pads, .. } => *pads,
            other => return fail!(Weights, "{} reads a tensor of shape {:?}; a 2-D conv needs an NCHW map", describe(n), self.dims_of(x, other)),
        };
        let wname = n.input.get(1).cloned().unwrap_or_default();
        let w = self.konst(i, 1, "weight")?;
        let n = &self.onnx[i];
        let [cout, cin_g, kh, kw] = w.dims[..] else {
            return fail!(Weights, "{}: weight '{wname}' has shape {:?}; only 2-D convolutions (4-D weights) are supported", describe(n), w.dims);
        };
        w.check_finite(&wname)?;
        let groups = attr_i(n, "group", 1);
        let cin = self.shapes[x].0;
        if groups < 1 || groups as u64 > cin as u64 || cin_g * groups as usize != cin || cout % groups as usize != 0 {
            return fail!(Weights, "{}: weight '{wname}' {:?} with {groups} group(s) does not fit a {cin}-channel input", describe(n), w.dims);
        }
        let groups = groups as usize;
        if let Some(k) = attr_ints(n, "kernel_shape") {
            if k != [kh as i64, kw as i64] {
                return fail!(Weights, "{}: kernel_shape {k:?} disagrees with weight '{wname}' {:?}", describe(n), w.dims);
            }
        }
        let dilations = attr_ints(n, "dilations").unwrap_or(vec![1, 1]);
        let [dh, dw] = dilations[..] else { return fail!(Weights, "{}: dilations {dilations:?} are not 2-D", describe(n)) };
        if !(1..=MAX_EXTENT).contains(&dh) || !(1..=MAX_EXTENT).contains(&dw) {
            return fail!(Weights, "{}: dilations {dilations:?} must be between 1 and {MAX_EXTENT}", describe(n));
        }
        // A dilated kernel runs as the equivalent dense one with zeros between its taps.
        let (ekh, ekw) = ((kh - 1) * dh as usize + 1, (kw - 1) * dw as usize + 1);
        if ekh * ekw > MAX_DILATED_GROWTH * kh * kw {
            return fail!(Weights, "{}: dilations {dilations:?} spread its {kh}x{kw} kernel over {ekh}x{ekw}; at most {MAX_DILATED_GROWTH}x the taps are supported", describe(n));
        }
        let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
        let [sh, sw] = strides[..] else { return fail!(Weights, "{}: strides {strides:?} are not 2-D", describe(n)) };
        if !(1..=MAX_EXTENT).contains(&sh) || !(1..=MAX_EXTENT).contains(&sw) {
            return fail!(Weights, "{}: strides {strides:?} must be between 1 and {MAX_EXTENT}", describe(n));
        }
        let (sh, sw) = (sh as usize, sw as usize);
        let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
        let [t, l, b, r] = pads[..] else { return fail!(Weights, "{}: pads {pads:?} are not 2-D", describe(n)) };
        if [t, l, b, r].iter().any(|&p| !(0..=MAX_EXTENT).contains(&p)) {
            return fail!(Weights, "{}: pads {pads:?} must be between 0 and {MAX_EXTENT}", describe(n));
        }
        let total = [t as usize + extra[0], l as usize + extra[1], b as usize + extra[2], r as usize + extra[3]];
        let (_, ih, iw) = self.shapes[x];
        let auto_pad = attr_s(n, "auto_pad", "NOTSET");
        let explicit = |[top, left, bottom, right]: [usize; 4]| Pads { top, left, bottom, right };
        let padding = match auto_pad.as_str() {
            "NOTSET" | "VALID" | "" => {
                let total = if auto_pad == "VALID" { extra } else { total };
                if total[0] == total[2] && total[1] == total[3] {
                    Padding::Symmetric { h: total[0], w: total[1] }
                } else if Padding::Same.resolve(ih, iw, ekh, ekw, sh, sw) == explicit(total) {
                    Padding::Same
                } else {
                    // Fixed for the file's fixed input size, as the file says.
                    Padding::Explicit(explicit(total))
                }
            }
            "SAME_UPPER" if extra == [0; 4] => Padding::Same,
            "SAME_UPPER" | "SAME_LOWER" => {
                let same = Padding::Same.resolve(ih, iw, ekh, ekw, sh, sw);
                // SAME_LOWER puts the odd pixel before (top/left) instead of after.
                let (top, bottom, left, right) = if auto_pad == "SAME_LOWER" { (same.bottom, same.top, same.right, same.left) } else { (same.top, same.bottom, same.left, same.right) };
                Padding::Explicit(explicit([top + extra[0], left + extra[1], bottom + extra[2], right + extra[3]]))
            }
            other => return fail!(Weights, "{}: auto_pad '{other}' is not supported (NOTSET, VALID, SAME_UPPER and SAME_LOWER are)", describe(n)),
        };
        let bias = match self.opt_konst(i, 2, "bias")? {
            Some(b) => {
                let bname = self.onnx[i].input[2].clone();
                if b.numel() != cout {
                    return fail!(Weights, "{}: bias '{bname}' has {} values for {cout} output channels", describe(&self.onnx[i]), b.numel());
                }
                b.check_finite(&bname)?;
                b.to_f32()
            }
            None => vec![0.0; cout],
        };
        let weight = dilate(tensors::into_f32(w), (cout * cin / groups, kh, kw), (dh as usize, dw as usize));
        let conv = Conv { weight, bias, cin, cout, kh: ekh, kw: ekw, stride: (sh, sw), padding, groups };
        let id = self.push(i, "conv", Some(&wname), Op::Conv(Arc::new(conv)), vec![x], false)?;
        self.set(i, 0, Val::Map { node: id, layout: Layout::Nchw });
        Ok(())
    }

    /// `y = x * scale + shift` per channel: folded into the conv, linear or affine before it when
    /// this node is its only reader, else an Affine node.
    fn scale_shift(&mut self, i: usize, x: NodeId, layout: Layout, scale: Vec<f32>, shift: Vec<f32>, kind: &str) -> Result<()> {
        let input = self.onnx[i].input.iter().find(|t| matches!(self.values.get(t.as_str()), Some(Val::Map { .. }))).cloned().unwrap_or_default();
        // Folded: batch-norm, and a constant in the same module as the layer (a MatMul's bias);
        // a scale in another module (ConvNeXt's layer scale) stays a node, so that each module's
        // output is what PyTorch's module gives.
        let same_module = self.onnx[i].op_type == "BatchNormalization" || self.origin.get(x).is_some_and(|&o| o != usize::MAX && self.paths[o] == self.paths[i]);
        let foldable = same_module && x + 1 == self.graph.nodes.len() && x != 0 && self.primary[x].as_deref() == Some(input.as_str()) && self.consumers(&input) == 1;
        if foldable {
            let folded = match &mut self.graph.nodes[x].op {
                Op::Conv(c) => Arc::get_mut(c).map(|c| {
                    let per = c.weight.len() / c.cout;
                    for o in 0..c.cout {
                        c.weight[o * per..(o + 1) * per].iter_mut().for_each(|v| *v *= scale[o]);
                        c.bias[o] = c.bias[o] * scale[o] + shift[o];
                    }
                }),
                Op::Linear(l) => Arc::get_mut(l).map(|l| {
                    let per = l.in_features;
                    for o in 0..l.out_features {
                        l.weight[o * per..(o + 1) * per].iter_mut().for_each(|v| *v *= scale[o]);
                        l.bias[o] = l.bias[o] * scale[o] + shift[o];
                    }
                }),
                Op::Affine(a) => Arc::get_mut(a).map(|a| {
                    for o in 0..a.scale.len() {
                        a.scale[o] *= scale[o];
                        a.shift[o] = a.shift[o] * scale[o] + shift[o];
                    }
                }),
                _ => None,
            };
            if folded.is_some() {
                let leaf = self.paths[i].clone().filter(|p| !p.is_empty() && !self.containers.contains(p) && !self.inferred.contains(&i));
                if let Some(l) = leaf.filter(|l| *l != self.graph.nodes[x].name) {
                    self.aliases.push((x, l));
                }
                // The tensor before the fold no longer exists as such: it is not an alias.
                self.aliases.retain(|(n, a)| !(*n == x && *a == input));
                self.primary[x] = self.onnx[i].output.first().cloned();
                self.set(i, 0, Val::Map { node: x, layout });
                return Ok(());
            }
        }
        if self.flat[x] {
            return fail!(Weights, "{}: a per-feature scale or shift on a vector that no linear layer directly precedes is not supported", describe(&self.onnx[i]));
        }
        let id = self.push(i, kind, None, Op::Affine(Arc::new(Affine { scale, shift })), vec![x], false)?;
        self.set(i, 0, Val::Map { node: id, layout });
        Ok(())
    }

    fn batch_norm(&mut self, i: usize) -> Result<()> {
        let n = &self.onnx[i];
        if attr_i(n, "training_mode", 0) != 0 || n.output.iter().skip(1).any(|o| !o.is_empty() && self.consumers(o) > 0) {
            return fail!(Weights, "{} is in training mode; export the model in eval mode (model.eval())", describe(n));
        }
        let eps = attr_f(n, "epsilon", 1e-5);
        if !(eps.is_finite() && eps >= 0.0) {
            return fail!(Weights, "{}: epsilon {eps} is not a small positive number", describe(n));
        }
        let (x, layout) = self.map_in(i, 0)?;
        if layout != Layout::Nchw {
            return fail!(Weights, "{} reads a tensor of shape {:?}; batch-norm needs an NCHW map or a [1, features] vector", describe(&self.onnx[i]), self.dims_of(x, &layout));
        }
        let c = self.shapes[x].0;
        let mut p = Vec::new();
        for (k, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
            let t = self.konst(i, k, what)?;
            let tname = self.onnx[i].input[k].clone();
            if t.numel() != c {
                return fail!(Weights, "{}: {what} '{tname}' has {} values for {c} channels", describe(&self.onnx[i]), t.numel());
            }
            t.check_finite(&tname)?;
            p.push(t.to_f32());
        }
        let (gamma, beta, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
        if let Some(o) = var.iter().position(|&v| v + eps <= 0.0) {
            return fail!(Weights, "{}: variance '{}' is negative ({}) at channel {o}", describe(&self.onnx[i]), self.onnx[i].input[4], var[o]);
        }
        let scale: Vec<f32> = (0..c).map(|o| gamma[o] / (var[o] + eps).sqrt()).collect();
        let shift: Vec<f32> = (0..c).map(|o| beta[o] - mean[o] * scale[o]).collect();
        self.scale_shift(i, x, layout, scale, shift, "batchnorm")
    }

    /// A constant's values per channel of a map in `layout` with `c` channels: a scalar, or a
    /// shape that broadcasts along the channel axis only.
    fn per_channel(&self, k: &Const, node: NodeId, layout: &Layout) -> Option<Vec<f32>> {
        let c = self.shapes[node].0;
        let v = k.to_f32();
        if v.len() == 1 {
            return Some(vec![v[0]; c]);
        }
        let rank = self.dims_of(node, layout).len();
        let channel_axis = match layout {
            Layout::Nchw if self.flat[node] => 1,
            Layout::Nchw => 1,
            Layout::Nhwc => 3,
            Layout::Tokens => 2,
            _ => return None,
        };
        if k.dims.len() > rank {
            return None;
        }
        // Right-aligned broadcasting: only the channel axis may differ from 1.
        let offset = rank - k.dims.len();
        let fits = k.dims.iter().enumerate().all(|(j, &d)| if j + offset == channel_axis { d == c || d == 1 } else { d == 1 });
        (fits && v.len() == c).then_some(v)
    }

    fn binary(&mut self, i: usize) -> Result<()> {
        let op = self.onnx[i].op_type.clone();
        let (a, b) = (self.input(i, 0)?, self.input(i, 1)?);
        match (a, b) {
            (Val::Map { node: xa, layout: la }, Val::Map { node: xb, layout: lb }) => {
                if matches!(la, Layout::Padded { .. }) || matches!(lb, Layout::Padded { .. }) {
                    self.map_in(i, 0)?;
                    self.map_in(i, 1)?;
                }
                let same = match (&la, &lb) {
                    (Layout::Nchw, Layout::Nchw) | (Layout::Nhwc, Layout::Nhwc) | (Layout::Tokens, Layout::Tokens) => self.flat[xa] == self.flat[xb],
                    _ => false,
                };
                if !same {
                    return fail!(Weights, "{} combines tensors of shapes {:?} and {:?} in different layouts; not supported", describe(&self.onnx[i]), self.dims_of(xa, &la), self.dims_of(xb, &lb));
                }
                let flat = self.flat[xa];
                let (sa, sb) = (self.shapes[xa], self.shapes[xb]);
                match op.as_str() {
                    "Add" => {
                        if sa != sb {
                            return fail!(Weights, "{} adds maps of shapes {sa:?} and {sb:?} (channels, height, width); broadcasting adds are not supported", describe(&self.onnx[i]));
                        }
                        let id = self.push(i, "add", None, Op::Add, vec![xa, xb], flat)?;
                        self.set(i, 0, Val::Map { node: id, layout: la });
                    }
                    "Mul" => {
                        let inputs = if sa == sb || (sb.1, sb.2) == (1, 1) {
                            vec![xa, xb]
                        } else if (sa.1, sa.2) == (1, 1) {
                            vec![xb, xa]
                        } else {
                            return fail!(Weights, "{} multiplies maps of shapes {sa:?} and {sb:?}; only equal shapes or a C x 1 x 1 gate are supported", describe(&self.onnx[i]));
                        };
                        let id = self.push(i, "mul", None, Op::Mul, inputs, flat)?;
                        self.set(i, 0, Val::Map { node: id, layout: la });
                    }
                    _ => return fail!(Weights, "{}: {op} of two feature maps is not supported (only Add and Mul are)", describe(&self.onnx[i])),
                }
            }
            (Val::Map { node, layout }, Val::Const(k)) | (Val::Const(k), Val::Map { node, layout }) => {
                let const_first = matches!(self.input(i, 0)?, Val::Const(_));
                if matches!(layout, Layout::Padded { .. }) {
                    self.map_in(i, if const_first { 1 } else { 0 })?;
                }
                let kname = self.onnx[i].input[if const_first { 0 } else { 1 }].clone();
                let (c, _, t) = self.shapes[node];
                if layout == Layout::Tokens && op == "Add" && k.dims == [1, t, c] && t > 1 {
                    k.check_finite(&kname)?;
                    let v = k.to_f32();
                    let data = (0..c).flat_map(|ch| v.iter().skip(ch).step_by(c).copied()).collect();
                    let positional = crate::graph::Positional { data, channels: c, tokens: t, input_size: Some(self.size) };
                    let id = self.push(i, "pos_embedding", None, Op::AddPositional(Arc::new(positional)), vec![node], false)?;
                    self.set(i, 0, Val::Map { node: id, layout });
                    return Ok(());
                }
                let Some(v) = self.per_channel(&k, node, &layout) else {
                    return fail!(
                        Weights,
                        "{}: {op} by the constant '{kname}' of shape {:?} on a tensor of shape {:?}; only scalars and per-channel constants are supported",
                        describe(&self.onnx[i]),
                        k.dims,
                        self.dims_of(node, &layout)
                    );
                };
                k.check_finite(&kname)?;
                let c = v.len();
                let (scale, shift) = match (op.as_str(), const_first) {
                    ("Add", _) => (vec![1.0; c], v),
                    ("Sub", false) => (vec![1.0; c], v.iter().map(|x| -x).collect()),
                    ("Sub", true) => (vec![-1.0; c], v),
                    ("Mul", _) => (v, vec![0.0; c]),
                    ("Div", false) => {
                        if v.contains(&0.0) {
                            return fail!(Weights, "{}: division by zero in '{kname}'", describe(&self.onnx[i]));
                        }
                        (v.iter().map(|x| 1.0 / x).collect(), vec![0.0; c])
                    }
                    _ => return fail!(Weights, "{}: a constant divided by a feature map is not supported", describe(&self.onnx[i])),
                };
                let kind = op.to_ascii_lowercase();
                self.scale_shift(i, node, layout, scale, shift, &kind)?;
            }
            // Ops on constants alone are folded before this; an error, not a trap, if one slips through.
            (Val::Const(_), Val::Const(_)) => return fail!(Internal, "{}: {op} of two constants was not folded", describe(&self.onnx[i])),
        }
        Ok(())
    }

    // ----- linear layers -----

    fn matmul(&mut self, i: usize) -> Result<()> {
        let (x, layout) = self.map_in(i, 0)?;
        let b = match self.input(i, 1)? {
            Val::Const(b) => b,
            Val::Map { .. } => return token_error(&self.onnx[i], &self.dims_of(x, &layout)),
        };
        let bname = self.onnx[i].input[1].clone();
        let [k, nout] = b.dims[..] else {
            return fail!(Weights, "{}: weight '{bname}' has shape {:?}; a 2-D matrix was expected", describe(&self.onnx[i]), b.dims);
        };
        b.check_finite(&bname)?;
        let bv = tensors::into_f32(b);
        let wt: Vec<f32> = (0..nout).flat_map(|o| (0..k).map(move |j| (o, j))).map(|(o, j)| bv[j * nout + o]).collect();
        match layout {
            Layout::Nhwc | Layout::Tokens => {
                if self.shapes[x].0 != k {
                    return fail!(Weights, "{}: weight '{bname}' [{k}, {nout}] does not fit {} channels", describe(&self.onnx[i]), self.shapes[x].0);
                }
                let conv = Conv { weight: wt, bias: vec![0.0; nout], cin: k, cout: nout, kh: 1, kw: 1, stride: (1, 1), padding: Padding::Symmetric { h: 0, w: 0 }, groups: 1 };
                let id = self.push(i, "linear", None, Op::Conv(Arc::new(conv)), vec![x], false)?;
                self.set(i, 0, Val::Map { node: id, layout });
            }
            _ => {
                let dims = self.dims_of(x, &layout);
                if dims.len() != 2 {
                    return token_error(&self.onnx[i], &dims);
                }
                let x = self.as_flat(i, x, &layout)?;
                self.linear(i, x, wt, vec![0.0; nout], k, nout, None)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn linear(&mut self, i: usize, x: NodeId, weight: Vec<f32>, bias: Vec<f32>, k: usize, nout: usize, wname: Option<&str>) -> Result<()> {
        if self.shapes[x].0 != k {
            return fail!(Weights, "{}: a {k}-input linear layer reads {} features", describe(&self.onnx[i]), self.shapes[x].0);
        }
        let lin = Linear { weight, bias, in_features: k, out_features: nout };
        let id = self.push(i, "linear", wname, Op::Linear(Arc::new(lin)), vec![x], true)?;
        self.set(i, 0, Val::Map { node: id, layout: Layout::Nchw });
        Ok(())
    }

    fn gemm(&mut self, i: usize) -> Result<()> {
        let n = &self.onnx[i];
        if attr_i(n, "transA", 0) != 0 {
            return fail!(Weights, "{}: transA=1 is not supported", describe(n));
        }
        let (trans_b, alpha, beta) = (attr_i(n, "transB", 0) != 0, attr_f(n, "alpha", 1.0), attr_f(n, "beta", 1.0));
        if !(alpha.is_finite() && beta.is_finite()) {
            return fail!(Weights, "{}: alpha {alpha} / beta {beta} are not finite", describe(n));
        }
        let (x, layout) = self.map_in(i, 0)?;
        let bname = self.onnx[i].input.get(1).cloned().unwrap_or_default();
        let b = self.konst(i, 1, "weight")?;
        let [r, c] = b.dims[..] else {
            return fail!(Weights, "{}: weight '{bname}' has shape {:?}; a 2-D matrix was expected", describe(&self.onnx[i]), b.dims);
        };
        b.check_finite(&bname)?;
        let bv = tensors::into_f32(b);
        let (k, nout) = if trans_b { (c, r) } else { (r, c) };
        let weight: Vec<f32> = if trans_b { bv.into_iter().map(|v| v * alpha).collect() } else { (0..nout).flat_map(|o| (0..k).map(move |j| (o, j))).map(|(o, j)| bv[j * nout + o] * alpha).collect() };
        let bias = match self.opt_konst(i, 2, "bias")? {
            Some(cb) => {
                let cname = self.onnx[i].input[2].clone();
                cb.check_finite(&cname)?;
                match cb.numel() {
                    1 => vec![cb.to_f32()[0] * beta; nout],
                    m if m == nout => cb.to_f32().iter().map(|v| v * beta).collect(),
                    _ => return fail!(Weights, "{}: bias '{cname}' has shape {:?} for {nout} outputs", describe(&self.onnx[i]), cb.dims),
                }
            }
            None => vec![0.0; nout],
        };
        let dims = self.dims_of(x, &layout);
        if dims.len() != 2 {
            return fail!(Weights, "{} reads a tensor of shape {dims:?}; Gemm needs [1, features]", describe(&self.onnx[i]));
        }
        let x = self.as_flat(i, x, &layout)?;
        self.linear(i, x, weight, bias, k, nout, Some(&bname))
    }

    // ----- pooling -----

    /// (kernel, stride, padding), each (height, width).
    fn pool_params(&self, i: usize) -> Result<PoolParams> {
        let n = &self.onnx[i];
        let k = attr_ints(n, "kernel_shape").unwrap_or_default();
        let s = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
        let p = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
        let auto_pad = attr_s(n, "auto_pad", "NOTSET");
        if !matches!(auto_pad.as_str(), "NOTSET" | "VALID" | "") {
            return fail!(Weights, "{}: auto_pad '{auto_pad}' is not supported for pooling", describe(n));
        }
        if attr_ints(n, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return fail!(Weights, "{}: dilated pooling is not supported", describe(n));
        }
        match (&k[..], &s[..], &p[..]) {
            ([kh, kw], [sh, sw], [t, l, b, r])
                if [kh, kw, sh, sw].iter().all(|v| (1..=MAX_EXTENT).contains(*v)) && t == b && l == r && (0..=MAX_EXTENT).contains(t) && (0..=MAX_EXTENT).contains(l) =>
            {
                Ok(((*kh as usize, *kw as usize), (*sh as usize, *sw as usize), (*t as usize, *l as usize)))
            }
            _ => fail!(Weights, "{}: kernel {k:?}, strides {s:?}, pads {p:?}: only 2-D pooling with symmetric pads is supported", describe(n)),
        }
    }

    fn max_pool(&mut self, i: usize) -> Result<()> {
        let n = &self.onnx[i];
        if n.output.get(1).is_some_and(|o| !o.is_empty() && self.consumers(o) > 0) {
            return fail!(Weights, "{}: its indices output is used; not supported", describe(n));
        }
        let ceil = attr_i(n, "ceil_mode", 0) != 0;
        let ((kh, kw), (sh, sw), (ph, pw)) = self.pool_params(i)?;
        if kh != kw || sh != sw || ph != pw {
            return fail!(Weights, "{}: only square max pooling is supported (kernel {kh}x{kw}, stride {sh}x{sw}, pads {ph}x{pw})", describe(&self.onnx[i]));
        }
        let (x, layout) = self.map_in(i, 0)?;
        self.need_nchw(i, x, &layout)?;
        let id = self.push(i, "maxpool", None, Op::MaxPool(MaxPool { kernel: kh, stride: sh, padding: ph, ceil_mode: ceil }), vec![x], false)?;
        self.set(i, 0, Val::Map { node: id, layout: Layout::Nchw });
        Ok(())
    }

    fn avg_pool(&mut self, i: usize) -> Result<()> {
        let n = &self.onnx[i];
        let ceil = attr_i(n, "ceil_mode", 0) != 0;
        let count_include_pad = attr_i(n, "count_include_pad", 0) != 0;
        let (kernel, stride, padding) = self.pool_params(i)?;
        let (x, layout) = self.map_in(i, 0)?;
        self.need_nchw(i, x, &layout)?;
        let id = self.push(i, "avgpool", None, Op::AvgPool(AvgPool { kernel, stride, padding, ceil_mode: ceil, count_include_pad }), vec![x], false)?;
        self.set(i, 0, Val::Map { node: id, layout: Layout::Nchw });
        Ok(())
    }

    fn need_nchw(&self, i: usize, x: NodeId, layout: &Layout) -> Result<()> {
        if *layout != Layout::Nchw || self.flat[x] {
            return fail!(Weights, "{} reads a tensor of shape {:?}; it needs an NCHW map", describe(&self.onnx[i]), self.dims_of(x, layout));
        }
        Ok(())
    }

    fn reduce_mean(&mut self, i: usize) -> Result<()> {
        let n = &self.onnx[i];
        let keep = attr_i(n, "keepdims", 1) != 0;
        let axes = match attr_ints(n, "axes") {
            Some(a) => a,
            None => match self.opt_input(i, 1)? {
                Some(Val::Const(c)) => c.to_i64().unwrap_or_default(),
                Some(Val::Map { .. }) => return fail!(Weights, "{}: axes computed from the image are not supported", describe(&self.onnx[i])),
                None => vec![],
            },
        };
        let (x, layout) = self.map_in(i, 0)?;
        let mut ax: Vec<usize> = axes.iter().filter_map(|&a| axis(a, 4)).collect();
        ax.sort_unstable();
        let spatial = match layout {
            Layout::Nchw if !self.flat[x] => ax == [2, 3],
            Layout::Nhwc => ax == [1, 2],
            _ => false,
        };
        if !spatial || ax.len() != axes.len() {
            return fail!(Weights, "{}: a mean over axes {axes:?} of a tensor of shape {:?} is not supported (only over height and width)", describe(&self.onnx[i]), self.dims_of(x, &layout));
        }
        let id = self.push(i, "avgpool", None, Op::AdaptiveAvgPool { out_h: 1, out_w: 1 }, vec![x], false)?;
        if keep {
            self.set(i, 0, Val::Map { node: id, layout });
        } else {
            self.set(i, 0, Val::Map { node: id, layout: Layout::Nchw });
            let f = self.push(i, "flatten", None, Op::Flatten, vec![id], true)?;
            self.set(i, 0, Val::Map { node: f, layout: Layout::Nchw });
        }
        Ok(())
    }

    /// One decomposed `nn.AdaptiveAvgPool2d` call (found by `find_adaptive_pools`), at its last node.
    fn adaptive_pool(&mut self, i: usize, p: Pooled) -> Result<()> {
        let mut maps = vec![];
        for t in &p.inputs {
            if let Val::Map { node, layout } = self.value(i, t)? {
                maps.push((node, layout));
            }
        }
        let [(x, layout)] = maps.as_slice() else {
            return fail!(Weights, "{}: the adaptive average pool it ends reads {} feature maps; expected one", describe(&self.onnx[i]), maps.len());
        };
        let x = *x;
        self.need_nchw(i, x, layout)?;
        let id = self.push(i, "avgpool", None, Op::AdaptiveAvgPool { out_h: p.out_h, out_w: p.out_w }, vec![x], false)?;
        self.set(i, 0, Val::Map { node: id, layout: Layout::Nchw });
        Ok(())
    }

    // ----- shapes and layouts -----

    fn flatten(&mut self, i: usize) -> Result<()> {
        let (x, layout) = self.map_in(i, 0)?;
        let dims = self.dims_of(x, &layout);
        let ax = axis(attr_i(&self.onnx[i], "axis", 1), dims.len() + 1).unwrap_or(1);
        if ax > 1 {
            return token_error(&self.onnx[i], &[dims[..ax].iter().product(), dims[ax..].iter().product()]);
        }
        if self.flat[x] {
            self.pass_on(i, x, layout);
            return Ok(());
        }
        let f = match layout {
            Layout::Nchw => self.push(i, "flatten", None, Op::Flatten, vec![x], true)?,
            _ => self
                .as_flat(i, x, &Layout::Rows { dims: vec![1, dims.iter().product()], by: Some(i) })
                .map_err(|_| Error::Weights(format!("{} flattens a tensor of shape {dims:?} that is not in NCHW order; not supported", describe(&self.onnx[i]))))?,
        };
        self.set(i, 0, Val::Map { node: f, layout: Layout::Nchw });
        Ok(())
    }

    fn reshape(&mut self, i: usize, target: Vec<i64>, allowzero: bool) -> Result<()> {
        let (x, layout) = self.map_in(i, 0)?;
        let cur = self.dims_of(x, &layout);
        let numel = checked_numel(&cur).ok_or_else(|| Error::Weights(format!("{}: shape {cur:?} is too large", describe(&self.onnx[i]))))?;
        let mut dims = Vec::with_capacity(target.len());
        let mut infer = None;
        for (k, &d) in target.iter().enumerate() {
            dims.push(match d {
                0 if !allowzero => *cur.get(k).unwrap_or(&0),
                -1 if infer.is_none() => {
                    infer = Some(k);
                    1
                }
                d if d >= 0 => d as usize,
                _ => return fail!(Weights, "{}: reshape target {target:?} is not valid", describe(&self.onnx[i])),
            });
        }
        if let Some(k) = infer {
            let rest = checked_numel(&dims).unwrap_or(0);
            if rest == 0 || !numel.is_multiple_of(rest) {
                return fail!(Weights, "{}: cannot reshape {cur:?} to {target:?}", describe(&self.onnx[i]));
            }
            dims[k] = numel / rest;
        }
        if checked_numel(&dims) != Some(numel) {
            return fail!(Weights, "{}: cannot reshape {cur:?} to {target:?}", describe(&self.onnx[i]));
        }
        if dims == cur {
            self.pass_on(i, x, layout);
            return Ok(());
        }
        let (c, h, w) = self.shapes[x];
        let nchw = vec![1, c, h, w];
        let out = match layout {
            Layout::Nchw | Layout::Rows { .. } => {
                if (!self.flat[x] && dims == nchw) || (self.flat[x] && dims == [1, c]) {
                    Layout::Nchw
                } else if self.flat[x] && dims.len() == 4 {
                    return fail!(
                        Weights,
                        "{} reshapes the vector of a linear layer back into a map {dims:?} (e.g. a squeeze-excitation built from Linear layers); not supported yet",
                        describe(&self.onnx[i])
                    );
                } else if self.dynamo && !self.flat[x] && layout == Layout::Nchw && dims == [1, c, h * w] && h * w > 1 {
                    // A patch embedding's flatten(2): tokens once transposed to [1, H*W, C].
                    Layout::Rows { dims, by: Some(i) }
                } else if (dims.len() == 3 || dims.len() == 6) && h * w > 1 {
                    return token_error(&self.onnx[i], &dims);
                } else {
                    Layout::Rows { dims, by: Some(i) }
                }
            }
            Layout::Shuffled { groups, .. } if dims == nchw => {
                let id = self.push(i, "shuffle", None, Op::ChannelShuffle { groups }, vec![x], false)?;
                self.set(i, 0, Val::Map { node: id, layout: Layout::Nchw });
                return Ok(());
            }
            Layout::Nhwc if h * w == 1 && (dims == [1, c] || dims == nchw) => Layout::Nchw,
            // Windows or tokens of a channels-last map: a transformer (Swin, MaxViT).
            Layout::Nhwc => return token_error(&self.onnx[i], &dims),
            _ => return fail!(Weights, "{}: reshaping a tensor of shape {cur:?} (layout {layout:?}) to {dims:?} is not supported", describe(&self.onnx[i])),
        };
        self.pass_on(i, x, out);
        Ok(())
    }

    fn transpose(&mut self, i: usize) -> Result<()> {
        let (x, layout) = self.map_in(i, 0)?;
        let dims = self.dims_of(x, &layout);
        let perm: Vec<i64> = attr_ints(&self.onnx[i], "perm").unwrap_or_else(|| (0..dims.len() as i64).rev().collect());
        let (c, h, w) = self.shapes[x];
        let out = match (&layout, perm.as_slice()) {
            (_, p) if p.iter().enumerate().all(|(k, &v)| v == k as i64) => layout.clone(),
            (Layout::Nchw, [0, 2, 3, 1]) if !self.flat[x] => Layout::Nhwc,
            (Layout::Nhwc, [0, 3, 1, 2]) => Layout::Nchw,
            (Layout::Rows { dims: d, .. }, [0, 2, 1]) if !self.flat[x] && d[..] == [1, c, h * w] => {
                let id = self.push(i, "tokens", None, Op::Tokens, vec![x], false)?;
                self.set(i, 0, Val::Map { node: id, layout: Layout::Tokens });
                return Ok(());
            }
            (Layout::Rows { dims: d, .. }, [0, 2, 1, 3, 4]) if d.len() == 5 && d[0] == 1 && d[1] * d[2] == c && d[3] == h && d[4] == w => {
                Layout::Shuffled { groups: d[1], dims: vec![1, d[2], d[1], h, w] }
            }
            _ if dims.len() == 3 => return token_error(&self.onnx[i], &dims),
            _ => return fail!(Weights, "{}: transposing a tensor of shape {dims:?} with perm {perm:?} is not supported (only NCHW <-> NHWC and a channel shuffle)", describe(&self.onnx[i])),
        };
        self.pass_on(i, x, out);
        Ok(())
    }

    fn concat(&mut self, i: usize) -> Result<()> {
        let count = self.onnx[i].input.len();
        // A class token (a (1, 1, C) constant) put before a token sequence.
        if count == 2 {
            if let (Val::Const(k), Val::Map { node, layout: Layout::Tokens }) = (self.input(i, 0)?, self.input(i, 1)?) {
                let c = self.shapes[node].0;
                if k.dims == [1, 1, c] && axis(attr_i(&self.onnx[i], "axis", 1), 3) == Some(1) {
                    let kname = self.onnx[i].input[0].clone();
                    k.check_finite(&kname)?;
                    let id = self.push(i, "class_token", None, Op::PrependToken(Arc::new(k.to_f32())), vec![node], false)?;
                    self.set(i, 0, Val::Map { node: id, layout: Layout::Tokens });
                    return Ok(());
                }
            }
        }
        let mut xs = Vec::with_capacity(count);
        for k in 0..count {
            xs.push(self.map_in(i, k)?);
        }
        let (x0, l0) = xs[0].clone();
        let rank = self.dims_of(x0, &l0).len();
        let ax = axis(attr_i(&self.onnx[i], "axis", 1), rank);
        let channel = match l0 {
            Layout::Nchw => 1,
            Layout::Nhwc => 3,
            _ => usize::MAX,
        };
        let ok = ax == Some(channel) && xs.iter().all(|(x, l)| *l == l0 && self.flat[*x] == self.flat[x0]);
        if !ok {
            let shapes: Vec<Vec<usize>> = xs.iter().map(|(x, l)| self.dims_of(*x, l)).collect();
            return fail!(Weights, "{}: concatenating {shapes:?} along axis {} is not supported (only along channels)", describe(&self.onnx[i]), attr_i(&self.onnx[i], "axis", 1));
        }
        let flat = self.flat[x0];
        let id = self.push(i, "concat", None, Op::Concat, xs.iter().map(|(x, _)| *x).collect(), flat)?;
        self.set(i, 0, Val::Map { node: id, layout: l0 });
        Ok(())
    }

    fn channel_axis(&self, i: usize, x: NodeId, layout: &Layout, a: i64) -> Result<()> {
        let rank = self.dims_of(x, layout).len();
        let want = match layout {
            Layout::Nchw if !self.flat[x] => 1,
            Layout::Nhwc => 3,
            _ => usize::MAX,
        };
        if axis(a, rank) != Some(want) {
            return fail!(Weights, "{}: splitting or slicing a tensor of shape {:?} along axis {a} is not supported (only along channels)", describe(&self.onnx[i]), self.dims_of(x, layout));
        }
        Ok(())
    }

    fn split(&mut self, i: usize) -> Result<()> {
        let (x, layout) = self.map_in(i, 0)?;
        let a = attr_i(&self.onnx[i], "axis", 0);
        self.channel_axis(i, x, &layout, a)?;
        let c = self.shapes[x].0;
        let outs = self.onnx[i].output.len();
        let sizes: Vec<i64> = match self.opt_input(i, 1)? {
            Some(Val::Const(s)) => s.to_i64().unwrap_or_default(),
            Some(Val::Map { .. }) => return fail!(Weights, "{}: split sizes computed from the image are not supported", describe(&self.onnx[i])),
            None => attr_ints(&self.onnx[i], "split").unwrap_or_else(|| {
                let parts = attr_i(&self.onnx[i], "num_outputs", outs as i64).max(1) as usize;
                let chunk = c.div_ceil(parts);
                (0..parts).map(|p| (chunk.min(c.saturating_sub(p * chunk))) as i64).collect()
            }),
        };
        if sizes.len() != outs || sizes.iter().any(|&s| s <= 0) || sizes.iter().sum::<i64>() != c as i64 {
            return fail!(Weights, "{}: split sizes {sizes:?} do not divide {c} channels into {outs} outputs", describe(&self.onnx[i]));
        }
        let mut start = 0;
        for (k, &s) in sizes.iter().enumerate() {
            let end = start + s as usize;
            let id = self.push(i, "slice", None, Op::Slice { start, end }, vec![x], false)?;
            self.set(i, k, Val::Map { node: id, layout: layout.clone() });
            start = end;
        }
        Ok(())
    }

    fn slice(&mut self, i: usize) -> Result<()> {
        let (x, layout) = self.map_in(i, 0)?;
        let n = &self.onnx[i];
        let (starts, ends, axes, steps) = if n.input.len() >= 3 {
            let starts = self.ints(i, 1, "starts")?;
            let ends = self.ints(i, 2, "ends")?;
            let axes = match self.opt_konst(i, 3, "axes")? {
                Some(c) => c.to_i64().unwrap_or_default(),
                None => (0..starts.len() as i64).collect(),
            };
            let steps = match self.opt_konst(i, 4, "steps")? {
                Some(c) => c.to_i64().unwrap_or_default(),
                None => vec![1; starts.len()],
            };
            (starts, ends, axes, steps)
        } else {
            let starts = attr_ints(n, "starts").unwrap_or_default();
            let axes = attr_ints(n, "axes").unwrap_or_else(|| (0..starts.len() as i64).collect());
            (starts.clone(), attr_ints(n, "ends").unwrap_or_default(), axes, vec![1; starts.len()])
        };
        if starts.len() != 1 || ends.len() != 1 || axes.len() != 1 || steps != [1] {
            return fail!(Weights, "{}: a slice with starts {starts:?}, ends {ends:?}, axes {axes:?}, steps {steps:?} is not supported (only a step-1 slice of channels)", describe(&self.onnx[i]));
        }
        self.channel_axis(i, x, &layout, axes[0])?;
        let c = self.shapes[x].0 as i64;
        let clamp = |v: i64| -> usize { (if v < 0 { v + c } else { v }).clamp(0, c) as usize };
        let (start, end) = (clamp(starts[0]), clamp(ends[0]));
        if start >= end {
            return fail!(Weights, "{}: the slice {start}..{end} of {c} channels is empty", describe(&self.onnx[i]));
        }
        if start == 0 && end == c as usize {
            self.pass_on(i, x, layout);
            return Ok(());
        }
        let id = self.push(i, "slice", None, Op::Slice { start, end }, vec![x], false)?;
        self.set(i, 0, Val::Map { node: id, layout });
        Ok(())
    }

    /// Gather on a map: only the identity permutation of a flattened map back to a shape (the
    /// dynamo exporter's `as_strided` after an adaptive average pool).
    fn gather_map(&mut self, i: usize) -> Result<()> {
        let (x, layout) = self.map_in(i, 0)?;
        let dims = self.dims_of(x, &layout);
        let idx = self.konst(i, 1, "indices")?;
        // Token 0 of a sequence (the class token): [1, T, C] -> [1, C].
        if layout == Layout::Tokens && idx.dims.is_empty() && idx.to_i64().as_deref() == Some(&[0]) && axis(attr_i(&self.onnx[i], "axis", 0), 3) == Some(1) {
            let id = self.push(i, "class-token", None, Op::ClassToken, vec![x], false)?;
            let f = self.push(i, "flatten", None, Op::Flatten, vec![id], true)?;
            self.set(i, 0, Val::Map { node: f, layout: Layout::Nchw });
            return Ok(());
        }
        let numel: usize = dims.iter().product();
        let identity = dims.len() == 1 && idx.numel() == numel && idx.to_i64().is_some_and(|v| v.iter().enumerate().all(|(k, &j)| j == k as i64));
        if !identity {
            return fail!(Weights, "{}: gathering from a feature map (shape {dims:?}) is not supported", describe(&self.onnx[i]));
        }
        let target: Vec<i64> = idx.dims.iter().map(|&d| d as i64).collect();
        self.reshape(i, target, true)
    }

    fn pad(&mut self, i: usize) -> Result<()> {
        let n = &self.onnx[i];
        let mode = attr_s(n, "mode", "constant");
        let pads = match attr_ints(n, "pads") {
            Some(p) => p,
            None => self.ints(i, 1, "pads")?,
        };
        let value = match self.opt_konst(i, 2, "constant value")? {
            Some(v) => v.scalar_f32().unwrap_or(f32::NAN),
            None => attr_f(&self.onnx[i], "value", 0.0),
        };
        if self.onnx[i].input.get(3).is_some_and(|s| !s.is_empty()) {
            return fail!(Weights, "{}: Pad with an axes input is not supported", describe(&self.onnx[i]));
        }
        let (x, layout) = self.map_in(i, 0)?;
        if pads.iter().all(|&p| p == 0) {
            self.pass_on(i, x, layout);
            return Ok(());
        }
        let ok = mode == "constant" && value == 0.0 && pads.len() == 8 && pads.iter().all(|p| (0..=MAX_EXTENT).contains(p)) && [0, 1, 4, 5].iter().all(|&k| pads[k] == 0);
        if !ok || layout != Layout::Nchw || self.flat[x] {
            return fail!(Weights, "{}: only a zero padding of height and width (before a conv) is supported (mode '{mode}', value {value}, pads {pads:?})", describe(&self.onnx[i]));
        }
        let out = self.onnx[i].output[0].as_str();
        let all_convs = self.readers.get(out).is_some_and(|r| r.iter().all(|&m| self.onnx[m].op_type == "Conv")) && self.consumers(out) == self.readers[out].len();
        if !all_convs {
            return fail!(Weights, "{}: a Pad whose output feeds something other than a Conv is not supported", describe(&self.onnx[i]));
        }
        let p = [pads[2] as usize, pads[3] as usize, pads[6] as usize, pads[7] as usize];
        self.set(i, 0, Val::Map { node: x, layout: Layout::Padded { pads: p, by: i } });
        Ok(())
    }

    fn layer_norm(&mut self, i: usize) -> Result<()> {
        let n = &self.onnx[i];
        if n.output.iter().skip(1).any(|o| !o.is_empty() && self.consumers(o) > 0) {
            return fail!(Weights, "{}: its mean / inverse-deviation outputs are used; not supported", describe(n));
        }
        let eps = attr_f(n, "epsilon", 1e-5);
        if !(eps.is_finite() && eps >= 0.0) {
            return fail!(Weights, "{}: epsilon {eps} is not a small positive number", describe(n));
        }
        let a = attr_i(n, "axis", -1);
        let (x, layout) = self.map_in(i, 0)?;
        let c = self.shapes[x].0;
        let wname = self.onnx[i].input[1].clone();
        let w = self.konst(i, 1, "scale")?;
        let b = self.opt_konst(i, 2, "bias")?;
        if w.numel() != c || b.as_ref().is_some_and(|b| b.numel() != c) {
            return fail!(Weights, "{}: scale/bias sizes do not fit {c} channels", describe(&self.onnx[i]));
        }
        w.check_finite(&wname)?;
        if let Some(b) = &b {
            b.check_finite(&self.onnx[i].input[2])?;
        }
        let norm = ChannelNorm { weight: w.to_f32(), bias: b.map_or(vec![0.0; c], |b| b.to_f32()), eps };
        let id = self.channel_norm(i, x, &layout, a, norm)?;
        self.set(i, 0, Val::Map { node: id, layout });
        Ok(())
    }

    /// A layer norm over `axis` of `x`, which must be its channels (the last axis of a channels-last
    /// map or of tokens, or the features of a flat vector).
    fn channel_norm(&mut self, i: usize, x: NodeId, layout: &Layout, a: i64, norm: ChannelNorm) -> Result<NodeId> {
        let dims = self.dims_of(x, layout);
        let ax = axis(a, dims.len());
        let over_channels = match layout {
            Layout::Nhwc => ax == Some(3),
            Layout::Tokens => ax == Some(2),
            Layout::Nchw if !self.flat[x] => ax == Some(1) && self.shapes[x].1 * self.shapes[x].2 == 1,
            _ => false,
        };
        if !over_channels {
            return fail!(Weights, "{}: layer norm over axis {a} of a tensor of shape {dims:?} is not supported (only over channels)", describe(&self.onnx[i]));
        }
        self.push(i, "layernorm", None, Op::ChannelNorm(Arc::new(norm)), vec![x], false)
    }

    // ----- constants -----

    fn constant(&mut self, i: usize) -> Result<Const> {
        let n = &self.onnx[i];
        let a = n.attribute.first().ok_or_else(|| Error::Weights(format!("{} has no value", describe(n))))?;
        Ok(match a.name.as_str() {
            "value" => match &a.t {
                Some(t) => tensors::decode(t, self.external, &mut self.budget)?,
                None => return fail!(Weights, "{} has no tensor value", describe(n)),
            },
            "value_float" => Const::f32(vec![], vec![a.f]),
            "value_floats" => Const::f32(vec![a.floats.len()], a.floats.clone()),
            "value_int" => Const::i64(vec![], vec![a.i]),
            "value_ints" => Const::i64(vec![a.ints.len()], a.ints.clone()),
            other => return fail!(Weights, "{}: a constant given as '{other}' is not supported", describe(n)),
        })
    }

    /// Evaluates a node whose inputs are all constants (shape arithmetic).
    fn fold(&mut self, i: usize) -> Result<Const> {
        let n = &self.onnx[i];
        let op = n.op_type.clone();
        let mut ins: Vec<Option<Rc<Const>>> = Vec::new();
        for k in 0..n.input.len() {
            ins.push(self.opt_konst(i, k, "input")?);
        }
        let n = &self.onnx[i];
        let get = |k: usize| -> Result<Rc<Const>> { ins.get(k).cloned().flatten().ok_or_else(|| Error::Weights(format!("{} lacks input {k}", describe(n)))) };
        let out = match op.as_str() {
            "Identity" | "Dropout" => (*get(0)?).clone(),
            "Cast" => {
                let x = get(0)?;
                match attr_i(n, "to", 1) {
                    1 | 10 | 11 | 16 => Const::f32(x.dims.clone(), x.to_f32()),
                    _ => Const::i64(x.dims.clone(), x.to_f32().iter().map(|&v| v as i64).collect()),
                }
            }
            "Shape" => shape_slice(n, get(0)?.dims.iter().map(|&d| d as i64).collect()),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Equal" | "Less" | "Greater" | "Mod" => {
                let (a, b) = (get(0)?, get(1)?);
                broadcast(&a, &b, &op).ok_or_else(|| Error::Weights(format!("{}: cannot broadcast constants {:?} and {:?}", describe(n), a.dims, b.dims)))?
            }
            "Neg" | "Sqrt" | "Reciprocal" | "Floor" | "Ceil" | "Abs" | "Relu" | "Sigmoid" | "Erf" | "Exp" => {
                let x = get(0)?;
                let f: fn(f32) -> f32 = match op.as_str() {
                    "Neg" => |v| -v,
                    "Sqrt" => f32::sqrt,
                    "Reciprocal" => |v| 1.0 / v,
                    "Floor" => f32::floor,
                    "Ceil" => f32::ceil,
                    "Abs" => f32::abs,
                    "Relu" => |v| v.max(0.0),
                    "Sigmoid" => |v| 1.0 / (1.0 + (-v).exp()),
                    "Exp" => f32::exp,
                    _ => erf,
                };
                match &x.data {
                    Data::I64(v) if op == "Neg" || op == "Abs" => Const::i64(x.dims.clone(), v.iter().map(|&e| if op == "Neg" { -e } else { e.abs() }).collect()),
                    _ => Const::f32(x.dims.clone(), x.to_f32().into_iter().map(f).collect()),
                }
            }
            "Unsqueeze" | "Squeeze" => {
                let x = get(0)?;
                let axes = match attr_ints(n, "axes") {
                    Some(a) => a,
                    None => ins.get(1).cloned().flatten().and_then(|c| c.to_i64()).unwrap_or_default(),
                };
                let dims = squeeze_dims(&x.dims, &axes, op == "Unsqueeze").ok_or_else(|| Error::Weights(format!("{}: axes {axes:?} do not fit shape {:?}", describe(n), x.dims)))?;
                Const { dims, data: x.data.clone() }
            }
            "Reshape" => {
                let x = get(0)?;
                let t = get(1)?.to_i64().unwrap_or_default();
                let numel = x.numel();
                let mut dims: Vec<usize> = t.iter().enumerate().map(|(k, &d)| if d == 0 { *x.dims.get(k).unwrap_or(&0) } else { d.max(1) as usize }).collect();
                if let Some(k) = t.iter().position(|&d| d == -1) {
                    let rest = dims.iter().enumerate().filter(|(j, _)| *j != k).try_fold(1usize, |a, (_, &d)| a.checked_mul(d)).unwrap_or(0);
                    dims[k] = numel.checked_div(rest).unwrap_or(0);
                }
                if checked_numel(&dims) != Some(numel) {
                    return fail!(Weights, "{}: cannot reshape a constant of shape {:?} to {t:?}", describe(n), x.dims);
                }
                Const { dims, data: x.data.clone() }
            }
            "Flatten" => {
                let x = get(0)?;
                let ax = axis(attr_i(n, "axis", 1), x.dims.len() + 1).unwrap_or(1);
                Const { dims: vec![x.dims[..ax].iter().product(), x.dims[ax..].iter().product()], data: x.data.clone() }
            }
            "Concat" => {
                let parts: Vec<Rc<Const>> = ins.iter().flatten().cloned().collect();
                concat_consts(&parts, attr_i(n, "axis", 0)).ok_or_else(|| Error::Weights(format!("{}: cannot concatenate these constants", describe(n))))?
            }
            "Gather" => {
                let (x, idx) = (get(0)?, get(1)?);
                gather_const(&x, &idx, attr_i(n, "axis", 0)).ok_or_else(|| Error::Weights(format!("{}: gather out of range", describe(n))))?
            }
            "Slice" => {
                let x = get(0)?;
                let (starts, ends) = (get(1)?.to_i64().unwrap_or_default(), get(2)?.to_i64().unwrap_or_default());
                let axes = ins.get(3).cloned().flatten().and_then(|c| c.to_i64()).unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = ins.get(4).cloned().flatten().and_then(|c| c.to_i64()).unwrap_or_else(|| vec![1; starts.len()]);
                slice_const(&x, &starts, &ends, &axes, &steps).ok_or_else(|| Error::Weights(format!("{}: unsupported constant slice", describe(n))))?
            }
            "ConstantOfShape" => {
                let dims: Vec<usize> = get(0)?.to_i64().unwrap_or_default().iter().map(|&d| d.max(0) as usize).collect();
                let numel = checked_numel(&dims).filter(|&n| n <= 1 << 24).ok_or_else(|| Error::Weights(format!("{}: a constant of shape {dims:?} is too large", describe(n))))?;
                match attr(n, "value").and_then(|a| a.t.as_ref()) {
                    Some(t) => {
                        let v = tensors::decode(t, None, &mut self.budget)?;
                        match v.data {
                            Data::F32(x) => Const::f32(dims, vec![x.first().copied().unwrap_or(0.0); numel]),
                            Data::I64(x) => Const::i64(dims, vec![x.first().copied().unwrap_or(0); numel]),
                        }
                    }
                    None => Const::f32(dims, vec![0.0; numel]),
                }
            }
            "Range" => {
                let (s, l, d) = (get(0)?.to_f32()[0], get(1)?.to_f32()[0], get(2)?.to_f32()[0]);
                let count = if d == 0.0 { 0 } else { ((l - s) / d).ceil().max(0.0) as usize };
                if count > 1 << 24 {
                    return fail!(Weights, "{}: a range of {count} values is too large", describe(n));
                }
                let vals: Vec<f32> = (0..count).map(|k| s + k as f32 * d).collect();
                if get(0)?.is_int() {
                    Const::i64(vec![count], vals.iter().map(|&v| v as i64).collect())
                } else {
                    Const::f32(vec![count], vals)
                }
            }
            "Transpose" => {
                let x = get(0)?;
                if x.dims.len() != 2 {
                    return fail!(Weights, "{}: transposing a constant of rank {} is not supported", describe(n), x.dims.len());
                }
                let (r, c) = (x.dims[0], x.dims[1]);
                let v = x.to_f32();
                Const::f32(vec![c, r], (0..c).flat_map(|j| (0..r).map(move |k| (j, k))).map(|(j, k)| v[k * c + j]).collect())
            }
            _ => return fail!(Weights, "unsupported ONNX op '{op}' on constants at {}; supported: {SUPPORTED}", describe(n)),
        };
        // Each fold is capped at 2^24 values before it allocates; their sum counts against the load.
        crate::budget::reserve_floats(out.numel(), || format!("the constant folded at {}", describe(n)))?.keep();
        Ok(out)
    }

    // ----- patterns -----

    /// Finds multi-node activations: erf GELU, x * sigmoid(x) (SiLU), x * hardsigmoid(x) (hard-swish).
    fn find_patterns(&mut self) -> Result<()> {
        let onnx = self.onnx;
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for (i, n) in onnx.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
        }
        let readers = &self.readers;
        let (inits, external, counts) = (&self.inits, self.external, &self.consumers);
        let scalar = |t: &str| scalar_of(t, inits, external, onnx, &producer);
        let (mut skips, mut fused): (Vec<usize>, Vec<(usize, Fused)>) = (vec![], vec![]);
        let sole = |t: &str| -> Option<usize> {
            match readers.get(t).map(Vec::as_slice) {
                Some([r]) if counts.get(t).copied() == Some(1) => Some(*r),
                _ => None,
            }
        };
        let other = |n: &NodeProto, t: &str| -> Option<String> {
            match (n.input.first(), n.input.get(1)) {
                (Some(a), Some(b)) if a == t => Some(b.clone()),
                (Some(a), Some(b)) if b == t => Some(a.clone()),
                _ => None,
            }
        };
        let out0 = |n: &'a NodeProto| n.output.first().map(String::as_str).unwrap_or("");
        for e in 0..onnx.len() {
            let n = &onnx[e];
            if n.input.is_empty() || out0(n).is_empty() {
                continue;
            }
            match n.op_type.as_str() {
                "Erf" => {
                    // x / sqrt(2) (or x * 1/sqrt(2)) -> Erf -> + 1 -> * x -> * 0.5, the last two in either order.
                    let Some(&d) = producer.get(n.input[0].as_str()) else { continue };
                    let dn = &onnx[d];
                    if sole(out0(dn)) != Some(e) || dn.input.len() != 2 {
                        continue;
                    }
                    let x = dn.input[0].clone();
                    let c = scalar(&dn.input[1]);
                    let ok = match (dn.op_type.as_str(), c) {
                        ("Div", Some(c)) => close(c, std::f32::consts::SQRT_2),
                        ("Mul", Some(c)) => close(c, std::f32::consts::FRAC_1_SQRT_2),
                        _ => false,
                    };
                    if !ok {
                        continue;
                    }
                    let Some(a) = sole(out0(n)) else { continue };
                    let an = &onnx[a];
                    let one = other(an, out0(n)).and_then(|t| scalar(&t));
                    if an.op_type != "Add" || !one.is_some_and(|v| close(v, 1.0)) {
                        continue;
                    }
                    let Some(m) = sole(out0(an)) else { continue };
                    let mn = &onnx[m];
                    if mn.op_type != "Mul" {
                        continue;
                    }
                    let Some(y) = other(mn, out0(an)) else { continue };
                    if y == x {
                        // (x * (1 + erf)) * 0.5
                        let Some(h) = sole(out0(mn)) else { continue };
                        let hn = &onnx[h];
                        let half = other(hn, out0(mn)).and_then(|t| scalar(&t));
                        if hn.op_type == "Mul" && half.is_some_and(|v| close(v, 0.5)) {
                            skips.extend([d, e, a, m]);
                            fused.push((h, Fused { op: FusedOp::Act(Activation::Gelu), input: x }));
                        }
                    } else if let Some(&h) = producer.get(y.as_str()) {
                        // (x * 0.5) * (1 + erf)
                        let hn = &onnx[h];
                        let half = other(hn, &x).and_then(|t| scalar(&t));
                        if hn.op_type == "Mul" && sole(&y) == Some(m) && half.is_some_and(|v| close(v, 0.5)) {
                            skips.extend([d, e, a, h]);
                            fused.push((m, Fused { op: FusedOp::Act(Activation::Gelu), input: x }));
                        }
                    }
                }
                "Div" if n.input.len() == 2 => {
                    // mean = ReduceMean(x); d = x - mean; var = ReduceMean(d ^ 2 (or d * d));
                    // d / Sqrt(var + eps), both means over the last axis only.
                    let node_of = |t: &str, op: &str| producer.get(t).copied().filter(|&k| onnx[k].op_type == op && !onnx[k].input.is_empty());
                    let last_axis_mean = |k: usize| {
                        let m = &onnx[k];
                        let axes = attr_ints(m, "axes").or_else(|| m.input.get(1).and_then(|t| scalar(t)).map(|v| vec![v as i64]));
                        attr_i(m, "keepdims", 1) != 0 && axes.as_deref() == Some(&[-1][..])
                    };
                    let d_name = n.input[0].as_str();
                    let Some(sub) = node_of(d_name, "Sub") else { continue };
                    let x = onnx[sub].input[0].clone();
                    let Some(mean) = onnx[sub].input.get(1).and_then(|t| node_of(t, "ReduceMean")) else { continue };
                    let Some(sqrt) = node_of(&n.input[1], "Sqrt") else { continue };
                    let Some(add) = node_of(&onnx[sqrt].input[0], "Add") else { continue };
                    let Some((var, eps)) = onnx[add].input.iter().find_map(|t| node_of(t, "ReduceMean")).and_then(|v| Some((v, other(&onnx[add], out0(&onnx[v])).and_then(|t| scalar(&t))?))) else {
                        continue;
                    };
                    let Some(sq) = producer.get(onnx[var].input[0].as_str()).copied() else { continue };
                    let sqn = &onnx[sq];
                    let squares = match sqn.op_type.as_str() {
                        "Pow" => sqn.input.first().map(String::as_str) == Some(d_name) && sqn.input.get(1).and_then(|t| scalar(t)).is_some_and(|p| p == 2.0),
                        "Mul" => sqn.input.len() == 2 && sqn.input.iter().all(|t| t == d_name),
                        _ => false,
                    };
                    let private = sole(out0(&onnx[mean])) == Some(sub)
                        && sole(out0(sqn)) == Some(var)
                        && sole(out0(&onnx[var])) == Some(add)
                        && sole(out0(&onnx[add])) == Some(sqrt)
                        && sole(out0(&onnx[sqrt])) == Some(e);
                    let d_private = readers.get(d_name).is_some_and(|r| r.iter().all(|&k| k == sq || k == e));
                    if !(squares && private && d_private && onnx[mean].input[0] == x && last_axis_mean(mean) && last_axis_mean(var) && eps.is_finite() && eps >= 0.0) {
                        continue;
                    }
                    skips.extend([mean, sub, sq, var, add, sqrt]);
                    fused.push((e, Fused { op: FusedOp::LayerNorm { eps }, input: x }));
                }
                "Sigmoid" | "HardSigmoid" => {
                    let x = n.input[0].clone();
                    let Some(m) = sole(out0(n)) else { continue };
                    let mn = &onnx[m];
                    if mn.op_type != "Mul" || other(mn, out0(n)).as_deref() != Some(x.as_str()) {
                        continue;
                    }
                    let act = if n.op_type == "Sigmoid" {
                        Activation::Silu
                    } else if close(attr_f(n, "alpha", 0.2), 1.0 / 6.0) && close(attr_f(n, "beta", 0.5), 0.5) {
                        Activation::Hardswish
                    } else {
                        continue;
                    };
                    skips.push(e);
                    fused.push((m, Fused { op: FusedOp::Act(act), input: x }));
                }
                _ => {}
            }
        }
        self.skip.extend(skips);
        self.fused.extend(fused);
        Ok(())
    }

    /// Finds `nn.AdaptiveAvgPool2d` calls the dynamo exporter decomposed into plain ops: an
    /// output larger than (or not dividing) the input, e.g. VGG's and AlexNet's `(7, 7)` / `(6, 6)`
    /// pool of a 1x1 or 1x2 map at small inputs, becomes Transpose [2,3,0,1] -> GatherND of
    /// constant window indices -> Transpose -> ReduceMean, or with uneven windows Where
    /// (masking) -> Gather / Add / Div. Such nodes carry the pool module in their `namespace`; all
    /// the nodes of one call (same module path) are skipped but the last, where one
    /// `AdaptiveAvgPool` is made from the call's feature-map input to its output, sized by the
    /// output's static shape (`value_info`). A call exported as one op (GlobalAveragePool,
    /// AveragePool, ReduceMean) maps on its own; a call that does not fit (several tensors
    /// leaving it, no static output shape, a module called twice) is left to the op-by-op path.
    fn find_adaptive_pools(&mut self, g: &candle_onnx::onnx::GraphProto, adaptive: &[bool]) {
        let onnx = self.onnx;
        let mut calls: HashMap<&str, Vec<usize>> = HashMap::new();
        for i in (0..onnx.len()).filter(|&i| adaptive[i]) {
            if let Some(p) = self.paths[i].as_deref() {
                calls.entry(p).or_default().push(i);
            }
        }
        for nodes in calls.into_values().filter(|n| n.len() > 1) {
            let Some((made, out)) = self.group_output(g, &nodes) else { continue };
            let last = nodes[nodes.len() - 1];
            let shape = g.value_info.iter().chain(&g.output).find(|v| v.name == out).and_then(|v| input_dims(v).ok());
            let Some([Some(1), Some(_), Some(out_h), Some(out_w)]) = shape.as_deref() else { continue };
            let mut inputs: Vec<String> = vec![];
            for t in nodes.iter().flat_map(|&i| onnx[i].input.iter()) {
                if !t.is_empty() && !made.contains(t.as_str()) && !self.inits.contains_key(t.as_str()) && !inputs.contains(t) {
                    inputs.push(t.clone());
                }
            }
            self.skip.extend(nodes[..nodes.len() - 1].iter().copied());
            self.pooled.insert(last, Pooled { inputs, out_h: *out_h, out_w: *out_w });
        }
    }

    /// The tensors a group of ONNX nodes (one module call) makes, and the one tensor that leaves
    /// the group (read outside it, or a graph output), when exactly one does and the group's last
    /// node makes it; `None` for a group that cannot become one of our nodes.
    fn group_output(&self, g: &candle_onnx::onnx::GraphProto, nodes: &[usize]) -> Option<(HashSet<&'a str>, &'a str)> {
        let onnx = self.onnx;
        let inside: HashSet<usize> = nodes.iter().copied().collect();
        let made: HashSet<&'a str> = nodes.iter().flat_map(|&i| onnx[i].output.iter()).map(String::as_str).filter(|t| !t.is_empty()).collect();
        let leaves = |t: &&str| g.output.iter().any(|o| o.name == *t) || self.readers.get(*t).is_some_and(|r| r.iter().any(|k| !inside.contains(k)));
        let outs: Vec<&'a str> = made.iter().copied().filter(leaves).collect();
        let [out] = outs[..] else { return None };
        (onnx[*nodes.last()?].output.first().map(String::as_str) == Some(out)).then_some((made, out))
    }

    /// Each `nn.MultiheadAttention` call (all the nodes of one module path, in one run) becomes
    /// one node at its last ONNX node; its weights are the initializers it reads.
    fn find_attention(&mut self, g: &candle_onnx::onnx::GraphProto, attention: &[bool]) {
        let onnx = self.onnx;
        let mut runs: Vec<Vec<usize>> = vec![];
        for i in (0..onnx.len()).filter(|&i| attention[i]) {
            match runs.last_mut() {
                Some(r) if self.paths[r[0]] == self.paths[i] && *r.last().unwrap() + 1 == i => r.push(i),
                _ => runs.push(vec![i]),
            }
        }
        for nodes in runs.into_iter().filter(|n| n.len() > 1) {
            let Some((made, _)) = self.group_output(g, &nodes) else { continue };
            let last = nodes[nodes.len() - 1];
            let (mut inputs, mut weights, mut reshapes) = (vec![], vec![], vec![]);
            for &i in &nodes {
                for (k, t) in onnx[i].input.iter().enumerate() {
                    if t.is_empty() || made.contains(t.as_str()) {
                        continue;
                    }
                    if self.inits.contains_key(t.as_str()) {
                        if onnx[i].op_type == "Reshape" && k == 1 {
                            reshapes.push(t.clone());
                        } else if matches!(onnx[i].op_type.as_str(), "MatMul" | "Gemm" | "Add") {
                            weights.push((t.clone(), i, k));
                        }
                    } else if !inputs.contains(t) {
                        inputs.push(t.clone());
                    }
                }
            }
            self.skip.extend(nodes[..nodes.len() - 1].iter().copied());
            self.attention.insert(last, AttentionCall { inputs, weights, reshapes });
        }
    }

    /// One decomposed `nn.MultiheadAttention` call (found by `find_attention`), at its last node:
    /// query = key = value = the token map it reads; in_proj (3C x C) and out_proj (C x C) from
    /// the initializers it reads, oriented by how they are read (MatMul: transposed; Gemm: transB).
    fn self_attention(&mut self, i: usize, a: AttentionCall) -> Result<()> {
        let mut maps = vec![];
        for t in &a.inputs {
            if let Val::Map { node, layout } = self.value(i, t)? {
                if !maps.iter().any(|(n, _)| *n == node) {
                    maps.push((node, layout));
                }
            }
        }
        let [(x, layout)] = maps.as_slice() else {
            return fail!(Weights, "{}: the multi-head attention it ends reads {} feature maps; only self-attention (query = key = value) is supported", describe(&self.onnx[i]), maps.len());
        };
        let x = *x;
        if *layout != Layout::Tokens {
            return fail!(Weights, "{}: the multi-head attention it ends reads a tensor of shape {:?}; it needs a [1, tokens, channels] sequence", describe(&self.onnx[i]), self.dims_of(x, layout));
        }
        let c = self.shapes[x].0;
        let (mut in_w, mut in_b, mut out_w, mut out_b) = (None, None, None, None);
        for (name, r, k) in &a.weights {
            let w = self.value(*r, name)?;
            let Val::Const(w) = w else { continue };
            w.check_finite(name)?;
            let n = &self.onnx[*r];
            // Weights are read as (in, out) by a MatMul or a Gemm without transB; as (out, in) otherwise.
            let transposed = match n.op_type.as_str() {
                "MatMul" => *k == 1,
                "Gemm" => *k == 1 && attr_i(n, "transB", 0) == 0,
                _ => false,
            };
            let v = w.to_f32();
            let as_out_in = |rows: usize, cols: usize| -> Vec<f32> {
                if transposed {
                    (0..cols).flat_map(|o| (0..rows).map(move |j| (o, j))).map(|(o, j)| v[j * cols + o]).collect()
                } else {
                    v.clone()
                }
            };
            match (w.dims.as_slice(), transposed) {
                ([r0, c0], false) if *r0 == 3 * c && *c0 == c => in_w = Some(as_out_in(3 * c, c)),
                ([r0, c0], true) if *r0 == c && *c0 == 3 * c => in_w = Some(as_out_in(c, 3 * c)),
                ([r0, c0], _) if *r0 == c && *c0 == c => out_w = Some(as_out_in(c, c)),
                ([n3], _) if *n3 == 3 * c => in_b = Some(v),
                ([n1], _) if *n1 == c => out_b = Some(v),
                _ => {
                    return fail!(
                        Weights,
                        "{}: the multi-head attention reads '{name}' of shape {:?}, which is none of in_proj ({}, {c}) / ({}) or out_proj ({c}, {c}) / ({c})",
                        describe(n),
                        w.dims,
                        3 * c,
                        3 * c
                    )
                }
            }
        }
        let (Some(in_w), Some(out_w)) = (in_w, out_w) else {
            return fail!(Weights, "{}: the multi-head attention it ends does not read an in_proj ({}, {c}) and an out_proj ({c}, {c}) weight", describe(&self.onnx[i]), 3 * c);
        };
        // Heads: the per-head split reshapes to [..., heads, C / heads]; none when one head.
        let mut split = HashSet::new();
        for t in &a.reshapes {
            if let Val::Const(s) = self.value(i, t)? {
                if let Some(d) = s.to_i64().filter(|d| d.len() >= 2) {
                    let (h, hd) = (d[d.len() - 2], d[d.len() - 1]);
                    if hd > 0 && (hd as usize) < c && h > 0 && (h * hd) as usize == c {
                        split.insert(h as usize);
                    }
                }
            }
        }
        let heads = match split.len() {
            0 => 1,
            1 => *split.iter().next().unwrap(),
            _ => return fail!(Weights, "{}: the multi-head attention's reshapes split {c} channels into different numbers of heads {split:?}", describe(&self.onnx[i])),
        };
        let attention = crate::graph::Attention {
            heads,
            in_proj: Linear { weight: in_w, bias: in_b.unwrap_or_else(|| vec![0.0; 3 * c]), in_features: c, out_features: 3 * c },
            out_proj: Linear { weight: out_w, bias: out_b.unwrap_or_else(|| vec![0.0; c]), in_features: c, out_features: c },
        };
        let id = self.push(i, "self-attention", None, Op::SelfAttention(Arc::new(attention)), vec![x], false)?;
        self.set(i, 0, Val::Map { node: id, layout: Layout::Tokens });
        Ok(())
    }

    // ----- the end -----

    fn finish(mut self, out_name: &str, input_size: Option<(usize, usize)>) -> Result<Imported> {
        let (out, layout) = match self.values.get(out_name).cloned() {
            Some(Val::Map { node, layout }) => (node, layout),
            Some(Val::Const(_)) => return fail!(Weights, "the model's output '{out_name}' is a constant: it does not depend on the image"),
            None => return fail!(Weights, "the model's output '{out_name}' is produced by no node"),
        };
        let last = self.onnx.len() - 1;
        let dims = self.dims_of(out, &layout);
        let out = if self.flat[out] {
            out
        } else if dims.len() == 2 || (dims.len() == 4 && dims[2] * dims[3] == 1) {
            let l = if dims.len() == 2 { layout } else { Layout::Nchw };
            self.as_flat(last, out, &l)?
        } else {
            return fail!(Weights, "the model's output '{out_name}' has shape {dims:?}; a classifier outputs [1, classes]");
        };
        // Keep only what the output reads.
        let mut keep = vec![false; self.graph.nodes.len()];
        keep[out] = true;
        keep[0] = true;
        for id in (0..=out).rev() {
            if keep[id] {
                for &j in &self.graph.nodes[id].inputs {
                    keep[j] = true;
                }
            }
        }
        let mut remap = vec![usize::MAX; self.graph.nodes.len()];
        let mut nodes = Vec::new();
        for (id, node) in std::mem::take(&mut self.graph.nodes).into_iter().enumerate() {
            if keep[id] {
                remap[id] = nodes.len();
                let mut node = node;
                node.inputs.iter_mut().for_each(|j| *j = remap[*j]);
                nodes.push(node);
            }
        }
        // Aliases: tensor names and folded modules first, then module paths innermost to outermost;
        // never another node's name.
        let taken: HashSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
        let add = |nodes: &mut Vec<Node>, id: NodeId, a: &str| {
            if remap[id] == usize::MAX || taken.contains(a) {
                return;
            }
            let n = &mut nodes[remap[id]];
            if n.name != a && !n.aliases.iter().any(|x| x == a) {
                n.aliases.push(a.to_string());
            }
        };
        for (id, a) in &self.aliases {
            add(&mut nodes, *id, a);
        }
        let mut modules: Vec<(&String, &NodeId)> = self.last_in.iter().collect();
        modules.sort_by_key(|(p, _)| (std::cmp::Reverse(p.matches('.').count()), p.as_str()));
        let mut prefix_alias: HashMap<NodeId, String> = HashMap::new();
        for (p, &id) in modules {
            add(&mut nodes, id, p);
            if remap[id] != usize::MAX && !taken.contains(p) {
                prefix_alias.insert(remap[id], p.clone());
            }
        }
        let num_classes = self.shapes[out].0;
        let graph = Graph { nodes, num_classes };
        let default_layer = default_layer(&graph).map(|id| prefix_alias.get(&id).cloned().unwrap_or_else(|| graph.nodes[id].name.clone()));
        Ok(Imported { graph, input_size, default_layer, warnings: self.warnings })
    }
}

/// The scalar value of a constant tensor (an initializer or a Constant node's output).
fn scalar_of(name: &str, inits: &HashMap<&str, &TensorProto>, external: Option<&[u8]>, onnx: &[NodeProto], producer: &HashMap<&str, usize>) -> Option<f32> {
    if let Some(t) = inits.get(name) {
        let n = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d));
        return (n == Some(1)).then(|| tensors::decode(t, external, &mut Budget::default()).ok()?.scalar_f32()).flatten();
    }
    let n = &onnx[*producer.get(name)?];
    if n.op_type != "Constant" {
        return None;
    }
    let a = n.attribute.first()?;
    match a.name.as_str() {
        "value" => tensors::decode(a.t.as_ref()?, None, &mut Budget::default()).ok()?.scalar_f32(),
        "value_float" => Some(a.f),
        _ => None,
    }
}

/// The natural Grad-CAM layer: the map the last global pooling reads; in a network without one
/// (AlexNet, VGG), the map before the pools that precede the classifier's flatten (the last conv
/// block at its full resolution, as the Grad-CAM paper takes for VGG).
fn default_layer(graph: &Graph) -> Option<NodeId> {
    // A Vision Transformer: the norm before the last self-attention (the last block's ln_1).
    if let Some(a) = graph.nodes.iter().rposition(|n| matches!(n.op, Op::SelfAttention(_))) {
        let x = graph.nodes[a].inputs[0];
        if x > 0 {
            return Some(x);
        }
    }
    if let Some(id) = graph.pooled_layer() {
        return Some(id);
    }
    let flatten = graph.nodes.iter().position(|n| matches!(n.op, Op::Flatten))?;
    let mut id = graph.nodes[flatten].inputs[0];
    // Pools between the last feature map and the flatten are no target: VGG's final max pool,
    // and its `(7, 7)` adaptive pool, which at small inputs only repeats a 1x1 or 1x2 map.
    while matches!(graph.nodes[id].op, Op::MaxPool(_) | Op::AvgPool(_) | Op::AdaptiveAvgPool { .. }) {
        id = graph.nodes[id].inputs[0];
    }
    (id > 0).then_some(id)
}

fn input_dims(input: &super::proto::ValueInfoProto) -> Result<Vec<Option<usize>>> {
    use candle_onnx::onnx::tensor_shape_proto::dimension::Value as Dim;
    use candle_onnx::onnx::type_proto::Value as Ty;
    let Some(Ty::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return fail!(Weights, "the model's input '{}' is not a tensor", input.name);
    };
    if !matches!(t.elem_type, 1 | 10 | 11 | 16) {
        return fail!(Weights, "the model's input '{}' has type {}; an image classifier takes floats", input.name, tensors::dtype_name(t.elem_type));
    }
    let Some(shape) = &t.shape else { return fail!(Weights, "the model's input '{}' has no shape; re-export with a fixed rank", input.name) };
    Ok(shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Dim::DimValue(v)) if v > 0 => Some(v as usize),
            _ => None,
        })
        .collect())
}

/// `Shape` with its optional `start` / `end` attributes.
fn shape_slice(n: &NodeProto, dims: Vec<i64>) -> Const {
    let r = dims.len() as i64;
    let norm = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (norm(attr_i(n, "start", 0)), norm(attr_i(n, "end", r)));
    let part: Vec<i64> = if s < e { dims[s..e].to_vec() } else { vec![] };
    Const::i64(vec![part.len()], part)
}

fn squeeze_dims(dims: &[usize], axes: &[i64], unsqueeze: bool) -> Option<Vec<usize>> {
    if unsqueeze {
        let r = dims.len() + axes.len();
        let mut ax: Vec<usize> = axes.iter().map(|&a| axis(a, r)).collect::<Option<_>>()?;
        ax.sort_unstable();
        let mut out = Vec::with_capacity(r);
        let mut src = dims.iter();
        for k in 0..r {
            out.push(if ax.contains(&k) { 1 } else { *src.next()? });
        }
        Some(out)
    } else if axes.is_empty() {
        Some(dims.iter().copied().filter(|&d| d != 1).collect())
    } else {
        let ax: Vec<usize> = axes.iter().map(|&a| axis(a, dims.len())).collect::<Option<_>>()?;
        if ax.iter().any(|&a| dims[a] != 1) {
            return None;
        }
        Some(dims.iter().enumerate().filter(|(k, _)| !ax.contains(k)).map(|(_, &d)| d).collect())
    }
}

fn erf(x: f32) -> f32 {
    // Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7): only for folding constants.
    let t = 1.0 / (1.0 + 0.3275911 * x.abs() as f64);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * (-(x as f64) * x as f64).exp();
    (y as f32).copysign(x)
}

/// Numpy-style broadcasting of two small constants.
/// The element count of a shape, `None` when it overflows (dims an ONNX file claims).
fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

fn broadcast(a: &Const, b: &Const, op: &str) -> Option<Const> {
    let r = a.dims.len().max(b.dims.len());
    let pad = |d: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, r - d.len()).chain(d.iter().copied()).collect() };
    let (da, db) = (pad(&a.dims), pad(&b.dims));
    let dims: Vec<usize> = da
        .iter()
        .zip(&db)
        .map(|(&x, &y)| {
            if x == y || y == 1 {
                Some(x)
            } else if x == 1 {
                Some(y)
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    let numel = checked_numel(&dims).filter(|&n| n <= 1 << 24)?;
    let index = |d: &[usize], flat: usize| -> usize {
        let mut rem = flat;
        let mut idx = 0;
        let mut stride = 1;
        for k in (0..r).rev() {
            let coord = rem % dims[k];
            rem /= dims[k];
            if d[k] != 1 {
                idx += coord * stride;
            }
            stride *= d[k];
        }
        idx
    };
    if a.is_int() && b.is_int() {
        let (va, vb) = (a.to_i64()?, b.to_i64()?);
        let f = |x: i64, y: i64| -> Option<i64> {
            Some(match op {
                "Add" => x.checked_add(y)?,
                "Sub" => x.checked_sub(y)?,
                "Mul" => x.checked_mul(y)?,
                "Div" => x.checked_div(y)?,
                "Mod" => x.checked_rem_euclid(y)?,
                "Max" => x.max(y),
                "Min" => x.min(y),
                "Pow" => x.checked_pow(u32::try_from(y).ok()?)?,
                "Equal" => (x == y) as i64,
                "Less" => (x < y) as i64,
                "Greater" => (x > y) as i64,
                _ => return None,
            })
        };
        let v: Vec<i64> = (0..numel).map(|k| f(va[index(&da, k)], vb[index(&db, k)])).collect::<Option<_>>()?;
        return Some(Const::i64(dims.clone(), v));
    }
    let (va, vb) = (a.to_f32(), b.to_f32());
    let f = |x: f32, y: f32| -> f32 {
        match op {
            "Add" => x + y,
            "Sub" => x - y,
            "Mul" => x * y,
            "Div" => x / y,
            "Pow" => x.powf(y),
            "Max" => x.max(y),
            "Min" => x.min(y),
            "Mod" => x % y,
            "Equal" => (x == y) as i32 as f32,
            "Less" => (x < y) as i32 as f32,
            _ => (x > y) as i32 as f32,
        }
    };
    let v: Vec<f32> = (0..numel).map(|k| f(va[index(&da, k)], vb[index(&db, k)])).collect();
    Some(Const::f32(dims.clone(), v))
}

fn concat_consts(parts: &[Rc<Const>], ax: i64) -> Option<Const> {
    let first = parts.first()?;
    let r = first.dims.len();
    let ax = axis(ax, r)?;
    let outer: usize = first.dims[..ax].iter().product();
    let mut dims = first.dims.clone();
    dims[ax] = parts.iter().map(|p| p.dims.get(ax).copied().unwrap_or(0)).sum();
    for p in parts {
        if p.dims.len() != r || (0..r).any(|k| k != ax && p.dims[k] != first.dims[k]) {
            return None;
        }
    }
    let ints = parts.iter().all(|p| p.is_int());
    let chunk = |p: &Const| -> usize { p.dims[ax..].iter().product() };
    if ints {
        let vals: Vec<Vec<i64>> = parts.iter().map(|p| p.to_i64()).collect::<Option<_>>()?;
        let mut out = Vec::new();
        for o in 0..outer {
            for (p, v) in parts.iter().zip(&vals) {
                let c = chunk(p);
                out.extend_from_slice(&v[o * c..(o + 1) * c]);
            }
        }
        Some(Const::i64(dims, out))
    } else {
        let vals: Vec<Vec<f32>> = parts.iter().map(|p| p.to_f32()).collect();
        let mut out = Vec::new();
        for o in 0..outer {
            for (p, v) in parts.iter().zip(&vals) {
                let c = chunk(p);
                out.extend_from_slice(&v[o * c..(o + 1) * c]);
            }
        }
        Some(Const::f32(dims, out))
    }
}

fn gather_const(x: &Const, idx: &Const, ax: i64) -> Option<Const> {
    let ax = axis(ax, x.dims.len())?;
    let n = x.dims[ax] as i64;
    let picks: Vec<usize> = idx.to_i64()?.iter().map(|&j| if j < 0 { j + n } else { j }).map(|j| (0..n).contains(&j).then_some(j as usize)).collect::<Option<_>>()?;
    let outer: usize = x.dims[..ax].iter().product();
    let inner: usize = x.dims[ax + 1..].iter().product();
    let mut dims: Vec<usize> = x.dims[..ax].to_vec();
    dims.extend_from_slice(&idx.dims);
    dims.extend_from_slice(&x.dims[ax + 1..]);
    let at = |o: usize, j: usize| (o * x.dims[ax] + j) * inner;
    let order: Vec<usize> = (0..outer).flat_map(|o| picks.iter().flat_map(move |&j| at(o, j)..at(o, j) + inner)).collect();
    Some(match &x.data {
        Data::F32(v) => Const::f32(dims, order.iter().map(|&k| v[k]).collect()),
        Data::I64(v) => Const::i64(dims, order.iter().map(|&k| v[k]).collect()),
    })
}

/// ONNX Slice on a constant: any axes, any non-zero steps.
fn slice_const(x: &Const, starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]) -> Option<Const> {
    let r = x.dims.len();
    if starts.len() != ends.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return None;
    }
    // Per axis: the source indices it keeps.
    let mut keep: Vec<Vec<usize>> = x.dims.iter().map(|&d| (0..d).collect()).collect();
    for k in 0..starts.len() {
        let ax = axis(axes[k], r)?;
        let (d, step) = (x.dims[ax] as i64, steps[k]);
        if step == 0 {
            return None;
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (s, e) = (norm(starts[k]), norm(ends[k]));
        let picks: Vec<usize> = if step > 0 {
            let (s, e) = (s.clamp(0, d), e.clamp(0, d));
            (s..e).step_by(step as usize).map(|v| v as usize).collect()
        } else {
            let (s, e) = (s.clamp(-1, d - 1), e.clamp(-1, d - 1));
            let mut v = Vec::new();
            let mut i = s;
            while i > e {
                v.push(i as usize);
                i += step;
            }
            v
        };
        keep[ax] = picks;
    }
    let dims: Vec<usize> = keep.iter().map(Vec::len).collect();
    let numel: usize = dims.iter().product();
    let mut order = Vec::with_capacity(numel);
    for flat in 0..numel {
        let (mut rem, mut src, mut stride) = (flat, 0, 1);
        for a in (0..r).rev() {
            let coord = rem % dims[a];
            rem /= dims[a];
            src += keep[a][coord] * stride;
            stride *= x.dims[a];
        }
        order.push(src);
    }
    Some(match &x.data {
        Data::F32(v) => Const::f32(dims, order.iter().map(|&k| v[k]).collect()),
        Data::I64(v) => Const::i64(dims, order.iter().map(|&k| v[k]).collect()),
    })
}

/// A (planes, kh, kw) kernel with dilation (dh, dw) as the dense kernel it equals: each tap moved to
/// (i * dh, j * dw) of a ((kh - 1) * dh + 1) x ((kw - 1) * dw + 1) kernel of zeros.
fn dilate(weight: Vec<f32>, (planes, kh, kw): (usize, usize, usize), (dh, dw): (usize, usize)) -> Vec<f32> {
    if (dh, dw) == (1, 1) {
        return weight;
    }
    let (ekh, ekw) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
    let mut out = vec![0.0; planes * ekh * ekw];
    for (p, taps) in weight.chunks_exact(kh * kw).enumerate() {
        for (t, &v) in taps.iter().enumerate() {
            out[p * ekh * ekw + (t / kw) * dh * ekw + (t % kw) * dw] = v;
        }
    }
    out
}
