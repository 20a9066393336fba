//! The candle CPU executor: runs the graph on candle tensors with the custom ops of `candle_ops`,
//! and walks the backward itself, node by node, with those ops' backward functions. Natively and in
//! wasm32 (single thread, SIMD).
//!
//! One forward pass serves every method. It runs as consecutive segments of nodes, each recorded (if
//! at all: every value it makes is kept) from the values it reads from earlier segments (its
//! inputs: the value before it, and any skip connection around its start). Backward walks chain the
//! segments: a walk of segment k, seeded with the gradients at its outputs, gives the gradients at
//! its inputs, which seed the walk of the segment that produced them. Within a walk each value and
//! gradient is dropped as soon as its node is done, and a node's first gradient is taken as it is,
//! not added into zeros (what candle's own autograd would do, holding its whole tape to the end).
//! - The last segment starts after the target layer: Grad-CAM's backward is a walk of it only, and
//!   its recording is always kept.
//! - The segment ending at the layer is recorded only when the method needs an input gradient; a
//!   later input gradient on a pass that did not record it records it then (from its inputs).
//! - Before it, checkpoint segments may hold the cheap high-resolution stem (`checkpoint_ends`):
//!   they run unrecorded, and each input-gradient walk records each again just before walking it,
//!   after the segments after it have been walked and dropped. This bounds the peak by the largest
//!   segment's walk, not the sum of all, for a share of a forward pass (`MAX_RECOMPUTE`, or all of
//!   it where memory needs that). The segment ending at the layer is then dropped after each walk
//!   too, so a second input gradient on the same pass records it again.
//!
//! Guided backpropagation and deconvolution set the pass's `RuleFlag` around their walks. A conv whose only reader
//! is a ReLU/ReLU6 runs fused with it. Only input gradients exist, never weight gradients.

use super::candle_ops::{self, ActOp, AdaptiveAvgPoolOp, AffineOp, AvgPoolOp, ChannelNormOp, ConvOp, LinearOp, MaxPoolOp, MulOp, ReluOp, RuleFlag, SelfAttentionOp};
use super::{Executor, Pass, ReluRule};
use crate::error::{Error, Result};
use crate::fail;
use crate::feature_map::FeatureMap;
use crate::graph::shapes::Chw;
use crate::graph::{Graph, NodeId, Op};
use crate::kernels::parallel::awake;
use crate::kernels::tuning::{scoped, Tuning};
use crate::kernels::{Clamp, KeepBudget, Kept};
use candle_core::{CustomOp1, CustomOp2, Device, Tensor};
use std::ops::Range;
use std::sync::Arc;

pub struct CpuExecutor {
    graph: Arc<Graph>,
    checkpoint: Checkpoint,
    kept: Arc<[Option<Arc<Kept>>]>,
    kept_budget: Arc<KeepBudget>,
    tuning: Tuning,
}

/// What the kept transformed weights of a model's convs ([`Kept`]) may take, in multiples of its
/// weights' f32 bytes: ResNet-18 keeps 69 MiB (1.55x: F(4x4) in layers 1-2, F(2x2) in layers 3-4),
/// and its convs take the budget in the order they first run, so a budget that fits only part of
/// this leaves layer4, the last and the largest, to transform its U on every call.
const KEPT_PER_WEIGHT_BYTE: f64 = 1.75;

/// Where the checkpoint segments of a pass end (see the module comment).
#[derive(Clone, Debug, PartialEq)]
pub enum Checkpoint {
    /// Chosen by bytes for each pass (`checkpoint_ends`).
    Auto,
    /// None: the segment ending at the layer starts at the input.
    Off,
    /// After each of these nodes (sorted) that lies before the target layer; for tests.
    After(Vec<NodeId>),
}

impl CpuExecutor {
    pub fn new(graph: Arc<Graph>) -> Self {
        let budget = KeepBudget::new((KEPT_PER_WEIGHT_BYTE * (graph.parameter_count() * size_of::<f32>()) as f64) as usize);
        let kept = graph.nodes.iter().map(|n| matches!(n.op, Op::Conv(_)).then(|| Arc::new(Kept::new(budget.clone())))).collect();
        CpuExecutor { graph, checkpoint: Checkpoint::Auto, kept, kept_budget: budget, tuning: Tuning::DEFAULT }
    }

    /// The kernels' switches this executor runs with (A/B timings, accuracy comparisons).
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }

    pub fn with_checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        self.checkpoint = checkpoint;
        self
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

/// Runs nodes of one graph for one target layer: what a pass needs to run (or re-run) any segment.
struct Runner {
    graph: Arc<Graph>,
    kept: Arc<[Option<Arc<Kept>>]>,
    last_use: Vec<NodeId>,
    fused: Vec<Option<NodeId>>,
    rule: RuleFlag,
    tuning: Tuning,
}

/// A run of consecutive nodes, recorded (or not). See the module comment.
struct Segment {
    nodes: Range<NodeId>,
    /// The values it reads from before `nodes`.
    inputs: Vec<(NodeId, Tensor)>,
    /// Its recording: the value of each of its nodes, which the walk back through it reads.
    recorded: Option<Vec<(NodeId, Tensor)>>,
    /// Whether the recording is kept after an input-gradient walk (else the next walk records again).
    keep: bool,
}

impl Runner {
    fn new(graph: Arc<Graph>, kept: Arc<[Option<Arc<Kept>>]>, layer: Option<NodeId>, tuning: Tuning) -> Runner {
        let (last_use, fused) = (graph.last_uses(), fusions(&graph, layer));
        Runner { graph, kept, last_use, fused, rule: RuleFlag::default(), tuning }
    }

