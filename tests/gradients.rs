//! Gradients through whole networks: the executor's input gradient against finite differences of its
//! own forward pass (every layer type: 3x3/s2 and ceil-mode max pools, depthwise convs, TF SAME
//! padding, adaptive pools, concat, residual adds), and Grad-CAM against CAM's closed form.

mod common;

use common::*;
use gradcam_wasm::exec::{
    cpu::{Checkpoint, CpuExecutor},
    Executor, ReluRule,
};
use gradcam_wasm::graph::Op;
use gradcam_wasm::{ExplainOptions, Explainer, FeatureMap, Method, Model, Normalization, Target};

/// Directional derivatives <grad, d> against central differences (the nets are piecewise linear,
/// so a central difference is exact unless a ReLU kink or max-pool switch lies within eps).
fn check_input_gradient(name: &str, model: &Model, h: usize, w: usize) {
    let exec = CpuExecutor::new(model.graph.clone());
    let mut rng = Rng::new(99);
    let x = rng.vec(3 * h * w, 1.0);
    let layer = model.graph.find(&model.default_layer()).unwrap();
    let mut pass = exec.start(FeatureMap::new(3, h, w, x.clone()), layer).unwrap();
    let classes = model.graph.num_classes;
    let mut target = vec![0.0f32; classes];
    target[1] = 1.0;
    target[classes - 1] = -0.5;
    let grad = pass.input_gradient(&target, ReluRule::Plain).unwrap();
    let eps: f32 = std::env::var("FD_EPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1e-4);
    let dirs: Vec<Vec<f32>> = (0..8).map(|_| rng.vec(x.len(), 1.0)).collect();
    let mut batch = Vec::new();
    for d in &dirs {
        for s in [eps, -eps] {
            batch.extend(x.iter().zip(d).map(|(a, b)| a + s * b));
        }
    }
    let logits = exec.logits_batch(&batch, 2 * dirs.len(), h, w).unwrap();
    let score = |i: usize| -> f64 { logits[i * classes..(i + 1) * classes].iter().zip(&target).map(|(l, t)| (*l as f64) * (*t as f64)).sum() };
    // Moving every pixel at once crosses some ReLU kinks even at eps = 1e-3, and f32 rounding limits
    // how small eps can go, so errors are measured against the RMS of the directional derivatives:
    // a wrong gradient (a padding side, a pool's argmax, a missing branch) is off by tens of percent.
    let pairs: Vec<(f64, f64)> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let fd = (score(2 * i) - score(2 * i + 1)) / (2.0 * eps as f64);
            let an: f64 = grad.data.iter().zip(d).map(|(g, v)| (*g as f64) * (*v as f64)).sum();
            println!("{name}: direction {i}: analytic {an:.5}, finite difference {fd:.5}");
            (an, fd)
        })
        .collect();
    let rms = (pairs.iter().map(|(a, _)| a * a).sum::<f64>() / pairs.len() as f64).sqrt();
    let mut errors: Vec<f64> = pairs.iter().map(|(a, f)| (a - f).abs() / rms).collect();
    errors.sort_by(f64::total_cmp);
    println!("{name}: relative errors {errors:.3?}");
    assert!(rms > 0.0, "{name}: zero gradient, the check would be vacuous");
    assert!(errors[errors.len() / 2] < 0.08 && errors[errors.len() - 2] < 0.25, "{name}: input gradient disagrees with finite differences: {errors:?}");
}

#[test]
fn input_gradient_matches_finite_differences_for_every_layer_type() {
    let cases: Vec<(&str, StateDict, usize, usize)> = vec![
        ("resnet18 (3x3/s2 max pool)", resnet(18, 10), 64, 80),
        ("resnet50 (bottleneck)", resnet(50, 10), 64, 64),
        ("squeezenet1_0 (ceil-mode pools, concat)", squeezenet(true, 10), 67, 75),
        ("squeezenet1_1", squeezenet(false, 10), 64, 64),
        ("mobilenet_v2 (depthwise)", mobilenet_v2(10), 64, 96),
        ("vgg11_bn (adaptive pool upsampling 2x2 -> 7x7)", vgg(&VGG11, true, 32, 10), 64, 64),
        ("alexnet (11x11/s4, adaptive 6x6)", alexnet(32, 10), 96, 80),
    ];
    for (name, sd, h, w) in cases {
        let model = Model::from_bytes(&sd.bytes(), None).unwrap();
        check_input_gradient(name, &model, h, w);
    }
}

