//! ResNet (any depth, ResNeXt, Wide), DenseNet, GoogLeNet, Inception v3, MNASNet and ShuffleNet V2 from
//! tiny state dicts with torchvision's key names, written here without torch: detection, the graph,
//! the default layer and an explanation. `torch_reference` (ignored) compares logits and gradients
//! with files that scripts/verify-families-a.py writes from torchvision.

mod common;

use common::*;
use gradcam_wasm::weights::legacy_pth::RawTensor;
use gradcam_wasm::{Arch, ExplainOptions, Explainer, FeatureMap, Method, Model, Target};

/// A state dict under construction: convs with any kernel shape, batch-norms, linears.
struct Sd {
    sd: StateDict,
    rng: Rng,
}

impl Sd {
    fn new(seed: u64) -> Self {
        Sd { sd: StateDict::new(seed), rng: Rng::new(seed + 1000) }
    }
    fn conv_hw(&mut self, name: &str, cout: usize, cin_per_group: usize, kh: usize, kw: usize) {
        let fan_in = cin_per_group * kh * kw;
        let data = self.rng.vec(cout * fan_in, (6.0 / fan_in as f32).sqrt());
        self.sd.tensors.push(RawTensor { name: format!("{name}.weight"), shape: vec![cout, cin_per_group, kh, kw], data });
    }
    fn conv(&mut self, name: &str, cout: usize, cin: usize, k: usize) {
        self.sd.conv(name, cout, cin, k, false);
    }
    fn conv_bn(&mut self, conv: &str, bn: &str, cout: usize, cin_per_group: usize, k: usize) {
        self.sd.conv(conv, cout, cin_per_group, k, false);
        self.sd.bn(bn, cout);
    }
    /// torchvision's BasicConv2d: `{name}.conv` + `{name}.bn`.
    fn basic(&mut self, name: &str, cout: usize, cin: usize, kh: usize, kw: usize) {
        self.conv_hw(&format!("{name}.conv"), cout, cin, kh, kw);
        self.sd.bn(&format!("{name}.bn"), cout);
    }
    fn bytes(&self) -> Vec<u8> {
        self.sd.bytes()
    }
}

/// A torchvision ResNet: `blocks` per stage, each stage's block `widths` (a bottleneck's 3x3 conv,
/// with `groups`, outputs twice its width as ResNeXt's and Wide ResNet's do); or basic blocks.
fn resnet_any(blocks: [usize; 4], bottleneck: bool, widths: [usize; 4], groups: usize, classes: usize) -> Sd {
    let mut s = Sd::new(1);
    s.conv_bn("conv1", "bn1", 16, 3, 7);
    let mut cin = 16;
    for (l, &n) in blocks.iter().enumerate() {
        let w = widths[l];
        let cout = if bottleneck { 2 * w } else { w };
        for i in 0..n {
            let p = format!("layer{}.{i}", l + 1);
            if bottleneck {
                s.conv_bn(&format!("{p}.conv1"), &format!("{p}.bn1"), w, cin, 1);
                s.conv_bn(&format!("{p}.conv2"), &format!("{p}.bn2"), w, w / groups, 3);
                s.conv_bn(&format!("{p}.conv3"), &format!("{p}.bn3"), cout, w, 1);
            } else {
                s.conv_bn(&format!("{p}.conv1"), &format!("{p}.bn1"), w, cin, 3);
                s.conv_bn(&format!("{p}.conv2"), &format!("{p}.bn2"), w, w, 3);
            }
            if i == 0 && (l > 0 || cin != cout) {
                s.conv_bn(&format!("{p}.downsample.0"), &format!("{p}.downsample.1"), cout, cin, 1);
            }
            cin = cout;
        }
    }
    s.sd.linear("fc", classes, cin);
    s
}

