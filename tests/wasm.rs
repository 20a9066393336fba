//! The JavaScript API (`src/wasm.rs`) on wasm32: loading the default model, explaining a synthetic
//! image, and every bad call coming back as a JS `Error` while the explainer stays usable; and the
//! kernels that only wasm32 builds take (the max pool's four-window search, our GEMM under Winograd
//! with kept weights).
//! Needs `scripts/setup.sh` (the model file); runs under `wasm-bindgen-test-runner` (Node or a browser).
#![cfg(target_arch = "wasm32")]

use gradcam_wasm::wasm::Explainer;
use js_sys::{Array, Float32Array, Object, Reflect, Uint8ClampedArray};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

static MODEL: &[u8] = include_bytes!("../assets/models/efficientnet-lite0.safetensors");
// Written by tests/parity_reference.rs (native) before this file is compiled: see scripts/test.sh.
static PHOTO_RGBA: &[u8] = include_bytes!("../target/parity/chelsea.rgba");
static NATIVE: &str = include_str!("../target/parity/reference.json");

fn explainer() -> Explainer {
    Explainer::new(js_sys::Uint8Array::from(MODEL).into(), JsValue::UNDEFINED).expect("the default model loads")
}

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &JsValue::from_str(k), v).unwrap();
    }
    o.into()
}

/// A duck-typed ImageData (`ImageData` itself exists only in browsers and workers).
fn image(width: u32, height: u32, len: usize) -> JsValue {
    let bytes: Vec<u8> = (0..len).map(|i| if i % 4 == 3 { 255 } else { ((i * 37) % 251) as u8 }).collect();
    obj(&[("width", width.into()), ("height", height.into()), ("data", Uint8ClampedArray::from(&bytes[..]).into())])
}

fn field(v: &JsValue, k: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(k)).unwrap()
}

fn message(e: JsValue) -> String {
    e.dyn_into::<js_sys::Error>().expect("errors are JS Error objects").message().into()
}

