//! Fuzzing on stable Rust, in every `cargo test` run: each parser and entry point (safetensors,
//! legacy and zip `.pth`, ONNX, `.npy`, labels files, RGBA image data + explain at random sizes,
//! aspect ratios and options) gets its seed inputs (the small committed fixtures under
//! tests/fixtures, plus a few generated here) and a few thousand deterministic mutations of them
//! (bit and byte flips, truncations, splices, deleted and duplicated chunks, bumped length fields),
//! through the same function the cargo-fuzz target in fuzz/ runs. Any panic fails the test, with
//! the input written to target/fuzz-replay-failures/ for replay; so does one input taking over 2 s.
//! Deterministic: seeded xorshift, no clock or OS randomness in what is generated.
//!
//! `FUZZ_REPLAY_SCALE=10 cargo test --release --test fuzz_replay` runs 10x the mutations;
//! `FUZZ_REPLAY_SEED=N` draws other ones. Run it in the dev profile too: its overflow checks turn
//! arithmetic on claimed sizes into panics that this test reports.

#[path = "common/onnx_fuzz_input.rs"]
mod onnx_fuzz_input;

use gradcam_wasm::imaging::colormap::Colormap;
use gradcam_wasm::imaging::npy::{read_npy_f32, write_npy_f32};
use gradcam_wasm::imaging::overlay::{heat_to_rgba, overlay_rgba_masked};
use gradcam_wasm::imaging::preprocess::Resize;
use gradcam_wasm::imaging::project::crop_mask;
use gradcam_wasm::imaging::rgb::RgbImage;
use gradcam_wasm::loading::parse_labels;
use gradcam_wasm::methods::attribution::AttributionOptions;
use gradcam_wasm::methods::score::ScoreCamOptions;
use gradcam_wasm::weights::legacy_pth::read_legacy_pth;
use gradcam_wasm::weights::zip_pth::{is_zip, read_zip_pth};
use gradcam_wasm::weights::WeightMap;
use gradcam_wasm::{Arch, ExplainOptions, Explainer, Method, Model, Normalization, Target};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Deterministic xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One mutated copy of `seed` (1 to 4 edits); `other` is another seed to splice from.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = b.len();
        match rng.below(9) {
            0 if n > 0 => {
                let i = rng.below(n);
                b[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                b[i] = rng.next() as u8;
            }
            2 if n > 0 => {
                let i = rng.below(n);
                b[i] = [0u8, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'(', b'[', b'{', b'"', b'\n'][rng.below(12)];
            }
            3 => b.truncate(rng.below(n + 1)),
            4 if !other.is_empty() => {
                // Splice a chunk of another seed in, inserted or overwriting.
                let len = 1 + rng.below(other.len().min(256));
                let src = rng.below(other.len() - len + 1);
                let dst = rng.below(n + 1);
                if rng.below(2) == 0 {
                    b.splice(dst..dst, other[src..src + len].iter().copied());
                } else {
                    let end = (dst + len).min(n);
                    b.splice(dst..end, other[src..src + len].iter().copied());
                }
            }
            5 if n >= 4 => {
                // A length field: 2, 4 or 8 little-endian bytes, bumped or set to an extreme.
                let width = [2usize, 4, 8][rng.below(3)].min(n);
                let at = if rng.below(2) == 0 { rng.below(n - width + 1) & !(width - 1) } else { rng.below(n - width + 1) };
                let mut v = [0u8; 8];
                v[..width].copy_from_slice(&b[at..at + width]);
                let x = u64::from_le_bytes(v);
                let y = match rng.below(9) {
                    0 => x.wrapping_add(1),
                    1 => x.wrapping_sub(1),
                    2 => x.wrapping_mul(2),
                    3 => x.wrapping_add(1 + rng.below(4096) as u64),
                    4 => u64::MAX,
                    5 => 0x7fff_ffff,
                    6 => 0x8000_0000,
                    7 => 0,
                    _ => x << 16,
                };
                b[at..at + width].copy_from_slice(&y.to_le_bytes()[..width]);
            }
            6 if n > 0 => {
                let at = rng.below(n);
                let len = 1 + rng.below((n - at).min(128));
                b.drain(at..at + len);
            }
            7 if n > 0 => {
                let at = rng.below(n);
                let len = 1 + rng.below((n - at).min(128));
                let chunk: Vec<u8> = b[at..at + len].to_vec();
                let dst = rng.below(n + 1);
                b.splice(dst..dst, chunk);
            }
            _ => {
                let at = rng.below(n + 1);
                let len = 1 + rng.below(16);
                let junk = rng.bytes(len);
                b.splice(at..at, junk);
            }
        }
    }
    b
}

