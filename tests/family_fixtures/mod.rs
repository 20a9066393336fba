//! The PyTorch references under tests/fixtures/families/<name>/ (written by
//! scripts/gen-family-fixtures.py) and the checks that tests/families.rs (state dicts) and
//! tests/families_onnx.rs (ONNX exports) run against them: logits and each layer's activation and raw
//! Grad-CAM map within relative 1e-3 (max |ours - torch| / max |torch|), input gradients (plain, and
//! guided where the reference has one) with cosine similarity >= 0.999.
//!
//! `FAMILIES=resnet18,densenet cargo test --test families -- --nocapture` runs a subset and prints
//! the table; `FAMILY_FIXTURES=DIR` reads the fixtures from DIR instead.
#![allow(dead_code)]

use gradcam_wasm::exec::{cpu::CpuExecutor, Executor};
use gradcam_wasm::methods::guided;
use gradcam_wasm::{ExplainOptions, Explainer, FeatureMap, Method, Model, Normalization, Target};
use safetensors::tensor::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

pub const REL_TOL: f32 = 1e-3;
pub const MIN_COSINE: f64 = 0.999;

pub struct Fixture {
    pub name: String,
    pub dir: PathBuf,
    pub meta: Value,
    refs: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Fixture {
    pub fn read(&self, file: &str) -> Result<Vec<u8>, String> {
        let p = self.dir.join(file);
        std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
    }

    pub fn read_optional(&self, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(file)).ok()
    }

    pub fn tensor(&self, key: &str) -> Option<&(Vec<usize>, Vec<f32>)> {
        self.refs.get(key)
    }

    fn must(&self, key: &str) -> &(Vec<usize>, Vec<f32>) {
        self.refs.get(key).unwrap_or_else(|| panic!("{}: ref.safetensors has no '{key}'", self.name))
    }

    pub fn input(&self) -> FeatureMap {
        let (shape, data) = self.must("input");
        assert_eq!(shape.len(), 4, "{}: input shape {shape:?}", self.name);
        FeatureMap::new(shape[1], shape[2], shape[3], data.clone())
    }

    pub fn default_layer(&self) -> &str {
        self.meta["default_layer"].as_str().expect("meta.json: default_layer")
    }

    /// (module path, ONNX tensor name, key of its tensors in ref.safetensors)
    pub fn layers(&self) -> Vec<(String, Option<String>, String)> {
        self.meta["layers"]
            .as_array()
            .expect("meta.json: layers")
            .iter()
            .map(|l| (l["name"].as_str().unwrap().to_string(), l["onnx_tensor"].as_str().map(String::from), l["key"].as_str().unwrap().to_string()))
            .collect()
    }
}

/// tests/fixtures/families, or $FAMILY_FIXTURES (fixtures the generator wrote elsewhere with --out).
pub fn fixture_root() -> PathBuf {
    std::env::var_os("FAMILY_FIXTURES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families"))
}

/// Every fixture directory, sorted by name; `FAMILIES=a,b` keeps only those.
pub fn fixtures() -> Vec<Fixture> {
    let only: Option<Vec<String>> = std::env::var("FAMILIES").ok().map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(fixture_root()).unwrap_or_else(|e| panic!("{}: {e}", fixture_root().display())).filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("meta.json").exists()).collect();
    dirs.sort();
    let all: Vec<Fixture> = dirs.into_iter().map(load_fixture).collect();
    match only {
        Some(names) => {
            for n in &names {
                assert!(all.iter().any(|f| &f.name == n), "FAMILIES names '{n}', which has no fixture");
            }
            all.into_iter().filter(|f| names.contains(&f.name)).collect()
        }
        None => all,
    }
}

fn load_fixture(dir: PathBuf) -> Fixture {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let meta: Value = serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap_or_else(|e| panic!("{name}/meta.json: {e}"));
    let bytes = std::fs::read(dir.join("ref.safetensors")).unwrap_or_else(|e| panic!("{name}/ref.safetensors: {e}"));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{name}/ref.safetensors: {e}"));
    let mut refs = HashMap::new();
    for (key, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32, "{name}/ref.safetensors: {key} is not f32");
        let data: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        refs.insert(key, (view.shape().to_vec(), data));
    }
    Fixture { name, dir, meta, refs }
}

/// max |a - b| / max |reference|; the absolute difference if the reference is all zero.
pub fn rel_error(a: &[f32], reference: &[f32]) -> f32 {
    if a.len() != reference.len() {
        return f32::INFINITY;
    }
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(reference).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    if scale > 0.0 {
        diff / scale
    } else {
        diff
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        dot / (na * nb)
    }
}