#[wasm_bindgen_test]
fn explains_a_synthetic_image() {
    let mut ex = explainer();
    assert_eq!(ex.num_classes(), 1000);
    assert_eq!(ex.default_layer(), "_conv_head.act");
    assert!(ex.methods().iter().any(|m| m.as_string().as_deref() == Some("gradcam")));
    assert!(Array::from(&ex.layers().unwrap()).length() > 10);
    // The catalog the page's menu and help read: every method, each with a label, help and grid.
    let catalog = Array::from(&gradcam_wasm::wasm::method_catalog().unwrap());
    assert_eq!(catalog.length() as usize, gradcam_wasm::methods::ALL.len());
    for m in catalog.iter() {
        for k in ["name", "label", "help", "grid"] {
            assert!(field(&m, k).as_string().is_some_and(|v| !v.is_empty()), "{k} of {:?}", field(&m, "name"));
        }
        // Which smoothings it takes: eigen only where the map sums weighted maps, aug on the layer grid.
        let (name, smoothing) = (field(&m, "name").as_string().unwrap(), field(&m, "smoothing"));
        let takes = |k: &str| field(&smoothing, k).as_bool().unwrap();
        assert_eq!(takes("aug"), field(&m, "grid").as_string().unwrap() == "layer", "{name}");
        assert!(!takes("eigen") || takes("aug"), "{name}: eigen smoothing is for layer-grid CAMs");
    }
    // Each method's own settings (the page's controls): Integrated Gradients' two, none for Grad-CAM.
    let options_of =
        |name: &str| catalog.iter().find(|m| field(m, "name").as_string().unwrap() == name).map(|m| Array::from(&field(&m, "options")).iter().map(|k| k.as_string().unwrap()).collect::<Vec<_>>());
    assert_eq!(options_of("integrated-gradients"), Some(vec!["igSteps".to_string(), "igBaseline".to_string()]));
    assert_eq!(options_of("gradcam"), Some(vec![]));
    let eigen_of = |name: &str| catalog.iter().find(|m| field(m, "name").as_string().unwrap() == name).map(|m| field(&field(&m, "smoothing"), "eigen").as_bool().unwrap());
    assert_eq!((eigen_of("gradcam"), eigen_of("eigencam"), eigen_of("saliency")), (Some(true), Some(false), Some(false)));

    let (w, h) = (64u32, 48u32);
    let img = image(w, h, (4 * w * h) as usize);
    let r = ex.explain(img.clone(), JsValue::from(281), JsValue::UNDEFINED).unwrap();
    assert_eq!(field(&r, "width").as_f64(), Some(w as f64));
    assert_eq!(field(&r, "height").as_f64(), Some(h as f64));
    assert_eq!(field(&r, "classIdx").as_f64(), Some(281.0));
    assert_eq!(field(&r, "methodLabel").as_string().as_deref(), Some("Grad-CAM"));
    assert_eq!(field(&r, "backend").as_string().as_deref(), Some("cpu"));
    assert_eq!(field(&r, "method").as_string().as_deref(), Some("gradcam"));
    // The result schema (src/schema.rs): buffers stay typed arrays, nested objects are plain objects.
    for k in ["heatmap", "raw"] {
        assert!(field(&r, k).is_instance_of::<Float32Array>(), "{k} is a Float32Array");
    }
    assert!(field(&field(&r, "timings"), "totalMs").as_f64().unwrap() > 0.0);
    assert_eq!(field(&field(&r, "geometry"), "width").as_f64(), Some(w as f64));
    let crop_w = field(&field(&r, "crop"), "width").as_f64().unwrap();
    assert!(crop_w > 0.5 * w as f64 && crop_w < w as f64, "the centre crop: {crop_w} of {w}");
    assert_eq!(field(&Array::from(&field(&r, "top5")).get(0), "classIdx").as_f64().map(|c| c >= 0.0), Some(true));
    let heat = Float32Array::from(field(&r, "heatmap")).to_vec();
    assert_eq!(heat.len(), (w * h) as usize);
    assert!(heat.iter().all(|v| (0.0..=1.0).contains(v)));
    let raw = Float32Array::from(field(&r, "raw")).to_vec();
    assert_eq!(raw.len() as f64, field(&r, "rawWidth").as_f64().unwrap() * field(&r, "rawHeight").as_f64().unwrap());
    assert_eq!(Array::from(&field(&r, "top5")).length(), 5);
    assert!(field(&r, "overlay").is_function());

    let opts = obj(&[("method", "layercam".into()), ("normalize", "raw".into()), ("preprocess", "resize".into())]);
    let r = ex.explain(img.clone(), JsValue::UNDEFINED, opts).unwrap();
    assert_eq!(field(&r, "method").as_string().as_deref(), Some("layercam"));
    assert!(field(&r, "rgb").is_undefined());
    let r = ex.explain(img.clone(), JsValue::UNDEFINED, obj(&[("method", "guided-backprop".into())])).unwrap();
    let rgb = Float32Array::from(field(&r, "rgb")).length() as f64;
    assert_eq!(rgb, 3.0 * field(&r, "rgbWidth").as_f64().unwrap() * field(&r, "rgbHeight").as_f64().unwrap());
    assert_eq!(Array::from(&ex.predict(img, JsValue::from(3)).unwrap()).length(), 3);
}