fn scale() -> usize {
    std::env::var("FUZZ_REPLAY_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(non-string panic)".into())
}

/// Runs `f` on every seed, then on `mutations` (times FUZZ_REPLAY_SCALE) mutated seeds.
fn replay(name: &str, seeds: &[Vec<u8>], mutations: usize, rng_seed: u64, f: impl Fn(&[u8])) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let mut rng = Rng::new(rng_seed ^ std::env::var("FUZZ_REPLAY_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) << 8);
    let start = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut slowest = (0.0f64, String::new());
    let mut run = |input: &[u8], what: String| {
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| f(input)));
        let dt = t.elapsed().as_secs_f64();
        let save = |kind: &str| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-replay-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{kind}-{}.bin", what.replace(' ', "-")));
            let _ = std::fs::write(&file, input);
            file
        };
        if let Err(p) = r {
            let file = save("panic");
            failures.push(format!("{what} ({} bytes, saved as {}): {}", input.len(), file.display(), panic_message(&*p)));
        }
        if dt > 1.0 {
            save("slow");
        }
        if dt > slowest.0 {
            slowest = (dt, what);
        }
    };
    for (i, s) in seeds.iter().enumerate() {
        run(s, format!("seed {i}"));
    }
    let total = mutations * scale();
    for k in 0..total {
        let (a, b) = (rng.below(seeds.len()), rng.below(seeds.len()));
        let m = mutate(&mut rng, &seeds[a], &seeds[b]);
        run(&m, format!("mutation {k} of seed {a}"));
    }
    println!("{name}: {} seeds + {total} mutations in {:.1} s, slowest input {:.3} s ({}), {} panics", seeds.len(), start.elapsed().as_secs_f64(), slowest.0, slowest.1, failures.len());
    assert!(failures.is_empty(), "{name}: {} inputs panicked; first: {}", failures.len(), failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n"));
    assert!(slowest.0 < 2.0, "{name}: {} took {:.1} s", slowest.1, slowest.0);
}

/// Committed fixtures up to `max` bytes whose file name ends with `suffix`, in a fixed order.
fn fixtures(suffix: &str, max: u64) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    walk(&root.join("tests/fixtures"), &mut paths);
    walk(&root.join("tests/family_fixtures"), &mut paths);
    paths.sort();
    paths.into_iter().filter(|p| p.to_string_lossy().ends_with(suffix)).filter(|p| p.metadata().is_ok_and(|m| m.len() <= max)).filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b))).collect()
}

const SEED_MAX: u64 = 64 * 1024;

#[test]
fn safetensors_files() {
    let mut seeds: Vec<Vec<u8>> = fixtures(".safetensors", SEED_MAX).into_iter().map(|(_, b)| b).collect();
    seeds.push(gradcam_wasm::synthetic::vgg(&[4, 0, 8, 0], false, 8, 3).bytes());
    seeds.push(gradcam_wasm::synthetic::vgg(&[4, 0, 8, 0], true, 8, 3).bytes());
    replay("safetensors", &seeds, 5000, 1, |data| {
        if let Ok(weights) = WeightMap::from_safetensors(data) {
            if let Ok(arch) = Arch::detect(&weights) {
                let _ = arch.build(&weights);
            }
        }
        for arch in [Arch::ResNet18, Arch::Vgg11Bn, Arch::AlexNet, Arch::SqueezeNet1_1, Arch::MobileNetV2, Arch::EfficientNetLite0, Arch::DenseNet, Arch::ConvNeXt, Arch::Vit] {
            if let Ok(weights) = WeightMap::from_safetensors(data) {
                let _ = arch.build(&weights);
            }
        }
        let _ = Model::from_bytes(data, None);
    });
}

#[test]
fn legacy_pth_files() {
    let seeds: Vec<Vec<u8>> = fixtures(".pth", SEED_MAX).into_iter().map(|(_, b)| b).filter(|b| !is_zip(b)).collect();
    replay("legacy_pth", &seeds, 6000, 2, |data| {
        if read_legacy_pth(data).is_ok() {
            let _ = WeightMap::from_legacy_pth(data);
        }
        let _ = Model::from_bytes(data, None);
    });
}

