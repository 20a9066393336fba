//! Every torchvision family against PyTorch, from its state dict: the narrow networks of
//! tests/fixtures/families/<name>/model.pth (zip torch.save) load with `Model::from_bytes`, are
//! detected as their architecture with torchvision's default Grad-CAM layer, and give PyTorch's
//! logits, activations and raw Grad-CAM maps (two layers each) within relative 1e-3, and its input
//! gradients (plain, and guided backprop where every rectifier is a ReLU/ReLU6 module) with cosine
//! similarity >= 0.999. The references come from scripts/gen-family-fixtures.py (needs torch; the
//! outputs are committed, so this test does not).
//!
//! `FAMILIES=resnet18,densenet cargo test --test families -- --nocapture` runs some and prints the table.

mod family_fixtures;

use family_fixtures::{run_all, Source};
use gradcam_wasm::Model;

#[test]
fn every_family_matches_pytorch_from_its_state_dict() {
    run_all("state dict (model.pth)", Source::StateDict, |fx| {
        let bytes = fx.read("model.pth")?;
        Model::from_bytes(&bytes, None).map_err(|e| e.to_string())
    });
}
