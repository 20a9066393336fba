//! Arbitrary image sizes and bytes, methods, classes, layers and resizes -> RgbImage::from_rgba ->
//! Explainer::explain on a tiny synthetic SqueezeNet 1.1 (10 classes), built once. The methods of
//! many forwards (Score-CAM, Ablation-CAM, the attributions) are left out, too slow for fuzzing;
//! sizes are capped at 512.
#![no_main]

use gradcam_wasm::imaging::preprocess::Resize;
use gradcam_wasm::imaging::rgb::RgbImage;
use gradcam_wasm::methods::Method;
use gradcam_wasm::{ExplainOptions, Explainer, Model, Normalization, Target};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

/// Every method of one forward and one backward (the many-pass ones are too slow to fuzz).
fn methods() -> Vec<Method> {
    gradcam_wasm::methods::ALL
        .iter()
        .copied()
        .filter(|m| {
            let n = m.needs();
            !n.batched_forwards && !n.layer_forwards && !n.input_gradients
        })
        .collect()
}

thread_local! {
    static EXPLAINER: RefCell<Option<Explainer>> = const { RefCell::new(None) };
}

fn case(mut u: Unstructured, ex: &mut Explainer) -> Result<()> {
    let width = u.int_in_range(0..=512usize)?;
    let height = u.int_in_range(0..=512usize)?;
    let methods = methods();
    let method = methods[u.choose_index(methods.len())?];
    let target = match u.int_in_range(0..=3u8)? {
        0 => Target::Top1,
        1 => Target::Class(u.int_in_range(0..=12usize)?),
        2 => Target::Class(u.arbitrary()?),
        _ => Target::Weighted(u.arbitrary::<Vec<(u8, f32)>>()?.into_iter().map(|(c, w)| (c as usize % 12, w)).collect()),
    };
    let layers = ex.model().layers();
    let layer = match u.int_in_range(0..=2u8)? {
        0 => None,
        1 => Some(layers[u.choose_index(layers.len())?].name.clone()),
        _ => Some(u.arbitrary::<String>()?),
    };
    let resize = match u.int_in_range(0..=3u8)? {
        0 => None,
        1 => Some(Resize::Exact { width: u.int_in_range(0..=96)?, height: u.int_in_range(0..=96)? }),
        2 => {
            let crop = if u.arbitrary()? { Some((u.int_in_range(0..=96)?, u.int_in_range(0..=96)?)) } else { None };
            Some(Resize::ShorterSide { size: u.int_in_range(0..=96)?, crop })
        }
        _ => Some(Resize::Exact { width: u.int_in_range(0..=300)?, height: u.int_in_range(0..=300)? }),
    };
    let opts = ExplainOptions {
        method,
        layer,
        target,
        signed: u.arbitrary()?,
        normalization: if u.arbitrary()? { Normalization::Raw } else { Normalization::MinMax },
        resize,
        ..Default::default()
    };
    // Usually a buffer of the right length (the rest of the input, repeated); sometimes the raw
    // rest, whose length is then almost always wrong.
    let exact: bool = u.arbitrary()?;
    let rest = u.take_rest();
    let need = width * height * 4;
    let rgba: Vec<u8> = if exact {
        if rest.is_empty() { vec![0; need] } else { rest.iter().copied().cycle().take(need).collect() }
    } else {
        rest.to_vec()
    };
    let Ok(image) = RgbImage::from_rgba(width, height, &rgba) else { return Ok(()) };
    if let Ok(e) = ex.explain(&image, &opts) {
        assert_eq!(e.image_map.width * e.image_map.height, e.image_map.data.len());
        assert!(e.image_map.data.iter().all(|v| v.is_finite()), "non-finite value in the image map");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    EXPLAINER.with(|cell| {
        let mut guard = cell.borrow_mut();
        let ex = guard.get_or_insert_with(|| {
            let bytes = gradcam_wasm::synthetic::squeezenet(false, 10).bytes();
            Explainer::new(Model::from_bytes(&bytes, None).expect("synthetic squeezenet1_1 loads"))
        });
        let _ = case(Unstructured::new(data), ex);
    });
});
