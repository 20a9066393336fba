//! Hostile and broken weight files: `Model::from_bytes` must return an error that says what is
//! wrong (never panic, never allocate from a size the file merely claims), and the process must
//! still load the real default model afterwards. Regression tests for fuzzer finds live here too.

use gradcam_wasm::synthetic::{self, StateDict};
use gradcam_wasm::weights::legacy_pth::RawTensor;
use gradcam_wasm::weights::safetensors_writer::{write_safetensors, StoreAs};
use gradcam_wasm::{Arch, Model};
use std::panic::{catch_unwind, AssertUnwindSafe};

#[path = "common/largest_allocation.rs"]
mod largest_allocation;

#[global_allocator]
static ALLOC: largest_allocation::Tracker = largest_allocation::Tracker;

// ---------------------------------------------------------------------------------------------
// helpers

/// Loads `bytes`, which must fail without a panic; returns the message. Also checks that no single
/// allocation exceeded 16x the input plus 1 MiB (a claimed size is never trusted).
fn load_err(case: &str, bytes: &[u8], arch: Option<Arch>) -> String {
    let (r, peak) = largest_allocation::largest_during(|| catch_unwind(AssertUnwindSafe(|| Model::from_bytes(bytes, arch))));
    let limit = 16 * bytes.len() + (1 << 20);
    assert!(peak <= limit, "{case}: one allocation of {peak} bytes for a {}-byte input", bytes.len());
    match r {
        Err(_) => panic!("{case}: Model::from_bytes panicked"),
        Ok(Ok(_)) => panic!("{case}: a bad file was accepted"),
        Ok(Err(e)) => e.to_string(),
    }
}

/// Asserts that the message holds every one of `parts` (case-insensitively).
#[track_caller]
fn says(msg: &str, parts: &[&str]) {
    let low = msg.to_lowercase();
    for p in parts {
        assert!(low.contains(&p.to_lowercase()), "message lacks '{p}': {msg}");
    }
}

/// The real default model still loads in this process (fails with a hint if it is not set up).
fn real_model_still_loads() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/efficientnet-lite0.safetensors");
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}; run scripts/setup.sh first"));
    let m = Model::from_bytes(&bytes, None).expect("the default model must load after hostile input");
    assert_eq!(m.arch, Arch::EfficientNetLite0);
    assert_eq!(m.graph.num_classes, 1000);
}

