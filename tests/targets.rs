//! Explainer-level options: the weighted class target (`Target::parse`, its linearity) and the
//! CAM smoothings (`eigen_smooth`, `aug_smooth`), on a small random ResNet-18.

mod common;

use common::resnet;
use gradcam_wasm::{ExplainOptions, Explainer, FeatureMap, Method, Model, Normalization, Target};

const CLASSES: usize = 10;

fn explainer() -> Explainer {
    let model = Model::from_bytes(&resnet(18, CLASSES).bytes(), None).unwrap().with_input_size(64).unwrap();
    Explainer::new(model)
}

/// A fixed 3 x 64 x 64 input with structure in both directions.
fn input() -> FeatureMap {
    FeatureMap::new(3, 64, 64, (0..3 * 64 * 64).map(|i| (((i * 37) % 101) as f32 / 50.0) - 1.0).collect())
}

/// The signed, unnormalized map (before the final ReLU) of `method` for `target`.
fn raw_map(ex: &mut Explainer, method: Method, target: Target) -> Vec<f32> {
    let opts = ExplainOptions { method, target, signed: true, normalization: Normalization::Raw, ..Default::default() };
    ex.explain_tensor(input(), &opts).unwrap().raw.data
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-4 * scale, "{what}: cell {i}: {a} vs {b} (scale {scale})");
    }
}

#[test]
fn target_parse_reads_a_class_or_weighted_terms_and_says_what_is_wrong() {
    assert_eq!(Target::parse("281", 1000), Ok(Target::Class(281)));
    assert_eq!(Target::parse(" 281:1, 285:0.5 ", 1000), Ok(Target::Weighted(vec![(281, 1.0), (285, 0.5)])));
    assert_eq!(Target::parse("3:-2", 10), Ok(Target::Weighted(vec![(3, -2.0)])));
    for (text, want) in [
        ("", "empty"),
        ("  ", "empty"),
        ("cat", "not a class index"),
        ("1000", "out of range"),
        ("281:", "not a number"),
        (":1", "not a class index"),
        ("281:1,", "class:weight"),
        ("281:1,285", "class:weight"),
        ("281:nan", "finite"),
        ("281:1e40", "finite"),
        ("281:inf", "finite"),
        ("5:1,1000:1", "out of range"),
        ("-1", "not a class index"),
    ] {
        let e = Target::parse(text, 1000).err().unwrap_or_else(|| panic!("'{text}' was accepted")).to_string();
        assert!(e.contains(want), "'{text}': {e}");
    }
    // The term count is bounded before anything is parsed or allocated.
    let many = vec!["1:1"; 65].join(",");
    assert!(Target::parse(&many, 1000).unwrap_err().to_string().contains("65 terms"));
    assert!(Target::parse(&vec!["1:1"; 64].join(","), 1000).is_ok());
}

#[test]
fn a_weighted_target_is_linear_in_its_classes() {
    let mut ex = explainer();
    let (a, b) = (2, 7);
    let map_a = raw_map(&mut ex, Method::GRAD_CAM, Target::Class(a));
    let map_b = raw_map(&mut ex, Method::GRAD_CAM, Target::Class(b));
    assert!(map_a.iter().zip(&map_b).any(|(x, y)| (x - y).abs() > 1e-3 * x.abs().max(y.abs())), "the two classes' maps must differ for the test to mean anything");
    let only_a = raw_map(&mut ex, Method::GRAD_CAM, Target::Weighted(vec![(a, 1.0), (b, 0.0)]));
    assert_close(&only_a, &map_a, "1*a + 0*b is class a");
    let sum = raw_map(&mut ex, Method::GRAD_CAM, Target::Weighted(vec![(a, 1.0), (b, 1.0)]));
    let want: Vec<f32> = map_a.iter().zip(&map_b).map(|(x, y)| x + y).collect();
    assert_close(&sum, &want, "Grad-CAM of a + b is the sum of both maps");
    // The reported class is the heaviest term.
    let opts = ExplainOptions { target: Target::Weighted(vec![(a, 0.5), (b, -2.0)]), ..Default::default() };
    assert_eq!(ex.explain_tensor(input(), &opts).unwrap().class, b);
}