/// Which file the model came from: a state dict names its architecture, an ONNX graph is `onnx`
/// and may name a layer by its module path or by the ONNX tensor holding its output.
#[derive(Clone, Copy, PartialEq)]
pub enum Source {
    StateDict,
    Onnx,
}

/// One family's results: a row of the printed table, and what failed.
pub struct Report {
    pub family: String,
    pub cells: Vec<(String, String)>,
    pub failures: Vec<String>,
}

impl Report {
    fn new(family: &str) -> Report {
        Report { family: family.to_string(), cells: Vec::new(), failures: Vec::new() }
    }
    fn cell(&mut self, col: &str, val: String) {
        self.cells.push((col.to_string(), val));
    }
    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }
    fn err(&mut self, col: &str, err: f32) {
        self.cell(col, format!("{err:.1e}"));
        if err.is_nan() || err > REL_TOL {
            self.fail(format!("{col}: relative error {err:.2e} > {REL_TOL:e}"));
        }
    }
    fn cos(&mut self, col: &str, c: f64) {
        self.cell(col, format!("{c:.6}"));
        if c.is_nan() || c < MIN_COSINE {
            self.fail(format!("{col}: cosine similarity {c:.6} < {MIN_COSINE}"));
        }
    }
}

/// Runs every check on one fixture with a loaded model.
pub fn check(fx: &Fixture, model: Model, source: Source) -> Report {
    let mut r = Report::new(&fx.name);
    let want_arch = match source {
        Source::StateDict => fx.meta["arch"].as_str().unwrap().to_string(),
        Source::Onnx => "onnx".to_string(),
    };
    r.cell("arch", model.arch.name().to_string());
    if model.arch.name() != want_arch {
        r.fail(format!("detected arch '{}', expected '{want_arch}'", model.arch.name()));
    }
    let graph = model.graph.clone();
    let default = model.default_layer();
    r.cell("default layer", default.clone());
    let default_ok = match source {
        Source::StateDict => default == fx.default_layer(),
        // An imported graph may show the layer by another of its names: it must be the same node.
        Source::Onnx => {
            let node = graph.find(&default).ok();
            let by_path = graph.find(fx.default_layer()).ok();
            let by_tensor = fx.layers()[0].1.as_deref().and_then(|t| graph.find(t).ok());
            node.is_some() && (node == by_path || node == by_tensor)
        }
    };
    if !default_ok {
        r.fail(format!("default layer '{default}', expected '{}'", fx.default_layer()));
    }

    let input = fx.input();
    let (_, ref_logits) = fx.must("logits");
    let top1 = fx.meta["top1"].as_u64().unwrap() as usize;
    let mut target = vec![0.0f32; ref_logits.len()];
    if top1 < target.len() {
        target[top1] = 1.0;
    }

    // Resolve the layers: by module path; for ONNX also by tensor name (both must be the same node).
    let mut layers: Vec<(String, String, usize)> = Vec::new(); // (shown name, key, node)
    for (path, tensor, key) in fx.layers() {
        let by_path = graph.find(&path).ok();
        let by_tensor = if source == Source::Onnx { tensor.as_deref().and_then(|t| graph.find(t).ok()) } else { None };
        match (by_path, by_tensor) {
            (Some(p), Some(t)) if p != t => r.fail(format!("layer '{path}' and ONNX tensor '{}' are different nodes", tensor.clone().unwrap_or_default())),
            (Some(_), None) if source == Source::Onnx && tensor.is_some() => r.fail(format!("ONNX tensor '{}' is not a layer name", tensor.clone().unwrap_or_default())),
            (None, _) => r.fail(format!("layer '{path}' not found")),
            _ => {}
        }
        match by_path.map(|n| (path.clone(), n)).or_else(|| by_tensor.map(|n| (tensor.clone().unwrap(), n))) {
            Some((name, node)) => layers.push((name, key, node)),
            None => r.cell(&format!("{key} ({path})"), "missing".into()),
        }
    }

    // Logits and input gradients from the executor (the same pass the explainer runs).
    let exec = CpuExecutor::new(graph.clone());
    let first = layers.first().map(|l| l.2).or_else(|| graph.pooled_layer()).unwrap_or(0);
    match exec.start(input.clone(), first) {
        Err(e) => r.fail(format!("forward pass failed: {e}")),
        Ok(mut pass) => {
            r.err("logits", rel_error(pass.logits(), ref_logits));
            match pass.input_gradient(&target, gradcam_wasm::exec::ReluRule::Plain) {
                Ok(g) => r.cos("grad cos", cosine(&g.data, &fx.must("input_gradient").1)),
                Err(e) => r.fail(format!("input gradient failed: {e}")),
            }
            if let Some((_, want)) = fx.tensor("guided_input_gradient") {
                match pass.input_gradient(&target, gradcam_wasm::exec::ReluRule::Guided) {
                    Ok(g) => r.cos("guided cos", cosine(&g.data, want)),
                    Err(e) => r.fail(format!("guided input gradient failed: {e}")),
                }
            }
        }
    }

    // Activations (executor) and raw Grad-CAM maps (public explainer path) at each layer.
    let mut ex = Explainer::new(model);
    for (name, key, node) in &layers {
        let (act_shape, act_ref) = fx.must(&format!("{key}.activation"));
        match exec.start(input.clone(), *node) {
            Ok(pass) => {
                let a = pass.activations();
                if [a.channels, a.height, a.width] != act_shape[1..] {
                    r.fail(format!("{name}: activation is {}x{}x{}, torch's {:?}", a.channels, a.height, a.width, &act_shape[1..]));
                    r.cell(&format!("{key} act"), "shape".into());
                } else {
                    r.err(&format!("{key} act"), rel_error(&a.data, act_ref));
                }
            }
            Err(e) => r.fail(format!("{name}: forward failed: {e}")),
        }
        let (cam_shape, cam_ref) = fx.must(&format!("{key}.cam"));
        let opts = ExplainOptions { method: Method::GRAD_CAM, layer: Some(name.clone()), target: Target::Top1, normalization: Normalization::Raw, ..Default::default() };
        match ex.explain_tensor(input.clone(), &opts) {
            Ok(e) => {
                if e.class != top1 {
                    r.fail(format!("{name}: top-1 class {} ({}), torch's {top1}", e.class, e.label));
                }
                if [e.raw.height, e.raw.width] != cam_shape[..] {
                    r.fail(format!("{name}: Grad-CAM map is {}x{}, torch's {:?}", e.raw.height, e.raw.width, cam_shape));
                    r.cell(&format!("{key} cam"), "shape".into());
                } else {
                    r.err(&format!("{key} cam"), rel_error(&e.raw.data, cam_ref));
                }
            }
            Err(e) => r.fail(format!("{name}: Grad-CAM failed: {e}")),
        }
    }
    // Guided backprop through the public method: its map is the per-pixel max |gradient| over RGB.
    if let Some((shape, want)) = fx.tensor("guided_input_gradient") {
        let opts = ExplainOptions { method: Method::GUIDED_BACKPROP, target: Target::Top1, normalization: Normalization::Raw, ..Default::default() };
        match ex.explain_tensor(input.clone(), &opts) {
            Ok(e) => {
                let want = guided::magnitude(&FeatureMap::new(shape[1], shape[2], shape[3], want.clone()));
                r.cos("guided map cos", cosine(&e.raw.data, &want.data));
            }
            Err(e) => r.fail(format!("guided backprop failed: {e}")),
        }
    }
    r
}

