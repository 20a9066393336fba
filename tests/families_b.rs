//! MobileNetV3, EfficientNet B0-B7 / V2, RegNet X / Y and ConvNeXt: tiny state dicts with torchvision's
//! key names, written here (no torch needed), are detected, build, name the right default layer and
//! explain. With `FAMILIES_B_TORCH_DIR` set (scripts/verify-families-b.py writes it), every model
//! there is also compared with torch's logits.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use gradcam_wasm::exec::{cpu::CpuExecutor, Executor};
use gradcam_wasm::imaging::npy::read_npy_f32;
use gradcam_wasm::weights::legacy_pth::RawTensor;
use gradcam_wasm::{Arch, ExplainOptions, Explainer, FeatureMap, Method, Model, Target};

fn raw(s: &mut StateDict, name: &str, shape: &[usize], data: Vec<f32>) {
    s.tensors.push(RawTensor { name: name.into(), shape: shape.to_vec(), data });
}

/// `Conv2dNormActivation` keys: `{p}.0` conv without bias, `{p}.1` batch-norm.
fn conv_bn(s: &mut StateDict, p: &str, cout: usize, cin_per_group: usize, k: usize) {
    s.conv(&format!("{p}.0"), cout, cin_per_group, k, false);
    s.bn(&format!("{p}.1"), cout);
}

/// `SqueezeExcitation` keys: 1x1 convs `fc1` (c -> squeeze) and `fc2` (squeeze -> c), with biases.
fn se(s: &mut StateDict, p: &str, c: usize, squeeze: usize) {
    s.conv(&format!("{p}.fc1"), squeeze, c, 1, true);
    s.conv(&format!("{p}.fc2"), c, squeeze, 1, true);
}

/// An inverted residual / MBConv at `p` (`{p}.block.K`); returns its output width.
fn inverted_residual(s: &mut StateDict, p: &str, cin: usize, k: usize, expanded: usize, out: usize, squeeze: Option<usize>) -> usize {
    let mut part = 0;
    if expanded != cin {
        conv_bn(s, &format!("{p}.block.0"), expanded, cin, 1);
        part = 1;
    }
    conv_bn(s, &format!("{p}.block.{part}"), expanded, 1, k);
    if let Some(sq) = squeeze {
        part += 1;
        se(s, &format!("{p}.block.{part}"), expanded, sq);
    }
    conv_bn(s, &format!("{p}.block.{}", part + 1), out, expanded, 1);
    out
}

/// MobileNetV3 at a small width: (kernel, expanded, out, squeeze-excitation) per block, shaped like
/// torchvision's tables (the builder supplies strides and activations).
fn mobilenet_v3(large: bool, classes: usize) -> StateDict {
    let blocks: &[(usize, usize, usize, bool)] = if large {
        &[
            (3, 8, 8, false),
            (3, 16, 8, false),
            (3, 24, 8, false),
            (5, 24, 16, true),
            (5, 32, 16, true),
            (5, 32, 16, true),
            (3, 48, 16, false),
            (3, 40, 16, false),
            (3, 40, 16, false),
            (3, 40, 16, false),
            (3, 64, 24, true),
            (3, 72, 24, true),
            (5, 72, 32, true),
            (5, 96, 32, true),
            (5, 96, 32, true),
        ]
    } else {
        &[
            (3, 8, 8, true),
            (3, 24, 8, false),
            (3, 24, 8, false),
            (5, 32, 16, true),
            (5, 48, 16, true),
            (5, 48, 16, true),
            (5, 40, 16, true),
            (5, 48, 16, true),
            (5, 64, 24, true),
            (5, 96, 24, true),
            (5, 96, 24, true),
        ]
    };
    let mut s = StateDict::new(if large { 31 } else { 32 });
    conv_bn(&mut s, "features.0", 8, 3, 3);
    let mut c = 8;
    for (i, &(k, e, out, has_se)) in blocks.iter().enumerate() {
        c = inverted_residual(&mut s, &format!("features.{}", i + 1), c, k, e, out, has_se.then_some((e / 4).max(8)));
    }
    conv_bn(&mut s, &format!("features.{}", blocks.len() + 1), 6 * c, c, 1);
    s.linear("classifier.0", 64, 6 * c);
    s.linear("classifier.3", classes, 64);
    s
}

/// EfficientNet B0's stages (expansion, kernel, out, blocks) at a small width.
fn efficientnet_b0(classes: usize) -> StateDict {
    efficientnet_with_head(classes, 128)
}

