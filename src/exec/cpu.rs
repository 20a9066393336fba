//! The candle CPU executor: runs the graph with the custom ops of `candle_ops` and lets candle's
//! autograd walk the backward. Natively and in wasm32 (single thread, SIMD).
//!
//! One forward pass serves every method. It is recorded in two segments split at the target layer:
//! - segment B (after the layer) starts from `Var`s holding the values it reads from before the
//!   layer (its frontier: the layer itself, and any skip connection around it), so Grad-CAM's
//!   backward stops at the layer: a backward of segment B only;
//! - segment A (input to layer) is recorded from an input `Var`; an input gradient is a backward of
//!   B, then of A seeded with B's frontier gradients.
//!
//! Guided backpropagation flips the pass's `GuidedFlag` around the same two walks. A conv whose only
//! reader is a ReLU/ReLU6 runs fused with it. Only input gradients exist, never weight gradients.

use super::candle_ops::{AdaptiveAvgPoolOp, ConvOp, GuidedFlag, LinearOp, MaxPoolOp, ReluOp};
use super::{Executor, Pass};
use crate::error::{Error, Result};
use crate::feature_map::FeatureMap;
use crate::fail;
use crate::graph::{Graph, NodeId, Op};
use crate::kernels::Clamp;
use candle_core::{Device, Tensor, Var};
use std::sync::Arc;

pub struct CpuExecutor {
    graph: Arc<Graph>,
}

impl CpuExecutor {
    pub fn new(graph: Arc<Graph>) -> Self {
        CpuExecutor { graph }
    }
}

fn relu_clamp(op: &Op) -> Option<Clamp> {
    match op {
        Op::Relu => Some(Clamp::Relu),
        Op::Relu6 => Some(Clamp::Relu6),
        _ => None,
    }
}

/// For each conv node, the ReLU/ReLU6 node it runs fused with: its only reader, unless the conv's own
/// (pre-activation) output is the target layer.
fn fusions(graph: &Graph, layer: Option<NodeId>) -> Vec<Option<NodeId>> {
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
            let ok = matches!(graph.nodes[i].op, Op::Conv(_)) && readers[i] == 1 && layer != Some(i) && relu_clamp(&graph.nodes[r].op).is_some();
            ok.then_some(r)
        })
        .collect()
}

/// A recorded forward pass (see the module comment).
struct Recorded {
    logits: Tensor,
    input: Var,
    /// Segment B's frontier: (node, its value in segment A, the `Var` segment B read instead).
    frontier: Vec<(NodeId, Tensor, Var)>,
    /// The target layer's value.
    layer: Tensor,
}

/// One forward pass. With `layer`, the input is a `Var` and the pass is recorded for backward walks;
/// without, nothing is recorded (Score-CAM's batches). Values are dropped after their last use.
fn forward(graph: &Graph, input: Tensor, layer: Option<NodeId>, guided: &GuidedFlag) -> Result<(Tensor, Option<Recorded>)> {
    let last_use = graph.last_uses();
    let fused = fusions(graph, layer);
    let mut values: Vec<Option<Tensor>> = vec![None; graph.nodes.len()];
    let input_var = match layer {
        Some(_) => Some(Var::from_tensor(&input)?),
        None => None,
    };
    let mut frontier: Vec<(NodeId, Tensor, Var)> = Vec::new();
    let mut layer_value = None;
    for (i, node) in graph.nodes.iter().enumerate() {
        // Segment B reads values from before the layer through frontier `Var`s.
        let mut args = Vec::with_capacity(node.inputs.len());
        for &j in &node.inputs {
            let v = values[j].as_ref().ok_or_else(|| Error::Internal(format!("an input of '{}' was freed", node.name)))?;
            let crosses = layer.is_some_and(|l| j <= l && i > l);
            args.push(if crosses {
                match frontier.iter().find(|f| f.0 == j) {
                    Some(f) => f.2.as_tensor().clone(),
                    None => {
                        let var = Var::from_tensor(&v.detach())?;
                        frontier.push((j, v.clone(), var.clone()));
                        var.as_tensor().clone()
                    }
                }
            } else {
                v.clone()
            });
        }
        let arg = |k: usize| -> Result<&Tensor> { args.get(k).ok_or_else(|| Error::Internal(format!("'{}' lacks input {k}", node.name))) };
        let out = match &node.op {
            Op::Input => input_var.as_ref().map(|v| v.as_tensor().clone()).unwrap_or_else(|| input.clone()),
            Op::Conv(c) => match fused[i].and_then(|r| relu_clamp(&graph.nodes[r].op)) {
                Some(clamp) => arg(0)?.apply_op1(ConvOp::fused(c.clone(), clamp, guided.clone()))?,
                None => arg(0)?.apply_op1(ConvOp::new(c.clone()))?,
            },
            // A ReLU fused into the conv before it passes the conv's (already clamped) output on.
            Op::Relu | Op::Relu6 if fused[node.inputs[0]] == Some(i) => arg(0)?.clone(),
            Op::Relu => arg(0)?.apply_op1(ReluOp { clamp: Clamp::Relu, guided: guided.clone() })?,
            Op::Relu6 => arg(0)?.apply_op1(ReluOp { clamp: Clamp::Relu6, guided: guided.clone() })?,
            Op::Linear(l) => arg(0)?.apply_op1(LinearOp(l.clone()))?,
            Op::MaxPool(m) => arg(0)?.apply_op1(MaxPoolOp(*m))?,
            Op::AdaptiveAvgPool { out_h, out_w } => arg(0)?.apply_op1(AdaptiveAvgPoolOp { out_h: *out_h, out_w: *out_w })?,
            Op::Flatten => arg(0)?.flatten_from(1)?,
            Op::Add => (arg(0)? + arg(1)?)?,
            Op::Concat => Tensor::cat(&args.iter().collect::<Vec<_>>(), 1)?,
        };
        if layer == Some(i) {
            layer_value = Some(out.clone());
        }
        for &j in &node.inputs {
            if last_use[j] == i {
                values[j] = None;
            }
        }
        values[i] = Some(out);
    }
    let logits = values.pop().flatten().ok_or_else(|| Error::Internal("graph has no output".into()))?;
    let recorded = match (input_var, layer_value) {
        (Some(input), Some(layer)) => Some(Recorded { logits: logits.clone(), input, frontier, layer }),
        (Some(_), None) => return Err(Error::Internal("the target layer was not reached".into())),
        _ => None,
    };
    Ok((logits, recorded))
}

