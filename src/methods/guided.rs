//! Guided Backpropagation (Springenberg et al.) and Guided Grad-CAM (Selvaraju et al.): the input
//! gradient with every ReLU/ReLU6 passing only positive gradients of active units, and its product
//! with the bilinearly upsampled Grad-CAM map. Deconvolution (Zeiler & Fergus) and Deconv Grad-CAM,
//! which the Grad-CAM paper compares with them: every ReLU/ReLU6 passes the positive part of its
//! incoming gradient, whether the unit was active or not.

use super::{cam, Computed, Evidence, Grid, Method, MethodDef, Needs, Sign};
use crate::error::{Error, Result};
use crate::feature_map::{FeatureMap, Map};
use crate::imaging::project::upsample_bilinear;

impl Method {
    pub const GUIDED_BACKPROP: Method = Method(&MethodDef {
        name: "guided-backprop",
        aliases: &["guided-backpropagation", "guided-bp"],
        label: "Guided Backprop",
        help: "Input gradient through \"guided\" ReLUs: fine detail, not class-discriminative.",
        needs: Needs { guided_input_gradient: true, ..Needs::NOTHING },
        grid: Grid::Input,
        sign: Sign::AsComputed,
        compute: |e| Ok(as_image(e.guided_input_gradient()?.clone())),
    });
    pub const GUIDED_GRAD_CAM: Method = Method(&MethodDef {
        name: "guided-gradcam",
        aliases: &[],
        label: "Guided Grad-CAM",
        help: "Guided Backprop times the upsampled Grad-CAM map: fine and class-discriminative.",
        needs: Needs { layer_gradient: true, guided_input_gradient: true, ..Needs::NOTHING },
        grid: Grid::Input,
        sign: Sign::AsComputed,
        compute: |e| Ok(as_image(guided_grad_cam(e.guided_input_gradient()?, &relu_grad_cam(e)?)?)),
    });
    pub const DECONVOLUTION: Method = Method(&MethodDef {
        name: "deconvolution",
        aliases: &["deconv", "deconvnet"],
        label: "Deconvolution",
        help: "Input gradient with ReLUs passing every positive gradient (Zeiler & Fergus): fine detail, not class-discriminative.",
        needs: Needs { deconv_input_gradient: true, ..Needs::NOTHING },
        grid: Grid::Input,
        sign: Sign::AsComputed,
        compute: |e| Ok(as_image(e.deconv_input_gradient()?.clone())),
    });
    pub const DECONV_GRAD_CAM: Method = Method(&MethodDef {
        name: "deconv-gradcam",
        aliases: &["deconvolution-gradcam"],
        label: "Deconv Grad-CAM",
        help: "Deconvolution times the upsampled Grad-CAM map, as the Grad-CAM paper compares it.",
        needs: Needs { layer_gradient: true, deconv_input_gradient: true, ..Needs::NOTHING },
        grid: Grid::Input,
        sign: Sign::AsComputed,
        compute: |e| Ok(as_image(guided_grad_cam(e.deconv_input_gradient()?, &relu_grad_cam(e)?)?)),
    });
}

/// The Grad-CAM map after its ReLU, which the fine-grained gradient is weighted by.
fn relu_grad_cam(e: &Evidence) -> Result<Map> {
    let mut cam_map = cam::grad_cam(e.activations, e.layer_gradient()?);
    cam_map.data.iter_mut().for_each(|v| *v = v.max(0.0));
    Ok(cam_map)
}

/// An input-grid gradient as a heatmap (its per-pixel magnitude) and as an RGB image.
fn as_image(g: FeatureMap) -> Computed {
    let rgb = FeatureMap::new(3, g.height, g.width, to_rgb(&g));
    Computed { map: magnitude(&g), rgb: Some(rgb), warnings: Vec::new() }
}

/// Guided Grad-CAM = guided gradient (.) upsample(Grad-CAM), per colour channel (Deconv Grad-CAM
/// with the deconvolution gradient).
pub fn guided_grad_cam(guided: &FeatureMap, cam: &Map) -> Result<FeatureMap> {
    let up = upsample_bilinear(&cam.data, cam.width, cam.height, guided.width, guided.height).map_err(Error::Internal)?;
    let n = guided.plane_len();
    let data = guided.data.iter().enumerate().map(|(i, g)| g * up[i % n]).collect();
    Ok(FeatureMap::new(guided.channels, guided.height, guided.width, data))
}

/// A single-channel map of a 3-channel gradient: per pixel, the largest |gradient| over the colour
/// channels (Simonyan et al.'s saliency rule), so an RGB gradient can be drawn as a heatmap too.
pub fn magnitude(g: &FeatureMap) -> Map {
    let n = g.plane_len();
    let data = (0..n).map(|i| (0..g.channels).map(|c| g.data[c * n + i].abs()).fold(0.0, f32::max)).collect();
    Map::new(g.width, g.height, data)
}

/// The gradient as a viewable RGB image in [0, 1]: centred, scaled by 0.1 / std, shifted to 0.5, clipped
/// (the usual way guided-backprop figures are drawn).
pub fn to_rgb(g: &FeatureMap) -> Vec<f32> {
    let n = g.data.len() as f32;
    let mean = g.data.iter().sum::<f32>() / n;
    let std = (g.data.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt();
    let s = if std > 0.0 { 0.1 / std } else { 0.0 };
    g.data.iter().map(|v| ((v - mean) * s + 0.5).clamp(0.0, 1.0)).collect()
}
