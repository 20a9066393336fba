//! wasm entry points for scripts/wasm-bench.sh: the same measurements as `src/bin/bench.rs`,
//! plus the per-op profile of the CPU executor, returned as JSON text.

use gradcam_wasm::clock::now_ms;
use gradcam_wasm::exec::cpu::{Checkpoint, CpuExecutor};
use gradcam_wasm::exec::Executor;
use gradcam_wasm::kernels::Tuning;
use gradcam_wasm::profile;
use gradcam_wasm::{synthetic, Arch, ExplainOptions, Explainer, FeatureMap, Method, Model, Target};
use std::cell::Cell;
use wasm_bindgen::prelude::*;

/// Counts live heap bytes (and their peak) so `peak_memory` can tell fragmentation from use.
#[path = "../../../tests/common/peak_allocator.rs"]
mod peak_allocator;

#[global_allocator]
static ALLOC: peak_allocator::Counting = peak_allocator::Counting;

thread_local! {
    /// The kernels' switches the A/B exports below set, for every explainer made after.
    static TUNING: Cell<Tuning> = const { Cell::new(Tuning::DEFAULT) };
}

fn tuning() -> Tuning {
    TUNING.with(Cell::get)
}

fn set_tuning(f: impl FnOnce(&mut Tuning)) {
    let mut t = tuning();
    f(&mut t);
    TUNING.with(|c| c.set(t));
}

/// An explainer on the CPU executor with the current switches.
fn explainer(model: Model) -> Explainer {
    let executor = CpuExecutor::new(model.graph.clone()).with_tuning(tuning());
    Explainer::with_executor(model, Box::new(executor))
}

fn peak_live_mb() -> f64 {
    peak_allocator::peak() as f64 / 1048576.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times load, forward, Grad-CAM, a 2nd class, Guided Grad-CAM and Guided Backprop on a fresh image
/// each run. `model` may be empty: then synthetic weights of `arch` are used.
#[wasm_bindgen]
pub fn bench(arch: &str, model: &[u8], runs: u32) -> String {
    let arch = Arch::from_name(arch).expect("arch");
    let bytes = if model.is_empty() { synthetic::state_dict(arch, 1000).expect("synthetic").bytes() } else { model.to_vec() };
    let mem = || core::arch::wasm32::memory_size(0) as f64 * 65536.0 / 1048576.0;
    let mem_bytes = mem();
    let t = now_ms();
    let m = Model::from_bytes(&bytes, Some(arch)).expect("model loads");
    let load = now_ms() - t;
    let weights_mb = m.graph.parameter_count() as f64 * 4.0 / 1048576.0;
    let mem_loaded = mem();
    // Ready to explain: model parse + first Grad-CAM (the bytes already in wasm memory).
    let first = {
        let mut ex = explainer(Model::from_bytes(&bytes, Some(arch)).expect("model loads"));
        let t = now_ms();
        let input = FeatureMap::new(3, 224, 224, synthetic::Rng::new(7).vec(3 * 224 * 224, 1.5));
        ex.explain_tensor(input, &ExplainOptions::default()).expect("gradcam");
        now_ms() - t + load
    };
    let mem_first = mem();
    let exec = CpuExecutor::new(m.graph.clone()).with_tuning(tuning());
    // The same model without checkpoints: what the recompute of the checkpoint segments costs.
    let unsplit = Box::new(CpuExecutor::new(m.graph.clone()).with_checkpoint(Checkpoint::Off).with_tuning(tuning()));
    let mut ex_unsplit = Explainer::with_executor(Model::from_bytes(&bytes, Some(arch)).expect("model loads"), unsplit);
    let mut ggc_unsplit = vec![];
    let mut ex = explainer(m);
    let mut rng = synthetic::Rng::new(1);
    let (mut fwd, mut gc, mut second, mut ggc, mut gbp) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let input = FeatureMap::new(3, 224, 224, rng.vec(3 * 224 * 224, 1.5));
        let t = now_ms();
        exec.logits_batch(&input.data, 1, 224, 224).expect("forward");
        fwd.push(now_ms() - t);
        let e = ex.explain_tensor(input.clone(), &ExplainOptions::default()).expect("gradcam");
        gc.push(e.timings.total_ms);
        let other = ExplainOptions { target: Target::Class((e.class + 1) % 1000), ..Default::default() };
        second.push(ex.explain_tensor(input.clone(), &other).expect("2nd").timings.total_ms);
        let input2 = FeatureMap::new(3, 224, 224, rng.vec(3 * 224 * 224, 1.5));
        let g = ExplainOptions { method: Method::GUIDED_GRAD_CAM, ..Default::default() };
        ggc.push(ex.explain_tensor(input2.clone(), &g).expect("ggc").timings.total_ms);
        let input3 = FeatureMap::new(3, 224, 224, rng.vec(3 * 224 * 224, 1.5));
        let g = ExplainOptions { method: Method::GUIDED_BACKPROP, ..Default::default() };
        gbp.push(ex.explain_tensor(input3, &g).expect("gbp").timings.total_ms);
        let input4 = FeatureMap::new(3, 224, 224, rng.vec(3 * 224 * 224, 1.5));
        let g = ExplainOptions { method: Method::GUIDED_GRAD_CAM, ..Default::default() };
        ggc_unsplit.push(ex_unsplit.explain_tensor(input4, &g).expect("ggc").timings.total_ms);
    }
    drop(bytes);
    let mem_end = mem();
    // One profiled Grad-CAM + Guided Grad-CAM on a new image.
    let input = FeatureMap::new(3, 224, 224, rng.vec(3 * 224 * 224, 1.5));
    profile::enable(true);
    ex.explain_tensor(input.clone(), &ExplainOptions::default()).expect("gradcam");
    let p_gc = profile::take();
    ex.explain_tensor(input, &ExplainOptions { method: Method::GUIDED_GRAD_CAM, ..Default::default() }).expect("ggc");
    let p_ggc = profile::take();
    profile::enable(false);
    let prof = |p: Vec<(String, f64, usize)>| p.iter().map(|(k, ms, n)| format!("{{\"op\":\"{k}\",\"ms\":{ms:.3},\"calls\":{n}}}")).collect::<Vec<_>>().join(",");
    format!(
        "{{\"arch\":\"{}\",\"load_ms\":{load:.1},\"ready_ms\":{first:.1},\"weights_f32_mb\":{weights_mb:.1},\"wasm_mem_mb\":[{mem_bytes:.0},{mem_loaded:.0},{mem_first:.0},{mem_end:.0}],\"forward_ms\":{:.2},\"gradcam_ms\":{:.2},\"second_class_ms\":{:.2},\"guided_gradcam_ms\":{:.2},\"guided_backprop_ms\":{:.2},\"guided_gradcam_without_checkpoints_ms\":{:.2},\"profile_gradcam\":[{}],\"profile_guided_gradcam_after\":[{}]}}",
        arch.name(),
        median(fwd),
        median(gc),
        median(second),
        median(ggc),
        median(gbp),
        median(ggc_unsplit),
        prof(p_gc),
        prof(p_ggc)
    )
}