    fn node(&self, i: NodeId, args: &[Tensor]) -> Result<Tensor> {
        let node = &self.graph.nodes[i];
        let arg = |k: usize| -> Result<&Tensor> { args.get(k).ok_or_else(|| Error::Internal(format!("'{}' lacks input {k}", node.name))) };
        let rule = &self.rule;
        Ok(match &node.op {
            Op::Input => return Err(Error::Internal("the input node is not run".into())),
            Op::Conv(c) => arg(0)?.apply_op1(self.conv_op(i, c))?,
            // A ReLU fused into the conv before it passes the conv's (already clamped) output on.
            Op::Relu | Op::Relu6 if self.fused[node.inputs[0]] == Some(i) => arg(0)?.clone(),
            Op::Relu => arg(0)?.apply_op1(ReluOp { clamp: Clamp::Relu, rule: rule.clone() })?,
            Op::Relu6 => arg(0)?.apply_op1(ReluOp { clamp: Clamp::Relu6, rule: rule.clone() })?,
            Op::Linear(l) => arg(0)?.apply_op1(LinearOp(l.clone()))?,
            Op::MaxPool(m) => arg(0)?.apply_op1(MaxPoolOp(*m))?,
            Op::AdaptiveAvgPool { out_h, out_w } => arg(0)?.apply_op1(AdaptiveAvgPoolOp { out_h: *out_h, out_w: *out_w })?,
            Op::Flatten => arg(0)?.flatten_from(1)?,
            Op::Add => candle_ops::add(arg(0)?, arg(1)?)?,
            Op::Concat => Tensor::cat(&args.iter().collect::<Vec<_>>(), 1)?,
            Op::Act(a) => arg(0)?.apply_op1(ActOp(*a))?,
            Op::AvgPool(p) => arg(0)?.apply_op1(AvgPoolOp(*p))?,
            Op::Affine(a) => arg(0)?.apply_op1(AffineOp(a.clone()))?,
            Op::ChannelNorm(n) => arg(0)?.apply_op1(ChannelNormOp(n.clone()))?,
            Op::Mul => arg(0)?.apply_op2(arg(1)?, MulOp)?,
            Op::Slice { start, end } => arg(0)?.narrow(1, *start, end - start)?.contiguous()?,
            Op::ChannelShuffle { groups } => {
                let x = arg(0)?;
                let (n, c, h, w) = x.dims4()?;
                x.reshape((n, *groups, c / groups, h * w))?.transpose(1, 2)?.contiguous()?.reshape((n, c, h, w))?
            }
            Op::SelfAttention(a) => arg(0)?.contiguous()?.apply_op1(SelfAttentionOp(a.clone()))?,
            Op::Tokens => {
                let x = arg(0)?;
                let (n, c, h, w) = x.dims4()?;
                x.reshape((n, c, 1, h * w))?
            }
            Op::PrependToken(token) => {
                let x = arg(0)?;
                let (n, c, _, _) = x.dims4()?;
                let token = Tensor::from_slice(token.as_slice(), (1, c, 1, 1), x.device())?.broadcast_as((n, c, 1, 1))?.contiguous()?;
                Tensor::cat(&[&token, x], 3)?
            }
            Op::AddPositional(p) => arg(0)?.broadcast_add(&Tensor::from_slice(&p.data, (1, p.channels, 1, p.tokens), &Device::Cpu)?)?,
            Op::ClassToken => arg(0)?.narrow(3, 0, 1)?.contiguous()?,
        })
    }

    /// The conv of node `i`, fused with the ReLU that reads it and keeping its transformed weights.
    fn conv_op(&self, i: NodeId, c: &Arc<crate::graph::Conv>) -> ConvOp {
        let op = match self.fused[i].and_then(|r| relu_clamp(&self.graph.nodes[r].op)) {
            Some(clamp) => ConvOp::fused(c.clone(), clamp, self.rule.clone()),
            None => ConvOp::new(c.clone()),
        };
        match &self.kept[i] {
            Some(kept) => op.keeping(kept.clone()),
            None => op,
        }
    }

