//! The results every front end reports, as one set of serde types: the JS API (through
//! `serde-wasm-bindgen`, src/wasm.rs), the worker's result messages (which pass these objects on) and
//! the CLI's `--json` (through `serde_json`, src/bin/gradcam.rs) all serialize these, in one
//! vocabulary (camelCase: `classIdx`, `logit`, `raw`). The TypeScript declarations of the package
//! (www/types/results.d.ts, included in pkg/gradcam_wasm.d.ts) are generated from the same types by
//! the test at the bottom (ts-rs), which fails when the committed file differs, with the names JS
//! may pass (`MethodName`, `Colormap`) from the Rust lists; the option keys are listed here too.
//!
//! Large buffers stay typed arrays in JS: [`Floats`] serializes as a `Float32Array` on wasm32 (through
//! `serde_wasm_bindgen::preserve`, so only serde-wasm-bindgen may serialize it there) and as a list of
//! numbers elsewhere.

use crate::eval::faithfulness::{ConfidenceChange, Curve, Faithfulness};
use crate::eval::localization::BoundingBox;
use crate::eval::road::Road;
use crate::explainer::{LayerInfo, Prediction, Timings};
use crate::imaging::preprocess::Geometry;
use crate::Explanation;
use serde::Serialize;

/// f32 values: a `Float32Array` in JS, a list of numbers in JSON.
#[derive(Clone, Copy, Debug)]
pub struct Floats<'a>(pub &'a [f32]);

impl Serialize for Floats<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[cfg(target_arch = "wasm32")]
        {
            serde_wasm_bindgen::preserve::serialize(&js_sys::Float32Array::from(self.0), s)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            s.collect_seq(self.0)
        }
    }
}

/// The timings of one explanation, in milliseconds.
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(test, ts(rename = "Timings"))]
#[serde(rename_all = "camelCase")]
pub struct TimingsResult {
    pub preprocess_ms: f64,
    pub forward_ms: f64,
    pub method_ms: f64,
    pub project_ms: f64,
    pub total_ms: f64,
    /// the forward pass of the previous call (same image, layer and preprocessing) was reused
    pub forward_reused: bool,
}

impl TimingsResult {
    fn of(t: &Timings, forward_reused: bool) -> TimingsResult {
        TimingsResult { preprocess_ms: t.preprocess_ms, forward_ms: t.forward_ms, method_ms: t.method_ms, project_ms: t.project_ms, total_ms: t.total_ms, forward_reused }
    }
}

/// How the network input was cut from the image: input pixel (x, y) is image pixel
/// ((x + offsetX) / scaleX, (y + offsetY) / scaleY).
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(test, ts(rename = "Geometry"))]
#[serde(rename_all = "camelCase")]
pub struct GeometryResult {
    pub scale_x: f64,
    pub scale_y: f64,
    pub offset_x: f64,
    pub offset_y: f64,
    pub input_width: usize,
    pub input_height: usize,
    /// the image's size
    pub width: usize,
    pub height: usize,
}

impl GeometryResult {
    pub fn of(g: &Geometry) -> GeometryResult {
        GeometryResult { scale_x: g.scale_x, scale_y: g.scale_y, offset_x: g.offset_x, offset_y: g.offset_y, input_width: g.input_w, input_height: g.input_h, width: g.orig_w, height: g.orig_h }
    }
}

