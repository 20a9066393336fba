//! Shared test helpers: torchvision-shaped random weights for every architecture, the default
//! model and the sample photos fetched by scripts/setup.sh.
#![allow(dead_code)]

use gradcam_wasm::imaging::rgb::RgbImage;
use std::path::PathBuf;

#[allow(unused_imports)]
pub use gradcam_wasm::synthetic::*;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The default model, converted by scripts/setup.sh. Tests fail with a clear message if it is missing.
pub fn default_model_bytes() -> Vec<u8> {
    let p = repo().join("assets/models/efficientnet-lite0.safetensors");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh first", p.display()))
}

pub fn sample(name: &str) -> RgbImage {
    let p = repo().join("assets/samples").join(name);
    let img = image::open(&p).unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh first", p.display())).to_rgb8();
    let (w, h) = img.dimensions();
    RgbImage::from_rgb(w as usize, h as usize, img.into_raw()).unwrap()
}
