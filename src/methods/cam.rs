//! The gradient-weighted CAM family. Each returns the SIGNED map sum_k w_k(...) A_k at the layer's
//! resolution; the caller applies the ReLU that the papers define (or not, when asked for the signed map).

use super::{Grid, Method, MethodDef, Needs, Sign};
use crate::feature_map::{FeatureMap, Map};

/// The methods of this family: a map at the layer from its activations and gradient.
const fn layer_method(
    name: &'static str,
    aliases: &'static [&'static str],
    label: &'static str,
    help: &'static str,
    compute: fn(&mut super::Evidence) -> crate::error::Result<super::Computed>,
) -> MethodDef {
    MethodDef { name, aliases, label, help, needs: Needs::LAYER_GRADIENT, grid: Grid::Layer, sign: Sign::Relu, compute }
}

impl Method {
    pub const GRAD_CAM: Method = Method(&layer_method("gradcam", &[], "Grad-CAM", "Gradients of the class score, averaged per channel, weight the layer's feature maps.", |e| {
        Ok(grad_cam(e.activations, e.layer_gradient()?).into())
    }));
    pub const COUNTERFACTUAL: Method = Method(&layer_method(
        "counterfactual",
        &["counterfactual-gradcam", "gradcam-counterfactual"],
        "Counterfactual Grad-CAM",
        "Negated gradients: regions whose removal would raise the confidence in this class.",
        |e| Ok(counterfactual(e.activations, e.layer_gradient()?).into()),
    ));
    pub const GRAD_CAM_PLUS_PLUS: Method =
        Method(&layer_method("gradcam++", &["gradcampp", "gradcamplusplus"], "Grad-CAM++", "Weights positive gradients with higher-order terms; better for several instances.", |e| {
            Ok(grad_cam_plus_plus(e.activations, e.layer_gradient()?).into())
        }));
    pub const HIRES_CAM: Method = Method(&layer_method("hirescam", &[], "HiResCAM", "Gradient times activation per location, summed over channels: no spatial averaging.", |e| {
        Ok(hires_cam(e.activations, e.layer_gradient()?).into())
    }));
    pub const XGRAD_CAM: Method =
        Method(&layer_method("xgradcam", &[], "XGradCAM", "Gradients weighted by normalized activations (axiom-based Grad-CAM).", |e| Ok(xgrad_cam(e.activations, e.layer_gradient()?).into())));
    pub const LAYER_CAM: Method = Method(&layer_method("layercam", &[], "LayerCAM", "Per-location positive gradients times activations; usable in shallow layers too.", |e| {
        Ok(layer_cam(e.activations, e.layer_gradient()?).into())
    }));
    pub const GRAD_CAM_ELEMENTWISE: Method = Method(&layer_method(
        "gradcam-elementwise",
        &["gradcamelementwise"],
        "Grad-CAM Element-Wise",
        "Per-location gradient times activation, each product clamped at zero, summed over channels.",
        |e| Ok(grad_cam_elementwise(e.activations, e.layer_gradient()?).into()),
    ));
}

/// sum_k weights[k] * A_k.
pub fn weighted_sum(a: &FeatureMap, weights: &[f32]) -> Map {
    let mut out = vec![0.0f32; a.plane_len()];
    for (k, &wk) in weights.iter().enumerate() {
        if wk != 0.0 {
            out.iter_mut().zip(a.plane(k)).for_each(|(o, &v)| *o += wk * v);
        }
    }
    Map::new(a.width, a.height, out)
}

/// sum_k (W_k (.) A_k) for per-location weights.
fn elementwise_sum(a: &FeatureMap, w: impl Fn(usize, usize) -> f32) -> Map {
    let n = a.plane_len();
    let mut out = vec![0.0f32; n];
    for k in 0..a.channels {
        for (i, o) in out.iter_mut().enumerate() {
            *o += w(k, i) * a.data[k * n + i];
        }
    }
    Map::new(a.width, a.height, out)
}

