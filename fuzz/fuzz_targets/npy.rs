//! Bytes -> the .npy reader (header literal parser, dtype, shape and data length checks).
#![no_main]

use gradcam_wasm::imaging::npy::read_npy_f32;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((shape, values)) = read_npy_f32(data) {
        assert_eq!(shape.iter().product::<usize>(), values.len());
    }
});
