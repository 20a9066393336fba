//! ONNX import: small networks exported by PyTorch with both exporters (dynamo with external data,
//! TorchScript in one file) give PyTorch's logits and Grad-CAM maps; layer names are module paths;
//! bad files are refused with a message naming what is wrong, and a good model still loads after.
//! Fixtures: scripts/gen-onnx-fixtures.py (needs torch; its small outputs are committed).
#![cfg(not(target_arch = "wasm32"))]

use gradcam_wasm::exec::{cpu::CpuExecutor, Executor};
use gradcam_wasm::methods::cam;
use gradcam_wasm::{onnx, FeatureMap, Model};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}; run scripts/gen-onnx-fixtures.py"))
}

/// Loads `<net>.ts.onnx` (opset 17), `<net>.ts13.onnx` (opset 13) or `<net>.dynamo.onnx` (+ `.onnx.data`).
fn load(net: &str, exporter: &str) -> Model {
    let file = format!("{net}.{exporter}.onnx");
    let data = (exporter == "dynamo").then(|| read(&format!("{file}.data")));
    let imported = onnx::import(&read(&file), data.as_deref()).unwrap_or_else(|e| panic!("{file}: {e}"));
    for w in &imported.warnings {
        println!("{file}: warning: {w}");
    }
    imported.model
}

struct Reference {
    input: FeatureMap,
    logits: Vec<f32>,
    class: usize,
    /// (layer, height, width, map)
    maps: Vec<(String, usize, usize, Vec<f32>)>,
}

fn reference(net: &str) -> Reference {
    let bytes = read(&format!("{net}.ref.safetensors"));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensor = |k: &str| -> (Vec<usize>, Vec<f32>) {
        let t = st.tensor(k).unwrap();
        let data = match t.dtype() {
            safetensors::Dtype::F16 => t.data().chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            _ => t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        };
        (t.shape().to_vec(), data)
    };
    let (shape, x) = tensor("input");
    let layers: Vec<String> = serde_json::from_str(&meta["layers"]).unwrap();
    let maps = layers
        .iter()
        .map(|l| {
            let (s, m) = tensor(&format!("cam:{l}"));
            (l.clone(), s[0], s[1], m)
        })
        .collect();
    Reference { input: FeatureMap::new(shape[0], shape[1], shape[2], x), logits: tensor("logits").1, class: meta["class"].parse().unwrap(), maps }
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "reference is all zeros: the check would be vacuous");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

const NETS: [&str; 5] = ["resnet", "mobilenet_v3", "convnext", "shufflenet", "misc"];

#[test]
fn logits_and_grad_cam_maps_match_pytorch_for_both_exporters() {
    let mut worst = 0f32;
    for net in NETS {
        let r = reference(net);
        for exporter in ["dynamo", "ts", "ts13"] {
            let model = load(net, exporter);
            assert_eq!(model.input_size(), (r.input.width, r.input.height), "{net}.{exporter}: input size from the file");
            assert_eq!(model.default_layer(), r.maps[0].0, "{net}.{exporter}: default layer");
            let exec = CpuExecutor::new(model.graph.clone());
            for (layer, h, w, want) in &r.maps {
                let id = model.graph.find(layer).unwrap_or_else(|e| panic!("{net}.{exporter}: {e}"));
                let mut pass = exec.start(r.input.clone(), id).unwrap();
                let logits = pass.logits().to_vec();
                let e_logits = rel_err(&logits, &r.logits);
                let top = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
                assert_eq!(top, r.class, "{net}.{exporter}: top-1 class");
                let mut target = vec![0.0; logits.len()];
                target[r.class] = 1.0;
                let g = pass.layer_gradient(&target).unwrap();
                let mut map = cam::grad_cam(pass.activations(), &g);
                map.data.iter_mut().for_each(|v| *v = v.max(0.0));
                assert_eq!((map.height, map.width), (*h, *w), "{net}.{exporter} {layer}: map size");
                let e_map = rel_err(&map.data, want);
                println!("{net}.{exporter} at '{layer}': logits rel. error {e_logits:.2e}, Grad-CAM map rel. error {e_map:.2e}");
                assert!(e_logits < 1e-3 && e_map < 1e-3, "{net}.{exporter} at '{layer}': logits {e_logits:.2e}, map {e_map:.2e}");
                worst = worst.max(e_logits).max(e_map);
            }
        }
    }
    println!("largest relative error: {worst:.2e}");
}

