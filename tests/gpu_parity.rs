//! WebGPU executor vs the CPU executor on the same graph: logits, the target layer's activations, its
//! gradient (Grad-CAM) and the plain, guided and deconvolution input gradients agree to a max
//! relative error <= 1e-3 (max |gpu - cpu| over max |cpu|). Natively this runs on whatever adapter wgpu
//! finds (lavapipe in CI: `apt-get install mesa-vulkan-drivers`). Without an adapter it prints a note
//! and passes, unless GRADCAM_REQUIRE_GPU=1, where it fails.
#![cfg(feature = "webgpu")]
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use gradcam_wasm::exec::{cpu::CpuExecutor, Executor, ReluRule};
use gradcam_wasm::gpu::GpuExecutor;
use gradcam_wasm::{Arch, FeatureMap, Model};
use std::time::Instant;

const TOL: f64 = 1e-3;

/// (max |gpu - cpu| / max |cpu|, fraction of elements whose error exceeds TOL * max |cpu|).
fn rel_err(gpu: &[f32], cpu: &[f32]) -> (f64, f64) {
    assert_eq!(gpu.len(), cpu.len(), "lengths differ");
    let scale = cpu.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    let scale = if scale == 0.0 { 1.0 } else { scale };
    let errs: Vec<f64> = gpu.iter().zip(cpu).map(|(a, b)| (*a as f64 - *b as f64).abs() / scale).collect();
    let max = errs.iter().fold(0.0f64, |m, e| m.max(*e));
    (max, errs.iter().filter(|e| **e > TOL).count() as f64 / errs.len().max(1) as f64)
}

