//! Each method against a case small enough to compute by hand (as Captum's tests do): a 2-channel
//! 3 x 3 activation with known gradients, and the exact map the method's paper defines. The maps are
//! the signed ones `compute` returns (the explainer applies the sign rule, the final ReLU, after it).

mod common;

use gradcam_wasm::methods::score::ScoreCamOptions;
use gradcam_wasm::methods::{Computed, Evidence, Grid, Method, Sign, ALL};
use gradcam_wasm::{ExplainOptions, FeatureMap};

/// A0 = [1 0 2; 0 1 0; 3 0 1] (sum 8), A1 = [0 1 0; 2 0 1; 0 1 0] (sum 5).
fn activations() -> FeatureMap {
    FeatureMap::new(2, 3, 3, vec![1., 0., 2., 0., 1., 0., 3., 0., 1., 0., 1., 0., 2., 0., 1., 0., 1., 0.])
}

/// G0 = 1 everywhere (mean 1), G1 = -2 at (0, 1), else 0 (mean -2/9).
fn gradient() -> FeatureMap {
    let mut g = vec![1.0; 9];
    g.extend([0., -2., 0., 0., 0., 0., 0., 0., 0.]);
    FeatureMap::new(2, 3, 3, g)
}

fn input() -> FeatureMap {
    FeatureMap::new(3, 3, 3, (0..27).map(|i| (i % 5) as f32 * 0.5 - 0.7).collect())
}

/// The classifier weights CAM reads in these cases: w = (0.5, -1).
const CLASSIFIER_WEIGHTS: [f32; 2] = [0.5, -1.0];

/// Runs `method` on the evidence; `forwards` answers batched forwards with one logit per input,
/// the sum of its values; `layer_forwards`, forwards from the layer's activations, with one logit
/// per copy: sum(A0) + 3 sum(A1) + 1.
fn run(method: Method, a: &FeatureMap, g: Option<&FeatureMap>, guided: Option<&FeatureMap>) -> Computed {
    let x = input();
    let mut forwards = |inputs: &[f32], n: usize| Ok(inputs.chunks(inputs.len() / n).map(|c| c.iter().sum()).collect());
    let mut layer_forwards = |copies: &[f32], n: usize| Ok(copies.chunks(copies.len() / n).map(|c| c[..9].iter().sum::<f32>() + 3.0 * c[9..].iter().sum::<f32>() + 1.0).collect());
    let mut progress = |_: usize, _: usize| {};
    let mut e = Evidence {
        activations: a,
        layer_gradient: g,
        guided_input_gradient: guided,
        input: &x,
        target: &[1.0],
        forwards: &mut forwards,
        score_cam: ScoreCamOptions { batch: Some(1), max_channels: None },
        progress: &mut progress,
        classifier_weights: Some(&CLASSIFIER_WEIGHTS),
        layer_forwards: Some(&mut layer_forwards),
        forward_batch: 2,
    };
    method.compute(&mut e).unwrap_or_else(|e| panic!("{}: {e}", method.name()))
}

fn assert_map(method: Method, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{}", method.name());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() < 1e-5, "{} at {i}: got {a}, want {b}\n got {got:?}\nwant {want:?}", method.name());
    }
}

/// w0 * A0 + w1 * A1.
fn combine(w0: f32, w1: f32) -> Vec<f32> {
    let a = activations();
    (0..9).map(|i| w0 * a.data[i] + w1 * a.data[9 + i]).collect()
}

#[test]
fn layer_methods_give_the_hand_computed_maps() {
    let (a, g) = (activations(), gradient());
    let cases: [(Method, Vec<f32>); 8] = [
        // alpha = (mean G0, mean G1) = (1, -2/9).
        (Method::GRAD_CAM, combine(1.0, -2.0 / 9.0)),
        (Method::COUNTERFACTUAL, combine(-1.0, 2.0 / 9.0)),
        // sum_k G_k A_k: A0, plus -2 * A1 at (0, 1).
        (Method::HIRES_CAM, vec![1., -2., 2., 0., 1., 0., 3., 0., 1.]),
        // sum_k ReLU(G_k) A_k: G1 is never positive.
        (Method::LAYER_CAM, combine(1.0, 0.0)),
        // w_k = sum(G_k A_k) / sum(A_k): 8 / 8 and -2 / 5.
        (Method::XGRAD_CAM, combine(1.0, -0.4)),
        // alpha = g^2 / (2 g^2 + sum(A) g^3): 1 / 10 on channel 0; w0 = 9 * 1/10; w1 = 0 (no positive g).
        (Method::GRAD_CAM_PLUS_PLUS, combine(0.9, 0.0)),
        // sum_k ReLU(G_k A_k): A0 (G0 = 1, A0 >= 0); G1 A1 is -2 at (0, 1), clamped to 0.
        (Method::GRAD_CAM_ELEMENTWISE, combine(1.0, 0.0)),
        // CAM: the classifier's weights, no gradient.
        (Method::CAM, combine(CLASSIFIER_WEIGHTS[0], CLASSIFIER_WEIGHTS[1])),
    ];
    for (method, want) in cases {
        let c = run(method, &a, Some(&g), None);
        assert_eq!((c.map.width, c.map.height), (3, 3));
        assert!(c.rgb.is_none());
        assert_map(method, &c.map.data, &want);
    }
}

