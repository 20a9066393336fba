//! The `gradcam` command line: JSON output, --tensor input, layers, overlays, and clear errors.

mod common;

use common::*;
use gradcam_wasm::imaging::npy::write_npy_f32;
use gradcam_wasm::imaging::preprocess::{preprocess, Normalize, Preprocess, Resize};
use std::process::Command;

fn gradcam(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gradcam")).args(args).current_dir(repo()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = gradcam(args);
    assert_eq!(code, 0, "gradcam {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn explain_prints_one_json_object_with_the_raw_map() {
    let v = json(&["explain", "assets/samples/coffee.png", "--json"]);
    assert_eq!(v["arch"], "efficientnet_lite0");
    assert_eq!(v["layer"], "_conv_head.act");
    assert_eq!(v["method"], "gradcam");
    assert_eq!(v["class"], 967);
    assert_eq!(v["label"], "espresso");
    assert!(v["score"].as_f64().unwrap() > 5.0 && v["probability"].as_f64().unwrap() > 0.9);
    assert_eq!(v["top5"].as_array().unwrap().len(), 5);
    assert_eq!((v["cam"]["width"].as_u64(), v["cam"]["height"].as_u64()), (Some(7), Some(7)));
    let values = v["cam"]["values"].as_array().unwrap();
    assert_eq!(values.len(), 49);
    assert!(values.iter().all(|x| x.as_f64().unwrap() >= 0.0), "after the ReLU");
    assert!(v["timings"]["total_ms"].as_f64().unwrap() > 0.0);
    // The result every front end reports (src/schema.rs): the JS names; the ones above stay for one
    // release as deprecated aliases with the same values.
    assert_eq!(v["classIdx"], v["class"]);
    assert_eq!(v["logit"], v["score"]);
    assert_eq!((v["rawWidth"].as_u64(), v["rawHeight"].as_u64()), (Some(7), Some(7)));
    assert_eq!(v["raw"], v["cam"]["values"]);
    assert_eq!(v["timings"]["totalMs"], v["timings"]["total_ms"]);
    assert_eq!(v["forwardReused"], v["forward_reused"]);
    assert_eq!(v["top5"][0]["classIdx"], v["top5"][0]["class"]);
    assert_eq!(v["methodLabel"], "Grad-CAM");
    assert!(v["geometry"]["scaleX"].as_f64().unwrap() > 0.0 && v["crop"]["width"].as_f64().unwrap() > 0.0);
    assert!(v.get("heatmap").is_none(), "the image-size map is left out of the JSON (--out writes it)");
}

#[test]
fn several_layers_are_given_as_a_comma_separated_list() {
    let v = json(&["explain", "assets/samples/coffee.png", "--json", "--layer", "_blocks.8,_conv_head.act"]);
    assert_eq!(v["layer"], "_blocks.8,_conv_head.act");
    assert_eq!((v["cam"]["width"].as_u64(), v["cam"]["height"].as_u64()), (Some(14), Some(14)), "the finer layer's grid");
}

#[test]
fn a_preprocessed_tensor_gives_the_same_map_as_the_image() {
    // The same preprocessing the CLI applies, written as a 1x3x224x224 .npy.
    let img = sample("chelsea.png");
    let p = Preprocess { resize: Resize::ShorterSide { size: 256, crop: Some((224, 224)) }, normalize: Normalize::Affine { offset: 127.0, scale: 128.0 } };
    let prepared = preprocess(&img, &p).unwrap();
    let path = std::env::temp_dir().join("gradcam-cli-test-input.npy");
    std::fs::write(&path, write_npy_f32(&[1, 3, 224, 224], &prepared.tensor).unwrap()).unwrap();
    let a = json(&["explain", "assets/samples/chelsea.png", "--json", "--class", "281"]);
    let b = json(&["explain", "--tensor", path.to_str().unwrap(), "--json", "--class", "281"]);
    let (va, vb) = (a["cam"]["values"].as_array().unwrap(), b["cam"]["values"].as_array().unwrap());
    for (x, y) in va.iter().zip(vb) {
        assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5);
    }
    assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-5);
}

#[test]
fn a_weighted_class_explains_the_weighted_score() {
    let a = json(&["explain", "assets/samples/chelsea.png", "--json", "--class", "281", "--raw", "--signed"]);
    let b = json(&["explain", "assets/samples/chelsea.png", "--json", "--class", "285:0.5,281:1", "--raw", "--signed"]);
    assert_eq!(b["class"], 281, "the heaviest term is reported");
    let c = json(&["explain", "assets/samples/chelsea.png", "--json", "--class", "285", "--raw", "--signed"]);
    let score = |v: &serde_json::Value| v["score"].as_f64().unwrap();
    assert!((score(&b) - (score(&a) + 0.5 * score(&c))).abs() < 1e-3, "{} vs {} + 0.5 * {}", score(&b), score(&a), score(&c));
    let values = |v: &serde_json::Value| v["cam"]["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    for ((x, y), z) in values(&b).iter().zip(values(&a)).zip(values(&c)) {
        assert!((x - (y + 0.5 * z)).abs() < 1e-3 * (1.0 + y.abs()), "Grad-CAM is linear in the target: {x} vs {y} + 0.5 * {z}");
    }
}

