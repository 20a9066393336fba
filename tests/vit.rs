//! Vision Transformers against torchvision: a narrow `VisionTransformer` (random weights, written by
//! scripts/gen-vit-fixture.py) must be detected, give torch's logits and pytorch-grad-cam's ViT
//! Grad-CAM map at the last block's ln_1, and have an input gradient that matches finite
//! differences (through every token op: patch tokens, class token, position embedding,
//! self-attention, GELU MLP, class-token selection).

mod common;

use common::*;
use gradcam_wasm::arch::vit;
use gradcam_wasm::exec::{cpu::CpuExecutor, Executor};
use gradcam_wasm::graph::Op;
use gradcam_wasm::imaging::npy::read_npy_f32;
use gradcam_wasm::weights::legacy_pth::RawTensor;
use gradcam_wasm::weights::WeightMap;
use gradcam_wasm::{Arch, ExplainOptions, Explainer, FeatureMap, Method, Model, Normalization, Target};
use std::path::Path;

fn read(dir: &Path, name: &str) -> Vec<u8> {
    let p = dir.join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn npy(dir: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    read_npy_f32(&read(dir, name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Fixture {
    model: Model,
    input: FeatureMap,
    logits: Vec<f32>,
    map: (Vec<usize>, Vec<f32>),
    class: usize,
}

/// Loads a fixture directory; `heads` when the hidden size is not one of torchvision's variants.
fn fixture(dir: &Path, heads: Option<usize>) -> Fixture {
    let bytes = read(dir, "model.safetensors");
    let weights = WeightMap::from_safetensors(&bytes).unwrap();
    assert_eq!(Arch::detect(&weights).unwrap(), Arch::Vit);
    let model = Model::from_graph(Arch::Vit, vit::build(&weights, heads).unwrap(), None);
    let (shape, x) = npy(dir, "input.npy");
    let meta: serde_json::Value = serde_json::from_slice(&read(dir, "meta.json")).unwrap();
    Fixture { model, input: FeatureMap::new(shape[0], shape[1], shape[2], x), logits: npy(dir, "logits.npy").1, map: npy(dir, "gradcam.npy"), class: meta["class"].as_u64().unwrap() as usize }
}

fn narrow() -> Fixture {
    fixture(&repo().join("tests/fixtures/vit"), Some(2))
}

/// max |got - want| / max |want|.
fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "an all-zero reference would make the comparison vacuous");
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale
}

/// Logits (relative 1e-3) and the raw Grad-CAM map at the default layer (relative 1e-3).
fn check_against_torch(name: &str, f: Fixture) {
    let (h, w) = (f.input.height, f.input.width);
    assert_eq!(f.model.input_size(), (w, h), "{name}: the input size must come from the position embedding");
    let logits = CpuExecutor::new(f.model.graph.clone()).logits_batch(&f.input.data, 1, h, w).unwrap();
    let err = relative_error(&logits, &f.logits);
    println!("{name}: logits relative error {err:e}");
    assert!(err < 1e-3, "{name}: logits differ from torch's by {err:e}");

    let mut ex = Explainer::new(f.model);
    let opts = ExplainOptions { method: Method::GRAD_CAM, target: Target::Class(f.class), normalization: Normalization::Raw, ..Default::default() };
    let e = ex.explain_tensor(f.input, &opts).unwrap();
    assert_eq!(vec![e.raw.height, e.raw.width], f.map.0, "{name}: map shape");
    let err = relative_error(&e.raw.data, &f.map.1);
    println!("{name}: Grad-CAM map relative error {err:e}");
    assert!(err < 1e-3, "{name}: Grad-CAM map differs from the torch recipe by {err:e}: {:?} vs {:?}", e.raw.data, f.map.1);
}

#[test]
fn narrow_vit_is_detected_and_matches_torchvision() {
    let f = narrow();
    assert_eq!(f.model.default_layer(), "encoder.layers.encoder_layer_1.ln_1");
    assert!(f.model.layers().iter().any(|l| l.name == "encoder.layers.encoder_layer_1.ln_1" && l.shape == (16, 1, 17)));
    check_against_torch("narrow vit", f);
}

#[test]
fn vit_with_pre_logits_and_three_heads_matches_torchvision() {
    let f = fixture(&repo().join("tests/fixtures/vit/pre_logits"), Some(3));
    assert!(f.model.graph.find("heads.pre_logits").is_ok() && f.model.graph.find("heads.act").is_ok());
    assert_eq!(f.model.default_layer(), "encoder.layers.encoder_layer_0.ln_1");
    check_against_torch("vit with pre_logits", f);
}

/// A one-block ViT of hidden size 768 (random weights, 2 x 2 patches of 32 pixels) with
/// torchvision's key names: loads from bytes with its architecture detected and 12 heads taken from
/// the variant table.
#[test]
fn a_torchvision_hidden_size_loads_from_bytes_with_its_head_count() {
    let (c, mlp, patch, grid, classes) = (768, 8, 32, 2, 3);
    let mut sd = StateDict::new(4);
    sd.conv("conv_proj", c, 3, patch, true);
    let mut raw = |name: &str, shape: &[usize], scale: f32| {
        let data = Rng::new(name.len() as u64).vec(shape.iter().product(), scale);
        sd.tensors.push(RawTensor { name: name.into(), shape: shape.to_vec(), data });
    };
    raw("class_token", &[1, 1, c], 0.1);
    raw("encoder.pos_embedding", &[1, 1 + grid * grid, c], 0.1);
    let block = "encoder.layers.encoder_layer_0";
    for ln in ["ln_1", "ln_2"] {
        raw(&format!("{block}.{ln}.weight"), &[c], 1.0);
        raw(&format!("{block}.{ln}.bias"), &[c], 0.1);
    }
    raw(&format!("{block}.self_attention.in_proj_weight"), &[3 * c, c], 0.05);
    raw(&format!("{block}.self_attention.in_proj_bias"), &[3 * c], 0.1);
    raw("encoder.ln.weight", &[c], 1.0);
    raw("encoder.ln.bias", &[c], 0.1);
    sd.linear(&format!("{block}.self_attention.out_proj"), c, c);
    sd.linear(&format!("{block}.mlp.0"), mlp, c);
    sd.linear(&format!("{block}.mlp.3"), c, mlp);
    sd.linear("heads.head", classes, c);
    let model = Model::from_bytes(&sd.bytes(), None).unwrap();
    assert_eq!(model.arch, Arch::Vit);
    assert_eq!(model.input_size(), (64, 64));
    let attention = model.graph.find(&format!("{block}.self_attention")).unwrap();
    assert!(matches!(&model.graph.nodes[attention].op, Op::SelfAttention(a) if a.heads == 12));
    let mut ex = Explainer::new(model);
    let e = ex.explain_tensor(FeatureMap::new(3, 64, 64, Rng::new(1).vec(3 * 64 * 64, 1.0)), &ExplainOptions::default()).unwrap();
    assert_eq!((e.raw.width, e.raw.height, e.layer.as_str()), (2, 2, "encoder.layers.encoder_layer_0.ln_1"));
}

#[test]
fn heads_missing_from_the_file_and_a_wrong_input_size_are_clear_errors() {
    let bytes = read(&repo().join("tests/fixtures/vit"), "model.safetensors");
    let err = Model::from_bytes(&bytes, None).err().expect("hidden size 16 has no default head count").to_string();
    assert!(err.contains("heads") && err.contains("hidden size 16"), "{err}");
    let err = vit::build(&WeightMap::from_safetensors(&bytes).unwrap(), Some(3)).err().unwrap().to_string();
    assert!(err.contains("3 attention heads"), "{err}");

    let f = narrow();
    let mut ex = Explainer::new(f.model);
    let err = ex.explain_tensor(FeatureMap::new(3, 40, 40, vec![0.1; 3 * 40 * 40]), &ExplainOptions::default()).err().unwrap().to_string();
    assert!(err.contains("32x32"), "{err}");
}

#[test]
fn every_method_explains_a_token_layer_on_the_patch_grid() {
    let f = narrow();
    let mut ex = Explainer::new(f.model);
    for layer in ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1.mlp.1", "encoder.ln", "tokens", "conv_proj"] {
        for method in [
            Method::GRAD_CAM,
            Method::GRAD_CAM_PLUS_PLUS,
            Method::HIRES_CAM,
            Method::LAYER_CAM,
            Method::EIGEN_CAM,
            Method::SCORE_CAM,
            Method::GUIDED_GRAD_CAM,
            Method::DECONV_GRAD_CAM,
            Method::FULLGRAD,
        ] {
            let opts = ExplainOptions { method, layer: Some(layer.into()), target: Target::Class(f.class), ..Default::default() };
            let e = ex.explain_tensor(f.input.clone(), &opts).unwrap_or_else(|e| panic!("{layer} {}: {e}", method.name()));
            let side = if method.is_input_resolution() { 32 } else { 4 };
            assert_eq!((e.raw.width, e.raw.height), (side, side), "{layer} {}", method.name());
            assert!(e.raw.data.iter().all(|v| v.is_finite()), "{layer} {}", method.name());
        }
    }
}

/// Directional derivatives of a class score against central differences of the forward pass.
#[test]
fn input_gradient_matches_finite_differences() {
    let f = narrow();
    let exec = CpuExecutor::new(f.model.graph.clone());
    let (h, w) = (f.input.height, f.input.width);
    let layer = f.model.graph.find(&f.model.default_layer()).unwrap();
    let mut target = vec![0.0f32; 10];
    target[f.class] = 1.0;
    target[7] = -0.5;
    let grad = exec.start(f.input.clone(), layer).unwrap().input_gradient(&target, gradcam_wasm::exec::ReluRule::Plain).unwrap();
    let mut rng = Rng::new(21);
    let eps = 1e-2f32;
    let mut pairs = Vec::new();
    for i in 0..6 {
        let d = rng.vec(f.input.data.len(), 1.0);
        let shifted: Vec<f32> = [eps, -eps].iter().flat_map(|s| f.input.data.iter().zip(&d).map(move |(x, v)| x + s * v)).collect();
        let logits = exec.logits_batch(&shifted, 2, h, w).unwrap();
        let score = |k: usize| -> f64 { logits[k * 10..(k + 1) * 10].iter().zip(&target).map(|(l, t)| *l as f64 * *t as f64).sum() };
        let fd = (score(0) - score(1)) / (2.0 * eps as f64);
        let an: f64 = grad.data.iter().zip(&d).map(|(g, v)| *g as f64 * *v as f64).sum();
        println!("direction {i}: analytic {an:.6}, finite difference {fd:.6}");
        pairs.push((an, fd));
    }
    // Relative to the RMS derivative: a direction whose derivative happens to be tiny is no harder.
    let rms = (pairs.iter().map(|(a, _)| a * a).sum::<f64>() / pairs.len() as f64).sqrt();
    assert!(rms > 1e-3, "vanishing derivatives would make the check vacuous");
    let worst = pairs.iter().map(|(a, f)| (a - f).abs() / rms).fold(0.0, f64::max);
    println!("worst error / RMS derivative: {worst:e}");
    assert!(worst < 1e-3, "input gradient disagrees with finite differences: worst error {worst:e} of the RMS derivative");
}

/// Full-size vit_b_16 (random weights), written by `scripts/gen-vit-fixture.py --full DIR`:
/// `VIT_FULL_DIR=DIR cargo test --test vit -- --ignored`.
#[test]
#[ignore = "needs a 346 MB file from scripts/gen-vit-fixture.py --full"]
fn full_size_vit_b_16_matches_torchvision() {
    let dir = std::env::var("VIT_FULL_DIR").expect("set VIT_FULL_DIR to the directory gen-vit-fixture.py --full wrote");
    let f = fixture(Path::new(&dir), None);
    assert_eq!(f.model.default_layer(), "encoder.layers.encoder_layer_11.ln_1");
    check_against_torch("vit_b_16", f);
}

/// The same narrow ViT exported with torch's dynamo exporter (scripts/gen-vit-onnx-fixture.py):
/// the import collapses each decomposed `nn.MultiheadAttention` into one self-attention and reads
/// the `[1, tokens, channels]` tensors as token maps; logits and the Grad-CAM map at the default
/// layer (the last block's ln_1) match torch's.
#[test]
fn dynamo_onnx_export_imports_and_matches_torchvision() {
    let dir = repo().join("tests/fixtures/vit");
    let f = narrow();
    let model = Model::from_onnx(&read(&dir, "model.onnx"), Some(&read(&dir, "model.onnx.data"))).unwrap();
    assert_eq!(model.default_layer, "encoder.layers.encoder_layer_1.ln_1");
    let kinds: Vec<&str> = model.graph.nodes.iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "self-attention").count(), 2, "{kinds:?}");
    for k in ["tokens", "prepend-token", "add-positional", "class-token"] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    let heads: Vec<usize> = model.graph.nodes.iter().filter_map(|n| if let Op::SelfAttention(a) = &n.op { Some(a.heads) } else { None }).collect();
    assert_eq!(heads, [2, 2]);
    check_against_torch("narrow ViT (dynamo ONNX)", Fixture { model, ..f });
}
