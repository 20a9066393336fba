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
    // An all-zero channel ablates to the unablated activations: its y_k is y and its weight 0, with
    // no forward (after ReLU that is a third to two thirds of a late layer's channels).
    let ablated: Vec<usize> = (0..c).filter(|&k| a.plane(k).iter().any(|&v| v != 0.0)).collect();
    // Copy 0 is the unablated activations, then the ablated channels in order.
    let mut scores: Vec<f32> = Vec::with_capacity(ablated.len() + 1);
    let copies_total = ablated.len() + 1;
    while scores.len() < copies_total {
        let first = scores.len();
        let n = batch.min(copies_total - first);
        let mut copies = Vec::with_capacity(n * per_copy);
        for copy in first..first + n {
            let start = copies.len();
            copies.extend_from_slice(&a.data);
            if let Some(&k) = copy.checked_sub(1).map(|i| &ablated[i]) {
                let plane = a.plane_len();
                copies[start + k * plane..start + (k + 1) * plane].iter_mut().for_each(|v| *v = 0.0);
            }
        }
        let logits = forwards(&copies, n)?;
        if classes == 0 || logits.len() != n * classes {
            return Err(Error::Internal(format!("ablation-cam: {} logits for a batch of {n} x {classes} classes", logits.len())));
        }
        scores.extend(logits.chunks_exact(classes).map(score));
        // Every channel before the next one to ablate is done.
        progress(ablated.get(scores.len() - 1).copied().unwrap_or(c), c);
        crate::cancel::checkpoint().await?;
    }
    let y = scores[0];
    if y == 0.0 || !y.is_finite() {
        return Err(Error::Numeric(format!("Ablation-CAM divides by the explained score, which is {y} here; use Grad-CAM or Score-CAM for this target")));
    }
    let mut weights = vec![0.0; c];
    for (&k, yk) in ablated.iter().zip(&scores[1..]) {
        weights[k] = (y - yk) / y;
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_all_zero_channel_weighs_zero_without_a_forward() {
        // A fake network after the layer scores sum(A0) + 3 sum(A1) + 2 sum(A2) + 1; A1 is all zero.
        let a = FeatureMap::new(3, 1, 2, vec![1.0, 3.0, 0.0, 0.0, 2.0, 0.0]);
        let mut copies_run = 0;
        let mut forwards = |x: &[f32], n: usize| {
            copies_run += n;
            Ok(x.chunks(6).map(|c| c[0] + c[1] + 3.0 * (c[2] + c[3]) + 2.0 * (c[4] + c[5]) + 1.0).collect())
        };
        let mut reports = Vec::new();
        let w = ablation_weights(&a, &[1.0], 1, &mut forwards, &mut |done, total| reports.push((done, total))).unwrap();
        // y = 4 + 0 + 4 + 1 = 9; without A0 5, without A2 5.
        assert_eq!(w, vec![4.0 / 9.0, 0.0, 4.0 / 9.0]);
        assert_eq!(copies_run, 3, "the unablated copy, A0's and A2's");
        assert_eq!(reports, vec![(0, 3), (2, 3), (3, 3)]);
    }
}