fn names(model: &Model) -> Vec<String> {
    model.graph.nodes.iter().map(|n| n.name.clone()).collect()
}

#[test]
fn layers_are_named_by_module_path_with_both_exporters() {
    for net in NETS {
        let (d, t) = (load(net, "dynamo"), load(net, "ts"));
        println!("{net}: {:?}", names(&t));
        assert_eq!(names(&d), names(&t), "{net}: the two exporters give different layer names");
        assert_eq!(d.default_layer(), t.default_layer());
    }
    let ts = load("resnet", "ts");
    let dy = load("resnet", "dynamo");
    for model in [&ts, &dy] {
        let n = names(model);
        for want in ["conv1", "relu", "maxpool", "layer1.0.conv1", "layer1.0.relu", "layer1.0.conv2", "layer1.0.add", "layer1.0.relu_1", "layer2.0.downsample.0", "avgpool", "fc"] {
            assert!(n.iter().any(|x| x == want), "no layer '{want}' in {n:?}");
        }
        // The state dict's default layer, and block / stage names on their last node.
        assert_eq!(model.default_layer(), "layer2");
        let g = &model.graph;
        assert_eq!(g.find("layer2").unwrap(), g.find("layer2.1.relu_1").unwrap());
        assert_eq!(g.find("layer1").unwrap(), g.find("layer1.1.relu_1").unwrap());
        assert_eq!(g.find("layer1.0").unwrap(), g.find("layer1.0.relu_1").unwrap());
        assert_eq!(g.find("layer2.0.downsample").unwrap(), g.find("layer2.0.downsample.0").unwrap());
        // `layer1.0.relu` is the module's first call; the second is `relu_1`, as TorchScript names it.
        assert!(g.find("layer1.0.relu").unwrap() < g.find("layer1.0.conv2").unwrap());
    }
    // ONNX tensor names are aliases; the dynamo export's folded batch-norms too.
    let g = &ts.graph;
    assert_eq!(g.find("/layer1/layer1.0/relu_1/Relu_output_0").unwrap(), g.find("layer1.0.relu_1").unwrap());
    let g = &dy.graph;
    assert_eq!(g.find("relu_2").unwrap(), g.find("layer1.0.relu_1").unwrap());
    assert_eq!(g.find("layer1.0.bn1").unwrap(), g.find("layer1.0.conv1").unwrap());
    assert_eq!(g.find("bn1").unwrap(), g.find("conv1").unwrap());
    // Other families: stage outputs, squeeze-excitation, channels-last blocks, channel shuffle.
    let mb = load("mobilenet_v3", "ts");
    assert_eq!(mb.graph.find("features.1.block.1").unwrap(), mb.graph.find("features.1.block.1.mul").unwrap());
    let cn = load("convnext", "dynamo");
    for want in ["features.0.1", "features.1.0.block.2", "features.1.0.block.4", "features.1.0.mul", "features.1.0.add", "classifier.0"] {
        assert!(names(&cn).iter().any(|x| x == want), "convnext: no layer '{want}'");
    }
    let sh = load("shufflenet", "dynamo");
    assert_eq!(sh.graph.find("stage3").unwrap(), sh.graph.find("stage3.1.shuffle").unwrap());
    assert!(names(&sh).contains(&"stage3.1.slice".to_string()));
}

#[test]
fn input_size_and_normalization_come_from_the_file() {
    let model = load("resnet", "ts");
    // 48 x 64 input: the crop is the file's size, the shorter side resized like torchvision's 256/224.
    assert_eq!(model.input_size(), (64, 48));
    match &model.preprocess.resize {
        gradcam_wasm::imaging::Resize::ShorterSide { size, crop } => assert_eq!((*size, *crop), (74, Some((64, 48)))),
        other => panic!("unexpected resize {other:?}"),
    }
    assert_eq!(model.preprocess.normalize, gradcam_wasm::imaging::Normalize::MeanStd { mean: gradcam_wasm::imaging::preprocess::IMAGENET_MEAN, std: gradcam_wasm::imaging::preprocess::IMAGENET_STD });
    assert_eq!(model.graph.num_classes, 5);
    // from_bytes routes ONNX files to the importer (weights inside the file).
    let routed = Model::from_bytes(&read("resnet.ts.onnx"), None).unwrap();
    assert_eq!(names(&routed), names(&model));
}

