//! The public entry point: a model plus an executor, explaining images.
//!
//! One forward pass per (image, layer, preprocessing); explaining another class or method of the
//! same image re-runs only the backward it needs.

use crate::arch::{Arch, InputNorm};
use crate::budget::Budget;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::exec::{cpu::CpuExecutor, Executor, Pass, ReluRule};
use crate::fail;
use crate::feature_map::{FeatureMap, Map};
use crate::graph::{Graph, NodeId, Op};
use crate::imaging::preprocess::{preprocess, Geometry, Normalize, Preprocess, Resize, IMAGENET_MEAN, IMAGENET_STD};
use crate::imaging::project::{crop_mask, project_to_image};
use crate::imaging::rgb::RgbImage;
use crate::methods::fullgrad::{self, BiasTerm, FullGradient};
use crate::methods::score::LogitsBatch;
use crate::methods::{Computed, Evidence, Method, Sign};
use crate::tape::Taping;
use crate::weights::WeightMap;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// A loaded network: its architecture, layer graph, class names, default target layer and the
/// evaluation transform its inputs need.
pub struct Model {
    pub arch: Arch,
    pub graph: Arc<Graph>,
    pub labels: Vec<String>,
    /// The layer explained when none is named.
    pub default_layer: String,
    /// Resize, crop and normalization of the family (or the file, or a setting).
    pub preprocess: Preprocess,
}

/// One row of `Model::layers`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerInfo {
    pub name: String,
    pub aliases: Vec<String>,
    pub kind: &'static str,
    /// (channels, height, width) for the model's input size.
    pub shape: (usize, usize, usize),
}

impl Model {
    /// Loads a state dict (zip or legacy `torch.save`, safetensors f32/f16/bf16); `arch` is detected
    /// when `None`. ONNX files are imported (`Model::from_onnx`, weights inside the file).
    pub fn from_bytes(bytes: &[u8], arch: Option<Arch>) -> Result<Model> {
        if crate::onnx::is_onnx(bytes) {
            return Model::from_onnx(bytes, None);
        }
        crate::budget::within(&crate::budget::for_load(bytes.len()), || Model::from_state_dict(bytes, arch))
    }

    fn from_state_dict(bytes: &[u8], arch: Option<Arch>) -> Result<Model> {
        let weights = WeightMap::from_bytes(bytes)?;
        let arch = match arch {
            Some(a) => a,
            None => Arch::detect(&weights)?,
        };
        let graph = arch.build(&weights).map_err(|e| match e {
            Error::Weights(m) => Error::Weights(format!("{m} (loading as {})", arch.name())),
            other => other,
        })?;
        let preprocess = family_preprocess(arch, &graph, arch.eval_size(&weights));
        Ok(Model::from_graph(arch, graph, Some(preprocess)))
    }

    /// A model from a built (or imported) graph, with the family's defaults for whatever
    /// `preprocess` does not say.
    pub fn from_graph(arch: Arch, graph: Graph, preprocess: Option<Preprocess>) -> Model {
        let labels = if graph.num_classes == 1000 { crate::labels::imagenet() } else { (0..graph.num_classes).map(|i| format!("class {i}")).collect() };
        let default_layer = arch.default_layer(&graph);
        let preprocess = preprocess.unwrap_or_else(|| family_preprocess(arch, &graph, arch.input_size()));
        Model { arch, graph: Arc::new(graph), labels, default_layer, preprocess }
    }

    /// The square input size the network is fed (the crop of the evaluation transform).
    pub fn input_size(&self) -> (usize, usize) {
        match self.preprocess.resize {
            Resize::ShorterSide { crop: Some((w, h)), .. } | Resize::Exact { width: w, height: h } => (w, h),
            Resize::ShorterSide { size, crop: None } => (size, size),
        }
    }

    /// Feeds the network `size` x `size` inputs: resize the shorter side to size * 256 / 224, then
    /// crop the centre, as torchvision's evaluation transforms do. Checked against the network.
    pub fn with_input_size(mut self, size: usize) -> Result<Model> {
        if !(8..=4096).contains(&size) {
            return fail!(Option, "input size {size} is out of range; use 8 to 4096 pixels (224 for most ImageNet models, 299 for Inception v3)");
        }
        self.graph.shapes(size, size)?;
        self.preprocess.resize = Resize::ShorterSide { size: (size * 256).div_ceil(224), crop: Some((size, size)) };
        Ok(self)
    }

    /// Replaces the input normalization (`mean`/`std` on x / 255, or offset/scale on 0..255).
    pub fn with_normalize(mut self, normalize: Normalize) -> Result<Model> {
        let bad = match &normalize {
            Normalize::MeanStd { mean, std } => mean.iter().chain(std).any(|v| !v.is_finite()) || std.iter().any(|&v| v <= 0.0),
            Normalize::Affine { offset, scale } => !offset.is_finite() || !scale.is_finite() || *scale <= 0.0,
        };
        if bad {
            return fail!(Option, "normalization {normalize:?} is not usable: values must be finite and std / scale > 0");
        }
        self.preprocess.normalize = normalize;
        Ok(self)
    }

    pub fn with_labels(mut self, labels: Vec<String>) -> Result<Model> {
        if labels.len() != self.graph.num_classes {
            return fail!(Option, "{} labels given for a model with {} classes", labels.len(), self.graph.num_classes);
        }
        self.labels = labels;
        Ok(self)
    }

    pub fn default_layer(&self) -> String {
        self.default_layer.clone()
    }

    /// Every layer with a spatial output (a possible explanation target), in order.
    pub fn layers(&self) -> Vec<LayerInfo> {
        let (w, h) = self.input_size();
        let shapes = self.graph.shapes(h, w).unwrap_or_default();
        self.graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !matches!(n.op, Op::Input | Op::Linear(_) | Op::Flatten))
            .map(|(i, n)| LayerInfo { name: n.name.clone(), aliases: n.aliases.clone(), kind: n.op.kind(), shape: shapes.get(i).copied().unwrap_or((0, 0, 0)) })
            .collect()
    }

    /// The evaluation preprocessing the weights were trained with (or that was set).
    pub fn default_preprocess(&self) -> Preprocess {
        self.preprocess.clone()
    }
}

