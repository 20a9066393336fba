//! Every torchvision family against PyTorch, from its ONNX export: tests/fixtures/families/<name>/
//! model.onnx (+ model.onnx.data for the dynamo exporter's external weights; the TorchScript
//! exporter's files are self-contained, see meta.json) imported with `Model::from_onnx`, then the same
//! checks as tests/families.rs: logits, activations and raw Grad-CAM maps at two layers within
//! relative 1e-3, input gradients (plain, guided where the reference has one) with cosine >= 0.999.
//! Layers are named by torchvision module path; the ONNX tensor holding a layer's output (meta.json's
//! `onnx_tensor`) must name the same node.
//!
//! NOTE: this file needs `Model::from_onnx(onnx: &[u8], external_data: Option<&[u8]>)`, which the
//! ONNX importer adds; until it is merged this test target does not compile (run
//! `cargo test --test families` for the state-dict half).
//!
//! `FAMILIES=resnet18,densenet cargo test --test families_onnx -- --nocapture` runs some and prints the table.

mod family_fixtures;

use family_fixtures::{run_all, Source};
use gradcam_wasm::Model;

#[test]
fn every_family_matches_pytorch_from_its_onnx_export() {
    run_all("ONNX export (model.onnx)", Source::Onnx, |fx| {
        let onnx = fx.read("model.onnx")?;
        let data = fx.read_optional("model.onnx.data");
        Model::from_onnx(&onnx, data.as_deref()).map_err(|e| e.to_string())
    });
}