/// The network input's rectangle on the original image, in (fractional) image pixels.
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Crop {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl Crop {
    pub fn of(g: &Geometry) -> Crop {
        let (x, y) = (g.orig_x(0.0), g.orig_y(0.0));
        Crop { x, y, width: g.orig_x(g.input_w as f64) - x, height: g.orig_y(g.input_h as f64) - y }
    }
}

/// One explanation (`explain`, `explainAsync`, the client's `explain`, the CLI's `explain --json`).
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(test, ts(rename = "ExplainResultData"))]
#[serde(rename_all = "camelCase")]
pub struct ExplainResult<'a> {
    /// the map on the image's pixels, width x height, row-major (left out by the CLI, which writes it with --out)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(type = "Float32Array"))]
    pub heatmap: Option<Floats<'a>>,
    pub width: usize,
    pub height: usize,
    /// the map on its own grid (the layer's, or the network input's), rawWidth x rawHeight
    #[cfg_attr(test, ts(type = "Float32Array"))]
    pub raw: Floats<'a>,
    pub raw_width: usize,
    pub raw_height: usize,
    /// the explained class (for a weighted target: its heaviest class)
    pub class_idx: usize,
    pub label: &'a str,
    /// the explained score: the class's logit (for a weighted target, the weighted sum of logits)
    pub logit: f32,
    pub probability: f32,
    pub method: &'static str,
    pub method_label: &'static str,
    pub layer: &'a str,
    pub top5: &'a [Prediction],
    pub timings: TimingsResult,
    /// the executor that ran this explanation's forward and backward passes
    #[cfg_attr(test, ts(type = "'cpu' | 'webgpu'"))]
    pub backend: &'static str,
    pub warnings: &'a [String],
    pub geometry: GeometryResult,
    pub crop: Crop,
    pub forward_reused: bool,
    /// guided methods only: the gradient as RGB in [0, 1], 3 x rgbHeight x rgbWidth (network input grid)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(type = "Float32Array", optional))]
    pub rgb: Option<Floats<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub rgb_width: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub rgb_height: Option<usize>,
}

impl<'a> ExplainResult<'a> {
    /// The result of `e`; `with_heatmap: false` leaves out the image-size map.
    pub fn of(e: &'a Explanation, with_heatmap: bool) -> ExplainResult<'a> {
        ExplainResult {
            heatmap: with_heatmap.then_some(Floats(&e.image_map.data)),
            width: e.image_map.width,
            height: e.image_map.height,
            raw: Floats(&e.raw.data),
            raw_width: e.raw.width,
            raw_height: e.raw.height,
            class_idx: e.class,
            label: &e.label,
            logit: e.score,
            probability: e.probability,
            method: e.method.name(),
            method_label: e.method.label(),
            layer: &e.layer,
            top5: &e.top5,
            timings: TimingsResult::of(&e.timings, e.forward_reused),
            backend: e.backend,
            warnings: &e.warnings,
            geometry: GeometryResult::of(&e.geometry),
            crop: Crop::of(&e.geometry),
            forward_reused: e.forward_reused,
            rgb: e.rgb.as_ref().map(|r| Floats(&r.data)),
            rgb_width: e.rgb.as_ref().map(|r| r.width),
            rgb_height: e.rgb.as_ref().map(|r| r.height),
        }
    }
}

/// `evaluate`'s measures of one map. Curves are of the target's softmax probability: x is the
/// fraction of the input's pixels removed (deletion) or inserted (insertion).
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct EvaluateResult<'a> {
    pub method: &'static str,
    pub class_idx: usize,
    pub label: &'a str,
    pub probability: f32,
    pub deletion: &'a Curve,
    pub insertion: &'a Curve,
    pub confidence: ConfidenceChange,
    /// ROAD (only when asked for)
    pub road: Option<&'a Road>,
    /// the map's box at 15% of its maximum (largest 8-connected segment), on the image's pixels, inclusive
    #[serde(rename = "box")]
    pub bounding_box: Option<BoundingBox>,
    /// the measurement's time (explanation included in JS; the curves alone in the CLI)
    pub ms: f64,
}

impl<'a> EvaluateResult<'a> {
    pub fn of(e: &'a Explanation, f: &'a Faithfulness, road: Option<&'a Road>, ms: f64) -> EvaluateResult<'a> {
        use crate::eval::{bounding_box, PAPER_THRESHOLD};
        EvaluateResult {
            method: e.method.name(),
            class_idx: e.class,
            label: &e.label,
            probability: e.probability,
            deletion: &f.deletion,
            insertion: &f.insertion,
            confidence: f.confidence,
            road,
            bounding_box: bounding_box(&e.image_map, PAPER_THRESHOLD),
            ms,
        }
    }
}

/// One explainable layer (`layers()`).
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(test, ts(rename = "LayerInfo"))]
pub struct LayerResult<'a> {
    pub name: &'a str,
    pub aliases: &'a [String],
    pub kind: &'static str,
    /// [channels, height, width] at the model's input size
    #[cfg_attr(test, ts(type = "[number, number, number]"))]
    pub shape: [usize; 3],
    /// the layer explained when none is named
    pub default: bool,
}

