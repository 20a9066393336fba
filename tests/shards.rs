//! Sharded batches (src/tape.rs): each shard records its share of a long method's batched calls,
//! one explainer replays the merged tapes, and the maps and curves are bitwise those of the
//! unsharded run, on the default model (at 64 x 64 so that every method stays quick).

mod common;

use gradcam_wasm::cancel::run_sync;
use gradcam_wasm::eval::faithfulness::{measure_async, Measured};
use gradcam_wasm::eval::{CurveOptions, RoadOptions};
use gradcam_wasm::imaging::rgb::RgbImage;
use gradcam_wasm::tape::{Recorded, Shard, Tape, Taping};
use gradcam_wasm::{ExplainOptions, Explainer, Explanation, Method, Model};

fn explainer() -> Explainer {
    Explainer::new(Model::from_bytes(&common::default_model_bytes(), None).unwrap().with_input_size(64).unwrap())
}

fn image() -> RgbImage {
    common::sample("chelsea.png")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Records every shard of `k` with `run` (on its own explainer, as a worker would), round after
/// round until all are complete, each round knowing the tapes of the rounds before.
fn record_all<T>(k: usize, mut run: impl FnMut(&mut Explainer) -> gradcam_wasm::Result<T>) -> Tape {
    let mut shards: Vec<Explainer> = (0..k).map(|_| explainer()).collect();
    let mut known = Tape::new();
    for _round in 0..3 {
        let mut complete = true;
        let mut calls = Vec::new();
        let mut merged = known.clone();
        for (i, ex) in shards.iter_mut().enumerate() {
            ex.set_taping(Some(Taping::record(Shard::new(i, k).unwrap(), known.clone())));
            let outcome = run(ex);
            let Recorded { tape, complete: done, calls: n } = ex.set_taping(None).unwrap().finish(outcome).unwrap();
            assert!(tape.len() <= n.div_ceil(k), "shard {i} of {k} computed {} of {n} calls", tape.len());
            complete &= done;
            calls.push(n);
            merged.merge(tape).unwrap();
        }
        assert!(calls.iter().all(|&n| n == calls[0]), "every shard makes the same calls: {calls:?}");
        known = merged;
        if complete {
            assert_eq!(known.len(), calls[0], "the merged tapes answer every call");
            return known;
        }
    }
    panic!("the shards did not complete in 3 rounds");
}

fn replayed<T>(tape: Tape, run: impl FnOnce(&mut Explainer) -> gradcam_wasm::Result<T>) -> T {
    let mut ex = explainer();
    ex.set_taping(Some(Taping::replay(tape)));
    let out = run(&mut ex).unwrap();
    ex.set_taping(None);
    out
}

fn assert_same_explanation(a: &Explanation, b: &Explanation, what: &str) {
    assert_eq!(bits(&a.raw.data), bits(&b.raw.data), "{what}: raw map");
    assert_eq!(bits(&a.image_map.data), bits(&b.image_map.data), "{what}: map on the image");
    assert_eq!(a.rgb.as_ref().map(|r| bits(&r.data)), b.rgb.as_ref().map(|r| bits(&r.data)), "{what}: rgb");
    assert_eq!(a.warnings, b.warnings, "{what}: warnings");
}

fn check_explain(opts: &ExplainOptions, what: &str) {
    let img = image();
    let plain = explainer().explain(&img, opts).unwrap();
    assert!(plain.raw.data.iter().any(|&v| v != 0.0), "{what}: a map that is not all zero");
    for k in [2, 3] {
        let tape = record_all(k, |ex| ex.explain(&img, opts));
        assert!(tape.len() >= k, "{what}: {} calls are too few to split {k} ways", tape.len());
        let sharded = replayed(tape, |ex| ex.explain(&img, opts));
        assert_same_explanation(&plain, &sharded, &format!("{what}, {k} shards"));
    }
}

fn with(method: Method) -> ExplainOptions {
    ExplainOptions { method, ..Default::default() }
}

#[test]
fn score_cam_sharded_is_bitwise_the_unsharded_map() {
    let mut some = with(Method::SCORE_CAM);
    some.score_cam.max_channels = Some(40);
    some.score_cam.batch = Some(8);
    check_explain(&some, "Score-CAM, 40 channels");
    // Every channel of a block of the network (the head's 1280 are the same code, 30x the time).
    let mut all = with(Method::SCORE_CAM);
    all.layer = Some("_blocks.5".into());
    check_explain(&all, "Score-CAM, every channel of _blocks.5");
}

#[test]
fn ablation_cam_sharded_is_bitwise_the_unsharded_map() {
    let mut opts = with(Method::ABLATION_CAM);
    opts.layer = Some("_blocks.5".into());
    check_explain(&opts, "Ablation-CAM");
}

#[test]
fn attributions_sharded_are_bitwise_the_unsharded_maps() {
    let mut ig = with(Method::INTEGRATED_GRADIENTS);
    ig.attribution.steps = 12;
    check_explain(&ig, "Integrated Gradients");
    let mut smooth = with(Method::SMOOTHGRAD);
    smooth.attribution.samples = 9;
    check_explain(&smooth, "SmoothGrad");
    check_explain(&with(Method::OCCLUSION), "Occlusion");
}

fn measure(ex: &mut Explainer, opts: &ExplainOptions) -> gradcam_wasm::Result<Measured> {
    let curves = CurveOptions { steps: 20, batch: Some(4), ..Default::default() };
    run_sync(measure_async(ex, &image(), opts, &curves, Some(&RoadOptions::default()), &mut |_, _| {}))
}

fn assert_same_measures(a: &Measured, b: &Measured, what: &str) {
    assert_same_explanation(&a.explanation, &b.explanation, what);
    let f = |m: &Measured| {
        let f = &m.faithfulness;
        let mut all = [f.deletion.scores.clone(), f.insertion.scores.clone(), vec![f.deletion.auc, f.insertion.auc, f.confidence.original, f.confidence.kept]].concat();
        if let Some(r) = &m.road {
            all.extend(r.morf.iter().chain(&r.lerf).copied());
        }
        bits(&all)
    };
    assert_eq!(f(a), f(b), "{what}: curves");
}

#[test]
fn evaluation_curves_sharded_are_bitwise_the_unsharded_ones() {
    let mut score_cam = with(Method::SCORE_CAM);
    score_cam.score_cam.max_channels = Some(12);
    score_cam.score_cam.batch = Some(4);
    // Grad-CAM makes no batched call: the curves are recorded in one round. Score-CAM's curves
    // follow its map, so a second round records them once the first has recorded the map's calls.
    for (opts, what) in [(with(Method::GRAD_CAM), "Grad-CAM's curves"), (score_cam, "Score-CAM's curves")] {
        let plain = measure(&mut explainer(), &opts).unwrap();
        assert!(plain.faithfulness.deletion.scores.iter().any(|&s| s != plain.faithfulness.deletion.scores[0]));
        for k in [2, 3] {
            let tape = record_all(k, |ex| measure(ex, &opts));
            let sharded = replayed(tape, |ex| measure(ex, &opts));
            assert_same_measures(&plain, &sharded, &format!("{what}, {k} shards"));
        }
    }
}

#[test]
fn a_missing_or_wrong_length_tape_entry_is_a_clear_error() {
    let mut opts = with(Method::SCORE_CAM);
    opts.score_cam.max_channels = Some(8);
    opts.score_cam.batch = Some(2);
    let img = image();
    let full = record_all(2, |ex| ex.explain(&img, &opts));
    assert_eq!(full.len(), 4);

    let mut missing = full.clone();
    missing.remove(2);
    let mut ex = explainer();
    ex.set_taping(Some(Taping::replay(missing)));
    let err = ex.explain(&img, &opts).unwrap_err().to_string();
    assert!(err.contains("no answer for batched call 2"), "{err}");

    let mut short = full.clone();
    let mut entry = short.remove(1).unwrap();
    entry.pop();
    short.insert(1, entry);
    ex.set_taping(Some(Taping::replay(short)));
    let err = ex.explain(&img, &opts).unwrap_err().to_string();
    assert!(err.contains("batched call 1 with 1999 values, but the call takes 2000"), "{err}");

    // The explainer computes again once the taping is gone.
    ex.set_taping(None);
    let plain = explainer().explain(&img, &opts).unwrap();
    assert_eq!(bits(&ex.explain(&img, &opts).unwrap().raw.data), bits(&plain.raw.data));
}

#[test]
fn tapes_and_shards_are_checked_before_use() {
    assert!(Shard::new(2, 2).is_err());
    assert!(Shard::new(0, 0).is_err());
    assert!(Shard::new(0, 65).is_err());
    let mut t = Tape::new();
    t.insert(0, vec![1.0, 2.0]);
    t.insert(5, vec![3.0]);
    let (calls, lengths, data) = t.to_flat();
    assert_eq!((calls.as_slice(), lengths.as_slice(), data.as_slice()), (&[0, 5][..], &[2, 1][..], &[1.0, 2.0, 3.0][..]));
    assert_eq!(Tape::from_flat(&calls, &lengths, &data).unwrap(), t);
    let err = |r: gradcam_wasm::Result<Tape>| r.unwrap_err().to_string();
    assert!(err(Tape::from_flat(&calls, &[2], &data)).contains("malformed"));
    assert!(err(Tape::from_flat(&calls, &[2, 2], &data)).contains("sum to Some(4) values but it holds 3"));
    assert!(err(Tape::from_flat(&calls, &[u32::MAX, u32::MAX], &data)).contains("sum to"));
    assert!(err(Tape::from_flat(&[1, 1], &lengths, &data)).contains("given twice"));
    // Two tapes of the same call must agree.
    let mut other = Tape::new();
    other.insert(5, vec![4.0]);
    assert!(t.clone().merge(other).unwrap_err().to_string().contains("differently"));
}
