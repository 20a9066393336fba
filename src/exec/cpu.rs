//! The CPU executor: runs the graph on the plain kernels of `crate::kernels` and walks the backward
//! itself, natively and in wasm32 (single thread, SIMD).
//!
//! One forward pass keeps exactly what any later backward needs, never the activations themselves:
//! a byte mask per ReLU/ReLU6 (its output was in (0, 6)), the argmax of each max pool, the shape of
//! every value, and the target layer's activations. So Grad-CAM (backward down to the layer), a second
//! class, and the (guided) input gradient all reuse one forward; the guided rule only changes how a
//! mask is applied. A conv whose only reader is a ReLU/ReLU6 runs fused with it (bias and clamp in
//! the conv's epilogue). Only input gradients are computed, never weight gradients.
//! (`candle_ops` wraps the same kernels as candle custom ops; this executor no longer goes through
//! candle's autograd, which always recomputed and kept far more.)

use super::candle_ops::{conv_geom, conv_kind};
use super::{Executor, Pass};
use crate::error::{Error, Result};
use crate::feature_map::FeatureMap;
use crate::fail;
use crate::graph::{Graph, MaxPool, Node, NodeId, Op};
use crate::kernels::{self, Clamp, PoolGeom};
use std::sync::Arc;

pub mod profile {
    use crate::clock::now_ms;
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static TABLE: RefCell<BTreeMap<String, (f64, usize)>> = const { RefCell::new(BTreeMap::new()) };
    }

    pub fn enable(on: bool) {
        ON.with(|o| o.set(on));
    }

    pub fn enabled() -> bool {
        ON.with(|o| o.get())
    }

    /// Runs `f`, charging its time to `kind()` when profiling is on.
    pub fn time<T>(kind: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
        if !enabled() {
            return f();
        }
        let t = now_ms();
        let r = f();
        let dt = now_ms() - t;
        TABLE.with(|tb| {
            let mut tb = tb.borrow_mut();
            let e = tb.entry(kind()).or_insert((0.0, 0));
            e.0 += dt;
            e.1 += 1;
        });
        r
    }

    pub fn take() -> Vec<(String, f64, usize)> {
        TABLE.with(|tb| std::mem::take(&mut *tb.borrow_mut()).into_iter().map(|(k, (ms, n))| (k, ms, n)).collect())
    }
}

pub struct CpuExecutor {
    graph: Arc<Graph>,
}

impl CpuExecutor {
    pub fn new(graph: Arc<Graph>) -> Self {
        CpuExecutor { graph }
    }
}

/// Shape of one value: (n, c, h, w); a flat (n, f) value is (n, f, 1, 1) with `flat` set.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    flat: bool,
}

impl Dims {
    fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
}

/// What the backward of one node needs from its forward.
enum Saved {
    None,
    /// ReLU/ReLU6: 1 where the gradient passes.
    Mask(Vec<u8>),
    /// Max pool: the flat input index of each output's maximum.
    Argmax(Vec<u32>),
}

/// The result of one forward pass.
struct Forward {
    logits: Vec<f32>,
    dims: Vec<Dims>,
    saved: Vec<Saved>,
    activations: Option<FeatureMap>,
}

fn relu_clamp(op: &Op) -> Option<Clamp> {
    match op {
        Op::Relu => Some(Clamp::Relu),
        Op::Relu6 => Some(Clamp::Relu6),
        _ => None,
    }
}

fn pool_geom(m: &MaxPool, d: Dims) -> PoolGeom {
    PoolGeom { n: d.n, c: d.c, h: d.h, w: d.w, kh: m.kernel, kw: m.kernel, stride_h: m.stride, stride_w: m.stride, pad_h: m.padding, pad_w: m.padding, ceil_mode: m.ceil_mode }
}

/// For each conv node, the ReLU/ReLU6 node it runs fused with: its only reader, unless the conv
/// itself is the layer whose (pre-activation) output must be kept.
fn fusions(graph: &Graph, keep: Option<NodeId>) -> Vec<Option<NodeId>> {
    let mut readers = vec![0usize; graph.nodes.len()];
    let mut reader = vec![0; graph.nodes.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        for &j in &n.inputs {
            readers[j] += 1;
            reader[j] = i;
        }
    }
    (0..graph.nodes.len())
        .map(|i| {
            let r = reader[i];
            let ok = matches!(graph.nodes[i].op, Op::Conv(_)) && readers[i] == 1 && keep != Some(i) && relu_clamp(&graph.nodes[r].op).is_some();
            ok.then_some(r)
        })
        .collect()
}