#[test]
fn eigen_cam_is_the_centred_activation_along_the_only_varying_channel() {
    // A1 constant: the first principal component is channel 0, so the map is A0 - mean(A0), signed so
    // that its largest magnitude (3 - 8/9) is positive.
    let mut a = activations();
    a.data[9..].iter_mut().for_each(|v| *v = 0.5);
    let c = run(Method::EIGEN_CAM, &a, None, None);
    let want: Vec<f32> = a.data[..9].iter().map(|v| v - 8.0 / 9.0).collect();
    assert_map(Method::EIGEN_CAM, &c.map.data, &want);
}

#[test]
fn eigen_grad_cam_is_the_centred_product_along_the_only_varying_channel() {
    // G0 = 2, G1 = 0: G (.) A is 2 A0 and a constant 0, so the first principal component is channel 0
    // and the map is 2 (A0 - mean(A0)), its largest magnitude 2 (3 - 8/9) positive.
    let a = activations();
    let mut g = vec![2.0; 9];
    g.extend([0.0; 9]);
    let c = run(Method::EIGEN_GRAD_CAM, &a, Some(&FeatureMap::new(2, 3, 3, g)), None);
    let want: Vec<f32> = a.data[..9].iter().map(|v| 2.0 * (v - 8.0 / 9.0)).collect();
    assert_map(Method::EIGEN_GRAD_CAM, &c.map.data, &want);
}

#[test]
fn kpca_cam_of_two_clusters_is_the_centred_indicator_scaled_by_the_kernel() {
    // A0 = 1 at positions 0 and 4 (m = 2 of n = 9), else 0; A1 constant. Centred, the positions take
    // two values, s = 7/9 and t = -2/9 (channel 1 centres to 0), so the sigmoid kernel (gamma = 1/C = 1/2,
    // coef0 = 1) takes three: a = tanh(s^2/2 + 1), b = tanh(st/2 + 1), c = tanh(t^2/2 + 1). The centred
    // kernel matrix of such a block matrix is mu d d^T with d = A0 - mean(A0) and (as m s + (n - m) t = 0
    // and s - t = 1) mu = a - 2b + c; its top eigenpair gives the map sqrt(mu) d.
    let mut a = activations();
    a.data[..9].copy_from_slice(&[1., 0., 0., 0., 1., 0., 0., 0., 0.]);
    a.data[9..].iter_mut().for_each(|v| *v = 0.5);
    let (s, t) = (7.0f64 / 9.0, -2.0f64 / 9.0);
    let k = |x: f64, y: f64| (x * y / 2.0 + 1.0).tanh();
    let mu = k(s, s) - 2.0 * k(s, t) + k(t, t);
    assert!(mu > 0.0);
    let want: Vec<f32> = a.data[..9].iter().map(|&v| (mu.sqrt() * (v as f64 - 2.0 / 9.0)) as f32).collect();
    let c = run(Method::KPCA_CAM, &a, None, None);
    assert_map(Method::KPCA_CAM, &c.map.data, &want);
}

#[test]
fn ablation_cam_weighs_channels_by_the_relative_drop_of_the_score() {
    // The fake network after the layer scores sum(A0) + 3 sum(A1) + 1: y = 8 + 15 + 1 = 24; zeroing A0
    // leaves 16, zeroing A1 leaves 9: w = ((24 - 16) / 24, (24 - 9) / 24) = (1/3, 5/8).
    let c = run(Method::ABLATION_CAM, &activations(), None, None);
    assert_map(Method::ABLATION_CAM, &c.map.data, &combine(1.0 / 3.0, 5.0 / 8.0));
}