#[test]
fn eigen_and_aug_smoothing_change_the_map_and_are_refused_where_they_do_not_apply() {
    let plain = json(&["explain", "assets/samples/chelsea.png", "--json", "--class", "281"]);
    let eigen = json(&["explain", "assets/samples/chelsea.png", "--json", "--class", "281", "--eigen-smooth"]);
    let aug = json(&["explain", "assets/samples/chelsea.png", "--json", "--class", "281", "--aug-smooth"]);
    let values = |v: &serde_json::Value| v["cam"]["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    for (name, v) in [("eigen", &eigen), ("aug", &aug)] {
        assert_eq!(v["class"], 281, "{name}");
        assert_eq!(values(v).len(), 49, "{name}");
        assert_ne!(values(v), values(&plain), "{name} changes the map");
    }
    let (code, _, err) = gradcam(&["explain", "assets/samples/chelsea.png", "--method", "saliency", "--aug-smooth"]);
    assert!(code == 2 && err.contains("aug smoothing"), "{err}");
    let (code, _, err) = gradcam(&["explain", "assets/samples/chelsea.png", "--method", "eigencam", "--eigen-smooth"]);
    assert!(code == 2 && err.contains("eigen smoothing applies to"), "{err}");
}

#[test]
fn top_k_explains_each_class_and_writes_overlays() {
    let out = std::env::temp_dir().join("gradcam-cli-test-overlay.png");
    let v = json(&["explain", "assets/samples/chelsea.png", "--top", "3", "--json", "--out", out.to_str().unwrap(), "--method", "gradcam++", "--colormap", "turbo"]);
    let all = v["explanations"].as_array().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(v["method"], "gradcam++");
    for e in all {
        let path = std::env::temp_dir().join(format!("gradcam-cli-test-overlay-{}.png", e["class"]));
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), (451, 300), "overlay at the image's own size");
    }
}

#[test]
fn layers_lists_names_and_marks_the_default() {
    let (code, out, _) = gradcam(&["layers"]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with('*') && l.contains("_conv_head.act") && l.contains("1280x7x7")), "{out}");
    assert!(out.contains("_blocks.15") && out.contains("_bn1"));
}

#[test]
fn bad_arguments_fail_with_a_message_that_says_what_to_fix() {
    let cases: [(&[&str], &str); 13] = [
        (&["explain", "assets/samples/coffee.png", "--method", "ig", "--ig-steps", "0"], "1 to 256"),
        (&["explain", "assets/samples/coffee.png", "--method", "ig", "--ig-steps", "many"], "takes a number"),
        (&["explain", "assets/samples/coffee.png", "--ig-baseline", "mauve"], "black, blur"),
        (&["explain", "assets/samples/coffee.png", "--smooth-samples", "100000"], "1 to 256"),
        (&["explain", "assets/samples/coffee.png", "--method", "occlusion", "--occlusion-patch", "500", "--occlusion-stride", "500"], "larger than the 224 x 224 input"),
        (&["explain", "assets/samples/coffee.png", "--class", "1000"], "out of range"),
        (&["explain", "assets/samples/coffee.png", "--class", "281:"], "--class: option: the weight '' of class 281 is not a number"),
        (&["explain", "assets/samples/coffee.png", "--class", "281:1,cat:2"], "not a class index"),
        (&["explain", "assets/samples/coffee.png", "--method", "magic"], "choose one of"),
        (&["explain", "assets/samples/coffee.png", "--layer", "_blocks.99"], "unknown layer"),
        (&["explain", "no-such-image.png"], "cannot read image"),
        (&["explain", "assets/samples/coffee.png", "--model", "Cargo.toml"], "safetensors"),
        (&["explain", "assets/samples/coffee.png", "--colormap", "rainbow"], "turbo"),
    ];
    for (args, needle) in cases {
        let (code, _, err) = gradcam(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(needle), "{args:?}: '{err}' should mention '{needle}'");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn top_k_beyond_five_explains_k_distinct_classes_and_errors_end_with_a_newline() {
    let v = json(&["explain", "assets/samples/chelsea.png", "--top", "8", "--json"]);
    let all = v["explanations"].as_array().unwrap();
    assert_eq!(all.len(), 8);
    let classes: Vec<u64> = all.iter().map(|e| e["class"].as_u64().unwrap()).collect();
    let mut distinct = classes.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 8, "8 distinct classes, got {classes:?}");
    assert_eq!(classes[0], 282, "the top-1 first");
    // In the order of their scores.
    let scores: Vec<f64> = all.iter().map(|e| e["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // More classes than the model has: a clear error.
    let (code, _, err) = gradcam(&["explain", "assets/samples/chelsea.png", "--top", "1001"]);
    assert_eq!(code, 2);
    assert!(err.contains("--top 1001") && err.contains("1000"), "{err}");
    // Every error message ends with exactly one newline.
    for args in [
        &["explain", "assets/samples/coffee.png", "--class", "1000"][..],
        &["explain", "no-such-image.png"],
        &["explain"],
        &["frobnicate"],
        &["explain", "assets/samples/coffee.png", "--top", "1001"],
        &["explain", "assets/samples/coffee.png", "--alpha"],
        &["--help"],
    ] {
        let (code, _, err) = gradcam(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.ends_with('\n') && !err.ends_with("\n\n"), "{args:?}: {err:?}");
    }
}

#[test]
fn the_memory_budget_is_one_explanations_forward_and_buffers_together() {
    // EfficientNet-Lite0's forward at 224 holds 51 MiB of layer outputs: 40 MiB cannot run it, 80 MiB can.
    let (code, _, err) = gradcam(&["explain", "assets/samples/coffee.png", "--memory-budget", "40"]);
    assert_ne!(code, 0);
    assert!(err.contains("MiB of layer outputs, over the 40 MiB memory budget of one explanation"), "{err}");
    let v = json(&["explain", "assets/samples/coffee.png", "--memory-budget", "80", "--json"]);
    assert_eq!(v["class"], 967);
    let (code, _, err) = gradcam(&["explain", "assets/samples/coffee.png", "--memory-budget", "0"]);
    assert!(code != 0 && err.contains("at least 1 MiB"), "{err}");
}
