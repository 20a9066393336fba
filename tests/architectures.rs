//! Every architecture loads from a torchvision-keyed file, is detected from its keys, explains,
//! and rejects a wrong file with an error that names the key and shapes.

mod common;

use common::*;
use gradcam_wasm::{Arch, ExplainOptions, Explainer, FeatureMap, Method, Model, Target};

fn all_archs() -> Vec<(Arch, StateDict)> {
    vec![
        (Arch::ResNet18, resnet(18, 1000)),
        (Arch::ResNet34, resnet(34, 1000)),
        (Arch::ResNet50, resnet(50, 1000)),
        (Arch::Vgg11, vgg(&VGG11, false, 256, 1000)),
        (Arch::Vgg13, vgg(&VGG13, false, 256, 1000)),
        (Arch::Vgg16, vgg(&VGG16, false, 256, 1000)),
        (Arch::Vgg11Bn, vgg(&VGG11, true, 256, 1000)),
        (Arch::Vgg16Bn, vgg(&VGG16, true, 256, 1000)),
        (Arch::AlexNet, alexnet(256, 1000)),
        (Arch::SqueezeNet1_0, squeezenet(true, 1000)),
        (Arch::SqueezeNet1_1, squeezenet(false, 1000)),
        (Arch::MobileNetV2, mobilenet_v2(1000)),
    ]
}

fn random_input(h: usize, w: usize) -> FeatureMap {
    FeatureMap::new(3, h, w, Rng::new(7).vec(3 * h * w, 1.5))
}

#[test]
fn every_architecture_is_detected_loads_and_explains() {
    for (arch, sd) in all_archs() {
        let model = Model::from_bytes(&sd.bytes(), None).unwrap_or_else(|e| panic!("{}: {e}", arch.name()));
        assert_eq!(model.arch, arch, "detected {} as {}", arch.name(), model.arch.name());
        let default = model.default_layer();
        assert!(model.layers().iter().any(|l| l.name == default || l.aliases.contains(&default)), "{}: default layer {default} not listed", arch.name());
        let mut ex = Explainer::new(model);
        for method in [Method::GRAD_CAM, Method::GUIDED_GRAD_CAM] {
            let opts = ExplainOptions { method, target: Target::Class(3), ..Default::default() };
            let e = ex.explain_tensor(random_input(224, 224), &opts).unwrap_or_else(|e| panic!("{} {}: {e}", arch.name(), method.name()));
            assert!(e.raw.data.iter().all(|v| v.is_finite()), "{}: non-finite map", arch.name());
            assert!(e.raw.data.iter().any(|v| *v > 0.0) || !e.warnings.is_empty(), "{}: empty map without a warning", arch.name());
            assert_eq!((e.image_map.width, e.image_map.height), (224, 224));
            if method == Method::GRAD_CAM {
                assert!(e.raw.width >= 6 && e.raw.width <= 14, "{}: {}x{} map at {}", arch.name(), e.raw.width, e.raw.height, e.layer);
            } else {
                assert!(e.forward_reused, "{}: the second method should reuse the forward pass", arch.name());
            }
        }
    }
}