/// Peak wasm memory (MB) of the browser's flow, for a fresh instance: the file's bytes copied in,
/// the model parsed and the bytes dropped (as `new Explainer` does), then Grad-CAM and Guided
/// Grad-CAM of one image. wasm memory never shrinks, so its final size is the peak.
/// Returns (memory at entry with the bytes in, after parsing, after explaining, f32 weight MB) as JSON.
#[wasm_bindgen]
pub fn peak_memory(arch: &str, model: Vec<u8>) -> String {
    let mem = || core::arch::wasm32::memory_size(0) as f64 * 65536.0 / 1048576.0;
    let arch = Arch::from_name(arch).expect("arch");
    let entry = mem();
    let m = Model::from_bytes(&model, Some(arch)).expect("model loads");
    drop(model);
    let weights = m.graph.parameter_count() as f64 * 4.0 / 1048576.0;
    let parsed = mem();
    let parsed_live = peak_live_mb();
    let mut ex = explainer(m);
    let input = FeatureMap::new(3, 224, 224, synthetic::Rng::new(7).vec(3 * 224 * 224, 1.5));
    ex.explain_tensor(input.clone(), &ExplainOptions::default()).expect("gradcam");
    ex.explain_tensor(input, &ExplainOptions { method: Method::GUIDED_GRAD_CAM, ..Default::default() }).expect("ggc");
    format!(
        "{{\"entry_mb\":{entry:.1},\"parsed_mb\":{parsed:.1},\"explained_mb\":{:.1},\"weights_f32_mb\":{weights:.1},\"limit_mb\":{:.1},\"peak_live_heap_mb\":{{\"parsing\":{parsed_live:.1},\"explaining\":{:.1}}}}}",
        mem(),
        4.0 * weights,
        peak_live_mb()
    )
}

/// A/B: route wasm32 matrix products through the `gemm` crate (true) or our own kernel (false).
#[wasm_bindgen]
pub fn use_gemm_crate(on: bool) {
    set_tuning(|t| t.gemm_crate_on_wasm = on);
}

/// A/B: send 3x3 stride-1 convs through im2col + GEMM (false) instead of Winograd (true, the default).
#[wasm_bindgen]
pub fn use_winograd(on: bool) {
    set_tuning(|t| t.winograd = on);
}

/// A/B: read A in place in our GEMM (true, the default) or always pack it (false).
#[wasm_bindgen]
pub fn use_a_in_place(on: bool) {
    set_tuning(|t| t.a_in_place = on);
}

