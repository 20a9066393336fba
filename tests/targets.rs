//! Explainer-level options: the weighted class target (`Target::parse`, its linearity) and the
//! CAM smoothings (`eigen_smooth`, `aug_smooth`), on a small random ResNet-18.

mod common;

use common::resnet;
use gradcam_wasm::{ExplainOptions, Explainer, FeatureMap, Method, Model, Normalization, Target};

const CLASSES: usize = 10;

fn explainer() -> Explainer {
    let model = Model::from_bytes(&resnet(18, CLASSES).bytes(), None).unwrap().with_input_size(64).unwrap();
    Explainer::new(model)
}

/// A fixed 3 x 64 x 64 input with structure in both directions.
fn input() -> FeatureMap {
    FeatureMap::new(3, 64, 64, (0..3 * 64 * 64).map(|i| (((i * 37) % 101) as f32 / 50.0) - 1.0).collect())
}

/// The signed, unnormalized map (before the final ReLU) of `method` for `target`.
fn raw_map(ex: &mut Explainer, method: Method, target: Target) -> Vec<f32> {
    let opts = ExplainOptions { method, target, signed: true, normalization: Normalization::Raw, ..Default::default() };
    ex.explain_tensor(input(), &opts).unwrap().raw.data
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-4 * scale, "{what}: cell {i}: {a} vs {b} (scale {scale})");
    }
}

#[test]
fn target_parse_reads_a_class_or_weighted_terms_and_says_what_is_wrong() {
    assert_eq!(Target::parse("281", 1000), Ok(Target::Class(281)));
    assert_eq!(Target::parse(" 281:1, 285:0.5 ", 1000), Ok(Target::Weighted(vec![(281, 1.0), (285, 0.5)])));
    assert_eq!(Target::parse("3:-2", 10), Ok(Target::Weighted(vec![(3, -2.0)])));
    for (text, want) in [
        ("", "empty"),
        ("  ", "empty"),
        ("cat", "not a class index"),
        ("1000", "out of range"),
        ("281:", "not a number"),
        (":1", "not a class index"),
        ("281:1,", "class:weight"),
        ("281:1,285", "class:weight"),
        ("281:nan", "finite"),
        ("281:1e40", "finite"),
        ("281:inf", "finite"),
        ("5:1,1000:1", "out of range"),
        ("-1", "not a class index"),
    ] {
        let e = Target::parse(text, 1000).err().unwrap_or_else(|| panic!("'{text}' was accepted")).to_string();
        assert!(e.contains(want), "'{text}': {e}");
    }
    // The term count is bounded before anything is parsed or allocated.
    let many = vec!["1:1"; 65].join(",");
    assert!(Target::parse(&many, 1000).unwrap_err().to_string().contains("65 terms"));
    assert!(Target::parse(&vec!["1:1"; 64].join(","), 1000).is_ok());
}

#[test]
fn a_weighted_target_is_linear_in_its_classes() {
    let mut ex = explainer();
    let (a, b) = (2, 7);
    let map_a = raw_map(&mut ex, Method::GRAD_CAM, Target::Class(a));
    let map_b = raw_map(&mut ex, Method::GRAD_CAM, Target::Class(b));
    assert!(map_a.iter().zip(&map_b).any(|(x, y)| (x - y).abs() > 1e-3 * x.abs().max(y.abs())), "the two classes' maps must differ for the test to mean anything");
    let only_a = raw_map(&mut ex, Method::GRAD_CAM, Target::Weighted(vec![(a, 1.0), (b, 0.0)]));
    assert_close(&only_a, &map_a, "1*a + 0*b is class a");
    let sum = raw_map(&mut ex, Method::GRAD_CAM, Target::Weighted(vec![(a, 1.0), (b, 1.0)]));
    let want: Vec<f32> = map_a.iter().zip(&map_b).map(|(x, y)| x + y).collect();
    assert_close(&sum, &want, "Grad-CAM of a + b is the sum of both maps");
    // The reported class is the heaviest term.
    let opts = ExplainOptions { target: Target::Weighted(vec![(a, 0.5), (b, -2.0)]), ..Default::default() };
    assert_eq!(ex.explain_tensor(input(), &opts).unwrap().class, b);
}

// ---------------------------------------------------------------- eigen_smooth