#[test]
fn score_cam_weighs_channels_by_the_softmax_of_their_masked_scores() {
    let (a, x) = (activations(), input());
    // Each channel min-max normalized (the grids are equal, so no resampling), masks all three colour
    // planes; the fake network's logit is the sum of the masked input.
    let score = |k: usize| -> f32 {
        let plane = &a.data[9 * k..9 * k + 9];
        let (lo, hi) = plane.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        (0..27).map(|i| x.data[i] * (plane[i % 9] - lo) / (hi - lo)).sum()
    };
    let (s0, s1) = (score(0), score(1));
    let (e0, e1) = ((s0 - s0.max(s1)).exp(), (s1 - s0.max(s1)).exp());
    let c = run(Method::SCORE_CAM, &a, None, None);
    assert_map(Method::SCORE_CAM, &c.map.data, &combine(e0 / (e0 + e1), e1 / (e0 + e1)));
}

#[test]
fn guided_methods_give_the_per_pixel_largest_gradient_magnitude_and_an_rgb_image() {
    // A 3 x 3 x 3 guided gradient on the input grid (here the layer grid too, so the Grad-CAM map
    // multiplies it without resampling).
    let guided = FeatureMap::new(3, 3, 3, (0..27).map(|i| ((i * 7) % 11) as f32 - 5.0).collect());
    let magnitude = |g: &[f32]| -> Vec<f32> { (0..9).map(|p| (0..3).map(|c| g[9 * c + p].abs()).fold(0.0, f32::max)).collect() };
    let c = run(Method::GUIDED_BACKPROP, &activations(), None, Some(&guided));
    assert_map(Method::GUIDED_BACKPROP, &c.map.data, &magnitude(&guided.data));
    let rgb = c.rgb.expect("guided backprop gives an RGB image");
    assert!(rgb.data.iter().all(|v| (0.0..=1.0).contains(v)) && rgb.data.len() == 27);

    // Guided Grad-CAM: the guided gradient times ReLU(Grad-CAM), per colour channel.
    let cam: Vec<f32> = combine(1.0, -2.0 / 9.0).iter().map(|v| v.max(0.0)).collect();
    let product: Vec<f32> = (0..27).map(|i| guided.data[i] * cam[i % 9]).collect();
    let c = run(Method::GUIDED_GRAD_CAM, &activations(), Some(&gradient()), Some(&guided));
    assert_map(Method::GUIDED_GRAD_CAM, &c.map.data, &magnitude(&product));
}

#[test]
fn every_method_is_declared_once_with_what_menus_and_executors_read() {
    for m in ALL {
        assert_eq!(Method::from_name(m.name()).unwrap(), m);
        assert_eq!(Method::from_name(&m.name().to_uppercase()).unwrap(), m, "names match whatever the case");
        for alias in m.0.aliases {
            assert_eq!(Method::from_name(alias).unwrap(), m, "{alias}");
        }
        assert!(!m.label().is_empty() && !m.help().is_empty(), "{}", m.name());
        assert_eq!(ALL.iter().filter(|o| o.name() == m.name()).count(), 1, "{} listed twice", m.name());
        // A method on the input grid reads an input gradient; the sign rule says who gets the ReLU.
        assert_eq!(m.grid() == Grid::Input, m.needs().guided_input_gradient && m.sign() == Sign::AsComputed, "{}", m.name());
    }
    let e = Method::from_name("no-such-cam").unwrap_err().to_string();
    assert!(e.contains("unknown method 'no-such-cam'") && e.contains("gradcam"), "{e}");
    assert_eq!(ExplainOptions::default().method, Method::GRAD_CAM);
}

/// The default model (EfficientNet-Lite0) and its sample photos, fetched by scripts/setup.sh.
mod default_model {
    use super::*;
    use crate::common;
    use gradcam_wasm::{Explainer, Model};

    fn explainer() -> Explainer {
        Explainer::new(Model::from_bytes(&common::default_model_bytes(), None).unwrap())
    }

    /// The cell of a map's largest value, (x, y).
    fn argmax(m: &gradcam_wasm::Map) -> (usize, usize) {
        let i = (0..m.data.len()).max_by(|&a, &b| m.data[a].total_cmp(&m.data[b])).unwrap();
        (i % m.width, i / m.width)
    }

