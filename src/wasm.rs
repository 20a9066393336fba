//! The JavaScript API (wasm32 only): argument parsing, a call into [`crate::Explainer`], and conversion
//! of the result to plain JS values. No maths lives here.
//!
//! ```js
//! const ex = new Explainer(modelBytes, { arch: 'efficientnet_lite0' });
//! const r = ex.explain(ctx.getImageData(0, 0, w, h), undefined, { method: 'gradcam', colormap: 'jet' });
//! ctx.putImageData(r.overlay(), 0, 0);          // or ex.overlay(imageData, r, { alpha: 0.4 })
//! ```
//!
//! Every failure is thrown as a JS `Error` carrying the crate's message; the explainer stays usable.

use crate::explainer::LayerInfo;
use crate::imaging::colormap::Colormap;
use crate::imaging::overlay::overlay_rgba_masked;
use crate::imaging::preprocess::{Geometry, Normalize, Resize};
use crate::imaging::project::crop_mask;
use crate::imaging::rgb::RgbImage;
use crate::loading::{check_labels, parse_labels, ModelSettings};
use crate::schema::{BackendInfo, Calibration, EvaluateResult, ExplainResult, LayerResult, MethodInfo, CONSTRUCTOR_KEYS, EVALUATE_KEYS, EXPLAIN_KEYS, OVERLAY_KEYS};
use crate::{Arch, ExplainOptions, Explanation, Method, Normalization, Target};
use js_sys::{Array, Float32Array, Object, Promise, Reflect, Uint8Array};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use web_sys::ImageData;

type JsResult<T> = Result<T, JsValue>;

const DEFAULT_COLORMAP: Colormap = Colormap::Jet;
const DEFAULT_ALPHA: f32 = 0.5;

fn js_err(msg: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&msg.to_string()).into()
}

// ---------------------------------------------------------------- reading JS values

fn get(obj: &JsValue, key: &str) -> JsResult<JsValue> {
    Reflect::get(obj, &JsValue::from_str(key)).map_err(|_| js_err(format!("cannot read property '{key}'")))
}

/// An optional function option: absent is None, anything else than a function is a clear error.
fn callback(obj: &JsValue, key: &str) -> JsResult<Option<js_sys::Function>> {
    let v = get(obj, key)?;
    if is_missing(&v) {
        return Ok(None);
    }
    v.dyn_into::<js_sys::Function>().map(Some).map_err(|v| js_err(format!("option {key} must be a function, got {}", describe(&v))))
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) -> JsResult<()> {
    Reflect::set(obj, &JsValue::from_str(key), &value.into()).map(|_| ()).map_err(|_| js_err(format!("cannot set property '{key}'")))
}

fn is_missing(v: &JsValue) -> bool {
    v.is_undefined() || v.is_null()
}

/// An options argument: `undefined`/`null` or a plain object whose keys are all in `allowed`.
fn options_object(v: &JsValue, what: &str, allowed: &[&str]) -> JsResult<Option<JsValue>> {
    if is_missing(v) {
        return Ok(None);
    }
    if !v.is_object() || v.is_function() || Array::is_array(v) {
        return Err(js_err(format!("{what} must be an object, e.g. {{ {}: ... }}", allowed[0])));
    }
    for key in Object::keys(v.unchecked_ref::<Object>()).iter() {
        let key = key.as_string().unwrap_or_default();
        if !allowed.contains(&key.as_str()) {
            return Err(js_err(format!("unknown {what} '{key}'; valid keys: {}", allowed.join(", "))));
        }
    }
    Ok(Some(v.clone()))
}

fn opt_string(obj: &Option<JsValue>, key: &str) -> JsResult<Option<String>> {
    let Some(obj) = obj else { return Ok(None) };
    let v = get(obj, key)?;
    if is_missing(&v) {
        return Ok(None);
    }
    v.as_string().map(Some).ok_or_else(|| js_err(format!("option '{key}' must be a string")))
}

fn opt_number(obj: &Option<JsValue>, key: &str) -> JsResult<Option<f64>> {
    let Some(obj) = obj else { return Ok(None) };
    let v = get(obj, key)?;
    if is_missing(&v) {
        return Ok(None);
    }
    v.as_f64().map(Some).ok_or_else(|| js_err(format!("option '{key}' must be a number")))
}

fn opt_bool(obj: &Option<JsValue>, key: &str) -> JsResult<Option<bool>> {
    let Some(obj) = obj else { return Ok(None) };
    let v = get(obj, key)?;
    if is_missing(&v) {
        return Ok(None);
    }
    v.as_bool().map(Some).ok_or_else(|| js_err(format!("option '{key}' must be a boolean")))
}

/// A non-negative integer (a class index, a count) given as a JS number; never cast blindly.
fn index(v: &JsValue, what: &str) -> JsResult<usize> {
    let x = v.as_f64().ok_or_else(|| js_err(format!("{what} must be a number, got {}", describe(v))))?;
    if !x.is_finite() || x.fract() != 0.0 {
        return Err(js_err(format!("{what} must be an integer, got {x}")));
    }
    if x < 0.0 {
        return Err(js_err(format!("{what} must not be negative, got {x}")));
    }
    if x > u32::MAX as f64 {
        return Err(js_err(format!("{what} {x} is out of range")));
    }
    Ok(x as usize)
}

/// `classIdx`: a class index (a number), or a weighted mix as a string "281:1,285:0.5" (the score
/// sum_c w_c y_c), parsed by the same `Target::parse` as the CLI's `--class`.
fn class_target(v: &JsValue, num_classes: usize) -> JsResult<Target> {
    if let Some(text) = v.as_string() {
        return Target::parse(&text, num_classes).map_err(|e| js_err(format!("classIdx: {e}")));
    }
    if v.as_f64().is_none() {
        return Err(js_err(format!("classIdx must be a number or a weighted string such as \"281:1,285:0.5\", got {}", describe(v))));
    }
    let c = index(v, "classIdx")?;
    if c >= num_classes {
        return Err(js_err(format!("option: class index {c} is out of range: this model has {num_classes} classes (0..={})", num_classes.saturating_sub(1))));
    }
    Ok(Target::Class(c))
}

fn describe(v: &JsValue) -> String {
    v.js_typeof().as_string().unwrap_or_else(|| "a value".into())
}

fn colormap_opt(obj: &Option<JsValue>) -> JsResult<Option<Colormap>> {
    opt_string(obj, "colormap")?.map(|n| Colormap::from_name(&n).map_err(js_err)).transpose()
}

fn alpha_opt(obj: &Option<JsValue>) -> JsResult<Option<f32>> {
    match opt_number(obj, "alpha")? {
        Some(a) if !(0.0..=1.0).contains(&a) => Err(js_err(format!("alpha must be in [0, 1], got {a}"))),
        a => Ok(a.map(|a| a as f32)),
    }
}

/// Reads an `ImageData` (or any `{ width, height, data }` with RGBA bytes) into an RGB image.
fn read_image(v: &JsValue) -> JsResult<RgbImage> {
    if !v.is_object() {
        return Err(js_err("imageData must be an ImageData (or { width, height, data } with RGBA bytes)"));
    }
    let width = index(&get(v, "width")?, "imageData.width")?;
    let height = index(&get(v, "height")?, "imageData.height")?;
    let data = get(v, "data")?;
    if !(data.is_instance_of::<js_sys::Uint8ClampedArray>() || data.is_instance_of::<Uint8Array>()) {
        return Err(js_err("imageData.data must be a Uint8ClampedArray (or Uint8Array) of RGBA bytes"));
    }
    let data = Uint8Array::new(&data);
    let pixels = width.saturating_mul(height);
    if pixels > MAX_INPUT_PIXELS {
        // Never copy a huge canvas into wasm memory at full size: read it row by row, reduced by
        // the smallest integer factor that brings it under the limit. The heatmap then comes back
        // on the reduced grid (the result's width/height say so).
        let expected = 4 * width as u128 * height as u128; // usize is 32 bits here: it would saturate
        if data.length() as u128 != expected {
            return Err(js_err(format!("input: RGBA data length mismatch for {width}x{height}: expected {expected} bytes (4 per pixel), got {}", data.length())));
        }
        let factor = (1..).find(|f| width.div_ceil(*f) * height.div_ceil(*f) <= MAX_INPUT_PIXELS).unwrap_or(1);
        let read_row = |y: usize, row: &mut [u8]| {
            let start = (y * width * 4) as u32;
            data.subarray(start, start + row.len() as u32).copy_to(row);
        };
        return RgbImage::from_rgba_rows_reduced(width, height, factor, read_row).map_err(|m| js_err(format!("input: {m}")));
    }
    let bytes = data.to_vec();
    RgbImage::from_rgba(width, height, &bytes).map_err(|m| js_err(format!("input: {m}")))
}

