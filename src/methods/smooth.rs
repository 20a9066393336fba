//! pytorch-grad-cam's `eigen_smooth`, for the CAMs whose map is a sum over channels: the map becomes
//! the projection of the weighted activations on their first principal component instead of their
//! sum (Eigen-CAM is exactly that with every weight 1). It keeps the dominant spatial pattern the
//! channels share and drops the rest, which is what makes the map less noisy.
//!
//! (`aug_smooth`, the other smoothing, re-runs the whole pass on modified inputs, so the explainer
//! does it: `Explainer::explain` with `ExplainOptions::aug_smooth`.)

use super::ablation::{ablation_weights, ablation_weights_async};
use super::cam::{grad_cam_plus_plus_weights, grad_cam_weights, xgrad_cam_weights};
use super::eigen::eigen_cam;
use super::score::{score_cam_weights, score_cam_weights_async};
use super::{Computed, Evidence, Method};
use crate::error::{Error, Result};
use crate::fail;
use crate::feature_map::FeatureMap;

/// How each method weighs its activations: the C x H x W terms whose sum over channels is its map.
type Weighted = fn(&mut Evidence) -> Result<FeatureMap>;

/// The methods `eigen_smooth` applies to, each with its weighted activations.
const WEIGHTED: [(Method, Weighted); 10] = [
    (Method::GRAD_CAM, |e| per_channel(e.activations, &grad_cam_weights(e.layer_gradient()?))),
    (Method::COUNTERFACTUAL, |e| per_channel(e.activations, &grad_cam_weights(e.layer_gradient()?).iter().map(|w| -w).collect::<Vec<_>>())),
    (Method::GRAD_CAM_PLUS_PLUS, |e| per_channel(e.activations, &grad_cam_plus_plus_weights(e.activations, e.layer_gradient()?))),
    (Method::XGRAD_CAM, |e| per_channel(e.activations, &xgrad_cam_weights(e.activations, e.layer_gradient()?))),
    (Method::HIRES_CAM, |e| Ok(per_location(e.activations, e.layer_gradient()?, |g| g))),
    (Method::LAYER_CAM, |e| Ok(per_location(e.activations, e.layer_gradient()?, |g| g.max(0.0)))),
    (Method::GRAD_CAM_ELEMENTWISE, |e| {
        // Each product clamped, as the method's own sum does.
        let product = per_location(e.activations, e.layer_gradient()?, |g| g);
        Ok(FeatureMap::new(product.channels, product.height, product.width, product.data.iter().map(|v| v.max(0.0)).collect()))
    }),
    (Method::CAM, |e| per_channel(e.activations, e.classifier_weights()?)),
    (Method::SCORE_CAM, |e| {
        let w = score_cam_weights(e.activations, e.input, e.target, e.score_cam, e.forwards, e.progress)?;
        per_channel(e.activations, &w)
    }),
    (Method::ABLATION_CAM, |e| {
        let forwards = e.layer_forwards.as_deref_mut().ok_or_else(|| Error::Internal("the layer forwards were not gathered".into()))?;
        let w = ablation_weights(e.activations, e.target, e.forward_batch, forwards, e.progress)?;
        per_channel(e.activations, &w)
    }),
];

/// Whether `eigen_smooth` applies to `method`.
pub fn supports_eigen_smooth(method: Method) -> bool {
    WEIGHTED.iter().any(|(m, _)| *m == method)
}

/// `method`'s map with the sum over channels replaced by the first principal component of the
/// weighted activations (centred per channel, signed so its largest-magnitude value is positive, as
/// Eigen-CAM's; the explainer's sign rule, the final ReLU, comes after).
pub fn eigen_smoothed(method: Method, e: &mut Evidence) -> Result<Computed> {
    let Some((_, weighted)) = WEIGHTED.iter().find(|(m, _)| *m == method) else {
        let names: Vec<&str> = WEIGHTED.iter().map(|(m, _)| m.name()).collect();
        return fail!(Option, "eigen smoothing applies to the CAMs that sum weighted feature maps ({}); {} has no such sum", names.join(", "), method.label());
    };
    let terms = weighted(e)?;
    Ok(eigen_cam(&terms).map_err(Error::Option)?.into())
}

/// `eigen_smoothed`, pausing between the batches of Score-CAM and Ablation-CAM (`crate::cancel`).
pub async fn eigen_smoothed_async(method: Method, e: &mut Evidence<'_>) -> Result<Computed> {
    let w = if method == Method::SCORE_CAM {
        score_cam_weights_async(e.activations, e.input, e.target, e.score_cam, e.forwards, e.progress).await?
    } else if method == Method::ABLATION_CAM {
        let forwards = e.layer_forwards.as_deref_mut().ok_or_else(|| Error::Internal("the layer forwards were not gathered".into()))?;
        ablation_weights_async(e.activations, e.target, e.forward_batch, forwards, e.progress).await?
    } else {
        return eigen_smoothed(method, e);
    };
    Ok(eigen_cam(&per_channel(e.activations, &w)?).map_err(Error::Option)?.into())
}

/// w_k A_k for per-channel weights.
fn per_channel(a: &FeatureMap, weights: &[f32]) -> Result<FeatureMap> {
    if weights.len() != a.channels {
        return fail!(Internal, "{} channel weights for {} channels", weights.len(), a.channels);
    }
    let data = weights.iter().enumerate().flat_map(|(k, &w)| a.plane(k).iter().map(move |v| w * v)).collect();
    Ok(FeatureMap::new(a.channels, a.height, a.width, data))
}

/// f(dy/dA) (.) A for per-location weights.
fn per_location(a: &FeatureMap, g: &FeatureMap, f: fn(f32) -> f32) -> FeatureMap {
    FeatureMap::new(a.channels, a.height, a.width, a.data.iter().zip(&g.data).map(|(x, y)| f(*y) * x).collect())
}