/// Decodes a fixture for editing, re-encodes it after `edit`.
fn edited(file: &str, edit: impl FnOnce(&mut candle_onnx::onnx::ModelProto)) -> Vec<u8> {
    use prost::Message;
    let mut m = candle_onnx::onnx::ModelProto::decode(read(file).as_slice()).unwrap();
    edit(&mut m);
    m.encode_to_vec()
}

#[test]
fn bad_files_are_refused_with_a_clear_message_and_a_good_model_loads_after() {
    let good = read("resnet.ts.onnx");
    let reference = reference("resnet");
    let check = |what: &str, result: gradcam_wasm::Result<Model>, needles: &[&str]| {
        let e = match result {
            Ok(_) => panic!("{what}: loaded"),
            Err(e) => e.to_string(),
        };
        println!("{what}: {e}");
        for n in needles {
            assert!(e.contains(n), "{what}: the message lacks '{n}': {e}");
        }
        // Nothing is left behind: a good model loads and computes after every error.
        let model = Model::from_onnx(&good, None).unwrap();
        let pass = CpuExecutor::new(model.graph.clone()).start(reference.input.clone(), model.graph.find("layer2").unwrap()).unwrap();
        assert!(rel_err(pass.logits(), &reference.logits) < 1e-3);
    };
    check("LRN", Model::from_onnx(&read("lrn.onnx"), None), &["unsupported ONNX op 'LRN'", "'/features/features.2/LRN'", "supported: Conv"]);
    let einsum = edited("resnet.ts.onnx", |m| {
        let g = m.graph.as_mut().unwrap();
        let relu = g.node.iter_mut().find(|n| n.op_type == "Relu").unwrap();
        relu.op_type = "Einsum".into();
    });
    check("Einsum", Model::from_onnx(&einsum, None), &["'Einsum'", "'/relu/Relu'"]);
    check("ViT", Model::from_onnx(&read("vit.ts.onnx"), None), &["token tensors are not supported yet", "dynamo=True"]);
    check("truncated", Model::from_onnx(&good[..good.len() / 2], None), &["not a readable ONNX file", "truncated"]);
    check("truncated (header only)", Model::from_onnx(&good[..40], None), &["ONNX"]);
    check("empty", Model::from_onnx(&[], None), &["empty"]);
    let mut x = 0x2545f4914f6cdd1du64;
    let garbage: Vec<u8> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    check("garbage", Model::from_onnx(&garbage, None), &["ONNX"]);
    assert!(!onnx::is_onnx(&garbage));
    let dynamo = read("resnet.dynamo.onnx");
    let data = read("resnet.dynamo.onnx.data");
    let missing = "this ONNX file keeps its weights in 'resnet.dynamo.onnx.data' (external data); pass that file too";
    check("no .onnx.data", Model::from_onnx(&dynamo, None), &[missing]);
    check("no .onnx.data (from_bytes)", Model::from_bytes(&dynamo, None), &[missing]);
    check("short .onnx.data", Model::from_onnx(&dynamo, Some(&data[..data.len() - 100])), &["tensor 'fc.weight'", "'resnet.dynamo.onnx.data'", "truncated"]);
    check("empty .onnx.data", Model::from_onnx(&dynamo, Some(&[])), &["tensor '", "'resnet.dynamo.onnx.data'", "has only 0 bytes"]);
    let huge = edited("resnet.ts.onnx", |m| m.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "fc.weight").unwrap().dims = vec![1 << 20, 1 << 20]);
    check("huge dims", Model::from_onnx(&huge, None), &["tensor 'fc.weight'", "more elements"]);
    let wrong = edited("resnet.ts.onnx", |m| m.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "fc.weight").unwrap().dims = vec![5, 15]);
    check("dims vs bytes", Model::from_onnx(&wrong, None), &["tensor 'fc.weight'", "needs 300 bytes but holds 320"]);
    let nan = edited("resnet.ts.onnx", |m| {
        let t = m.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "fc.weight").unwrap();
        t.raw_data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    check("NaN weight", Model::from_onnx(&nan, None), &["tensor 'fc.weight'", "non-finite"]);
    // The sniff and the external-data probe.
    for f in ["resnet.ts.onnx", "resnet.dynamo.onnx", "misc.dynamo.onnx", "lrn.onnx", "vit.ts.onnx"] {
        assert!(onnx::is_onnx(&read(f)), "{f}");
    }
    assert!(!onnx::is_onnx(&read("resnet.ref.safetensors")));
    assert_eq!(onnx::external_data_location(&dynamo).unwrap().as_deref(), Some("resnet.dynamo.onnx.data"));
    assert_eq!(onnx::external_data_location(&good).unwrap(), None);
}