#[test]
fn zip_pth_files() {
    let seeds: Vec<Vec<u8>> = fixtures(".pth", SEED_MAX).into_iter().map(|(_, b)| b).filter(|b| is_zip(b)).collect();
    replay("zip_pth", &seeds, 6000, 3, |data| {
        if read_zip_pth(data).is_ok() {
            let _ = WeightMap::from_bytes(data);
        }
        let _ = Model::from_bytes(data, None);
    });
}

#[test]
fn onnx_files() {
    // Read as fuzz/fuzz_targets/onnx_import.rs reads its inputs.
    let mut seeds = Vec::new();
    for (path, onnx) in fixtures(".onnx", SEED_MAX) {
        let data_path = PathBuf::from(format!("{}.data", path.display()));
        let data = std::fs::read(&data_path).ok().filter(|d| d.len() as u64 <= SEED_MAX).unwrap_or_default();
        seeds.push(onnx_fuzz_input::join(&onnx, &data));
    }
    replay("onnx", &seeds, 5000, 4, |data| {
        let (onnx, external) = onnx_fuzz_input::split(data);
        let _ = Model::from_onnx(onnx, external.filter(|e| !e.is_empty()));
        let _ = Model::from_bytes(onnx, None);
    });
}

#[test]
fn npy_files() {
    let mut seeds: Vec<Vec<u8>> = fixtures(".npy", SEED_MAX).into_iter().map(|(_, b)| b).collect();
    seeds.push(write_npy_f32(&[1, 3, 4, 5], &[0.5; 60]).unwrap());
    seeds.push(write_npy_f32(&[], &[1.0]).unwrap());
    seeds.push(write_npy_f32(&[0, 7], &[]).unwrap());
    let mut nested = b"\x93NUMPY\x01\x00".to_vec();
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {}2{}, }}\n", "(".repeat(20), ",)".repeat(20));
    nested.extend((header.len() as u16).to_le_bytes());
    nested.extend(header.as_bytes());
    seeds.push(nested);
    replay("npy", &seeds, 8000, 5, |data| {
        if let Ok((shape, values)) = read_npy_f32(data) {
            assert_eq!(shape.iter().product::<usize>(), values.len());
        }
    });
}

#[test]
fn labels_files() {
    let mut seeds: Vec<Vec<u8>> = vec![
        b"[\"cat\", \"dog\", \"fish\"]".to_vec(),
        b"cat\ndog\r\nfish\n".to_vec(),
        "\u{feff}[\"\\u00e9t\\u00e9\", \"x\\\"y\"]".as_bytes().to_vec(),
        b"  one\n\n two \n".to_vec(),
        format!("[{}]", ["[1, [2, {\"a\": []}]]"; 3].join(", ")).into_bytes(),
    ];
    seeds.extend(std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/imagenet_classes.json")));
    seeds.extend(fixtures("meta.json", SEED_MAX).into_iter().take(3).map(|(_, b)| b));
    replay("labels", &seeds, 8000, 6, |data| {
        if let Ok(labels) = parse_labels(&String::from_utf8_lossy(data)) {
            assert!(!labels.is_empty());
        }
    });
}

/// Reads parameters from the input, zeros once it is spent (as libFuzzer's `Unstructured` does).
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> usize {
        self.u8() as usize | (self.u8() as usize) << 8
    }
}

const METHODS: [Method; gradcam_wasm::methods::ALL.len()] = gradcam_wasm::methods::ALL;