/// DenseNet with growth rate `k`, bottleneck 2k, the given block sizes; `legacy` writes the key
/// style of torchvision's download files (`norm.1` for `norm1`).
fn densenet(k: usize, blocks: &[usize], init: usize, legacy: bool, classes: usize) -> Sd {
    let mut s = Sd::new(2);
    s.conv_bn("features.conv0", "features.norm0", init, 3, 7);
    let mut c = init;
    for (i, &n) in blocks.iter().enumerate() {
        for j in 1..=n {
            let p = format!("features.denseblock{}.denselayer{j}", i + 1);
            let (n1, c1, n2, c2) = if legacy { ("norm.1", "conv.1", "norm.2", "conv.2") } else { ("norm1", "conv1", "norm2", "conv2") };
            s.sd.bn(&format!("{p}.{n1}"), c);
            s.conv(&format!("{p}.{c1}"), 2 * k, c, 1);
            s.sd.bn(&format!("{p}.{n2}"), 2 * k);
            s.conv(&format!("{p}.{c2}"), k, 2 * k, 3);
            c += k;
        }
        if i + 1 < blocks.len() {
            let p = format!("features.transition{}", i + 1);
            s.sd.bn(&format!("{p}.norm"), c);
            s.conv(&format!("{p}.conv"), c / 2, c, 1);
            c /= 2;
        }
    }
    s.sd.bn("features.norm5", c);
    s.sd.linear("classifier", classes, c);
    s
}

/// GoogLeNet with every Inception module 4 + 4 + 4 + 4 channels wide, and the auxiliary classifiers.
fn googlenet(classes: usize) -> Sd {
    let mut s = Sd::new(3);
    s.basic("conv1", 8, 3, 7, 7);
    s.basic("conv2", 8, 8, 1, 1);
    s.basic("conv3", 12, 8, 3, 3);
    let mut c = 12;
    for m in ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"] {
        let p = format!("inception{m}");
        s.basic(&format!("{p}.branch1"), 4, c, 1, 1);
        s.basic(&format!("{p}.branch2.0"), 3, c, 1, 1);
        s.basic(&format!("{p}.branch2.1"), 4, 3, 3, 3);
        s.basic(&format!("{p}.branch3.0"), 2, c, 1, 1);
        s.basic(&format!("{p}.branch3.1"), 4, 2, 3, 3);
        s.basic(&format!("{p}.branch4.1"), 4, c, 1, 1);
        c = 16;
    }
    for aux in ["aux1", "aux2"] {
        s.basic(&format!("{aux}.conv"), 8, 16, 1, 1);
        s.sd.linear(&format!("{aux}.fc1"), 12, 8 * 16);
        s.sd.linear(&format!("{aux}.fc2"), classes, 12);
    }
    s.sd.linear("fc", classes, 16);
    s
}