/// Images above this many pixels (16 MP, e.g. 4096 x 4096) are reduced on the way in.
pub const MAX_INPUT_PIXELS: usize = 16 * 1024 * 1024;

// ---------------------------------------------------------------- writing JS values

/// A result type of src/schema.rs as a plain JS object (`None` as `null`, buffers as typed arrays).
fn to_js(value: &impl serde::Serialize) -> JsResult<JsValue> {
    let serializer = serde_wasm_bindgen::Serializer::new().serialize_missing_as_null(true);
    value.serialize(&serializer).map_err(|e| js_err(format!("internal: cannot convert a result to JS: {e}")))
}

fn geometry_from_js(v: &JsValue) -> JsResult<Geometry> {
    let num = |k: &str| get(v, k)?.as_f64().ok_or_else(|| js_err(format!("result.geometry.{k} must be a number")));
    let int = |k: &str| index(&get(v, k)?, &format!("result.geometry.{k}"));
    Ok(Geometry {
        scale_x: num("scaleX")?,
        scale_y: num("scaleY")?,
        offset_x: num("offsetX")?,
        offset_y: num("offsetY")?,
        input_w: int("inputWidth")?,
        input_h: int("inputHeight")?,
        orig_w: int("width")?,
        orig_h: int("height")?,
    })
}

/// What an overlay needs: the map on the image grid and which pixels the network saw.
#[derive(Clone)]
struct Heat {
    width: usize,
    height: usize,
    map: Vec<f32>,
    mask: Vec<bool>,
}

impl Heat {
    fn of(e: &Explanation) -> JsResult<Heat> {
        let mask = crop_mask(&e.geometry).map_err(js_err)?;
        Ok(Heat { width: e.image_map.width, height: e.image_map.height, map: e.image_map.data.clone(), mask })
    }

    fn overlay(&self, image: &RgbImage, cmap: Colormap, alpha: f32) -> JsResult<ImageData> {
        if (image.width, image.height) != (self.width, self.height) {
            return Err(js_err(format!("the image is {}x{} but the heatmap is {}x{}; overlay the image that was explained", image.width, image.height, self.width, self.height)));
        }
        let rgba = overlay_rgba_masked(image, &self.map, &self.mask, cmap, alpha).map_err(js_err)?;
        // An ImageData keeps the array it is given: a view of wasm memory would show whatever the next
        // call writes there (or nothing once memory grows). Its own copy, then.
        let pixels = js_sys::Uint8ClampedArray::from(&rgba[..]);
        ImageData::new_with_js_u8_clamped_array_and_sh(&pixels, self.width as u32, self.height as u32)
    }
}

/// Every explanation method `explain` accepts, with its label, one-line help, grid and needs: what
/// menus and help texts show (no model needed).
#[wasm_bindgen(js_name = methodCatalog, unchecked_return_type = "MethodInfo[]")]
pub fn method_catalog() -> JsResult<JsValue> {
    to_js(&crate::methods::ALL.iter().map(|m| MethodInfo::of(*m)).collect::<Vec<_>>())
}

// ---------------------------------------------------------------- the class

// The result types are generated from src/schema.rs.
#[wasm_bindgen(typescript_custom_section)]
const TS_RESULT_TYPES: &'static str = include_str!("../www/types/results.d.ts");

// The input types (options), written by hand in www/types/options.d.ts; src/schema.rs's tests hold
// their keys to the lists the parsers accept.
#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = include_str!("../www/types/options.d.ts");

/// Which executor runs the forward and backward passes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    /// WebGPU on a hardware adapter when there is one and the model fits its limits; else the CPU.
    Auto,
    Cpu,
    /// WebGPU on any adapter, software ones included; the CPU (with a console warning) if none works.
    WebGpu,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Cpu => "cpu",
            Backend::WebGpu => "webgpu",
        }
    }
}

fn backend_opt(obj: &Option<JsValue>) -> JsResult<Backend> {
    match opt_string(obj, "backend")?.map(|b| b.trim().to_ascii_lowercase()).as_deref() {
        None | Some("auto") => Ok(Backend::Auto),
        Some("cpu") | Some("wasm") => Ok(Backend::Cpu),
        Some("webgpu") | Some("gpu") => Ok(Backend::WebGpu),
        Some(other) => Err(js_err(format!("unknown backend '{other}'; choose one of auto, cpu, webgpu"))),
    }
}

fn warn(msg: &str) {
    web_sys::console::warn_1(&JsValue::from_str(&format!("gradcam-wasm: {msg}")));
}

/// One parsed `explain` call: everything read from JS before any work starts.
struct Request {
    opts: ExplainOptions,
    image: RgbImage,
    cmap: Colormap,
    alpha: f32,
    on_progress: Option<js_sys::Function>,
    /// The caller's `isCancelled()`, polled between batches (`crate::cancel`).
    is_cancelled: Option<js_sys::Function>,
}

impl Request {
    fn parse(image_data: &JsValue, class_idx: &JsValue, options: &JsValue, num_classes: usize, input_size: (usize, usize)) -> JsResult<Request> {
        Request::parse_keys(image_data, class_idx, options, num_classes, input_size, "explain option", EXPLAIN_KEYS)
    }

    fn parse_keys(image_data: &JsValue, class_idx: &JsValue, options: &JsValue, num_classes: usize, input_size: (usize, usize), what: &str, keys: &[&str]) -> JsResult<Request> {
        let opts = options_object(options, what, keys)?;
        let mut o = ExplainOptions::default();
        if let Some(m) = opt_string(&opts, "method")? {
            o.method = Method::from_name(&m).map_err(js_err)?;
        }
        o.layer = opt_string(&opts, "layer")?;
        o.signed = opt_bool(&opts, "signed")?.unwrap_or(false);
        o.eigen_smooth = opt_bool(&opts, "eigenSmooth")?.unwrap_or(false);
        o.aug_smooth = opt_bool(&opts, "augSmooth")?.unwrap_or(false);
        if let Some(n) = opt_string(&opts, "normalize")? {
            o.normalization = match n.trim().to_ascii_lowercase().as_str() {
                "minmax" => Normalization::MinMax,
                "raw" => Normalization::Raw,
                _ => return Err(js_err(format!("unknown normalize '{n}'; choose one of minmax, raw"))),
            };
        }
        if let Some(p) = opt_string(&opts, "preprocess")? {
            o.resize = match p.trim().to_ascii_lowercase().as_str() {
                "crop" => None, // the model's own evaluation transform: resize + centre crop
                "resize" => Some(Resize::Exact { width: input_size.0, height: input_size.1 }),
                _ => return Err(js_err(format!("unknown preprocess '{p}'; choose one of crop, resize"))),
            };
        }
        let cmap = colormap_opt(&opts)?.unwrap_or(DEFAULT_COLORMAP);
        let alpha = alpha_opt(&opts)?.unwrap_or(DEFAULT_ALPHA);
        if !is_missing(class_idx) {
            o.target = class_target(class_idx, num_classes)?;
        }
        if let Some(n) = opt_number(&opts, "scoreCamChannels")? {
            o.score_cam.max_channels = Some(count(n, "scoreCamChannels")?);
        }
        if let Some(n) = opt_number(&opts, "scoreCamBatch")? {
            o.score_cam.batch = Some(count(n, "scoreCamBatch")?);
        }
        let a = &mut o.attribution;
        if let Some(n) = opt_number(&opts, "igSteps")? {
            a.steps = count(n, "igSteps")?;
        }
        if let Some(b) = opt_string(&opts, "igBaseline")? {
            a.baseline = crate::methods::attribution::Baseline::from_name(&b).map_err(js_err)?;
        }
        if let Some(n) = opt_number(&opts, "smoothSamples")? {
            a.samples = count(n, "smoothSamples")?;
        }
        if let Some(n) = opt_number(&opts, "smoothNoise")? {
            a.noise = n as f32;
        }
        if let Some(n) = opt_number(&opts, "occlusionPatch")? {
            a.patch = Some(count(n, "occlusionPatch")?);
        }
        if let Some(n) = opt_number(&opts, "occlusionStride")? {
            a.stride = Some(count(n, "occlusionStride")?);
        }
        a.check().map_err(js_err)?;
        // Progress of the long methods (Score-CAM), as onProgress(done, total).
        let on_progress = match &opts {
            Some(obj) => get(obj, "onProgress")?.dyn_into::<js_sys::Function>().ok(),
            None => None,
        };
        let is_cancelled = match &opts {
            Some(obj) => callback(obj, "isCancelled")?,
            None => None,
        };
        let image = read_image(image_data)?;
        Ok(Request { opts: o, image, cmap, alpha, on_progress, is_cancelled })
    }

