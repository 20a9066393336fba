//! Bytes -> the zip-format torch.save reader, then WeightMap's value checks on what it accepts.
#![no_main]

use gradcam_wasm::weights::zip_pth::read_zip_pth;
use gradcam_wasm::weights::WeightMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if read_zip_pth(data).is_ok() {
        let _ = WeightMap::from_bytes(data);
    }
});