/// Inception v3 with torchvision's kernel shapes and narrow widths.
fn inception_v3(classes: usize) -> Sd {
    let mut s = Sd::new(4);
    s.basic("Conv2d_1a_3x3", 4, 3, 3, 3);
    s.basic("Conv2d_2a_3x3", 4, 4, 3, 3);
    s.basic("Conv2d_2b_3x3", 8, 4, 3, 3);
    s.basic("Conv2d_3b_1x1", 8, 8, 1, 1);
    s.basic("Conv2d_4a_3x3", 8, 8, 3, 3);
    let mut c = 8;
    for m in ["Mixed_5b", "Mixed_5c", "Mixed_5d"] {
        s.basic(&format!("{m}.branch1x1"), 4, c, 1, 1);
        s.basic(&format!("{m}.branch5x5_1"), 3, c, 1, 1);
        s.basic(&format!("{m}.branch5x5_2"), 4, 3, 5, 5);
        s.basic(&format!("{m}.branch3x3dbl_1"), 3, c, 1, 1);
        s.basic(&format!("{m}.branch3x3dbl_2"), 4, 3, 3, 3);
        s.basic(&format!("{m}.branch3x3dbl_3"), 4, 4, 3, 3);
        s.basic(&format!("{m}.branch_pool"), 2, c, 1, 1);
        c = 14;
    }
    s.basic("Mixed_6a.branch3x3", 6, c, 3, 3);
    s.basic("Mixed_6a.branch3x3dbl_1", 3, c, 1, 1);
    s.basic("Mixed_6a.branch3x3dbl_2", 4, 3, 3, 3);
    s.basic("Mixed_6a.branch3x3dbl_3", 4, 4, 3, 3);
    c += 10;
    for m in ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"] {
        s.basic(&format!("{m}.branch1x1"), 6, c, 1, 1);
        s.basic(&format!("{m}.branch7x7_1"), 3, c, 1, 1);
        s.basic(&format!("{m}.branch7x7_2"), 3, 3, 1, 7);
        s.basic(&format!("{m}.branch7x7_3"), 6, 3, 7, 1);
        s.basic(&format!("{m}.branch7x7dbl_1"), 3, c, 1, 1);
        s.basic(&format!("{m}.branch7x7dbl_2"), 3, 3, 7, 1);
        s.basic(&format!("{m}.branch7x7dbl_3"), 3, 3, 1, 7);
        s.basic(&format!("{m}.branch7x7dbl_4"), 3, 3, 7, 1);
        s.basic(&format!("{m}.branch7x7dbl_5"), 6, 3, 1, 7);
        s.basic(&format!("{m}.branch_pool"), 6, c, 1, 1);
        c = 24;
    }
    s.basic("AuxLogits.conv0", 4, c, 1, 1);
    s.basic("AuxLogits.conv1", 6, 4, 5, 5);
    s.sd.linear("AuxLogits.fc", classes, 6);
    s.basic("Mixed_7a.branch3x3_1", 4, c, 1, 1);
    s.basic("Mixed_7a.branch3x3_2", 6, 4, 3, 3);
    s.basic("Mixed_7a.branch7x7x3_1", 4, c, 1, 1);
    s.basic("Mixed_7a.branch7x7x3_2", 4, 4, 1, 7);
    s.basic("Mixed_7a.branch7x7x3_3", 4, 4, 7, 1);
    s.basic("Mixed_7a.branch7x7x3_4", 4, 4, 3, 3);
    c += 10;
    for m in ["Mixed_7b", "Mixed_7c"] {
        s.basic(&format!("{m}.branch1x1"), 4, c, 1, 1);
        s.basic(&format!("{m}.branch3x3_1"), 4, c, 1, 1);
        s.basic(&format!("{m}.branch3x3_2a"), 3, 4, 1, 3);
        s.basic(&format!("{m}.branch3x3_2b"), 3, 4, 3, 1);
        s.basic(&format!("{m}.branch3x3dbl_1"), 5, c, 1, 1);
        s.basic(&format!("{m}.branch3x3dbl_2"), 4, 5, 3, 3);
        s.basic(&format!("{m}.branch3x3dbl_3a"), 3, 4, 1, 3);
        s.basic(&format!("{m}.branch3x3dbl_3b"), 3, 4, 3, 1);
        s.basic(&format!("{m}.branch_pool"), 2, c, 1, 1);
        c = 18;
    }
    s.sd.linear("fc", classes, c);
    s
}

/// MNASNet with torchvision's kernel sizes, expansions and repeats and narrow widths.
fn mnasnet(classes: usize) -> Sd {
    let mut s = Sd::new(5);
    s.conv_bn("layers.0", "layers.1", 8, 3, 3);
    s.conv_bn("layers.3", "layers.4", 8, 1, 3);
    s.conv_bn("layers.6", "layers.7", 4, 8, 1);
    // (out, kernel, expansion, repeats) of layers.8 ..= layers.13.
    let stacks = [(6, 3, 3, 3), (8, 5, 3, 3), (10, 5, 6, 3), (12, 3, 6, 2), (14, 5, 6, 4), (16, 3, 6, 1)];
    let mut c = 4;
    for (i, (out, k, e, n)) in stacks.into_iter().enumerate() {
        for r in 0..n {
            let p = format!("layers.{}.{r}.layers", 8 + i);
            s.conv_bn(&format!("{p}.0"), &format!("{p}.1"), c * e, c, 1);
            s.conv_bn(&format!("{p}.3"), &format!("{p}.4"), c * e, 1, k);
            s.conv_bn(&format!("{p}.6"), &format!("{p}.7"), out, c * e, 1);
            c = out;
        }
    }
    s.conv_bn("layers.14", "layers.15", 32, c, 1);
    s.sd.linear("classifier.1", classes, 32);
    s
}