/// The value of input `k` of `node`, borrowed.
fn get<'a>(values: &'a [Option<Vec<f32>>], dims: &[Dims], node: &Node, k: usize) -> Result<(&'a [f32], Dims)> {
    let j = node.inputs[k];
    values[j].as_deref().map(|v| (v, dims[j])).ok_or_else(|| Error::Internal(format!("value of input {k} of '{}' was freed", node.name)))
}

/// One forward pass of `n` images. With `record`, keeps the masks and argmaxes every backward needs
/// and the activations of `keep`.
fn forward(graph: &Graph, input: Vec<f32>, n: usize, h: usize, w: usize, keep: Option<NodeId>, record: bool) -> Result<Forward> {
    let count = graph.nodes.len();
    let last_use = graph.last_uses();
    let fused = fusions(graph, keep);
    let mut values: Vec<Option<Vec<f32>>> = vec![None; count];
    let mut dims = vec![Dims::default(); count];
    let mut saved: Vec<Saved> = (0..count).map(|_| Saved::None).collect();
    let mut activations = None;
    let mut input = Some(input);
    for i in 0..count {
        let node = &graph.nodes[i];
        // A ReLU fused into the conv before it: that conv already wrote this node's value.
        let skip = node.inputs.first().is_some_and(|&j| fused[j] == Some(i));
        if !skip {
            // The value of input k: moved out when this node is its only and last reader, else copied.
            let take = |values: &mut Vec<Option<Vec<f32>>>, k: usize| -> Result<(Vec<f32>, Dims)> {
                let j = node.inputs[k];
                let v = if last_use[j] == i && node.inputs.iter().filter(|&&x| x == j).count() == 1 { values[j].take() } else { values[j].clone() };
                let v = v.ok_or_else(|| Error::Internal(format!("value of input {k} of '{}' was freed", node.name)))?;
                Ok((v, dims[j]))
            };
            let kind = || match &node.op {
                Op::Conv(c) => conv_kind(c) + if fused[i].is_some() { "+act" } else { "" },
                op => op.kind().to_string(),
            };
            let (out, d): (Vec<f32>, Dims) = profile::time(kind, || -> Result<(Vec<f32>, Dims)> {
                Ok(match &node.op {
                    Op::Input => (input.take().ok_or_else(|| Error::Internal("two input nodes".into()))?, Dims { n, c: 3, h, w, flat: false }),
                    Op::Conv(c) => {
                        let (x, d) = get(&values, &dims, node, 0)?;
                        if d.flat || d.c != c.cin {
                            return fail!(Option, "conv '{}' expects {} channels, got {}", node.name, c.cin, d.c);
                        }
                        let g = conv_geom(c, d.n, d.h, d.w);
                        let act = fused[i].and_then(|r| relu_clamp(&graph.nodes[r].op));
                        let y = kernels::conv2d_forward_act(x, &c.weight, Some(&c.bias), &g, act);
                        (y, Dims { n: d.n, c: c.cout, h: g.out_h(), w: g.out_w(), flat: false })
                    }
                    Op::Linear(l) => {
                        let (x, d) = get(&values, &dims, node, 0)?;
                        if d.c * d.h * d.w != l.in_features {
                            return fail!(Option, "linear '{}' expects {} features, got {}", node.name, l.in_features, d.c * d.h * d.w);
                        }
                        let y = kernels::linear_forward(x, d.n, &l.weight, l.out_features, l.in_features, Some(&l.bias));
                        (y, Dims { n: d.n, c: l.out_features, h: 1, w: 1, flat: true })
                    }
                    Op::Relu | Op::Relu6 => {
                        let (mut x, d) = take(&mut values, 0)?;
                        kernels::clamp_in_place(&mut x, relu_clamp(&node.op).unwrap_or(Clamp::Relu));
                        (x, d)
                    }
                    Op::MaxPool(m) => {
                        let (x, d) = get(&values, &dims, node, 0)?;
                        let g = pool_geom(m, d);
                        let (y, am) = kernels::max_pool2d_forward_argmax(x, &g);
                        if record {
                            saved[i] = Saved::Argmax(am);
                        }
                        (y, Dims { h: g.out_h(), w: g.out_w(), ..d })
                    }
                    Op::AdaptiveAvgPool { out_h, out_w } => {
                        let (x, d) = get(&values, &dims, node, 0)?;
                        (kernels::adaptive_avg_pool2d_forward(x, d.n, d.c, d.h, d.w, *out_h, *out_w), Dims { h: *out_h, w: *out_w, ..d })
                    }
                    Op::Flatten => {
                        let (x, d) = take(&mut values, 0)?;
                        (x, Dims { n: d.n, c: d.c * d.h * d.w, h: 1, w: 1, flat: true })
                    }
                    Op::Add => {
                        let (mut a, d) = take(&mut values, 0)?;
                        let (b, db) = get(&values, &dims, node, 1)?;
                        if db.len() != d.len() {
                            return fail!(Option, "add '{}' of different shapes", node.name);
                        }
                        a.iter_mut().zip(b.iter()).for_each(|(x, y)| *x += y);
                        (a, d)
                    }
                    Op::Concat => {
                        let parts: Vec<(&[f32], Dims)> = (0..node.inputs.len()).map(|k| get(&values, &dims, node, k)).collect::<Result<_>>()?;
                        let d0 = parts.first().map(|p| p.1).ok_or_else(|| Error::Internal("empty concat".into()))?;
                        let c: usize = parts.iter().map(|p| p.1.c).sum();
                        let mut y = Vec::with_capacity(d0.n * c * d0.h * d0.w);
                        for b in 0..d0.n {
                            for (v, d) in &parts {
                                let len = d.c * d.h * d.w;
                                y.extend_from_slice(&v[b * len..(b + 1) * len]);
                            }
                        }
                        (y, Dims { c, ..d0 })
                    }
                })
            })?;
            // The value lands on this node, or on the ReLU fused into it.
            let at = fused[i].unwrap_or(i);
            dims[i] = d;
            dims[at] = d;
            for &j in &node.inputs {
                if last_use[j] == i {
                    values[j] = None;
                }
            }
            values[at] = Some(out);
        }
        if let (true, Some(c)) = (record, relu_clamp(&node.op)) {
            let y = values[i].as_ref().ok_or_else(|| Error::Internal("relu value missing".into()))?;
            saved[i] = Saved::Mask(profile::time(|| "mask".into(), || kernels::relu_mask(y, c)));
        }
        if keep == Some(i) {
            let d = dims[i];
            if !d.flat && d.n == 1 {
                let v = values[i].as_ref().ok_or_else(|| Error::Internal("kept value missing".into()))?;
                activations = Some(FeatureMap::new(d.c, d.h, d.w, v.clone()));
            }
        }
        if skip {
            for &j in &node.inputs {
                if last_use[j] == i {
                    values[j] = None;
                }
            }
        }
    }
    let logits = values.pop().flatten().ok_or_else(|| Error::Internal("graph has no output".into()))?;
    Ok(Forward { logits, dims, saved, activations })
}

