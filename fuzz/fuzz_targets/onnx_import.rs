//! Bytes -> the ONNX importer. The input is split at its first 4 bytes (a little-endian length):
//! that many bytes are the .onnx file, the rest its external data, so both inputs are fuzzed.
#![no_main]

use gradcam_wasm::Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (onnx, external) = match data.get(..4) {
        Some(n) => {
            let n = (u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize).min(data.len() - 4);
            let rest = &data[4..];
            (&rest[..n], Some(&rest[n..]))
        }
        None => (data, None),
    };
    let _ = Model::from_onnx(onnx, external);
});