    /// A progress callback that throws asks the computation to stop at its next batch: the way a
    /// caller (the worker, for an aborted call) cancels from inside the synchronous run.
    fn progress(&self) -> impl FnMut(usize, usize) + '_ {
        move |done: usize, total: usize| {
            if let Some(f) = &self.on_progress {
                if f.call2(&JsValue::NULL, &(done as u32).into(), &(total as u32).into()).is_err() {
                    crate::cancel::request();
                }
            }
        }
    }

    /// Starts this request's cancellation state: nothing requested, `isCancelled` polled per batch.
    fn arm_cancel(&self) {
        let poller = self.is_cancelled.clone().map(|f| {
            // A poller that throws counts as a yes: a broken check must not run on for minutes.
            Box::new(move || f.call0(&JsValue::NULL).map_or(true, |v| v.is_truthy())) as Box<dyn Fn() -> bool>
        });
        crate::cancel::reset(poller);
    }
}

/// One parsed `evaluate` call: the explanation's request and the curves' settings.
struct EvaluateRequest {
    explain: Request,
    curves: crate::eval::CurveOptions,
    with_road: bool,
}

/// What `evaluate` measured, with the explanation it measured.
struct Measured {
    explanation: Explanation,
    faithfulness: crate::eval::Faithfulness,
    road: Option<crate::eval::Road>,
    ms: f64,
}

impl Measured {
    fn result(&self) -> EvaluateResult<'_> {
        EvaluateResult::of(&self.explanation, &self.faithfulness, self.road.as_ref(), self.ms)
    }
}

impl EvaluateRequest {
    fn parse(image_data: &JsValue, class_idx: &JsValue, options: &JsValue, num_classes: usize, input_size: (usize, usize)) -> JsResult<EvaluateRequest> {
        use crate::eval::{Baseline, CurveOptions};
        let explain = Request::parse_keys(image_data, class_idx, options, num_classes, input_size, "evaluate option", EVALUATE_KEYS)?;
        let opts = options_object(options, "evaluate option", EVALUATE_KEYS)?;
        let mut curves = CurveOptions::default();
        if let Some(n) = opt_number(&opts, "steps")? {
            curves.steps = count(n, "steps")?;
        }
        if let Some(n) = opt_number(&opts, "cell")? {
            curves.cell = count(n, "cell")?;
        }
        if let Some(b) = opt_string(&opts, "baseline")? {
            curves.baseline = match b.trim().to_ascii_lowercase().as_str() {
                "blur" => Baseline::Blur(5.0),
                "mean" => Baseline::Mean,
                _ => return Err(js_err(format!("unknown baseline '{b}'; choose one of blur, mean"))),
            };
        }
        let with_road = opt_bool(&opts, "road")?.unwrap_or(false);
        Ok(EvaluateRequest { explain, curves, with_road })
    }

    /// Explains on the CPU, then measures the map: the curves (which pause between batches where a
    /// pause is installed) and ROAD when asked for.
    async fn measure(&self, inner: &mut crate::Explainer) -> crate::Result<Measured> {
        let t0 = crate::clock::now_ms();
        let r = &self.explain;
        let road = self.with_road.then(crate::eval::RoadOptions::default);
        let m = crate::eval::faithfulness::measure_async(inner, &r.image, &r.opts, &self.curves, road.as_ref(), &mut r.progress()).await?;
        Ok(Measured { explanation: m.explanation, faithfulness: m.faithfulness, road: m.road, ms: crate::clock::now_ms() - t0 })
    }
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(catch, js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, ms: i32) -> JsResult<JsValue>;

    type MessageChannel;
    #[wasm_bindgen(catch, constructor)]
    fn new() -> JsResult<MessageChannel>;
    #[wasm_bindgen(method, getter)]
    fn port1(this: &MessageChannel) -> MessagePort;
    #[wasm_bindgen(method, getter)]
    fn port2(this: &MessageChannel) -> MessagePort;

    type MessagePort;
    #[wasm_bindgen(method, setter)]
    fn set_onmessage(this: &MessagePort, handler: &js_sys::Function);
    #[wasm_bindgen(method, catch, js_name = postMessage)]
    fn post_message(this: &MessagePort, message: &JsValue) -> JsResult<()>;
    #[wasm_bindgen(method)]
    fn close(this: &MessagePort);
}

/// How long a long method runs between two pauses at most (it pauses only between batches).
const PAUSE_EVERY_MS: f64 = 10.0;

/// A promise of the event loop's next task, and what must live until it comes. A message to
/// ourselves through a `MessageChannel` queues behind a message already sent to this worker (an
/// abort), as a timer would, but without the 4 ms that browsers add to a `setTimeout(0)` set from
/// a timer's task five levels deep: paused once a batch, Score-CAM lost 4 ms in every ~90.
fn next_task() -> (Promise, Option<MessageChannel>) {
    let mut channel = None;
    let promise = Promise::new(&mut |resolve, _| {
        if let Ok(c) = MessageChannel::new() {
            c.port1().set_onmessage(&resolve);
            if c.port2().post_message(&JsValue::NULL).is_ok() {
                channel = Some(c);
                return;
            }
        }
        if set_timeout(&resolve, 0).is_err() {
            let _ = resolve.call0(&JsValue::NULL); // no timers here: no pause, the run goes on
        }
    });
    (promise, channel)
}

/// Runs `f` with `crate::cancel`'s pause installed: at a checkpoint, once `PAUSE_EVERY_MS` passed
/// since the last pause, it waits for a new task of the event loop ([`next_task`]), so a message
/// that arrived meanwhile (a worker's abort) is handled before the next batch. Short methods have
/// no checkpoint: they run as before, without a pause.
async fn with_event_loop_pauses<T>(f: impl std::future::Future<Output = T>) -> T {
    let last = Rc::new(std::cell::Cell::new(crate::clock::now_ms()));
    let pause: crate::cancel::Pause = Rc::new(move || {
        if crate::clock::now_ms() - last.get() < PAUSE_EVERY_MS {
            return Box::pin(std::future::ready(()));
        }
        let last = last.clone();
        let (next, channel) = next_task();
        Box::pin(async move {
            let _ = wasm_bindgen_futures::JsFuture::from(next).await;
            if let Some(c) = channel {
                c.port1().close();
            }
            last.set(crate::clock::now_ms());
        })
    });
    let previous = crate::cancel::set_pause(Some(pause));
    let out = f.await;
    crate::cancel::set_pause(previous);
    out
}