    /// The gradients at the inputs of node `i` (`None` where an input gets none), from `g`, the
    /// gradient at its output `out`, and its input values `args`.
    fn backward(&self, i: NodeId, args: &[Tensor], out: &Tensor, g: Tensor) -> Result<Vec<Option<Tensor>>> {
        let node = &self.graph.nodes[i];
        let arg = |k: usize| -> Result<&Tensor> { args.get(k).ok_or_else(|| Error::Internal(format!("'{}' lacks input {k}", node.name))) };
        let one = |t: Option<Tensor>| Ok(vec![t]);
        let x = || arg(0);
        match &node.op {
            Op::Input => Ok(vec![]),
            Op::Conv(c) => one(self.conv_op(i, c).bwd(x()?, out, &g)?),
            // The conv before a fused ReLU applies its mask.
            Op::Relu | Op::Relu6 if self.fused[node.inputs[0]] == Some(i) => one(Some(g)),
            Op::Relu => one(ReluOp { clamp: Clamp::Relu, rule: self.rule.clone() }.bwd(x()?, out, &g)?),
            Op::Relu6 => one(ReluOp { clamp: Clamp::Relu6, rule: self.rule.clone() }.bwd(x()?, out, &g)?),
            Op::Linear(l) => one(LinearOp(l.clone()).bwd(x()?, out, &g)?),
            Op::MaxPool(m) => one(MaxPoolOp(*m).bwd(x()?, out, &g)?),
            Op::AdaptiveAvgPool { out_h, out_w } => one(AdaptiveAvgPoolOp { out_h: *out_h, out_w: *out_w }.bwd(x()?, out, &g)?),
            Op::Act(a) => one(ActOp(*a).bwd(x()?, out, &g)?),
            Op::AvgPool(p) => one(AvgPoolOp(*p).bwd(x()?, out, &g)?),
            Op::Affine(a) => one(AffineOp(a.clone()).bwd(x()?, out, &g)?),
            Op::ChannelNorm(n) => one(ChannelNormOp(n.clone()).bwd(x()?, out, &g)?),
            Op::SelfAttention(a) => one(SelfAttentionOp(a.clone()).bwd(&x()?.contiguous()?, out, &g)?),
            Op::Mul => {
                let (gx, gy) = MulOp.bwd(arg(0)?, arg(1)?, out, &g)?;
                Ok(vec![gx, gy])
            }
            Op::Add => Ok(vec![Some(g.clone()), Some(g)]),
            Op::Concat => {
                let mut at = 0;
                args.iter()
                    .map(|a| {
                        let c = a.dim(1)?;
                        at += c;
                        Ok(Some(g.narrow(1, at - c, c)?.contiguous()?))
                    })
                    .collect()
            }
            Op::Flatten | Op::Tokens => one(Some(g.reshape(x()?.shape())?)),
            Op::Slice { start, end } => {
                let (n, c, h, w) = x()?.dims4()?;
                let zeros = |k: usize| Tensor::zeros((n, k, h, w), g.dtype(), g.device());
                one(Some(Tensor::cat(&[&zeros(*start)?, &g, &zeros(c - end)?], 1)?))
            }
            Op::ChannelShuffle { groups } => {
                let (n, c, h, w) = g.dims4()?;
                one(Some(g.reshape((n, c / groups, *groups, h * w))?.transpose(1, 2)?.contiguous()?.reshape((n, c, h, w))?))
            }
            Op::PrependToken(_) => {
                let t = x()?.dim(3)?;
                one(Some(g.narrow(3, 1, t)?.contiguous()?))
            }
            Op::AddPositional(_) => one(Some(g)),
            Op::ClassToken => {
                let (n, c, _, t) = x()?.dims4()?;
                let rest = Tensor::zeros((n, c, 1, t - 1), g.dtype(), g.device())?;
                one(Some(Tensor::cat(&[&g, &rest], 3)?))
            }
        }
    }

    /// Runs `nodes`, reading earlier values from `values`; each value is dropped after its last
    /// reader, so on return `values` holds only what later nodes read (and the logits). With
    /// `recorded`, every value the nodes make is also kept there.
    fn run_recording(&self, nodes: Range<NodeId>, values: &mut [Option<Tensor>], mut recorded: Option<&mut Vec<(NodeId, Tensor)>>) -> Result<()> {
        for i in nodes {
            let node = &self.graph.nodes[i];
            let args = node.inputs.iter().map(|&j| values[j].clone().ok_or_else(|| Error::Internal(format!("an input of '{}' was freed", node.name)))).collect::<Result<Vec<_>>>()?;
            let out = self.node(i, &args)?;
            for &j in &node.inputs {
                if self.last_use[j] == i {
                    values[j] = None;
                }
            }
            if let Some(r) = recorded.as_deref_mut() {
                r.push((i, out.clone()));
            }
            values[i] = Some(out);
        }
        Ok(())
    }

    fn run(&self, nodes: Range<NodeId>, values: &mut [Option<Tensor>]) -> Result<()> {
        self.run_recording(nodes, values, None)
    }

    /// The nodes before `nodes` that `nodes` read, in order.
    fn inputs_of(&self, nodes: &Range<NodeId>) -> Vec<NodeId> {
        let mut reads: Vec<NodeId> = nodes.clone().flat_map(|i| self.graph.nodes[i].inputs.iter().copied()).filter(|&j| j < nodes.start).collect();
        reads.sort_unstable();
        reads.dedup();
        reads
    }

    /// Runs one segment of the forward pass, recorded or not, from the values in `values`, which
    /// then hold what later segments read.
    fn forward_segment(&self, nodes: Range<NodeId>, values: &mut [Option<Tensor>], record: bool, keep: bool) -> Result<Segment> {
        let inputs = self.inputs_of(&nodes).into_iter().map(|j| Ok((j, values[j].clone().ok_or_else(|| Error::Internal(format!("the value of node {j} was freed")))?))).collect::<Result<Vec<_>>>()?;
        let mut recorded = record.then(Vec::new);
        self.run_recording(nodes.clone(), values, recorded.as_mut())?;
        Ok(Segment { nodes, inputs, recorded, keep })
    }

    /// Records a segment again from its inputs (the forward is deterministic: same values).
    fn record(&self, segment: &Segment) -> Result<Vec<(NodeId, Tensor)>> {
        let mut values = vec![None; self.graph.nodes.len()];
        for (j, value) in &segment.inputs {
            values[*j] = Some(value.clone());
        }
        let mut recorded = Vec::new();
        self.run_recording(segment.nodes.clone(), &mut values, Some(&mut recorded))?;
        Ok(recorded)
    }
}

/// Bytes of a node's output value.
fn value_bytes(shapes: &[Chw], i: NodeId) -> u64 {
    let (c, h, w) = shapes[i];
    4 * c as u64 * h as u64 * w as u64
}

/// Bytes a node's output adds to a recording (a fused ReLU and a flatten share their input's).
fn recorded_bytes(graph: &Graph, fused: &[Option<NodeId>], shapes: &[Chw], i: NodeId) -> u64 {
    let node = &graph.nodes[i];
    match node.op {
        Op::Input | Op::Flatten => 0,
        Op::Relu | Op::Relu6 if fused[node.inputs[0]] == Some(i) => 0,
        _ => value_bytes(shapes, i),
    }
}

