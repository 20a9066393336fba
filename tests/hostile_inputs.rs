//! Issue 14: inputs made to crash the core, each generated here (no committed blobs): images of
//! extreme shape, weight files whose key names carry huge layer indices, pickles that repeat a big
//! object through the memo (legacy and zip `.pth`), `.npy` headers nested a million deep, Score-CAM
//! batches and Eigen-CAM matrices beyond their budgets, and weights that overflow f32 inside the
//! network. Each must end in a clear error (or, for images, a correct map) within 5 s and a bounded
//! peak of live heap bytes (a counting allocator, in this test binary only), and the default model
//! must explain a photo normally afterwards.
//!
//! One #[test]: the allocator's counters are process-wide, so the cases run one after the other.

mod common;

use common::*;
use gradcam_wasm::imaging::npy::read_npy_f32;
use gradcam_wasm::imaging::preprocess::Resize;
use gradcam_wasm::imaging::rgb::RgbImage;
use gradcam_wasm::methods::score::ScoreCamOptions;
use gradcam_wasm::weights::legacy_pth::{read_legacy_pth, RawTensor};
use gradcam_wasm::weights::safetensors_writer::{write_safetensors, StoreAs};
use gradcam_wasm::weights::zip_pth::read_zip_pth;
use gradcam_wasm::{Arch, ExplainOptions, Explainer, Method, Model};
use std::io::{Cursor, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

#[path = "common/peak_allocator.rs"]
mod peak_allocator;

#[global_allocator]
static ALLOC: peak_allocator::Counting = peak_allocator::Counting;

const MIB: usize = 1 << 20;

/// Runs one case: no panic, under 5 s, peak live bytes above the start under `peak_limit`.
/// Returns the case's result; prints its time and peak (run with --nocapture to see them).
fn case<R>(name: &str, peak_limit: usize, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let (r, peak) = peak_allocator::peak_of(|| catch_unwind(AssertUnwindSafe(f)));
    let r = r.unwrap_or_else(|_| panic!("{name}: panicked"));
    let secs = t.elapsed().as_secs_f64();
    println!("{name:<58} {secs:>7.3} s  peak {:>8.2} MiB", peak as f64 / MIB as f64);
    assert!(secs < 5.0, "{name}: took {secs:.1} s");
    assert!(peak <= peak_limit, "{name}: peak {peak} bytes, over {peak_limit}");
    r
}

#[track_caller]
fn says(msg: &str, parts: &[&str]) {
    println!("    -> {msg}");
    for p in parts {
        assert!(msg.contains(p), "message lacks '{p}': {msg}");
    }
}

/// The error of an explanation that must fail (without printing a whole map if it did not).
fn err_of(r: gradcam_wasm::Result<gradcam_wasm::Explanation>) -> String {
    match r {
        Ok(e) => panic!("explained class {} where an error was due", e.class),
        Err(e) => e.to_string(),
    }
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8]));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn decode(bytes: &[u8]) -> RgbImage {
    let img = image::load_from_memory(bytes).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    RgbImage::from_rgb(w as usize, h as usize, img.into_raw()).unwrap()
}

// ------------------------------------------------------------------------------ pickles by hand

const MAGIC_LE: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

#[derive(Default)]
struct W(Vec<u8>);
impl W {
    fn op(&mut self, o: &[u8]) -> &mut Self {
        self.0.extend_from_slice(o);
        self
    }
    fn s(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
        self
    }
    fn int(&mut self, v: u32) -> &mut Self {
        self.0.push(b'J');
        self.0.extend(v.to_le_bytes());
        self
    }
    fn global(&mut self, m: &str, n: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend(format!("{m}\n{n}\n").as_bytes());
        self
    }
}

