//! `cargo run --release --bin bench [-- --runs N --arch NAME --profile --models DIR]`: forward and explanation times
//! per architecture on the native CPU path (`--profile` adds where the time goes, by op kind). Prints figures and ratios; asserts nothing. Built with
//! `--features webgpu` and given `--gpu`, it adds the WebGPU executor's Grad-CAM and Guided Grad-CAM
//! (forward + backward, readback included) beside the CPU's, on whatever adapter wgpu finds
//! (`--gpu-direct-convs`: every conv on the direct reference kernels, see `set_direct_convs`).
//! EfficientNet-Lite0 uses the real default model; the others use synthetic torchvision-shaped weights
//! (the speed of a network does not depend on its weight values). `--models DIR` adds every `.pth`,
//! `.onnx` (with its `.onnx.data`) and `.safetensors` file in DIR, e.g. the full-size torchvision
//! families that `scripts/gen-bench-models.py` writes where torch is installed.
//!
//! `bench --gpu-conv-shapes [--runs N] [--arch NAME]` (with `--features webgpu`): per conv shape of
//! EfficientNet-Lite0 and ResNet-18 at 224x224 (the most expensive ones, by total FLOPs in the network),
//! GFLOP/s of the WebGPU kernels (forward and input gradient; the current ones and the direct reference
//! kernels) next to the native CPU kernels' (1 thread), on whatever adapter wgpu finds.
//!
//! `bench --gpu-profile [--arch NAME] [--runs N]` (with `--features webgpu`): the WebGPU executor's
//! Grad-CAM pass at 224x224 by kernel, each launch timed alone (wall and CPU ms), then the forward and
//! backward as one submit each.
//!
//! Other modes (used by `npm run bench`, see bench/README.md):
//! - `bench --write-synthetic ARCH PATH`: writes ARCH's synthetic weights as f16 safetensors (the
//!   weights both sides of the browser benchmark load).
//! - `bench --json [--archs a,b] [--methods gradcam,guided-gradcam,scorecam] [--runs N]
//!   [--scorecam-runs N] [--scorecam-channels N]`: per architecture the load time, the first (cold)
//!   explanation and the median / quartiles of `--runs` steady-state explanations of each method, as
//!   one JSON object on stdout.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--write-synthetic") {
        let (Some(arch), Some(path)) = (args.get(i + 1), args.get(i + 2)) else {
            eprintln!("usage: bench --write-synthetic ARCH PATH");
            std::process::exit(2);
        };
        std::process::exit(write_synthetic(arch, path));
    }
    if args.iter().any(|a| a == "--gpu-conv-shapes") {
        gpu_conv_shapes(&args);
    } else if args.iter().any(|a| a == "--gpu-profile") {
        gpu_profile(&args);
    } else if args.iter().any(|a| a == "--batch-columns") {
        batch_columns_mode(&args);
    } else if args.iter().any(|a| a == "--json") {
        json_mode(&args);
    } else {
        table_mode(&args);
    }
}