use gradcam_wasm::methods::smooth::{eigen_smoothed, supports_eigen_smooth};
use gradcam_wasm::methods::Evidence;

/// Runs eigen-smoothed `method` on activations `a` and gradient `g` (no forwards).
fn eigen(method: Method, a: &FeatureMap, g: &FeatureMap) -> gradcam_wasm::Result<Vec<f32>> {
    let x = FeatureMap::new(3, 2, 2, vec![0.0; 12]);
    let mut forwards = |_: &[f32], _: usize| panic!("no forwards");
    let mut input_gradients = |_: &[f32], _: usize| panic!("no input gradients");
    let mut progress = |_: usize, _: usize| {};
    let mut e = Evidence { layer_gradient: Some(g), ..Evidence::new(a, &x, &[1.0], &mut forwards, &mut input_gradients, &mut progress) };
    eigen_smoothed(method, &mut e).map(|c| c.map.data)
}

/// Four channels of 3 x 3 with no common pattern.
fn varied_activations() -> FeatureMap {
    FeatureMap::new(4, 3, 3, (0..36).map(|i| ((i * 29 % 17) as f32 - 6.0) / 3.0).collect())
}

#[test]
fn eigen_smoothed_grad_cam_with_equal_weights_is_eigen_cam() {
    let a = varied_activations();
    // A gradient of 2 everywhere: every Grad-CAM weight is 2, so the weighted maps are 2 A.
    let g = FeatureMap::new(4, 3, 3, vec![2.0; 36]);
    let got = eigen(Method::GRAD_CAM, &a, &g).unwrap();
    let want: Vec<f32> = gradcam_wasm::methods::eigen::eigen_cam(&a).unwrap().data.iter().map(|v| 2.0 * v).collect();
    assert_close(&got, &want, "eigen-smoothed Grad-CAM of equal weights");
}

#[test]
fn eigen_smoothing_a_rank_one_weighted_activation_gives_the_plain_cam_up_to_scale_and_offset() {
    // A_k = c_k m: every channel the same pattern m, so w_k A_k has rank one.
    let m = [3.0, -1.0, 0.5, 2.0, 0.0, -2.0, 1.0, 4.0, -0.5];
    let c = [1.0, -2.0, 0.5, 3.0];
    let a = FeatureMap::new(4, 3, 3, c.iter().flat_map(|ck| m.iter().map(move |v| ck * v)).collect());
    let g = FeatureMap::new(4, 3, 3, [0.5f32, 1.0, -1.0, 2.0].iter().flat_map(|&w| [w; 9]).collect());
    use gradcam_wasm::methods::cam::{grad_cam, hires_cam, xgrad_cam};
    for (method, plain) in [(Method::GRAD_CAM, grad_cam(&a, &g)), (Method::HIRES_CAM, hires_cam(&a, &g)), (Method::XGRAD_CAM, xgrad_cam(&a, &g))] {
        let smooth = eigen(method, &a, &g).unwrap();
        // The plain map is (sum_k w_k c_k) m; the projection is the same pattern centred (PCA
        // centres each channel), at its own scale and sign: fit smooth = s (plain - mean plain).
        let mean = plain.data.iter().sum::<f32>() / 9.0;
        let centred: Vec<f32> = plain.data.iter().map(|v| v - mean).collect();
        let s = smooth.iter().zip(&centred).map(|(x, y)| x * y).sum::<f32>() / centred.iter().map(|y| y * y).sum::<f32>();
        assert!(s.abs() > 1e-3, "{}: the projection is not zero", method.name());
        let fit: Vec<f32> = centred.iter().map(|y| s * y).collect();
        assert_close(&smooth, &fit, method.name());
    }
    // Only the methods that sum weighted maps take it.
    assert!(supports_eigen_smooth(Method::SCORE_CAM) && supports_eigen_smooth(Method::CAM));
    assert!(!supports_eigen_smooth(Method::EIGEN_CAM) && !supports_eigen_smooth(Method::SALIENCY));
    let e = eigen(Method::EIGEN_CAM, &a, &g).unwrap_err().to_string();
    assert!(e.contains("eigen smoothing applies to") && e.contains("gradcam"), "{e}");
}

