//! The paper's evaluations (src/eval): deletion / insertion curves on a fake model whose score is
//! exactly computable, the confidence change, the 15% box and its connected-component choice, the
//! pointing game's scoring, and the pointing game on the default model.

mod common;

use common::*;
use gradcam_wasm::eval::faithfulness::{average_drop_increase, baseline, confidence_change, deletion_insertion, trapezoid, ConfidenceChange};
use gradcam_wasm::eval::localization::largest_component;
use gradcam_wasm::eval::pointing::{check_photos, grids, hit, pointing_game};
use gradcam_wasm::eval::{bounding_box, Baseline, BoundingBox, CurveOptions, CurveScore, Photo, PointingOptions, PAPER_THRESHOLD};
use gradcam_wasm::{Explainer, FeatureMap, Map, Method, Model};

/// A 2x2 input whose pixels hold 1, 2, 3, 4 in every channel.
fn input() -> FeatureMap {
    FeatureMap::new(3, 2, 2, [1.0, 2.0, 3.0, 4.0].repeat(3))
}

/// The fake model: one class whose score is the sum of channel 0's pixels; a second class scores 0.
fn sum_model(calls: &mut Vec<usize>) -> impl FnMut(&[f32], usize) -> gradcam_wasm::Result<Vec<f32>> + '_ {
    move |x: &[f32], n: usize| {
        calls.push(n);
        assert_eq!(x.len(), n * 12);
        Ok(x.chunks_exact(12).flat_map(|img| [img[..4].iter().sum::<f32>(), 0.0]).collect())
    }
}

fn logit_opts(steps: usize) -> CurveOptions {
    CurveOptions { steps, baseline: Baseline::Constant(0.0), cell: 1, score: CurveScore::Logit, batch: Some(2) }
}

