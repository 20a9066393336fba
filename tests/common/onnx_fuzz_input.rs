//! One fuzz input for the ONNX importer, as fuzz/fuzz_targets/onnx_import.rs and its stable replay
//! (tests/fuzz_replay.rs) both read it: a 4-byte little-endian length, that many bytes of .onnx
//! file, then its external data, so both inputs are fuzzed.
#![allow(dead_code)]

/// The .onnx bytes and the external data (`None` when the input is shorter than the length).
pub fn split(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.get(..4) {
        Some(n) => {
            let n = (u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize).min(data.len() - 4);
            let rest = &data[4..];
            (&rest[..n], Some(&rest[n..]))
        }
        None => (data, None),
    }
}

/// The input that `split` turns back into `onnx` and `external`.
pub fn join(onnx: &[u8], external: &[u8]) -> Vec<u8> {
    let mut s = (onnx.len() as u32).to_le_bytes().to_vec();
    s.extend(onnx);
    s.extend(external);
    s
}