#[test]
fn input_gradient_of_the_default_model_matches_finite_differences() {
    // TF SAME (asymmetric) padding on stride-2 depthwise convs, ReLU6, odd sizes.
    let model = Model::from_bytes(&default_model_bytes(), None).unwrap();
    check_input_gradient("efficientnet_lite0", &model, 65, 97);
}

/// With conv -> global average pool -> linear, dy_c/dA_k[i,j] = W[c,k] / Z, so Grad-CAM's map is
/// exactly CAM's map sum_k W[c,k] A_k divided by Z = H * W (the paper's Section 3.1).
fn check_cam_closed_form(name: &str, model: Model, head: &str, input: FeatureMap, class: usize) {
    let fc = match &model.graph.nodes[model.graph.find(head).unwrap()].op {
        Op::Linear(l) => l.clone(),
        _ => panic!("{head} is not linear"),
    };
    // CAM, formed from the activations and the head's weights without any gradient.
    let layer = model.graph.find(&model.default_layer()).unwrap();
    let pass = CpuExecutor::new(model.graph.clone()).start(input.clone(), layer).unwrap();
    let a = pass.activations().clone();
    let n = a.plane_len();
    let z = n as f32;
    let cam: Vec<f32> = (0..n).map(|i| (0..a.channels).map(|k| fc.weight[class * fc.in_features + k] * a.data[k * n + i]).sum::<f32>() / z).collect();
    let peak = cam.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(peak > 0.0, "{name}: CAM is identically zero, the test would be vacuous");

    let mut ex = Explainer::new(model);
    let opts = ExplainOptions { method: Method::GRAD_CAM, target: Target::Class(class), signed: true, normalization: Normalization::Raw, ..Default::default() };
    let e = ex.explain_tensor(input, &opts).unwrap();
    assert_eq!(e.raw.data.len(), n);
    let worst = e.raw.data.iter().zip(&cam).map(|(g, c)| (g - c).abs()).fold(0.0f32, f32::max);
    println!("{name}: max |Grad-CAM - CAM/Z| = {worst:e} (peak {peak:e})");
    assert!(worst <= 1e-4 * peak, "{name}: Grad-CAM differs from CAM/Z by {worst} (peak {peak})");
}

#[test]
fn grad_cam_equals_cam_over_z_on_gap_linear_heads() {
    let input = FeatureMap::new(3, 224, 224, Rng::new(5).vec(3 * 224 * 224, 1.5));
    check_cam_closed_form("resnet18", Model::from_bytes(&resnet(18, 1000).bytes(), None).unwrap(), "fc", input.clone(), 17);
    check_cam_closed_form("mobilenet_v2", Model::from_bytes(&mobilenet_v2(1000).bytes(), None).unwrap(), "classifier.1", input.clone(), 400);
    check_cam_closed_form("efficientnet_lite0", Model::from_bytes(&default_model_bytes(), None).unwrap(), "_fc", input, 281);
}

/// The CPU executor records one forward split at the target layer (a backward of the part after it
/// for Grad-CAM, then of the part before it for input gradients). Where the split falls must not
/// change the input gradient, plain or guided: split inside a residual block (the skip connection
/// crosses it), at a conv whose ReLU is then not fused, at a block output, and at the stem.
#[test]
fn input_gradients_do_not_depend_on_where_the_forward_is_split() {
    let sd = gradcam_wasm::synthetic::state_dict(gradcam_wasm::Arch::ResNet18, 1000).unwrap();
    let model = Model::from_bytes(&sd.bytes(), Some(gradcam_wasm::Arch::ResNet18)).unwrap();
    let exec = CpuExecutor::new(model.graph.clone());
    let input = FeatureMap::new(3, 64, 80, Rng::new(3).vec(3 * 64 * 80, 1.0));
    let mut target = vec![0.0f32; 1000];
    target[7] = 1.0;
    target[300] = -0.5;
    for rule in [ReluRule::Plain, ReluRule::Guided, ReluRule::Deconv] {
        let reference = exec.start(input.clone(), model.graph.find("layer4").unwrap()).unwrap().input_gradient(&target, rule).unwrap();
        let scale = reference.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0);
        for layer in ["layer2.0.conv1", "layer2.0.relu", "layer2.0.bn2", "layer3", "conv1", "maxpool"] {
            let g = exec.start(input.clone(), model.graph.find(layer).unwrap()).unwrap().input_gradient(&target, rule).unwrap();
            let err = g.data.iter().zip(&reference.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale;
            assert!(err < 1e-5, "split at {layer} ({rule:?}): input gradient differs by {err:e} of its peak");
        }
    }
}