/// Bytes a node's backward holds at once besides the recording: the gradient at its output and a
/// masked copy of it, and per input the gradient and its sum with the gradient already there.
fn backward_bytes(graph: &Graph, fused: &[Option<NodeId>], shapes: &[Chw], i: NodeId) -> u64 {
    if recorded_bytes(graph, fused, shapes, i) == 0 {
        return 0;
    }
    let inputs: u64 = graph.nodes[i].inputs.iter().map(|&j| value_bytes(shapes, j)).sum();
    2 * value_bytes(shapes, i) + 3 * inputs
}

/// Multiply-adds of a node's forward (0 for the cheap elementwise ones).
fn forward_flops(graph: &Graph, shapes: &[Chw], i: NodeId) -> u64 {
    let (c, h, w) = shapes[i];
    let product = |dims: &[usize]| dims.iter().map(|&d| d as u64).product::<u64>();
    match &graph.nodes[i].op {
        Op::Conv(conv) => product(&[c, h, w, conv.cin / conv.groups, conv.kh, conv.kw]),
        Op::Linear(l) => product(&[l.in_features, l.out_features]),
        // Four C x C projections per token, and q^T k and v P^T.
        Op::SelfAttention(_) => product(&[c, w, 4 * c + 2 * w]),
        _ => 0,
    }
}

/// At most this share of a forward pass's multiply-adds is re-run by the checkpoints.
const MAX_RECOMPUTE: f64 = 0.25;
/// Where the best plan within `MAX_RECOMPUTE` still walks more than `WALK_GOAL` times the weights'
/// bytes (EfficientNet-B0, DenseNet: large activations next to small weights), memory wins over
/// speed: the whole forward up to the layer may be re-run, with up to `MAX_CHECKPOINTS_WIDE` cuts.
/// DenseNet-121 takes 12 cuts and re-runs 96% of its forward (Guided Grad-CAM: about 4 forwards'
/// work instead of 3), and its live peak while explaining falls from 4.4x to 2.9x its weights.
const MAX_RECOMPUTE_WIDE: f64 = 1.0;
const MAX_CHECKPOINTS_WIDE: usize = 12;
/// The estimated walk above which the wider search runs. At 2x the plans of EfficientNet-Lite0,
/// MobileNetV2 and ResNet-18 stay as they were. (At 1.5x MobileNetV2 takes a wide plan that peaks
/// 10% lower for twice the recompute; `Costs` is an estimate, not exact.)
const WALK_GOAL: f64 = 2.0;
/// A checkpoint must cut the peak of the input-gradient walks by at least this share.
const MIN_SAVING: f64 = 0.1;
/// More checkpoints hold more values crossing the cuts than they save.
const MAX_CHECKPOINTS: usize = 4;
/// No checkpoints where the unsplit walk holds at most this many times the f32 weights' bytes: the
/// goal is wasm memory under 4x the weights, and a network whose activations are small next to its
/// weights (ResNet-18: 23 ms of recompute in wasm for memory it does not need) meets it as is.
const WALK_WITHOUT_CHECKPOINTS: u64 = 2;

/// What `checkpoint_ends` weighs, per node, for one pass. In u64: VGG-16's forward is 15 G
/// multiply-adds, past a wasm32 usize.
struct Costs {
    recorded: Vec<u64>,
    transient: Vec<u64>,
    /// For each cut (the index of the first node after it): bytes of the values crossing it.
    crossing: Vec<u64>,
    flops: Vec<u64>,
}

impl Costs {
    fn new(runner: &Runner, shapes: &[Chw]) -> Costs {
        let graph = &runner.graph;
        let n = graph.nodes.len();
        let crossing = (0..n).map(|end| (0..end).filter(|&j| runner.last_use[j] >= end).map(|j| value_bytes(shapes, j)).sum()).collect();
        Costs {
            recorded: (0..n).map(|i| recorded_bytes(graph, &runner.fused, shapes, i)).collect(),
            transient: (0..n).map(|i| backward_bytes(graph, &runner.fused, shapes, i)).collect(),
            crossing,
            flops: (0..n).map(|i| forward_flops(graph, shapes, i)).collect(),
        }
    }

    /// Bytes the walk of one segment holds: its recording and its largest backward transient.
    fn walk(&self, nodes: Range<NodeId>) -> u64 {
        nodes.clone().map(|i| self.recorded[i]).sum::<u64>() + nodes.map(|i| self.transient[i]).max().unwrap_or(0)
    }

    /// The peak of an input-gradient walk with checkpoint segments ending at `ends` (sorted): the
    /// largest segment's walk, while the values crossing every cut are held.
    fn peak(&self, ends: &[NodeId], layer: NodeId) -> u64 {
        let starts = std::iter::once(1).chain(ends.iter().copied());
        let stops = ends.iter().copied().chain(std::iter::once(layer + 1));
        let largest = starts.zip(stops).map(|(a, b)| self.walk(a..b)).max().unwrap_or(0);
        largest + ends.iter().map(|&e| self.crossing[e]).sum::<u64>()
    }
}

/// Cuts for segments whose walks hold at most `budget` bytes each: each segment runs from the last
/// cut as far as the budget allows, then is cut where the fewest bytes cross, among the cuts in
/// `allowed` (those whose recompute is affordable).
fn cuts_within(costs: &Costs, budget: u64, allowed: &Range<NodeId>, max_cuts: usize) -> Vec<NodeId> {
    let mut ends = Vec::new();
    let mut start = 1;
    let mut end = start + 1;
    while end < allowed.end && ends.len() < max_cuts {
        if costs.walk(start..end + 1) <= budget {
            end += 1;
            continue;
        }
        // Nodes start..end fit, start..end + 1 do not: cut somewhere in start + 1..=end.
        let Some(cut) = (start + 1..=end).filter(|c| allowed.contains(c)).min_by_key(|&c| (costs.crossing[c], usize::MAX - c)) else { break };
        ends.push(cut);
        start = cut;
        end = start + 1;
    }
    ends
}