/// ShuffleNet V2 with the given repeats and stage widths.
fn shufflenet_v2(repeats: [usize; 3], widths: [usize; 5], classes: usize) -> Sd {
    let mut s = Sd::new(6);
    s.conv_bn("conv1.0", "conv1.1", widths[0], 3, 3);
    let mut c = widths[0];
    for (i, &n) in repeats.iter().enumerate() {
        let half = widths[i + 1] / 2;
        for r in 0..n {
            let p = format!("stage{}.{r}", i + 2);
            let inner_in = if r == 0 { c } else { half };
            if r == 0 {
                s.conv_bn(&format!("{p}.branch1.0"), &format!("{p}.branch1.1"), c, 1, 3);
                s.conv_bn(&format!("{p}.branch1.2"), &format!("{p}.branch1.3"), half, c, 1);
            }
            s.conv_bn(&format!("{p}.branch2.0"), &format!("{p}.branch2.1"), half, inner_in, 1);
            s.conv_bn(&format!("{p}.branch2.3"), &format!("{p}.branch2.4"), half, 1, 3);
            s.conv_bn(&format!("{p}.branch2.5"), &format!("{p}.branch2.6"), half, half, 1);
        }
        c = widths[i + 1];
    }
    s.conv_bn("conv5.0", "conv5.1", widths[4], c, 1);
    s.sd.linear("fc", classes, widths[4]);
    s
}

fn random_input(h: usize, w: usize) -> FeatureMap {
    FeatureMap::new(3, h, w, Rng::new(7).vec(3 * h * w, 1.5))
}

/// Detection, the default layer (listed, with its map size at `size`), and Grad-CAM and Guided
/// Grad-CAM explanations.
fn check(label: &str, sd: &Sd, arch: Arch, default_layer: &str, size: usize, map: usize) {
    let model = Model::from_bytes(&sd.bytes(), None).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(model.arch, arch, "{label}: detected as {}", model.arch.name());
    assert_eq!(model.default_layer(), default_layer, "{label}");
    assert!(model.layers().iter().any(|l| l.name == default_layer || l.aliases.iter().any(|a| a == default_layer)), "{label}: {default_layer} not listed");
    let mut ex = Explainer::new(model);
    for method in [Method::GRAD_CAM, Method::GUIDED_GRAD_CAM] {
        let opts = ExplainOptions { method, target: Target::Class(3), ..Default::default() };
        let e = ex.explain_tensor(random_input(size, size), &opts).unwrap_or_else(|e| panic!("{label} {}: {e}", method.name()));
        assert_eq!(e.layer, default_layer, "{label}: the explanation names the layer as it was asked for");
        assert!(e.raw.data.iter().all(|v| v.is_finite()), "{label}: non-finite map");
        assert!(e.raw.data.iter().any(|v| *v > 0.0) || !e.warnings.is_empty(), "{label}: empty map without a warning");
        if method == Method::GRAD_CAM {
            assert_eq!((e.raw.width, e.raw.height), (map, map), "{label}: map size at {default_layer}");
        }
    }
}