fn max_relative_difference(a: &FeatureMap, reference: &FeatureMap) -> f32 {
    let scale = reference.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "zero reference gradient: the comparison would be vacuous");
    a.data.iter().zip(&reference.data).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max) / scale
}

/// A checkpoint segment runs unrecorded and is recorded again for each input-gradient walk, seeded
/// by the segment after it. Wherever they end (one or several) (inside a residual block so that the skip crosses it,
/// between a conv and its fused ReLU, at a block output, right before the layer), whether the
/// segment ending at the layer was recorded by the forward or only on demand, and on a second walk
/// of the same pass (both segments recorded again), the input gradient must not change.
#[test]
fn input_gradients_do_not_depend_on_checkpoints_or_lazy_recording() {
    let sd = gradcam_wasm::synthetic::state_dict(gradcam_wasm::Arch::ResNet18, 1000).unwrap();
    let model = Model::from_bytes(&sd.bytes(), Some(gradcam_wasm::Arch::ResNet18)).unwrap();
    let graph = &model.graph;
    let input = FeatureMap::new(3, 64, 80, Rng::new(3).vec(3 * 64 * 80, 1.0));
    let mut target = vec![0.0f32; 1000];
    target[7] = 1.0;
    target[300] = -0.5;
    let layer = graph.find("layer4").unwrap();
    let plain = CpuExecutor::new(graph.clone()).with_checkpoint(Checkpoint::Off);
    let cuts: [&[&str]; 10] = [
        &["conv1"],
        &["relu"],
        &["maxpool"],
        &["layer1.0.conv1"],
        &["layer1.0.relu1"],
        &["layer2.0.conv1"],
        &["layer3.1.add"],
        &["layer4.1.conv2"],
        &["conv1", "layer1.0.relu1", "layer2.0.conv1"],
        &["maxpool", "layer1.0.add", "layer1.1.conv2", "layer3.0.relu"],
    ];
    for rule in [ReluRule::Plain, ReluRule::Guided, ReluRule::Deconv] {
        let reference = plain.start(input.clone(), layer).unwrap().input_gradient(&target, rule).unwrap();
        let mut checkpoints: Vec<Checkpoint> = cuts.iter().map(|c| Checkpoint::After(c.iter().map(|n| graph.find(n).unwrap()).collect())).collect();
        checkpoints.push(Checkpoint::Auto);
        for checkpoint in checkpoints {
            let exec = CpuExecutor::new(graph.clone()).with_checkpoint(checkpoint.clone());
            for recorded_by_forward in [true, false] {
                let mut pass = exec.start_for(input.clone(), layer, recorded_by_forward).unwrap();
                // A layer gradient first, as Guided Grad-CAM after Grad-CAM asks: it walks the last segment only.
                pass.layer_gradient(&target).unwrap();
                for walk in 1..=2 {
                    let g = pass.input_gradient(&target, rule).unwrap();
                    let err = max_relative_difference(&g, &reference);
                    assert!(err < 1e-5, "{checkpoint:?}, recorded by the forward {recorded_by_forward}, walk {walk} ({rule:?}): input gradient differs by {err:e} of its peak");
                }
            }
        }
    }
}

/// The default model picks its checkpoint by bytes; the guided input gradient must equal the one
/// without a checkpoint, and Grad-CAM's layer gradient must not depend on either.
#[test]
fn the_default_models_checkpoint_changes_no_gradient() {
    let model = Model::from_bytes(&default_model_bytes(), None).unwrap();
    let layer = model.graph.find(&model.default_layer()).unwrap();
    let input = FeatureMap::new(3, 224, 224, Rng::new(11).vec(3 * 224 * 224, 1.5));
    let mut target = vec![0.0f32; 1000];
    target[281] = 1.0;
    let mut plain = CpuExecutor::new(model.graph.clone()).with_checkpoint(Checkpoint::Off).start(input.clone(), layer).unwrap();
    let mut auto = CpuExecutor::new(model.graph.clone()).start_for(input, layer, false).unwrap();
    let err = max_relative_difference(&auto.layer_gradient(&target).unwrap(), &plain.layer_gradient(&target).unwrap());
    assert!(err < 1e-6, "layer gradient differs by {err:e}");
    let err = max_relative_difference(&auto.input_gradient(&target, ReluRule::Guided).unwrap(), &plain.input_gradient(&target, ReluRule::Guided).unwrap());
    assert!(err < 1e-5, "guided input gradient differs by {err:e} of its peak");
}