#[wasm_bindgen_test]
fn bad_calls_are_errors_and_the_explainer_stays_usable() {
    let mut ex = explainer();
    let (w, h) = (32u32, 32u32);
    let img = image(w, h, (4 * w * h) as usize);
    let none = || JsValue::UNDEFINED;
    let bad_class = |c: JsValue, want: &str, ex: &mut Explainer| {
        let m = message(ex.explain(img.clone(), c, none()).expect_err("bad classIdx is rejected"));
        assert!(m.contains(want), "{m}");
    };
    bad_class(JsValue::from(-1), "negative", &mut ex);
    bad_class(JsValue::from(1.5), "integer", &mut ex);
    bad_class(JsValue::from(f64::NAN), "integer", &mut ex);
    bad_class(JsValue::from(1000), "out of range", &mut ex);
    bad_class(JsValue::from(1e12), "out of range", &mut ex);
    bad_class(JsValue::from_str("cat"), "not a class index", &mut ex);
    bad_class(JsValue::from_str("281:"), "not a number", &mut ex);
    bad_class(JsValue::from_str("3:1,1000:1"), "out of range", &mut ex);
    bad_class(JsValue::from(true), "number or a weighted string", &mut ex);

    let m = message(ex.explain(image(0, 0, 0), none(), none()).err().unwrap());
    assert!(m.contains("zero size"), "{m}");
    let m = message(ex.explain(image(w, h, 10), none(), none()).err().unwrap());
    assert!(m.contains("expected 4096") && m.contains("got 10"), "{m}");
    for (key, value, want) in [
        ("method", "gradkam", "unknown method"),
        ("colormap", "rainbow", "unknown colormap"),
        ("normalize", "zscore", "unknown normalize"),
        ("preprocess", "pad", "unknown preprocess"),
        ("layer", "nope", "nope"),
        ("colour", "jet", "unknown explain option"),
        ("eigenSmooth", "yes", "'eigenSmooth' must be a boolean"),
        ("augSmooth", "yes", "'augSmooth' must be a boolean"),
    ] {
        let m = message(ex.explain(img.clone(), none(), obj(&[(key, value.into())])).err().unwrap());
        assert!(m.contains(want), "{key}: {m}");
    }
    let m = message(ex.explain(img.clone(), none(), obj(&[("alpha", 2.into())])).err().unwrap());
    assert!(m.contains("alpha"), "{m}");
    assert!(ex.predict(img.clone(), JsValue::from(0)).is_err());
    assert!(ex.overlay(image(8, 8, 256), JsValue::UNDEFINED, none()).is_err(), "no explanation yet");
    assert!(Explainer::new(js_sys::Uint8Array::from(&b"not a model"[..]).into(), JsValue::UNDEFINED).is_err());
    assert!(Explainer::new(JsValue::from_str("model.safetensors"), JsValue::UNDEFINED).is_err());
    assert!(Explainer::new(js_sys::Uint8Array::from(MODEL).into(), obj(&[("arch", "resnet18".into())])).is_err());

    // Still usable after all of that.
    let r = ex.explain(img.clone(), JsValue::from(0), none()).unwrap();
    assert_eq!(field(&r, "classIdx").as_f64(), Some(0.0));
    // A weighted class as a string: the score is the weighted sum of the logits.
    let a = ex.explain(img.clone(), JsValue::from(3), none()).unwrap();
    let mix = ex.explain(img.clone(), JsValue::from_str("0:1, 3:0.5"), none()).unwrap();
    assert_eq!(field(&mix, "classIdx").as_f64(), Some(0.0), "the heaviest term");
    let logit = |r: &JsValue| field(r, "logit").as_f64().unwrap();
    assert!((logit(&mix) - (logit(&r) + 0.5 * logit(&a))).abs() < 1e-3, "{} vs {} + 0.5 * {}", logit(&mix), logit(&r), logit(&a));
    // The smoothings: accepted where they apply, refused with the reason where they do not.
    for key in ["eigenSmooth", "augSmooth"] {
        let r = ex.explain(img.clone(), JsValue::from(0), obj(&[(key, true.into())])).unwrap();
        assert_eq!(field(&r, "classIdx").as_f64(), Some(0.0), "{key}");
    }
    let m = message(ex.explain(img.clone(), none(), obj(&[("method", "saliency".into()), ("augSmooth", true.into())])).err().unwrap());
    assert!(m.contains("aug smoothing"), "{m}");
    // An overlay of another-sized image is refused before any ImageData is built.
    assert!(ex.overlay(image(8, 8, 256), r, none()).is_err());
}

