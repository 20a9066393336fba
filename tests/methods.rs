//! Each method against a case small enough to compute by hand (as Captum's tests do): a 2-channel
//! 3 x 3 activation with known gradients, and the exact map the method's paper defines. The maps are
//! the signed ones `compute` returns (the explainer applies the sign rule, the final ReLU, after it).

mod common;

use gradcam_wasm::methods::attribution::{gaussian_blur, window_starts, AttributionOptions, Baseline};
use gradcam_wasm::methods::fullgrad::{bias_map, bias_share, BiasTerm, FullGradient};
use gradcam_wasm::methods::score::ScoreCamOptions;
use gradcam_wasm::methods::{Computed, Evidence, Grid, Method, Sign, ALL};
use gradcam_wasm::Map;
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
    run_with(method, a, g, guided, None)
}

/// `run`, with FullGrad's evidence.
fn run_with(method: Method, a: &FeatureMap, g: Option<&FeatureMap>, guided: Option<&FeatureMap>, full: Option<&FullGradient>) -> Computed {
    let x = input();
    let mut forwards = |inputs: &[f32], n: usize| Ok(inputs.chunks(inputs.len() / n).map(|c| c.iter().sum()).collect());
    let mut layer_forwards = |copies: &[f32], n: usize| Ok(copies.chunks(copies.len() / n).map(|c| c[..9].iter().sum::<f32>() + 3.0 * c[9..].iter().sum::<f32>() + 1.0).collect());
    let mut progress = |_: usize, _: usize| {};
    let mut input_gradients = |_: &[f32], _: usize| panic!("{} asked for input gradients", method.name());
    let mut e = Evidence {
        layer_gradient: g,
        guided_input_gradient: guided,
        deconv_input_gradient: guided,
        score_cam: ScoreCamOptions { batch: Some(1), max_channels: None },
        classifier_weights: Some(&CLASSIFIER_WEIGHTS),
        layer_forwards: Some(&mut layer_forwards),
        forward_batch: 2,
        full_gradient: full,
        ..Evidence::new(a, &x, &[1.0], &mut forwards, &mut input_gradients, &mut progress)
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

    // Deconvolution and Deconv Grad-CAM read their own gradient the same way (`run` hands the same
    // 3 x 3 x 3 map as both the guided and the deconvolution gradient).
    let c = run(Method::DECONVOLUTION, &activations(), None, Some(&guided));
    assert_map(Method::DECONVOLUTION, &c.map.data, &magnitude(&guided.data));
    assert!(c.rgb.is_some());
    let c = run(Method::DECONV_GRAD_CAM, &activations(), Some(&gradient()), Some(&guided));
    assert_map(Method::DECONV_GRAD_CAM, &c.map.data, &magnitude(&product));
}

#[test]
fn fullgrad_sums_the_scaled_input_and_bias_terms() {
    // One bias layer on the input's 3 x 3 grid, b = (2, -1), its output gradient `gradient()`:
    // |2 G0| = 2 everywhere scales to 0 (a constant plane), |-1 G1| is 2 at (0, 1) only and scales
    // to 1 there. Its share of the score: 2 * 9 + (-1)(-2) = 20.
    let mut layer = vec![0.0; 9];
    layer[1] = 1.0;
    let bias = [2.0, -1.0];
    assert_map(Method::FULLGRAD, &bias_map(&bias, &gradient()).unwrap().data, &layer);
    assert_eq!(bias_share(&bias, &gradient()), 20.0);
    // The input term: per colour plane, |x g| min-max scaled, summed over the planes. With g = 1 on
    // plane 0, 2 on plane 1 and 0 on plane 2: planes 0 and 1 both scale |x| (the factor cancels),
    // plane 2 is constant (0).
    let x = input();
    let g = FeatureMap::new(3, 3, 3, (0..27).map(|i| [1.0, 2.0, 0.0][i / 9]).collect());
    let ax: Vec<f32> = x.data[..9].iter().map(|v| v.abs()).collect();
    let (lo, hi) = (ax.iter().copied().fold(f32::INFINITY, f32::min), ax.iter().copied().fold(0.0, f32::max));
    let scaled: Vec<f32> = ax.iter().map(|v| (v - lo) / (hi - lo)).collect();
    let ax1: Vec<f32> = x.data[9..18].iter().map(|v| v.abs()).collect();
    let (lo1, hi1) = (ax1.iter().copied().fold(f32::INFINITY, f32::min), ax1.iter().copied().fold(0.0, f32::max));
    let want: Vec<f32> = (0..9).map(|p| scaled[p] + (ax1[p] - lo1) / (hi1 - lo1) + layer[p]).collect();
    // A linear layer's term carries a share of the score but no map.
    let layers = vec![BiasTerm { node: 1, map: Some(Map::new(3, 3, layer.clone())), signed: 20.0 }, BiasTerm { node: 2, map: None, signed: 1.0 }];
    let full = FullGradient { input_gradient: g, layers };
    let c = run_with(Method::FULLGRAD, &activations(), None, None, Some(&full));
    assert_map(Method::FULLGRAD, &c.map.data, &want);
    assert!(c.rgb.is_none());
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
        // A method that reads an input gradient lives on the input grid; a magnitude keeps its sign.
        let needs = m.needs();
        if needs.guided_input_gradient || needs.deconv_input_gradient || needs.input_gradients {
            assert_eq!(m.grid(), Grid::Input, "{}", m.name());
        }
        if needs.guided_input_gradient || needs.deconv_input_gradient {
            assert_eq!(m.sign(), Sign::AsComputed, "{}", m.name());
        }
    }
    let e = Method::from_name("no-such-cam").unwrap_err().to_string();
    assert!(e.contains("unknown method 'no-such-cam'") && e.contains("gradcam"), "{e}");
    assert_eq!(ExplainOptions::default().method, Method::GRAD_CAM);
}