/// input (3 x 1 x 1) -> 1x1 conv to 2 channels (h = (x0, x1)) -> ReLU -> global pool -> linear with
/// class 0's weights (-1, 3): small enough to write every ReLU rule's input gradient down.
fn two_unit_net() -> gradcam_wasm::graph::Graph {
    use gradcam_wasm::graph::{Conv, Graph, Linear, Node, Padding};
    use std::sync::Arc;
    let node = |name: &str, op: Op, inputs: Vec<usize>| Node { name: name.into(), aliases: vec![], op, inputs };
    let conv = Conv { weight: vec![1., 0., 0., 0., 1., 0.], bias: vec![0., 0.], cin: 3, cout: 2, kh: 1, kw: 1, stride: (1, 1), padding: Padding::Symmetric { h: 0, w: 0 }, groups: 1 };
    let linear = Linear { weight: vec![-1., 3., 1., 1.], bias: vec![0.5, 0.], in_features: 2, out_features: 2 };
    let nodes = vec![
        node("input", Op::Input, vec![]),
        node("conv", Op::Conv(Arc::new(conv)), vec![0]),
        node("relu", Op::Relu, vec![1]),
        node("pool", Op::AdaptiveAvgPool { out_h: 1, out_w: 1 }, vec![2]),
        node("flatten", Op::Flatten, vec![3]),
        node("fc", Op::Linear(Arc::new(linear)), vec![4]),
    ];
    Graph { nodes, num_classes: 2 }
}

#[test]
fn deconvolution_passes_positive_gradients_through_inactive_relus() {
    // x = (1, -1, 0.5): unit 0 is active (h0 = 1), unit 1 is not (h1 = -1). The gradient reaching
    // the ReLU is (-1, 3). Plain: (-1, 0) (unit 1 is off); guided: (0, 0) (unit 0's is negative);
    // deconvolution: (0, 3), its positive part, though unit 1 was off. The conv maps it to the input.
    let exec = CpuExecutor::new(std::sync::Arc::new(two_unit_net()));
    let x = FeatureMap::new(3, 1, 1, vec![1.0, -1.0, 0.5]);
    // At the pool the conv runs fused with its ReLU; at the conv itself it does not.
    for layer in [3, 1] {
        let mut pass = exec.start(x.clone(), layer).unwrap();
        assert_eq!(pass.logits(), [-0.5, 1.0]);
        for (rule, want) in [(ReluRule::Plain, [-1.0, 0.0, 0.0]), (ReluRule::Guided, [0.0, 0.0, 0.0]), (ReluRule::Deconv, [0.0, 3.0, 0.0])] {
            assert_eq!(pass.input_gradient(&[1.0, 0.0], rule).unwrap().data, want, "{rule:?} at layer {layer}");
        }
    }
}

/// Sum over each visited node of b . (gradient at its output), with the node's bias read off the
/// graph here (conv: folded batch-norm; linear), and the plain input gradient of the same walk.
fn bias_shares(graph: &gradcam_wasm::graph::Graph, x: &FeatureMap, layer: usize, target: &[f32]) -> (FeatureMap, Vec<(usize, Vec<f32>)>) {
    let exec = CpuExecutor::new(std::sync::Arc::new(graph.clone()));
    let mut pass = exec.start(x.clone(), layer).unwrap();
    let biased: Vec<usize> = (0..graph.nodes.len()).filter(|&i| matches!(graph.nodes[i].op, Op::Conv(_) | Op::Linear(_))).collect();
    // Per node, d score / d b_k = the sum of its output gradient over the channel's plane.
    let mut per_channel = Vec::new();
    let mut visit = |i: usize, g: FeatureMap| {
        let n = g.height * g.width;
        per_channel.push((i, (0..g.channels).map(|k| g.data[k * n..(k + 1) * n].iter().sum()).collect()));
        Ok(())
    };
    let grad = pass.input_gradient_visiting(target, &biased, &mut visit).unwrap();
    let plain = pass.input_gradient(target, ReluRule::Plain).unwrap();
    assert_eq!(grad.data, plain.data, "the visiting walk's input gradient is the plain one");
    (grad, per_channel)
}

fn bias(op: &Op) -> &[f32] {
    match op {
        Op::Conv(c) => &c.bias,
        Op::Linear(l) => &l.bias,
        other => panic!("no bias on a {} layer", other.kind()),
    }
}

