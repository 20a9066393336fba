//! Bytes -> the legacy torch.save reader, and the same bytes through WeightMap (value checks).
#![no_main]

use gradcam_wasm::weights::legacy_pth::read_legacy_pth;
use gradcam_wasm::weights::WeightMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if read_legacy_pth(data).is_ok() {
        let _ = WeightMap::from_legacy_pth(data);
    }
});