fn to_feature_map(t: &Tensor) -> Result<FeatureMap> {
    let (_, c, h, w) = t.dims4()?;
    Ok(FeatureMap::new(c, h, w, t.flatten_all()?.to_vec1::<f32>()?))
}

impl Executor for CpuExecutor {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn start(&self, input: FeatureMap, layer: NodeId) -> Result<Box<dyn Pass>> {
        let x = Tensor::from_vec(input.data, (1, input.channels, input.height, input.width), &Device::Cpu)?;
        let guided = GuidedFlag::default();
        let (logits, recorded) = forward(&self.graph, x, Some(layer), &guided)?;
        let recorded = recorded.ok_or_else(|| Error::Internal("the forward pass was not recorded".into()))?;
        if recorded.layer.rank() != 4 {
            return fail!(Option, "layer '{}' is not a spatial layer (it has no H x W map); pick a conv, pool or block", self.graph.nodes[layer].name);
        }
        let activations = to_feature_map(&recorded.layer)?;
        let logits_vec = logits.flatten_all()?.to_vec1::<f32>()?;
        Ok(Box::new(CpuPass { layer, recorded, guided, logits_vec, activations }))
    }

    fn logits_batch(&self, inputs: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        let x = Tensor::from_slice(inputs, (n, 3, h, w), &Device::Cpu)?;
        let (logits, _) = forward(&self.graph, x, None, &GuidedFlag::default())?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }
}

pub struct CpuPass {
    layer: NodeId,
    recorded: Recorded,
    guided: GuidedFlag,
    logits_vec: Vec<f32>,
    activations: FeatureMap,
}

impl CpuPass {
    /// Backward of segment B: the gradient of sum_c target[c] y_c at each frontier node (None where
    /// the score does not depend on it).
    fn frontier_gradients(&self, target: &[f32]) -> Result<Vec<Option<Tensor>>> {
        let logits = &self.recorded.logits;
        let classes = logits.dim(1)?;
        if target.len() != classes {
            return fail!(Option, "the target weights have {} entries, the model has {classes} classes", target.len());
        }
        let t = Tensor::from_slice(target, (1, classes), &Device::Cpu)?;
        let grads = logits.mul(&t)?.sum_all()?.backward()?;
        Ok(self.recorded.frontier.iter().map(|(_, _, var)| grads.get(var.as_tensor()).cloned()).collect())
    }

    fn input_gradient_now(&self, target: &[f32]) -> Result<FeatureMap> {
        let gb = self.frontier_gradients(target)?;
        // Backward of segment A, seeded with B's frontier gradients: d/dx sum_f <value_f(x), g_f>.
        let mut seed: Option<Tensor> = None;
        for ((_, value, _), g) in self.recorded.frontier.iter().zip(gb) {
            if let Some(g) = g {
                let term = value.mul(&g.detach())?.sum_all()?;
                seed = Some(match seed {
                    Some(s) => (s + term)?,
                    None => term,
                });
            }
        }
        let input = self.recorded.input.as_tensor();
        let grad = match seed {
            Some(seed) => seed.backward()?.get(input).cloned(),
            None => None,
        };
        to_feature_map(&grad.map(Ok).unwrap_or_else(|| input.zeros_like())?)
    }
}

impl Pass for CpuPass {
    fn logits(&self) -> &[f32] {
        &self.logits_vec
    }

    fn activations(&self) -> &FeatureMap {
        &self.activations
    }

    fn layer_gradient(&mut self, target: &[f32]) -> Result<FeatureMap> {
        self.guided.set(false);
        let gb = self.frontier_gradients(target)?;
        let at_layer = self.recorded.frontier.iter().zip(gb).find(|((node, _, _), _)| *node == self.layer).and_then(|(_, g)| g);
        match at_layer {
            Some(g) => to_feature_map(&g),
            // The target does not depend on this layer at all: its gradient is zero.
            None => to_feature_map(&self.recorded.layer.zeros_like()?),
        }
    }

    fn input_gradient(&mut self, target: &[f32], guided: bool) -> Result<FeatureMap> {
        self.guided.set(guided);
        let result = self.input_gradient_now(target);
        self.guided.set(false);
        result
    }
}
