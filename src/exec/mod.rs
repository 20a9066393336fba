//! Executors run the layer graph. Each gives a `Pass`: one forward pass of one image that keeps what
//! its backward passes need, so explaining another class re-runs only the backward.

pub mod candle_ops;
pub mod cpu;

use crate::error::Result;
use crate::feature_map::FeatureMap;
use crate::graph::NodeId;
pub use crate::kernels::ReluRule;

pub trait Executor {
    /// A short name for reports ("cpu", "webgpu").
    fn name(&self) -> &'static str;

    /// Runs the forward pass of one 3 x H x W input, keeping the activations of `layer`.
    fn start(&self, input: FeatureMap, layer: NodeId) -> Result<Box<dyn Pass>>;

    /// `start`, told whether an input gradient will be asked of the pass, so that an executor may
    /// skip recording what only input gradients need (the pass must still answer one if asked).
    fn start_for(&self, input: FeatureMap, layer: NodeId, input_gradient: bool) -> Result<Box<dyn Pass>> {
        let _ = input_gradient;
        self.start(input, layer)
    }

    /// Logits of `n` inputs of 3 x h x w each (row-major n x classes); no gradients. For Score-CAM.
    fn logits_batch(&self, inputs: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>>;

    /// How many inputs one `logits_batch` call should take when the caller does not say. The CPU
    /// executor runs a batch image by image through the wide early layers and as one batch through
    /// the late ones, whose convs take the images side by side as their products' columns: per
    /// image that stays at one image's cost (EfficientNet-Lite0 in node's wasm: 0.90-0.98x of the old
    /// batch of 4 per image) and a batch's live heap grows slowly (8 MB at 4 images, 23 MB at 16,
    /// from 23 and 92), but a batch of 8 measured no clear gain over 4 (docs/performance.md, 18).
    /// On a GPU each batch is a round trip to the device.
    fn forward_batch(&self) -> usize {
        4
    }

    /// Logits of `n` copies of `layer`'s activations (n x C x H x W, `shape` = (C, H, W)), running only
    /// the layers after it (row-major n x classes); no gradients. For Ablation-CAM. An executor that
    /// cannot says so; none may answer from anything but these activations.
    fn logits_from_layer(&self, layer: NodeId, activations: &[f32], n: usize, shape: (usize, usize, usize)) -> Result<Vec<f32>> {
        let _ = (layer, activations, n, shape);
        Err(crate::Error::Option(format!("re-running the network from a layer (Ablation-CAM) is not supported by the {} backend; use the cpu backend", self.name())))
    }

    /// Bytes the executor keeps between calls besides the model (the CPU's transformed weights).
    fn kept_bytes(&self) -> usize {
        0
    }
}

pub trait Pass {
    /// Class scores before softmax.
    fn logits(&self) -> &[f32];

    /// The target layer's activations A.
    fn activations(&self) -> &FeatureMap;

    /// d(sum_c target[c] * y_c) / dA at the target layer.
    fn layer_gradient(&mut self, target: &[f32]) -> Result<FeatureMap>;

    /// d(sum_c target[c] * y_c) / d input, every ReLU/ReLU6 passing gradients back by `rule`.
    fn input_gradient(&mut self, target: &[f32], rule: ReluRule) -> Result<FeatureMap>;

    /// The plain input gradient, from one walk that hands `visit` the gradient at the output of each
    /// of `nodes` (C x H x W; a linear layer's C x 1 x 1) as it passes it. Each is reduced there and
    /// dropped, so a method reading every layer (FullGrad) never holds them all. An executor that
    /// cannot says so.
    fn input_gradient_visiting(&mut self, target: &[f32], nodes: &[NodeId], visit: &mut dyn FnMut(NodeId, FeatureMap) -> Result<()>) -> Result<FeatureMap> {
        let _ = (target, nodes, visit);
        Err(crate::Error::Option("gradients at every layer in one walk (FullGrad) are computed by the cpu backend only; use it".into()))
    }
}

/// A pass whose results were computed beforehand (by an executor that answers asynchronously, such as
/// WebGPU in the browser): logits, activations and the gradients one method asked for, for one target.
/// Asking it for anything else is an internal error, never a wrong answer.
pub struct RecordedPass {
    pub logits: Vec<f32>,
    pub activations: FeatureMap,
    /// The target weights the gradients below were computed for.
    pub target: Vec<f32>,
    pub layer_gradient: Option<FeatureMap>,
    pub guided_input_gradient: Option<FeatureMap>,
    pub deconv_input_gradient: Option<FeatureMap>,
}

impl RecordedPass {
    fn recorded<'a>(&self, what: &str, target: &[f32], value: &'a Option<FeatureMap>) -> Result<&'a FeatureMap> {
        match value {
            Some(v) if target == self.target.as_slice() => Ok(v),
            _ => Err(crate::Error::Internal(format!("the recorded pass holds no {what} for this target"))),
        }
    }
}

impl Pass for RecordedPass {
    fn logits(&self) -> &[f32] {
        &self.logits
    }

    fn activations(&self) -> &FeatureMap {
        &self.activations
    }

    fn layer_gradient(&mut self, target: &[f32]) -> Result<FeatureMap> {
        self.recorded("layer gradient", target, &self.layer_gradient).cloned()
    }

    fn input_gradient(&mut self, target: &[f32], rule: ReluRule) -> Result<FeatureMap> {
        match rule {
            ReluRule::Plain => Err(crate::Error::Internal("the recorded pass holds no plain input gradient".into())),
            ReluRule::Guided => self.recorded("guided input gradient", target, &self.guided_input_gradient).cloned(),
            ReluRule::Deconv => self.recorded("deconvolution input gradient", target, &self.deconv_input_gradient).cloned(),
        }
    }
}
