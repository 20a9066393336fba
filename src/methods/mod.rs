//! Explanation methods. Each is one declared unit, a [`MethodDef`]: its name and aliases, label and
//! one-line help, what it needs from the forward pass, the grid its map lives on, its sign rule, and
//! `compute`, which reads only the [`Evidence`] an executor gathered (synchronously on the CPU,
//! awaited on WebGPU), so no method knows which executor ran. [`ALL`] lists them; everything else
//! (the CLI, the JS `methods()`, the page's menu and help) reads from there. docs/methods.md says how
//! to add one.

pub mod ablation;
pub mod attribution;
pub mod cam;
pub mod class_activation;
pub mod eigen;
pub mod fullgrad;
pub mod guided;
pub mod score;
pub mod smooth;

use crate::error::{Error, Result};
use crate::fail;
use crate::feature_map::{FeatureMap, Map};
use attribution::{AttributionOptions, InputGradients};
use fullgrad::FullGradient;
use score::ScoreCamOptions;

/// What a method asks of a forward pass beyond logits and activations, so an executor whose
/// results arrive asynchronously (WebGPU in the browser) can gather them before the method runs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Needs {
    /// d score / d A at the target layer.
    pub layer_gradient: bool,
    /// d score / d input through guided ReLUs.
    pub guided_input_gradient: bool,
    /// d score / d input with deconvolution's ReLUs (the positive part of every gradient).
    pub deconv_input_gradient: bool,
    /// Forwards of modified copies of the input (Score-CAM's masked inputs).
    pub batched_forwards: bool,
    /// The classifier's weights per channel of the layer, for the target (CAM: the layer must feed
    /// global average pooling and then the linear classifier directly).
    pub classifier_weights: bool,
    /// Logits of modified copies of the layer's activations, running only the layers after it
    /// (Ablation-CAM).
    pub layer_forwards: bool,
    /// Plain input gradients (ordinary ReLU backward) at inputs the method chooses (Integrated
    /// Gradients' path, SmoothGrad's noisy copies): each one more forward and backward.
    pub input_gradients: bool,
    /// The input gradient and, from the same walk, each bias layer's share (FullGrad).
    pub full_gradient: bool,
}

impl Needs {
    pub const NOTHING: Needs = Needs {
        layer_gradient: false,
        guided_input_gradient: false,
        deconv_input_gradient: false,
        batched_forwards: false,
        classifier_weights: false,
        layer_forwards: false,
        input_gradients: false,
        full_gradient: false,
    };
    pub const LAYER_GRADIENT: Needs = Needs { layer_gradient: true, ..Needs::NOTHING };
}

/// Where a method's map lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// The target layer's H x W.
    Layer,
    /// The network input's pixels.
    Input,
}

/// What happens to the sign of the map a method computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    /// The paper's final ReLU, unless the signed map is asked for.
    Relu,
    /// Kept as computed: the map is a magnitude, or its sign is its own (Eigen-CAM's).
    AsComputed,
}

/// Runs `n` inputs of 3 x H x W and returns their n x classes logits.
pub type Forwards<'a> = dyn FnMut(&[f32], usize) -> Result<Vec<f32>> + 'a;

/// Runs `n` copies of the target layer's activations (n x C x H x W) through the layers after it
/// and returns their n x classes logits.
pub type LayerForwards<'a> = dyn FnMut(&[f32], usize) -> Result<Vec<f32>> + 'a;