/// Everything an `Explainer` owns that calls change. Behind one `RefCell`: an async explanation holds
/// it across its awaits, and any call that arrives meanwhile gets a clear "busy" error (or, for
/// `explainAsync`, waits its turn), never a second mutable borrow.
struct State {
    inner: crate::Explainer,
    /// The last successful explanation's map, for `overlay(imageData)` without a result.
    last: Option<Heat>,
    #[cfg(feature = "webgpu")]
    gpu: Option<crate::gpu::GpuSession>,
    requested: Backend,
    adapter: Option<String>,
    software: bool,
    /// Why this backend runs (or why WebGPU does not), for `backendInfo()` and the demo.
    note: String,
    /// Whether `auto` measures both backends on an adapter (`calibrate`), what earlier loads
    /// measured (`calibration`), and what this load decided by.
    #[cfg_attr(not(feature = "webgpu"), allow(dead_code))]
    calibrate: Option<bool>,
    #[cfg_attr(not(feature = "webgpu"), allow(dead_code))]
    known: Vec<Calibration>,
    calibration: Option<Calibration>,
}

impl State {
    fn active_backend(&self) -> &'static str {
        #[cfg(feature = "webgpu")]
        if self.gpu.is_some() {
            return "webgpu";
        }
        "cpu"
    }

    /// Makes the result object (with its `overlay` closure) and remembers the map for `overlay()`.
    fn finish(&mut self, e: &Explanation, request: Request) -> JsResult<JsValue> {
        self.last = Some(Heat::of(e)?);
        let result: Object = to_js(&ExplainResult::of(e, true))?.unchecked_into();
        let Request { image, cmap, alpha, .. } = request;
        // The closure's Rust side is freed only when the JS GC collects the result, and wasm memory
        // gives the GC no reason to run: so it holds the photo and the map as JS arrays (which the GC
        // does count) and no more than a few handles in wasm memory. Unfreed results then cost no
        // wasm memory (100 explanations in a row kept it growing by ~1 MB each).
        let (width, height) = (image.width, image.height);
        let pixels = Uint8Array::from(&image.data[..]);
        let heatmap: Float32Array = get(&result, "heatmap")?.unchecked_into();
        let (geometry, heat_w, heat_h) = (e.geometry.clone(), e.image_map.width, e.image_map.height);
        let closure = Closure::<dyn Fn(JsValue) -> JsResult<ImageData>>::new(move |opts: JsValue| {
            let opts = options_object(&opts, "overlay option", OVERLAY_KEYS)?;
            if heatmap.length() as usize != heat_w * heat_h {
                return Err(js_err("this result's heatmap was transferred or replaced; use explainer.overlay(imageData, result)"));
            }
            let image = RgbImage { width, height, data: pixels.to_vec() };
            let heat = Heat { width: heat_w, height: heat_h, map: heatmap.to_vec(), mask: crop_mask(&geometry).map_err(js_err)? };
            heat.overlay(&image, colormap_opt(&opts)?.unwrap_or(cmap), alpha_opt(&opts)?.unwrap_or(alpha))
        });
        set(&result, "overlay", closure.into_js_value())?;
        Ok(result.into())
    }

    /// Explains on the GPU when one is active, else on the CPU. A GPU failure never reaches the page:
    /// the call is retried on the CPU; if the CPU succeeds the GPU is dropped for good (console warning),
    /// if it fails too the input was at fault and its error is the answer.
    async fn explain(&mut self, request: &Request) -> crate::Result<Explanation> {
        let mut progress = request.progress();
        #[cfg(feature = "webgpu")]
        if request.opts.aug_smooth && self.gpu.is_some() {
            // Its six passes on modified inputs are the explainer's (CPU) loop; never a wrong map.
            let mut e = self.inner.explain_with_progress(&request.image, &request.opts, &mut progress)?;
            e.warnings.push("augSmooth ran on the CPU: its mirrored and scaled passes are not on WebGPU yet".into());
            return Ok(e);
        }
        #[cfg(feature = "webgpu")]
        if let Some(gpu) = self.gpu.as_mut() {
            let gpu_error = match gpu.explain(&mut self.inner, &request.image, &request.opts, &mut progress).await {
                Ok(e) => return Ok(e),
                Err(err) => err,
            };
            let mut e = self.inner.explain_with_progress(&request.image, &request.opts, &mut progress)?;
            let msg = format!("the WebGPU backend failed ({gpu_error}); this and later explanations run on the CPU");
            warn(&msg);
            self.gpu = None;
            self.note = msg.clone();
            e.warnings.push(msg);
            return Ok(e);
        }
        self.inner.explain_with_progress_async(&request.image, &request.opts, &mut progress).await
    }

    /// Starts WebGPU for `requested` (auto or webgpu). On failure the CPU stays, with the reason in `note`.
    #[cfg(feature = "webgpu")]
    async fn start_gpu(&mut self) {
        use crate::gpu::{Gpu, GpuExecutor, GpuSession};
        let explicit = self.requested == Backend::WebGpu;
        let mut measure = false;
        let result: Result<GpuSession, String> = async {
            if !has_navigator_gpu() {
                return Err("this browser offers no WebGPU (navigator.gpu is undefined; it needs a secure context such as https or localhost)".to_string());
            }
            let gpu = Gpu::request().await.map_err(|e| e.to_string())?;
            self.software = gpu.is_software();
            // Browsers may hide the adapter's name; a fallback adapter is then all we know.
            let name = match (gpu.info.name.is_empty(), self.software) {
                (false, _) => gpu.info.name.clone(),
                (true, true) => "a fallback adapter".to_string(),
                (true, false) => "an unnamed adapter".to_string(),
            };
            self.adapter = Some(name.clone());
            measure = self.requested == Backend::Auto && self.calibrate.unwrap_or(!self.software);
            if self.software && !explicit && !measure {
                return Err(format!("the only WebGPU adapter ({name}) is a software renderer, slower than the CPU path; ask for backend: 'webgpu' to use it anyway"));
            }
            let executor = GpuExecutor::with_gpu(gpu, self.inner.model().graph.clone()).await.map_err(|e| e.to_string())?;
            Ok(GpuSession::new(executor))
        }
        .await;
        match result {
            Ok(mut session) => {
                let adapter = self.adapter.clone().unwrap_or_default();
                self.note = format!("WebGPU on {adapter}");
                if measure {
                    let c = match self.known.iter().find(|c| c.adapter == adapter) {
                        Some(c) => Calibration { cached: true, ..c.clone() },
                        None => self.calibrate_on(&mut session, adapter).await,
                    };
                    let gpu_ms = c.webgpu_ms.map_or("failed".to_string(), |ms| format!("{ms:.0} ms"));
                    let measured = format!("one Grad-CAM took {:.0} ms on the CPU, {gpu_ms} on WebGPU{}", c.cpu_ms, if c.cached { ", measured by an earlier load" } else { "" });
                    let chose_cpu = c.chose == "cpu";
                    self.note = if chose_cpu { format!("CPU: faster than WebGPU on {} ({measured})", c.adapter) } else { format!("WebGPU on {} ({measured})", c.adapter) };
                    self.calibration = Some(c);
                    if chose_cpu {
                        return; // the session is dropped with its buffers
                    }
                }
                self.gpu = Some(session);
            }
            Err(reason) => {
                if explicit {
                    warn(&format!("WebGPU was asked for but is unavailable: {reason}; explaining on the CPU"));
                }
                self.note = format!("CPU: {reason}");
            }
        }
    }
}