/// A/B: keep F(2x2)'s transformed weights between calls (true, the default) or transform per call.
#[wasm_bindgen]
pub fn use_kept(on: bool) {
    set_tuning(|t| t.keep_transformed_weights = on);
}

/// Synthetic weights of `arch` as safetensors bytes, f16 (as the browser benchmark ships them) or
/// f32 (for `peak_memory` on models we do not ship). Call it in another instance than `peak_memory`:
/// building them grows this instance's memory.
#[wasm_bindgen]
pub fn synthetic_bytes(arch: &str, f16: bool) -> Vec<u8> {
    use gradcam_wasm::weights::safetensors_writer::{write_safetensors, StoreAs};
    let sd = synthetic::state_dict(Arch::from_name(arch).expect("arch"), 1000).expect("synthetic");
    write_safetensors(&sd.tensors, if f16 { StoreAs::F16 } else { StoreAs::F32 }, &[]).expect("safetensors")
}

/// GEMM throughput (GFLOP/s, median of `reps`) of an `m x n x k` product, B row-major (`b_trans`
/// false) or transposed: `GEMM=1 node scripts/wasm-bench.mjs` prints a table of shapes.
#[wasm_bindgen]
pub fn gemm_gflops(m: usize, n: usize, k: usize, a_trans: bool, cold: bool, reps: usize) -> f64 {
    use gradcam_wasm::kernels::{matmul, MatRef};
    // Cold: A is one of copies that together outgrow the last-level cache, as a Winograd layer's
    // kept weights do, so that every product reads its A from memory.
    let copies = if cold { (64 << 20) / (4 * m * k) + 1 } else { 1 };
    let a: Vec<f32> = (0..copies * m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; m * n];
    let times: Vec<f64> = (0..reps)
        .map(|r| {
            let a = &a[(r % copies) * m * k..][..m * k];
            let am = if a_trans { MatRef::new(a, m).t() } else { MatRef::new(a, k) };
            let t = now_ms();
            gradcam_wasm::kernels::tuning::scoped(tuning(), || matmul(m, n, k, am, MatRef::new(&b, n), &mut c, n, false));
            now_ms() - t
        })
        .collect();
    2.0 * (m * n * k) as f64 / median(times) / 1e6
}

/// A/B: take a batch's images side by side as the columns of one product (true, the default) where
/// a conv's output plane is small, or one product per image.
#[wasm_bindgen]
pub fn use_batch_columns(on: bool) {
    set_tuning(|t| t.batch_columns = on);
}

/// Model bytes for `arch`: the given file, or synthetic weights when it is empty.
fn model_of(arch: Arch, model: &[u8]) -> Model {
    let bytes = if model.is_empty() { synthetic::state_dict(arch, 1000).expect("synthetic").bytes() } else { model.to_vec() };
    Model::from_bytes(&bytes, Some(arch)).expect("model loads")
}

thread_local! {
    /// `batch_setup`'s executor and its batch of inputs, which `batch_run` forwards.
    static BATCH: std::cell::RefCell<Option<(CpuExecutor, Vec<f32>, usize)>> = const { std::cell::RefCell::new(None) };
}

/// Prepares `batch_run`: an executor of `arch` with the current switches and `n` inputs, run once.
#[wasm_bindgen]
pub fn batch_setup(arch: &str, model: &[u8], n: usize) {
    let m = model_of(Arch::from_name(arch).expect("arch"), model);
    let exec = CpuExecutor::new(m.graph.clone()).with_tuning(tuning());
    let x = synthetic::Rng::new(3).vec(n * 3 * 224 * 224, 1.5);
    exec.logits_batch(&x, n, 224, 224).expect("forward");
    BATCH.with(|b| *b.borrow_mut() = Some((exec, x, n)));
}

/// One `logits_batch` of `batch_setup`'s inputs (the caller times it, wall and CPU).
#[wasm_bindgen]
pub fn batch_run() {
    BATCH.with(|b| {
        let b = b.borrow();
        let (exec, x, n) = b.as_ref().expect("batch_setup first");
        exec.logits_batch(x, *n, 224, 224).expect("forward");
    });
}

