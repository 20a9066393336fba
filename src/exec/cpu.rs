//! The candle CPU executor: runs the graph with the custom ops of `candle_ops`, and lets candle's
//! autograd walk the backward. Runs natively and in wasm32 (single thread, SIMD).

use super::candle_ops::{AdaptiveAvgPoolOp, ConvOp, LinearOp, MaxPoolOp, ReluOp};
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

/// Where, if anywhere, the forward pass turns a value into a `Var` to differentiate against.
struct Run {
    var_at: Option<NodeId>,
    guided: bool,
}

/// One forward pass. Values are dropped after their last use; the part of the graph that descends
/// from the `Var` stays alive inside the returned logits, ready for any number of backward passes.
fn forward(graph: &Graph, input: Tensor, run: &Run) -> Result<(Tensor, Option<Var>)> {
    let last_use = graph.last_uses();
    let mut values: Vec<Option<Tensor>> = vec![None; graph.nodes.len()];
    let mut var = None;
    for (i, node) in graph.nodes.iter().enumerate() {
        let arg = |k: usize| -> Result<&Tensor> {
            values[node.inputs[k]].as_ref().ok_or_else(|| Error::Internal(format!("value of input {k} of '{}' was freed", node.name)))
        };
        let relu = |clamp| ReluOp { clamp, guided: run.guided };
        let mut out = match &node.op {
            Op::Input => input.clone(),
            Op::Conv(c) => arg(0)?.apply_op1(ConvOp(c.clone()))?,
            Op::Linear(l) => arg(0)?.apply_op1(LinearOp(l.clone()))?,
            Op::Relu => arg(0)?.apply_op1(relu(Clamp::Relu))?,
            Op::Relu6 => arg(0)?.apply_op1(relu(Clamp::Relu6))?,
            Op::MaxPool(m) => arg(0)?.apply_op1(MaxPoolOp(*m))?,
            Op::AdaptiveAvgPool { out_h, out_w } => arg(0)?.apply_op1(AdaptiveAvgPoolOp { out_h: *out_h, out_w: *out_w })?,
            Op::Flatten => arg(0)?.flatten_from(1)?,
            Op::Add => (arg(0)? + arg(1)?)?,
            Op::Concat => {
                let parts: Vec<&Tensor> = (0..node.inputs.len()).map(arg).collect::<Result<_>>()?;
                Tensor::cat(&parts, 1)?
            }
        };
        if run.var_at == Some(i) {
            let v = Var::from_tensor(&out)?;
            out = v.as_tensor().clone();
            var = Some(v);
        }
        for &j in &node.inputs {
            if last_use[j] == i {
                values[j] = None;
            }
        }
        values[i] = Some(out);
    }
    let logits = values.pop().flatten().ok_or_else(|| Error::Internal("graph has no output".into()))?;
    Ok((logits, var))
}

fn input_tensor(input: &FeatureMap) -> Result<Tensor> {
    Ok(Tensor::from_vec(input.data.clone(), (1, input.channels, input.height, input.width), &Device::Cpu)?)
}

fn to_feature_map(t: &Tensor) -> Result<FeatureMap> {
    let (_, c, h, w) = t.dims4()?;
    Ok(FeatureMap::new(c, h, w, t.flatten_all()?.to_vec1::<f32>()?))
}

/// d(target . logits)/d var.
fn gradient(logits: &Tensor, var: &Var, target: &[f32]) -> Result<FeatureMap> {
    let classes = logits.dim(1)?;
    if target.len() != classes {
        return fail!(Option, "the target weights have {} entries, the model has {classes} classes", target.len());
    }
    let t = Tensor::from_slice(target, (1, classes), &Device::Cpu)?;
    let score = logits.mul(&t)?.sum_all()?;
    let grads = score.backward()?;
    match grads.get(var.as_tensor()) {
        Some(g) => to_feature_map(g),
        // The target does not depend on this layer at all: its gradient is zero.
        None => to_feature_map(&var.as_tensor().zeros_like()?),
    }
}

impl Executor for CpuExecutor {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn start(&self, input: FeatureMap, layer: NodeId) -> Result<Box<dyn Pass>> {
        let x = input_tensor(&input)?;
        let (logits, var) = forward(&self.graph, x, &Run { var_at: Some(layer), guided: false })?;
        let var = var.ok_or_else(|| Error::Internal("target layer not reached".into()))?;
        if var.as_tensor().rank() != 4 {
            return fail!(Option, "layer '{}' is not a spatial layer (it has no H x W map); pick a conv, pool or block", self.graph.nodes[layer].name);
        }
        let activations = to_feature_map(var.as_tensor())?;
        let logits_vec = logits.flatten_all()?.to_vec1::<f32>()?;
        Ok(Box::new(CpuPass { graph: self.graph.clone(), input, logits, logits_vec, var, activations, input_passes: [None, None] }))
    }

    fn logits_batch(&self, inputs: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        let x = Tensor::from_slice(inputs, (n, 3, h, w), &Device::Cpu)?;
        let (logits, _) = forward(&self.graph, x, &Run { var_at: None, guided: false })?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }
}

pub struct CpuPass {
    graph: Arc<Graph>,
    input: FeatureMap,
    logits: Tensor,
    logits_vec: Vec<f32>,
    var: Var,
    activations: FeatureMap,
    /// Forward passes differentiable w.r.t. the input, built on first use: [plain, guided].
    input_passes: [Option<(Tensor, Var)>; 2],
}

impl Pass for CpuPass {
    fn logits(&self) -> &[f32] {
        &self.logits_vec
    }

    fn activations(&self) -> &FeatureMap {
        &self.activations
    }

    fn layer_gradient(&mut self, target: &[f32]) -> Result<FeatureMap> {
        gradient(&self.logits, &self.var, target)
    }

    fn input_gradient(&mut self, target: &[f32], guided: bool) -> Result<FeatureMap> {
        let slot = &mut self.input_passes[guided as usize];
        if slot.is_none() {
            let (logits, var) = forward(&self.graph, input_tensor(&self.input)?, &Run { var_at: Some(0), guided })?;
            *slot = Some((logits, var.ok_or_else(|| Error::Internal("input not reached".into()))?));
        }
        let (logits, var) = slot.as_ref().ok_or_else(|| Error::Internal("input pass missing".into()))?;
        gradient(logits, var, target)
    }
}