#[cfg(feature = "webgpu")]
impl State {
    /// Times one Grad-CAM on each backend, each after a first one that warms it (the GPU makes its
    /// pipelines on first use; the CPU its kept weights), on synthetic images that differ so that no
    /// call reuses the previous one's forward pass. A WebGPU failure counts as a win for the CPU.
    async fn calibrate_on(&mut self, gpu: &mut crate::gpu::GpuSession, adapter: String) -> Calibration {
        let (w, h) = self.inner.model().input_size();
        let image = |seed: u8| RgbImage { width: w, height: h, data: (0..w * h * 3).map(|i| ((i * 7 + seed as usize * 31) % 251) as u8).collect() };
        let opts = ExplainOptions::default();
        let mut none = |_: usize, _: usize| {};
        crate::cancel::reset(None);
        let mut cpu_ms = f64::INFINITY;
        for seed in 0..2 {
            let t0 = crate::clock::now_ms();
            let ok = self.inner.explain_with_progress(&image(seed), &opts, &mut none).is_ok();
            cpu_ms = if ok { crate::clock::now_ms() - t0 } else { f64::INFINITY };
        }
        let mut webgpu_ms = None;
        for seed in 2..4 {
            let t0 = crate::clock::now_ms();
            webgpu_ms = gpu.explain(&mut self.inner, &image(seed), &opts, &mut none).await.ok().map(|_| crate::clock::now_ms() - t0);
            if webgpu_ms.is_none() {
                break;
            }
        }
        let chose = if webgpu_ms.is_some_and(|g| g < cpu_ms) { "webgpu" } else { "cpu" };
        Calibration { adapter, chose, cpu_ms, webgpu_ms, cached: false }
    }
}

/// Whether this global (a window or a worker) has `navigator.gpu`. Checked before wgpu is asked, since
/// wgpu cannot report a missing WebGPU as an error everywhere.
#[cfg(feature = "webgpu")]
fn has_navigator_gpu() -> bool {
    let navigator = Reflect::get(&js_sys::global(), &JsValue::from_str("navigator")).unwrap_or(JsValue::UNDEFINED);
    !is_missing(&navigator) && Reflect::get(&navigator, &JsValue::from_str("gpu")).map(|g| !is_missing(&g)).unwrap_or(false)
}

fn busy() -> JsValue {
    js_err("this Explainer is busy with an explainAsync() call: await it before calling again")
}

/// The bytes of a Uint8Array or ArrayBuffer.
fn bytes_of(v: &JsValue) -> Option<Vec<u8>> {
    (v.is_instance_of::<Uint8Array>() || v.is_instance_of::<js_sys::ArrayBuffer>()).then(|| Uint8Array::new(v).to_vec())
}

/// The constructor options that describe the model: `arch`, `labels` (an array of names, or the
/// text of a labels file), `inputSize`, `mean`/`std` (three numbers each, on x / 255) and
/// `externalData` (an ONNX file's `.onnx.data` bytes).
fn model_settings(opts: &Option<JsValue>) -> JsResult<ModelSettings> {
    let mut s = ModelSettings { arch: opt_string(opts, "arch")?.map(|n| Arch::from_name(&n).map_err(js_err)).transpose()?, ..Default::default() };
    let Some(o) = opts else { return Ok(s) };
    let labels = get(o, "labels")?;
    if let Some(text) = labels.as_string() {
        s.labels = Some(parse_labels(&text).map_err(js_err)?);
    } else if Array::is_array(&labels) {
        let labels = Array::from(&labels);
        if labels.length() > 100_000 {
            return Err(js_err(format!("option 'labels' has {} entries; at most 100000 are accepted", labels.length())));
        }
        let labels: Vec<String> = labels.iter().enumerate().map(|(i, l)| l.as_string().ok_or_else(|| js_err(format!("labels[{i}] must be a string")))).collect::<JsResult<_>>()?;
        check_labels(&labels).map_err(js_err)?;
        s.labels = Some(labels);
    } else if !is_missing(&labels) {
        return Err(js_err("option 'labels' must be an array of strings or the text of a labels file (a JSON array or one name per line)"));
    }
    if let Some(n) = opt_number(opts, "inputSize")? {
        s.input_size = Some(index(&JsValue::from_f64(n), "option 'inputSize'")?);
    }
    match (triple(o, "mean")?, triple(o, "std")?) {
        (None, None) => {}
        (Some(mean), Some(std)) => s.normalize = Some(Normalize::MeanStd { mean, std }),
        _ => return Err(js_err("options 'mean' and 'std' go together, e.g. { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }")),
    }
    let data = get(o, "externalData")?;
    if !is_missing(&data) {
        s.external_data = Some(bytes_of(&data).ok_or_else(|| js_err("option 'externalData' must be a Uint8Array or an ArrayBuffer (the .onnx.data file)"))?);
    }
    Ok(s)
}

/// The `calibration` option: earlier loads' `backendInfo().calibration` records, at most 16.
fn calibration_records(opts: &Option<JsValue>) -> JsResult<Vec<Calibration>> {
    let Some(o) = opts else { return Ok(Vec::new()) };
    let v = get(o, "calibration")?;
    if is_missing(&v) {
        return Ok(Vec::new());
    }
    if !Array::is_array(&v) {
        return Err(js_err("option 'calibration' must be an array of earlier backendInfo().calibration records"));
    }
    let list = Array::from(&v);
    if list.length() > 16 {
        return Err(js_err(format!("option 'calibration' has {} records; at most 16 (one per adapter) are accepted", list.length())));
    }
    list.iter().enumerate().map(|(i, r)| calibration_record(r).map_err(|why| js_err(format!("option 'calibration'[{i}] {why}")))).collect()
}

fn calibration_record(r: JsValue) -> Result<Calibration, &'static str> {
    if !r.is_object() {
        return Err("must be an object { adapter, chose, cpuMs, webgpuMs }");
    }
    let field = |k: &str| Reflect::get(&r, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED);
    let adapter = field("adapter").as_string().filter(|a| a.len() <= 256).ok_or("needs 'adapter', a string of at most 256 characters")?;
    let chose = match field("chose").as_string().as_deref() {
        Some("cpu") => "cpu",
        Some("webgpu") => "webgpu",
        _ => return Err("needs 'chose', 'cpu' or 'webgpu'"),
    };
    let cpu_ms = field("cpuMs").as_f64().ok_or("needs 'cpuMs', a number")?;
    let webgpu_ms = field("webgpuMs").as_f64();
    Ok(Calibration { adapter, chose, cpu_ms, webgpu_ms, cached: true })
}

/// An option holding three numbers (one per RGB channel).
fn triple(o: &JsValue, key: &str) -> JsResult<Option<[f32; 3]>> {
    let v = get(o, key)?;
    if is_missing(&v) {
        return Ok(None);
    }
    let bad = || js_err(format!("option '{key}' must be an array of three numbers (R, G, B)"));
    if !Array::is_array(&v) || Array::from(&v).length() != 3 {
        return Err(bad());
    }
    let a = Array::from(&v);
    let mut out = [0.0f32; 3];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = a.get(i as u32).as_f64().ok_or_else(bad)? as f32;
    }
    Ok(Some(out))
}

/// A loaded model, ready to explain canvas images.
#[wasm_bindgen]
pub struct Explainer {
    state: Rc<RefCell<State>>,
    /// The last `explainAsync` promise: the next one waits for it, so calls run one at a time in order.
    queue: Rc<RefCell<Option<Promise>>>,
    // What the model is never changes: kept outside the state so these answer even while busy.
    num_classes: usize,
    input_size: (usize, usize),
    arch: String,
    default_layer: String,
    layers: Vec<LayerInfo>,
}