/// A state dict pickle of one 1-element tensor (storage '0') under a `key_len`-byte name, then
/// `repeats` more SETITEMs of the same (memoized) name and tensor: 5 bytes of input each.
fn memo_bomb_pickle(key_len: usize, repeats: usize) -> Vec<u8> {
    let mut w = W::default();
    w.op(&[0x80, 2]).global("collections", "OrderedDict").op(b")R");
    w.s(&"k".repeat(key_len)).op(b"q\x00");
    w.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
    w.op(b"(").s("storage").global("torch", "FloatStorage").s("0").s("cpu").int(1).op(b"NtQ");
    w.int(0).op(b"(").int(1).op(b"t").op(b"(").int(1).op(b"t").op(&[0x89]).op(b"N").op(b"tR");
    w.op(b"q\x01s");
    for _ in 0..repeats {
        w.op(b"h\x00h\x01s");
    }
    w.op(b".");
    w.0
}

fn legacy_file(pickle: &[u8]) -> Vec<u8> {
    let mut b = vec![0x80, 2, 0x8a, 10];
    b.extend(MAGIC_LE);
    b.push(b'.');
    b.extend([0x80, 2, b'M', 0xe9, 0x03, b'.']); // protocol 1001
    b.extend([0x80, 2, b'}', b'.']); // sys info
    b.extend(pickle);
    let mut k = W::default();
    k.op(&[0x80, 2]).op(b"](").s("0").op(b"e.");
    b.extend(k.0);
    b.extend(1u64.to_le_bytes());
    b.extend(1.0f32.to_le_bytes());
    b
}