/// Seconds of Score-CAM over `channels` channels and of deletion + insertion (100 steps each) of a
/// Grad-CAM, `batch` inputs per forward (0: the executor's default), as JSON.
#[wasm_bindgen]
pub fn batched_methods(arch: &str, model: &[u8], channels: usize, batch: usize) -> String {
    use gradcam_wasm::eval::faithfulness::{faithfulness, CurveOptions};
    use gradcam_wasm::imaging::rgb::RgbImage;
    let mut ex = explainer(model_of(Arch::from_name(arch).expect("arch"), model));
    let batch = (batch > 0).then_some(batch);
    let data = synthetic::Rng::new(5).vec(224 * 224 * 3, 1.0).iter().map(|v| ((v + 1.0) * 127.0) as u8).collect();
    let image = RgbImage { width: 224, height: 224, data };
    let mut score = ExplainOptions { method: Method::SCORE_CAM, ..Default::default() };
    score.score_cam.max_channels = Some(channels);
    score.score_cam.batch = batch;
    let t = now_ms();
    ex.explain(&image, &score).expect("score-cam");
    let score_s = (now_ms() - t) / 1e3;
    let gc = ExplainOptions::default();
    let e = ex.explain(&image, &gc).expect("gradcam");
    let t = now_ms();
    faithfulness(&ex, &image, &e, &gc, &CurveOptions { batch, ..Default::default() }).expect("curves");
    let curves_s = (now_ms() - t) / 1e3;
    format!("{{\"scorecam_s\":{score_s:.2},\"deletion_insertion_s\":{curves_s:.2}}}")
}

/// The per-op profile of one `logits_batch` of `n` images (after a warm-up), one line per op.
#[wasm_bindgen]
pub fn batch_profile(arch: &str, model: &[u8], n: usize) -> String {
    let m = model_of(Arch::from_name(arch).expect("arch"), model);
    let exec = CpuExecutor::new(m.graph.clone()).with_tuning(tuning());
    let x = synthetic::Rng::new(3).vec(n * 3 * 224 * 224, 1.5);
    exec.logits_batch(&x, n, 224, 224).expect("forward");
    profile::enable(true);
    exec.logits_batch(&x, n, 224, 224).expect("forward");
    let mut p = profile::take();
    profile::enable(false);
    p.sort_by(|a, b| b.1.total_cmp(&a.1));
    p.iter().map(|(k, ms, calls)| format!("{k}: {:.2} ms/image, {calls} calls", ms / n as f64)).collect::<Vec<_>>().join("\n")
}

/// MB of live heap one `logits_batch` of `batch_setup`'s inputs peaks at above what it starts with.
#[wasm_bindgen]
pub fn batch_peak_mb() -> f64 {
    let before = peak_allocator::live();
    peak_allocator::reset_peak();
    batch_run();
    (peak_allocator::peak() - before) as f64 / 1048576.0
}

/// ms (median of `reps`) of ResNet's stem max pool (3x3, stride 2, pad 1) on 64 x 112 x 112: the value
/// (`argmax` false, the forward) or value and argmax (true, what the backward recomputes).
#[wasm_bindgen]
pub fn maxpool_ms(argmax: bool, reps: usize) -> f64 {
    use gradcam_wasm::kernels::{max_pool2d_forward, max_pool2d_forward_argmax, PoolGeom};
    let g = PoolGeom { n: 1, c: 64, h: 112, w: 112, kh: 3, kw: 3, stride_h: 2, stride_w: 2, pad_h: 1, pad_w: 1, ceil_mode: false };
    let x: Vec<f32> = (0..64 * 112 * 112).map(|i| ((i * 7919) % 1000) as f32 * 0.001).collect();
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = now_ms();
            let n = if argmax { max_pool2d_forward_argmax(&x, &g).0.len() } else { max_pool2d_forward(&x, &g).len() };
            assert_eq!(n, 64 * 56 * 56);
            now_ms() - t
        })
        .collect();
    median(times)
}

thread_local! {
    /// `method_setup`'s explainer, and the generator of the images `method_ms` explains.
    static METHOD: std::cell::RefCell<Option<(Explainer, synthetic::Rng)>> = const { std::cell::RefCell::new(None) };
}

/// Prepares `method_ms`: an explainer of `arch` (synthetic weights unless `model` is given).
/// `scripts/wasm-ab.mjs` calls it in two builds loaded side by side.
#[wasm_bindgen]
pub fn method_setup(arch: &str, model: &[u8]) {
    let arch = Arch::from_name(arch).expect("arch");
    METHOD.with(|m| *m.borrow_mut() = Some((explainer(model_of(arch, model)), synthetic::Rng::new(3))));
}

/// Milliseconds of one explanation by `method` (a `Method` name, e.g. "guided-gradcam") of a new
/// synthetic image (a new one each call: the explainer would reuse the forward of the last).
#[wasm_bindgen]
pub fn method_ms(method: &str) -> f64 {
    let method = Method::from_name(method).expect("method");
    METHOD.with(|m| {
        let mut m = m.borrow_mut();
        let (ex, rng) = m.as_mut().expect("method_setup first");
        let input = FeatureMap::new(3, 224, 224, rng.vec(3 * 224 * 224, 1.5));
        let t = now_ms();
        ex.explain_tensor(input, &ExplainOptions { method, ..Default::default() }).expect("explains");
        now_ms() - t
    })
}