impl Explainer {
    fn load(model_bytes: &JsValue, opts: &Option<JsValue>, requested: Backend) -> JsResult<Explainer> {
        let bytes = bytes_of(model_bytes).ok_or_else(|| js_err("modelBytes must be a Uint8Array or an ArrayBuffer holding a .safetensors, .pth or .onnx file"))?;
        let settings = model_settings(opts)?;
        let memory_budget_mib = opt_number(opts, "memoryBudgetMiB")?.map(|n| count(n, "memoryBudgetMiB")).transpose()?;
        let model = settings.load(&bytes).map_err(js_err)?;
        drop(bytes); // the graph holds its own f32 copy: do not keep the file twice
        drop(settings);
        let (num_classes, input_size, arch, default_layer, layers) = (model.graph.num_classes, model.input_size(), model.arch.name().to_string(), model.default_layer(), model.layers());
        let note = if requested == Backend::Cpu { "CPU: asked for".to_string() } else { "CPU: WebGPU starts only with Explainer.create()".to_string() };
        let state = State {
            inner: match memory_budget_mib {
                // One explanation's allocations together (`Explainer::with_memory_budget`).
                Some(mib) => crate::Explainer::new(model).with_memory_budget((mib as u64) << 20),
                None => crate::Explainer::new(model),
            },
            last: None,
            #[cfg(feature = "webgpu")]
            gpu: None,
            requested,
            adapter: None,
            software: false,
            note,
            calibrate: opt_bool(opts, "calibrate")?,
            known: calibration_records(opts)?,
            calibration: None,
        };
        Ok(Explainer { state: Rc::new(RefCell::new(state)), queue: Rc::new(RefCell::new(None)), num_classes, input_size, arch, default_layer, layers })
    }

    fn state(&self) -> JsResult<std::cell::RefMut<'_, State>> {
        self.state.try_borrow_mut().map_err(|_| busy())
    }

    /// `call` as a promise that starts once the async call before it has settled: calls run one at a
    /// time, in order.
    fn queued(&self, call: impl std::future::Future<Output = JsResult<JsValue>> + 'static) -> Promise {
        let previous = self.queue.borrow_mut().take();
        let promise = wasm_bindgen_futures::future_to_promise(async move {
            if let Some(previous) = previous {
                let _ = wasm_bindgen_futures::JsFuture::from(previous).await; // its outcome is its caller's
            }
            call.await
        });
        *self.queue.borrow_mut() = Some(promise.clone());
        promise
    }
}

