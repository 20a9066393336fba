//! `gradcam`: the command-line tool (native builds only).
//!
//!   gradcam explain IMAGE [--model FILE] [--arch NAME] [--class N | --class N:W,M:V | --top K] [--method NAME] [--layer NAME[,NAME..]]
//!                         [--out overlay.png] [--json] [--colormap NAME] [--alpha A] [--signed] [--raw]
//!                         [--resize WxH] [--tensor input.npy]
//!                         [--ig-steps N] [--ig-baseline black|blur] [--smooth-samples N] [--smooth-noise F]
//!                         [--occlusion-patch N] [--occlusion-stride N] [--eigen-smooth] [--aug-smooth]
//!   gradcam evaluate [IMAGE] [--method NAME|all] [--class N] [--steps N] [--baseline blur|mean] [--cell N] [--json]
//!   gradcam layers [--model FILE] [--arch NAME]
//!   model settings (both commands): [--data FILE.onnx.data] [--labels FILE] [--size N] [--mean R,G,B --std R,G,B]
//!   gradcam convert IN.pth OUT.safetensors [--f16]

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    if let Err(e) = cli::run(std::env::args().skip(1).collect()) {
        // Every message ends with exactly one newline, whatever the error text ends with.
        eprintln!("gradcam: {}", e.trim_end());
        std::process::exit(2);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use gradcam_wasm::eval::faithfulness::{average_drop_increase, faithfulness, road_of, Faithfulness};
    use gradcam_wasm::eval::localization::draw_box_rgba;
    use gradcam_wasm::eval::pointing::{check_photos, pointing_game};
    use gradcam_wasm::eval::{bounding_box, Baseline, CurveOptions, Photo, PointingOptions, Road, RoadOptions, PAPER_THRESHOLD};
    use gradcam_wasm::imaging::colormap::Colormap;
    use gradcam_wasm::imaging::npy::read_npy_f32;
    use gradcam_wasm::imaging::overlay::{heat_to_rgba, overlay_rgba_masked};
    use gradcam_wasm::imaging::preprocess::{Normalize, Resize};
    use gradcam_wasm::imaging::project::crop_mask;
    use gradcam_wasm::imaging::rgb::RgbImage;
    use gradcam_wasm::loading::{parse_labels, parse_triple, ModelSettings};
    use gradcam_wasm::methods::attribution::Baseline as IgBaseline;
    use gradcam_wasm::schema::{EvaluateResult, ExplainResult};
    use gradcam_wasm::weights::{legacy_pth, safetensors_writer, zip_pth};
    use gradcam_wasm::{Arch, ExplainOptions, Explainer, Explanation, FeatureMap, Method, Model, Normalization, Target};
    use serde_json::json;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    type Res<T> = Result<T, String>;

    const USAGE: &str = "usage:
  gradcam explain IMAGE [--model FILE] [--arch NAME] [--class N | --class N:W,M:V | --top K] [--method NAME]
                        [--layer NAME[,NAME..]] [--out overlay.png] [--json] [--colormap turbo|jet|viridis|inferno] [--alpha 0.5]
                        [--signed] [--raw] [--resize WxH] [--tensor input.npy] [--box]
                        [--ig-steps N] [--ig-baseline black|blur] [--smooth-samples N] [--smooth-noise F]
                        [--occlusion-patch N] [--occlusion-stride N] [--eigen-smooth] [--aug-smooth]
                        [--memory-budget MIB]
  gradcam evaluate [IMAGE] [--method NAME|all] [--class N] [--steps 100] [--baseline blur|mean] [--cell 1]
                        [--score-cam-channels 64] [--samples DIR] [--json]
      without IMAGE: the pointing game on 1x2 and 2x2 grids of the bundled photos for every method,
      then deletion / insertion AUCs and average drop / increase on the single photos;
      with IMAGE: the curves, AUCs, confidence change and 15% box of that image's map(s)
  gradcam layers [--model FILE] [--arch NAME]
  gradcam convert IN.pth OUT.safetensors [--f16]
model settings (explain and layers):
  --model FILE      .safetensors, .pth (zip or legacy state dict) or .onnx
  --data FILE       an ONNX file's external weights (default: FILE.onnx.data beside it)
  --labels FILE     class names: a JSON array or one per line
  --size N          input size (default: the family's, e.g. 224; 299 for Inception v3; an ONNX file's own)
  --mean R,G,B --std R,G,B   normalization on x / 255 (default: the family's)
  --class N         the class to explain (default: the top-1); N:W,M:V,... explains the weighted
                    score W*y_N + V*y_M + ... (at most 64 terms; the reported class is the largest |weight|)
  --eigen-smooth    CAMs that sum weighted feature maps: their first principal component instead
                    of the sum (pytorch-grad-cam's eigen_smooth); no extra passes
  --aug-smooth      layer-grid CAMs: the mean map over the image and its mirror image, each times 0.9,
                    1 and 1.1 (pytorch-grad-cam's aug_smooth): 6 forward/backward passes instead of 1,
                    and 6x the work of Score-CAM or Ablation-CAM
  --ig-steps N      integrated-gradients steps (default 32, at most 256)
  --ig-baseline B   integrated-gradients and occlusion baseline: black (default) or blur
  --smooth-samples N   smoothgrad noisy copies (default 25, at most 256)
  --smooth-noise F  smoothgrad noise, a fraction of the input range (default 0.15)
  --occlusion-patch N --occlusion-stride N   occlusion window and step in input pixels (default: a
                    quarter of the shorter side and half that, 56 and 28 at 224: 49 windows, 50 forwards)
  --memory-budget MIB   the most memory one explanation may hold at once, its forward pass and its
                    method's buffers together (default: 4 GiB + 4x the model's f32 weights)";

    /// Flags that take no value.
    const SWITCHES: [&str; 7] = ["--json", "--signed", "--raw", "--f16", "--box", "--eigen-smooth", "--aug-smooth"];

    struct Args {
        positional: Vec<String>,
        flags: HashMap<String, String>,
    }

    fn parse(args: Vec<String>) -> Res<Args> {
        let mut positional = Vec::new();
        let mut flags = HashMap::new();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if a == "-h" || a == "--help" {
                return Err(USAGE.into());
            } else if SWITCHES.contains(&a.as_str()) {
                flags.insert(a, String::new());
            } else if a.starts_with("--") {
                let v = it.next().ok_or(format!("{a} needs a value\n{USAGE}"))?;
                flags.insert(a, v);
            } else {
                positional.push(a);
            }
        }
        Ok(Args { positional, flags })
    }

    impl Args {
        fn get(&self, k: &str) -> Option<&str> {
            self.flags.get(k).map(|s| s.as_str())
        }
        fn has(&self, k: &str) -> bool {
            self.flags.contains_key(k)
        }
        fn number<T: std::str::FromStr>(&self, k: &str) -> Res<Option<T>> {
            self.get(k).map(|v| v.parse().map_err(|_| format!("{k} takes a number, got '{v}'"))).transpose()
        }
    }

    pub fn run(args: Vec<String>) -> Res<()> {
        let mut args = parse(args)?;
        if args.positional.is_empty() {
            return Err(USAGE.into());
        }
        let command = args.positional.remove(0);
        match command.as_str() {
            "explain" => explain(&args),
            "layers" => layers(&args),
            "evaluate" => evaluate(&args),
            "convert" => convert(&args),
            other => Err(format!("unknown command '{other}'\n{USAGE}")),
        }
    }

    /// The bundled default model: $GRADCAM_MODEL, else assets/models/ of the checkout.
    fn default_model_path() -> PathBuf {
        std::env::var_os("GRADCAM_MODEL").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/efficientnet-lite0.safetensors"))
    }

    fn load_model(args: &Args) -> Res<Model> {
        let path = args.get("--model").map(PathBuf::from).unwrap_or_else(default_model_path);
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read model '{}': {e} (run scripts/setup.sh to fetch the default model, or pass --model FILE)", path.display()))?;
        let settings = model_settings(args, &path, &bytes)?;
        if gradcam_wasm::onnx::is_onnx(&bytes) {
            let imported = gradcam_wasm::onnx::import(&bytes, settings.external_data.as_deref()).map_err(|e| format!("{}: {e}", path.display()))?;
            for w in &imported.warnings {
                eprintln!("gradcam: note: {w}");
            }
            return settings.apply(imported.model).map_err(|e| format!("{}: {e}", path.display()));
        }
        settings.load(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `--arch`, `--labels`, `--size`, `--mean`/`--std`, and an ONNX file's external data (`--data`,
    /// else the file the model names, read from beside it).
    fn model_settings(args: &Args, path: &Path, bytes: &[u8]) -> Res<ModelSettings> {
        let mut s = ModelSettings { arch: args.get("--arch").map(Arch::from_name).transpose().map_err(|e| e.to_string())?, ..Default::default() };
        if let Some(file) = args.get("--labels") {
            let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read labels '{file}': {e}"))?;
            s.labels = Some(parse_labels(&text).map_err(|e| format!("{file}: {e}"))?);
        }
        s.input_size = args.number("--size")?;
        match (args.get("--mean"), args.get("--std")) {
            (None, None) => {}
            (Some(m), Some(d)) => s.normalize = Some(Normalize::MeanStd { mean: parse_triple("--mean", m).map_err(|e| e.to_string())?, std: parse_triple("--std", d).map_err(|e| e.to_string())? }),
            _ => return Err("--mean and --std go together (values on x / 255, e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)".into()),
        }
        s.external_data = match args.get("--data") {
            Some(data) => Some(std::fs::read(data).map_err(|e| format!("cannot read external data '{data}': {e}"))?),
            None if gradcam_wasm::onnx::is_onnx(bytes) => onnx_data_beside(path, bytes)?,
            None => None,
        };
        Ok(s)
    }

    /// The external data file an ONNX model names (`x.onnx.data`), read from beside the model.
    fn onnx_data_beside(path: &Path, bytes: &[u8]) -> Res<Option<Vec<u8>>> {
        let Some(loc) = gradcam_wasm::onnx::external_data_location(bytes).map_err(|e| e.to_string())? else { return Ok(None) };
        let rel = Path::new(&loc);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(format!("the external data location '{loc}' leaves the model's folder; refusing to read it (pass --data FILE)"));
        }
        let p = path.parent().unwrap_or(Path::new(".")).join(rel);
        let data = std::fs::read(&p).map_err(|e| format!("this ONNX file keeps its weights in '{loc}' (external data), but '{}' cannot be read: {e}", p.display()))?;
        Ok(Some(data))
    }

    fn layers(args: &Args) -> Res<()> {
        let model = load_model(args)?;
        let default = model.default_layer();
        let (w, h) = model.input_size();
        println!("# {} ({} classes); shapes for a {w}x{h} input; * marks the default target", model.arch.name(), model.graph.num_classes);
        for l in model.layers() {
            let mark = if l.name == default || l.aliases.contains(&default) { "*" } else { " " };
            let aliases = if l.aliases.is_empty() { String::new() } else { format!("  (also: {})", l.aliases.join(", ")) };
            println!("{mark} {:<40} {:<15} {}x{}x{}{aliases}", l.name, l.kind, l.shape.0, l.shape.1, l.shape.2);
        }
        Ok(())
    }

    fn convert(args: &Args) -> Res<()> {
        let [src, dst] = args.positional.as_slice() else { return Err(format!("convert takes IN.pth OUT.safetensors\n{USAGE}")) };
        let bytes = std::fs::read(src).map_err(|e| format!("cannot read '{src}': {e}"))?;
        let tensors = if zip_pth::is_zip(&bytes) { zip_pth::read_zip_pth(&bytes)? } else { legacy_pth::read_legacy_pth(&bytes)? };
        let tensors: Vec<_> = tensors.into_iter().filter(|t| !t.name.ends_with("num_batches_tracked")).collect();
        let store = if args.has("--f16") { safetensors_writer::StoreAs::F16 } else { safetensors_writer::StoreAs::F32 };
        let out = safetensors_writer::write_safetensors(&tensors, store, &[("source".into(), src.clone())])?;
        std::fs::write(dst, &out).map_err(|e| format!("cannot write '{dst}': {e}"))?;
        let params: usize = tensors.iter().map(|t| t.data.len()).sum();
        println!("wrote {dst}: {} tensors, {params} parameters, {} bytes", tensors.len(), out.len());
        // Check the result loads as a model.
        Model::from_bytes(&out, None).map_err(|e| format!("converted file does not load: {e}"))?;
        Ok(())
    }

    fn load_image(path: &str) -> Res<RgbImage> {
        let img = image::open(path).map_err(|e| format!("cannot read image '{path}': {e}"))?.to_rgb8();
        let (w, h) = img.dimensions();
        RgbImage::from_rgb(w as usize, h as usize, img.into_raw())
    }

    fn load_tensor(path: &str) -> Res<FeatureMap> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read '{path}': {e}"))?;
        let (shape, data) = read_npy_f32(&bytes).map_err(|e| format!("{path}: {e}"))?;
        match shape.as_slice() {
            [1, 3, h, w] | [3, h, w] => Ok(FeatureMap::new(3, *h, *w, data)),
            s => Err(format!("{path}: expected a 1x3xHxW or 3xHxW float32 tensor, got shape {s:?}")),
        }
    }

    fn options(args: &Args) -> Res<ExplainOptions> {
        let mut o = ExplainOptions::default();
        // `evaluate` takes a list of methods (or `all`) and sets each itself.
        if let Some(m) = args.get("--method").filter(|m| !m.contains(',') && *m != "all") {
            o.method = Method::from_name(m).map_err(|e| e.to_string())?;
        }
        // `--layer a,b`: several layers at once, their maps averaged (`ExplainOptions::layers`).
        match args.get("--layer").map(|l| l.split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>()) {
            Some(names) if names.len() > 1 => o.layers = names,
            names => o.layer = names.and_then(|n| n.into_iter().next()),
        }
        o.signed = args.has("--signed");
        o.eigen_smooth = args.has("--eigen-smooth");
        o.aug_smooth = args.has("--aug-smooth");
        if args.has("--raw") {
            o.normalization = Normalization::Raw;
        }
        if let Some(r) = args.get("--resize") {
            let (w, h) = r.split_once('x').ok_or(format!("--resize takes WxH, got '{r}'"))?;
            let p = |s: &str| s.parse::<usize>().map_err(|_| format!("--resize takes WxH, got '{r}'"));
            o.resize = Some(Resize::Exact { width: p(w)?, height: p(h)? });
        }
        let a = &mut o.attribution;
        a.steps = args.number("--ig-steps")?.unwrap_or(a.steps);
        if let Some(b) = args.get("--ig-baseline") {
            a.baseline = IgBaseline::from_name(b).map_err(|e| e.to_string())?;
        }
        a.samples = args.number("--smooth-samples")?.unwrap_or(a.samples);
        a.noise = args.number("--smooth-noise")?.unwrap_or(a.noise);
        a.patch = args.number("--occlusion-patch")?.or(a.patch);
        a.stride = args.number("--occlusion-stride")?.or(a.stride);
        a.check().map_err(|e| e.to_string())?;
        Ok(o)
    }

    /// `--class 281` or a weighted mix `--class 281:1,285:0.5`; `None` when not given.
    fn target(args: &Args, num_classes: usize) -> Res<Option<Target>> {
        args.get("--class").map(|t| Target::parse(t, num_classes).map_err(|e| format!("--class: {e}"))).transpose()
    }

    /// An explainer of the model, with `--memory-budget` if given.
    fn explainer(args: &Args) -> Res<Explainer> {
        let explainer = Explainer::new(load_model(args)?);
        Ok(match args.number::<u64>("--memory-budget")? {
            Some(0) => return Err("--memory-budget: give at least 1 MiB".into()),
            Some(mib) => explainer.with_memory_budget(mib.saturating_mul(1 << 20)),
            None => explainer,
        })
    }

    fn explain(args: &Args) -> Res<()> {
        let mut explainer = explainer(args)?;
        let mut opts = options(args)?;
        let colormap = Colormap::from_name(args.get("--colormap").unwrap_or("jet"))?;
        let alpha: f32 = args.number("--alpha")?.unwrap_or(0.5);
        let top: usize = args.number("--top")?.unwrap_or(1);
        let class = target(args, explainer.model().graph.num_classes)?;
        let (image, tensor) = match (args.get("--tensor"), args.positional.first()) {
            (Some(t), _) => (None, Some(load_tensor(t)?)),
            (None, Some(path)) => (Some(load_image(path)?), None),
            (None, None) => return Err(format!("explain needs an IMAGE or --tensor FILE\n{USAGE}")),
        };
        let run = |explainer: &mut Explainer, opts: &ExplainOptions| match (&image, &tensor) {
            (Some(img), _) => explainer.explain(img, opts).map_err(|e| e.to_string()),
            (_, Some(t)) => explainer.explain_tensor(t.clone(), opts).map_err(|e| e.to_string()),
            _ => Err("explain needs an IMAGE or --tensor FILE".to_string()),
        };
        let targets: Vec<Target> = match class {
            Some(t) => vec![t],
            None if top <= 1 => vec![Target::Top1],
            None => {
                let classes = explainer.model().graph.num_classes;
                if top > classes {
                    return Err(format!("--top {top} asks for more classes than the model has ({classes})"));
                }
                // The K best classes of this image's forward pass (reused by the explanations below).
                run(&mut explainer, &opts)?;
                let logits = explainer.last_logits().ok_or("no forward pass to rank the classes of")?.to_vec();
                explainer.top_k(&logits, top).iter().map(|p| Target::Class(p.class)).collect()
            }
        };
        let mut results = Vec::new();
        for t in targets {
            opts.target = t;
            results.push(run(&mut explainer, &opts)?);
        }
        for (i, e) in results.iter().enumerate() {
            if let Some(out) = args.get("--out") {
                let path = if results.len() > 1 { suffixed(out, e.class) } else { out.to_string() };
                write_overlay(&path, e, image.as_ref(), colormap, alpha, args.has("--box"))?;
                if !args.has("--json") {
                    eprintln!("wrote {path}");
                }
            }
            if !args.has("--json") {
                print_text(e, i == 0);
                if args.has("--box") {
                    print_box(e);
                }
            }
        }
        if args.has("--json") {
            let arch = explainer.model().arch.name();
            let mut obj = to_json(&results[0], arch)?;
            if results.len() > 1 {
                obj["explanations"] = results.iter().map(|e| to_json(e, arch)).collect::<Res<_>>()?;
            }
            println!("{obj}");
        }
        Ok(())
    }

    fn suffixed(path: &str, class: usize) -> String {
        match path.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}-{class}.{ext}"),
            None => format!("{path}-{class}"),
        }
    }

    fn write_overlay(path: &str, e: &Explanation, image: Option<&RgbImage>, cmap: Colormap, alpha: f32, draw_box: bool) -> Res<()> {
        let (w, h) = (e.image_map.width, e.image_map.height);
        let mut heat = e.image_map.data.clone();
        let peak = heat.iter().copied().fold(0.0f32, f32::max);
        if peak > 1.0 {
            heat.iter_mut().for_each(|v| *v /= peak); // --raw scale: draw relative to the peak
        }
        let mut rgba = match image {
            Some(img) => overlay_rgba_masked(img, &heat, &crop_mask(&e.geometry)?, cmap, alpha)?,
            None => heat_to_rgba(&heat, w, h, cmap)?,
        };
        if draw_box {
            // The paper's box: the largest segment of the map at 15% of its maximum, in white.
            if let Some(b) = bounding_box(&e.image_map, PAPER_THRESHOLD) {
                draw_box_rgba(&mut rgba, w, h, &b, [255, 255, 255], (w.max(h) / 200).max(2));
            }
        }
        image::save_buffer(path, &rgba, w as u32, h as u32, image::ExtendedColorType::Rgba8).map_err(|e| format!("cannot write '{path}': {e}"))
    }

    fn print_text(e: &Explanation, header: bool) {
        if header {
            println!("top-5:");
            for p in &e.top5 {
                println!("  {:>4}  {:<28} logit {:>7.3}  p {:.4}", p.class, p.label, p.logit, p.probability);
            }
        }
        println!(
            "{} of class {} ({}) at layer '{}': score {:.3}, p {:.4}, map {}x{}, {:.1} ms{}",
            e.method.name(),
            e.class,
            e.label,
            e.layer,
            e.score,
            e.probability,
            e.raw.width,
            e.raw.height,
            e.timings.total_ms,
            if e.forward_reused { " (forward reused)" } else { "" }
        );
        for w in &e.warnings {
            println!("  warning: {w}");
        }
    }

    /// One explanation as JSON: the result every front end reports (src/schema.rs, the JS names), the
    /// architecture and the map's 15% box, and the names this command used before (deprecated, gone in
    /// the next release: README, `--json`).
    fn to_json(e: &Explanation, arch: &str) -> Res<serde_json::Value> {
        let mut v = serde_json::to_value(ExplainResult::of(e, false)).map_err(|err| err.to_string())?;
        v["arch"] = json!(arch);
        v["box"] = json!(bounding_box(&e.image_map, PAPER_THRESHOLD));
        v["class"] = json!(e.class);
        v["score"] = json!(e.score);
        v["cam"] = json!({ "width": e.raw.width, "height": e.raw.height, "values": e.raw.data });
        v["forward_reused"] = json!(e.forward_reused);
        let t = &e.timings;
        for (key, ms) in [("preprocess_ms", t.preprocess_ms), ("forward_ms", t.forward_ms), ("method_ms", t.method_ms), ("project_ms", t.project_ms), ("total_ms", t.total_ms)] {
            v["timings"][key] = json!(ms);
        }
        for (p, out) in e.top5.iter().zip(v["top5"].as_array_mut().into_iter().flatten()) {
            out["class"] = json!(p.class);
        }
        Ok(v)
    }

    fn print_box(e: &Explanation) {
        match bounding_box(&e.image_map, PAPER_THRESHOLD) {
            Some(b) => println!("  box at 15% of the max: x {}..={}, y {}..={} ({}x{} px, segment of {} px)", b.x0, b.x1, b.y0, b.y1, b.width(), b.height(), b.pixels),
            None => println!("  box: none (the map has no positive value)"),
        }
    }

    type MethodFaithfulness = (Vec<(Faithfulness, Road)>, f64, Option<String>);

    /// The bundled photos and their classes (any of them counts as right).
    const PHOTOS: [(&str, &[usize]); 4] = [("coffee.png", &[967]), ("chelsea.png", &[281, 282, 285]), ("rocket.jpg", &[657, 812]), ("motorcycle_left.png", &[665, 670])];

    fn curve_options(args: &Args) -> Res<CurveOptions> {
        let mut o = CurveOptions::default();
        if let Some(steps) = args.number("--steps")? {
            o.steps = steps;
        }
        if let Some(cell) = args.number("--cell")? {
            o.cell = cell;
        }
        o.baseline = match args.get("--baseline").unwrap_or("blur") {
            "blur" => Baseline::Blur(5.0),
            "mean" => Baseline::Mean,
            other => return Err(format!("--baseline takes blur or mean, got '{other}'")),
        };
        Ok(o)
    }

    fn methods(args: &Args) -> Res<Vec<Method>> {
        match args.get("--method") {
            None | Some("all") => Ok(gradcam_wasm::methods::ALL.to_vec()),
            Some(list) => list.split(',').map(|m| Method::from_name(m).map_err(|e| e.to_string())).collect(),
        }
    }

    fn evaluate(args: &Args) -> Res<()> {
        let mut explainer = explainer(args)?;
        let curves = curve_options(args)?;
        let channels: usize = args.number("--score-cam-channels")?.unwrap_or(64);
        let methods = methods(args)?;
        let json = args.has("--json");
        if let Some(path) = args.positional.first() {
            let image = load_image(path)?;
            let mut opts = options(args)?;
            opts.score_cam.max_channels = Some(channels);
            opts.target = target(args, explainer.model().graph.num_classes)?.unwrap_or(Target::Top1);
            let mut out = Vec::new();
            for m in methods {
                opts.method = m;
                let e = explainer.explain(&image, &opts).map_err(|e| format!("{}: {e}", m.name()))?;
                let t0 = std::time::Instant::now();
                let f = faithfulness(&explainer, &image, &e, &opts, &curves).map_err(|e| format!("{}: {e}", m.name()))?;
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                let road = road_of(&explainer, &image, &e, &opts, &RoadOptions::default()).map_err(|e| format!("{}: ROAD: {e}", m.name()))?;
                if json {
                    // The JS `evaluate` result (src/schema.rs); `class` and `faithfulness` are the deprecated names.
                    let mut v = serde_json::to_value(EvaluateResult::of(&e, &f, Some(&road), ms)).map_err(|err| err.to_string())?;
                    v["class"] = json!(e.class);
                    v["faithfulness"] = json!(f);
                    out.push(v);
                } else {
                    println!(
                        "{:<16} class {} ({}): deletion AUC {:.4}, insertion AUC {:.4}, p {:.4} -> kept region {:.4} (drop {:.1}%{}), curves {:.0} ms",
                        m.name(),
                        e.class,
                        e.label,
                        f.deletion.auc,
                        f.insertion.auc,
                        f.confidence.original,
                        f.confidence.kept,
                        100.0 * f.confidence.drop,
                        if f.confidence.increase { ", increase" } else { "" },
                        ms
                    );
                    let list = |v: &[f32]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(" ");
                    println!("  ROAD at {:?}%: MoRF {} | LeRF {} | combined {:.4}", road.percentages, list(&road.morf), list(&road.lerf), road.combined);
                    print_box(&e);
                }
            }
            if json {
                println!("{}", serde_json::Value::Array(out));
            }
            return Ok(());
        }
        // The benchmark on the bundled photos.
        let dir = args.get("--samples").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples"));
        let mut photos = Vec::new();
        for (file, classes) in PHOTOS {
            let image = load_image(&dir.join(file).to_string_lossy())?;
            photos.push(Photo { name: file.to_string(), image, classes: classes.to_vec() });
        }
        let popts = PointingOptions { score_cam_channels: Some(channels), ..Default::default() };
        let checks = check_photos(&mut explainer, &photos, &popts).map_err(|e| e.to_string())?;
        let mut used = Vec::new();
        for (p, (top, ok)) in photos.iter().zip(&checks) {
            eprintln!("{:<20} top-1 {} ({}, p {:.3}): {}", p.name, top.class, top.label, top.probability, if *ok { "right, played" } else { "wrong, left out" });
            if *ok {
                used.push(p.clone());
            }
        }
        let report = pointing_game(&mut explainer, &used, &methods, &popts, &mut |m, done, total| {
            if done == total {
                eprintln!("pointing game: {m} done");
            }
        })
        .map_err(|e| e.to_string())?;
        // Faithfulness of each method on the single photos (top-1 class, the model's own preprocessing).
        // Per method: each photo's numbers, ms per photo, the error that stopped it.
        let mut faith: Vec<MethodFaithfulness> = Vec::new();
        for &m in &methods {
            let mut opts = ExplainOptions { method: m, ..Default::default() };
            opts.score_cam.max_channels = Some(channels);
            let (mut fs, mut ms, mut err) = (Vec::new(), 0.0, None);
            for p in &used {
                let t0 = std::time::Instant::now();
                let both = |explainer: &mut Explainer| {
                    let e = explainer.explain(&p.image, &opts)?;
                    Ok::<_, gradcam_wasm::Error>((faithfulness(explainer, &p.image, &e, &opts, &curves)?, road_of(explainer, &p.image, &e, &opts, &RoadOptions::default())?))
                };
                match both(&mut explainer) {
                    Ok(f) => fs.push(f),
                    Err(e) => {
                        err = Some(e.to_string());
                        break;
                    }
                }
                ms += t0.elapsed().as_secs_f64() * 1000.0;
            }
            eprintln!("faithfulness: {} done", m.name());
            faith.push((fs, ms / used.len().max(1) as f64, err));
        }
        if json {
            let rows: Vec<_> = report
                .methods
                .iter()
                .zip(&faith)
                .map(|(s, (fs, ms, err))| {
                    let (f, r): (Vec<_>, Vec<_>) = fs.iter().cloned().unzip();
                    json!({ "pointing": s, "faithfulness": f, "road": r, "ms_per_photo": ms, "faithfulness_error": err })
                })
                .collect();
            println!("{}", json!({ "photos": report.photos, "grids_1x2": report.grids_1x2, "grids_2x2": report.grids_2x2, "steps": curves.steps, "methods": rows }));
            return Ok(());
        }
        println!("pointing game on {} ({} 1x2 and {} 2x2 grids, {}-pixel cells; Score-CAM: {channels} channels)", report.photos.join(", "), report.grids_1x2, report.grids_2x2, popts.cell);
        println!(
            "| method | 1x2 hits | 2x2 hits | all | deletion AUC (lower is better) | insertion AUC (higher is better) | average drop % | increase in confidence % | ROAD combined (higher is better) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (s, (fs, _, err)) in report.methods.iter().zip(&faith) {
            let n = fs.len().max(1) as f32;
            let del = fs.iter().map(|f| f.0.deletion.auc).sum::<f32>() / n;
            let ins = fs.iter().map(|f| f.0.insertion.auc).sum::<f32>() / n;
            let road = fs.iter().map(|f| f.1.combined).sum::<f32>() / n;
            let (drop, inc) = average_drop_increase(&fs.iter().map(|f| f.0.confidence).collect::<Vec<_>>());
            let pct = |h: usize, t: usize| if t == 0 { 0.0 } else { 100.0 * h as f64 / t as f64 };
            let faith_cells = if err.is_some() || fs.is_empty() { "- | - | - | - | -".to_string() } else { format!("{del:.4} | {ins:.4} | {drop:.1} | {inc:.0} | {road:.4}") };
            println!("| {} | {}/{} | {}/{} | {}/{} ({:.0}%) | {faith_cells} |", s.method, s.hits_1x2, s.trials_1x2, s.hits_2x2, s.trials_2x2, s.hits(), s.trials(), pct(s.hits(), s.trials()));
            if let Some(e) = s.error.as_ref().or(err.as_ref()) {
                println!("  ({}: {e})", s.method);
            }
        }
        println!(
            "deletion / insertion: {} steps, {} baseline, {}-pixel cells; every score is the softmax probability of the top-1 class on each photo; ROAD at 10..90% (noisy linear imputation)",
            curves.steps,
            args.get("--baseline").unwrap_or("blur"),
            curves.cell
        );
        Ok(())
    }
}