/// Where the checkpoint segments (see the module comment) end. For a range of per-segment budgets,
/// `cuts_within` gives cuts; the ones with the lowest peak (`Costs::peak`) win if they lower the
/// peak of the unsplit walk by `MIN_SAVING`. Only cuts after which at most `MAX_RECOMPUTE` of the
/// forward's multiply-adds lie before them are allowed. Chosen by bytes, not by architecture name.
fn checkpoint_ends(runner: &Runner, layer: NodeId, shapes: &[Chw]) -> Vec<NodeId> {
    let costs = Costs::new(runner, shapes);
    let unsplit = costs.peak(&[], layer);
    let weights = 4 * runner.graph.parameter_count() as u64;
    if unsplit <= WALK_WITHOUT_CHECKPOINTS * weights {
        return Vec::new();
    }
    let (peak, ends) = best_cuts(&costs, layer, unsplit, MAX_RECOMPUTE, MAX_CHECKPOINTS);
    let (peak, ends) = if peak as f64 > WALK_GOAL * weights as f64 { best_cuts(&costs, layer, unsplit, MAX_RECOMPUTE_WIDE, MAX_CHECKPOINTS_WIDE).min((peak, ends)) } else { (peak, ends) };
    if (peak as f64) <= (1.0 - MIN_SAVING) * unsplit as f64 {
        ends
    } else {
        Vec::new()
    }
}

/// The lowest-peak cuts (and that peak) among those `cuts_within` gives for a range of per-segment
/// budgets, with at most `max_recompute` of the forward's multiply-adds before the last cut.
fn best_cuts(costs: &Costs, layer: NodeId, unsplit: u64, max_recompute: f64, max_cuts: usize) -> (u64, Vec<NodeId>) {
    let total_flops: u64 = costs.flops.iter().sum();
    let mut recompute = 0u64;
    let affordable = (2..=layer)
        .take_while(|&end| {
            recompute += costs.flops[end - 1];
            recompute as f64 <= max_recompute * total_flops as f64
        })
        .count();
    let allowed = 2..2 + affordable;
    let steps = 64u64;
    (1..steps)
        .map(|k| cuts_within(costs, unsplit * k / steps, &allowed, max_cuts))
        .map(|ends| (costs.peak(&ends, layer), ends.len(), ends))
        .min()
        .map_or((unsplit, Vec::new()), |(peak, _, ends)| (peak, ends))
}

/// One image's value as C x H x W (a linear layer's n x C as C x 1 x 1).
fn to_feature_map(t: &Tensor) -> Result<FeatureMap> {
    let (c, h, w) = match t.dims() {
        &[_, c] => (c, 1, 1),
        _ => {
            let (_, c, h, w) = t.dims4()?;
            (c, h, w)
        }
    };
    Ok(FeatureMap::new(c, h, w, t.flatten_all()?.to_vec1::<f32>()?))
}

impl CpuExecutor {
    /// The recorded forward pass (see the module comment); `input_gradient`: record the segment
    /// ending at the layer now, because an input gradient will be asked for.
    fn start_pass(&self, input: FeatureMap, layer: NodeId, input_gradient: bool) -> Result<CpuPass> {
        scoped(self.tuning, || self.start_pass_tuned(input, layer, input_gradient))
    }

    fn start_pass_tuned(&self, input: FeatureMap, layer: NodeId, input_gradient: bool) -> Result<CpuPass> {
        let (c, h, w) = (input.channels, input.height, input.width);
        let x = Tensor::from_vec(input.data, (1, c, h, w), &Device::Cpu)?;
        let runner = Runner::new(self.graph.clone(), self.kept.clone(), Some(layer), self.tuning);
        let n = self.graph.nodes.len();
        if layer == 0 || layer + 1 >= n {
            return fail!(Option, "layer '{}' is not a spatial layer inside the network; pick a conv, pool or block", self.graph.nodes[layer].name);
        }
        let checkpoints = match &self.checkpoint {
            Checkpoint::Auto => checkpoint_ends(&runner, layer, &self.graph.shapes(h, w)?),
            Checkpoint::Off => Vec::new(),
            Checkpoint::After(nodes) => nodes.iter().filter(|&&node| node >= 1 && node + 1 < layer).map(|node| node + 1).collect(),
        };
        let mut values: Vec<Option<Tensor>> = vec![None; n];
        values[0] = Some(x);
        let mut segments = Vec::new();
        let mut begin = 1;
        for &end in &checkpoints {
            segments.push(runner.forward_segment(begin..end, &mut values, false, false)?);
            begin = end;
        }
        // The segment ending at the layer is kept only when no checkpoint lies before it: otherwise
        // it is dropped before the checkpoints are recorded, so their tapes never live together.
        segments.push(runner.forward_segment(begin..layer + 1, &mut values, input_gradient, checkpoints.is_empty())?);
        let layer_value = values[layer].clone().ok_or_else(|| Error::Internal("the target layer was not reached".into()))?;
        if layer_value.rank() != 4 {
            return fail!(Option, "layer '{}' is not a spatial layer (it has no H x W map); pick a conv, pool or block", self.graph.nodes[layer].name);
        }
        let activations = to_feature_map(&layer_value)?;
        drop(layer_value);
        segments.push(runner.forward_segment(layer + 1..n, &mut values, true, true)?);
        let logits = values[n - 1].take().ok_or_else(|| Error::Internal("graph has no output".into()))?;
        let logits_vec = logits.flatten_all()?.to_vec1::<f32>()?;
        Ok(CpuPass { layer, input_shape: (c, h, w), runner, segments, logits_vec, activations })
    }
}