/// B0's layout at a small width, with a head conv of `head` channels (B1-B7 widen it).
fn efficientnet_with_head(classes: usize, head: usize) -> StateDict {
    let stages = [(1, 3, 8, 1), (6, 3, 8, 2), (6, 5, 16, 2), (6, 3, 16, 3), (6, 5, 24, 3), (6, 5, 24, 4), (6, 3, 32, 1)];
    let mut s = StateDict::new(33);
    conv_bn(&mut s, "features.0", 8, 3, 3);
    let mut c = 8;
    for (i, &(t, k, out, n)) in stages.iter().enumerate() {
        for j in 0..n {
            c = inverted_residual(&mut s, &format!("features.{}.{j}", i + 1), c, k, c * t, out, Some((c / 4).max(1)));
        }
    }
    conv_bn(&mut s, "features.8", head, c, 1);
    s.linear("classifier.1", classes, head);
    s
}

/// EfficientNetV2-S's layout (three FusedMBConv stages, three MBConv stages) at a small width.
fn efficientnet_v2(classes: usize) -> StateDict {
    let fused = [(1, 8, 2), (4, 16, 2), (4, 16, 2)];
    let mbconv = [(4, 24, 2), (6, 24, 2), (6, 32, 2)];
    let mut s = StateDict::new(34);
    conv_bn(&mut s, "features.0", 8, 3, 3);
    let mut c = 8;
    for (i, &(t, out, n)) in fused.iter().enumerate() {
        for j in 0..n {
            let p = format!("features.{}.{j}.block", i + 1);
            if t == 1 {
                conv_bn(&mut s, &format!("{p}.0"), out, c, 3);
            } else {
                conv_bn(&mut s, &format!("{p}.0"), c * t, c, 3);
                conv_bn(&mut s, &format!("{p}.1"), out, c * t, 1);
            }
            c = out;
        }
    }
    for (i, &(t, out, n)) in mbconv.iter().enumerate() {
        for j in 0..n {
            c = inverted_residual(&mut s, &format!("features.{}.{j}", i + 4), c, 3, c * t, out, Some((c / 4).max(1)));
        }
    }
    conv_bn(&mut s, "features.7", 64, c, 1);
    s.linear("classifier.1", classes, 64);
    s
}

/// A four-stage RegNet (widths, depths), group width 8, with squeeze-excitation (Y) or without (X).
fn regnet(y: bool, classes: usize) -> StateDict {
    let stages = [(8, 1), (16, 2), (24, 2), (32, 1)];
    let mut s = StateDict::new(if y { 35 } else { 36 });
    conv_bn(&mut s, "stem", 8, 3, 3);
    let mut c = 8;
    for (i, &(w, n)) in stages.iter().enumerate() {
        for j in 0..n {
            let p = format!("trunk_output.block{}.block{}-{j}", i + 1, i + 1);
            if j == 0 {
                conv_bn(&mut s, &format!("{p}.proj"), w, c, 1);
            }
            conv_bn(&mut s, &format!("{p}.f.a"), w, c, 1);
            conv_bn(&mut s, &format!("{p}.f.b"), w, 8, 3);
            if y {
                se(&mut s, &format!("{p}.f.se"), w, c / 4);
            }
            conv_bn(&mut s, &format!("{p}.f.c"), w, w, 1);
            c = w;
        }
    }
    s.linear("fc", classes, c);
    s
}

fn layer_norm(s: &mut StateDict, name: &str, c: usize) {
    raw(s, &format!("{name}.weight"), &[c], (0..c).map(|i| 1.0 + 0.01 * i as f32).collect());
    raw(s, &format!("{name}.bias"), &[c], (0..c).map(|i| 0.02 * (i % 5) as f32 - 0.04).collect());
}

/// ConvNeXt with dims (8, 16, 24, 32) and depths (1, 1, 2, 1).
fn convnext(classes: usize) -> StateDict {
    let (dims, depths) = ([8, 16, 24, 32], [1, 1, 2, 1]);
    let mut s = StateDict::new(37);
    s.conv("features.0.0", dims[0], 3, 4, true);
    layer_norm(&mut s, "features.0.1", dims[0]);
    for (i, (&c, &n)) in dims.iter().zip(&depths).enumerate() {
        for j in 0..n {
            let p = format!("features.{}.{j}", 2 * i + 1);
            s.conv(&format!("{p}.block.0"), c, 1, 7, true);
            layer_norm(&mut s, &format!("{p}.block.2"), c);
            s.linear(&format!("{p}.block.3"), 4 * c, c);
            s.linear(&format!("{p}.block.5"), c, 4 * c);
            raw(&mut s, &format!("{p}.layer_scale"), &[c, 1, 1], vec![0.5; c]);
        }
        if let Some(&next) = dims.get(i + 1) {
            layer_norm(&mut s, &format!("features.{}.0", 2 * i + 2), c);
            s.conv(&format!("features.{}.1", 2 * i + 2), next, c, 2, true);
        }
    }
    layer_norm(&mut s, "classifier.0", dims[3]);
    s.linear("classifier.2", classes, dims[3]);
    s
}