#[test]
fn resnets_of_any_depth_groups_and_width() {
    // ResNet-101's layout in miniature is too slow here; other block counts take the same path.
    check("resnet [1,2,1,1] basic", &resnet_any([1, 2, 1, 1], false, [8, 16, 32, 64], 1, 10), Arch::ResNet, "layer4", 64, 2);
    check("resnext [1,1,2,1] 4 groups", &resnet_any([1, 1, 2, 1], true, [16, 32, 64, 128], 4, 10), Arch::ResNet, "layer4", 64, 2);
    // resnet50's block counts with ResNeXt groups or a wider bottleneck are not resnet50.
    for (label, widths, groups) in [("resnext50-like", [64; 4], 32), ("wide_resnet50-like", [128, 16, 16, 16], 1)] {
        let sd = resnet_any([3, 4, 6, 3], true, widths, groups, 10);
        let weights = gradcam_wasm::weights::WeightMap::from_safetensors(&sd.bytes()).unwrap();
        assert_eq!(Arch::detect(&weights).unwrap(), Arch::ResNet, "{label}");
    }
    // The ResNet-50 builder reads the groups too, so a ResNeXt-50 forced to resnet50 also loads.
    let sd = resnet_any([3, 4, 6, 3], true, [16; 4], 4, 10);
    assert!(Model::from_bytes(&sd.bytes(), Some(Arch::ResNet50)).is_ok());
    // Plain resnet18 keeps its own variant.
    assert_eq!(Model::from_bytes(&resnet(18, 10).bytes(), None).unwrap().arch, Arch::ResNet18);
}

#[test]
fn densenet_dense_blocks() {
    check("densenet", &densenet(4, &[2, 3, 2], 8, false, 10), Arch::DenseNet, "relu", 64, 4);
    // torchvision's download files spell `norm1` as `norm.1`; they load the same.
    let legacy = densenet(4, &[2, 3, 2], 8, true, 10);
    check("densenet (legacy keys)", &legacy, Arch::DenseNet, "relu", 64, 4);
    let a = Model::from_bytes(&densenet(4, &[2, 3, 2], 8, false, 10).bytes(), None).unwrap();
    let b = Model::from_bytes(&legacy.bytes(), None).unwrap();
    let run = |m: Model| Explainer::new(m).explain_tensor(random_input(64, 64), &ExplainOptions::default()).unwrap().top5[0].logit;
    assert_eq!(run(a), run(b));
}

#[test]
fn googlenet_with_auxiliary_classifiers() {
    check("googlenet", &googlenet(10), Arch::GoogLeNet, "inception5b", 96, 3);
}

#[test]
fn inception_v3_with_asymmetric_kernels() {
    check("inception_v3", &inception_v3(10), Arch::InceptionV3, "Mixed_7c", 139, 3);
    let model = Model::from_bytes(&inception_v3(10).bytes(), None).unwrap();
    assert_eq!(model.input_size(), (299, 299));
}

#[test]
fn mnasnet_stacks() {
    check("mnasnet", &mnasnet(10), Arch::MnasNet, "layers.16", 64, 2);
}

#[test]
fn shufflenet_v2_split_and_shuffle() {
    check("shufflenet_v2", &shufflenet_v2([2, 3, 2], [8, 16, 32, 64, 48], 10), Arch::ShuffleNetV2, "conv5", 64, 2);
}

#[test]
fn wrong_files_name_the_key() {
    let err = Model::from_bytes(&densenet(4, &[2, 2], 8, false, 10).sd.without("features.denseblock2.denselayer2.norm2.running_var").bytes(), None).err().unwrap().to_string();
    assert!(err.contains("missing tensor 'features.denseblock2.denselayer2.norm2.running_var'"), "{err}");
    let err = Model::from_bytes(&mnasnet(10).bytes(), Some(Arch::ShuffleNetV2)).err().unwrap().to_string();
    assert!(err.contains("conv1.0.weight"), "{err}");
    let err = Model::from_bytes(&googlenet(10).sd.without("inception4c.branch3.1.conv.weight").bytes(), None).err().unwrap().to_string();
    assert!(err.contains("missing tensor 'inception4c.branch3.1.conv.weight'"), "{err}");
    let err = Model::from_bytes(&resnet_any([1, 1, 1, 1], false, [8, 8, 8, 8], 1, 10).sd.without("layer3.0.conv1.weight").bytes(), None).err().unwrap().to_string();
    assert!(err.contains("missing tensor 'layer3.0.conv1.weight'"), "{err}");
    let sd = shufflenet_v2([2, 3, 2], [8, 16, 32, 64, 48], 10).sd.without("stage3.0.branch2.0.weight");
    let err = Model::from_bytes(&sd.bytes(), None).err().unwrap().to_string();
    assert!(err.contains("missing tensor 'stage3.0.branch2.0.weight'"), "{err}");
}

