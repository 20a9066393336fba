//! Bytes (as lossy UTF-8 text) -> the labels-file parser (JSON array or one name per line).
#![no_main]

use gradcam_wasm::loading::parse_labels;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(labels) = parse_labels(&String::from_utf8_lossy(data)) {
        assert!(!labels.is_empty());
    }
});