/// A safetensors file from a header (JSON text) and a data section.
fn st(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

fn tiny() -> StateDict {
    synthetic::squeezenet(false, 10)
}

fn bytes_of(tensors: &[RawTensor]) -> Vec<u8> {
    write_safetensors(tensors, StoreAs::F32, &[]).unwrap()
}

const LEGACY: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny_legacy.pth"));

// ---------------------------------------------------------------------------------------------
// framing

#[test]
fn empty_and_tiny_inputs() {
    says(&load_err("empty", b"", None), &["empty", "0 bytes"]);
    says(&load_err("7 random bytes", &[0x3d, 0xa1, 0x07, 0xff, 0x12, 0x9c, 0x44], None), &["7 bytes", "too short"]);
    // 7 bytes that start like a pickle are too short to be sniffed as a legacy .pth.
    says(&load_err("7 pickle-ish bytes", &[0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c], None), &["too short"]);
    // 14+ bytes that do look like a legacy .pth go to its reader, which must fail cleanly too.
    says(&load_err("legacy magic only", &LEGACY[..20], None), &["legacy .pth"]);
    says(&load_err("zip .pth", b"PK\x03\x04rest-of-a-zip-file", None), &["zip", "convert"]);
    real_model_still_loads();
}

#[test]
fn every_truncation_of_a_small_model() {
    let full = tiny().bytes();
    assert!(Model::from_bytes(&full, None).is_ok(), "the untruncated file must load");
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    // Every prefix through the header and the first 4 KiB of data, every prefix in the last
    // 4 KiB, and every 509th prefix between (the file is a few MB).
    let lengths = (0..(header_end + 4096)).chain((header_end + 4096..full.len() - 4096).step_by(509)).chain(full.len() - 4096..full.len());
    for n in lengths {
        let m = load_err(&format!("prefix of {n} bytes"), &full[..n], None);
        match n {
            0 => says(&m, &["empty"]),
            1..=7 => says(&m, &["too short", "truncated"]),
            _ if n < header_end => says(&m, &["header length", "truncated"]),
            _ => says(&m, &["claims bytes", "truncated"]), // a tensor reaches past the end
        }
    }
    // A byte too many is an error as well (the data section must be covered exactly).
    let mut longer = full.clone();
    longer.push(0);
    says(&load_err("one trailing byte", &longer, None), &["safetensors"]);
    real_model_still_loads();
}

#[test]
fn header_claims_that_do_not_fit_the_file() {
    // A "2 GB" tensor in a 100-byte file.
    let h = r#"{"w":{"dtype":"F32","shape":[536870912],"data_offsets":[0,2147483648]}}"#;
    let f = st(h, &vec![0u8; 100 - 8 - h.len()]);
    assert_eq!(f.len(), 100);
    says(&load_err("2 GB tensor in 100 bytes", &f, None), &["'w'", "2147483648", "truncated"]);
    // Offsets past the end of the file, for the second of two tensors.
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
    says(&load_err("offsets past the end", &st(h, &[0; 12]), None), &["'b'", "8..16", "only 12 data bytes"]);
    // Offsets that run backwards.
    let h = r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#;
    says(&load_err("backwards offsets", &st(h, &[0; 8]), None), &["'a'", "backwards"]);
    // Offsets that disagree with dtype x shape.
    let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    says(&load_err("size mismatch", &st(h, &[0; 8]), None), &["'a'", "needs 12 bytes", "span 8 bytes"]);
    // A shape whose byte size overflows u64.
    let h = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#;
    says(&load_err("overflowing shape", &st(h, &[0; 8]), None), &["'a'", "2^64"]);
    // A gap between two tensors (each one fits, but the file is not covered in order).
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    says(&load_err("gap", &st(h, &[0; 12]), None), &["offset", "`b`"]);
    // Header length larger than the file; the largest possible header length.
    let mut f = st(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]);
    f[..8].copy_from_slice(&1000u64.to_le_bytes());
    says(&load_err("header length > file", &f, None), &["header length field says 1000 bytes", "truncated"]);
    f[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    says(&load_err("header length u64::MAX", &f, None), &["18446744073709551615", "truncated"]);
    real_model_still_loads();
}

#[test]
fn headers_that_are_not_json_or_not_a_header() {
    says(&load_err("not JSON", &st("this is not json at all!", &[]), None), &["not valid JSON"]);
    let mut f = st("{\"?\":1}", &[]);
    f[10] = 0xff;
    says(&load_err("invalid UTF-8", &f, None), &["UTF-8"]);
    says(&load_err("JSON array", &st("[1,2,3]", &[]), None), &["not valid JSON"]);
    says(&load_err("entry without shape", &st(r#"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#, &[0; 4]), None), &["'a'", "shape"]);
    says(&load_err("empty header", &st("{}", &[]), None), &["no float tensors"]);
    says(&load_err("unknown dtype", &st(r#"{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#, &[0; 16]), None), &["safetensors"]);
    real_model_still_loads();
}

#[test]
fn duplicate_keys_are_rejected_by_name() {
    // serde (and so the safetensors crate) keeps the last of two equal keys silently; we refuse.
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    says(&load_err("duplicate identical key", &st(h, &[0; 4]), None), &["'a'", "twice", "duplicate"]);
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    says(&load_err("duplicate key, two ranges", &st(h, &[0; 8]), None), &["'a'", "twice"]);
    let h = r#"{"__metadata__":{},"__metadata__":{},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    says(&load_err("duplicate metadata", &st(h, &[0; 4]), None), &["'__metadata__'", "twice"]);
    // A real model whose header repeats one of its keys.
    let full = tiny().bytes();
    let n = u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&full[8..8 + n]).unwrap().trim_end();
    let start = header.find("\"features.0.bias\"").unwrap();
    let end = start + header[start..].find('}').unwrap() + 1;
    let dup = format!("{{{},{}", &header[start..end], &header[1..]);
    let mut f = (dup.len() as u64).to_le_bytes().to_vec();
    f.extend(dup.as_bytes());
    f.extend(&full[8 + n..]);
    says(&load_err("model with a repeated key", &f, None), &["'features.0.bias'", "twice"]);
    real_model_still_loads();
}

// ---------------------------------------------------------------------------------------------
// keys, dtypes, values

#[test]
fn missing_and_extra_keys() {
    says(&load_err("missing key", &tiny().without("classifier.1.weight").bytes(), None), &["missing tensor 'classifier.1.weight'"]);
    says(&load_err("missing inner weight", &tiny().without("features.12.expand3x3.weight").bytes(), None), &["features.12.expand3x3.weight"]);
    let mut s = tiny();
    s.tensors.push(RawTensor { name: "extra.weight".into(), shape: vec![2], data: vec![1.0, 2.0] });
    says(&load_err("extra key", &s.bytes(), None), &["extra.weight", "not part of this architecture"]);
    // Bookkeeping counters are not "extra".
    let mut t = tiny().tensors;
    t.push(RawTensor { name: "features.0.num_batches_tracked".into(), shape: vec![], data: vec![7.0] });
    assert!(Model::from_bytes(&bytes_of(&t), None).is_ok());
    real_model_still_loads();
}

#[test]
fn wrong_dtypes_are_named() {
    for (dtype, size) in [("I64", 8), ("U8", 1), ("F64", 8), ("I32", 4), ("BOOL", 1)] {
        let h = format!(r#"{{"layer.weight":{{"dtype":"{dtype}","shape":[2],"data_offsets":[0,{}]}}}}"#, 2 * size);
        says(&load_err(dtype, &st(&h, &vec![0; 2 * size]), None), &["'layer.weight'", dtype, "only F32, F16 and BF16"]);
    }
    // An integer counter (num_batches_tracked) next to float weights is fine and skipped.
    let h = r#"{"bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let e = load_err("counter + one float", &st(h, &[0; 12]), None);
    assert!(!e.contains("dtype"), "{e}");
    real_model_still_loads();
}

#[test]
fn zero_size_tensors() {
    let h = r#"{"w":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}"#;
    says(&load_err("zero-size tensor", &st(h, &[]), None), &["'w'", "[0, 3]", "zero-size"]);
    let mut s = tiny();
    let t = s.tensors.iter_mut().find(|t| t.name == "features.3.squeeze.bias").unwrap();
    t.shape = vec![0];
    t.data.clear();
    says(&load_err("zero-size bias in a model", &s.bytes(), None), &["'features.3.squeeze.bias'", "zero-size"]);
    real_model_still_loads();
}

#[test]
fn non_finite_weights_are_named() {
    for (v, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
        let mut s = tiny();
        s.tensors.iter_mut().find(|t| t.name == "features.6.expand1x1.weight").unwrap().data[5] = v;
        let m = load_err(shown, &s.bytes(), None);
        says(&m, &["non-finite", "'features.6.expand1x1.weight'", shown, "index 5"]);
        // The same in f16 and bf16.
        for dtype in ["F16", "BF16"] {
            let bits: u16 = match (dtype, v.is_nan()) {
                ("F16", true) => 0x7e00,
                ("F16", false) => half::f16::from_f32(v).to_bits(),
                (_, true) => 0x7fc0,
                _ => half::bf16::from_f32(v).to_bits(),
            };
            let mut data = vec![0x3c, 0x00];
            data.extend(bits.to_le_bytes());
            let h = format!(r#"{{"w":{{"dtype":"{dtype}","shape":[2],"data_offsets":[0,4]}}}}"#);
            says(&load_err(dtype, &st(&h, &data), None), &["non-finite", "'w'", "index 1"]);
        }
    }
    real_model_still_loads();
}

#[test]
fn weights_of_another_architecture_with_explicit_arch() {
    let sq = tiny().bytes();
    says(&load_err("squeezenet as resnet18", &sq, Some(Arch::ResNet18)), &["missing tensor 'conv1.weight'", "resnet18"]);
    says(&load_err("squeezenet1_1 as efficientnet", &sq, Some(Arch::EfficientNetLite0)), &["the file has 0", "efficientnet_lite0"]);
    // Families that share key names (features.N) with different layers.
    for arch in [Arch::AlexNet, Arch::Vgg11, Arch::Vgg16Bn, Arch::MobileNetV2] {
        let m = load_err(arch.name(), &sq, Some(arch));
        eprintln!("{m}");
        says(&m, &[arch.name()]);
    }
    let mb = synthetic::mobilenet_v2(10).bytes();
    says(&load_err("mobilenet_v2 as squeezenet1_1", &mb, Some(Arch::SqueezeNet1_1)), &["squeezenet1_1"]);
    // The real model as another architecture.
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/efficientnet-lite0.safetensors");
    let real = std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}; run scripts/setup.sh first"));
    says(&load_err("efficientnet as mobilenet_v2", &real, Some(Arch::MobileNetV2)), &["missing tensor", "mobilenet_v2"]);
    real_model_still_loads();
}

// ---------------------------------------------------------------------------------------------
// legacy .pth

#[test]
fn legacy_pth_truncated_and_corrupted() {
    // The fixture itself is not a model (it holds an empty tensor and no architecture's keys).
    says(&load_err("fixture", LEGACY, None), &["'empty'", "zero-size"]);
    for n in 0..LEGACY.len() {
        let m = load_err(&format!("legacy prefix {n}"), &LEGACY[..n], None);
        if n >= 14 {
            says(&m, &["legacy .pth"]);
        }
    }
    let mut s: u64 = 0x2545f4914f6cdd1d;
    let mut rnd = move |n: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % n.max(1) as u64) as usize
    };
    for i in 0..LEGACY.len() {
        for v in [0x00, 0xff, 0x80, b'.', b'X', b'J'] {
            let mut m = LEGACY.to_vec();
            m[i] = v;
            load_err(&format!("legacy byte {i} = {v:#x}"), &m, None);
        }
    }
    for k in 0..3000 {
        let mut m = LEGACY.to_vec();
        for _ in 0..1 + rnd(4) {
            let i = rnd(m.len());
            match rnd(3) {
                0 => m[i] = rnd(256) as u8,
                1 => m.insert(i, rnd(256) as u8),
                _ => {
                    m.remove(i);
                }
            }
        }
        load_err(&format!("legacy mutation {k}"), &m, None);
    }
    real_model_still_loads();
}

#[test]
fn real_model_survives_a_run_of_bad_files_in_one_thread() {
    let h = r#"{"w":{"dtype":"F32","shape":[536870912],"data_offsets":[0,2147483648]}}"#;
    let bad: Vec<Vec<u8>> = vec![vec![], vec![1, 2, 3, 4, 5, 6, 7], st(h, &[0; 20]), st("nope", &[]), tiny().without("classifier.1.weight").bytes(), LEGACY[..LEGACY.len() / 2].to_vec()];
    for (i, b) in bad.iter().enumerate() {
        load_err(&format!("bad file {i}"), b, None);
        real_model_still_loads();
    }
}
