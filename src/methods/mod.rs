//! Explanation methods as plain functions of feature maps and gradients. They do not know which
//! executor produced their inputs; `crate::explainer` feeds them.

pub mod cam;
pub mod eigen;
pub mod guided;
pub mod score;

use crate::error::Result;
use crate::fail;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Selvaraju et al.: alpha_k = mean_ij dy/dA_k; ReLU(sum_k alpha_k A_k).
    GradCam,
    /// Grad-CAM with negated gradients: regions whose removal would raise the class score.
    Counterfactual,
    GradCamPlusPlus,
    HiResCam,
    XGradCam,
    LayerCam,
    ScoreCam,
    EigenCam,
    GuidedBackprop,
    GuidedGradCam,
}

pub const ALL: [Method; 10] = [
    Method::GradCam, Method::Counterfactual, Method::GuidedBackprop, Method::GuidedGradCam, Method::GradCamPlusPlus,
    Method::HiResCam, Method::XGradCam, Method::LayerCam, Method::ScoreCam, Method::EigenCam,
];

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::GradCam => "gradcam",
            Method::Counterfactual => "counterfactual",
            Method::GradCamPlusPlus => "gradcam++",
            Method::HiResCam => "hirescam",
            Method::XGradCam => "xgradcam",
            Method::LayerCam => "layercam",
            Method::ScoreCam => "scorecam",
            Method::EigenCam => "eigencam",
            Method::GuidedBackprop => "guided-backprop",
            Method::GuidedGradCam => "guided-gradcam",
        }
    }

    /// Accepts the canonical names and a few spellings people type (`grad-cam`, `gradcampp`, `guided_gradcam`).
    pub fn from_name(name: &str) -> Result<Method> {
        let key: String = name.trim().to_ascii_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '+').collect();
        let m = match key.as_str() {
            "gradcam" => Method::GradCam,
            "counterfactual" | "counterfactualgradcam" | "gradcamcounterfactual" => Method::Counterfactual,
            "gradcam++" | "gradcampp" | "gradcamplusplus" => Method::GradCamPlusPlus,
            "hirescam" => Method::HiResCam,
            "xgradcam" => Method::XGradCam,
            "layercam" => Method::LayerCam,
            "scorecam" => Method::ScoreCam,
            "eigencam" => Method::EigenCam,
            "guidedbackprop" | "guidedbackpropagation" | "guidedbp" => Method::GuidedBackprop,
            "guidedgradcam" => Method::GuidedGradCam,
            _ => {
                let names: Vec<&str> = ALL.iter().map(|m| m.name()).collect();
                return fail!(Option, "unknown method '{name}'; choose one of {}", names.join(", "));
            }
        };
        Ok(m)
    }

    /// Methods whose map lives on the input grid rather than the target layer's.
    pub fn is_input_resolution(self) -> bool {
        matches!(self, Method::GuidedBackprop | Method::GuidedGradCam)
    }

    /// What the method asks of a forward pass beyond logits and activations, so an executor whose
    /// results arrive asynchronously (WebGPU in the browser) can compute it before the method runs.
    pub fn needs(self) -> Needs {
        match self {
            Method::EigenCam => Needs::default(),
            Method::ScoreCam => Needs { batched_forwards: true, ..Default::default() },
            Method::GuidedBackprop => Needs { guided_input_gradient: true, ..Default::default() },
            Method::GuidedGradCam => Needs { layer_gradient: true, guided_input_gradient: true, ..Default::default() },
            _ => Needs { layer_gradient: true, ..Default::default() },
        }
    }
}

/// See [`Method::needs`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Needs {
    /// d score / d A at the target layer.
    pub layer_gradient: bool,
    /// d score / d input through guided ReLUs.
    pub guided_input_gradient: bool,
    /// Forwards of masked copies of the input (Score-CAM).
    pub batched_forwards: bool,
}