/// One explanation from the bytes: image size and aspect ratio (square, 4000 x 4 strips, 20000 x 1
/// lines, empty), RGBA data of the right length or not, method, target, layer, resize, options.
fn explain_case(ex: &mut Explainer, data: &[u8]) {
    let mut r = Reader(data);
    let (w, h) = match r.u8() % 7 {
        0 => (1 + r.u16() % 64, 1 + r.u16() % 64),
        1 => (1 + r.u16() % 4000, 1 + r.u8() as usize % 4),
        2 => (1 + r.u8() as usize % 4, 1 + r.u16() % 4000),
        3 => (1 + r.u16() % 600, 1 + r.u16() % 600),
        4 => (r.u8() as usize % 3, r.u8() as usize % 3),
        5 => (1 + r.u16() % 20000, 1),
        _ => (1, 1 + r.u16() % 20000),
    };
    let method = METHODS[r.u8() as usize % METHODS.len()];
    let target = match r.u8() % 4 {
        0 => Target::Top1,
        1 => Target::Class(r.u8() as usize % 12),
        2 => Target::Class(r.u16() << 16 | r.u16()),
        _ => Target::Weighted((0..r.u8() % 4).map(|_| (r.u8() as usize % 12, r.u8() as f32 - 128.0)).collect()),
    };
    let layers = ex.model().layers();
    let layer = match r.u8() % 3 {
        0 => None,
        1 => Some(layers[r.u8() as usize % layers.len()].name.clone()),
        _ => Some(String::from_utf8_lossy(&[r.u8(), r.u8(), r.u8()]).into_owned()),
    };
    let resize = match r.u8() % 5 {
        0 | 1 => None,
        2 => Some(Resize::Exact { width: r.u16() % 160, height: r.u16() % 160 }),
        3 => {
            let crop = if r.u8() % 2 == 0 { Some((r.u16() % 160, r.u16() % 160)) } else { None };
            Some(Resize::ShorterSide { size: r.u16() % 200, crop })
        }
        _ => Some(Resize::Exact { width: r.u16() << 4, height: r.u16() << 4 }),
    };
    let opts = ExplainOptions {
        method,
        layer,
        // One layer (no bytes read, so the cases keep their meaning).
        layers: Vec::new(),
        target,
        signed: r.u8() % 2 == 0,
        normalization: if r.u8() % 2 == 0 { Normalization::Raw } else { Normalization::MinMax },
        resize,
        score_cam: ScoreCamOptions { batch: Some(r.u16()), max_channels: Some(1 + r.u8() as usize % 3) },
        // Cheap settings (no bytes read, so the cases keep their meaning): a few passes per case, and
        // occlusion windows of 256 px (refused below that size; 16 windows at ~1000 x 1000).
        attribution: AttributionOptions { steps: 2, samples: 2, patch: Some(256), stride: Some(256), ..Default::default() },
        eigen_smooth: false,
        aug_smooth: false,
    };
    let exact = r.u8() % 8 != 0;
    let alpha = r.u8() as f32 / 200.0;
    let rest = r.0;
    let need = w * h * 4;
    let rgba: Vec<u8> = if exact {
        if rest.is_empty() {
            vec![0; need]
        } else {
            rest.iter().copied().cycle().take(need).collect()
        }
    } else {
        rest.to_vec()
    };
    let Ok(image) = RgbImage::from_rgba(w, h, &rgba) else { return };
    if let Ok(e) = ex.explain(&image, &opts) {
        assert_eq!((e.image_map.width, e.image_map.height), (w, h), "the map is on the image's grid");
        assert!(e.image_map.data.iter().all(|v| v.is_finite()), "non-finite value in the image map");
        let mut heat = e.image_map.data.clone();
        let peak = heat.iter().copied().fold(0.0f32, f32::max);
        if peak > 1.0 {
            heat.iter_mut().for_each(|v| *v /= peak);
        }
        let mask = crop_mask(&e.geometry).expect("the explanation's own geometry");
        let _ = overlay_rgba_masked(&image, &heat, &mask, Colormap::Jet, alpha);
        let _ = heat_to_rgba(&heat, w, h, Colormap::Turbo);
    }
}

#[test]
fn explain_images_of_any_shape() {
    let bytes = gradcam_wasm::synthetic::squeezenet(false, 10).bytes();
    // A forward budget of 256 MiB of layer outputs (the default is 4 GiB + 4x the weights), so
    // that the large inputs some cases ask for are refused quickly (and that refusal is fuzzed).
    let mut ex = Explainer::new(Model::from_bytes(&bytes, None).unwrap()).with_memory_budget(256 << 20);
    let mut rng = Rng::new(7);
    let seeds: Vec<Vec<u8>> = (0..24usize)
        .map(|i| {
            // A shape class per seed, then random parameters and pixels.
            let mut s = vec![i as u8 % 7];
            s.extend(rng.bytes(40 + i * 8));
            s
        })
        .collect();
    let ex = std::cell::RefCell::new(&mut ex);
    replay("explain", &seeds, 1500, 8, |data| explain_case(&mut ex.borrow_mut(), data));
}