    #[test]
    fn cam_is_grad_cam_times_the_layer_area_on_a_global_pool_linear_head() {
        // `_conv_head.act` (1280 x 7 x 7) -> global average pool -> flatten -> `_fc`: dy/dA_k[i, j] =
        // W[c, k] / 49, so Grad-CAM's alpha_k = W[c, k] / 49 and CAM = 49 Grad-CAM, cell by cell.
        let mut ex = explainer();
        let img = common::sample("coffee.png");
        let grad = ex.explain(&img, &ExplainOptions { method: Method::GRAD_CAM, signed: true, ..Default::default() }).unwrap();
        let cam = ex.explain(&img, &ExplainOptions { method: Method::CAM, signed: true, ..Default::default() }).unwrap();
        assert_eq!((cam.raw.width, cam.raw.height), (7, 7));
        let area = (cam.raw.width * cam.raw.height) as f32;
        let peak = cam.raw.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (c, g) in cam.raw.data.iter().zip(&grad.raw.data) {
            assert!((c - area * g).abs() <= 1e-4 * peak, "CAM {c} vs {area} x Grad-CAM {g}");
        }
        // Another head is refused with the methods that work anywhere.
        let e = ex.explain(&img, &ExplainOptions { method: Method::CAM, layer: Some("_blocks.15".into()), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("global average pool") && e.contains("Grad-CAM") && e.contains("Ablation-CAM"), "{e}");
    }

    #[test]
    fn ablation_cam_finds_the_cup_where_grad_cam_does() {
        let mut ex = explainer();
        let img = common::sample("coffee.png");
        let grad = ex.explain(&img, &ExplainOptions::default()).unwrap();
        let mut calls = 0;
        let mut last = (0, 0);
        let opts = ExplainOptions { method: Method::ABLATION_CAM, ..Default::default() };
        let abl = ex
            .explain_with_progress(&img, &opts, &mut |done, total| {
                calls += 1;
                last = (done, total);
            })
            .unwrap();
        println!("Ablation-CAM on EfficientNet-Lite0 (1280 channels of 7 x 7): method {:.1} ms, {calls} progress calls", abl.timings.method_ms);
        assert_eq!(last, (1280, 1280));
        assert!(abl.raw.max() > 0.0);
        let (ga, aa) = (argmax(&grad.raw), argmax(&abl.raw));
        assert!(ga.0.abs_diff(aa.0) <= 1 && ga.1.abs_diff(aa.1) <= 1, "Grad-CAM peaks at {ga:?}, Ablation-CAM at {aa:?}");
        // The cup fills the photo's centre: most of the map's mass lies in the middle 5 x 5 cells.
        let centre: f32 = (1..6).flat_map(|y| (1..6).map(move |x| (x, y))).map(|(x, y)| abl.raw.data[y * 7 + x]).sum();
        assert!(centre > 0.6 * abl.raw.data.iter().sum::<f32>(), "centre share {}", centre / abl.raw.data.iter().sum::<f32>());
        // A layer that a skip connection bypasses cannot be re-run from its own activations: refused.
        let inner = ExplainOptions { layer: Some("_blocks.14._depthwise_conv.act".into()), ..opts };
        let e = ex.explain(&img, &inner).unwrap_err().to_string();
        assert!(e.contains("cannot be re-run"), "{e}");
    }
}

/// The CPU executor's forwards from a layer give the pass's own logits for the pass's own activations,
/// for each copy of a batch.
#[test]
fn forwards_from_the_pooled_layer_reproduce_the_logits() {
    use gradcam_wasm::exec::{cpu::CpuExecutor, Executor};
    let model = gradcam_wasm::Model::from_bytes(&common::default_model_bytes(), None).unwrap();
    let layer = model.graph.find(&model.default_layer).unwrap();
    let ex = CpuExecutor::new(model.graph.clone());
    let x = FeatureMap::new(3, 224, 224, (0..3 * 224 * 224).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect());
    let pass = ex.start(x, layer).unwrap();
    let a = pass.activations();
    let copies: Vec<f32> = a.data.iter().chain(&a.data).copied().collect();
    let logits = ex.logits_from_layer(layer, &copies, 2, (a.channels, a.height, a.width)).unwrap();
    let want = pass.logits();
    assert_eq!(logits.len(), 2 * want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (got, w) in logits.chunks(want.len()).flat_map(|row| row.iter().zip(want)) {
        assert!((got - w).abs() <= 1e-5 * scale, "{got} vs {w}");
    }
}
