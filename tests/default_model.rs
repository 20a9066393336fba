//! The default model (ImageNet EfficientNet-Lite0) on real photos: top-1, class discrimination on a
//! cat | coffee composite, every method, map alignment on a non-square photo, forward reuse.

mod common;

use common::*;
use gradcam_wasm::imaging::preprocess::{Normalize, Resize};
use gradcam_wasm::imaging::resize::resize_bilinear;
use gradcam_wasm::imaging::rgb::RgbImage;
use gradcam_wasm::methods::attribution::{AttributionOptions, Baseline};
use gradcam_wasm::methods::score::ScoreCamOptions;
use gradcam_wasm::{ExplainOptions, Explainer, FeatureMap, Map, Method, Model, Target};

const CATS: [usize; 3] = [281, 282, 285]; // tabby, tiger cat, Egyptian cat
const ESPRESSO: usize = 967;

fn explainer() -> Explainer {
    Explainer::new(Model::from_bytes(&default_model_bytes(), None).unwrap())
}

#[test]
fn top1_on_real_photos() {
    let mut ex = explainer();
    let cat = ex.predict(&sample("chelsea.png"), 5).unwrap();
    println!("chelsea: {cat:?}");
    assert!(CATS.contains(&cat[0].class), "chelsea top-1 is {} ({})", cat[0].class, cat[0].label);
    assert!(cat.iter().take(3).all(|p| CATS.contains(&p.class)), "the three cat classes should lead: {cat:?}");
    let coffee = ex.predict(&sample("coffee.png"), 5).unwrap();
    assert_eq!(coffee[0].class, ESPRESSO, "coffee: {coffee:?}");
    assert!(coffee[0].probability > 0.9, "espresso p = {}", coffee[0].probability);
    let rocket = ex.predict(&sample("rocket.jpg"), 5).unwrap();
    assert_eq!(rocket[0].label, "missile", "rocket: {rocket:?}");
}