#[wasm_bindgen_test]
fn wasm_matches_the_native_build_on_a_real_photo() {
    let native: serde_json::Value = serde_json::from_str(NATIVE).unwrap();
    let (w, h) = (native["width"].as_u64().unwrap() as u32, native["height"].as_u64().unwrap() as u32);
    let photo = obj(&[("width", w.into()), ("height", h.into()), ("data", Uint8ClampedArray::from(PHOTO_RGBA).into())]);
    let mut ex = explainer();
    let mut worst_logit = 0.0f64;
    let mut worst_map = 0.0f64;
    for (key, reference) in native["maps"].as_object().unwrap() {
        let (method, class) = key.split_once(':').unwrap();
        let class: u32 = class.parse().unwrap();
        let r = ex.explain(photo.clone(), JsValue::from(class), obj(&[("method", method.into())])).unwrap();
        let ours = Float32Array::from(field(&r, "raw")).to_vec();
        let theirs: Vec<f64> = reference["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(ours.len(), theirs.len(), "{key}: map sizes differ");
        let d = ours.iter().zip(&theirs).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        worst_map = worst_map.max(d);
        assert!(d <= 1e-4, "{key}: wasm and native raw maps differ by {d}");
        let top5 = Array::from(&field(&r, "top5"));
        for (i, p) in native["top5"].as_array().unwrap().iter().enumerate() {
            let ours = top5.get(i as u32);
            // One vocabulary (src/schema.rs): the native reference's predictions say classIdx too.
            assert_eq!(field(&ours, "classIdx").as_f64(), p["classIdx"].as_f64(), "{key}: top-5 order differs at {i}");
            worst_logit = worst_logit.max((field(&ours, "logit").as_f64().unwrap() - p["logit"].as_f64().unwrap()).abs());
        }
    }
    web_sys::console::log_1(&format!("wasm vs native: max |logit diff| {worst_logit:e}, max |raw map diff| {worst_map:e}").into());
    assert!(worst_logit <= 1e-4, "logits differ by {worst_logit}");
}

#[wasm_bindgen_test]
fn huge_images_are_reduced_on_the_way_in_not_copied_at_full_size() {
    // 5000 x 4000 = 20 MP > 16 MP: read row by row at half size (2500 x 2000).
    let (w, h) = (5000u32, 4000u32);
    let data = Uint8ClampedArray::new_with_length(4 * w * h);
    data.fill(128, 0, 4 * w * h);
    let img = obj(&[("width", w.into()), ("height", h.into()), ("data", data.into())]);
    let mut ex = explainer();
    let r = ex.explain(img, JsValue::UNDEFINED, JsValue::UNDEFINED).unwrap();
    assert_eq!(field(&r, "width").as_f64(), Some(2500.0));
    assert_eq!(field(&r, "height").as_f64(), Some(2000.0));
    assert_eq!(Float32Array::from(field(&r, "heatmap")).length(), 2500 * 2000);
    // A wrong length is still refused before anything is read.
    let short = obj(&[("width", w.into()), ("height", h.into()), ("data", Uint8ClampedArray::new_with_length(16).into())]);
    let m = message(ex.explain(short, JsValue::UNDEFINED, JsValue::UNDEFINED).err().unwrap());
    assert!(m.contains("length mismatch"), "{m}");
}

/// The max pool takes four windows per vector in wasm (`pool.rs`: `max4` for the value, `argmax4`
/// for value and argmax); both must give a window-by-window search's values, and the argmax must
/// route every gradient where the one-window search does, with ties (first maximum wins) and NaN
/// (it wins) included, on ResNet's 3x3 stride-2 pool and on planes whose edges fall mid-vector.
#[wasm_bindgen_test]
fn max_pool_four_window_search_routes_like_the_one_window_search() {
    use gradcam_wasm::kernels::{max_pool2d_forward, max_pool2d_forward_argmax, max_pool2d_input_grad, max_pool2d_input_grad_argmax, PoolGeom};
    for (h, w, pad, ceil_mode) in [(112, 112, 1, false), (13, 27, 1, false), (9, 22, 0, true)] {
        let g = PoolGeom { n: 1, c: 3, h, w, kh: 3, kw: 3, stride_h: 2, stride_w: 2, pad_h: pad, pad_w: pad, ceil_mode };
        // Few distinct values (many ties), and a NaN now and then.
        let x: Vec<f32> = (0..3 * h * w).map(|i| if i % 97 == 5 { f32::NAN } else { ((i * 7919) % 13) as f32 }).collect();
        let gy: Vec<f32> = (0..3 * g.out_h() * g.out_w()).map(|i| 1.0 + (i % 5) as f32).collect();
        let (values, argmax) = max_pool2d_forward_argmax(&x, &g);
        let same = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(p, q)| p == q || (p.is_nan() && q.is_nan()));
        // Window by window, clipped to the plane, in row-major order.
        let searched: Vec<f32> = (0..3 * g.out_h() * g.out_w())
            .map(|i| {
                let (p, oy, ox) = (i / (g.out_h() * g.out_w()), i / g.out_w() % g.out_h(), i % g.out_w());
                let mut best = f32::NEG_INFINITY;
                for yy in (2 * oy).saturating_sub(pad)..(2 * oy + 3 - pad).min(h) {
                    for xx in (2 * ox).saturating_sub(pad)..(2 * ox + 3 - pad).min(w) {
                        let v = x[(p * h + yy) * w + xx];
                        best = if v > best || v.is_nan() { v } else { best };
                    }
                }
                best
            })
            .collect();
        assert!(same(&values, &searched), "{h}x{w}: argmax values");
        assert!(same(&max_pool2d_forward(&x, &g), &searched), "{h}x{w}: values");
        assert_eq!(max_pool2d_input_grad_argmax(&argmax, &gy, &g), max_pool2d_input_grad(&x, &gy, &g), "{h}x{w}: routes");
    }
}