/// Loads and checks every fixture, prints one table row per family (`-- --nocapture` shows it) and
/// fails listing every family that does not match PyTorch.
pub fn run_all(what: &str, source: Source, load: impl Fn(&Fixture) -> Result<Model, String>) {
    let fixtures = fixtures();
    assert!(!fixtures.is_empty(), "no fixtures under {}", fixture_root().display());
    let mut failed: Vec<(String, Vec<String>)> = Vec::new();
    let mut passed = Vec::new();
    println!("PyTorch parity, {what}: relative errors (max |diff| / max |torch|, limit {REL_TOL:e}) and cosines (limit {MIN_COSINE})");
    for fx in &fixtures {
        let t0 = std::time::Instant::now();
        let report = match load(fx) {
            Ok(model) => check(fx, model, source),
            Err(e) => {
                let mut r = Report::new(&fx.name);
                r.fail(format!("does not load: {e}"));
                r
            }
        };
        let row: Vec<String> = report.cells.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let status = if report.failures.is_empty() { "ok  " } else { "FAIL" };
        println!("{status} {:<20} {} ({:.1} s)", report.family, row.join(" | "), t0.elapsed().as_secs_f64());
        for f in &report.failures {
            println!("       - {f}");
        }
        if report.failures.is_empty() {
            passed.push(report.family);
        } else {
            failed.push((report.family, report.failures));
        }
    }
    println!("{what}: {} of {} families match PyTorch: {}", passed.len(), fixtures.len(), passed.join(", "));
    if !failed.is_empty() {
        let lines: Vec<String> = failed.iter().map(|(f, why)| format!("{f}: {}", why.join("; "))).collect();
        panic!("{} of {} families differ from PyTorch ({what}):\n{}", failed.len(), fixtures.len(), lines.join("\n"));
    }
}
