//! Bytes -> WeightMap::from_safetensors -> Arch::detect -> build: any input may fail, none may
//! panic or allocate from a size the file merely claims.
#![no_main]

use gradcam_wasm::weights::WeightMap;
use gradcam_wasm::Arch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(weights) = WeightMap::from_safetensors(data) else { return };
    if let Ok(arch) = Arch::detect(&weights) {
        let _ = arch.build(&weights);
    }
    // Every architecture's builder must refuse (not panic on) weights that are not its own.
    let weights = WeightMap::from_safetensors(data).expect("parsed once already");
    for arch in [Arch::ResNet18, Arch::Vgg11Bn, Arch::AlexNet, Arch::SqueezeNet1_1, Arch::MobileNetV2, Arch::EfficientNetLite0] {
        let _ = arch.build(&weights);
    }
});
