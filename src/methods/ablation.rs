//! Ablation-CAM (Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network
//! via Gradient-free Localization"), as pytorch-grad-cam's `AblationCAM` computes it: for each channel
//! k of the layer, the score y_k of the network re-run from the layer with channel k set to zero
//! gives w_k = (y - y_k) / y; the map is sum_k w_k A_k (ReLU'd by the explainer). Gradient-free.
//! Only the layers after the target run, in batches of ablated copies of the activations.
//!
//! (pytorch-grad-cam ablates with min(A) - 1e7 instead of 0 where the layer's minimum is not 0; we
//! keep the paper's zero.)

use super::cam::weighted_sum;
use super::{Grid, LayerForwards, Method, MethodDef, Needs, Sign};
use crate::error::{Error, Result};
use crate::feature_map::{FeatureMap, Map};

impl Method {
    pub const ABLATION_CAM: Method = Method(&MethodDef {
        name: "ablationcam",
        aliases: &["ablation"],
        label: "Ablation-CAM",
        help: "Zeroes each channel in turn and re-runs the layers after it: the score's relative drop weights the channel. Gradient-free, slower.",
        needs: Needs { layer_forwards: true, ..Needs::NOTHING },
        grid: Grid::Layer,
        sign: Sign::Relu,
        compute: |e| crate::cancel::run_sync(ablation_cam_method(e)),
    });
}

pub(super) fn ablation_cam_method<'r, 'e>(e: &'r mut super::Evidence<'e>) -> super::ComputeFuture<'r> {
    Box::pin(async move {
        let forwards = e.layer_forwards.as_deref_mut().ok_or_else(|| Error::Internal("the layer forwards were not gathered".into()))?;
        Ok(weighted_sum(e.activations, &ablation_weights_async(e.activations, e.target, e.forward_batch, forwards, e.progress).await?).into())
    })
}

/// The most bytes one batch of ablated copies may hold (f32): 64 MiB, checked before it is allocated.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// `forwards(copies, n)` runs n copies of the layer's activations and returns n x classes logits; the
/// first batch also carries the unablated activations, whose score is y (so y and every y_k come from
/// the same computation). `progress(done, total)` counts channels.
pub fn ablation_cam(a: &FeatureMap, target: &[f32], batch: usize, forwards: &mut LayerForwards, progress: &mut dyn FnMut(usize, usize)) -> Result<Map> {
    Ok(weighted_sum(a, &ablation_weights(a, target, batch, forwards, progress)?))
}

/// Ablation-CAM's per-channel weights, (y - y_k) / y.
pub fn ablation_weights(a: &FeatureMap, target: &[f32], batch: usize, forwards: &mut LayerForwards, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<f32>> {
    crate::cancel::run_sync(ablation_weights_async(a, target, batch, forwards, progress))
}

/// `ablation_weights`, pausing between batches (`crate::cancel::checkpoint`).
pub async fn ablation_weights_async(a: &FeatureMap, target: &[f32], batch: usize, forwards: &mut LayerForwards<'_>, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<f32>> {
    let (c, per_copy) = (a.channels, a.data.len());
    let classes = target.len();
    let batch = batch.max(1).min(MAX_BATCH_BYTES / (per_copy * 4).max(1)).max(1);
    let score = |row: &[f32]| -> f32 { row.iter().zip(target).map(|(l, t)| l * t).sum() };
    let _batch = crate::budget::reserve_floats(batch.saturating_mul(per_copy), || format!("Ablation-CAM's batch of {batch} ablated copies"))?;
    // Copy index -1 is the unablated activations, then channels 0..c.
    let mut scores: Vec<f32> = Vec::with_capacity(c + 1);
    let mut next = 0usize; // copies made, the unablated one first
    while next < c + 1 {
        let n = batch.min(c + 1 - next);
        let mut copies = Vec::with_capacity(n * per_copy);
        for copy in next..next + n {
            let start = copies.len();
            copies.extend_from_slice(&a.data);
            if let Some(k) = copy.checked_sub(1) {
                let plane = a.plane_len();
                copies[start + k * plane..start + (k + 1) * plane].iter_mut().for_each(|v| *v = 0.0);
            }
        }
        let logits = forwards(&copies, n)?;
        if classes == 0 || logits.len() != n * classes {
            return Err(Error::Internal(format!("ablation-cam: {} logits for a batch of {n} x {classes} classes", logits.len())));
        }
        scores.extend(logits.chunks_exact(classes).map(score));
        next += n;
        progress(next - 1, c);
        crate::cancel::checkpoint().await?;
    }
    let y = scores[0];
    if y == 0.0 || !y.is_finite() {
        return Err(Error::Numeric(format!("Ablation-CAM divides by the explained score, which is {y} here; use Grad-CAM or Score-CAM for this target")));
    }
    Ok(scores[1..].iter().map(|yk| (y - yk) / y).collect())
}