fn gpu_executor(model: &Model) -> Option<GpuExecutor> {
    match GpuExecutor::new(model.graph.clone()) {
        Ok(e) => Some(e),
        Err(e) => {
            if std::env::var("GRADCAM_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("GRADCAM_REQUIRE_GPU=1 but the WebGPU executor is unavailable: {e}");
            }
            eprintln!("note: skipping WebGPU parity ({e}); set GRADCAM_REQUIRE_GPU=1 to make this an error");
            None
        }
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn check(name: &str, model: Model, h: usize, w: usize) {
    let Some(gpu) = gpu_executor(&model) else { return };
    let info = gpu.adapter_info();
    println!("{name}: adapter {} ({:?}, {:?})", info.name, info.device_type, info.backend);
    // Executor parity is checked with the direct convolutions on the CPU: the two then sum the same
    // products in different orders. Winograd's transforms round differently (checked against the
    // direct convs in tests/winograd.rs) and can flip a near-tie in a deep max pool, which moves a
    // patch of a VGG's plain input gradient (seen on 6% of VGG-11-BN's pixels at 64x64).
    let cpu = CpuExecutor::new(model.graph.clone()).with_tuning(gradcam_wasm::kernels::Tuning { winograd: false, ..Default::default() });
    let layer = model.graph.find(&model.default_layer()).unwrap();
    let x = Rng::new(7).vec(3 * h * w, 1.5);
    let input = FeatureMap::new(3, h, w, x);

    let t = Instant::now();
    let mut cp = cpu.start(input.clone(), layer).unwrap();
    let t_cpu_fwd = ms(t);
    let t = Instant::now();
    let mut gp = gpu.start(input.clone(), layer).unwrap();
    let t_gpu_fwd = ms(t);

    let top = cp.logits().iter().enumerate().fold(0, |b, (i, v)| if *v > cp.logits()[b] { i } else { b });
    let mut target = vec![0.0f32; model.graph.num_classes];
    target[top] = 1.0;

    let mut errs: Vec<(&str, (f64, f64))> = vec![("logits", rel_err(gp.logits(), cp.logits())), ("activations", rel_err(&gp.activations().data, &cp.activations().data))];
    let t = Instant::now();
    let c = cp.layer_gradient(&target).unwrap();
    let t_cpu_lg = ms(t);
    let t = Instant::now();
    let g = gp.layer_gradient(&target).unwrap();
    let t_gpu_lg = ms(t);
    errs.push(("layer gradient", rel_err(&g.data, &c.data)));
    let t = Instant::now();
    let c = cp.input_gradient(&target, ReluRule::Guided).unwrap();
    let t_cpu_ig = ms(t);
    let t = Instant::now();
    let g = gp.input_gradient(&target, ReluRule::Guided).unwrap();
    let t_gpu_ig = ms(t);
    errs.push(("guided input gradient", rel_err(&g.data, &c.data)));
    let c = cp.input_gradient(&target, ReluRule::Deconv).unwrap();
    let g = gp.input_gradient(&target, ReluRule::Deconv).unwrap();
    errs.push(("deconvolution input gradient", rel_err(&g.data, &c.data)));
    let c = cp.input_gradient(&target, ReluRule::Plain).unwrap();
    let g = gp.input_gradient(&target, ReluRule::Plain).unwrap();
    errs.push(("input gradient", rel_err(&g.data, &c.data)));
    if std::env::var("GPU_DEBUG").is_ok() {
        let scale = c.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in g.data.iter().zip(&c.data).enumerate() {
            if (a - b).abs() > 1e-4 * scale {
                println!("  diff at {i} (c {} y {} x {}): gpu {a} cpu {b}", i / (h * w), (i / w) % h, i % w);
            }
        }
    }
    // A second pass of the same size reuses the pooled plan.
    drop(gp);
    let t = Instant::now();
    let gp2 = gpu.start(input, layer).unwrap();
    let t_gpu_fwd2 = ms(t);
    errs.push(("logits (2nd pass)", rel_err(gp2.logits(), cp.logits())));

    println!("{name} {h}x{w}: ms cpu/gpu: forward {t_cpu_fwd:.0}/{t_gpu_fwd:.0} (2nd {t_gpu_fwd2:.0}), layer grad {t_cpu_lg:.0}/{t_gpu_lg:.0}, guided input grad {t_cpu_ig:.0}/{t_gpu_ig:.0}");
    for (what, (e, frac)) in &errs {
        println!("{name}: {what}: max relative error {e:.2e} ({:.3}% of elements above {TOL})", 100.0 * frac);
    }
    for (what, (e, frac)) in &errs {
        // Gradients route through discrete choices (a max pool's argmax, a ReLU's x > 0). Where two
        // values tie to within f32 rounding, the GPU and CPU sums (in different orders) may pick
        // differently and move one output's gradient to a neighbour: a localized, legitimate
        // disagreement (seen on ResNet-18's stem max pool). Such flips are allowed only if they touch
        // at most 0.5% of the elements; everything else must agree to TOL.
        let ok = *e <= TOL || (what.contains("gradient") && *frac <= 0.005);
        assert!(ok, "{name}: {what}: max relative error {e:.3e} > {TOL}, on {:.3}% of the elements", 100.0 * frac);
    }
}

#[test]
fn default_model_matches_cpu() {
    check("efficientnet_lite0", Model::from_bytes(&default_model_bytes(), None).unwrap(), 224, 224);
}

fn synthetic(arch: Arch, h: usize, w: usize) {
    let sd = gradcam_wasm::synthetic::state_dict(arch, 1000).unwrap();
    check(arch.name(), Model::from_bytes(&sd.bytes(), Some(arch)).unwrap(), h, w);
}

#[test]
fn resnet18_matches_cpu() {
    synthetic(Arch::ResNet18, 112, 144);
}

#[test]
fn mobilenet_v2_matches_cpu() {
    synthetic(Arch::MobileNetV2, 112, 144);
}

/// A conv or residual sum whose ReLU / ReLU6 the GPU executor fuses into it (its own buffer is
/// then not written) can still be the target layer: its own activations and gradient, as the CPU
/// computes them. The last such node of `arch` whose op `is_producer` (a short backward).
fn fused_layer_matches_cpu(arch: Arch, is_producer: fn(&gradcam_wasm::graph::Op) -> bool) {
    use gradcam_wasm::graph::Op;
    let sd = gradcam_wasm::synthetic::state_dict(arch, 1000).unwrap();
    let model = Model::from_bytes(&sd.bytes(), Some(arch)).unwrap();
    let Some(gpu) = gpu_executor(&model) else { return };
    let g = &model.graph;
    let users = |i: usize| g.nodes.iter().filter(|n| n.inputs.contains(&i)).count();
    let layer = (0..g.nodes.len())
        .rev()
        .find(|&i| is_producer(&g.nodes[i].op) && users(i) == 1 && g.nodes.iter().any(|n| matches!(n.op, Op::Relu | Op::Relu6) && n.inputs == [i]))
        .expect("a node followed by its ReLU");
    let cpu = CpuExecutor::new(g.clone()).with_tuning(gradcam_wasm::kernels::Tuning { winograd: false, ..Default::default() });
    let input = FeatureMap::new(3, 64, 80, Rng::new(9).vec(3 * 64 * 80, 1.5));
    let mut cp = cpu.start(input.clone(), layer).unwrap();
    let mut gp = gpu.start(input, layer).unwrap();
    let mut target = vec![0.0f32; g.num_classes];
    target[3] = 1.0;
    let (act, _) = rel_err(&gp.activations().data, &cp.activations().data);
    let want = cp.layer_gradient(&target).unwrap().data;
    assert!(want.iter().any(|v| *v != 0.0), "a gradient that is not all zero");
    let (grad, _) = rel_err(&gp.layer_gradient(&target).unwrap().data, &want);
    let (logits, _) = rel_err(gp.logits(), cp.logits());
    println!("layer '{}': activations {act:.1e}, gradient {grad:.1e}, logits {logits:.1e}", g.nodes[layer].name);
    assert!(cp.activations().data.iter().any(|v| *v < 0.0), "the node's own output, before the ReLU");
    assert!(act <= TOL && grad <= TOL && logits <= TOL, "activations {act:.2e}, gradient {grad:.2e}, logits {logits:.2e}");
}

#[test]
fn a_conv_with_a_fused_relu6_can_be_the_layer() {
    fused_layer_matches_cpu(Arch::MobileNetV2, |op| matches!(op, gradcam_wasm::graph::Op::Conv(_)));
}

#[test]
fn a_residual_sum_with_a_fused_relu_can_be_the_layer() {
    fused_layer_matches_cpu(Arch::ResNet18, |op| matches!(op, gradcam_wasm::graph::Op::Add));
}

#[test]
fn squeezenet1_1_matches_cpu() {
    // Odd size: ceil-mode max pools with a partial last window.
    synthetic(Arch::SqueezeNet1_1, 117, 131);
}

#[test]
fn vgg11_matches_cpu() {
    synthetic(Arch::Vgg11, 96, 96);
}

/// The path the browser runs: `GpuSession` awaits the GPU passes and hands them to the explainer as a
/// recorded pass. Its explanations must equal the CPU explainer's for each method, including a second
/// class on the same (reused) forward.
#[test]
fn gpu_session_explains_like_the_cpu_explainer() {
    use gradcam_wasm::gpu::GpuSession;
    use gradcam_wasm::{ExplainOptions, Explainer, Method, Target};
    let model = || Model::from_bytes(&default_model_bytes(), None).unwrap();
    let Some(gpu) = gpu_executor(&model()) else { return };
    let mut session = GpuSession::new(gpu);
    let mut on_gpu = Explainer::new(model());
    let mut on_cpu = Explainer::new(model());
    let image = sample("chelsea.png");
    let cases = [
        (Method::GRAD_CAM, Target::Top1),
        (Method::GRAD_CAM, Target::Class(285)), // another class: the forward is reused
        (Method::GUIDED_GRAD_CAM, Target::Class(281)),
        (Method::GUIDED_BACKPROP, Target::Top1),
        (Method::DECONVOLUTION, Target::Top1),
        (Method::DECONV_GRAD_CAM, Target::Class(281)),
        (Method::LAYER_CAM, Target::Top1),
        (Method::EIGEN_CAM, Target::Top1),
        (Method::GRAD_CAM_ELEMENTWISE, Target::Top1),
        (Method::EIGEN_GRAD_CAM, Target::Top1),
        (Method::CAM, Target::Class(285)),
        // Its forwards from the layer run on the explainer's CPU executor, from the GPU's activations.
        (Method::ABLATION_CAM, Target::Top1),
    ];
    for (i, (method, target)) in cases.into_iter().enumerate() {
        let opts = ExplainOptions { method, target, ..Default::default() };
        let g = pollster::block_on(session.explain(&mut on_gpu, &image, &opts, &mut |_, _| {})).unwrap();
        let c = on_cpu.explain(&image, &opts).unwrap();
        let (raw, _) = rel_err(&g.raw.data, &c.raw.data);
        let (map, _) = rel_err(&g.image_map.data, &c.image_map.data);
        println!(
            "session {}: class {} gpu/cpu, raw {raw:.2e}, image map {map:.2e}, gpu {:.0} ms (forward {:.0}, reused {})",
            method.name(),
            g.class,
            g.timings.total_ms,
            g.timings.forward_ms,
            g.forward_reused
        );
        assert_eq!((g.backend, g.class, g.top5[0].class), ("webgpu", c.class, c.top5[0].class));
        assert!(raw <= TOL && map <= TOL, "{}: raw {raw:.2e}, image map {map:.2e}", method.name());
        assert_eq!(g.forward_reused, i > 0, "{}: the forward of the same image is reused", method.name());
    }
    // Score-CAM: its masked forwards are awaited on the GPU, batch by batch, with progress.
    let mut opts = ExplainOptions { method: Method::SCORE_CAM, ..Default::default() };
    opts.score_cam.max_channels = Some(10);
    opts.score_cam.batch = Some(4);
    let mut reports = Vec::new();
    let g = pollster::block_on(session.explain(&mut on_gpu, &image, &opts, &mut |d, t| reports.push((d, t)))).unwrap();
    let c = on_cpu.explain(&image, &opts).unwrap();
    let (raw, _) = rel_err(&g.raw.data, &c.raw.data);
    println!("session scorecam (10 channels): raw {raw:.2e}, gpu {:.0} ms, progress {reports:?}", g.timings.total_ms);
    assert!(raw <= TOL, "scorecam: raw {raw:.2e}");
    assert_eq!(reports, vec![(4, 10), (8, 10), (10, 10)]);
}

/// Methods whose needs the session cannot gather (plain input gradients at other inputs, batched
/// forwards other than Score-CAM's) run on the explainer's CPU, with a warning, never a wrong map.
#[test]
fn the_session_hands_what_it_cannot_gather_to_the_cpu() {
    use gradcam_wasm::gpu::GpuSession;
    use gradcam_wasm::methods::attribution::AttributionOptions;
    use gradcam_wasm::{ExplainOptions, Explainer, Method};
    assert!(!GpuSession::supports(Method::INTEGRATED_GRADIENTS) && !GpuSession::supports(Method::OCCLUSION));
    assert!(GpuSession::supports(Method::SCORE_CAM) && GpuSession::supports(Method::GUIDED_BACKPROP) && GpuSession::supports(Method::DECONV_GRAD_CAM));
    assert!(!GpuSession::supports(Method::FULLGRAD));
    let model = || Model::from_bytes(&default_model_bytes(), None).unwrap();
    let Some(gpu) = gpu_executor(&model()) else { return };
    let mut session = GpuSession::new(gpu);
    let (mut on_gpu, mut on_cpu) = (Explainer::new(model()), Explainer::new(model()));
    let image = sample("chelsea.png");
    for method in [Method::SALIENCY, Method::OCCLUSION, Method::FULLGRAD] {
        let opts = ExplainOptions { method, attribution: AttributionOptions { patch: Some(56), stride: Some(56), ..Default::default() }, ..Default::default() };
        let g = pollster::block_on(session.explain(&mut on_gpu, &image, &opts, &mut |_, _| {})).unwrap();
        let c = on_cpu.explain(&image, &opts).unwrap();
        assert_eq!(g.backend, "cpu", "{}", method.name());
        assert!(g.warnings.iter().any(|w| w.contains("ran on the cpu")), "{}: {:?}", method.name(), g.warnings);
        assert_eq!(g.raw.data, c.raw.data, "{}", method.name());
    }
}

/// A lost device is an error on the next call, never a panic: callers (the browser API) then fall back
/// to the CPU, and the explainer itself stays usable.
#[test]
fn a_lost_device_is_an_error_not_a_panic() {
    use gradcam_wasm::gpu::GpuSession;
    use gradcam_wasm::{ExplainOptions, Explainer};
    let model = || Model::from_bytes(&default_model_bytes(), None).unwrap();
    let Some(gpu) = gpu_executor(&model()) else { return };
    let mut session = GpuSession::new(gpu);
    let mut explainer = Explainer::new(model());
    let image = sample("chelsea.png");
    let opts = ExplainOptions::default();
    pollster::block_on(session.explain(&mut explainer, &image, &opts, &mut |_, _| {})).unwrap();
    session.lose_device();
    let err = pollster::block_on(session.explain(&mut explainer, &image, &opts, &mut |_, _| {})).unwrap_err();
    println!("after losing the device: {err}");
    assert!(err.to_string().contains("webgpu"), "the error names the backend: {err}");
    assert_eq!(explainer.explain(&image, &opts).unwrap().class, 282, "the CPU explainer still works");
}

#[test]
fn resnet50_matches_cpu() {
    // Bottleneck blocks with a strided 1x1 downsample.
    synthetic(Arch::ResNet50, 64, 80);
}

#[test]
fn alexnet_matches_cpu() {
    // 11x11 stride-4 stem, overlapping 3x3/2 max pools, adaptive average pool to 6x6.
    synthetic(Arch::AlexNet, 96, 96);
}

#[test]
fn squeezenet1_0_matches_cpu() {
    synthetic(Arch::SqueezeNet1_0, 97, 101);
}

#[test]
fn vgg11_bn_matches_cpu() {
    // Batch-norm folded into the convs, as on the CPU.
    synthetic(Arch::Vgg11Bn, 64, 64);
}