impl<'a> LayerResult<'a> {
    pub fn of(l: &'a LayerInfo, default_layer: &str) -> LayerResult<'a> {
        let (c, h, w) = l.shape;
        LayerResult { name: &l.name, aliases: &l.aliases, kind: l.kind, shape: [c, h, w], default: l.name == default_layer }
    }
}

/// What a method asks of the forward pass (`crate::methods::Needs`).
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MethodNeeds {
    pub layer_gradient: bool,
    pub guided_input_gradient: bool,
    pub batched_forwards: bool,
    pub classifier_weights: bool,
    pub layer_forwards: bool,
    pub input_gradients: bool,
    pub deconv_input_gradient: bool,
    pub full_gradient: bool,
}

/// Which smoothing options a method takes.
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Smoothing {
    /// `eigenSmooth`: CAMs that sum weighted feature maps
    pub eigen: bool,
    /// `augSmooth`: maps on the layer's grid
    pub aug: bool,
}

/// One explanation method, as `methodCatalog()` lists them.
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MethodInfo {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub label: &'static str,
    pub help: &'static str,
    /// where the map lives: the target layer's grid or the input's pixels
    #[cfg_attr(test, ts(type = "'layer' | 'input'"))]
    pub grid: &'static str,
    pub needs: MethodNeeds,
    /// the map is the same for every class (it reads only the activations: Eigen-CAM, KPCA-CAM)
    pub class_agnostic: bool,
    pub smoothing: Smoothing,
    /// the `explain` options of its own that change its map (Integrated Gradients: igSteps, igBaseline; ...)
    pub options: &'static [&'static str],
}

impl MethodInfo {
    pub fn of(m: crate::Method) -> MethodInfo {
        let n = m.needs();
        MethodInfo {
            name: m.name(),
            aliases: m.0.aliases,
            label: m.label(),
            help: m.help(),
            grid: if m.is_input_resolution() { "input" } else { "layer" },
            needs: MethodNeeds {
                layer_gradient: n.layer_gradient,
                guided_input_gradient: n.guided_input_gradient,
                batched_forwards: n.batched_forwards,
                classifier_weights: n.classifier_weights,
                layer_forwards: n.layer_forwards,
                input_gradients: n.input_gradients,
                deconv_input_gradient: n.deconv_input_gradient,
                full_gradient: n.full_gradient,
            },
            // Needing nothing from the pass but the activations: the map is the same for every class.
            class_agnostic: n == crate::methods::Needs::NOTHING,
            smoothing: Smoothing { eigen: crate::methods::smooth::supports_eigen_smooth(m), aug: !m.is_input_resolution() },
            options: m.option_keys(),
        }
    }
}

/// Which backend runs, and why (`backendInfo()`).
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct BackendInfo<'a> {
    #[cfg_attr(test, ts(type = "'cpu' | 'webgpu'"))]
    pub backend: &'static str,
    #[cfg_attr(test, ts(type = "Backend"))]
    pub requested: &'static str,
    pub adapter: Option<&'a str>,
    pub software: bool,
    pub note: &'a str,
    /// how 'auto' chose between the CPU and this adapter, when it measured (or reused a measurement)
    pub calibration: Option<&'a Calibration>,
}

/// The `auto` backend's one-time measurement on a WebGPU adapter: one Grad-CAM on each backend,
/// after a first one that warms it (pipelines, caches), and the faster. The worker keeps these per
/// model and passes them back (the `calibration` constructor option), so a later load on the same
/// adapter reuses the choice instead of measuring again.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Calibration {
    pub adapter: String,
    #[cfg_attr(test, ts(type = "'cpu' | 'webgpu'"))]
    pub chose: &'static str,
    pub cpu_ms: f64,
    /// null when WebGPU failed to explain
    pub webgpu_ms: Option<f64>,
    /// reused from an earlier load rather than measured by this one
    pub cached: bool,
}