#[wasm_bindgen]
impl Explainer {
    /// `new Explainer(modelBytes, { arch?, labels?, backend? })`: safetensors or legacy `.pth` bytes.
    /// Synchronous, so CPU only: `backend` may be 'auto' or 'cpu'. For WebGPU use `Explainer.create`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(js_name = modelBytes, unchecked_param_type = "Uint8Array | ArrayBuffer")] model_bytes: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ExplainerOptions | undefined")] options: JsValue,
    ) -> JsResult<Explainer> {
        let opts = options_object(&options, "constructor option", CONSTRUCTOR_KEYS)?;
        let requested = backend_opt(&opts)?;
        if requested == Backend::WebGpu {
            return Err(js_err("WebGPU starts asynchronously: use `await Explainer.create(modelBytes, { backend: 'webgpu' })` instead of `new Explainer(...)`"));
        }
        Explainer::load(&model_bytes, &opts, requested)
    }

    /// `await Explainer.create(modelBytes, { arch?, labels?, backend? })`: like `new Explainer`, and
    /// starts the WebGPU backend ('auto', the default, uses it on a hardware adapter the model fits;
    /// 'webgpu' on any adapter; 'cpu' never). Without WebGPU it resolves to a CPU explainer, never fails
    /// for lack of a GPU; `backendInfo()` says which backend runs and why.
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn create(
        #[wasm_bindgen(js_name = modelBytes, unchecked_param_type = "Uint8Array | ArrayBuffer")] model_bytes: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ExplainerOptions | undefined")] options: JsValue,
    ) -> JsResult<Explainer> {
        let opts = options_object(&options, "constructor option", CONSTRUCTOR_KEYS)?;
        let requested = backend_opt(&opts)?;
        let explainer = Explainer::load(&model_bytes, &opts, requested)?;
        if requested != Backend::Cpu {
            // Nothing else can hold this explainer yet: JS gets it only when this future resolves.
            let mut state = explainer.state()?;
            #[cfg(feature = "webgpu")]
            state.start_gpu().await;
            #[cfg(not(feature = "webgpu"))]
            {
                state.note = "CPU: this build of gradcam-wasm has no WebGPU (cargo feature `webgpu`)".into();
                if requested == Backend::WebGpu {
                    warn("WebGPU was asked for but this build has no WebGPU backend; explaining on the CPU");
                }
            }
        }
        Ok(explainer)
    }

    /// `explain(imageData, classIdx?, options?)`, synchronously on the CPU; `classIdx` undefined/null
    /// means the top-1 class. `explainAsync` takes the same arguments and uses WebGPU when active.
    #[wasm_bindgen(unchecked_return_type = "ExplainResult")]
    pub fn explain(
        &mut self,
        #[wasm_bindgen(js_name = imageData, unchecked_param_type = "ImageData")] image_data: JsValue,
        #[wasm_bindgen(js_name = classIdx, unchecked_param_type = "number | string | undefined")] class_idx: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ExplainOptions | undefined")] options: JsValue,
    ) -> JsResult<JsValue> {
        let request = Request::parse(&image_data, &class_idx, &options, self.num_classes, self.input_size)?;
        let mut state = self.state()?;
        request.arm_cancel();
        let e = state.inner.explain_with_progress(&request.image, &request.opts, &mut request.progress());
        crate::cancel::reset(None);
        state.finish(&e.map_err(js_err)?, request)
    }

    /// `evaluate(imageData, classIdx?, options?)`: explains on the CPU as `explain` does, then measures
    /// the map (src/eval): deletion and insertion curves of the target's softmax probability with
    /// their AUCs, the confidence change when only the map's region is kept, the 15% box, and ROAD
    /// when `road: true`. Runs `2 * steps + 2` forwards (plus 19 for ROAD).
    #[wasm_bindgen(unchecked_return_type = "EvaluateResult")]
    pub fn evaluate(
        &mut self,
        #[wasm_bindgen(js_name = imageData, unchecked_param_type = "ImageData")] image_data: JsValue,
        #[wasm_bindgen(js_name = classIdx, unchecked_param_type = "number | string | undefined")] class_idx: JsValue,
        #[wasm_bindgen(unchecked_param_type = "EvaluateOptions | undefined")] options: JsValue,
    ) -> JsResult<JsValue> {
        let request = EvaluateRequest::parse(&image_data, &class_idx, &options, self.num_classes, self.input_size)?;
        let mut state = self.state()?;
        request.explain.arm_cancel();
        let measured = crate::cancel::run_sync(request.measure(&mut state.inner));
        crate::cancel::reset(None);
        to_js(&measured.map_err(js_err)?.result())
    }

    /// `await evaluateAsync(imageData, classIdx?, options?)`: `evaluate`, pausing between batches so
    /// that an abort (`isCancelled`, checked after each pause) stops it within one batch. Queued
    /// behind the `explainAsync` calls before it.
    #[wasm_bindgen(js_name = evaluateAsync, unchecked_return_type = "Promise<EvaluateResult>")]
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn evaluate_async(
        &self,
        #[wasm_bindgen(js_name = imageData, unchecked_param_type = "ImageData")] image_data: JsValue,
        #[wasm_bindgen(js_name = classIdx, unchecked_param_type = "number | string | undefined")] class_idx: JsValue,
        #[wasm_bindgen(unchecked_param_type = "EvaluateOptions | undefined")] options: JsValue,
    ) -> Promise {
        let request = match EvaluateRequest::parse(&image_data, &class_idx, &options, self.num_classes, self.input_size) {
            Ok(r) => r,
            Err(e) => return Promise::reject(&e),
        };
        let state = self.state.clone();
        self.queued(async move {
            // Held across the pauses on purpose: it is this explainer's lock (see `State`).
            let mut state = state.try_borrow_mut().map_err(|_| busy())?;
            request.explain.arm_cancel();
            let measured = with_event_loop_pauses(request.measure(&mut state.inner)).await;
            crate::cancel::reset(None);
            to_js(&measured.map_err(js_err)?.result())
        })
    }

    /// `await explainAsync(imageData, classIdx?, options?)`: `explain` on the active backend (WebGPU or
    /// the CPU). Calls queue up and run one at a time, in order. Bad arguments reject the promise.
    #[wasm_bindgen(js_name = explainAsync, unchecked_return_type = "Promise<ExplainResult>")]
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn explain_async(
        &self,
        #[wasm_bindgen(js_name = imageData, unchecked_param_type = "ImageData")] image_data: JsValue,
        #[wasm_bindgen(js_name = classIdx, unchecked_param_type = "number | string | undefined")] class_idx: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ExplainOptions | undefined")] options: JsValue,
    ) -> Promise {
        let request = match Request::parse(&image_data, &class_idx, &options, self.num_classes, self.input_size) {
            Ok(r) => r,
            Err(e) => return Promise::reject(&e),
        };
        let state = self.state.clone();
        self.queued(async move {
            // Held across the GPU awaits and the pauses on purpose: it is this explainer's lock (see `State`).
            let mut state = state.try_borrow_mut().map_err(|_| busy())?;
            request.arm_cancel(); // after the wait: the call before this one has reset it when done
            let e = with_event_loop_pauses(state.explain(&request)).await;
            crate::cancel::reset(None);
            state.finish(&e.map_err(js_err)?, request)
        })
    }

    /// `await recordShardAsync(call, imageData, classIdx?, options?, shardIndex, shardCount, known?)`:
    /// runs `call` ('explain' or 'evaluate', with their arguments) on the CPU computing only this
    /// shard's share of its batched calls (src/tape.rs), and resolves to that share as a `ShardTape`;
    /// `known` (a merged `ShardTape` of an earlier round) answers the calls it holds. The map is
    /// not made. `replayAsync` with the shards' merged tapes then gives the call's result.
    #[wasm_bindgen(js_name = recordShardAsync, unchecked_return_type = "Promise<ShardTape>")]
    #[allow(clippy::await_holding_refcell_ref, clippy::too_many_arguments)]
    pub fn record_shard_async(
        &self,
        #[wasm_bindgen(unchecked_param_type = "'explain' | 'evaluate'")] call: String,
        #[wasm_bindgen(js_name = imageData, unchecked_param_type = "ImageData")] image_data: JsValue,
        #[wasm_bindgen(js_name = classIdx, unchecked_param_type = "number | string | undefined")] class_idx: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ExplainOptions | EvaluateOptions | undefined")] options: JsValue,
        #[wasm_bindgen(js_name = shardIndex)] shard_index: u32,
        #[wasm_bindgen(js_name = shardCount)] shard_count: u32,
        #[wasm_bindgen(unchecked_param_type = "ShardTape | undefined")] known: JsValue,
    ) -> Promise {
        let parsed = TapedCall::parse(&call, &image_data, &class_idx, &options, self.num_classes, self.input_size)
            .and_then(|c| Ok((c, crate::tape::Shard::new(shard_index as usize, shard_count as usize).map_err(js_err)?)));
        let (call, shard) = match parsed {
            Ok(p) => p,
            Err(e) => return Promise::reject(&e),
        };
        let state = self.state.clone();
        self.queued(async move {
            // Held across the pauses on purpose: it is this explainer's lock (see `State`).
            let mut state = state.try_borrow_mut().map_err(|_| busy())?;
            let known = tape_from_js(&known, &state)?;
            state.inner.set_taping(Some(crate::tape::Taping::record(shard, known)));
            let outcome = call.run(&mut state.inner).await;
            let taping = state.inner.set_taping(None).ok_or_else(|| js_err("internal: the recording went missing"))?;
            recorded_to_js(&taping.finish(outcome).map_err(js_err)?)
        })
    }

    /// `await replayAsync(call, imageData, classIdx?, options?, tape)`: `explainAsync` or
    /// `evaluateAsync` (as `call` says) on the CPU with every batched call answered from `tape`, the
    /// merged `ShardTape`s of `recordShardAsync`: the same result, bit for bit, as computing them.
    /// A call the tape lacks, or answers with the wrong number of values, is an error.
    #[wasm_bindgen(js_name = replayAsync, unchecked_return_type = "Promise<ExplainResult | EvaluateResult>")]
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn replay_async(
        &self,
        #[wasm_bindgen(unchecked_param_type = "'explain' | 'evaluate'")] call: String,
        #[wasm_bindgen(js_name = imageData, unchecked_param_type = "ImageData")] image_data: JsValue,
        #[wasm_bindgen(js_name = classIdx, unchecked_param_type = "number | string | undefined")] class_idx: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ExplainOptions | EvaluateOptions | undefined")] options: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ShardTape")] tape: JsValue,
    ) -> Promise {
        let call = match TapedCall::parse(&call, &image_data, &class_idx, &options, self.num_classes, self.input_size) {
            Ok(c) => c,
            Err(e) => return Promise::reject(&e),
        };
        let state = self.state.clone();
        self.queued(async move {
            let mut state = state.try_borrow_mut().map_err(|_| busy())?;
            if is_missing(&tape) {
                return Err(js_err("replayAsync needs the merged tape of the shards"));
            }
            let tape = tape_from_js(&tape, &state)?;
            state.inner.set_taping(Some(crate::tape::Taping::replay(tape)));
            let outcome = call.run(&mut state.inner).await;
            state.inner.set_taping(None);
            match (outcome.map_err(js_err)?, call) {
                (Outcome::Explained(e), TapedCall::Explain(request)) => state.finish(&e, request),
                (Outcome::Measured(m), _) => to_js(&m.result()),
                _ => Err(js_err("internal: a replay answered another call")),
            }
        })
    }

    /// `overlay(imageData, result?, { colormap?, alpha? })`: the heatmap blended over the photo, as an
    /// `ImageData` for `putImageData`. Without `result`, the last explanation is used.
    pub fn overlay(
        &self,
        #[wasm_bindgen(js_name = imageData, unchecked_param_type = "ImageData")] image_data: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ExplainResult | undefined")] result: JsValue,
        #[wasm_bindgen(unchecked_param_type = "OverlayOptions | undefined")] options: JsValue,
    ) -> JsResult<ImageData> {
        let opts = options_object(&options, "overlay option", OVERLAY_KEYS)?;
        let cmap = colormap_opt(&opts)?.unwrap_or(DEFAULT_COLORMAP);
        let alpha = alpha_opt(&opts)?.unwrap_or(DEFAULT_ALPHA);
        let image = read_image(&image_data)?;
        let heat = if is_missing(&result) { self.state()?.last.clone().ok_or_else(|| js_err("no explanation yet: call explain() first or pass its result"))? } else { heat_from_js(&result)? };
        heat.overlay(&image, cmap, alpha)
    }

    /// The top-`k` classes (default 5) of an image, on the CPU.
    #[wasm_bindgen(unchecked_return_type = "Prediction[]")]
    pub fn predict(
        &mut self,
        #[wasm_bindgen(js_name = imageData, unchecked_param_type = "ImageData")] image_data: JsValue,
        #[wasm_bindgen(unchecked_param_type = "number | undefined")] k: JsValue,
    ) -> JsResult<JsValue> {
        let k = if is_missing(&k) { 5 } else { index(&k, "k")? };
        if k == 0 {
            return Err(js_err("k must be at least 1"));
        }
        let image = read_image(&image_data)?;
        let ps = self.state()?.inner.predict(&image, k).map_err(js_err)?;
        to_js(&ps)
    }

    /// Every layer that can be explained: `{ name, aliases, kind, shape: [c, h, w] at the input size, default }`.
    #[wasm_bindgen(unchecked_return_type = "LayerInfo[]")]
    pub fn layers(&self) -> JsResult<JsValue> {
        to_js(&self.layers.iter().map(|l| LayerResult::of(l, &self.default_layer)).collect::<Vec<_>>())
    }

    /// The method names `explain` accepts.
    #[wasm_bindgen(unchecked_return_type = "string[]")]
    pub fn methods(&self) -> Array {
        crate::methods::ALL.iter().map(|m| JsValue::from_str(m.name())).collect()
    }

    /// The colormap names `explain` and `overlay` accept.
    #[wasm_bindgen(unchecked_return_type = "string[]")]
    pub fn colormaps(&self) -> Array {
        Colormap::ALL.iter().map(|c| JsValue::from_str(c.name())).collect()
    }

    #[wasm_bindgen(js_name = defaultLayer)]
    pub fn default_layer(&self) -> String {
        self.default_layer.clone()
    }

    #[wasm_bindgen(js_name = numClasses)]
    pub fn num_classes(&self) -> u32 {
        self.num_classes as u32
    }

    /// The architecture name (detected or given; 'onnx' for an imported ONNX graph).
    pub fn arch(&self) -> String {
        self.arch.clone()
    }

    /// The square input size the network is fed (the centre crop of the evaluation transform).
    #[wasm_bindgen(js_name = inputSize)]
    pub fn input_size(&self) -> u32 {
        self.input_size.0 as u32
    }

    /// The backend `explainAsync` uses now: 'webgpu' or 'cpu'.
    pub fn backend(&self) -> JsResult<String> {
        Ok(self.state()?.active_backend().to_string())
    }

    /// Destroys the WebGPU device as a driver reset would, to test the CPU fallback. Not for pages.
    #[doc(hidden)]
    #[wasm_bindgen(js_name = simulateGpuLoss)]
    pub fn simulate_gpu_loss(&self) -> JsResult<()> {
        #[cfg(feature = "webgpu")]
        if let Some(gpu) = self.state()?.gpu.as_mut() {
            gpu.lose_device();
        }
        Ok(())
    }

    /// `{ backend, requested, adapter, software, note }`: which backend runs, and why.
    #[wasm_bindgen(js_name = backendInfo, unchecked_return_type = "BackendInfo")]
    pub fn backend_info(&self) -> JsResult<JsValue> {
        let s = self.state()?;
        to_js(&BackendInfo { backend: s.active_backend(), requested: s.requested.name(), adapter: s.adapter.as_deref(), software: s.software, note: &s.note, calibration: s.calibration.as_ref() })
    }
}