/// A family's evaluation transform: resize the shorter side, centre crop, normalize. A graph
/// whose position embedding fixes its input size (a ViT) gets that crop, resized as at 224 / 256.
/// `eval`: the family's (crop, resize) where the graph does not fix its input size.
fn family_preprocess(arch: Arch, graph: &Graph, eval: (usize, usize)) -> Preprocess {
    let normalize = match arch.input_norm() {
        InputNorm::ImageNetMeanStd => Normalize::MeanStd { mean: IMAGENET_MEAN, std: IMAGENET_STD },
        InputNorm::Centered127 => Normalize::Affine { offset: 127.0, scale: 128.0 },
        InputNorm::Half => Normalize::MeanStd { mean: [0.5; 3], std: [0.5; 3] },
    };
    let (crop, size) = match graph.fixed_input_size() {
        Some((h, w)) if h == w => (h, (h * 256).div_ceil(224)),
        _ => eval,
    };
    Preprocess { resize: Resize::ShorterSide { size, crop: Some((crop, crop)) }, normalize }
}

/// What to explain.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Target {
    /// The top-scoring class.
    #[default]
    Top1,
    Class(usize),
    /// A weighted sum of class scores, sum_c w_c y_c.
    Weighted(Vec<(usize, f32)>),
}

/// The most terms a weighted target may have: enough for any hand-written mix, and the bound is
/// checked before anything is allocated, so a huge string costs nothing.
pub const MAX_TARGET_TERMS: usize = 64;

impl Target {
    /// Parses what a user writes for the class: `281` (one class) or `281:1,285:0.5` (the score
    /// sum_c w_c y_c). `num_classes` bounds the indices. The one parser the CLI and JS share.
    pub fn parse(text: &str, num_classes: usize) -> Result<Target> {
        let text = text.trim();
        if text.is_empty() {
            return fail!(Option, "the class is empty; write an index such as 281, or weighted terms such as 281:1,285:0.5");
        }
        if !text.contains(':') && !text.contains(',') {
            return Ok(Target::Class(parse_class(text, num_classes)?));
        }
        let terms = text.split(',').count();
        if terms > MAX_TARGET_TERMS {
            return fail!(Option, "a weighted class has {terms} terms, more than the {MAX_TARGET_TERMS} allowed");
        }
        let pairs = text.split(',').map(|t| parse_term(t, num_classes)).collect::<Result<Vec<_>>>()?;
        Ok(Target::Weighted(pairs))
    }
}

/// One class index, checked against the model's classes.
fn parse_class(text: &str, num_classes: usize) -> Result<usize> {
    let t = text.trim();
    let c: usize = t.parse().map_err(|_| Error::Option(format!("class '{t}' is not a class index (a non-negative integer such as 281)")))?;
    if c >= num_classes {
        return fail!(Option, "class index {c} is out of range: this model has {num_classes} classes (0..={})", num_classes.saturating_sub(1));
    }
    Ok(c)
}

/// One `class:weight` term of a weighted class.
fn parse_term(term: &str, num_classes: usize) -> Result<(usize, f32)> {
    let Some((class, weight)) = term.split_once(':') else {
        return fail!(Option, "weighted class term '{}' needs the form class:weight, e.g. 281:0.5", term.trim());
    };
    let w = weight.trim();
    let w: f32 = w.parse().map_err(|_| Error::Option(format!("the weight '{w}' of class {} is not a number", class.trim())))?;
    if !w.is_finite() {
        return fail!(Option, "the weight of class {} is {w}; weights must be finite", class.trim());
    }
    Ok((parse_class(class, num_classes)?, w))
}

#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Normalization {
    /// Per-image min-max to [0, 1] (over the region the network saw).
    #[default]
    MinMax,
    /// The method's own scale, so classes and images can be compared.
    Raw,
}

#[derive(Clone, Debug)]
pub struct ExplainOptions {
    pub method: Method,
    /// Target layer name; the architecture's default when `None`.
    pub layer: Option<String>,
    /// Several target layers at once (pytorch-grad-cam's list of target layers), instead of `layer`:
    /// each runs on its own forward pass, and the map is the mean of their maps (after the sign
    /// rule), each min-max scaled to [0, 1] and brought to the finest of their grids
    /// (`combine_layers`). Empty: `layer` alone.
    pub layers: Vec<String>,
    pub target: Target,
    /// Keep the sign (skip the method's final ReLU).
    pub signed: bool,
    pub normalization: Normalization,
    /// Overrides the resize/crop (normalization always follows the model).
    pub resize: Option<Resize>,
    pub score_cam: crate::methods::score::ScoreCamOptions,
    /// Integrated Gradients, SmoothGrad and Occlusion settings.
    pub attribution: crate::methods::attribution::AttributionOptions,
    /// pytorch-grad-cam's `eigen_smooth`: the first principal component of the weighted feature maps
    /// instead of their sum (`methods::smooth`; the CAMs that sum weighted maps only).
    pub eigen_smooth: bool,
    /// pytorch-grad-cam's `aug_smooth`: the mean of the CAM over the input and its mirror image, each
    /// times 0.9, 1 and 1.1 ([`AUG_PASSES`]): six passes instead of one (layer-grid methods only).
    pub aug_smooth: bool,
}