/// The wasm build's own GEMM (A read in place, also transposed; tiles stored straight into C) and
/// the kept transformed weights (the input gradient reads them in place through the variant's mirror
/// image, the forward transposed) only run in wasm32: ResNet-18 with Winograd on, twice (building the
/// kept weights, then reading them), must match the direct convs.
#[wasm_bindgen_test]
fn winograd_and_kept_weights_match_the_direct_convs_in_wasm() {
    use gradcam_wasm::exec::cpu::CpuExecutor;
    use gradcam_wasm::kernels::Tuning;
    use gradcam_wasm::{Arch, ExplainOptions, Explainer as Core, FeatureMap, Method, Model, Target};
    let bytes = gradcam_wasm::synthetic::state_dict(Arch::ResNet18, 1000).unwrap().bytes();
    // 112 x 112: layer2 (14 x 14) and layer3 (7 x 7) take F(2x2), layer1 (28 x 28) F(4x4), all kept.
    let image = FeatureMap::new(3, 112, 112, (0..3 * 112 * 112).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect());
    let opts = ExplainOptions { method: Method::GUIDED_GRAD_CAM, target: Target::Class(7), ..Default::default() };
    let run = |winograd: bool| {
        let model = Model::from_bytes(&bytes, Some(Arch::ResNet18)).unwrap();
        let executor = CpuExecutor::new(model.graph.clone()).with_tuning(Tuning { winograd, ..Tuning::DEFAULT });
        let mut ex = Core::with_executor(model, Box::new(executor));
        let first = ex.explain_tensor(image.clone(), &opts).unwrap();
        let again = ex.explain_tensor(image.clone(), &opts).unwrap();
        assert_eq!(first.raw.data, again.raw.data, "a second call (kept weights) differs");
        (ex.kept_bytes(), first.top5[0].logit, first.raw.data, first.rgb.unwrap().data)
    };
    let (kept, logit, map, grad) = run(true);
    let (kept0, logit0, map0, grad0) = run(false);
    assert!(kept > 0 && kept0 == 0, "kept {kept} bytes with Winograd, {kept0} without");
    let rel = |a: &[f32], b: &[f32]| {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale.max(1e-30)
    };
    assert!((logit - logit0).abs() <= 1e-4 * logit0.abs().max(1.0), "logits {logit} vs {logit0}");
    let (dm, dg) = (rel(&map, &map0), rel(&grad, &grad0));
    assert!(dm <= 1e-3 && dg <= 1e-3, "map differs by {dm:.1e}, guided gradient by {dg:.1e}");
    assert!(map0.iter().any(|v| *v > 0.0) && grad0.iter().any(|v| *v != 0.0));
}