fn zip_file(pickle: &[u8]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [("archive/data.pkl", pickle.to_vec()), ("archive/byteorder", b"little".to_vec()), ("archive/data/0", 1.0f32.to_le_bytes().to_vec())] {
        w.start_file(name, opts).unwrap();
        w.write_all(&data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

// ------------------------------------------------------------------------------ weight files

fn with_extra(mut sd: StateDict, name: &str, shape: &[usize]) -> Vec<u8> {
    let n = shape.iter().product();
    sd.tensors.push(RawTensor { name: name.into(), shape: shape.to_vec(), data: vec![0.5; n] });
    sd.bytes()
}

fn load_err(bytes: &[u8], arch: Option<Arch>) -> String {
    match Model::from_bytes(bytes, arch) {
        Ok(_) => panic!("a hostile weight file was accepted"),
        Err(e) => e.to_string(),
    }
}

/// A .npy (version 2: u32 header length) whose shape is nested `depth` tuples deep.
fn nested_npy(depth: usize) -> Vec<u8> {
    let mut header = b"{'descr': '<f4', 'fortran_order': False, 'shape': ".to_vec();
    header.extend(std::iter::repeat_n(b'(', depth));
    header.extend(std::iter::repeat_n(b')', depth));
    header.extend(b", }\n");
    let mut b = b"\x93NUMPY\x02\x00".to_vec();
    b.extend((header.len() as u32).to_le_bytes());
    b.extend(header);
    b
}

/// The ResNet ONNX fixture with `n` ConstantOfShape nodes of shape 4096 x 4096 in front.
fn onnx_with_big_constants(n: usize) -> Vec<u8> {
    use candle_onnx::onnx::{tensor_proto::DataType, ModelProto, NodeProto, TensorProto};
    use prost::Message;
    let mut m = ModelProto::decode(std::fs::read(repo().join("tests/fixtures/onnx/resnet.ts.onnx")).unwrap().as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(TensorProto { name: "big_shape".into(), dims: vec![2], data_type: DataType::Int64 as i32, int64_data: vec![4096, 4096], ..Default::default() });
    let fills = (0..n).map(|k| NodeProto { op_type: "ConstantOfShape".into(), name: format!("fill{k}"), input: vec!["big_shape".into()], output: vec![format!("filled{k}")], ..Default::default() });
    g.node.splice(0..0, fills);
    m.encode_to_vec()
}

#[test]
fn hostile_inputs_end_in_clear_errors_within_time_and_memory() {
    let model_bytes = default_model_bytes();
    let mut ex = Explainer::new(Model::from_bytes(&model_bytes, None).unwrap());
    drop(model_bytes);
    // Warm up (the first call keeps transformed conv weights within their own budget).
    let chelsea = sample("chelsea.png");
    let reference = ex.explain(&chelsea, &ExplainOptions::default()).unwrap();
    assert_eq!(reference.class, 282);

    // 1. Images of extreme shape: the resized long side (7.68 million pixels for 30000 x 1) is
    // never materialized; only the crop the network sees is resized. They explain.
    for (w, h) in [(30000u32, 1u32), (1, 30000), (20000, 3), (3, 20000)] {
        let bytes = png(w, h);
        let e = case(&format!("{w}x{h} PNG: decode + explain"), 64 * MIB, || {
            let img = decode(&bytes);
            ex.explain(&img, &ExplainOptions::default()).unwrap()
        });
        assert_eq!((e.image_map.width, e.image_map.height), (w as usize, h as usize));
        assert_eq!((e.raw.width, e.raw.height), (7, 7));
        assert!(e.image_map.data.iter().all(|v| v.is_finite()));
    }
    // An explicit resize whose network input is too large: refused before allocating.
    let img = decode(&png(30000, 1));
    let huge = ExplainOptions { resize: Some(Resize::Exact { width: 100_000, height: 100_000 }), ..Default::default() };
    let msg = case("30000x1, exact resize to 100000x100000", 4 * MIB, || err_of(ex.explain(&img, &huge)));
    says(&msg, &["network input", "4096 x 4096"]);
    let no_crop = ExplainOptions { resize: Some(Resize::ShorterSide { size: 256, crop: None }), ..Default::default() };
    let msg = case("30000x1, shorter side 256 without a crop", 4 * MIB, || err_of(ex.explain(&img, &no_crop)));
    says(&msg, &["7680000x256", "center crop"]);

    // 2. Key names with huge layer indices: a loop per index is never run.
    let vgg = || gradcam_wasm::synthetic::vgg(&gradcam_wasm::synthetic::VGG11, false, 16, 10);
    for (key, shape) in [("features.999999999.weight", &[1usize, 1, 1, 1][..]), ("classifier.4000000000.weight", &[1, 1]), ("features.99999999999999999999999.weight", &[1, 1, 1, 1])] {
        let bytes = with_extra(vgg(), key, shape);
        let msg = case(&format!("VGG-11 + '{key}'"), 16 * bytes.len() + 4 * MIB, || load_err(&bytes, Some(Arch::Vgg11)));
        says(&msg, &[key, "layer index", "corrupt"]);
    }
    let bytes = with_extra(vgg(), "features.999999999.weight", &[1, 1, 1, 1]);
    let msg = case("VGG-11 + 'features.999999999.weight', detected", 16 * bytes.len() + 4 * MIB, || load_err(&bytes, None));
    says(&msg, &["convs"]);
    let bytes = with_extra(gradcam_wasm::synthetic::resnet(18, 10), "layer4.4000000000.conv1.weight", &[1, 1, 1, 1]);
    let msg = case("ResNet-18 + 'layer4.4000000000.conv1.weight'", 16 * bytes.len() + 4 * MIB, || load_err(&bytes, None));
    says(&msg, &["layer4.4000000000.conv1.weight", "not part of this architecture"]);

    // 3. A 1 MB string memo-referenced 65536 times (64 GB if copied per reference).
    let pickle = memo_bomb_pickle(1 << 20, 65536);
    let legacy = legacy_file(&pickle);
    let msg = case("legacy .pth: 1 MB key referenced 65536 times", 40 * MIB, || read_legacy_pth(&legacy).unwrap_err());
    says(&msg, &["16 MiB", "memo"]);
    let msg = case("legacy .pth via Model::from_bytes", 40 * MIB, || load_err(&legacy, None));
    says(&msg, &["16 MiB", "legacy"]);
    let zipped = zip_file(&pickle);
    let msg = case("zip .pth: 1 MB key referenced 65536 times", 40 * MIB, || read_zip_pth(&zipped).unwrap_err());
    says(&msg, &["16 MiB", "memo"]);
    // The same file with the key referenced a few times loads (one tensor: repeats collapse).
    let ok = legacy_file(&memo_bomb_pickle(1000, 10));
    let ts = read_legacy_pth(&ok).unwrap();
    assert_eq!((ts.len(), ts[0].data.as_slice()), (1, &[1.0f32][..]));

    // 4. An .npy header nested a million tuples deep: refused at the depth limit.
    let npy = nested_npy(1_000_000);
    let msg = case("npy header nested 1,000,000 deep", 4 * MIB, || read_npy_f32(&npy).unwrap_err());
    says(&msg, &["nests deeper than 16"]);
    let npy = nested_npy(3);
    says(&read_npy_f32(&npy).unwrap_err(), &["not an integer"]);

    // 5. Score-CAM asked for a batch of a billion masked inputs: cut to the channel count and the
    // 64 MiB batch budget (111 inputs of 224 x 224) before the batch is allocated.
    let opts = ExplainOptions { method: Method::SCORE_CAM, score_cam: ScoreCamOptions { batch: Some(1_000_000_000), max_channels: Some(28) }, ..Default::default() };
    let e = case("Score-CAM, batch 1e9, 28 channels", 768 * MIB, || ex.explain(&chelsea, &opts).unwrap());
    assert_eq!((e.raw.width, e.raw.height), (7, 7));

    // 6. Weights that overflow f32 inside the network (1e38 each: finite in the file, infinite
    // after the first conv): an error naming that layer, not a finite garbage map.
    let mut sd = gradcam_wasm::synthetic::squeezenet(false, 10);
    for t in &mut sd.tensors {
        t.data.iter_mut().for_each(|v| *v = 1e38);
    }
    let big = write_safetensors(&sd.tensors, StoreAs::F32, &[]).unwrap();
    let mut overflow = Explainer::new(Model::from_bytes(&big, None).unwrap());
    let msg = case("SqueezeNet 1.1, every weight 1e38: explain", 256 * MIB, || err_of(overflow.explain(&chelsea, &ExplainOptions::default())));
    says(&msg, &["numeric", "'features.0'", "infinite"]);
    drop(overflow);
    // Only the first conv has huge weights, of both signs: its outputs stay finite (~1e38, the
    // signs cancel), the next conv overflows them to +inf, -inf and NaN (inf - inf). The ReLUs keep
    // the NaN (as PyTorch's do) instead of zeroing it, so the fault reaches the logits and the
    // first layer whose output is not finite is named.
    let mut sd = gradcam_wasm::synthetic::squeezenet(false, 10);
    for t in sd.tensors.iter_mut().filter(|t| t.name == "features.0.weight") {
        t.data.iter_mut().enumerate().for_each(|(i, v)| *v = if i % 2 == 0 { 1e38 } else { -1e38 });
    }
    let mixed = write_safetensors(&sd.tensors, StoreAs::F32, &[]).unwrap();
    let mut mixed = Explainer::new(Model::from_bytes(&mixed, None).unwrap());
    let msg = case("SqueezeNet 1.1, first conv +-1e38: explain", 256 * MIB, || err_of(mixed.explain(&chelsea, &ExplainOptions::default())));
    says(&msg, &["numeric", "'features.3.squeeze'"]);
    drop(mixed);
    // A batch-norm that folds to infinity (gamma 1e38 over sqrt(0 + 1e-5)): refused at load, naming
    // the conv it is folded into and the batch-norm (after it, a ReLU would have hidden the
    // infinities as zeros and the forward's check would see finite garbage).
    let mut sd = gradcam_wasm::synthetic::resnet(18, 10);
    for t in sd.tensors.iter_mut() {
        match t.name.as_str() {
            "bn1.weight" => t.data.iter_mut().for_each(|v| *v = 1e38),
            "bn1.running_var" => t.data.iter_mut().for_each(|v| *v = 0.0),
            _ => {}
        }
    }
    let folded = write_safetensors(&sd.tensors, StoreAs::F32, &[]).unwrap();
    let msg = case("ResNet-18, bn1 folding to infinity: load", 512 * MIB, || match Model::from_bytes(&folded, None) {
        Err(e) => e.to_string(),
        Ok(m) => err_of(Explainer::new(m).explain(&chelsea, &ExplainOptions::default())),
    });
    says(&msg, &["numeric", "layer 'conv1'", "batch-norm 'bn1'", "overflows"]);
    drop(folded);

    // 7. A network input within the 4096 x 4096 limit whose forward would produce ~30 GiB of layer
    // outputs: refused by the forward budget (4 GiB + 4x the weights) before anything runs.
    let tiny = Explainer::new(Model::from_bytes(&gradcam_wasm::synthetic::squeezenet(false, 10).bytes(), None).unwrap());
    let mut tiny = tiny;
    let huge_input = ExplainOptions { resize: Some(Resize::Exact { width: 4096, height: 4096 }), ..Default::default() };
    let msg = case("SqueezeNet 1.1, exact 4096x4096 input", 256 * MIB, || err_of(tiny.explain(&chelsea, &huge_input)));
    says(&msg, &["4096x4096", "budget"]);
    drop(tiny);

    // 8. One explanation's allocations count together: Score-CAM's batch of 64 masked inputs (37 MiB,
    // within its own 64 MiB cap) on top of the forward's layer outputs, under a budget that holds
    // either but not both, is refused before the batch exists; a smaller batch then fits.
    let forward = ex.forward_bytes(224, 224).unwrap();
    let mut tight = Explainer::new(Model::from_bytes(&default_model_bytes(), None).unwrap()).with_memory_budget(forward + 16 * MIB as u64);
    let plain = tight.explain(&chelsea, &ExplainOptions::default()).unwrap();
    assert_eq!(plain.raw.data, reference.raw.data);
    let score_cam = |batch| ExplainOptions { method: Method::SCORE_CAM, score_cam: ScoreCamOptions { batch: Some(batch), max_channels: Some(64) }, ..Default::default() };
    let msg = case("Score-CAM batch of 64 under forward + 16 MiB", 8 * MIB, || err_of(tight.explain(&chelsea, &score_cam(64))));
    says(&msg, &["this explanation would need 37 MiB", "Score-CAM's batch of 64 masked inputs", "on top of the", "memory budget of", "smaller batches"]);
    let e = case("Score-CAM batch of 4 under forward + 16 MiB", 64 * MIB, || tight.explain(&chelsea, &score_cam(4)).unwrap());
    assert_eq!(e.class, 282);
    drop(tight);

    // 9. An ONNX file folding 40 constants of 2^24 values (each within its own cap, 2.5 GiB
    // together): the load's budget (8x the file's bytes + 512 MiB) stops it.
    let folds = onnx_with_big_constants(40);
    let msg = case("ONNX: 40 ConstantOfShape of 4096 x 4096", 600 * MIB, || load_err(&folds, None));
    says(&msg, &["loading the model would need 64 MiB", "ConstantOfShape", "memory budget"]);

    // The explainer is unharmed: the same photo, the same map as before.
    let again = ex.explain(&chelsea, &ExplainOptions::default()).unwrap();
    assert_eq!((again.class, again.raw.data.clone()), (reference.class, reference.raw.data.clone()));
    let fresh = Explainer::new(Model::from_bytes(&default_model_bytes(), None).unwrap()).explain(&chelsea, &ExplainOptions::default()).unwrap();
    assert_eq!(fresh.raw.data, reference.raw.data);
}