/// aug_smooth's passes: (mirrored, factor on the network input), the plain input first. The factors
/// multiply the normalized input tensor, as ttach's `Multiply` that pytorch-grad-cam uses does.
pub const AUG_PASSES: [(bool, f32); 6] = [(false, 1.0), (false, 0.9), (false, 1.1), (true, 0.9), (true, 1.0), (true, 1.1)];

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions {
            method: Method::GRAD_CAM,
            layer: None,
            layers: Vec::new(),
            target: Target::Top1,
            signed: false,
            normalization: Normalization::MinMax,
            resize: None,
            score_cam: Default::default(),
            attribution: Default::default(),
            eigen_smooth: false,
            aug_smooth: false,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Prediction {
    #[serde(rename = "classIdx")]
    pub class: usize,
    pub label: String,
    pub logit: f32,
    pub probability: f32,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timings {
    pub preprocess_ms: f64,
    /// 0 when the forward pass was reused.
    pub forward_ms: f64,
    pub method_ms: f64,
    pub project_ms: f64,
    pub total_ms: f64,
}

#[derive(Clone, Debug)]
pub struct Explanation {
    pub method: Method,
    pub layer: String,
    pub class: usize,
    pub label: String,
    /// The explained score: the class logit (or the weighted sum of logits).
    pub score: f32,
    pub probability: f32,
    pub top5: Vec<Prediction>,
    /// The map where the method computes it (layer grid; input grid for guided methods), after the
    /// method's ReLU (unless `signed`), before any normalization or resizing.
    pub raw: Map,
    /// The map on the original image's pixel grid; normalized as asked; 0 outside the crop.
    pub image_map: Map,
    /// Guided methods: the gradient as an RGB image in [0, 1] (3 x H x W, network input grid).
    pub rgb: Option<FeatureMap>,
    /// Where the network input sat on the original image.
    pub geometry: Geometry,
    pub forward_reused: bool,
    /// The executor that ran the forward and backward passes ("cpu", "webgpu").
    pub backend: &'static str,
    pub warnings: Vec<String>,
    pub timings: Timings,
}

/// Identifies one forward pass: (image fingerprint, target layer, preprocessing).
pub type PassKey = (u64, NodeId, String);

/// A pass another executor computed, for `Explainer::explain_recorded`.
pub struct ForeignPass {
    pub key: PassKey,
    pub pass: Box<dyn Pass>,
    /// The network input it ran on, and where that input sits on the image.
    pub input: FeatureMap,
    pub geometry: Geometry,
}

struct CachedPass {
    key: PassKey,
    pass: Box<dyn Pass>,
    input: FeatureMap,
    geometry: Geometry,
}

pub struct Explainer {
    model: Model,
    executor: Box<dyn Executor>,
    cache: Option<CachedPass>,
    /// Bytes of layer outputs one forward may produce (`with_memory_budget`); None: the default.
    memory_budget: Option<u64>,
    /// Batched calls recorded or replayed (`crate::tape`); None: computed as they come.
    tape: RefCell<Option<Taping>>,
}

/// The default budget of one image's forward pass, in bytes of layer outputs (f32, every node's
/// output counted, as if all were kept): 4 GiB plus 4x the model's f32 weights. Real models at their
/// own input sizes stay far below (EfficientNet-Lite0 at 224: 50 MiB); a network input the
/// weights or an ONNX file declare far beyond (4096 x 4096 into SqueezeNet: ~30 GiB) is refused
/// before the forward allocates anything.
pub const DEFAULT_FORWARD_BUDGET: u64 = 4 << 30;

fn fingerprint(data: &[u8], w: usize, h: usize) -> u64 {
    // FNV-1a: cheap, and collisions only cost a wrong cache hit between two *different* images of equal size,
    // which 64 bits make negligible.
    let mut x: u64 = 0xcbf29ce484222325 ^ (w as u64) << 32 ^ h as u64;
    for &b in data {
        x = (x ^ b as u64).wrapping_mul(0x100000001b3);
    }
    x
}

pub use crate::imaging::normalize::softmax;

impl Explainer {
    pub fn new(model: Model) -> Explainer {
        let executor = Box::new(CpuExecutor::new(model.graph.clone()));
        Explainer { model, executor, cache: None, memory_budget: None, tape: RefCell::new(None) }
    }

    pub fn with_executor(model: Model, executor: Box<dyn Executor>) -> Explainer {
        Explainer { model, executor, cache: None, memory_budget: None, tape: RefCell::new(None) }
    }

    /// Sets the memory budget of one explanation: the bytes of all layer outputs of its forward pass
    /// (f32, as `Graph::shapes` gives them for the input size, checked before the forward runs) plus
    /// every buffer its method allocates on top (batches of masked inputs, Gram matrices, the map on
    /// the image), counted together (`budget`), each checked before it is allocated.
    pub fn with_memory_budget(mut self, bytes: u64) -> Explainer {
        self.memory_budget = Some(bytes);
        self
    }

    /// The budget in force (`DEFAULT_FORWARD_BUDGET` plus 4x the weights unless set).
    pub fn memory_budget(&self) -> u64 {
        self.memory_budget.unwrap_or_else(|| DEFAULT_FORWARD_BUDGET.saturating_add(16 * self.model.graph.parameter_count() as u64))
    }

    /// A fresh budget for one explanation or evaluation, which every allocation inside it reserves
    /// from (`budget::within`); its limit is `memory_budget()`.
    pub fn budget(&self) -> Rc<Budget> {
        Budget::new(
            "this explanation",
            self.memory_budget(),
            "use a smaller input size, smaller batches, fewer Score-CAM channels or a layer with a smaller map, or raise the budget (the memoryBudgetMiB option in JS, Explainer::with_memory_budget in Rust)",
            Error::Input,
        )
    }

    /// Bytes of all layer outputs (f32) of one forward pass at this input size: what an explanation
    /// reserves from its budget before its method's own buffers.
    pub fn forward_bytes(&self, height: usize, width: usize) -> Result<u64> {
        let shapes = self.model.graph.shapes(height, width)?;
        Ok(shapes.iter().fold(0u64, |t, &(c, h, w)| t.saturating_add((c as u64).saturating_mul(h as u64).saturating_mul(w as u64).saturating_mul(4))))
    }

    /// Checks the layer shapes at this input size, and the bytes of all layer outputs against the
    /// budget, before a forward pass allocates any of them.
    fn check_forward(&self, height: usize, width: usize) -> Result<()> {
        let bytes = self.forward_bytes(height, width)?;
        let budget = self.memory_budget();
        if bytes > budget {
            return fail!(
                Input,
                "a {width}x{height} network input makes this model produce {} MiB of layer outputs, over the {} MiB memory budget of one explanation (4 GiB + 4x the weights unless set); use a smaller input size or raise the budget (--memory-budget, memoryBudgetMiB in JS)",
                bytes >> 20,
                budget >> 20
            );
        }
        Ok(())
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Logits (row-major n x classes) of `n` already-preprocessed inputs of 3 x `height` x `width`
    /// each, through this explainer's executor, no gradients (for evaluations that modify the
    /// input: `eval::faithfulness`). The size is checked against the forward budget first.
    pub fn logits_batch(&self, inputs: &[f32], n: usize, height: usize, width: usize) -> Result<Vec<f32>> {
        let len = n.checked_mul(3).and_then(|v| v.checked_mul(height)).and_then(|v| v.checked_mul(width));
        if n == 0 || len != Some(inputs.len()) {
            return fail!(Input, "{} values are not {n} inputs of 3 x {height} x {width}", inputs.len());
        }
        self.check_forward(height, width)?;
        let len = n.saturating_mul(self.model.graph.num_classes);
        taped(&self.tape, len, n, || self.executor.logits_batch(inputs, n, height, width))
    }

    /// Records or replays the batched calls from now on (`crate::tape`), or computes them again
    /// (`None`); returns the taping that was in force.
    pub fn set_taping(&mut self, taping: Option<Taping>) -> Option<Taping> {
        std::mem::replace(self.tape.get_mut(), taping)
    }

    /// Marks that the batched calls after this point may depend on the outputs of those before it
    /// (`Taping::barrier`); nothing without a taping.
    pub fn tape_barrier(&self) {
        if let Some(t) = self.tape.borrow_mut().as_mut() {
            t.barrier();
        }
    }

    /// How many inputs one `logits_batch` call should take (the executor's choice).
    pub fn forward_batch(&self) -> usize {
        self.executor.forward_batch()
    }

    pub fn backend(&self) -> &'static str {
        self.executor.name()
    }

    /// Bytes kept between calls besides the model: the CPU's transformed conv weights, built on
    /// first use within a budget of 1.5x the weights.
    pub fn kept_bytes(&self) -> usize {
        self.executor.kept_bytes()
    }

    pub fn top_k(&self, logits: &[f32], k: usize) -> Vec<Prediction> {
        let probs = softmax(logits);
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        idx.into_iter().take(k).map(|c| Prediction { class: c, label: self.model.labels[c].clone(), logit: logits[c], probability: probs[c] }).collect()
    }

    fn preprocess_for(&self, opts: &ExplainOptions) -> Preprocess {
        let mut p = self.model.default_preprocess();
        if let Some(r) = &opts.resize {
            p.resize = r.clone();
        }
        p
    }

    /// The logits of the forward pass kept for reuse (the last image or tensor explained), if any.
    pub fn last_logits(&self) -> Option<&[f32]> {
        self.cache.as_ref().map(|c| c.pass.logits())
    }

    /// Top-k classes of an image.
    pub fn predict(&mut self, image: &RgbImage, k: usize) -> Result<Vec<Prediction>> {
        let opts = ExplainOptions::default();
        self.ensure_pass(image, &opts)?;
        let logits = self.cache.as_ref().map(|c| c.pass.logits().to_vec()).unwrap_or_default();
        Ok(self.top_k(&logits, k))
    }

    fn layer_id(&self, opts: &ExplainOptions) -> Result<NodeId> {
        let name = match (opts.layers.as_slice(), &opts.layer) {
            ([], layer) => layer.clone().unwrap_or_else(|| self.model.default_layer()),
            ([one], None) => one.clone(),
            (_, Some(_)) => return fail!(Option, "give the target layer as `layer` or as `layers`, not both"),
            (_, None) => return fail!(Option, "several layers at once are explained by `explain` and `explain_tensor`, one forward pass each"),
        };
        let id = self.model.graph.find(&name)?;
        if matches!(self.model.graph.nodes[id].op, Op::Linear(_) | Op::Flatten | Op::Input) {
            return fail!(Option, "layer '{name}' has no spatial map to explain; pick a conv, pool or block layer");
        }
        Ok(id)
    }

    /// The key of the forward pass this image, layer and preprocessing need, and the layer's node.
    pub fn pass_key(&self, image: &RgbImage, opts: &ExplainOptions) -> Result<(PassKey, NodeId)> {
        let layer = self.layer_id(opts)?;
        let p = self.preprocess_for(opts);
        Ok(((fingerprint(&image.data, image.width, image.height), layer, format!("{:?}", p.resize)), layer))
    }

    /// The network input for an image (resized, cropped, normalized) and where it sits on the image.
    pub fn prepare_input(&self, image: &RgbImage, opts: &ExplainOptions) -> Result<(FeatureMap, Geometry)> {
        let prepared = preprocess(image, &self.preprocess_for(opts)).map_err(Error::Input)?;
        Ok((FeatureMap::new(3, prepared.height, prepared.width, prepared.tensor), prepared.geometry))
    }

    /// Runs (or reuses) the forward pass for this image, layer and preprocessing. Returns
    /// (preprocess ms, forward ms, reused).
    fn ensure_pass(&mut self, image: &RgbImage, opts: &ExplainOptions) -> Result<(f64, f64, bool)> {
        let (key, layer) = self.pass_key(image, opts)?;
        if self.cache.as_ref().is_some_and(|c| c.key == key) {
            return Ok((0.0, 0.0, true));
        }
        let t0 = now_ms();
        self.cache = None; // a failure below must not leave a stale pass behind
                           // The budget, from the input size the preprocessing will produce, before it allocates.
        let (w, h) = match self.preprocess_for(opts).resize {
            Resize::Exact { width, height } => (width, height),
            Resize::ShorterSide { crop: Some(crop), .. } => crop,
            Resize::ShorterSide { size, crop: None } => crate::imaging::preprocess::shorter_side_size(image.width, image.height, size),
        };
        // (Sizes over the pixel limit are refused by the preprocessing itself, with its message.)
        if w > 0 && h > 0 && w.checked_mul(h).is_some_and(|n| n <= crate::imaging::preprocess::MAX_NETWORK_INPUT_PIXELS) {
            self.check_forward(h, w)?;
        }
        let (input, geometry) = self.prepare_input(image, opts)?;
        let t1 = now_ms();
        self.check_forward(input.height, input.width)?;
        let pass = self.executor.start_for(input.clone(), layer, reads_input_gradient(opts.method))?;
        self.keep_pass(key, pass, input, geometry)?;
        Ok((t1 - t0, now_ms() - t1, false))
    }

    fn keep_pass(&mut self, key: PassKey, pass: Box<dyn Pass>, input: FeatureMap, geometry: Geometry) -> Result<()> {
        self.cache = None;
        let bad_logit = pass.logits().iter().position(|v| !v.is_finite());
        let bad_activation = pass.activations().data.iter().any(|v| !v.is_finite());
        if bad_logit.is_some() || bad_activation {
            drop(pass);
            return Err(self.name_non_finite(&input, bad_logit, key.1));
        }
        self.cache = Some(CachedPass { key, pass, input, geometry });
        Ok(())
    }

    /// The error for a pass whose logits (`bad_logit`: the first non-finite class) or target
    /// layer's activations hold NaN or infinity: it names the first layer where such a value
    /// appears, found by one more (unrecorded) forward on the CPU.
    fn name_non_finite(&self, input: &FeatureMap, bad_logit: Option<usize>, layer: NodeId) -> Error {
        let graph = &self.model.graph;
        let what = match bad_logit {
            Some(i) => format!("a non-finite score for class {i}"),
            None => format!("non-finite activations at the target layer '{}'", graph.nodes[layer].name),
        };
        match CpuExecutor::new(graph.clone()).first_non_finite(input) {
            Ok(Some(i)) => {
                let node = &graph.nodes[i];
                let aliases = if node.aliases.is_empty() { String::new() } else { format!(" (also: {})", node.aliases.join(", ")) };
                Error::Numeric(format!(
                    "the network produced {what}: values first become NaN or infinite at layer '{}'{aliases}, a {} layer; check its weights (values that overflow f32, or a batch-norm whose running variance is ~0)",
                    node.name,
                    node.op.kind()
                ))
            }
            _ => Error::Numeric(format!("the network produced {what}; check the input values and the weights")),
        }
    }

    /// Runs `opts.method` on a pass another executor computed (see `exec::RecordedPass`): everything
    /// after the forward and backward passes is this explainer's, so both paths share one code path.
    /// `batched_forwards` answers Score-CAM's masked forwards in its order (else this executor runs them).
    pub fn explain_recorded(&mut self, forward: ForeignPass, opts: &ExplainOptions, batched_forwards: Option<&mut LogitsBatch>, progress: &mut dyn FnMut(usize, usize)) -> Result<Explanation> {
        crate::budget::within(&self.budget(), || self.explain_recorded_within_budget(forward, opts, batched_forwards, progress))
    }

    fn explain_recorded_within_budget(
        &mut self,
        forward: ForeignPass,
        opts: &ExplainOptions,
        batched_forwards: Option<&mut LogitsBatch>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Explanation> {
        let ForeignPass { key, pass, input, geometry } = forward;
        let t0 = now_ms();
        let layer = key.1;
        self.keep_pass(key, pass, input, geometry)?;
        let result = crate::cancel::run_sync(self.run_method(layer, opts, batched_forwards, progress));
        // A recorded pass answers only this call's target: never let a later call reuse it.
        self.cache = None;
        let mut e = result?;
        e.timings.total_ms = now_ms() - t0;
        Ok(e)
    }

    /// Explains an RGB image (any size): preprocessing, forward, method, and the map on the image.
    pub fn explain(&mut self, image: &RgbImage, opts: &ExplainOptions) -> Result<Explanation> {
        self.explain_with_progress(image, opts, &mut |_, _| {})
    }

    /// `explain`, reporting progress of the long methods (Score-CAM: channels done, channels total).
    pub fn explain_with_progress(&mut self, image: &RgbImage, opts: &ExplainOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<Explanation> {
        crate::cancel::run_sync(self.explain_with_progress_async(image, opts, progress))
    }

    /// `explain_with_progress`, pausing between the batches of the long methods where a pause is
    /// installed (`crate::cancel`: the browser's worker then reads an abort message mid-run).
    pub async fn explain_with_progress_async(&mut self, image: &RgbImage, opts: &ExplainOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<Explanation> {
        if several_layers(opts)? {
            let t0 = now_ms();
            let mut each = Vec::with_capacity(opts.layers.len());
            for one in one_per_layer(opts) {
                let budget = self.budget();
                each.push(crate::budget::within_async(&budget, self.explain_image_within_budget(image, &one, progress)).await?);
            }
            return combine_each_layer(each, opts, t0);
        }
        let budget = self.budget();
        crate::budget::within_async(&budget, self.explain_image_within_budget(image, opts, progress)).await
    }

    async fn explain_image_within_budget(&mut self, image: &RgbImage, opts: &ExplainOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<Explanation> {
        let t0 = now_ms();
        if opts.aug_smooth {
            let (input, geometry) = self.prepare_input(image, opts)?;
            let mut e = self.aug_smoothed(input, geometry, opts, progress).await?;
            e.timings.total_ms = now_ms() - t0;
            return Ok(e);
        }
        let layer = self.layer_id(opts)?;
        let (pre_ms, fwd_ms, reused) = self.ensure_pass(image, opts)?;
        let mut e = self.run_method(layer, opts, None, progress).await?;
        e.timings.preprocess_ms = pre_ms;
        e.timings.forward_ms = fwd_ms;
        e.forward_reused = reused;
        e.timings.total_ms = now_ms() - t0;
        Ok(e)
    }

    /// Explains an already-preprocessed 3 x H x W tensor (for checking against other implementations).
    /// The "image" is then the tensor's own grid.
    pub fn explain_tensor(&mut self, input: FeatureMap, opts: &ExplainOptions) -> Result<Explanation> {
        crate::cancel::run_sync(self.explain_tensor_async(input, opts))
    }

    /// `explain_tensor`, pausing between batches as `explain_with_progress_async` does.
    pub async fn explain_tensor_async(&mut self, input: FeatureMap, opts: &ExplainOptions) -> Result<Explanation> {
        if several_layers(opts)? {
            let t0 = now_ms();
            let mut each = Vec::with_capacity(opts.layers.len());
            for one in one_per_layer(opts) {
                let budget = self.budget();
                each.push(crate::budget::within_async(&budget, self.explain_tensor_within_budget(input.clone(), &one)).await?);
            }
            return combine_each_layer(each, opts, t0);
        }
        let budget = self.budget();
        crate::budget::within_async(&budget, self.explain_tensor_within_budget(input, opts)).await
    }

    async fn explain_tensor_within_budget(&mut self, input: FeatureMap, opts: &ExplainOptions) -> Result<Explanation> {
        let t0 = now_ms();
        if input.channels != 3 || input.data.len() != 3 * input.height * input.width {
            return fail!(Input, "expected a 3 x H x W tensor, got {} channels and {} values", input.channels, input.data.len());
        }
        if let Some(i) = input.data.iter().position(|v| !v.is_finite()) {
            return fail!(Input, "the input tensor holds a non-finite value at flat index {i}");
        }
        if opts.aug_smooth {
            let geometry = Geometry::identity(input.width, input.height);
            // Boxed: a pass of aug smoothing is itself an explanation of a tensor.
            let mut e = Box::pin(self.aug_smoothed(input, geometry, opts, &mut |_, _| {})).await?;
            e.timings.total_ms = now_ms() - t0;
            return Ok(e);
        }
        let layer = self.layer_id(opts)?;
        let bytes: Vec<u8> = input.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let key = (fingerprint(&bytes, input.width, input.height), layer, "tensor".to_string());
        let reused = self.cache.as_ref().is_some_and(|c| c.key == key);
        let t1 = now_ms();
        if !reused {
            let geometry = Geometry::identity(input.width, input.height);
            self.cache = None;
            self.check_forward(input.height, input.width)?;
            let pass = self.executor.start_for(input.clone(), layer, reads_input_gradient(opts.method))?;
            self.keep_pass(key, pass, input, geometry)?;
        }
        let fwd_ms = now_ms() - t1;
        let mut e = self.run_method(layer, opts, None, &mut |_, _| {}).await?;
        e.timings.forward_ms = fwd_ms;
        e.forward_reused = reused;
        e.timings.total_ms = now_ms() - t0;
        Ok(e)
    }

    /// aug_smooth: the method on each of [`AUG_PASSES`] (a fresh forward each), every map after the
    /// sign rule, mirrored back when its input was mirrored, min-max scaled to [0, 1] unless the raw
    /// scale was asked for (pytorch-grad-cam scales each pass so), then averaged and put on the image.
    /// The class is resolved once, on the plain input, so every pass explains the same score.
    async fn aug_smoothed(&mut self, input: FeatureMap, geometry: Geometry, opts: &ExplainOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<Explanation> {
        if opts.method.is_input_resolution() {
            return fail!(Option, "aug smoothing averages maps at the target layer; {} maps the input pixels, so it does not apply", opts.method.label());
        }
        let mut single = ExplainOptions { aug_smooth: false, ..opts.clone() };
        let mut sum: Vec<f32> = Vec::new();
        let mut first: Option<Explanation> = None;
        for (i, &(mirrored, factor)) in AUG_PASSES.iter().enumerate() {
            let x = augment(&input, mirrored, factor);
            let e = self.explain_tensor_async(x, &single).await?;
            let mut map = if mirrored { mirror(&e.raw) } else { e.raw.clone() };
            if opts.normalization == Normalization::MinMax {
                crate::imaging::normalize::min_max(&mut map.data).map_err(Error::Numeric)?;
            }
            if sum.is_empty() {
                sum = vec![0.0; map.data.len()];
            }
            sum.iter_mut().zip(&map.data).for_each(|(s, v)| *s += v);
            if first.is_none() {
                if opts.target == Target::Top1 {
                    single.target = Target::Class(e.class); // the plain input's top-1 for every pass
                }
                first = Some(e);
            }
            progress(i + 1, AUG_PASSES.len());
            crate::cancel::checkpoint().await?;
        }
        let mut e = first.ok_or_else(|| Error::Internal("aug smoothing ran no pass".into()))?;
        let n = AUG_PASSES.len() as f32;
        e.raw = Map::new(e.raw.width, e.raw.height, sum.iter().map(|s| s / n).collect());
        e.image_map = project(&e.raw, &geometry, opts.normalization)?;
        e.geometry = geometry;
        Ok(e)
    }

    /// Resolves the target into a class to report and a weight vector over the logits.
    pub fn resolve_target(&self, target: &Target, logits: &[f32]) -> Result<(usize, Vec<f32>)> {
        let k = logits.len();
        let check = |c: usize| if c < k { Ok(c) } else { fail!(Option, "class index {c} is out of range: this model has {k} classes (0..={})", k - 1) };
        let mut w = vec![0.0f32; k];
        let class = match target {
            Target::Top1 => (0..k).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap_or(0),
            Target::Class(c) => check(*c)?,
            Target::Weighted(pairs) => {
                if pairs.is_empty() {
                    return fail!(Option, "a weighted target needs at least one (class, weight) pair");
                }
                for &(c, wc) in pairs {
                    w[check(c)?] += wc;
                }
                pairs.iter().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).map_or(0, |p| p.0)
            }
        };
        if !matches!(target, Target::Weighted(_)) {
            w[class] = 1.0;
        }
        Ok((class, w))
    }

    async fn run_method(&mut self, layer: NodeId, opts: &ExplainOptions, batched_forwards: Option<&mut LogitsBatch<'_>>, progress: &mut dyn FnMut(usize, usize)) -> Result<Explanation> {
        let t0 = now_ms();
        let logits = self.cache.as_ref().ok_or_else(|| Error::Internal("no forward pass".into()))?.pass.logits().to_vec();
        let (class, target) = self.resolve_target(&opts.target, &logits)?;
        let score: f32 = logits.iter().zip(&target).map(|(l, t)| l * t).sum();
        let probability = softmax(&logits)[class];
        // The forward's layer outputs stay live while the method runs.
        let cached_input = &self.cache.as_ref().ok_or_else(|| Error::Internal("no forward pass".into()))?.input;
        let forward_bytes = self.forward_bytes(cached_input.height, cached_input.width)?;
        let _forward = crate::budget::reserve(forward_bytes, || "the layer outputs of the forward pass".into())?;
        let Explainer { cache, executor, model, tape, .. } = self;
        let cached = cache.as_mut().ok_or_else(|| Error::Internal("no forward pass".into()))?;
        let tokens = model.graph.leading_tokens(layer);
        let black = black_pixel(&model.preprocess.normalize);
        let Computed { map: mut raw, rgb, mut warnings } = compute_map(opts, cached, (executor.as_ref(), tape), batched_forwards, &target, (&model.graph, layer, tokens), black, progress).await?;
        if let Some(i) = raw.data.iter().position(|v| !v.is_finite()) {
            return fail!(Numeric, "the {} map has a non-finite value at cell {i}; the gradients overflowed", opts.method.name());
        }
        if opts.method.sign() == Sign::Relu && !opts.signed {
            raw.data.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        if raw.data.iter().all(|v| *v == 0.0) {
            warnings.push(format!(
                "the {} map is all zero: nothing at layer '{}' raises this class's score; try the counterfactual method, the signed map, or an earlier layer",
                opts.method.name(),
                model.graph.nodes[layer].name
            ));
        }
        let t1 = now_ms();
        let image_map = project(&raw, &cached.geometry, opts.normalization)?;
        let geometry = cached.geometry.clone();
        let t2 = now_ms();
        let top5 = self.top_k(&logits, 5);
        Ok(Explanation {
            method: opts.method,
            // The name the user asked by (or the default's, e.g. `layer4`), not the node's inner one.
            layer: opts.layers.first().or(opts.layer.as_ref()).cloned().unwrap_or_else(|| self.model.default_layer()),
            class,
            label: self.model.labels[class].clone(),
            score,
            probability,
            top5,
            raw,
            image_map,
            rgb,
            geometry,
            forward_reused: false,
            backend: self.executor.name(),
            warnings,
            timings: Timings { method_ms: t1 - t0, project_ms: t2 - t1, ..Default::default() },
        })
    }
}

/// The layer's activation or gradient as the methods take it: a token layer's map (`tokens`: its
/// leading non-patch tokens, `Graph::leading_tokens`) as the grid of its patches.
fn as_grid(m: FeatureMap, tokens: Option<usize>) -> Result<FeatureMap> {
    match tokens {
        Some(leading) => m.tokens_to_grid(leading).map_err(Error::Input),
        None => Ok(m),
    }
}

/// Whether the method reads an input gradient of the explained input itself (so its pass records one).
fn reads_input_gradient(method: Method) -> bool {
    let needs = method.needs();
    needs.guided_input_gradient || needs.deconv_input_gradient || needs.input_gradients || needs.full_gradient
}

/// A layer's bias as FullGrad reads it, and whether it is a 2-D (per-channel, spatial) bias: a conv's
/// (batch-norm folded into it) or an unfolded batch-norm's; a linear layer's counts for the score's
/// decomposition only.
fn bias_of(op: &Op) -> Option<(&[f32], bool)> {
    if let Op::Conv(c) = op {
        Some((&c.bias, true))
    } else if let Op::Affine(a) = op {
        Some((&a.shift, true))
    } else if let Op::Linear(l) = op {
        Some((&l.bias, false))
    } else {
        None
    }
}

/// FullGrad's evidence: one plain walk to the input, each bias layer's gradient reduced as the walk
/// passes it (`Pass::input_gradient_visiting`).
fn gather_full_gradient(pass: &mut dyn Pass, graph: &Graph, target: &[f32]) -> Result<FullGradient> {
    let nodes: Vec<NodeId> = (0..graph.nodes.len()).filter(|&i| bias_of(&graph.nodes[i].op).is_some()).collect();
    let mut layers = Vec::new();
    let mut visit = |i: NodeId, g: FeatureMap| -> Result<()> {
        let Some((bias, spatial)) = bias_of(&graph.nodes[i].op) else { return Ok(()) };
        let signed = fullgrad::bias_share(bias, &g);
        // A token layer's map is drawn on its patch grid (the class token has no place there).
        let map = if spatial { Some(fullgrad::bias_map(bias, &as_grid(g, graph.leading_tokens(i))?)?) } else { None };
        layers.push(BiasTerm { node: i, map, signed });
        Ok(())
    };
    let input_gradient = pass.input_gradient_visiting(target, &nodes, &mut visit)?;
    Ok(FullGradient { input_gradient, layers })
}

/// The network-input value of a black pixel (pixel 0 through the normalization), per channel.
fn black_pixel(normalize: &Normalize) -> [f32; 3] {
    match normalize {
        Normalize::MeanStd { mean, std } => std::array::from_fn(|c| -mean[c] / std[c]),
        Normalize::Affine { offset, scale } => [-offset / scale; 3],
    }
}

/// Gathers from the pass what the method needs (its `Evidence`) and runs it.
#[allow(clippy::too_many_arguments)]
async fn compute_map(
    opts: &ExplainOptions,
    c: &mut CachedPass,
    (executor, tape): (&dyn Executor, &RefCell<Option<Taping>>),
    batched_forwards: Option<&mut LogitsBatch<'_>>,
    target: &[f32],
    (graph, layer, tokens): (&Graph, NodeId, Option<usize>),
    black: [f32; 3],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Computed> {
    let needs = opts.method.needs();
    let activations = as_grid(c.pass.activations().clone(), tokens)?;
    let layer_gradient = if needs.layer_gradient { Some(as_grid(c.pass.layer_gradient(target)?, tokens)?) } else { None };
    let guided_input_gradient = if needs.guided_input_gradient { Some(c.pass.input_gradient(target, ReluRule::Guided)?) } else { None };
    let full_gradient = if needs.full_gradient { Some(gather_full_gradient(c.pass.as_mut(), graph, target)?) } else { None };
    let deconv_input_gradient = if needs.deconv_input_gradient { Some(c.pass.input_gradient(target, ReluRule::Deconv)?) } else { None };
    let (h, w) = (c.input.height, c.input.width);
    let classes = graph.num_classes;
    let mut run = |x: &[f32], n: usize| executor.logits_batch(x, n, h, w);
    let computed: &mut LogitsBatch = match batched_forwards {
        Some(given) => given,
        None => &mut run,
    };
    let mut forwards = |x: &[f32], n: usize| taped(tape, n.saturating_mul(classes), n, || computed(x, n));
    let mut score_cam = opts.score_cam;
    score_cam.batch = Some(score_cam.batch.unwrap_or(executor.forward_batch()));
    let classifier_weights = if needs.classifier_weights { Some(crate::methods::class_activation::classifier_weights(graph, layer, target)?) } else { None };
    if needs.layer_forwards && tokens.is_some() {
        return fail!(Option, "{} re-runs the network from the layer's channels, which a token layer does not have as maps; pick a convolutional layer", opts.method.label());
    }
    let shape = (activations.channels, activations.height, activations.width);
    let mut from_layer = |x: &[f32], n: usize| taped(tape, n.saturating_mul(classes), n, || executor.logits_from_layer(layer, x, n, shape));
    // Plain input gradients, one pass each through the pass's layer (the explained input itself
    // reuses the kept pass).
    let (input, pass) = (&c.input, &mut c.pass);
    let mut input_gradients = |x: &[f32], n: usize| -> Result<Vec<f32>> { taped(tape, x.len(), n, || input_gradients_at(x, n, (input, pass.as_mut()), executor, (layer, target))) };
    let mut progress = |done: usize, total: usize| match tape.borrow().as_ref() {
        // A shard reports the inputs it computed: the shards' counts add up to the whole.
        Some(t) if t.is_recording() => progress(t.units(), total),
        _ => progress(done, total),
    };
    let mut attribution = opts.attribution;
    attribution.batch = Some(attribution.batch.unwrap_or(executor.forward_batch()));
    attribution.black = Some(attribution.black.unwrap_or(black));
    let mut evidence = Evidence {
        activations: &activations,
        layer_gradient: layer_gradient.as_ref(),
        guided_input_gradient: guided_input_gradient.as_ref(),
        deconv_input_gradient: deconv_input_gradient.as_ref(),
        input,
        target,
        forwards: &mut forwards,
        input_gradients: &mut input_gradients,
        attribution,
        score_cam,
        progress: &mut progress,
        classifier_weights: classifier_weights.as_deref(),
        layer_forwards: if needs.layer_forwards { Some(&mut from_layer) } else { None },
        forward_batch: executor.forward_batch(),
        full_gradient: full_gradient.as_ref(),
    };
    if opts.eigen_smooth {
        return crate::methods::smooth::eigen_smoothed_async(opts.method, &mut evidence).await;
    }
    opts.method.compute_async(&mut evidence).await
}

/// A batched call through the taping when one is in force (`crate::tape`), else `run` itself.
fn taped(tape: &RefCell<Option<Taping>>, len: usize, units: usize, run: impl FnOnce() -> Result<Vec<f32>>) -> Result<Vec<f32>> {
    match tape.borrow_mut().as_mut() {
        Some(t) => t.call(len, units, run),
        None => run(),
    }
}

/// Plain input gradients at `n` inputs of the pass's shape (the explained input itself reuses the
/// kept pass; every other one runs a pass of its own through the target layer).
fn input_gradients_at(x: &[f32], n: usize, (input, pass): (&FeatureMap, &mut dyn Pass), executor: &dyn Executor, (layer, target): (NodeId, &[f32])) -> Result<Vec<f32>> {
    let (h, w) = (input.height, input.width);
    let mut out = Vec::with_capacity(x.len());
    for xi in x.chunks_exact(3 * h * w).take(n) {
        let g = if xi == input.data.as_slice() {
            pass.input_gradient(target, ReluRule::Plain)?
        } else {
            executor.start_for(FeatureMap::new(3, h, w, xi.to_vec()), layer, true)?.input_gradient(target, ReluRule::Plain)?
        };
        out.extend_from_slice(&g.data);
    }
    Ok(out)
}

/// `opts` once per layer of `opts.layers` (see `ExplainOptions::layers`).
fn one_per_layer(opts: &ExplainOptions) -> Vec<ExplainOptions> {
    opts.layers.iter().map(|name| ExplainOptions { layer: Some(name.clone()), layers: Vec::new(), ..opts.clone() }).collect()
}

/// Combines the explanations of each layer (started at `t0`) into one: their maps as one map.
fn combine_each_layer(mut each: Vec<Explanation>, opts: &ExplainOptions, t0: f64) -> Result<Explanation> {
    let raw = combine_layers(&each.iter().map(|e| &e.raw).collect::<Vec<_>>())?;
    let rgb = mean_rgb(&each);
    let mut warnings: Vec<String> = Vec::new();
    for w in each.iter().flat_map(|e| &e.warnings) {
        if !warnings.contains(w) {
            warnings.push(w.clone());
        }
    }
    let reused = each.iter().all(|e| e.forward_reused);
    let mut timings = Timings::default();
    for t in each.iter().map(|e| &e.timings) {
        timings.preprocess_ms += t.preprocess_ms;
        timings.forward_ms += t.forward_ms;
        timings.method_ms += t.method_ms;
    }
    let first = each.swap_remove(0);
    let t1 = now_ms();
    let image_map = project(&raw, &first.geometry, opts.normalization)?;
    timings.project_ms = now_ms() - t1;
    timings.total_ms = now_ms() - t0;
    Ok(Explanation { layer: opts.layers.join(","), raw, image_map, rgb, warnings, forward_reused: reused, timings, ..first })
}

/// Whether `opts` asks for several layers at once (one in `layers` is just that layer).
fn several_layers(opts: &ExplainOptions) -> Result<bool> {
    if !opts.layers.is_empty() && opts.layer.is_some() {
        return fail!(Option, "give the target layer as `layer` or as `layers`, not both");
    }
    Ok(opts.layers.len() > 1)
}

/// Several layers' maps as one, as pytorch-grad-cam combines its target layers: each min-max scaled
/// to [0, 1] (a constant map becomes 0), bilinearly resized to the finest grid among them, and
/// averaged. The finest grid rather than the input's keeps a layer method's map at layer scale; the
/// projection onto the image resizes it once more.
pub fn combine_layers(maps: &[&Map]) -> Result<Map> {
    let finest = maps.iter().max_by_key(|m| m.width * m.height).ok_or_else(|| Error::Internal("no layer maps to combine".into()))?;
    let (w, h) = (finest.width, finest.height);
    let mut sum = vec![0.0f32; w * h];
    for m in maps {
        let mut scaled = m.data.clone();
        crate::imaging::normalize::min_max(&mut scaled).map_err(Error::Numeric)?;
        let up = crate::imaging::project::upsample_bilinear(&scaled, m.width, m.height, w, h).map_err(Error::Internal)?;
        sum.iter_mut().zip(up).for_each(|(s, v)| *s += v);
    }
    let n = maps.len() as f32;
    Ok(Map::new(w, h, sum.into_iter().map(|v| v / n).collect()))
}

/// The mean of the layers' RGB images, when every layer gave one of the same size (Guided Grad-CAM's).
fn mean_rgb(each: &[Explanation]) -> Option<FeatureMap> {
    let first = each.first()?.rgb.as_ref()?;
    let mut sum = vec![0.0f32; first.data.len()];
    for e in each {
        let rgb = e.rgb.as_ref().filter(|r| r.data.len() == sum.len())?;
        sum.iter_mut().zip(&rgb.data).for_each(|(s, v)| *s += v);
    }
    let n = each.len() as f32;
    Some(FeatureMap::new(first.channels, first.height, first.width, sum.into_iter().map(|v| v / n).collect()))
}

/// Puts a map on the original image's grid; min-max normalizes over the pixels the network saw.
pub fn project(raw: &Map, geometry: &Geometry, normalization: Normalization) -> Result<Map> {
    // The map on the image and its crop mask.
    let pixels = geometry.orig_w.saturating_mul(geometry.orig_h);
    crate::budget::reserve_floats(pixels.saturating_mul(2), || format!("the {}x{} map on the image", geometry.orig_w, geometry.orig_h))?.keep();
    let mut data = project_to_image(&raw.data, raw.width, raw.height, geometry).map_err(Error::Internal)?;
    if normalization == Normalization::MinMax {
        let inside = crop_mask(geometry).map_err(Error::Internal)?;
        crate::imaging::normalize::min_max_masked(&mut data, &inside).map_err(Error::Numeric)?;
    }
    Ok(Map::new(geometry.orig_w, geometry.orig_h, data))
}

/// aug_smooth's input: mirrored left-right when asked, times `factor`.
pub fn augment(input: &FeatureMap, mirrored: bool, factor: f32) -> FeatureMap {
    let w = input.width;
    let data = input.data.chunks_exact(w.max(1)).flat_map(|row| (0..w).map(move |x| factor * row[if mirrored { w - 1 - x } else { x }])).collect();
    FeatureMap::new(input.channels, input.height, w, data)
}

/// A map mirrored left-right.
pub fn mirror(m: &Map) -> Map {
    let w = m.width;
    Map::new(w, m.height, m.data.chunks_exact(w.max(1)).flat_map(|row| row.iter().rev().copied()).collect())
}