/// (what the file is, its weights, the architecture detection must name, the default layer).
fn families() -> Vec<(&'static str, StateDict, Arch, &'static str)> {
    vec![
        ("mobilenet_v3_large", mobilenet_v3(true, 10), Arch::MobileNetV3, "features.16"),
        ("mobilenet_v3_small", mobilenet_v3(false, 10), Arch::MobileNetV3, "features.12"),
        ("efficientnet_b0", efficientnet_b0(10), Arch::EfficientNet, "features.8"),
        ("efficientnet_v2_s", efficientnet_v2(10), Arch::EfficientNetV2, "features.7"),
        ("regnet_x", regnet(false, 10), Arch::RegNet, "trunk_output.block4"),
        ("regnet_y", regnet(true, 10), Arch::RegNet, "trunk_output.block4"),
        ("convnext", convnext(10), Arch::ConvNeXt, "features.7"),
    ]
}

#[test]
fn each_family_is_detected_builds_and_explains() {
    for (name, sd, arch, layer) in families() {
        let model = Model::from_bytes(&sd.bytes(), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(model.arch, arch, "{name} detected as {}", model.arch.name());
        assert_eq!(model.default_layer(), layer, "{name}");
        assert_eq!(model.graph.num_classes, 10, "{name}");
        let mut ex = Explainer::new(model);
        for method in [Method::GRAD_CAM, Method::GUIDED_GRAD_CAM] {
            let input = FeatureMap::new(3, 96, 96, Rng::new(5).vec(3 * 96 * 96, 1.5));
            let opts = ExplainOptions { method, target: Target::Class(3), ..Default::default() };
            let e = ex.explain_tensor(input, &opts).unwrap_or_else(|e| panic!("{name} {}: {e}", method.name()));
            assert!(e.raw.data.iter().all(|v| v.is_finite()), "{name}: non-finite map");
            if method == Method::GRAD_CAM {
                // Every family downsamples by 32: a 96x96 input gives a 3x3 map.
                assert_eq!((e.raw.width, e.raw.height), (3, 3), "{name}");
            }
        }
    }
}

#[test]
fn block_and_stage_names_are_targets() {
    let cases: [(StateDict, &[&str]); 4] = [
        (mobilenet_v3(false, 10), &["features.4", "features.4.block.2", "features.1.block.1.fc1", "features.0"]),
        (efficientnet_v2(10), &["features.2", "features.2.1.block.0", "features.5.1.block.2", "features"]),
        (regnet(true, 10), &["trunk_output.block3.block3-1", "trunk_output.block2.block2-0.f.b", "stem", "trunk_output"]),
        (convnext(10), &["features.5.1", "features.4", "features.3.0.block.2", "features"]),
    ];
    for (sd, layers) in cases {
        let mut ex = Explainer::new(Model::from_bytes(&sd.bytes(), None).unwrap());
        for layer in layers {
            let opts = ExplainOptions { layer: Some(layer.to_string()), ..Default::default() };
            let input = FeatureMap::new(3, 64, 64, Rng::new(6).vec(3 * 64 * 64, 1.0));
            ex.explain_tensor(input, &opts).unwrap_or_else(|e| panic!("{layer}: {e}"));
        }
    }
}

#[test]
fn wrong_files_are_refused_with_the_reason() {
    // V1 and V2 files named as each other.
    let err = Model::from_bytes(&efficientnet_b0(10).bytes(), Some(Arch::EfficientNetV2)).err().unwrap().to_string();
    assert!(err.contains("not EfficientNetV2"), "{err}");
    let err = Model::from_bytes(&efficientnet_v2(10).bytes(), Some(Arch::EfficientNet)).err().unwrap().to_string();
    assert!(err.contains("no squeeze-excitation") && err.contains("efficientnet_v2"), "{err}");
    // A MobileNetV3 with a block missing.
    let sd = mobilenet_v3(false, 10);
    let mut cut = StateDict::new(0);
    cut.tensors = sd.tensors.into_iter().filter(|t| !t.name.starts_with("features.11.")).collect();
    let err = Model::from_bytes(&cut.bytes(), Some(Arch::MobileNetV3)).err().unwrap().to_string();
    assert!(err.contains("15 (large) or 11 (small)") && err.contains("has 10"), "{err}");
    // Missing keys name the key.
    let err = Model::from_bytes(&regnet(true, 10).without("trunk_output.block2.block2-1.f.se.fc2.bias").bytes(), None).err().unwrap().to_string();
    assert!(err.contains("missing tensor 'trunk_output.block2.block2-1.f.se.fc2.bias'"), "{err}");
    let err = Model::from_bytes(&convnext(10).without("features.3.0.layer_scale").bytes(), Some(Arch::ConvNeXt)).err().unwrap().to_string();
    assert!(err.contains("missing tensor 'features.3.0.layer_scale'"), "{err}");
    // Another family's file.
    let err = Model::from_bytes(&regnet(false, 10).bytes(), Some(Arch::ConvNeXt)).err().unwrap().to_string();
    assert!(err.contains("missing tensor"), "{err}");
}

/// Logits and the input gradient of logit 3 against torch for every `NAME.safetensors` in
/// `FAMILIES_B_TORCH_DIR` (with `NAME.logits.npy`, `NAME.grad3.npy` (float64), `NAME.grad3_f32.npy`
/// and the shared `input.npy`); skipped when the variable is unset (CI has no torch).
/// The gradient must be within 1e-3 of float64's, or no further from it than torch's own float32
/// gradient (a random full-size RegNet is ill-conditioned: torch float32 is off by up to 5% there).
#[test]
fn torch_logits_and_gradients_match() {
    let Ok(dir) = std::env::var("FAMILIES_B_TORCH_DIR") else {
        eprintln!("FAMILIES_B_TORCH_DIR not set: skipped (scripts/verify-families-b.py writes the files)");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let (shape, input) = read_npy_f32(&std::fs::read(dir.join("input.npy")).unwrap()).unwrap();
    let (h, w) = (shape[2], shape[3]);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "safetensors")).collect();
    files.sort();
    assert!(!files.is_empty(), "no .safetensors in {}", dir.display());
    // max |a - b| / max |b|: relative to the tensor's range (single entries near 0 say nothing).
    let rel = |got: &[f32], want: &[f32]| {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        (got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale, scale)
    };
    let (mut worst, mut worst_grad) = (0.0f32, 0.0f32);
    for path in files {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let model = Model::from_bytes(&std::fs::read(&path).unwrap(), None).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let npy = |suffix: &str| read_npy_f32(&std::fs::read(dir.join(format!("{stem}.{suffix}.npy"))).unwrap()).unwrap().1;
        let (want_grad, torch_f32_grad) = (npy("grad3"), npy("grad3_f32"));
        let t = std::time::Instant::now();
        let exec = CpuExecutor::new(model.graph.clone());
        let layer = model.graph.find(&model.default_layer()).unwrap();
        let mut pass = exec.start(FeatureMap::new(3, h, w, input.clone()), layer).unwrap();
        let (err, scale) = rel(pass.logits(), &npy("logits"));
        let mut target = vec![0.0; model.graph.num_classes];
        target[3] = 1.0;
        let (grad_err, _) = rel(&pass.input_gradient(&target, gradcam_wasm::exec::ReluRule::Plain).unwrap().data, &want_grad);
        let (torch_err, _) = rel(&torch_f32_grad, &want_grad);
        println!(
            "{stem}: {} default layer {}, max |logit error| / max |logit| = {err:.2e} (max |logit| {scale:.3}), input gradient vs float64 {grad_err:.2e} (torch float32: {torch_err:.2e}) ({:.0} ms)",
            model.arch.name(),
            model.default_layer(),
            t.elapsed().as_secs_f64() * 1e3
        );
        worst = worst.max(err);
        worst_grad = worst_grad.max(grad_err / torch_err.max(1e-3));
    }
    assert!(worst < 1e-3, "logits differ from torch by {worst:.2e} of their range");
    assert!(worst_grad <= 1.0, "an input gradient is {worst_grad:.2}x further from float64 than allowed (max(1e-3, torch float32's error))");
}

#[test]
fn efficientnet_input_size_follows_the_variant() {
    let size = |sd: StateDict| Model::from_bytes(&sd.bytes(), None).unwrap().input_size();
    // B0's depths with a narrow head: a fine-tuned or narrowed model keeps the common 224 crop.
    assert_eq!(size(efficientnet_with_head(10, 128)), (224, 224));
    // B3's head width (1536): torchvision evaluates B3 at a 300 crop of a 320 resize.
    let b3 = Model::from_bytes(&efficientnet_with_head(10, 1536).bytes(), None).unwrap();
    assert_eq!(b3.input_size(), (300, 300));
    assert_eq!(b3.preprocess.resize, gradcam_wasm::imaging::preprocess::Resize::ShorterSide { size: 320, crop: Some((300, 300)) });
    // V2-S (two blocks in its first stage): 384.
    assert_eq!(size(efficientnet_v2(10)), (384, 384));
}