/// d(target . logits)/d(value of `stop`), walking the graph backwards from the logits and only
/// through nodes that depend on `stop`. `guided` applies the guided rule at every ReLU/ReLU6.
fn backward(graph: &Graph, f: &Forward, target: &[f32], stop: NodeId, guided: bool) -> Result<Vec<f32>> {
    let count = graph.nodes.len();
    let out = count - 1;
    if target.len() != f.logits.len() {
        return fail!(Option, "the target weights have {} entries, the model has {} classes", target.len(), f.logits.len());
    }
    // Which nodes the gradient can flow through: those that read `stop`, directly or not.
    let mut live = vec![false; count];
    live[stop] = true;
    for i in stop + 1..count {
        live[i] = graph.nodes[i].inputs.iter().any(|&j| live[j]);
    }
    let mut grads: Vec<Option<Vec<f32>>> = vec![None; count];
    if live[out] {
        grads[out] = Some(target.to_vec());
    }
    let add_to = |grads: &mut Vec<Option<Vec<f32>>>, j: NodeId, g: Vec<f32>| {
        if !live[j] {
            return;
        }
        match &mut grads[j] {
            Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
            slot => *slot = Some(g),
        }
    };
    for i in (stop + 1..count).rev() {
        let Some(mut g) = grads[i].take() else { continue };
        let node = &graph.nodes[i];
        let din = |k: usize| f.dims[node.inputs[k]];
        let kind = || match &node.op {
            Op::Conv(c) => format!("bwd {}", conv_kind(c)),
            op => format!("bwd {}", op.kind()),
        };
        profile::time(kind, || -> Result<()> {
            match &node.op {
                Op::Input => {}
                Op::Conv(c) => {
                    let d = din(0);
                    let gx = kernels::conv2d_input_grad(&g, &c.weight, &conv_geom(c, d.n, d.h, d.w));
                    add_to(&mut grads, node.inputs[0], gx);
                }
                Op::Linear(l) => {
                    let gx = kernels::linear_input_grad(&g, din(0).n, &l.weight, l.out_features, l.in_features);
                    add_to(&mut grads, node.inputs[0], gx);
                }
                Op::Relu | Op::Relu6 => {
                    let Saved::Mask(m) = &f.saved[i] else { return Err(Error::Internal("relu mask missing".into())) };
                    kernels::mask_grad_in_place(&mut g, m, guided);
                    add_to(&mut grads, node.inputs[0], g);
                }
                Op::MaxPool(mp) => {
                    let Saved::Argmax(a) = &f.saved[i] else { return Err(Error::Internal("max pool argmax missing".into())) };
                    add_to(&mut grads, node.inputs[0], kernels::max_pool2d_input_grad_argmax(a, &g, &pool_geom(mp, din(0))));
                }
                Op::AdaptiveAvgPool { out_h, out_w } => {
                    let d = din(0);
                    add_to(&mut grads, node.inputs[0], kernels::adaptive_avg_pool2d_input_grad(&g, d.n, d.c, d.h, d.w, *out_h, *out_w));
                }
                Op::Flatten => add_to(&mut grads, node.inputs[0], g),
                Op::Add => {
                    let (a, b) = (node.inputs[0], node.inputs[1]);
                    if live[b] {
                        add_to(&mut grads, b, g.clone());
                    }
                    add_to(&mut grads, a, g);
                }
                Op::Concat => {
                    let n = f.dims[i].n;
                    let total = f.dims[i].len() / n.max(1);
                    let mut offset = 0;
                    for (k, &j) in node.inputs.iter().enumerate() {
                        let len = din(k).len() / n.max(1);
                        if live[j] {
                            let part: Vec<f32> = (0..n).flat_map(|b| g[b * total + offset..][..len].iter().copied()).collect();
                            add_to(&mut grads, j, part);
                        }
                        offset += len;
                    }
                }
            }
            Ok(())
        })?;
    }
    // None: the target does not depend on this layer at all, so its gradient is zero.
    Ok(grads[stop].take().unwrap_or_else(|| vec![0.0; f.dims[stop].len()]))
}