#[test]
fn deletion_and_insertion_of_a_sum_model_are_exact() {
    // Map order: pixel 1 (0.9), 2 (0.5), 3 (0.3), 0 (0.1); pixel values 2, 3, 4, 1.
    let map = Map::new(2, 2, vec![0.1, 0.9, 0.5, 0.3]);
    let mut calls = Vec::new();
    let (del, ins) = deletion_insertion(&input(), &map, &[1.0, 0.0], &mut sum_model(&mut calls), &logit_opts(4), 4).unwrap();
    assert_eq!(del.fractions, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    assert_eq!(del.scores, vec![10.0, 8.0, 5.0, 1.0, 0.0]);
    assert_eq!(ins.scores, vec![0.0, 2.0, 5.0, 9.0, 10.0]);
    // Trapezoids of width 0.25: (9 + 6.5 + 3 + 0.5) / 4 and (1 + 3.5 + 7 + 9.5) / 4.
    assert!((del.auc - 4.75).abs() < 1e-6, "{}", del.auc);
    assert!((ins.auc - 5.25).abs() < 1e-6, "{}", ins.auc);
    // 5 points per curve in batches of 2: 2, 2, 1 forwards' worth, twice.
    assert_eq!(calls, vec![2, 2, 1, 2, 2, 1]);

    // Two steps remove 0, 2 and 4 pixels; the probability of class 0 is sigmoid(score).
    let mut calls = Vec::new();
    let opts = CurveOptions { score: CurveScore::Probability, ..logit_opts(2) };
    let (del, _) = deletion_insertion(&input(), &map, &[1.0, 0.0], &mut sum_model(&mut calls), &opts, 4).unwrap();
    let sigmoid = |s: f32| 1.0 / (1.0 + (-s).exp());
    assert_eq!(del.fractions, vec![0.0, 0.5, 1.0]);
    for (got, want) in del.scores.iter().zip([sigmoid(10.0), sigmoid(5.0), sigmoid(0.0)]) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}

#[test]
fn a_cell_is_removed_whole_and_ranked_by_its_mean() {
    // 4x2 input, cells of 2x2: left cell (pixels 0,1,4,5) mean map 0.2, right cell mean 0.6.
    let input = FeatureMap::new(3, 2, 4, (1..=8).map(|v| v as f32).collect::<Vec<_>>().repeat(3));
    let map = Map::new(4, 2, vec![0.0, 0.8, 0.5, 0.5, 0.0, 0.0, 0.7, 0.7]);
    let model = |x: &[f32], n: usize| Ok(x.chunks_exact(24).take(n).flat_map(|img| [img[..8].iter().sum::<f32>(), 0.0]).collect());
    let opts = CurveOptions { cell: 2, ..logit_opts(2) };
    let (del, ins) = deletion_insertion(&input, &map, &[1.0, 0.0], &mut { model }, &opts, 4).unwrap();
    // Right cell = 3 + 4 + 7 + 8 = 22 goes first, then the left cell (1 + 2 + 5 + 6 = 14).
    assert_eq!(del.scores, vec![36.0, 14.0, 0.0]);
    assert_eq!(ins.scores, vec![0.0, 22.0, 36.0]);
}

#[test]
fn baselines_and_budgets() {
    let mean = baseline(&input(), Baseline::Mean).unwrap();
    assert_eq!(mean, vec![2.5; 12]);
    // A blur of a constant image is the image.
    let flat = FeatureMap::new(3, 5, 7, vec![0.25; 105]);
    assert!(baseline(&flat, Baseline::Blur(5.0)).unwrap().iter().all(|v| (v - 0.25).abs() < 1e-6));
    let map = Map::new(2, 2, vec![0.0; 4]);
    let mut never = |_: &[f32], _: usize| -> gradcam_wasm::Result<Vec<f32>> { panic!("no forward may run when the options are refused") };
    for opts in [logit_opts(0), logit_opts(100_000), CurveOptions { cell: 3, ..logit_opts(4) }] {
        assert!(deletion_insertion(&input(), &map, &[1.0, 0.0], &mut never, &opts, 4).is_err(), "{opts:?}");
    }
    assert!(deletion_insertion(&input(), &Map::new(1, 1, vec![0.0]), &[1.0, 0.0], &mut never, &logit_opts(4), 4).is_err());
    assert!(baseline(&input(), Baseline::Blur(-1.0)).is_err());
    assert_eq!(trapezoid(&[0.0, 1.0], &[1.0, 1.0]), 1.0);
}

#[test]
fn confidence_change_keeps_the_maps_region() {
    // Map already in [0, 1]: kept input channel 0 = 1*1, 2*0, 3*0.5, 4*0 -> score 2.5 of 10.
    let map = Map::new(2, 2, vec![1.0, 0.0, 0.5, 0.0]);
    let mut calls = Vec::new();
    let c = confidence_change(&input(), &map, &[1.0, 0.0], &mut sum_model(&mut calls), CurveScore::Logit).unwrap();
    assert_eq!((c.original, c.kept), (10.0, 2.5));
    assert!((c.drop - 0.75).abs() < 1e-6 && !c.increase);
    // The map is min-max normalized first: 2 x the map gives the same.
    let doubled = Map::new(2, 2, vec![2.0, 0.0, 1.0, 0.0]);
    assert_eq!(confidence_change(&input(), &doubled, &[1.0, 0.0], &mut sum_model(&mut calls), CurveScore::Logit).unwrap(), c);
    // Average drop and increase over images (percent): drops 0.75 and 0 (an increase).
    let (drop, increase) = average_drop_increase(&[c, ConfidenceChange::new(0.5, 0.6)]);
    assert!((drop - 37.5).abs() < 1e-4 && (increase - 50.0).abs() < 1e-4, "{drop} {increase}");
}

#[test]
fn the_15_percent_box_of_a_known_map() {
    // 6 x 5: a 3x2 block of 1.0 (x 1..=3, y 1..=2) and a stray 0.1 (under 15%) at (5, 4).
    let mut data = vec![0.0f32; 30];
    for y in 1..=2 {
        for x in 1..=3 {
            data[y * 6 + x] = 1.0;
        }
    }
    data[4 * 6 + 5] = 0.1;
    data[3 * 6 + 2] = 0.15; // exactly 15%: in, and it extends the block down to y = 3
    let b = bounding_box(&Map::new(6, 5, data), PAPER_THRESHOLD).unwrap();
    assert_eq!(b, BoundingBox { x0: 1, y0: 1, x1: 3, y1: 3, pixels: 7 });
    assert_eq!((b.width(), b.height()), (3, 3));
    assert_eq!(bounding_box(&Map::new(2, 1, vec![0.0, 0.0]), PAPER_THRESHOLD), None);
}

#[test]
fn the_box_surrounds_the_largest_segment_not_the_highest() {
    // A peak of 1.0 alone at (0, 0); a diagonal run of 0.5 from (2, 1) to (5, 4), 4 pixels that
    // touch only at corners (8-connected: one segment), and 2 pixels at (5, 0), (5, 1).
    let (w, h) = (6, 5);
    let mut data = vec![0.0f32; w * h];
    data[0] = 1.0;
    for k in 0..4 {
        data[(1 + k) * w + 2 + k] = 0.5;
    }
    data[5] = 0.3;
    data[w + 5] = 0.3;
    let b = bounding_box(&Map::new(w, h, data.clone()), PAPER_THRESHOLD).unwrap();
    assert_eq!(b, BoundingBox { x0: 2, y0: 1, x1: 5, y1: 4, pixels: 4 });
    // At 40% the two 0.3 pixels drop out; the diagonal stays the largest.
    let mask: Vec<bool> = data.iter().map(|&v| v >= 0.4).collect();
    let mut seg = largest_component(&mask, w, h);
    seg.sort();
    assert_eq!(seg, vec![w + 2, 2 * w + 3, 3 * w + 4, 4 * w + 5]);
    // A map the size of a large photo, one long snake: no recursion, no stack overflow.
    let (w, h) = (2000, 2000);
    let snake: Vec<f32> = (0..w * h).map(|i| if (i / w) % 2 == 0 || (i % w == if (i / w) % 4 == 1 { w - 1 } else { 0 }) { 1.0 } else { 0.0 }).collect();
    let b = bounding_box(&Map::new(w, h, snake), PAPER_THRESHOLD).unwrap();
    assert_eq!((b.x0, b.y0, b.x1, b.y1), (0, 0, w - 1, h - 1));
}

#[test]
fn pointing_game_scoring() {
    // 4 x 2 map over a 1x2 grid: the max at x = 2 is in the right cell (slot 1).
    let m = Map::new(4, 2, vec![0.0, 0.1, 0.9, 0.2, 0.0, 0.0, 0.0, 0.0]);
    assert!(hit(&m, 1, 2, 1) && !hit(&m, 1, 2, 0));
    // 2x2 grid over a 4x4 map: the max at (1, 3) is the bottom-left cell (slot 2).
    let mut d = vec![0.0; 16];
    d[3 * 4 + 1] = 1.0;
    assert!(hit(&Map::new(4, 4, d), 2, 2, 2));
    // A flat map points nowhere.
    assert!(!hit(&Map::new(4, 2, vec![0.0; 8]), 1, 2, 0));
    // Four photos: 12 ordered pairs and 4 rotations, each photo once in each 2x2 cell.
    let g = grids(4);
    assert_eq!(g.iter().filter(|g| g.rows == 1).count(), 12);
    let quads: Vec<_> = g.iter().filter(|g| g.rows == 2).collect();
    assert_eq!(quads.len(), 4);
    for slot in 0..4 {
        let mut at: Vec<usize> = quads.iter().map(|q| q.photos[slot]).collect();
        at.sort();
        assert_eq!(at, vec![0, 1, 2, 3]);
    }
}

/// The bundled photos whose classes the benchmark knows.
fn photos() -> Vec<Photo> {
    [("coffee.png", vec![967]), ("chelsea.png", vec![281, 282, 285]), ("rocket.jpg", vec![657, 812]), ("motorcycle_left.png", vec![665, 670])]
        .into_iter()
        .map(|(name, classes)| Photo { name: name.into(), image: sample(name), classes })
        .collect()
}

#[test]
fn pointing_game_on_the_default_model_grad_cam_beats_guided_backprop() {
    let mut ex = Explainer::new(Model::from_bytes(&default_model_bytes(), None).unwrap());
    let photos = photos();
    let opts = PointingOptions::default();
    let checks = check_photos(&mut ex, &photos, &opts).unwrap();
    for (p, (top, ok)) in photos.iter().zip(&checks) {
        println!("{}: top-1 {} ({}) p {:.3} {}", p.name, top.class, top.label, top.probability, ok);
    }
    let used: Vec<Photo> = photos.iter().zip(&checks).filter(|(_, c)| c.1).map(|(p, _)| p.clone()).collect();
    assert_eq!(used.len(), 4, "every bundled photo's top-1 is one of its classes");
    let report = pointing_game(&mut ex, &used, &[Method::GRAD_CAM, Method::GUIDED_BACKPROP], &opts, &mut |_, _, _| {}).unwrap();
    for s in &report.methods {
        println!("{}: 1x2 {}/{}, 2x2 {}/{}", s.method, s.hits_1x2, s.trials_1x2, s.hits_2x2, s.trials_2x2);
        assert!(s.error.is_none(), "{:?}", s.error);
        assert_eq!((s.trials_1x2, s.trials_2x2), (24, 16));
    }
    let (grad_cam, guided) = (&report.methods[0], &report.methods[1]);
    assert!(grad_cam.hits() > guided.hits(), "Grad-CAM {} vs Guided Backprop {} hits", grad_cam.hits(), guided.hits());
}

#[test]
fn road_imputes_a_linear_ramp_exactly_and_scores_morf_and_lerf() {
    use gradcam_wasm::eval::road::{impute, road, RoadOptions};
    use gradcam_wasm::synthetic::Rng;
    // A linear ramp is its own 8-neighbour weighted mean: a hole in it is imputed exactly.
    let (w, h) = (40, 30);
    let ramp: Vec<f32> = (0..3).flat_map(|c| (0..h).flat_map(move |y| (0..w).map(move |x| c as f32 + 0.1 * x as f32 - 0.05 * y as f32))).collect();
    let input = FeatureMap::new(3, h, w, ramp.clone());
    let removed: Vec<bool> = (0..w * h).map(|p| (5..35).contains(&(p % w)) && (3..27).contains(&(p / w))).collect();
    let mut holed = input.clone();
    removed.iter().enumerate().filter(|(_, &r)| r).for_each(|(p, _)| (0..3).for_each(|c| holed.data[c * w * h + p] = 100.0));
    let got = impute(&holed, &removed, 0.0, &mut Rng::new(1), 200).unwrap();
    let worst = got.iter().zip(&ramp).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "largest imputation error {worst}");
    // The sum model on a 2x2 input with values 1..4: a map that ranks pixel 3 (value 4) first.
    let map = Map::new(2, 2, vec![0.0, 0.1, 0.2, 0.9]);
    let opts = RoadOptions { percentages: vec![25.0], noise: 0.0, score: CurveScore::Logit, ..Default::default() };
    let mut calls = Vec::new();
    let r = road(&input_2x2(), &map, &[1.0, 0.0], &mut sum_model(&mut calls), &opts).unwrap();
    // MoRF removes pixel 3: its neighbours 1, 2 (direct, 1/6) and 0 (diagonal, 1/12) give
    // (2/6 + 3/6 + 1/12) / (5/12) = 2.2; LeRF removes pixel 0: (2/6 + 3/6 + 4/12) / (5/12) = 2.8.
    assert_eq!(r.original, 10.0);
    assert!((r.morf[0] - (6.0 + 2.2)).abs() < 1e-4 && (r.lerf[0] - (9.0 + 2.8)).abs() < 1e-4, "{r:?}");
    assert!((r.combined - (r.lerf[0] - r.morf[0]) / 2.0).abs() < 1e-6);
    assert_eq!(calls, vec![1, 2]);
    let bad = RoadOptions { percentages: vec![100.0], ..Default::default() };
    assert!(road(&input_2x2(), &map, &[1.0, 0.0], &mut sum_model(&mut calls), &bad).is_err());
}