/// alpha_k = (1/Z) sum_ij dy/dA_k[i,j] (the paper's Eq. 1).
pub fn grad_cam_weights(g: &FeatureMap) -> Vec<f32> {
    let z = g.plane_len() as f32;
    (0..g.channels).map(|k| g.plane(k).iter().sum::<f32>() / z).collect()
}

pub fn grad_cam(a: &FeatureMap, g: &FeatureMap) -> Map {
    weighted_sum(a, &grad_cam_weights(g))
}

/// The paper's counterfactual explanation: the same weights, negated.
pub fn counterfactual(a: &FeatureMap, g: &FeatureMap) -> Map {
    let w: Vec<f32> = grad_cam_weights(g).iter().map(|v| -v).collect();
    weighted_sum(a, &w)
}

/// HiResCAM (Draelos & Carin): sum_k dy/dA_k (.) A_k, no spatial averaging of the gradient.
pub fn hires_cam(a: &FeatureMap, g: &FeatureMap) -> Map {
    elementwise_sum(a, |k, i| g.data[k * g.plane_len() + i])
}

/// LayerCAM (Jiang et al.): sum_k ReLU(dy/dA_k) (.) A_k.
pub fn layer_cam(a: &FeatureMap, g: &FeatureMap) -> Map {
    elementwise_sum(a, |k, i| g.data[k * g.plane_len() + i].max(0.0))
}

/// Grad-CAM Element-Wise (pytorch-grad-cam's `GradCAMElementWise`): sum_k ReLU(dy/dA_k (.) A_k).
/// Every term is clamped before the sum, so the map is never negative (HiResCAM clamps only the sum).
pub fn grad_cam_elementwise(a: &FeatureMap, g: &FeatureMap) -> Map {
    let n = g.plane_len();
    let mut out = vec![0.0f32; n];
    for k in 0..a.channels {
        for (i, o) in out.iter_mut().enumerate() {
            *o += (g.data[k * n + i] * a.data[k * n + i]).max(0.0);
        }
    }
    Map::new(a.width, a.height, out)
}

/// XGradCAM (Fu et al.): w_k = sum_ij g A / (sum_ij A + 1e-7).
pub fn xgrad_cam(a: &FeatureMap, g: &FeatureMap) -> Map {
    weighted_sum(a, &xgrad_cam_weights(a, g))
}

/// XGradCAM's per-channel weights.
pub fn xgrad_cam_weights(a: &FeatureMap, g: &FeatureMap) -> Vec<f32> {
    (0..a.channels)
        .map(|k| {
            let num: f32 = a.plane(k).iter().zip(g.plane(k)).map(|(x, y)| x * y).sum();
            num / (a.plane(k).iter().sum::<f32>() + 1e-7)
        })
        .collect()
}

/// Grad-CAM++ (Chattopadhay et al.) in its closed form for an exponential output:
/// a_ij = g^2 / (2 g^2 + sum_ab A_ab g^3), w_k = sum_ij a_ij ReLU(g_ij); a = 0 where g == 0.
pub fn grad_cam_plus_plus(a: &FeatureMap, g: &FeatureMap) -> Map {
    weighted_sum(a, &grad_cam_plus_plus_weights(a, g))
}

/// Grad-CAM++'s per-channel weights.
pub fn grad_cam_plus_plus_weights(a: &FeatureMap, g: &FeatureMap) -> Vec<f32> {
    (0..a.channels)
        .map(|k| {
            let sum_a: f32 = a.plane(k).iter().sum();
            g.plane(k)
                .iter()
                .map(|&gv| {
                    let g2 = gv * gv;
                    let alpha = if gv == 0.0 { 0.0 } else { g2 / (2.0 * g2 + sum_a * g2 * gv + 1e-6) };
                    alpha * gv.max(0.0)
                })
                .sum()
        })
        .collect()
}