/// A progress message of a long call: `phase` 'download' (bytes of the model) or 'method' (channels,
/// steps or batches of the method).
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ProgressMessage {
    #[cfg_attr(test, ts(type = "'download' | 'method'"))]
    pub phase: &'static str,
    pub done: usize,
    pub total: usize,
}

// ---------------------------------------------------------------- the options JS may pass

// The keys each JS options object may hold (src/wasm.rs refuses any other, naming these). Their
// TypeScript interfaces are in www/types/options.d.ts; a test below holds the two together.
pub const CONSTRUCTOR_KEYS: &[&str] = &["arch", "labels", "backend", "inputSize", "mean", "std", "externalData", "memoryBudgetMiB", "calibrate", "calibration"];
pub const EXPLAIN_KEYS: &[&str] = &[
    "method",
    "layer",
    "colormap",
    "alpha",
    "normalize",
    "preprocess",
    "signed",
    "onProgress",
    "isCancelled",
    "scoreCamChannels",
    "scoreCamBatch",
    "igSteps",
    "igBaseline",
    "smoothSamples",
    "smoothNoise",
    "occlusionPatch",
    "occlusionStride",
    "eigenSmooth",
    "augSmooth",
];
/// `evaluate` takes every `explain` option (so the map measured is the map shown) and the curves' own.
pub const EVALUATE_KEYS: &[&str] = &concat_keys::<{ EXPLAIN_KEYS.len() + 4 }>(EXPLAIN_KEYS, &["steps", "baseline", "cell", "road"]);