impl Executor for CpuExecutor {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn start(&self, input: FeatureMap, layer: NodeId) -> Result<Box<dyn Pass>> {
        let (h, w) = (input.height, input.width);
        if input.channels != 3 {
            return fail!(Input, "expected 3 input channels, got {}", input.channels);
        }
        let mut f = forward(&self.graph, input.data, 1, h, w, Some(layer), true)?;
        let Some(activations) = f.activations.take() else {
            return fail!(Option, "layer '{}' is not a spatial layer (it has no H x W map); pick a conv, pool or block", self.graph.nodes[layer].name);
        };
        Ok(Box::new(CpuPass { graph: self.graph.clone(), fwd: f, layer, activations }))
    }

    fn logits_batch(&self, inputs: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        Ok(forward(&self.graph, inputs.to_vec(), n, h, w, None, false)?.logits)
    }
}

pub struct CpuPass {
    graph: Arc<Graph>,
    fwd: Forward,
    layer: NodeId,
    activations: FeatureMap,
}

impl Pass for CpuPass {
    fn logits(&self) -> &[f32] {
        &self.fwd.logits
    }

    fn activations(&self) -> &FeatureMap {
        &self.activations
    }

    fn layer_gradient(&mut self, target: &[f32]) -> Result<FeatureMap> {
        let g = backward(&self.graph, &self.fwd, target, self.layer, false)?;
        let a = &self.activations;
        Ok(FeatureMap::new(a.channels, a.height, a.width, g))
    }

    fn input_gradient(&mut self, target: &[f32], guided: bool) -> Result<FeatureMap> {
        let d = self.fwd.dims[0];
        let g = backward(&self.graph, &self.fwd, target, 0, guided)?;
        Ok(FeatureMap::new(d.c, d.h, d.w, g))
    }
}