fn input_2x2() -> FeatureMap {
    input()
}

#[test]
fn curves_on_the_default_model_start_and_end_at_the_photos_probability() {
    use gradcam_wasm::eval::faithfulness::faithfulness;
    use gradcam_wasm::ExplainOptions;
    let mut ex = Explainer::new(Model::from_bytes(&default_model_bytes(), None).unwrap());
    let coffee = sample("coffee.png");
    let opts = ExplainOptions::default();
    let e = ex.explain(&coffee, &opts).unwrap();
    let f = faithfulness(&ex, &coffee, &e, &opts, &CurveOptions { steps: 10, ..Default::default() }).unwrap();
    assert_eq!((f.deletion.scores.len(), f.insertion.scores.len()), (11, 11));
    // Nothing removed, and everything inserted back, is the photo itself: its top-1 probability.
    assert!((f.deletion.scores[0] - e.probability).abs() < 1e-4, "{} vs {}", f.deletion.scores[0], e.probability);
    assert!((f.insertion.scores[10] - e.probability).abs() < 1e-4);
    assert!(f.deletion.auc < f.insertion.auc, "Grad-CAM of espresso: deletion {} vs insertion {}", f.deletion.auc, f.insertion.auc);
    assert!((f.confidence.original - e.probability).abs() < 1e-4);
    // The batch entry point checks sizes before it runs anything.
    assert!(ex.logits_batch(&[0.0; 10], 1, 224, 224).is_err());
    assert!(ex.logits_batch(&[], 0, 224, 224).is_err());
}

