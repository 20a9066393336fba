//! `cargo run --release --bin bench [-- --runs N --arch NAME]`: forward and explanation times per
//! architecture on the native CPU path. Prints figures and ratios; asserts nothing.
//! EfficientNet-Lite0 uses the real default model; the others use synthetic torchvision-shaped weights
//! (the speed of a network does not depend on its weight values).

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    use gradcam_wasm::clock::now_ms;
    use gradcam_wasm::exec::{cpu::CpuExecutor, Executor};
    use gradcam_wasm::{synthetic, Arch, ExplainOptions, Explainer, FeatureMap, Method, Model, Target};

    let args: Vec<String> = std::env::args().collect();
    let flag = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = flag("--runs").and_then(|v| v.parse().ok()).unwrap_or(10);
    let only = flag("--arch");
    let archs = [Arch::EfficientNetLite0, Arch::ResNet18, Arch::MobileNetV2, Arch::ResNet50, Arch::SqueezeNet1_1, Arch::AlexNet, Arch::Vgg16];
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("native CPU path, 1 thread, 224x224, median of {runs} runs (ms)");
    println!("{:<20} {:>8} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9}", "arch", "load", "forward", "gradcam", "2nd class", "guided-gc", "guided/gc", "params M");
    for arch in archs {
        if only.as_deref().is_some_and(|o| o != arch.name()) {
            continue;
        }
        let bytes = match synthetic::state_dict(arch, 1000) {
            Some(sd) => sd.bytes(),
            None => match std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/efficientnet-lite0.safetensors")) {
                Ok(b) => b,
                Err(_) => {
                    println!("{:<20} (default model missing: run scripts/setup.sh)", arch.name());
                    continue;
                }
            },
        };
        let t = now_ms();
        let model = Model::from_bytes(&bytes, Some(arch)).expect("model loads");
        let load = now_ms() - t;
        let params = model.graph.parameter_count() as f64 / 1e6;
        let graph = model.graph.clone();
        let mut ex = Explainer::new(model);
        let mut rng = synthetic::Rng::new(1);
        let (mut fwd, mut gc, mut second, mut ggc) = (vec![], vec![], vec![], vec![]);
        let exec = CpuExecutor::new(graph);
        for _ in 0..runs {
            let input = FeatureMap::new(3, 224, 224, rng.vec(3 * 224 * 224, 1.5));
            let t = now_ms();
            exec.logits_batch(&input.data, 1, 224, 224).expect("forward");
            fwd.push(now_ms() - t);
            let e = ex.explain_tensor(input.clone(), &ExplainOptions::default()).expect("gradcam");
            gc.push(e.timings.total_ms);
            let other = ExplainOptions { target: Target::Class((e.class + 1) % 1000), ..Default::default() };
            second.push(ex.explain_tensor(input.clone(), &other).expect("second class").timings.total_ms);
            let input2 = FeatureMap::new(3, 224, 224, rng.vec(3 * 224 * 224, 1.5));
            let g = ExplainOptions { method: Method::GuidedGradCam, ..Default::default() };
            ggc.push(ex.explain_tensor(input2, &g).expect("guided grad-cam").timings.total_ms);
        }
        let (f, g, s, gg) = (median(fwd), median(gc), median(second), median(ggc));
        println!("{:<20} {load:>8.1} {f:>9.1} {g:>9.1} {s:>10.1} {gg:>10.1} {:>10.2} {params:>9.1}", arch.name(), gg / g);
    }
}
