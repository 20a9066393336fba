//! Bytes -> the ONNX importer: the input is an .onnx file and its external data, split as
//! tests/common/onnx_fuzz_input.rs says (the stable replay in tests/fuzz_replay.rs reads it the same way).
#![no_main]

#[path = "../../tests/common/onnx_fuzz_input.rs"]
mod onnx_fuzz_input;

use gradcam_wasm::Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (onnx, external) = onnx_fuzz_input::split(data);
    let _ = Model::from_onnx(onnx, external);
});