#[test]
fn fullgrads_decomposition_adds_up_to_the_score_on_relu_networks() {
    // Piecewise-linear networks (convs with folded batch-norm, ReLU, max and average pools, residual
    // adds, linear): y = x . dy/dx + sum over layers of b . dy/db, exactly.
    let sd = gradcam_wasm::synthetic::state_dict(gradcam_wasm::Arch::ResNet18, 10).unwrap();
    let resnet = Model::from_bytes(&sd.bytes(), Some(gradcam_wasm::Arch::ResNet18)).unwrap();
    let x = FeatureMap::new(3, 48, 40, Rng::new(5).vec(3 * 48 * 40, 1.0));
    let cases = [(two_unit_net(), FeatureMap::new(3, 1, 1, vec![1.0, -1.0, 0.5]), 3, 2), ((*resnet.graph).clone(), x, resnet.graph.find("layer4").unwrap(), 10)];
    for (graph, x, layer, classes) in cases {
        let mut target = vec![0.0f32; classes];
        target[1] = 1.0;
        target[0] = -0.5;
        let logits = CpuExecutor::new(std::sync::Arc::new(graph.clone())).logits_batch(&x.data, 1, x.height, x.width).unwrap();
        let score: f64 = logits.iter().zip(&target).map(|(l, t)| *l as f64 * *t as f64).sum();
        let (grad, shares) = bias_shares(&graph, &x, layer, &target);
        let input_share: f64 = x.data.iter().zip(&grad.data).map(|(a, b)| *a as f64 * *b as f64).sum();
        let bias_share: f64 = shares.iter().map(|(i, db)| bias(&graph.nodes[*i].op).iter().zip(db).map(|(b, d)| *b as f64 * *d as f64).sum::<f64>()).sum();
        let scale = input_share.abs() + bias_share.abs();
        println!("score {score:.5} = input {input_share:.5} + biases {bias_share:.5} ({} bias layers)", shares.len());
        assert!(bias_share.abs() > 1e-3 * scale && input_share.abs() > 1e-3 * scale, "both parts must matter for the check to bite");
        assert!((score - input_share - bias_share).abs() < 1e-4 * scale, "completeness fails: {score} vs {}", input_share + bias_share);
    }
}

#[test]
fn bias_gradients_of_the_visiting_walk_match_finite_differences() {
    // d score / d b_k of a conv fused with its ReLU (the stem), of one feeding a residual add, and
    // of the linear head, against central differences of the logits with that bias moved.
    use gradcam_wasm::graph::{Conv, Linear};
    use std::sync::Arc;
    let sd = gradcam_wasm::synthetic::state_dict(gradcam_wasm::Arch::ResNet18, 10).unwrap();
    let model = Model::from_bytes(&sd.bytes(), Some(gradcam_wasm::Arch::ResNet18)).unwrap();
    let graph = (*model.graph).clone();
    let x = FeatureMap::new(3, 48, 40, Rng::new(8).vec(3 * 48 * 40, 1.0));
    let mut target = vec![0.0f32; 10];
    target[3] = 1.0;
    let (_, shares) = bias_shares(&graph, &x, graph.find("layer4").unwrap(), &target);
    for name in ["conv1", "layer1.0.conv2", "fc"] {
        let i = graph.find(name).unwrap();
        let db = &shares.iter().find(|(j, _)| *j == i).unwrap_or_else(|| panic!("{name} not visited")).1;
        let k = (0..db.len()).max_by(|&a, &b| db[a].abs().total_cmp(&db[b].abs())).unwrap();
        let eps = 2e-3f32;
        let score = |delta: f32| -> f64 {
            let mut g = graph.clone();
            g.nodes[i].op = match &graph.nodes[i].op {
                Op::Conv(c) => {
                    let mut bias = c.bias.clone();
                    bias[k] += delta;
                    Op::Conv(Arc::new(Conv { weight: c.weight.clone(), bias, padding: c.padding, ..**c }))
                }
                Op::Linear(l) => {
                    let mut bias = l.bias.clone();
                    bias[k] += delta;
                    Op::Linear(Arc::new(Linear { weight: l.weight.clone(), bias, ..**l }))
                }
                other => panic!("{}", other.kind()),
            };
            let logits = CpuExecutor::new(Arc::new(g)).logits_batch(&x.data, 1, x.height, x.width).unwrap();
            logits.iter().zip(&target).map(|(l, t)| *l as f64 * *t as f64).sum()
        };
        let fd = (score(eps) - score(-eps)) / (2.0 * eps as f64);
        println!("{name} channel {k}: analytic {:.5}, finite difference {fd:.5}", db[k]);
        assert!(db[k].abs() > 1e-4, "{name}: zero bias gradient, the check would be vacuous");
        assert!((db[k] as f64 - fd).abs() < 0.02 * db[k].abs() as f64, "{name} channel {k}: {} vs {fd}", db[k]);
    }
}
