//! Writes what the native build computes for a real photo to target/parity/, where the wasm test
//! (tests/wasm.rs, run in a browser) compares its own results: same logits, same maps.
//! scripts/test.sh runs this before the wasm tests.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use gradcam_wasm::{ExplainOptions, Explainer, Method, Model, Target};
use serde_json::json;

#[test]
fn write_native_reference_for_the_wasm_parity_test() {
    let img = sample("chelsea.png");
    let mut ex = Explainer::new(Model::from_bytes(&default_model_bytes(), None).unwrap());
    let mut maps = serde_json::Map::new();
    let mut top5 = serde_json::Value::Null;
    for (method, class) in [(Method::GRAD_CAM, 281), (Method::GRAD_CAM, 967), (Method::LAYER_CAM, 282), (Method::GUIDED_BACKPROP, 281)] {
        let e = ex.explain(&img, &ExplainOptions { method, target: Target::Class(class), ..Default::default() }).unwrap();
        top5 = serde_json::to_value(&e.top5).unwrap();
        maps.insert(format!("{}:{class}", method.name()), json!({ "width": e.raw.width, "height": e.raw.height, "values": e.raw.data }));
    }
    let dir = repo().join("target/parity");
    std::fs::create_dir_all(&dir).unwrap();
    let rgba: Vec<u8> = img.data.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    std::fs::write(dir.join("chelsea.rgba"), rgba).unwrap();
    let reference = json!({ "width": img.width, "height": img.height, "top5": top5, "maps": maps });
    std::fs::write(dir.join("reference.json"), reference.to_string()).unwrap();
}