/// A conv's input gradient from a mostly-zero output gradient (a ResNet stem's, behind its max pool)
/// scatters each nonzero's taps with wasm32 SIMD rows (`kernels/scatter.rs`): on a 7x7 stride-2
/// stem, a 6-wide stride-3 kernel and an 11x11 stride-4 one (AlexNet's), it must give the bits of
/// the definition summed in the same order.
#[wasm_bindgen_test]
fn sparse_output_gradients_scatter_to_the_definitions_bits_in_wasm() {
    use gradcam_wasm::kernels::{conv2d_input_grad, Conv2dGeom};
    let geom = |cin, h, w, cout, (kh, kw), (sh, sw), (pt, pb, pl, pr)| Conv2dGeom {
        n: 1,
        cin,
        h,
        w,
        cout,
        kh,
        kw,
        stride_h: sh,
        stride_w: sw,
        pad_top: pt,
        pad_bottom: pb,
        pad_left: pl,
        pad_right: pr,
        groups: 1,
    };
    let geoms = [geom(3, 40, 36, 8, (7, 7), (2, 2), (3, 3, 3, 3)), geom(2, 17, 19, 5, (5, 6), (1, 3), (0, 2, 4, 1)), geom(3, 39, 39, 4, (11, 11), (4, 4), (2, 2, 2, 2))];
    let mut rng = Rng(99);
    for g in geoms {
        let (oh, ow) = (g.out_h(), g.out_w());
        let w: Vec<f32> = (0..g.cout * g.cin * g.kh * g.kw).map(|_| rng.below(2001) as f32 / 1000.0 - 1.0).collect();
        // About 10% nonzero.
        let go: Vec<f32> = (0..g.cout * oh * ow).map(|_| if rng.below(10) == 0 { rng.below(2001) as f32 / 1000.0 - 1.0 } else { 0.0 }).collect();
        let mut want = vec![0.0f32; g.cin * g.h * g.w];
        for oy in 0..oh {
            for co in 0..g.cout {
                for ox in 0..ow {
                    let v = go[(co * oh + oy) * ow + ox];
                    for ci in 0..g.cin {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let (iy, ix) = ((oy * g.stride_h + ky) as isize - g.pad_top as isize, (ox * g.stride_w + kx) as isize - g.pad_left as isize);
                                if v != 0.0 && iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                    want[(ci * g.h + iy as usize) * g.w + ix as usize] += v * w[((co * g.cin + ci) * g.kh + ky) * g.kw + kx];
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(want.iter().any(|&v| v != 0.0));
        assert_eq!(conv2d_input_grad(&go, &w, &g, None), want, "{g:?}");
    }
}

/// A xorshift generator: the same calls on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())].clone()
    }
}

/// Values of every JS type, including the edges of numbers (a fuzzer's dictionary for options).
fn any_value(rng: &mut Rng) -> JsValue {
    let numbers = [f64::NAN, f64::INFINITY, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 7.0, 281.0, 999.0, 1000.0, 4097.0, 1e9, -1e9, 1e300, -0.0];
    let strings =
        ["", "gradcam", "guided-backprop", "layercam", "eigencam", "jet", "viridis", "raw", "minmax", "crop", "resize", "_conv_head.act", "_blocks.15", "nope", "281:1,285:0.5", "3", "\u{0}"];
    match rng.below(7) {
        0 => JsValue::from(rng.pick(&numbers)),
        1 => JsValue::from_str(rng.pick(&strings)),
        2 => JsValue::from(rng.below(2) == 1),
        3 => JsValue::NULL,
        4 => JsValue::UNDEFINED,
        5 => Array::of2(&JsValue::from(rng.pick(&numbers)), &JsValue::from_str(rng.pick(&strings))).into(),
        _ => obj(&[("length", JsValue::from(rng.pick(&numbers)))]),
    }
}

/// A value `key` accepts (so that calls get past the parsing as often as they stop in it).
fn good_value(key: &str, rng: &mut Rng) -> JsValue {
    match key {
        "method" => JsValue::from_str(rng.pick(&["gradcam", "hirescam", "xgradcam", "gradcam++", "guided-gradcam", "saliency", "eigencam"])),
        "layer" => JsValue::from_str(rng.pick(&["_conv_head.act", "_blocks.15", "_blocks.10"])),
        "colormap" => JsValue::from_str(rng.pick(&["jet", "viridis", "inferno"])),
        "alpha" => JsValue::from(rng.pick(&[0.0, 0.5, 1.0])),
        "normalize" => JsValue::from_str(rng.pick(&["minmax", "raw"])),
        "preprocess" => JsValue::from_str(rng.pick(&["crop", "resize"])),
        _ => JsValue::from(rng.below(2) == 1),
    }
}

/// An options object: known keys with good or any values (the cheap methods only, so a run stays
/// short), unknown keys, or not an object at all.
fn any_options(rng: &mut Rng) -> JsValue {
    match rng.below(8) {
        0 => return any_value(rng),
        1 | 2 => return JsValue::UNDEFINED,
        _ => {}
    }
    let keys = ["method", "layer", "colormap", "alpha", "normalize", "preprocess", "signed", "onProgress", "scoreCamBatch", "colour", "__proto__", "constructor"];
    let o = Object::new();
    for _ in 0..1 + rng.below(3) {
        let key = rng.pick(&keys);
        let value = if rng.below(4) != 0 { good_value(key, rng) } else { any_value(rng) };
        Reflect::set(&o, &JsValue::from_str(key), &value).unwrap();
    }
    o.into()
}

/// An ImageData-like value: a good one of any shape, wrong or absurd sizes, data of the right
/// length or not, or no image at all.
fn any_image(rng: &mut Rng) -> JsValue {
    if rng.below(2) == 0 {
        let (w, h) = rng.pick(&[(32u32, 32u32), (1, 1), (17, 5), (30000, 1), (1, 3000), (300, 200)]);
        return image(w, h, (4 * w * h) as usize);
    }
    let sides = [0.0, 1.0, 2.0, 17.0, 32.0, 30000.0, 65536.0, 1e9, -1.0, f64::NAN, 1.5];
    let (w, h) = (rng.pick(&sides), rng.pick(&sides));
    let len = rng.pick(&[0usize, 3, 4, 4096, 16384]);
    let data: JsValue = match rng.below(8) {
        0 => js_sys::Float32Array::new_with_length(len as u32).into(),
        1 => any_value(rng),
        _ => Uint8ClampedArray::new_with_length(len as u32).into(),
    };
    if rng.below(10) == 0 {
        return any_value(rng);
    }
    obj(&[("width", w.into()), ("height", h.into()), ("data", data)])
}

/// The JS option and ImageData parsing, fuzzed on stable Rust: 400 seeded random calls of
/// `explain`, `predict` and `overlay`. Each ends in a result or a JS `Error` with a message, never a
/// trap, and the explainer gives the same map afterwards.
#[wasm_bindgen_test]
fn random_options_and_images_end_in_a_result_or_an_error_never_a_trap() {
    let mut ex = explainer();
    let img = image(32, 32, 4096);
    let map = |r: &JsValue| Float32Array::from(field(r, "raw")).to_vec();
    let reference = ex.explain(img.clone(), JsValue::from(281), JsValue::UNDEFINED).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut errors) = (0, 0);
    for i in 0..400 {
        let (image, class, options) = (any_image(&mut rng), any_value(&mut rng), any_options(&mut rng));
        let result = match rng.below(8) {
            0 => ex.predict(image, class),
            1 => ex.overlay(image, reference.clone(), options).map(JsValue::from),
            _ => ex.explain(image, if rng.below(3) != 0 { JsValue::UNDEFINED } else { class }, options),
        };
        match result {
            Ok(_) => ok += 1,
            Err(e) => {
                let e = e.dyn_into::<js_sys::Error>().unwrap_or_else(|v| panic!("call {i}: threw a non-Error {v:?}"));
                assert!(String::from(e.message()).len() > 10, "call {i}: a message that says what to fix");
                errors += 1;
            }
        }
    }
    web_sys::console::log_1(&format!("random calls: {ok} results, {errors} errors").into());
    assert!(ok > 20 && errors > 100, "the dictionary reaches both outcomes: {ok} results, {errors} errors");
    let again = ex.explain(img, JsValue::from(281), JsValue::UNDEFINED).unwrap();
    assert_eq!(map(&again), map(&reference));
}

/// A progress callback that throws, or an `isCancelled` that says yes, stops Score-CAM after its first
/// batch with a "cancelled" Error (how the worker aborts a running call); the explainer then explains
/// exactly as before, and a call without either runs to its end.
#[wasm_bindgen_test]
fn a_cancelled_score_cam_stops_after_one_batch_and_the_explainer_goes_on() {
    use std::{cell::Cell, rc::Rc};
    let mut ex = explainer();
    let (w, h) = (64u32, 48u32);
    let img = image(w, h, (4 * w * h) as usize);
    let heat = |r: JsValue| Float32Array::from(field(&r, "heatmap")).to_vec();
    let before = heat(ex.explain(img.clone(), JsValue::from(281), JsValue::UNDEFINED).unwrap());
    let batches = Rc::new(Cell::new(0u32));
    let seen = batches.clone();
    let throwing = Closure::<dyn FnMut(u32, u32) -> Result<(), JsValue>>::new(move |_, _| {
        seen.set(seen.get() + 1);
        Err(JsValue::from_str("aborted"))
    });
    let opts = obj(&[("method", "scorecam".into()), ("scoreCamBatch", 8.into()), ("onProgress", throwing.as_ref().clone())]);
    let err = message(ex.explain(img.clone(), JsValue::from(281), opts).unwrap_err());
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(batches.get(), 1, "stopped after the first batch");
    let yes = Closure::<dyn Fn() -> bool>::new(|| true);
    let opts = obj(&[("method", "scorecam".into()), ("scoreCamBatch", 8.into()), ("isCancelled", yes.as_ref().clone())]);
    assert!(message(ex.explain(img.clone(), JsValue::from(281), opts).unwrap_err()).contains("cancelled"));
    let bad = obj(&[("isCancelled", JsValue::from(1))]);
    assert!(message(ex.explain(img.clone(), JsValue::from(281), bad).unwrap_err()).contains("isCancelled must be a function"));
    // Nothing of the cancelled calls lingers: the same map, and a full Score-CAM runs to its end.
    assert_eq!(heat(ex.explain(img.clone(), JsValue::from(281), JsValue::UNDEFINED).unwrap()), before);
    let opts = obj(&[("method", "scorecam".into()), ("scoreCamChannels", 16.into())]);
    assert!(ex.explain(img, JsValue::from(281), opts).is_ok());
}

/// Prints what one Grad-CAM of the photo costs and what of it is turning the result into a JS object
/// (src/schema.rs through serde-wasm-bindgen, its maps as Float32Arrays): a figure, not a timed test.
#[wasm_bindgen_test]
fn prints_the_time_of_one_explanation_and_of_its_result_object() {
    let native: serde_json::Value = serde_json::from_str(NATIVE).unwrap();
    let (w, h) = (native["width"].as_u64().unwrap() as u32, native["height"].as_u64().unwrap() as u32);
    let photo = obj(&[("width", w.into()), ("height", h.into()), ("data", Uint8ClampedArray::from(PHOTO_RGBA).into())]);
    let now = || js_sys::Date::now();
    let mut ex = explainer();
    let method = |m: &str| obj(&[("method", m.into())]);
    ex.explain(photo.clone(), JsValue::from(281), method("gradcam")).unwrap(); // warm up
                                                                               // Another class each time: the forward is reused, so this is the method, the map and the result.
    let t0 = now();
    for class in 0..20 {
        let r = ex.explain(photo.clone(), JsValue::from(class), method("gradcam")).unwrap();
        assert!(field(&r, "heatmap").is_instance_of::<Float32Array>());
    }
    let per_explain = (now() - t0) / 20.0;
    let mut native_ex = gradcam_wasm::Explainer::new(gradcam_wasm::Model::from_bytes(MODEL, None).unwrap());
    let rgb: Vec<u8> = PHOTO_RGBA.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    let img = gradcam_wasm::imaging::rgb::RgbImage { width: w as usize, height: h as usize, data: rgb };
    let e = native_ex.explain(&img, &Default::default()).unwrap();
    let serializer = serde_wasm_bindgen::Serializer::new().serialize_missing_as_null(true);
    let t1 = now();
    for _ in 0..200 {
        let v = serde::Serialize::serialize(&gradcam_wasm::schema::ExplainResult::of(&e, true), &serializer).unwrap();
        assert!(field(&v, "raw").is_instance_of::<Float32Array>());
    }
    let per_object = (now() - t1) / 200.0;
    console_log!("# wasm explain of chelsea.png ({w}x{h}), Grad-CAM with the forward reused: {per_explain:.2} ms per call; of it the result object: {per_object:.3} ms");
}