/// `bench --batch-columns [--runs N] [--archs a,b] [--sizes 1,4,8] [--scorecam-channels N]`: A/B of
/// a batch's images side by side as the columns of the convs' products (`Tuning::batch_columns`)
/// against one product per image, interleaved: ms per image of `logits_batch` (median and minimum
/// of `--runs` calls per side and size), then Score-CAM over N channels and deletion + insertion
/// (100 steps each) of a Grad-CAM, in CPU seconds (median of 3 per side). Run it with
/// `RAYON_NUM_THREADS=1` (the single-threaded wasm build's situation): the times are this thread's.
#[cfg(not(target_arch = "wasm32"))]
fn batch_columns_mode(args: &[String]) {
    use gradcam_wasm::eval::faithfulness::{faithfulness, CurveOptions};
    use gradcam_wasm::exec::{cpu::CpuExecutor, Executor};
    use gradcam_wasm::imaging::rgb::RgbImage;
    use gradcam_wasm::kernels::Tuning;
    use gradcam_wasm::{synthetic, Arch, ExplainOptions, Explainer, Method, Model};
    use std::time::Instant;
    let runs: usize = flag(args, "--runs").and_then(|v| v.parse().ok()).unwrap_or(7).max(1);
    let channels: usize = flag(args, "--scorecam-channels").and_then(|v| v.parse().ok()).unwrap_or(256);
    let archs = flag(args, "--archs").unwrap_or_else(|| "efficientnet_lite0,resnet18".into());
    let sizes: Vec<usize> = flag(args, "--sizes").unwrap_or_else(|| "1,4,8".into()).split(',').filter_map(|v| v.parse().ok()).collect();
    let clock = if thread_cpu_ms().is_finite() { "this thread's CPU time" } else { "wall time" };
    println!("threads: {}; forwards timed by {clock}", gradcam_wasm::kernels::parallel::threads());
    let tunings = [("off", Tuning { batch_columns: false, ..Tuning::DEFAULT }), ("on", Tuning::DEFAULT)];
    for arch in archs.split(',') {
        let arch = Arch::from_name(arch).expect("arch");
        let bytes = model_bytes(arch).expect("weights");
        let model = || Model::from_bytes(&bytes, Some(arch)).expect("model loads");
        for &n in &sizes {
            let x = synthetic::Rng::new(3).vec(n * 3 * 224 * 224, 1.5);
            let execs = tunings.map(|(_, t)| CpuExecutor::new(model().graph.clone()).with_tuning(t));
            let mut times = [vec![], vec![]];
            for run in 0..=runs {
                for (exec, times) in execs.iter().zip(&mut times) {
                    let (t, c) = (Instant::now(), thread_cpu_ms());
                    exec.logits_batch(&x, n, 224, 224).expect("forward");
                    if run > 0 {
                        // Run 0 warms up. This thread's CPU time where Linux tells it (one thread).
                        let ms = if c.is_finite() { thread_cpu_ms() - c } else { t.elapsed().as_secs_f64() * 1e3 };
                        times.push(ms / n as f64);
                    }
                }
            }
            let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
            let [(off_med, off_min), (on_med, on_min)] = times.map(|v| (median(v.clone()), min(&v)));
            println!("{} n={n}: ms/image off {off_med:.2} (min {off_min:.2}), on {on_med:.2} (min {on_min:.2}); on/off {:.3} (min {:.3})", arch.name(), on_med / off_med, on_min / off_min);
        }
        let data = synthetic::Rng::new(5).vec(224 * 224 * 3, 1.0).iter().map(|v| ((v + 1.0) * 127.0) as u8).collect();
        let image = RgbImage { width: 224, height: 224, data };
        let mut explainers = tunings.map(|(_, t)| Explainer::with_executor(model(), Box::new(CpuExecutor::new(model().graph.clone()).with_tuning(t))));
        let mut score = ExplainOptions { method: Method::SCORE_CAM, ..Default::default() };
        score.score_cam.max_channels = Some(channels);
        let mut secs = [[vec![], vec![]], [vec![], vec![]]];
        for _ in 0..3 {
            for (ex, secs) in explainers.iter_mut().zip(&mut secs) {
                let t = thread_cpu_ms();
                ex.explain(&image, &score).expect("score-cam");
                secs[0].push((thread_cpu_ms() - t) / 1e3);
                let e = ex.explain(&image, &ExplainOptions::default()).expect("gradcam");
                let t = thread_cpu_ms();
                faithfulness(ex, &image, &e, &ExplainOptions::default(), &CurveOptions::default()).expect("curves");
                secs[1].push((thread_cpu_ms() - t) / 1e3);
            }
        }
        for ((name, _), [score, curves]) in tunings.iter().zip(secs) {
            println!("{} {name}: Score-CAM {channels} channels {:.2} s, deletion+insertion {:.2} s (batch {})", arch.name(), median(score), median(curves), explainers[0].forward_batch());
        }
    }
}

/// CPU ms this thread has run (Linux's `/proc/thread-self/schedstat`, nanoseconds), NaN elsewhere:
/// on a machine shared with other work it measures the work, not the waiting.
#[cfg(not(target_arch = "wasm32"))]
fn thread_cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    stat.split_whitespace().next().and_then(|ns| ns.parse::<f64>().ok()).map_or(f64::NAN, |ns| ns / 1e6)
}

#[cfg(not(target_arch = "wasm32"))]
fn flag(args: &[String], k: &str) -> Option<String> {
    args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned()
}

