//! Winograd convolutions (`src/kernels/winograd.rs`) against the direct ones on whole networks: the
//! logits, Grad-CAM maps and guided gradients of ResNet-18 and VGG-16 (whose 3x3 layers take F(4x4)
//! and F(2x2), with its transformed weights kept) must match those computed with Winograd switched
//! off (the executor's `Tuning`).

mod common;

use common::*;
use gradcam_wasm::exec::cpu::CpuExecutor;
use gradcam_wasm::kernels::Tuning;
use gradcam_wasm::{Arch, ExplainOptions, Explainer, FeatureMap, Method, Model, Target};

/// Top-5 logits, Grad-CAM map and guided gradient of one network on one random image.
fn outputs(sd: &StateDict, arch: Arch, winograd: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let model = Model::from_bytes(&sd.bytes(), Some(arch)).unwrap();
    let executor = CpuExecutor::new(model.graph.clone()).with_tuning(Tuning { winograd, ..Tuning::DEFAULT });
    let mut ex = Explainer::with_executor(model, Box::new(executor));
    let image = FeatureMap::new(3, 224, 224, Rng::new(5).vec(3 * 224 * 224, 1.5));
    let opts = ExplainOptions { method: Method::GUIDED_GRAD_CAM, target: Target::Class(7), ..Default::default() };
    let e = ex.explain_tensor(image.clone(), &opts).unwrap();
    // The first call built the kept transformed weights (F(4x4) for ResNet-18's layer1 and layer2,
    // F(2x2) for layer3 and layer4); the second reads them and must give the same numbers.
    let again = ex.explain_tensor(image, &opts).unwrap();
    assert_eq!((&again.raw.data, again.rgb.as_ref().map(|r| &r.data)), (&e.raw.data, e.rgb.as_ref().map(|r| &r.data)));
    let rgb = e.rgb.expect("guided methods return the gradient image").data;
    (e.top5.iter().map(|p| p.logit).collect(), e.raw.data, rgb)
}

/// max |a - b| / max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let diff = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64));
    diff / scale.max(1e-30)
}

#[test]
fn winograd_matches_direct_convolution_on_resnet18_and_vgg16() {
    for (arch, sd) in [(Arch::ResNet18, resnet(18, 1000)), (Arch::Vgg16, vgg(&VGG16, false, 256, 1000))] {
        let (logits, map, grad) = outputs(&sd, arch, true);
        let (logits0, map0, grad0) = outputs(&sd, arch, false);
        let d = [rel_diff(&logits, &logits0), rel_diff(&map, &map0), rel_diff(&grad, &grad0)];
        println!("{}: relative max diff: logits {:.1e}, Grad-CAM map {:.1e}, guided gradient {:.1e}", arch.name(), d[0], d[1], d[2]);
        // Forward values are continuous in the conv outputs: they must agree closely.
        assert!(d[0] <= 1e-5, "{}: logits differ by {:.2e}", arch.name(), d[0]);
        // Gradients pass through max pools' argmaxes. VGG-16's pool5 follows its target layer, so a
        // near-tie that rounds the other way moves one position's gradient and every channel's
        // weight alpha a little (1.9e-3 of the map's max, with F(2x2) as with F(4x4)).
        let tol = if arch == Arch::Vgg16 { 5e-3 } else { 1e-4 };
        assert!(d[1] <= tol && d[2] <= tol, "{}: maps differ by {d:?}", arch.name());
        // The maps are not trivially equal because both are zero.
        assert!(map0.iter().any(|v| *v > 0.0) && grad0.iter().any(|v| *v != 0.0));
    }
}