impl CpuExecutor {
    /// The first node, in graph order, whose output holds a NaN or an infinity for this input: an
    /// unrecorded forward with nothing fused (a fused ReLU would turn a NaN into 0 unseen), each
    /// output checked. For naming a numerical fault after a pass went bad (one more forward).
    pub fn first_non_finite(&self, input: &FeatureMap) -> Result<Option<NodeId>> {
        scoped(self.tuning, || self.first_non_finite_tuned(input))
    }

    fn first_non_finite_tuned(&self, input: &FeatureMap) -> Result<Option<NodeId>> {
        let (c, h, w) = (input.channels, input.height, input.width);
        let x = Tensor::from_slice(&input.data, (1, c, h, w), &Device::Cpu)?;
        let n = self.graph.nodes.len();
        let mut runner = Runner::new(self.graph.clone(), self.kept.clone(), None, self.tuning);
        runner.fused = vec![None; n];
        let mut values: Vec<Option<Tensor>> = vec![None; n];
        values[0] = Some(x);
        for i in 1..n {
            runner.run(i..i + 1, &mut values)?;
            if let Some(v) = &values[i] {
                if v.flatten_all()?.to_vec1::<f32>()?.iter().any(|x| !x.is_finite()) {
                    return Ok(Some(i));
                }
            }
        }
        Ok(None)
    }
}

impl Executor for CpuExecutor {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn start(&self, input: FeatureMap, layer: NodeId) -> Result<Box<dyn Pass>> {
        Ok(Box::new(awake(|| self.start_pass(input, layer, true))?))
    }

    fn start_for(&self, input: FeatureMap, layer: NodeId, input_gradient: bool) -> Result<Box<dyn Pass>> {
        Ok(Box::new(awake(|| self.start_pass(input, layer, input_gradient))?))
    }

    fn kept_bytes(&self) -> usize {
        self.kept_budget.taken()
    }

    fn logits_batch(&self, inputs: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        awake(|| scoped(self.tuning, || self.logits_batch_across_threads(inputs, n, h, w)))
    }

    fn logits_from_layer(&self, layer: NodeId, activations: &[f32], n: usize, shape: (usize, usize, usize)) -> Result<Vec<f32>> {
        awake(|| scoped(self.tuning, || self.logits_from_layer_tuned(layer, activations, n, shape)))
    }
}

impl CpuExecutor {
    /// With threads, the batch's images are split into one group per thread, each run whole on its
    /// thread (its kernels on that thread alone): independent forwards scale with the threads, where
    /// splitting every kernel pays a hand-off at each. An image's logits are the same bits whichever
    /// group it runs in (`batched_logits_are_each_images_bitwise`), so the split changes no bit.
    fn logits_batch_across_threads(&self, inputs: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        let groups = crate::kernels::parallel::threads().min(n);
        if groups < 2 || inputs.len() != n * 3 * h * w {
            return self.logits_batch_tuned(inputs, n, h, w);
        }
        let image = 3 * h * w;
        let mut outputs: Vec<Option<Result<Vec<f32>>>> = (0..groups).map(|_| None).collect();
        let parts = crate::kernels::parallel::ranges(n, groups, 1).into_iter().zip(outputs.iter_mut()).collect::<Vec<_>>();
        crate::kernels::parallel::for_each(parts, |_, (images, out)| {
            *out = Some(self.logits_batch_tuned(&inputs[images.start * image..images.end * image], images.len(), h, w));
        });
        let mut logits = Vec::new();
        for out in outputs {
            logits.extend(out.ok_or_else(|| Error::Internal("a batch group did not run".into()))??);
        }
        Ok(logits)
    }