#[test]
fn eigen_smoothing_through_the_explainer_differs_from_the_sum_and_keeps_the_sign_rule() {
    let mut ex = explainer();
    let plain = raw_map(&mut ex, Method::GRAD_CAM, Target::Class(3));
    let opts = ExplainOptions { method: Method::GRAD_CAM, target: Target::Class(3), eigen_smooth: true, normalization: Normalization::Raw, ..Default::default() };
    let e = ex.explain_tensor(input(), &opts).unwrap();
    assert_eq!(e.raw.data.len(), plain.len());
    assert!(e.raw.data.iter().all(|v| *v >= 0.0), "the final ReLU still applies");
    assert!(e.raw.data.iter().zip(&plain).any(|(a, b)| (a - b.max(0.0)).abs() > 1e-4), "a different map from the sum");
}

// ---------------------------------------------------------------- aug_smooth

/// `input()` made mirror-symmetric left-right.
fn symmetric_input() -> FeatureMap {
    let x = input();
    let w = x.width;
    let data = x.data.chunks_exact(w).flat_map(|row| (0..w).map(|i| row[i.min(w - 1 - i)]).collect::<Vec<_>>()).collect();
    FeatureMap::new(3, x.height, w, data)
}

#[test]
fn aug_smoothing_a_mirror_symmetric_input_gives_a_mirror_symmetric_map() {
    let mut ex = explainer();
    let x = symmetric_input();
    let opts = ExplainOptions { method: Method::GRAD_CAM, target: Target::Class(3), signed: true, normalization: Normalization::Raw, aug_smooth: true, ..Default::default() };
    let e = ex.explain_tensor(x.clone(), &opts).unwrap();
    let plain = ex.explain_tensor(x, &ExplainOptions { aug_smooth: false, ..opts.clone() }).unwrap();
    let (w, map) = (e.raw.width, &e.raw.data);
    assert!(
        plain.raw.data.chunks_exact(w).any(|r| r.iter().zip(r.iter().rev()).any(|(a, b)| (a - b).abs() > 1e-3 * a.abs().max(b.abs()))),
        "the plain map is not symmetric, so the test means something"
    );
    let mirrored: Vec<f32> = map.chunks_exact(w).flat_map(|r| r.iter().rev().copied()).collect();
    assert_close(map, &mirrored, "aug-smoothed map of a symmetric input");
}

#[test]
fn aug_smoothing_is_the_mean_of_the_six_passes_mirrored_back() {
    let mut ex = explainer();
    let opts = ExplainOptions { method: Method::GRAD_CAM_PLUS_PLUS, target: Target::Top1, normalization: Normalization::Raw, ..Default::default() };
    let top1 = ex.explain_tensor(input(), &opts).unwrap().class;
    let mut want = Vec::new();
    for &(mirrored, factor) in &gradcam_wasm::explainer::AUG_PASSES {
        let x = gradcam_wasm::explainer::augment(&input(), mirrored, factor);
        let e = ex.explain_tensor(x, &ExplainOptions { target: Target::Class(top1), ..opts.clone() }).unwrap();
        let m = if mirrored { gradcam_wasm::explainer::mirror(&e.raw) } else { e.raw };
        want.resize(m.data.len(), 0.0);
        want.iter_mut().zip(&m.data).for_each(|(s, v)| *s += v / 6.0);
    }
    let e = ex.explain_tensor(input(), &ExplainOptions { aug_smooth: true, ..opts.clone() }).unwrap();
    assert_eq!(e.class, top1, "every pass explains the plain input's top-1");
    assert_close(&e.raw.data, &want, "mean of the passes");
    // Every pass at its own scale differs from the plain map.
    let plain = ex.explain_tensor(input(), &opts).unwrap();
    assert!(e.raw.data.iter().zip(&plain.raw.data).any(|(a, b)| (a - b).abs() > 1e-4 * b.abs().max(1e-6)));
    // The augmented input: mirrored rows, scaled.
    let x = FeatureMap::new(1, 2, 3, vec![1., 2., 3., 4., 5., 6.]);
    assert_eq!(gradcam_wasm::explainer::augment(&x, true, 2.0).data, vec![6., 4., 2., 12., 10., 8.]);
    // Input-grid methods are refused with a reason.
    let err = ex.explain_tensor(input(), &ExplainOptions { method: Method::SALIENCY, aug_smooth: true, ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("aug smoothing"), "{err}");
}