/// Everything an executor gathers for one explanation, as `Needs` asked; the one input of every
/// method's `compute`. Token layers arrive already as their patch grid.
pub struct Evidence<'a> {
    /// The target layer's activations, C x H x W.
    pub activations: &'a FeatureMap,
    /// d score / d activations (when `needs.layer_gradient`).
    pub layer_gradient: Option<&'a FeatureMap>,
    /// d score / d input through guided ReLUs, 3 x H x W (when `needs.guided_input_gradient`).
    pub guided_input_gradient: Option<&'a FeatureMap>,
    /// The input "gradient" through deconvolution's ReLUs, 3 x H x W (when `needs.deconv_input_gradient`).
    pub deconv_input_gradient: Option<&'a FeatureMap>,
    /// The network input the pass ran on.
    pub input: &'a FeatureMap,
    /// The explained score's weights over the logits.
    pub target: &'a [f32],
    /// Batched forwards of modified inputs (when `needs.batched_forwards`).
    pub forwards: &'a mut Forwards<'a>,
    /// Score-CAM's settings, its batch already chosen by the executor.
    pub score_cam: ScoreCamOptions,
    /// Plain input gradients at n inputs (n x 3 x H x W in and out; when `needs.input_gradients`).
    pub input_gradients: &'a mut InputGradients<'a>,
    /// The attribution methods' settings, the batch and the black pixel already filled in.
    pub attribution: AttributionOptions,
    /// (done, total) of a method that takes more than one forward.
    pub progress: &'a mut dyn FnMut(usize, usize),
    /// w_k = sum_c target[c] * W[c, k] of the linear classifier after the layer's global average pool
    /// (when `needs.classifier_weights`).
    pub classifier_weights: Option<&'a [f32]>,
    /// Forwards from modified layer activations (when `needs.layer_forwards`).
    pub layer_forwards: Option<&'a mut LayerForwards<'a>>,
    /// Copies per batched forward, the executor's choice (`Executor::forward_batch`).
    pub forward_batch: usize,
    /// The input gradient and every bias layer's reduction, from one walk (when `needs.full_gradient`).
    pub full_gradient: Option<&'a FullGradient>,
}

impl<'a> Evidence<'a> {
    /// The evidence every method has, with the optional parts absent and default settings; fill in
    /// the rest with struct update syntax (`Evidence { layer_gradient: Some(g), ..Evidence::new(...) }`).
    pub fn new(
        activations: &'a FeatureMap,
        input: &'a FeatureMap,
        target: &'a [f32],
        forwards: &'a mut Forwards<'a>,
        input_gradients: &'a mut InputGradients<'a>,
        progress: &'a mut dyn FnMut(usize, usize),
    ) -> Evidence<'a> {
        Evidence {
            activations,
            layer_gradient: None,
            guided_input_gradient: None,
            deconv_input_gradient: None,
            input,
            target,
            forwards,
            score_cam: ScoreCamOptions::default(),
            input_gradients,
            attribution: AttributionOptions::default(),
            progress,
            classifier_weights: None,
            layer_forwards: None,
            forward_batch: 1,
            full_gradient: None,
        }
    }

    pub fn layer_gradient(&self) -> Result<&FeatureMap> {
        self.layer_gradient.ok_or_else(|| Error::Internal("the layer gradient was not gathered".into()))
    }

    pub fn guided_input_gradient(&self) -> Result<&FeatureMap> {
        self.guided_input_gradient.ok_or_else(|| Error::Internal("the guided input gradient was not gathered".into()))
    }

    pub fn deconv_input_gradient(&self) -> Result<&FeatureMap> {
        self.deconv_input_gradient.ok_or_else(|| Error::Internal("the deconvolution input gradient was not gathered".into()))
    }

    pub fn classifier_weights(&self) -> Result<&[f32]> {
        self.classifier_weights.ok_or_else(|| Error::Internal("the classifier weights were not gathered".into()))
    }
}

/// A method's result: the map (signed, before the sign rule) and, for input-gradient methods, the
/// gradient as an RGB image in [0, 1].
pub struct Computed {
    pub map: Map,
    pub rgb: Option<FeatureMap>,
    /// What the explanation should warn about (Integrated Gradients' completeness gap).
    pub warnings: Vec<String>,
}

impl From<Map> for Computed {
    fn from(map: Map) -> Computed {
        Computed { map, rgb: None, warnings: Vec::new() }
    }
}

/// One method, declared once (see the module comment).
pub struct MethodDef {
    /// The canonical name (CLI `--method`, JS `method`).
    pub name: &'static str,
    /// Other spellings accepted, compared like the name (case, '-', '_' and spaces ignored).
    pub aliases: &'static [&'static str],
    /// How people write it.
    pub label: &'static str,
    /// One line for menus and `--help`.
    pub help: &'static str,
    pub needs: Needs,
    pub grid: Grid,
    pub sign: Sign,
    pub compute: fn(&mut Evidence) -> Result<Computed>,
}