#[test]
fn the_cli_reads_the_external_data_beside_the_onnx_file() {
    let run = |model: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam")).args(["layers", "--model", model]).current_dir(dir()).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, out, err) = run("resnet.dynamo.onnx");
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("* layer2.1.relu_1") && l.contains("layer2")), "{out}");
    let (ok, _, err) = run("misc.ts.onnx");
    assert!(ok && err.contains("note: the model ends in a Softmax"), "{err}");
    // Without its .onnx.data beside it, the message names the missing file.
    let tmp = std::env::temp_dir().join(format!("gradcam-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let lone = tmp.join("resnet.dynamo.onnx");
    std::fs::write(&lone, read("resnet.dynamo.onnx")).unwrap();
    let (ok, _, err) = run(lone.to_str().unwrap());
    std::fs::remove_dir_all(&tmp).ok();
    assert!(!ok && err.contains("keeps its weights in 'resnet.dynamo.onnx.data'"), "{err}");
}

#[test]
fn an_imported_model_explains_an_image_through_the_explainer() {
    use gradcam_wasm::imaging::rgb::RgbImage;
    use gradcam_wasm::{ExplainOptions, Explainer, Method};
    let (w, h) = (120, 90);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i * 37 + i / 7) % 251) as u8).collect();
    let image = RgbImage::from_rgb(w, h, rgb).unwrap();
    for net in ["resnet", "convnext", "misc"] {
        let mut ex = Explainer::new(load(net, "dynamo"));
        for method in [Method::GRAD_CAM, Method::GUIDED_GRAD_CAM, Method::SCORE_CAM] {
            let e = ex.explain(&image, &ExplainOptions { method, ..Default::default() }).unwrap_or_else(|e| panic!("{net} {method:?}: {e}"));
            assert_eq!((e.image_map.width, e.image_map.height), (w, h));
            assert!(e.image_map.data.iter().all(|v| v.is_finite()) && e.image_map.data.iter().any(|&v| v > 0.0), "{net} {method:?}: empty map");
        }
        let layers = ex.model().layers();
        assert!(layers.iter().any(|l| l.name == ex.model().default_layer() || l.aliases.contains(&ex.model().default_layer())));
    }
}

#[test]
fn damaged_files_never_panic() {
    // Byte flips, truncations and spliced bytes in small exports: each either imports (and then
    // runs) or fails with an error; nothing panics.
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut imported, mut refused) = (0, 0);
    for file in ["resnet.ts.onnx", "misc.ts.onnx", "shufflenet.ts.onnx", "convnext.ts.onnx"] {
        let good = read(file);
        for round in 0..150 {
            let mut bytes = good.clone();
            match round % 3 {
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let at = (next() as usize) % bytes.len();
                        bytes[at] = next() as u8;
                    }
                }
                1 => bytes.truncate((next() as usize) % bytes.len()),
                _ => {
                    let at = (next() as usize) % bytes.len();
                    let len = 1 + (next() as usize) % 16;
                    let end = (at + len).min(bytes.len());
                    bytes.drain(at..end);
                }
            }
            let result = std::panic::catch_unwind(|| {
                let model = Model::from_onnx(&bytes, None)?;
                let (w, h) = model.input_size();
                let layer = model.graph.find(&model.default_layer())?;
                let mut pass = CpuExecutor::new(model.graph.clone()).start(FeatureMap::new(3, h, w, vec![0.5; 3 * h * w]), layer)?;
                let target = vec![1.0; model.graph.num_classes];
                pass.layer_gradient(&target).map(|_| ())
            });
            match result {
                Ok(Ok(())) => imported += 1,
                Ok(Err(_)) => refused += 1,
                Err(_) => panic!("{file}: damage round {round} panicked"),
            }
        }
    }
    println!("damaged files: {imported} imported and ran, {refused} refused");
    assert!(refused > 0);
}