    /// The batch runs image by image up to the first node with a small output plane, then as one
    /// batch (`batch_from`): wide early layers keep one image's activations in cache, and the
    /// small late ones take the whole batch as the columns of each product (`kernels::conv`).
    fn logits_batch_tuned(&self, inputs: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        if inputs.len() != n * 3 * h * w {
            return Err(Error::Internal(format!("{} input values for {n} images of 3 x {h} x {w}", inputs.len())));
        }
        let total = self.graph.nodes.len();
        let runner = Runner::new(self.graph.clone(), self.kept.clone(), None, self.tuning);
        let split = if n > 1 && self.tuning.batch_columns { self.batch_from(h, w)? } else { 1 };
        let mut values: Vec<Option<Tensor>> = vec![None; total];
        if split > 1 {
            let mut alone: Vec<Vec<Option<Tensor>>> = Vec::with_capacity(n);
            for x in inputs.chunks_exact(3 * h * w) {
                let mut v: Vec<Option<Tensor>> = vec![None; total];
                v[0] = Some(Tensor::from_slice(x, (1, 3, h, w), &Device::Cpu)?);
                runner.run(1..split, &mut v)?;
                alone.push(v);
            }
            // What the later nodes read, each image's joined into one batch.
            for (j, slot) in values.iter_mut().enumerate() {
                let parts = alone.iter_mut().filter_map(|v| v[j].take()).collect::<Vec<_>>();
                if !parts.is_empty() {
                    *slot = Some(Tensor::cat(&parts, 0)?);
                }
            }
        } else {
            values[0] = Some(Tensor::from_slice(inputs, (n, 3, h, w), &Device::Cpu)?);
        }
        runner.run(split..total, &mut values)?;
        let logits = values.pop().flatten().ok_or_else(|| Error::Internal("graph has no output".into()))?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The first node whose output plane is small enough for a conv to take several images as its
    /// product's columns (`kernels::conv::BATCH_PLANE`), or the output node.
    fn batch_from(&self, h: usize, w: usize) -> Result<NodeId> {
        let shapes = self.graph.shapes(h, w)?;
        let last = self.graph.nodes.len() - 1;
        Ok(shapes.iter().enumerate().skip(1).find(|(_, &(_, oh, ow))| oh * ow <= crate::kernels::conv::BATCH_PLANE).map_or(last, |(i, _)| i))
    }

    /// Runs nodes `layer + 1..` from the given activations alone, so it refuses a layer that some
    /// later node bypasses (a skip connection from before the layer to after it, whose value would
    /// have to come from the same image's pass).
    fn logits_from_layer_tuned(&self, layer: NodeId, activations: &[f32], n: usize, (c, h, w): (usize, usize, usize)) -> Result<Vec<f32>> {
        let graph = &self.graph;
        let total = graph.nodes.len();
        if layer == 0 || layer + 1 >= total {
            return fail!(Option, "layer '{}' is not a spatial layer inside the network; pick a conv, pool or block", graph.nodes[layer].name);
        }
        if let Some((i, j)) = (layer + 1..total).flat_map(|i| graph.nodes[i].inputs.iter().map(move |&j| (i, j))).find(|&(_, j)| j < layer) {
            return fail!(
                Option,
                "the layers after '{}' also read '{}' (at '{}'), which lies before it, so they cannot be re-run from this layer's activations alone; pick a layer no connection skips over, such as the one the global pool reads",
                graph.display_name(layer),
                graph.display_name(j),
                graph.display_name(i)
            );
        }
        if n == 0 || activations.len() != n * c * h * w {
            return Err(Error::Internal(format!("{} activation values for {n} copies of {c} x {h} x {w}", activations.len())));
        }
        let runner = Runner::new(graph.clone(), self.kept.clone(), Some(layer), self.tuning);
        let mut values: Vec<Option<Tensor>> = vec![None; total];
        values[layer] = Some(Tensor::from_slice(activations, (n, c, h, w), &Device::Cpu)?);
        runner.run(layer + 1..total, &mut values)?;
        let logits = values.pop().flatten().ok_or_else(|| Error::Internal("graph has no output".into()))?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }
}

pub struct CpuPass {
    layer: NodeId,
    input_shape: (usize, usize, usize),
    runner: Runner,
    /// In graph order; the last starts after the target layer.
    segments: Vec<Segment>,
    logits_vec: Vec<f32>,
    activations: FeatureMap,
}

/// d score / d value of nodes whose producing segment has not been walked yet.
type Pending = Vec<(NodeId, Tensor)>;

fn add_pending(pending: &mut Pending, node: NodeId, g: Tensor) -> Result<()> {
    match pending.iter_mut().find(|(j, _)| *j == node) {
        Some((_, sum)) => *sum = candle_ops::add(sum, &g)?,
        None => pending.push((node, g)),
    }
    Ok(())
}

/// The nodes whose output gradients a walk hands out as it passes them, and to whom
/// (`Pass::input_gradient_visiting`).
struct Visitor<'a> {
    wanted: Vec<bool>,
    visit: &'a mut dyn FnMut(NodeId, FeatureMap) -> Result<()>,
}

impl CpuPass {
    /// Walks the segments from the last back to segment `first`, seeded with `target` at the logits;
    /// returns the gradients left pending: at the inputs of segment `first` (and of any skip around it).
    fn walk(&mut self, target: &[f32], first: usize, visitor: Option<&mut Visitor>) -> Result<Pending> {
        scoped(self.runner.tuning, || self.walk_tuned(target, first, visitor))
    }

    fn walk_tuned(&mut self, target: &[f32], first: usize, mut visitor: Option<&mut Visitor>) -> Result<Pending> {
        let classes = self.logits_vec.len();
        if target.len() != classes {
            return fail!(Option, "the target weights have {} entries, the model has {classes} classes", target.len());
        }
        let output = self.runner.graph.nodes.len() - 1;
        let mut pending = vec![(output, Tensor::from_slice(target, (1, classes), &Device::Cpu)?)];
        for segment in self.segments[first..].iter_mut().rev() {
            if !pending.iter().any(|(node, _)| segment.nodes.contains(node)) {
                continue; // nothing downstream depends on this segment
            }
            let recorded = match segment.recorded.take() {
                Some(recorded) => recorded,
                None => self.runner.record(segment)?,
            };
            if segment.keep {
                segment.recorded = Some(recorded.clone());
            }
            self.runner.walk_back(segment, recorded, &mut pending, visitor.as_deref_mut())?;
        }
        Ok(pending)
    }
}