/// The weights of `arch`: synthetic, or the real default model for EfficientNet-Lite0.
#[cfg(not(target_arch = "wasm32"))]
fn model_bytes(arch: gradcam_wasm::Arch) -> Option<Vec<u8>> {
    match gradcam_wasm::synthetic::state_dict(arch, 1000) {
        Some(sd) => Some(sd.bytes()),
        None => std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/efficientnet-lite0.safetensors")).ok(),
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn write_synthetic(arch: &str, path: &str) -> i32 {
    use gradcam_wasm::weights::safetensors_writer::{write_safetensors, StoreAs};
    let arch = match gradcam_wasm::Arch::from_name(arch) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let Some(sd) = gradcam_wasm::synthetic::state_dict(arch, 1000) else {
        eprintln!("no synthetic weights for {} (use the real model file)", arch.name());
        return 2;
    };
    let meta = [("source".to_string(), format!("gradcam-wasm synthetic::state_dict({}, 1000)", arch.name()))];
    let bytes = match write_safetensors(&sd.tensors, StoreAs::F16, &meta) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if let Err(e) = std::fs::write(path, &bytes) {
        eprintln!("cannot write {path}: {e}");
        return 1;
    }
    println!("{path}: {} synthetic weights, f16, {} bytes", arch.name(), bytes.len());
    0
}

#[cfg(not(target_arch = "wasm32"))]
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (median, 25th percentile, 75th percentile), nearest rank.
#[cfg(not(target_arch = "wasm32"))]
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

#[cfg(not(target_arch = "wasm32"))]
fn json_mode(args: &[String]) {
    use gradcam_wasm::clock::now_ms;
    use gradcam_wasm::methods::score::ScoreCamOptions;
    use gradcam_wasm::{synthetic, Arch, ExplainOptions, Explainer, FeatureMap, Method, Model};
    use serde_json::json;

    let runs: usize = flag(args, "--runs").and_then(|v| v.parse().ok()).unwrap_or(20).max(1);
    let score_runs: usize = flag(args, "--scorecam-runs").and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let channels: Option<usize> = flag(args, "--scorecam-channels").and_then(|v| v.parse().ok()).filter(|&n| n > 0);
    let archs = flag(args, "--archs").or_else(|| flag(args, "--arch")).unwrap_or_else(|| "efficientnet_lite0,resnet18,mobilenet_v2,vgg16".into());
    let methods = flag(args, "--methods").unwrap_or_else(|| "gradcam,guided-gradcam,scorecam".into());
    let mut out = vec![];
    for name in archs.split(',').filter(|s| !s.is_empty()) {
        let arch = Arch::from_name(name).unwrap_or_else(|e| panic!("{e}"));
        let Some(bytes) = model_bytes(arch) else {
            out.push(json!({ "arch": arch.name(), "error": "default model missing: run scripts/setup.sh" }));
            continue;
        };
        let t = now_ms();
        let model = Model::from_bytes(&bytes, Some(arch)).expect("model loads");
        let load = now_ms() - t;
        let params = model.graph.parameter_count();
        let mut ex = Explainer::new(model);
        let mut rng = synthetic::Rng::new(7);
        let mut rows = vec![];
        for m in methods.split(',').filter(|s| !s.is_empty()) {
            let method = Method::from_name(m).unwrap_or_else(|e| panic!("{e}"));
            let mut opts = ExplainOptions { method, ..Default::default() };
            let n = if method == Method::SCORE_CAM {
                opts.score_cam = ScoreCamOptions { max_channels: channels, ..Default::default() };
                score_runs
            } else {
                runs
            };
            // A new random input per call: the explainer never reuses a forward pass here.
            let mut one = || {
                let input = FeatureMap::new(3, 224, 224, rng.vec(3 * 224 * 224, 1.5));
                let e = ex.explain_tensor(input, &opts).expect("explain");
                assert!(!e.forward_reused);
                e.timings.total_ms
            };
            let cold = one();
            let times: Vec<f64> = (0..n).map(|_| one()).collect();
            let (med, p25, p75) = quartiles(times.clone());
            rows.push(json!({ "method": m, "cold_ms": cold, "median_ms": med, "p25_ms": p25, "p75_ms": p75, "runs": n, "times_ms": times }));
        }
        out.push(json!({ "arch": arch.name(), "params": params, "load_ms": load, "methods": rows }));
    }
    let doc = json!({
        "path": "native CPU (candle custom ops, 1 thread)",
        "input": "224x224 random tensor per call",
        "scorecam_channels": channels,
        "archs": out,
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
}

#[cfg(not(target_arch = "wasm32"))]
fn table_mode(args: &[String]) {
    use gradcam_wasm::clock::now_ms;
    use gradcam_wasm::exec::{cpu::CpuExecutor, Executor};
    use gradcam_wasm::{synthetic, Arch, ExplainOptions, Explainer, FeatureMap, Method, Model, Target};

    let runs: usize = flag(args, "--runs").and_then(|v| v.parse().ok()).unwrap_or(10);
    let only = flag(args, "--arch");
    let archs = [Arch::EfficientNetLite0, Arch::ResNet18, Arch::MobileNetV2, Arch::ResNet50, Arch::SqueezeNet1_1, Arch::AlexNet, Arch::Vgg16];
    let gpu = args.iter().any(|a| a == "--gpu");
    #[cfg(feature = "webgpu")]
    gradcam_wasm::gpu::executor::set_direct_convs(args.iter().any(|a| a == "--gpu-direct-convs"));
    println!("native CPU path, 1 thread, each model's input size (224x224 unless it says otherwise), median of {runs} runs (ms)");
    print!("{:<20} {:>8} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9}", "arch", "load", "forward", "gradcam", "2nd class", "guided-gc", "guided/gc", "params M");
    if gpu {
        print!(" {:>11} {:>13} {:>9}", "gpu gradcam", "gpu guided-gc", "gpu/cpu");
    }
    println!();
    // Synthetic torchvision-shaped weights for the built-in list; `--models DIR` adds every model
    // file in DIR (e.g. full-size torchvision .pth and .onnx files from scripts/gen-bench-models.py).
    type Loader = Box<dyn Fn() -> Result<Model, String>>;
    let mut items: Vec<(String, Loader)> = Vec::new();
    for arch in archs {
        if only.as_deref().is_some_and(|o| o != arch.name()) {
            continue;
        }
        items.push((
            arch.name().to_string(),
            Box::new(move || {
                let bytes = model_bytes(arch).ok_or("default model missing: run scripts/setup.sh")?;
                Model::from_bytes(&bytes, Some(arch)).map_err(|e| e.to_string())
            }),
        ));
    }
    if let Some(dir) = flag(args, "--models") {
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "pth" || e == "onnx" || e == "safetensors"));
        files.sort();
        for path in files {
            let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            items.push((
                name,
                Box::new(move || {
                    let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
                    let data = std::fs::read(format!("{}.data", path.display())).ok();
                    gradcam_wasm::loading::ModelSettings { external_data: data, ..Default::default() }.load(&bytes).map_err(|e| e.to_string())
                }),
            ));
        }
    }
    for (name, load_model) in items {
        let t = now_ms();
        let model = match load_model() {
            Ok(m) => m,
            Err(e) => {
                println!("{name:<20} {e}");
                continue;
            }
        };
        let load = now_ms() - t;
        let (size, _) = model.input_size();
        let classes = model.graph.num_classes;
        let params = model.graph.parameter_count() as f64 / 1e6;
        let graph = model.graph.clone();
        let mut ex = Explainer::new(model);
        let mut rng = synthetic::Rng::new(1);
        let (mut fwd, mut gc, mut second, mut ggc) = (vec![], vec![], vec![], vec![]);
        let exec = CpuExecutor::new(graph);
        for _ in 0..runs {
            let input = FeatureMap::new(3, size, size, rng.vec(3 * size * size, 1.5));
            let t = now_ms();
            exec.logits_batch(&input.data, 1, size, size).expect("forward");
            fwd.push(now_ms() - t);
            let e = ex.explain_tensor(input.clone(), &ExplainOptions::default()).expect("gradcam");
            gc.push(e.timings.total_ms);
            let other = ExplainOptions { target: Target::Class((e.class + 1) % classes), ..Default::default() };
            second.push(ex.explain_tensor(input.clone(), &other).expect("second class").timings.total_ms);
            let input2 = FeatureMap::new(3, size, size, rng.vec(3 * size * size, 1.5));
            let g = ExplainOptions { method: Method::GUIDED_GRAD_CAM, ..Default::default() };
            ggc.push(ex.explain_tensor(input2, &g).expect("guided grad-cam").timings.total_ms);
        }
        let (f, g, s, gg) = (median(fwd), median(gc), median(second), median(ggc));
        if args.iter().any(|a| a == "--profile") {
            print_profile(&mut ex, &mut rng);
        }
        print!("{name:<20} {load:>8.1} {f:>9.1} {g:>9.1} {s:>10.1} {gg:>10.1} {:>10.2} {params:>9.1}", gg / g);
        if gpu {
            match gpu_times(&ex, runs) {
                Ok((gg_gpu, ggc_gpu, adapter)) => print!(" {gg_gpu:>11.1} {ggc_gpu:>13.1} {:>9.1}  ({adapter})", gg_gpu / g),
                Err(e) => print!("  webgpu: {e}"),
            }
        }
        println!();
    }
}

/// `--profile`: where one Grad-CAM and then one Guided Grad-CAM on the same image (its forward reused)
/// spend their time, by op kind (the executor's own profile; candle's backward bookkeeping is the
/// difference to the total).
#[cfg(not(target_arch = "wasm32"))]
fn print_profile(ex: &mut gradcam_wasm::Explainer, rng: &mut gradcam_wasm::synthetic::Rng) {
    use gradcam_wasm::profile;
    use gradcam_wasm::{ExplainOptions, FeatureMap, Method};
    let input = FeatureMap::new(3, 224, 224, rng.vec(3 * 224 * 224, 1.5));
    profile::enable(true);
    for opts in [ExplainOptions::default(), ExplainOptions { method: Method::GUIDED_GRAD_CAM, ..Default::default() }] {
        let total = ex.explain_tensor(input.clone(), &opts).expect("explain").timings.total_ms;
        let mut ops = profile::take();
        ops.sort_by(|a, b| b.1.total_cmp(&a.1));
        let listed: Vec<String> = ops.iter().map(|(k, ms, n)| format!("{k} {ms:.1}/{n}")).collect();
        println!("  {:?} {total:.1} ms: {}", opts.method, listed.join(", "));
    }
    profile::enable(false);
}

/// Median (Grad-CAM, Guided Grad-CAM) times of the WebGPU executor on fresh random inputs, and the adapter.
#[cfg(all(not(target_arch = "wasm32"), feature = "webgpu"))]
fn gpu_times(ex: &gradcam_wasm::Explainer, runs: usize) -> Result<(f64, f64, String), String> {
    use gradcam_wasm::clock::now_ms;
    use gradcam_wasm::exec::Executor;
    use gradcam_wasm::gpu::GpuExecutor;
    use gradcam_wasm::{synthetic, FeatureMap};
    let graph = ex.model().graph.clone();
    let layer = graph.find(&ex.model().default_layer()).map_err(|e| e.to_string())?;
    let gpu = GpuExecutor::new(graph.clone()).map_err(|e| e.to_string())?;
    let adapter = format!("{} {:?}", gpu.adapter_info().name, gpu.adapter_info().backend);
    let mut rng = synthetic::Rng::new(2);
    let mut target = vec![0.0f32; graph.num_classes];
    target[0] = 1.0;
    let (mut gc, mut ggc) = (vec![], vec![]);
    for _ in 0..runs {
        let input = FeatureMap::new(3, 224, 224, rng.vec(3 * 224 * 224, 1.5));
        let t = now_ms();
        let mut pass = gpu.start(input.clone(), layer).map_err(|e| e.to_string())?;
        pass.layer_gradient(&target).map_err(|e| e.to_string())?;
        gc.push(now_ms() - t);
        drop(pass);
        let t = now_ms();
        let mut pass = gpu.start(input, layer).map_err(|e| e.to_string())?;
        pass.layer_gradient(&target).map_err(|e| e.to_string())?;
        pass.input_gradient(&target, gradcam_wasm::exec::ReluRule::Guided).map_err(|e| e.to_string())?;
        ggc.push(now_ms() - t);
    }
    Ok((median(gc), median(ggc), adapter))
}

#[cfg(all(not(target_arch = "wasm32"), not(feature = "webgpu")))]
fn gpu_times(_: &gradcam_wasm::Explainer, _: usize) -> Result<(f64, f64, String), String> {
    Err("this bench was built without --features webgpu".into())
}

/// A conv's shape in a network at 224x224: (name of its first node, geometry, how many convs share it).
#[cfg(all(not(target_arch = "wasm32"), feature = "webgpu"))]
type ConvShape = (String, gradcam_wasm::kernels::Conv2dGeom, usize);

/// The `keep` conv shapes of `arch` with the most FLOPs in total (multiply-adds x 2, all convs of that shape).
#[cfg(all(not(target_arch = "wasm32"), feature = "webgpu"))]
fn conv_shapes(arch: gradcam_wasm::Arch, keep: usize) -> Result<Vec<ConvShape>, String> {
    use gradcam_wasm::graph::Op;
    let bytes = model_bytes(arch).ok_or("default model missing: run scripts/setup.sh")?;
    let model = gradcam_wasm::Model::from_bytes(&bytes, Some(arch)).map_err(|e| e.to_string())?;
    let g = &model.graph;
    let shapes = g.shapes(224, 224).map_err(|e| e.to_string())?;
    let mut out: Vec<ConvShape> = Vec::new();
    for n in &g.nodes {
        if let Op::Conv(c) = &n.op {
            let (_, h, w) = shapes[n.inputs[0]];
            let geo = c.geom(1, h, w);
            match out.iter_mut().find(|(_, o, _)| *o == geo) {
                Some(o) => o.2 += 1,
                None => out.push((n.name.clone(), geo, 1)),
            }
        }
    }
    out.sort_by(|a, b| (conv_flops(&b.1) * b.2 as f64).total_cmp(&(conv_flops(&a.1) * a.2 as f64)));
    // The top `keep`, and the top depthwise shapes (cheap in FLOPs, not in time) if not among them.
    let depthwise: Vec<ConvShape> = out.iter().filter(|s| s.1.is_depthwise()).take(2).cloned().collect();
    out.truncate(keep);
    for d in depthwise {
        if !out.iter().any(|o| o.1 == d.1) {
            out.push(d);
        }
    }
    Ok(out)
}

/// 2 x multiply-adds of one conv.
#[cfg(all(not(target_arch = "wasm32"), feature = "webgpu"))]
fn conv_flops(g: &gradcam_wasm::kernels::Conv2dGeom) -> f64 {
    2.0 * (g.cout * g.out_h() * g.out_w() * (g.cin / g.groups) * g.kh * g.kw) as f64
}

#[cfg(all(not(target_arch = "wasm32"), feature = "webgpu"))]
fn gpu_conv_shapes(args: &[String]) {
    use gradcam_wasm::gpu::executor::set_direct_convs;
    use gradcam_wasm::gpu::lab::{process_cpu_ms, ConvLab};
    use gradcam_wasm::kernels::{conv2d_forward, conv2d_input_grad};
    use gradcam_wasm::{synthetic, Arch};
    let runs: usize = flag(args, "--runs").and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let only = flag(args, "--arch");
    let labs = (ConvLab::new(), {
        set_direct_convs(true);
        let lab = ConvLab::new();
        set_direct_convs(false);
        lab
    });
    let (lab, direct) = match labs {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("webgpu: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "adapter: {} ({:?}); GFLOP (2 x multiply-adds) per CPU-second of this process (all threads; the adapter's and the CPU kernels' work), at least {runs} launches / calls per figure",
        lab.adapter_info().name,
        lab.adapter_info().backend
    );
    println!("gpu: the current kernels; direct: the direct reference kernels (one invocation per 4x4 / 1x4 output block); cpu: native CPU kernels, 1 thread");
    println!("{:<18} {:<46} {:>3} {:>6} | {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7}", "arch", "conv (cin>cout kxk /s groups, in HxW)", "n", "MFLOP", "fwd gpu", "direct", "cpu", "dx gpu", "direct", "cpu");
    let archs = [Arch::EfficientNetLite0, Arch::ResNet18];
    for arch in archs.into_iter().filter(|a| only.as_deref().is_none_or(|o| o == a.name())) {
        let shapes = match conv_shapes(arch, 8) {
            Ok(s) => s,
            Err(e) => {
                println!("{}: {e}", arch.name());
                continue;
            }
        };
        for (name, g, count) in shapes {
            let mut rng = synthetic::Rng::new(3);
            let x = rng.vec(g.cin * g.h * g.w, 1.0);
            let w = rng.vec(g.cout * (g.cin / g.groups) * g.kh * g.kw, 0.1);
            let b = rng.vec(g.cout, 0.1);
            let gy = rng.vec(g.cout * g.out_h() * g.out_w(), 1.0);
            let flops = conv_flops(&g);
            let gflops = |ms: Option<f64>| ms.map_or("?".to_string(), |ms| format!("{:.2}", flops / ms.max(1e-3) / 1e6));
            // Enough calls for the 10 ms ticks of the CPU clock: at least 300 ms, and `runs`.
            let cpu = |f: &dyn Fn()| {
                let t = process_cpu_ms()?;
                let mut n = 0;
                while n < runs || process_cpu_ms()? - t < 300.0 {
                    f();
                    n += 1;
                }
                Some((process_cpu_ms()? - t) / n as f64)
            };
            let reps = runs.max((1.5e9 / flops).ceil() as usize);
            let gpu = |lab: &ConvLab, forward: bool| -> String {
                let r = if forward { lab.forward(&g, &x, &w, &b, gradcam_wasm::gpu::lab::Act::None, reps) } else { lab.input_grad(&g, &gy, &w, reps) };
                r.map_or_else(|e| format!("{e}"), |r| gflops(r.cpu_ms))
            };
            let cpu_f = cpu(&|| drop(conv2d_forward(&x, &w, Some(&b), &g)));
            let cpu_b = cpu(&|| drop(conv2d_input_grad(&gy, &w, &g, None)));
            let what = format!("{name} ({}>{} {}x{} /{} g{}, {}x{})", g.cin, g.cout, g.kh, g.kw, g.stride_h, g.groups, g.h, g.w);
            println!(
                "{:<18} {what:<46} {count:>3} {:>6.1} | {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7}",
                arch.name(),
                flops / 1e6,
                gpu(&lab, true),
                gpu(&direct, true),
                gflops(cpu_f),
                gpu(&lab, false),
                gpu(&direct, false),
                gflops(cpu_b)
            );
        }
    }
}

/// `bench --gpu-profile [--arch NAME] [--runs N]`: where the WebGPU executor's Grad-CAM pass goes
/// (forward, then the backward to the default layer), by kernel, each launch timed alone (see
/// `GpuExecutor::profile`), at the model's input size.
#[cfg(all(not(target_arch = "wasm32"), feature = "webgpu"))]
fn gpu_profile(args: &[String]) {
    use gradcam_wasm::gpu::GpuExecutor;
    let runs: usize = flag(args, "--runs").and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let name = flag(args, "--arch").unwrap_or_else(|| "efficientnet_lite0".into());
    let Some(arch) = gradcam_wasm::arch::ALL.iter().copied().find(|a| a.name() == name) else {
        eprintln!("unknown --arch {name}");
        std::process::exit(2);
    };
    let result = (|| -> Result<_, String> {
        let bytes = model_bytes(arch).ok_or("default model missing: run scripts/setup.sh")?;
        let model = gradcam_wasm::Model::from_bytes(&bytes, Some(arch)).map_err(|e| e.to_string())?;
        let layer = model.graph.find(&model.default_layer()).map_err(|e| e.to_string())?;
        let gpu = GpuExecutor::new(model.graph.clone()).map_err(|e| e.to_string())?;
        println!("{} 224x224 on {} ({:?}), ms per pass (each launch alone, {runs} times)", arch.name(), gpu.adapter_info().name, gpu.adapter_info().backend);
        gpu.profile(224, 224, layer, runs).map_err(|e| e.to_string())
    })();
    match result {
        Ok(rows) => {
            println!("{:<48} {:>8} {:>9} {:>9}", "kernel", "launches", "wall ms", "cpu ms");
            for r in rows {
                println!("{:<48} {:>8} {:>9.1} {:>9.1}", r.what, r.launches, r.ms, r.cpu_ms);
            }
        }
        Err(e) => {
            eprintln!("webgpu: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(all(not(target_arch = "wasm32"), not(feature = "webgpu")))]
fn gpu_profile(_: &[String]) {
    eprintln!("--gpu-profile needs a bench built with --features webgpu");
}

#[cfg(all(not(target_arch = "wasm32"), not(feature = "webgpu")))]
fn gpu_conv_shapes(_: &[String]) {
    eprintln!("--gpu-conv-shapes needs a bench built with --features webgpu");
    std::process::exit(2);
}