#[test]
fn fine_tuned_heads_with_other_sizes_load() {
    // A VGG-16 with a 64-wide classifier and 10 classes, an AlexNet with 10 classes, a 10-class ResNet-18.
    for (arch, sd) in [(Arch::Vgg16, vgg(&VGG16, false, 64, 10)), (Arch::AlexNet, alexnet(32, 10)), (Arch::ResNet18, resnet(18, 10)), (Arch::SqueezeNet1_1, squeezenet(false, 10))] {
        let model = Model::from_bytes(&sd.bytes(), Some(arch)).unwrap();
        assert_eq!(model.graph.num_classes, 10);
        assert_eq!(model.labels[9], "class 9");
        let mut ex = Explainer::new(model);
        let e = ex.explain_tensor(random_input(160, 192), &ExplainOptions::default()).unwrap();
        assert!(e.class < 10);
        let err = ex.explain_tensor(random_input(160, 192), &ExplainOptions { target: Target::Class(10), ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("class index 10 is out of range") && err.contains("10 classes"), "{err}");
    }
}

#[test]
fn wrong_files_are_rejected_with_the_key_and_shapes() {
    // ResNet-18 weights loaded as VGG-16.
    let err = Model::from_bytes(&resnet(18, 1000).bytes(), Some(Arch::Vgg16)).err().unwrap().to_string();
    assert!(err.contains("features.") || err.contains("classifier"), "{err}");
    // ResNet-34 weights loaded as ResNet-18: extra blocks.
    let err = Model::from_bytes(&resnet(34, 1000).bytes(), Some(Arch::ResNet18)).err().unwrap().to_string();
    assert!(err.contains("not part of this architecture") && err.contains("layer1.2"), "{err}");
    // A missing key names the key.
    let err = Model::from_bytes(&resnet(18, 1000).without("layer3.1.bn2.running_var").bytes(), None).err().unwrap().to_string();
    assert!(err.contains("missing tensor 'layer3.1.bn2.running_var'"), "{err}");
    // A mismatched shape names the key and both shapes.
    let mut sd = mobilenet_v2(1000);
    let t = sd.tensors.iter_mut().find(|t| t.name == "features.5.conv.0.0.weight").unwrap();
    t.shape = vec![192, 16, 1, 1];
    t.data.truncate(192 * 16);
    let err = Model::from_bytes(&sd.bytes(), None).err().unwrap().to_string();
    assert!(err.contains("features.5.conv.0.0.weight") && err.contains("[192, 16, 1, 1]") && err.contains("32"), "{err}");
    // Not a weight file at all.
    let err = Model::from_bytes(b"hello, I am not a model", None).err().unwrap().to_string();
    assert!(err.contains("safetensors"), "{err}");
    // The default model's file given the wrong architecture name.
    let err = Model::from_bytes(&squeezenet(true, 1000).bytes(), Some(Arch::MobileNetV2)).err().unwrap().to_string();
    assert!(err.contains("missing tensor"), "{err}");
}

#[test]
fn layer_errors_list_real_names() {
    let mut ex = Explainer::new(Model::from_bytes(&resnet(18, 1000).bytes(), None).unwrap());
    let opts = ExplainOptions { layer: Some("layer5".into()), ..Default::default() };
    let err = ex.explain_tensor(random_input(224, 224), &opts).unwrap_err().to_string();
    assert!(err.contains("unknown layer 'layer5'") && err.contains("layer4"), "{err}");
    let opts = ExplainOptions { layer: Some("fc".into()), ..Default::default() };
    let err = ex.explain_tensor(random_input(224, 224), &opts).unwrap_err().to_string();
    assert!(err.contains("no spatial map"), "{err}");
    // The explainer still works after errors, on any named layer including aliases.
    for layer in ["layer3", "layer2.1.conv1", "layer2.1.bn1", "maxpool", "layer4.1"] {
        let opts = ExplainOptions { layer: Some(layer.into()), ..Default::default() };
        ex.explain_tensor(random_input(224, 224), &opts).unwrap_or_else(|e| panic!("{layer}: {e}"));
    }
}

#[test]
fn tiny_inputs_are_refused_not_crashed() {
    let mut ex = Explainer::new(Model::from_bytes(&vgg(&VGG11, false, 32, 10).bytes(), None).unwrap());
    let err = ex.explain_tensor(random_input(8, 8), &ExplainOptions::default()).unwrap_err().to_string();
    assert!(err.contains("too small"), "{err}");
    ex.explain_tensor(random_input(64, 96), &ExplainOptions::default()).unwrap();
}

#[test]
fn a_missing_bias_or_a_wrong_version_name_is_an_error() {
    let err = Model::from_bytes(&squeezenet(false, 10).without("features.12.expand3x3.bias").bytes(), None).err().unwrap().to_string();
    assert!(err.contains("missing tensor 'features.12.expand3x3.bias'"), "{err}");
    let err = Model::from_bytes(&vgg(&VGG11, false, 32, 10).without("classifier.3.bias").bytes(), None).err().unwrap().to_string();
    assert!(err.contains("missing tensor 'classifier.3.bias'"), "{err}");
    let err = Model::from_bytes(&squeezenet(false, 10).bytes(), Some(Arch::SqueezeNet1_0)).err().unwrap().to_string();
    assert!(err.contains("features.0.weight") && err.contains("[64, 3, 3, 3]") && err.contains("96"), "{err}");
}