fn gradcam(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam")).args(args).current_dir(repo()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn cli_evaluate_one_image_and_draw_the_box() {
    let (code, out, err) = gradcam(&["evaluate", "assets/samples/coffee.png", "--method", "gradcam", "--steps", "10", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first = &v[0];
    assert_eq!(first["method"], "gradcam");
    // The JS evaluate result's names (src/schema.rs); `faithfulness` and `class` are deprecated aliases.
    assert_eq!(first["deletion"]["scores"].as_array().unwrap().len(), 11);
    assert_eq!(first["deletion"], first["faithfulness"]["deletion"]);
    assert_eq!((first["classIdx"].as_u64(), first["class"].as_u64()), (Some(967), Some(967)));
    assert!(first["confidence"]["original"].as_f64().unwrap() > 0.5 && first["probability"].as_f64().unwrap() > 0.5);
    assert_eq!(first["road"]["morf"].as_array().unwrap().len(), 9);
    let b = &first["box"];
    let (x0, y0) = (b["x0"].as_u64().unwrap() as u32, b["y0"].as_u64().unwrap() as u32);
    // --box draws the same box, white, on the overlay.
    let path = std::env::temp_dir().join(format!("gradcam-box-{}.png", std::process::id()));
    let (code, out, err) = gradcam(&["explain", "assets/samples/coffee.png", "--box", "--out", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("box at 15% of the max: x {x0}..=")), "{out}");
    let png = image::open(&path).unwrap().to_rgba8();
    std::fs::remove_file(&path).ok();
    assert_eq!(png.get_pixel(x0, y0).0, [255, 255, 255, 255]);
}