#[test]
fn each_method_names_the_options_of_its_own_that_the_page_offers() {
    // The page shows a control per key, so only these four methods take settings of their own.
    let keys = |m: Method| m.option_keys().to_vec();
    assert_eq!(keys(Method::INTEGRATED_GRADIENTS), ["igSteps", "igBaseline"]);
    assert_eq!(keys(Method::SMOOTHGRAD), ["smoothSamples", "smoothNoise"]);
    assert_eq!(keys(Method::OCCLUSION), ["occlusionPatch", "occlusionStride", "igBaseline"]);
    assert_eq!(keys(Method::SCORE_CAM), ["scoreCamChannels"]);
    let with_options = ALL.iter().filter(|m| !m.option_keys().is_empty()).count();
    assert_eq!(with_options, 4);
}

#[test]
fn several_layers_maps_are_scaled_brought_to_the_finest_grid_and_averaged() {
    use gradcam_wasm::explainer::combine_layers;
    // A 2 x 2 map scales to (0, 1/3, 2/3, 1); a constant 1 x 1 map scales to 0 (pytorch-grad-cam's
    // rule) and stays 0 on the 2 x 2 grid; the mean halves the first.
    let fine = Map::new(2, 2, vec![1.0, 2.0, 3.0, 4.0]);
    let coarse = Map::new(1, 1, vec![5.0]);
    let m = combine_layers(&[&coarse, &fine]).unwrap();
    assert_eq!((m.width, m.height), (2, 2));
    assert_map(Method::GRAD_CAM, &m.data, &[0.0, 1.0 / 6.0, 1.0 / 3.0, 0.5]);
    // Two maps on one grid, of different scales: each counts the same once scaled.
    let other = Map::new(2, 2, vec![40.0, 30.0, 20.0, 10.0]);
    assert_map(Method::GRAD_CAM, &combine_layers(&[&fine, &other]).unwrap().data, &[0.5, 0.5, 0.5, 0.5]);
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
    fn several_layers_at_once_average_each_layers_scaled_map() {
        let mut ex = explainer();
        let img = common::sample("coffee.png");
        let (a, b) = ("_blocks.8", "_conv_head.act");
        let one = |ex: &mut Explainer, layer: &str| ex.explain(&img, &ExplainOptions { layer: Some(layer.into()), ..Default::default() }).unwrap();
        let (ea, eb) = (one(&mut ex, a), one(&mut ex, b));
        assert_eq!((ea.raw.width, ea.raw.height), (14, 14));
        let both = ex.explain(&img, &ExplainOptions { layers: vec![a.into(), b.into()], ..Default::default() }).unwrap();
        assert_eq!(both.layer, "_blocks.8,_conv_head.act");
        assert_eq!((both.raw.width, both.raw.height), (14, 14), "the finest grid of the two");
        let want = gradcam_wasm::explainer::combine_layers(&[&ea.raw, &eb.raw]).unwrap();
        assert_map(Method::GRAD_CAM, &both.raw.data, &want.data);
        assert_eq!(both.class, ea.class);
        // One name in `layers` is that layer; both fields at once is an error.
        let single = ex.explain(&img, &ExplainOptions { layers: vec![a.into()], ..Default::default() }).unwrap();
        assert_eq!((single.layer.as_str(), &single.raw.data), (a, &ea.raw.data));
        let e = ex.explain(&img, &ExplainOptions { layer: Some(a.into()), layers: vec![a.into(), b.into()], ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
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

// ---------------------------------------------------------------- gradient attributions

/// The black pixel of the fake model's normalization, per channel.
const BLACK: [f32; 3] = [-1.0, 0.0, 0.5];

/// A fake network on 3 x 3 x 3 inputs: its score f(x) and its input gradient.
struct Net {
    f: fn(&[f32]) -> f32,
    grad: fn(&[f32]) -> Vec<f32>,
}

/// The weights of the linear network f(x) = W . x, of both signs.
fn w() -> Vec<f32> {
    (0..27).map(|i| ((i * 7) % 11) as f32 - 5.0).collect()
}

const LINEAR: Net = Net { f: |x| x.iter().zip(w()).map(|(a, b)| a * b).sum(), grad: |_| w() };
/// f(x) = 1/2 |x|^2, whose gradient is x.
const QUADRATIC: Net = Net { f: |x| 0.5 * x.iter().map(|v| v * v).sum::<f32>(), grad: |x| x.to_vec() };

/// Runs an attribution method on `input()` with the fake network; returns the result and the
/// progress reports.
fn run_net(method: Method, net: &Net, opts: AttributionOptions) -> (Computed, Vec<(usize, usize)>) {
    let (a, x) = (activations(), input());
    let mut forwards = |inputs: &[f32], n: usize| {
        assert_eq!(inputs.len(), 27 * n);
        Ok(inputs.chunks(27).map(net.f).collect())
    };
    let mut input_gradients = |inputs: &[f32], n: usize| {
        assert_eq!(inputs.len(), 27 * n);
        Ok(inputs.chunks(27).flat_map(net.grad).collect())
    };
    let mut reports = Vec::new();
    let mut progress = |done: usize, total: usize| reports.push((done, total));
    let mut e = Evidence {
        attribution: AttributionOptions { black: Some(BLACK), batch: Some(2), ..opts },
        forward_batch: 2,
        ..Evidence::new(&a, &x, &[1.0], &mut forwards, &mut input_gradients, &mut progress)
    };
    let c = method.compute(&mut e).unwrap_or_else(|e| panic!("{}: {e}", method.name()));
    (c, reports)
}

/// Per pixel, the largest |v| over the three colour planes.
fn max_abs(v: &[f32]) -> Vec<f32> {
    (0..9).map(|p| (0..3).map(|c| v[9 * c + p].abs()).fold(0.0, f32::max)).collect()
}

/// Per pixel, the sum over the three colour planes.
fn rgb_sum(v: &[f32]) -> Vec<f32> {
    (0..9).map(|p| (0..3).map(|c| v[9 * c + p]).sum()).collect()
}

fn black_image() -> Vec<f32> {
    (0..27).map(|i| BLACK[i / 9]).collect()
}

#[test]
fn saliency_and_input_x_gradient_read_the_plain_gradient() {
    // Linear network: the gradient is W wherever it is taken.
    let (c, _) = run_net(Method::SALIENCY, &LINEAR, AttributionOptions::default());
    assert_map(Method::SALIENCY, &c.map.data, &max_abs(&w()));
    assert_eq!(c.rgb.expect("saliency gives the gradient as RGB").data.len(), 27);
    let (c, _) = run_net(Method::INPUT_X_GRADIENT, &LINEAR, AttributionOptions::default());
    let xw: Vec<f32> = input().data.iter().zip(w()).map(|(a, b)| a * b).collect();
    assert_map(Method::INPUT_X_GRADIENT, &c.map.data, &rgb_sum(&xw));
}

#[test]
fn integrated_gradients_is_exact_on_linear_and_quadratic_networks() {
    let x = input().data;
    let b = black_image();
    // Linear: IG = (x - b) W for any steps; sums to f(x) - f(b) exactly.
    let (c, reports) = run_net(Method::INTEGRATED_GRADIENTS, &LINEAR, AttributionOptions { steps: 5, ..Default::default() });
    let want: Vec<f32> = (0..27).map(|i| (x[i] - b[i]) * w()[i]).collect();
    assert_map(Method::INTEGRATED_GRADIENTS, &c.map.data, &rgb_sum(&want));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(reports.last(), Some(&(7, 7)), "steps + the two scores: {reports:?}");
    // Quadratic: the midpoint rule's mean alpha is exactly 1/2, so the average gradient is (x + b) / 2
    // and IG = (x^2 - b^2) / 2, again complete.
    let (c, _) = run_net(Method::INTEGRATED_GRADIENTS, &QUADRATIC, AttributionOptions { steps: 4, ..Default::default() });
    let want: Vec<f32> = (0..27).map(|i| (x[i] * x[i] - b[i] * b[i]) / 2.0).collect();
    assert_map(Method::INTEGRATED_GRADIENTS, &c.map.data, &rgb_sum(&want));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // The per-channel attributions come back as an RGB image.
    assert_eq!(c.rgb.expect("IG gives RGB attributions").data.len(), 27);
}

#[test]
fn integrated_gradients_warns_when_completeness_fails() {
    // Scores from one network, gradients from another: the sum misses f(x) - f(b).
    let mismatched = Net { f: LINEAR.f, grad: |x| x.to_vec() };
    let (c, _) = run_net(Method::INTEGRATED_GRADIENTS, &mismatched, AttributionOptions { steps: 3, ..Default::default() });
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("integrated gradients") && c.warnings[0].contains("gap"), "{}", c.warnings[0]);
}

#[test]
fn integrated_gradients_blurred_baseline_is_the_blurred_input() {
    let x = input();
    let blurred = gaussian_blur(&x, 3.0 / 20.0);
    let (c, _) = run_net(Method::INTEGRATED_GRADIENTS, &LINEAR, AttributionOptions { steps: 2, baseline: Baseline::Blur, ..Default::default() });
    let want: Vec<f32> = (0..27).map(|i| (x.data[i] - blurred.data[i]) * w()[i]).collect();
    assert_map(Method::INTEGRATED_GRADIENTS, &c.map.data, &rgb_sum(&want));
}

#[test]
fn gaussian_blur_keeps_constants_and_spreads_an_impulse_by_the_normalized_kernel() {
    let flat = FeatureMap::new(3, 4, 5, vec![0.25; 60]);
    assert!(gaussian_blur(&flat, 1.3).data.iter().all(|v| (v - 0.25).abs() < 1e-6));
    // An impulse in the middle of a 9 x 9 plane, sigma 1 (radius 3, no edge reached): the outer
    // product of the kernel exp(-d^2 / 2) / sum.
    let mut d = vec![0.0; 3 * 81];
    d[40] = 1.0;
    let b = gaussian_blur(&FeatureMap::new(3, 9, 9, d), 1.0);
    let z: f32 = (-3..=3).map(|k: i32| (-(k * k) as f32 / 2.0).exp()).sum();
    let k = |d: i32| (-(d * d) as f32 / 2.0).exp() / z;
    assert!((b.data[40] - k(0) * k(0)).abs() < 1e-6);
    assert!((b.data[40 + 9 + 2] - k(1) * k(2)).abs() < 1e-6);
    assert!((b.data.iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[test]
fn smoothgrad_averages_the_gradient_over_noisy_copies() {
    // Linear network: every noisy copy has gradient W, so the average is W.
    let (c, reports) = run_net(Method::SMOOTHGRAD, &LINEAR, AttributionOptions { samples: 5, ..Default::default() });
    assert_map(Method::SMOOTHGRAD, &c.map.data, &max_abs(&w()));
    assert_eq!(reports, vec![(2, 5), (4, 5), (5, 5)], "batches of 2");
    // Quadratic network: the gradient is the noisy input; with no noise it is the input itself, and
    // with noise the average stays near it (sigma 0.05 of the range 2, 50 samples).
    let (c, _) = run_net(Method::SMOOTHGRAD, &QUADRATIC, AttributionOptions { samples: 3, noise: 0.0, ..Default::default() });
    assert_map(Method::SMOOTHGRAD, &c.map.data, &max_abs(&input().data));
    let (c, _) = run_net(Method::SMOOTHGRAD, &QUADRATIC, AttributionOptions { samples: 50, noise: 0.05, ..Default::default() });
    let want = max_abs(&input().data);
    assert!(c.map.data.iter().zip(&want).all(|(a, b)| (a - b).abs() < 0.1), "{:?} vs {want:?}", c.map.data);
    assert!(c.map.data.iter().zip(&want).any(|(a, b)| a != b), "noise must change the gradient");
}

#[test]
fn occlusion_gives_the_mean_score_drop_of_the_windows_covering_each_pixel() {
    // Linear network: occluding pixel p drops the score by d_p = sum_c W (x - black).
    let (x, b) = (input().data, black_image());
    let d: Vec<f32> = rgb_sum(&(0..27).map(|i| w()[i] * (x[i] - b[i])).collect::<Vec<_>>());
    // 1 x 1 windows: the map is d itself.
    let (c, reports) = run_net(Method::OCCLUSION, &LINEAR, AttributionOptions { patch: Some(1), stride: Some(1), ..Default::default() });
    assert_map(Method::OCCLUSION, &c.map.data, &d);
    assert_eq!(reports.last(), Some(&(10, 10)), "9 windows and the unoccluded input");
    // One 3 x 3 window: every pixel gets the whole drop.
    let (c, _) = run_net(Method::OCCLUSION, &LINEAR, AttributionOptions { patch: Some(3), stride: Some(3), ..Default::default() });
    assert_map(Method::OCCLUSION, &c.map.data, &[d.iter().sum::<f32>(); 9]);
    // 2 x 2 windows at (0, 0), (0, 1), (1, 0), (1, 1): a corner is in one window, the centre in all four.
    let (c, _) = run_net(Method::OCCLUSION, &LINEAR, AttributionOptions { patch: Some(2), stride: Some(1), ..Default::default() });
    let win = |y: usize, x: usize| d[3 * y + x] + d[3 * y + x + 1] + d[3 * y + x + 3] + d[3 * y + x + 4];
    assert!((c.map.data[0] - win(0, 0)).abs() < 1e-4);
    assert!((c.map.data[8] - win(1, 1)).abs() < 1e-4);
    assert!((c.map.data[4] - (win(0, 0) + win(0, 1) + win(1, 0) + win(1, 1)) / 4.0).abs() < 1e-4);
    assert!((c.map.data[1] - (win(0, 0) + win(0, 1)) / 2.0).abs() < 1e-4);
}

#[test]
fn occlusion_windows_cover_the_edge_and_settings_are_checked() {
    assert_eq!(window_starts(224, 16, 8).len(), 27);
    assert_eq!(window_starts(10, 4, 4), vec![0, 4, 6]);
    assert_eq!(window_starts(4, 4, 2), vec![0]);
    let bad = [
        AttributionOptions { steps: 0, ..Default::default() },
        AttributionOptions { steps: 257, ..Default::default() },
        AttributionOptions { samples: 1000, ..Default::default() },
        AttributionOptions { noise: f32::NAN, ..Default::default() },
        AttributionOptions { patch: Some(0), ..Default::default() },
        AttributionOptions { patch: Some(4), stride: Some(5), ..Default::default() },
    ];
    for o in bad {
        assert!(o.check().is_err(), "{o:?}");
    }
    assert!(AttributionOptions::default().check().is_ok());
    // The default window: a quarter of the shorter side, half that as the stride, so 7 or 8 windows
    // a side at any size (one more flush with the edge when the stride leaves it uncovered); the old
    // fixed 16 / 8 took 27 x 27 at 224.
    let d = AttributionOptions::default();
    assert_eq!(d.occlusion_window(224, 224), (56, 28));
    assert_eq!(d.occlusion_window(224, 448), (56, 28));
    for side in [224, 299, 384] {
        let (p, s) = d.occlusion_window(side, side);
        assert!((7..=8).contains(&window_starts(side, p, s).len()), "{side}");
    }
    assert_eq!(d.occlusion_window(3, 3), (1, 1));
    assert_eq!(AttributionOptions { patch: Some(20), ..d }.occlusion_window(224, 224), (20, 10));
    assert_eq!(AttributionOptions { stride: Some(8), ..d }.occlusion_window(224, 224), (56, 8));
    assert!(Baseline::from_name("mauve").unwrap_err().to_string().contains("black, blur"));
}