fn heat_from_js(result: &JsValue) -> JsResult<Heat> {
    let map = get(result, "heatmap")?;
    if !map.is_instance_of::<Float32Array>() {
        return Err(js_err("result.heatmap must be a Float32Array (pass the object explain() returned)"));
    }
    let map = Float32Array::from(map).to_vec();
    let width = index(&get(result, "width")?, "result.width")?;
    let height = index(&get(result, "height")?, "result.height")?;
    if width.checked_mul(height) != Some(map.len()) {
        return Err(js_err(format!("result.heatmap has {} values but result is {width}x{height}", map.len())));
    }
    let g = get(result, "geometry")?;
    let mask = if is_missing(&g) {
        vec![true; map.len()]
    } else {
        // The geometry's image size is checked against the map before its mask is allocated.
        let geometry = geometry_from_js(&g)?;
        if (geometry.orig_w, geometry.orig_h) != (width, height) {
            return Err(js_err(format!("result.geometry is for a {}x{} image but result is {width}x{height}", geometry.orig_w, geometry.orig_h)));
        }
        crop_mask(&geometry).map_err(js_err)?
    };
    if mask.len() != map.len() {
        return Err(js_err("result.geometry does not match result.width x result.height"));
    }
    Ok(Heat { width, height, map, mask })
}

/// A call that `recordShardAsync` and `replayAsync` run with a taping in force.
enum TapedCall {
    Explain(Request),
    Evaluate(EvaluateRequest),
}

enum Outcome {
    Explained(Explanation),
    Measured(Measured),
}

impl TapedCall {
    fn parse(call: &str, image_data: &JsValue, class_idx: &JsValue, options: &JsValue, num_classes: usize, input_size: (usize, usize)) -> JsResult<TapedCall> {
        match call {
            "explain" => Ok(TapedCall::Explain(Request::parse(image_data, class_idx, options, num_classes, input_size)?)),
            "evaluate" => Ok(TapedCall::Evaluate(EvaluateRequest::parse(image_data, class_idx, options, num_classes, input_size)?)),
            _ => Err(js_err(format!("the call to shard must be 'explain' or 'evaluate', got '{call}'"))),
        }
    }

    fn request(&self) -> &Request {
        match self {
            TapedCall::Explain(r) => r,
            TapedCall::Evaluate(e) => &e.explain,
        }
    }

    /// Runs the call on the CPU explainer, pausing between batches so an abort is seen mid-run.
    async fn run(&self, inner: &mut crate::Explainer) -> crate::Result<Outcome> {
        self.request().arm_cancel();
        let outcome = with_event_loop_pauses(async {
            match self {
                TapedCall::Explain(r) => inner.explain_with_progress_async(&r.image, &r.opts, &mut r.progress()).await.map(Outcome::Explained),
                TapedCall::Evaluate(e) => e.measure(inner).await.map(Outcome::Measured),
            }
        })
        .await;
        crate::cancel::reset(None);
        outcome
    }
}

/// A `ShardTape` from JS ({calls: Uint32Array, lengths: Uint32Array, data: Float32Array}; missing:
/// empty), its size checked against the explainer's memory budget before it is copied in.
fn tape_from_js(v: &JsValue, state: &State) -> JsResult<crate::tape::Tape> {
    use js_sys::Uint32Array;
    if is_missing(v) {
        return Ok(crate::tape::Tape::new());
    }
    let array = |key: &str| get(v, key);
    let calls = array("calls")?.dyn_into::<Uint32Array>().map_err(|_| js_err("tape.calls must be a Uint32Array"))?;
    let lengths = array("lengths")?.dyn_into::<Uint32Array>().map_err(|_| js_err("tape.lengths must be a Uint32Array"))?;
    let data = array("data")?.dyn_into::<Float32Array>().map_err(|_| js_err("tape.data must be a Float32Array"))?;
    let (n, bytes, budget) = (calls.length() as usize, 4 * data.length() as u64, state.inner.memory_budget());
    if n > crate::tape::MAX_CALLS || lengths.length() as usize != n {
        return Err(js_err(format!("a tape of {n} calls and {} lengths is malformed (they pair up, at most {})", lengths.length(), crate::tape::MAX_CALLS)));
    }
    if bytes > budget {
        return Err(js_err(format!("a tape of {} MiB is over the {} MiB memory budget of this explainer", bytes >> 20, budget >> 20)));
    }
    crate::tape::Tape::from_parts(&calls.to_vec(), &lengths.to_vec(), data.length() as usize, |start, end| data.subarray(start as u32, end as u32).to_vec()).map_err(js_err)
}

/// A recording as a `ShardTape`, with `complete` and `count` (the calls made in all).
fn recorded_to_js(r: &crate::tape::Recorded) -> JsResult<JsValue> {
    let (calls, lengths, data) = r.tape.to_flat();
    let out = Object::new();
    set(&out, "calls", js_sys::Uint32Array::from(&calls[..]))?;
    set(&out, "lengths", js_sys::Uint32Array::from(&lengths[..]))?;
    set(&out, "data", Float32Array::from(&data[..]))?;
    set(&out, "complete", r.complete)?;
    set(&out, "count", r.calls as u32)?;
    Ok(out.into())
}

/// `shardsWell(method)`: whether `method` makes enough batched calls to gain from running across
/// several workers (`recordShardAsync`); unknown names say false.
#[wasm_bindgen(js_name = shardsWell)]
pub fn shards_well(method: &str) -> bool {
    Method::from_name(method).is_ok_and(crate::tape::worth_sharding)
}

/// A positive whole number option.
fn count(n: f64, what: &str) -> JsResult<usize> {
    if n.is_finite() && n >= 1.0 && n.fract() == 0.0 && n <= 1e6 {
        Ok(n as usize)
    } else {
        Err(js_err(format!("option: {what} must be a whole number >= 1, got {n}")))
    }
}