/// A handle on a [`MethodDef`]; the methods are `Method::GRAD_CAM` and so on, declared beside
/// their maths.
#[derive(Clone, Copy)]
pub struct Method(pub &'static MethodDef);

impl PartialEq for Method {
    fn eq(&self, other: &Method) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Method {}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

/// Every method, in menu order.
pub const ALL: [Method; 23] = [
    Method::GRAD_CAM,
    Method::COUNTERFACTUAL,
    Method::GUIDED_BACKPROP,
    Method::GUIDED_GRAD_CAM,
    Method::DECONVOLUTION,
    Method::DECONV_GRAD_CAM,
    Method::GRAD_CAM_PLUS_PLUS,
    Method::HIRES_CAM,
    Method::XGRAD_CAM,
    Method::LAYER_CAM,
    Method::SCORE_CAM,
    Method::EIGEN_CAM,
    Method::GRAD_CAM_ELEMENTWISE,
    Method::EIGEN_GRAD_CAM,
    Method::KPCA_CAM,
    Method::CAM,
    Method::ABLATION_CAM,
    Method::SALIENCY,
    Method::INPUT_X_GRADIENT,
    Method::INTEGRATED_GRADIENTS,
    Method::SMOOTHGRAD,
    Method::OCCLUSION,
    Method::FULLGRAD,
];

/// Which methods read which of their own options (see `Method::option_keys`); Score-CAM's batch
/// changes only the speed, so it is left out.
const OPTION_KEYS: [(Method, &[&str]); 4] = [
    (Method::INTEGRATED_GRADIENTS, &["igSteps", "igBaseline"]),
    (Method::SMOOTHGRAD, &["smoothSamples", "smoothNoise"]),
    (Method::OCCLUSION, &["occlusionPatch", "occlusionStride", "igBaseline"]),
    (Method::SCORE_CAM, &["scoreCamChannels"]),
];

/// A method's computation as a future whose only awaits are `crate::cancel::checkpoint`s.
pub type ComputeFuture<'r> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Computed>> + 'r>>;

/// A batched method's computation, as a future borrowing its evidence.
type BatchedCompute = for<'r, 'e> fn(&'r mut Evidence<'e>) -> ComputeFuture<'r>;

/// The methods that run batches of forwards, as futures that can pause between batches (see
/// `crate::cancel`): the same code as their `compute`, which runs it synchronously.
const BATCHED: [(Method, BatchedCompute); 5] = [
    (Method::SCORE_CAM, score::score_cam_method),
    (Method::ABLATION_CAM, ablation::ablation_cam_method),
    (Method::INTEGRATED_GRADIENTS, attribution::integrated_gradients_method),
    (Method::SMOOTHGRAD, attribution::smoothgrad_method),
    (Method::OCCLUSION, attribution::occlusion_method),
];

/// Lowercase, without the separators people vary ('-', '_', spaces).
fn key(name: &str) -> String {
    name.trim().to_ascii_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '+').collect()
}

impl Method {
    pub fn name(self) -> &'static str {
        self.0.name
    }

    pub fn label(self) -> &'static str {
        self.0.label
    }

    pub fn help(self) -> &'static str {
        self.0.help
    }

    pub fn needs(self) -> Needs {
        self.0.needs
    }

    /// The `explain` options (their JavaScript names) that change this method's map beyond those
    /// every method takes, so menus can offer exactly these (the page's attribution controls).
    pub fn option_keys(self) -> &'static [&'static str] {
        OPTION_KEYS.iter().find(|(m, _)| *m == self).map_or(&[], |(_, keys)| *keys)
    }

    pub fn grid(self) -> Grid {
        self.0.grid
    }

    pub fn sign(self) -> Sign {
        self.0.sign
    }

    /// Methods whose map lives on the input grid rather than the target layer's.
    pub fn is_input_resolution(self) -> bool {
        self.0.grid == Grid::Input
    }

    pub fn compute(self, evidence: &mut Evidence) -> Result<Computed> {
        (self.0.compute)(evidence)
    }

    /// `compute`, pausing between batches where the method runs batches (see `crate::cancel`).
    pub async fn compute_async(self, evidence: &mut Evidence<'_>) -> Result<Computed> {
        match BATCHED.iter().find(|(m, _)| *m == self) {
            Some((_, batched)) => batched(evidence).await,
            None => self.compute(evidence),
        }
    }

    /// The method called `name` or one of its aliases.
    pub fn from_name(name: &str) -> Result<Method> {
        let k = key(name);
        match ALL.iter().find(|m| key(m.name()) == k || m.0.aliases.iter().any(|a| key(a) == k)) {
            Some(&m) => Ok(m),
            None => {
                let names: Vec<&str> = ALL.iter().map(|m| m.name()).collect();
                fail!(Option, "unknown method '{name}'; choose one of {}", names.join(", "))
            }
        }
    }
}