/// `a` then `b`, as one array (a const: the key lists are checked at compile time).
const fn concat_keys<const N: usize>(a: &[&'static str], b: &[&'static str]) -> [&'static str; N] {
    assert!(a.len() + b.len() == N);
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < a.len() { a[i] } else { b[i - a.len()] };
        i += 1;
    }
    out
}
pub const OVERLAY_KEYS: &[&str] = &["colormap", "alpha"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::colormap::Colormap;
    use ts_rs::TS;

    /// The committed declarations, generated from the types above.
    const COMMITTED: &str = "www/types/results.d.ts";

    fn generated() -> String {
        let cfg = ts_rs::Config::default();
        let decls = [
            Prediction::decl(&cfg),
            TimingsResult::decl(&cfg),
            GeometryResult::decl(&cfg),
            Crop::decl(&cfg),
            ExplainResult::decl(&cfg),
            Curve::decl(&cfg),
            ConfidenceChange::decl(&cfg),
            Road::decl(&cfg),
            BoundingBox::decl(&cfg),
            EvaluateResult::decl(&cfg),
            LayerResult::decl(&cfg),
            MethodNeeds::decl(&cfg),
            Smoothing::decl(&cfg),
            MethodInfo::decl(&cfg),
            Calibration::decl(&cfg),
            BackendInfo::decl(&cfg),
            ProgressMessage::decl(&cfg),
        ];
        let mut out = String::from("// Generated from src/schema.rs by `cargo test --lib schema` (UPDATE_TS=1 rewrites it); do not edit.\n");
        for d in decls {
            out.push_str("export ");
            out.push_str(&d);
            out.push('\n');
        }
        let methods = crate::methods::ALL.iter().flat_map(|m| std::iter::once(m.name()).chain(m.0.aliases.iter().copied()));
        out.push_str(&union("MethodName", "every method's name and alias that `method` accepts", methods));
        out.push_str(&union("Colormap", "the colormaps overlays are drawn with", Colormap::ALL.iter().map(|c| c.name())));
        out
    }

    /// `export type NAME = 'a' | 'b';` with a doc comment.
    fn union<'a>(name: &str, doc: &str, values: impl Iterator<Item = &'a str>) -> String {
        let values: Vec<String> = values.map(|v| format!("'{v}'")).collect();
        format!("/** {doc} */\nexport type {name} = {};\n", values.join(" | "))
    }

    /// The optional keys of `export interface NAME { ... }` in a TypeScript file (comments dropped).
    fn interface_keys(ts: &str, name: &str) -> Vec<String> {
        let mut text = String::new();
        let mut rest = ts;
        while let Some(i) = rest.find("/*") {
            text.push_str(&rest[..i]);
            rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
        }
        text.push_str(rest);
        let text: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
        let head = format!("export interface {name} ");
        let start = text.find(&head).unwrap_or_else(|| panic!("no interface {name}"));
        let body_start = start + text[start..].find('{').unwrap() + 1;
        let (mut depth, mut keys, mut word) = (1, Vec::new(), String::new());
        let mut chars = text[body_start..].chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' | '(' | '[' => depth += 1,
                '}' | ')' | ']' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                '?' if depth == 1 && chars.peek() == Some(&':') && !word.is_empty() => keys.push(word.clone()),
                _ => {}
            }
            if c.is_alphanumeric() || c == '_' {
                word.push(c);
            } else if c != '?' {
                word.clear();
            }
        }
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    fn sorted_keys(ts: &str, name: &str) -> Vec<String> {
        let mut v = interface_keys(ts, name);
        v.sort();
        v
    }

    #[test]
    fn every_options_interface_lists_exactly_the_keys_its_parser_accepts() {
        let ts = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/types/options.d.ts")).unwrap();
        assert_eq!(sorted_keys(&ts, "ExplainerOptions"), sorted(CONSTRUCTOR_KEYS));
        assert_eq!(sorted_keys(&ts, "ExplainOptions"), sorted(EXPLAIN_KEYS));
        assert_eq!(sorted_keys(&ts, "OverlayOptions"), sorted(OVERLAY_KEYS));
        let mut evaluate = interface_keys(&ts, "EvaluateOptions");
        evaluate.extend(interface_keys(&ts, "ExplainOptions"));
        evaluate.sort();
        assert_eq!(evaluate, sorted(EVALUATE_KEYS));
    }

    #[test]
    fn the_key_parser_finds_optional_keys_at_the_top_level_only() {
        let ts = "export interface A { a?: number; /* b?: no */ c?: (d?: number) => void; e?: { f?: string } } export interface B { g?: 1 }";
        assert_eq!(interface_keys(ts, "A"), ["a", "c", "e"]);
        assert_eq!(interface_keys(ts, "B"), ["g"]);
    }

    #[test]
    fn the_clients_colormap_list_is_the_rust_one() {
        let js = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/gradcam-client.js")).unwrap();
        let line = js.lines().find(|l| l.starts_with("export const COLORMAPS = ")).expect("www/gradcam-client.js exports COLORMAPS");
        let names: Vec<String> = Colormap::ALL.iter().map(|c| format!("'{}'", c.name())).collect();
        assert_eq!(line, format!("export const COLORMAPS = [{}];", names.join(", ")));
    }

    #[test]
    fn the_committed_typescript_declarations_are_generated_from_the_result_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
        let now = generated();
        if std::env::var_os("UPDATE_TS").is_some() {
            std::fs::write(&path, &now).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(committed == now, "{COMMITTED} differs from the types in src/schema.rs; regenerate it with UPDATE_TS=1 cargo test --lib schema\n--- generated:\n{now}");
    }

    #[test]
    fn the_json_result_uses_the_js_vocabulary_and_lists_buffers_as_numbers() {
        let t = Timings { total_ms: 2.0, ..Default::default() };
        let v = serde_json::to_value(TimingsResult::of(&t, true)).unwrap();
        assert_eq!(v["totalMs"], 2.0);
        assert_eq!(v["forwardReused"], true);
        assert_eq!(serde_json::to_value(Floats(&[1.0, 0.5])).unwrap(), serde_json::json!([1.0, 0.5]));
        let p = Prediction { class: 3, label: "x".into(), logit: 1.5, probability: 0.25 };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!((v["classIdx"].as_u64(), v.get("class")), (Some(3), None));
    }
}