impl Runner {
    /// One segment's backward: node by node from its last, each node's gradient taken from
    /// `pending` (or summed from its readers) and passed to its inputs; the gradients reaching the
    /// segment's inputs are left in `pending`. Each value and gradient is dropped once its node is
    /// done, so the walk holds less and less of the recording (unless the segment keeps it).
    /// A `visitor` is handed each wanted node's output gradient, complete once its node is reached.
    fn walk_back(&self, segment: &Segment, recorded: Vec<(NodeId, Tensor)>, pending: &mut Pending, mut visitor: Option<&mut Visitor>) -> Result<()> {
        let n = self.graph.nodes.len();
        let mut values: Vec<Option<Tensor>> = vec![None; n];
        for (j, v) in segment.inputs.iter().cloned().chain(recorded) {
            values[j] = Some(v);
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; n];
        for (j, g) in std::mem::take(pending) {
            if segment.nodes.contains(&j) {
                add_grad(&mut grads[j], g)?;
            } else {
                pending.push((j, g));
            }
        }
        for i in segment.nodes.clone().rev() {
            let Some(g) = grads[i].take() else { continue };
            let node = &self.graph.nodes[i];
            let out = values[i].take().ok_or_else(|| Error::Internal(format!("'{}' was not recorded", node.name)))?;
            if let Some(v) = visitor.as_deref_mut().filter(|v| v.wanted[i]) {
                (v.visit)(i, to_feature_map(&self.output_gradient(i, &out, &g)?)?)?;
            }
            let args = node.inputs.iter().map(|&j| values[j].clone().ok_or_else(|| Error::Internal(format!("an input of '{}' was not recorded", node.name)))).collect::<Result<Vec<_>>>()?;
            let input_grads = self.backward(i, &args, &out, g)?;
            drop((out, args));
            for (&j, gj) in node.inputs.iter().zip(input_grads) {
                let Some(gj) = gj else { continue };
                if segment.nodes.contains(&j) {
                    add_grad(&mut grads[j], gj)?;
                } else {
                    add_pending(pending, j, gj)?;
                }
            }
        }
        Ok(())
    }
}

impl Runner {
    /// The gradient at node `i`'s own output, from `g`, the walk's gradient at it: for a conv fused
    /// with its ReLU that is the gradient after the ReLU, so the ReLU's backward (on the recorded,
    /// clamped `out`) is applied here.
    fn output_gradient(&self, i: NodeId, out: &Tensor, g: &Tensor) -> Result<Tensor> {
        let clamp = self.fused[i].and_then(|r| relu_clamp(&self.graph.nodes[r].op));
        match clamp {
            Some(clamp) => Ok(ReluOp { clamp, rule: self.rule.clone() }.bwd(out, out, g)?.unwrap_or_else(|| g.clone())),
            None => Ok(g.clone()),
        }
    }
}

/// Adds `g` to a node's gradient (the first contribution is taken as it is, uncopied).
fn add_grad(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(sum) => candle_ops::add(&sum, &g)?,
        None => g,
    });
    Ok(())
}

impl CpuPass {
    /// The input gradient among what a walk to the input left pending (zero if it reached none).
    fn input_of(&self, pending: Pending) -> Result<FeatureMap> {
        let (c, h, w) = self.input_shape;
        match pending.into_iter().find(|(node, _)| *node == 0) {
            Some((_, g)) => to_feature_map(&g),
            None => Ok(FeatureMap::new(c, h, w, vec![0.0; c * h * w])),
        }
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
        self.runner.rule.set(ReluRule::Plain);
        let last = self.segments.len() - 1;
        let pending = awake(|| self.walk(target, last, None))?;
        match pending.into_iter().find(|(node, _)| *node == self.layer) {
            Some((_, g)) => to_feature_map(&g),
            // The target does not depend on this layer at all: its gradient is zero.
            None => Ok(FeatureMap::new(self.activations.channels, self.activations.height, self.activations.width, vec![0.0; self.activations.data.len()])),
        }
    }

    fn input_gradient(&mut self, target: &[f32], rule: ReluRule) -> Result<FeatureMap> {
        self.runner.rule.set(rule);
        let result = awake(|| self.walk(target, 0, None));
        self.runner.rule.set(ReluRule::Plain);
        self.input_of(result?)
    }

    fn input_gradient_visiting(&mut self, target: &[f32], nodes: &[NodeId], visit: &mut dyn FnMut(NodeId, FeatureMap) -> Result<()>) -> Result<FeatureMap> {
        let mut wanted = vec![false; self.runner.graph.nodes.len()];
        for &i in nodes {
            *wanted.get_mut(i).ok_or_else(|| Error::Internal(format!("no node {i} to visit")))? = true;
        }
        self.runner.rule.set(ReluRule::Plain);
        let pending = awake(|| self.walk(target, 0, Some(&mut Visitor { wanted, visit })))?;
        self.input_of(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{synthetic, Arch, Model};

    /// A batch's logits are bitwise each image's own: the early layers run image by image, the
    /// late ones batched, and a batched product sums each output in the one-image order.
    #[test]
    fn batched_logits_are_each_images_bitwise() {
        let arch = Arch::from_name("mobilenet_v2").expect("arch");
        let bytes = synthetic::state_dict(arch, 10).expect("synthetic weights").bytes();
        let model = Model::from_bytes(&bytes, Some(arch)).expect("model loads");
        let (n, h, w) = (3, 96, 96);
        let x = synthetic::Rng::new(9).vec(n * 3 * h * w, 1.5);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let alone = |exec: &CpuExecutor| -> Vec<u32> { bits(&x.chunks_exact(3 * h * w).flat_map(|xi| exec.logits_batch(xi, 1, h, w).expect("one image")).collect::<Vec<_>>()) };
        for batch_columns in [true, false] {
            let exec = CpuExecutor::new(model.graph.clone()).with_tuning(Tuning { batch_columns, ..Tuning::DEFAULT });
            let split = exec.batch_from(h, w).expect("shapes");
            assert!(split > 1 && split < model.graph.nodes.len() - 1, "the batch joins inside the network, at node {split}");
            let expected = alone(&exec);
            // On 1 thread the batch runs whole; on 2 as groups of 1 and 2 images; on 3 image by image.
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
                let batched = pool.install(|| exec.logits_batch(&x, n, h, w)).expect("batch");
                assert_eq!(batched.len(), n * 10);
                assert!(bits(&batched) == expected, "batch_columns {batch_columns}, {threads} threads: a batch's logits differ from its images' own");
            }
        }
    }
}
