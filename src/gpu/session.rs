//! `GpuSession`: explanations whose forward and backward passes run on the GPU, asynchronously.
//!
//! The browser cannot block on the GPU, so the synchronous `Pass` interface the methods use cannot wait
//! for it. Instead the session awaits everything the method needs (`Method::needs`): the forward (kept
//! alive on the GPU and reused for further classes of the same image), then the gradients for this
//! target. It hands them to the `Explainer` as a `RecordedPass`, and the explainer runs the method,
//! projection and normalization exactly as on the CPU: the methods never know which executor ran.

use super::{GpuExecutor, GpuPass};
use crate::clock::now_ms;
use crate::error::Result;
use crate::exec::{RecordedPass, ReluRule};
use crate::explainer::{Explainer, Explanation, ForeignPass, PassKey};
use crate::feature_map::FeatureMap;
use crate::imaging::preprocess::Geometry;
use crate::imaging::rgb::RgbImage;
use crate::methods::score::{LogitsBatch, ScoreCamSteps};
use crate::methods::Method;
use crate::ExplainOptions;

/// The forward pass of the last image, alive on the GPU.
struct Live {
    key: PassKey,
    pass: GpuPass,
    input: FeatureMap,
    geometry: Geometry,
}

pub struct GpuSession {
    executor: GpuExecutor,
    live: Option<Live>,
}

impl GpuSession {
    pub fn new(executor: GpuExecutor) -> GpuSession {
        GpuSession { executor, live: None }
    }

    pub fn executor(&self) -> &GpuExecutor {
        &self.executor
    }

    /// Explains `image` with the forward and backward passes (and Score-CAM's masked forwards) on the GPU.
    pub async fn explain(&mut self, explainer: &mut Explainer, image: &RgbImage, opts: &ExplainOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<Explanation> {
        let why = if opts.layers.len() > 1 { Some("the WebGPU session explains one layer at a time") } else { cannot_gather(opts.method) };
        if let Some(why) = why {
            // Never a wrong map: the explainer's own executor (the CPU) runs what this session cannot.
            let mut e = explainer.explain_with_progress(image, opts, progress)?;
            e.warnings.push(format!("{} ran on the {}: {why}", opts.method.label(), e.backend));
            return Ok(e);
        }
        let t0 = now_ms();
        // The GPU's own Score-CAM batch size unless the caller chose one; the replay below uses it too.
        let mut opts = opts.clone();
        opts.score_cam.batch = Some(opts.score_cam.batch.unwrap_or(GpuExecutor::FORWARD_BATCH));
        let opts = &opts;
        let (key, layer) = explainer.pass_key(image, opts)?;
        let (mut pre_ms, mut fwd_ms, reused) = (0.0, 0.0, self.live.as_ref().is_some_and(|l| l.key == key));
        if !reused {
            self.live = None; // a failure below must not leave a stale pass behind
            let t = now_ms();
            let (input, geometry) = explainer.prepare_input(image, opts)?;
            explainer.model().graph.shapes(input.height, input.width)?;
            let t1 = now_ms();
            let pass = self.executor.start_async(input.clone(), layer).await?;
            (pre_ms, fwd_ms) = (t1 - t, now_ms() - t1);
            self.live = Some(Live { key, pass, input, geometry });
        }
        let live = self.live.as_mut().ok_or_else(|| crate::Error::Internal("webgpu: no live pass".into()))?;
        let (_, target) = explainer.resolve_target(&opts.target, live.pass.logits())?;
        let needs = opts.method.needs();
        let layer_gradient = if needs.layer_gradient { Some(live.pass.layer_gradient_async(&target).await?) } else { None };
        let guided_input_gradient = if needs.guided_input_gradient { Some(live.pass.input_gradient_async(&target, ReluRule::Guided).await?) } else { None };
        let deconv_input_gradient = if needs.deconv_input_gradient { Some(live.pass.input_gradient_async(&target, ReluRule::Deconv).await?) } else { None };
        // Score-CAM: its masked forwards run here, awaited; the explainer's Score-CAM replays their logits.
        let mut batched: Vec<Vec<f32>> = Vec::new();
        if needs.batched_forwards {
            let mut steps = ScoreCamSteps::new(live.pass.activations(), &live.input, opts.score_cam);
            let (h, w) = (live.input.height, live.input.width);
            while let Some((masked, n)) = steps.next_batch() {
                let logits = self.executor.logits_batch_async(&masked, n, h, w).await?;
                steps.add_logits(&logits, &target)?;
                let (done, total) = steps.progress();
                progress(done, total);
                crate::cancel::check()?;
                batched.push(logits);
            }
        }
        let mut replay = batched.into_iter();
        let mut replay = move |_: &[f32], _: usize| replay.next().ok_or_else(|| crate::Error::Internal("score-cam: more batches than recorded".into()));
        let replay: Option<&mut LogitsBatch> = if needs.batched_forwards { Some(&mut replay) } else { None };
        let recorded = RecordedPass { logits: live.pass.logits().to_vec(), activations: live.pass.activations().clone(), target, layer_gradient, guided_input_gradient, deconv_input_gradient };
        let forward = ForeignPass { key: live.key.clone(), pass: Box::new(recorded), input: live.input.clone(), geometry: live.geometry.clone() };
        // Ablation-CAM's forwards from the layer run in the explainer (on its CPU executor): it reports them.
        let mut quiet = |_: usize, _: usize| {};
        let progress: &mut dyn FnMut(usize, usize) = if needs.layer_forwards { progress } else { &mut quiet };
        let mut e = explainer.explain_recorded(forward, opts, replay, progress)?;
        e.backend = "webgpu";
        e.forward_reused = reused;
        e.timings.preprocess_ms = pre_ms;
        e.timings.forward_ms = fwd_ms;
        e.timings.total_ms = now_ms() - t0;
        Ok(e)
    }

    /// Whether this session can gather what `method` needs; `Some(why not)` sends it to the CPU.
    pub fn supports(method: Method) -> bool {
        cannot_gather(method).is_none()
    }

    /// Simulates a lost GPU (see `Gpu::lose_device`).
    pub fn lose_device(&mut self) {
        self.live = None;
        self.executor.gpu().lose_device();
    }
}

/// Why the session cannot gather `method`'s needs, if it cannot: it awaits the layer gradient, the
/// guided and deconvolution input gradients and Score-CAM's own masked forwards, nothing else.
fn cannot_gather(method: Method) -> Option<&'static str> {
    let needs = method.needs();
    if needs.input_gradients {
        Some("the WebGPU session computes no plain input gradients at other inputs")
    } else if needs.full_gradient {
        Some("the WebGPU session gathers no gradients at every layer (FullGrad)")
    } else if needs.batched_forwards && method != Method::SCORE_CAM {
        Some("the WebGPU session runs only Score-CAM's batched forwards")
    } else {
        None
    }
}