/// Cat photo squeezed into the left half, coffee photo into the right half.
fn composite() -> RgbImage {
    let (w, h) = (224, 224);
    let half = |img: RgbImage| resize_bilinear(&img, w, h).unwrap();
    let (cat, coffee) = (half(sample("chelsea.png")), half(sample("coffee.png")));
    let mut data = vec![0u8; 2 * w * h * 3];
    for y in 0..h {
        for x in 0..2 * w {
            let (src, sx) = if x < w { (&cat, x) } else { (&coffee, x - w) };
            for c in 0..3 {
                data[(y * 2 * w + x) * 3 + c] = src[c * w * h + y * w + sx].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage::from_rgb(2 * w, h, data).unwrap()
}

fn left_share(m: &Map) -> f32 {
    let (mut left, mut total) = (0.0f32, 0.0f32);
    for y in 0..m.height {
        for x in 0..m.width {
            let v = m.data[y * m.width + x].max(0.0);
            total += v;
            if x < m.width / 2 {
                left += v;
            }
        }
    }
    left / total
}

#[test]
fn grad_cam_discriminates_cat_from_espresso_on_a_composite() {
    let mut ex = explainer();
    let img = composite();
    let resize = Some(Resize::Exact { width: 448, height: 224 });
    let cats = Target::Weighted(CATS.iter().map(|&c| (c, 1.0)).collect());
    for method in [Method::GRAD_CAM, Method::GUIDED_GRAD_CAM, Method::HIRES_CAM, Method::LAYER_CAM, Method::XGRAD_CAM, Method::GRAD_CAM_PLUS_PLUS] {
        let cat = ex.explain(&img, &ExplainOptions { method, target: cats.clone(), resize: resize.clone(), ..Default::default() }).unwrap();
        let cup = ex.explain(&img, &ExplainOptions { method, target: Target::Class(ESPRESSO), resize: resize.clone(), ..Default::default() }).unwrap();
        let (l_cat, l_cup) = (left_share(&cat.image_map), left_share(&cup.image_map));
        println!("{}: cat mass on the left {l_cat:.3}, espresso mass on the left {l_cup:.3}", method.name());
        assert!(l_cat > 0.65, "{}: cat map should lie on the left, {l_cat}", method.name());
        assert!(l_cup < 0.35, "{}: espresso map should lie on the right, {l_cup}", method.name());
        assert!(cup.forward_reused, "the second class must reuse the forward pass");
    }
    // The counterfactual map of espresso points at what argues against it: the cat.
    let cf = ex.explain(&img, &ExplainOptions { method: Method::COUNTERFACTUAL, target: Target::Class(ESPRESSO), resize, ..Default::default() }).unwrap();
    println!("counterfactual espresso: left share {:.3}", left_share(&cf.image_map));
    assert!(left_share(&cf.image_map) > 0.5);
}

#[test]
fn every_method_gives_a_finite_nonzero_map_on_a_photo() {
    let mut ex = explainer();
    let img = sample("coffee.png");
    for method in gradcam_wasm::methods::ALL {
        // The attribution methods at cheap settings (their defaults are timed in `attribution_methods_on_the_default_model`).
        let attribution = AttributionOptions { steps: 8, samples: 4, patch: Some(32), stride: Some(32), ..Default::default() };
        let opts = ExplainOptions { method, score_cam: ScoreCamOptions { batch: Some(32), max_channels: Some(96) }, attribution, ..Default::default() };
        let e = ex.explain(&img, &opts).unwrap_or_else(|e| panic!("{}: {e}", method.name()));
        assert_eq!(e.class, ESPRESSO);
        assert!(e.raw.data.iter().all(|v| v.is_finite()), "{}: non-finite map", method.name());
        if method == Method::COUNTERFACTUAL {
            // At p = 0.95 nothing argues against espresso: the map may be empty, but then it must say so.
            assert!(e.raw.max() > 0.0 || e.warnings.iter().any(|w| w.contains("all zero")), "empty counterfactual map without a warning");
            continue;
        }
        assert!(e.raw.max() > 0.0, "{}: empty map", method.name());
        let inside = e.image_map.data.iter().filter(|v| **v > 0.0).count();
        assert!(inside > 1000, "{}: map almost empty on the image", method.name());
        assert!(e.image_map.max() <= 1.0 + 1e-6 && e.image_map.min() >= 0.0);
        if method.is_input_resolution() {
            assert_eq!((e.raw.width, e.raw.height), (224, 224));
            let reads_gradient = method.needs().guided_input_gradient || method.needs().deconv_input_gradient || method.needs().input_gradients;
            assert_eq!(e.rgb.is_some(), reads_gradient, "{}: an RGB image exactly for gradient methods", method.name());
        } else {
            assert_eq!((e.raw.width, e.raw.height), (7, 7));
        }
        println!("{}: {:.1} ms (forward reused: {})", method.name(), e.timings.total_ms, e.forward_reused);
    }
}

#[test]
fn the_map_lands_on_the_original_non_square_image_and_only_inside_the_crop() {
    let mut ex = explainer();
    let img = sample("chelsea.png"); // 451 x 300
    let e = ex.explain(&img, &ExplainOptions::default()).unwrap();
    assert_eq!((e.image_map.width, e.image_map.height), (451, 300));
    // Resize 300 -> 256 (scale 0.853), crop 224 of 385 wide: columns ~ 47..=403 are inside.
    let col = |x: usize| (0..300).map(|y| e.image_map.data[y * 451 + x]).fold(0.0f32, f32::max);
    assert_eq!(col(10), 0.0, "left of the crop must be empty");
    assert_eq!(col(440), 0.0, "right of the crop must be empty");
    assert!(col(225) > 0.0);
    // The map's peak on the image sits where the raw map's peak cell projects.
    let (pi, _) = e.raw.data.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
    let (cx, cy) = ((pi % 7) as f64 + 0.5, (pi / 7) as f64 + 0.5);
    let g = &e.geometry;
    let (ox, oy) = (g.orig_x(cx * 32.0), g.orig_y(cy * 32.0));
    let (qi, _) = e.image_map.data.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
    let (qx, qy) = ((qi % 451) as f64, (qi / 451) as f64);
    assert!((qx - ox).abs() < 20.0 && (qy - oy).abs() < 20.0, "peak at ({qx},{qy}), expected near ({ox:.0},{oy:.0})");
    // Raw normalization keeps the scale: the peak on the image is the raw peak, up to where pixel
    // centres fall between cell centres.
    let raw = ex.explain(&img, &ExplainOptions { normalization: gradcam_wasm::Normalization::Raw, ..Default::default() }).unwrap();
    assert!(raw.image_map.max() <= raw.raw.max() * 1.0001 && raw.image_map.max() >= 0.9 * raw.raw.max(), "{} vs {}", raw.image_map.max(), raw.raw.max());
}

#[test]
fn score_cam_reports_progress_and_discriminates() {
    let mut ex = explainer();
    let img = composite();
    let resize = Some(Resize::Exact { width: 448, height: 224 });
    let mut seen = Vec::new();
    let opts = ExplainOptions { method: Method::SCORE_CAM, target: Target::Class(ESPRESSO), resize, score_cam: ScoreCamOptions { batch: Some(32), max_channels: Some(128) }, ..Default::default() };
    let e = ex.explain_with_progress(&img, &opts, &mut |done, total| seen.push((done, total))).unwrap();
    assert_eq!(seen.len(), 4, "one report per batch of 32: {seen:?}");
    assert_eq!(*seen.last().unwrap(), (128, 128));
    println!("score-cam espresso: left share {:.3}, {:.0} ms", left_share(&e.image_map), e.timings.total_ms);
    assert!(left_share(&e.image_map) < 0.4);
}

/// EfficientNet-Lite1 and Lite2, pretrained, from their PyPI packages' legacy `.pth` files (fetched by
/// scripts/fetch-assets.sh): the family's deeper and wider variants load from their own keys, at
/// their own input sizes, and classify and localise like Lite0.
#[test]
fn pretrained_lite1_and_lite2_classify_and_localise() {
    for (name, size, espresso_p) in [("efficientnet-lite1", 240, 0.4), ("efficientnet-lite2", 260, 0.8)] {
        let path = repo().join(format!("assets/models/{name}.pth"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/fetch-assets.sh", path.display()));
        let model = Model::from_bytes(&bytes, None).unwrap();
        assert_eq!((model.arch.name(), model.input_size()), ("efficientnet_lite", (size, size)), "{name}");
        let mut ex = Explainer::new(model);
        let coffee = ex.predict(&sample("coffee.png"), 5).unwrap();
        let cat = ex.predict(&sample("chelsea.png"), 5).unwrap();
        println!("{name}: coffee {:?}, chelsea {:?}", coffee[0], cat[0]);
        assert_eq!(coffee[0].class, ESPRESSO, "{name}: coffee {coffee:?}");
        assert!(coffee[0].probability > espresso_p, "{name}: espresso p = {}", coffee[0].probability);
        assert!(CATS.contains(&cat[0].class), "{name}: chelsea {cat:?}");
        let img = composite();
        let resize = Some(Resize::Exact { width: 2 * size, height: size });
        let cats = Target::Weighted(CATS.iter().map(|&c| (c, 1.0)).collect());
        let cat = ex.explain(&img, &ExplainOptions { target: cats, resize: resize.clone(), ..Default::default() }).unwrap();
        let cup = ex.explain(&img, &ExplainOptions { target: Target::Class(ESPRESSO), resize, ..Default::default() }).unwrap();
        let (l_cat, l_cup) = (left_share(&cat.image_map), left_share(&cup.image_map));
        println!("{name}: Grad-CAM cat mass on the left {l_cat:.3}, espresso mass on the left {l_cup:.3}");
        assert!(l_cat > 0.65 && l_cup < 0.35, "{name}: cat {l_cat}, espresso {l_cup}");
    }
}

/// Integrated Gradients' completeness on the real network, against f(black) from a separate forward
/// of the black tensor: the explanation warns exactly when the signed attributions miss
/// f(photo) - f(baseline) by over 1%. Measured on coffee.png (espresso): the midpoint rule's gap is
/// 40% at 32 steps from black (17% at 8, 9.9% at 64, 2.8% at 128, 1.2% at 256: ReLU6 kinks along
/// the path), and 2.4% at 32 steps, under 1% at 128, from the blurred input. Then the attribution
/// methods' maps: finite, non-zero, class-dependent, and on the cat | coffee composite the cat's
/// map leans further left than the espresso's.
#[test]
fn attribution_methods_on_the_default_model() {
    let mut ex = explainer();
    let img = sample("coffee.png");
    let ig = |baseline, steps| ExplainOptions {
        method: Method::INTEGRATED_GRADIENTS,
        target: Target::Class(ESPRESSO),
        signed: true,
        attribution: AttributionOptions { baseline, steps, ..Default::default() },
        ..Default::default()
    };
    let e = ex.explain(&img, &ig(Baseline::Black, 32)).unwrap();
    let sum: f64 = e.raw.data.iter().map(|&v| v as f64).sum();
    // f(black): pixel 0 through the model's normalization ((x - 127) / 128 for EfficientNet-Lite), by its own forward.
    let black_pixel: [f32; 3] = match ex.model().preprocess.normalize {
        Normalize::MeanStd { mean, std } => std::array::from_fn(|c| -mean[c] / std[c]),
        Normalize::Affine { offset, scale } => [-offset / scale; 3],
    };
    let black = FeatureMap::new(3, 224, 224, (0..3 * 224 * 224).map(|i| black_pixel[i / (224 * 224)]).collect());
    let fb = ex.explain_tensor(black, &ExplainOptions { target: Target::Class(ESPRESSO), ..Default::default() }).unwrap().score as f64;
    let delta = e.score as f64 - fb;
    let gap = (sum - delta).abs() / delta.abs();
    let warned = e.warnings.iter().any(|w| w.contains("integrated gradients") && w.contains(&format!("{delta:.4}")));
    println!("integrated gradients (black, 32 steps): sum {sum:.4}, f(x) - f(black) = {delta:.4}, gap {:.2}%, {:.0} ms, {:?}", 100.0 * gap, e.timings.total_ms, e.warnings);
    assert_eq!(warned, gap > 0.01, "the completeness warning must match the independent check (gap {gap}): {:?}", e.warnings);
    let e = ex.explain(&img, &ig(Baseline::Blur, 128)).unwrap();
    println!("integrated gradients (blur, 128 steps): {:.0} ms, {:?}", e.timings.total_ms, e.warnings);
    assert!(e.warnings.iter().all(|w| !w.contains("integrated gradients")), "complete within 1% from the blurred input: {:?}", e.warnings);

    // Class discrimination on the composite (fewer steps and samples; patch 32: 98 occlusion forwards).
    let comp = composite();
    let resize = Some(Resize::Exact { width: 448, height: 224 });
    let cats = Target::Weighted(CATS.iter().map(|&c| (c, 1.0)).collect());
    let attribution = AttributionOptions { steps: 8, samples: 8, patch: Some(32), stride: Some(32), ..Default::default() };
    for method in [Method::SALIENCY, Method::INPUT_X_GRADIENT, Method::INTEGRATED_GRADIENTS, Method::SMOOTHGRAD, Method::OCCLUSION] {
        let opts = |target: Target| ExplainOptions { method, target, resize: resize.clone(), attribution, ..Default::default() };
        let mut reports = 0;
        let cat = ex.explain_with_progress(&comp, &opts(cats.clone()), &mut |_, _| reports += 1).unwrap();
        let cup = ex.explain(&comp, &opts(Target::Class(ESPRESSO))).unwrap();
        for e in [&cat, &cup] {
            assert!(e.raw.data.iter().all(|v| v.is_finite()) && e.raw.max() > 0.0, "{}: empty or non-finite map", method.name());
        }
        let differ = cat.raw.data.iter().zip(&cup.raw.data).filter(|(a, b)| (*a - *b).abs() > 1e-3 * cat.raw.max()).count();
        assert!(differ > cat.raw.data.len() / 4, "{}: the cat and espresso maps hardly differ ({differ} cells)", method.name());
        let (l_cat, l_cup) = (left_share(&cat.image_map), left_share(&cup.image_map));
        println!("{}: cat mass on the left {l_cat:.3}, espresso mass on the left {l_cup:.3}, {:.0} ms, {reports} progress reports", method.name(), cup.timings.method_ms);
        assert!(l_cat > l_cup, "{}: the cat map should lean further left than the espresso map ({l_cat} vs {l_cup})", method.name());
        if method != Method::SALIENCY && method != Method::INPUT_X_GRADIENT {
            assert!(reports > 1, "{}: progress", method.name());
        }
    }
}