/// Logits, the default layer's gradient and the input gradient against torchvision, for the files
/// scripts/verify-families-a.py writes (`NAME.safetensors`, `NAME.input.npy`, `NAME.logits.npy`, the
/// default layer's activations `NAME.layer.npy`, the gradients of the top torch logit there and at
/// the input, `NAME.layer_grad.npy` and `NAME.input_grad.npy`) in
/// $FAMILIES_A_DIR. Logits and the layer's activations must be within 1e-3 of the largest torch
/// value and the layer gradient within 1e-3 in relative L2 norm; the input gradient within 2e-2, because a pre-activation within
/// float32 rounding of zero flips its ReLU (seen: one of 100k at |x| = 5e-6 on a scale of 56 in a
/// ResNet, 0.7% of the input gradient's norm; torch in float32 happened to keep its sign). The torch
/// side is float64. Prints the errors.
#[test]
#[ignore]
fn torch_reference() {
    use gradcam_wasm::exec::{cpu::CpuExecutor, Executor};
    use gradcam_wasm::imaging::npy::read_npy_f32;
    let dir = std::path::PathBuf::from(std::env::var("FAMILIES_A_DIR").expect("set FAMILIES_A_DIR"));
    let npy = |p: std::path::PathBuf| read_npy_f32(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap();
    // Max error over the largest reference value; for gradients also the relative L2 error, which
    // a max-pool near-tie that float32 rounding flips (moving one window's gradient to a neighbour)
    // barely moves.
    let rel = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        let peak = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / peak
    };
    let l2 = |a: &[f32], b: &[f32]| {
        let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        (d / b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>()).sqrt() as f32
    };
    let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".safetensors").map(String::from)).collect();
    names.sort();
    let mut worst = 0f32;
    for name in names {
        if std::env::var("FAMILIES_A_ONLY").is_ok_and(|o| !name.contains(&o)) {
            continue;
        }
        let model = Model::from_bytes(&std::fs::read(dir.join(format!("{name}.safetensors"))).unwrap(), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (shape, input) = npy(dir.join(format!("{name}.input.npy")));
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let (_, logits) = npy(dir.join(format!("{name}.logits.npy")));
        let layer = model.graph.find(&model.default_layer).unwrap();
        let exec = CpuExecutor::new(model.graph.clone());
        let mut pass = exec.start(FeatureMap::new(3, h, w, input), layer).unwrap();
        let top = logits.iter().enumerate().fold(0, |best, (i, v)| if *v > logits[best] { i } else { best });
        let mut onehot = vec![0.0; logits.len()];
        onehot[top] = 1.0;
        let e_logits = rel(pass.logits(), &logits);
        let e_act = rel(&pass.activations().data, &npy(dir.join(format!("{name}.layer.npy"))).1);
        let (layer_grad, torch_layer_grad) = (pass.layer_gradient(&onehot).unwrap().data, npy(dir.join(format!("{name}.layer_grad.npy"))).1);
        let (input_grad, torch_input_grad) = (pass.input_gradient(&onehot, gradcam_wasm::exec::ReluRule::Plain).unwrap().data, npy(dir.join(format!("{name}.input_grad.npy"))).1);
        let (e_layer, e_input) = (l2(&layer_grad, &torch_layer_grad), l2(&input_grad, &torch_input_grad));
        println!(
            "{name:<22} {:<13} {:<20} logits {e_logits:.1e} | layer {e_act:.1e} | layer grad L2 {e_layer:.1e} max {:.1e} | input grad L2 {e_input:.1e} max {:.1e}",
            model.arch.name(),
            model.default_layer,
            rel(&layer_grad, &torch_layer_grad),
            rel(&input_grad, &torch_input_grad)
        );
        worst = worst.max(e_logits).max(e_act).max(e_layer).max(e_input / 20.0);
    }
    assert!(worst < 1e-3, "logits or layer gradient off by more than 1e-3, or the input gradient by more than 2e-2 ({worst})");
}
