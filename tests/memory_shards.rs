//! Peak live heap bytes of one instance while it records its shard of a long method, and while it
//! replays the merged tapes (src/tape.rs), counted by a global allocator wrapper: each instance
//! stays within the bound tests/memory.rs holds Guided Grad-CAM to (weights + peak <= 3.5x the
//! weights, leaving wasm the rest of issue 5's 4x). One test only: the counter is process-wide.

mod common;

use common::*;
use gradcam_wasm::tape::{Shard, Tape, Taping};
use gradcam_wasm::{ExplainOptions, Explainer, FeatureMap, Method, Model};
use peak_allocator::{live, peak, peak_of, reset_peak};

#[path = "common/peak_allocator.rs"]
mod peak_allocator;

#[global_allocator]
static ALLOC: peak_allocator::Counting = peak_allocator::Counting;

const MB: f64 = 1048576.0;

#[test]
fn a_shard_and_the_replay_stay_within_the_memory_bound() {
    let model = Model::from_bytes(&default_model_bytes(), None).unwrap();
    let weights = model.graph.parameter_count() * 4;
    let mut ex = Explainer::new(model);
    let input = FeatureMap::new(3, 224, 224, Rng::new(7).vec(3 * 224 * 224, 1.5));
    // Integrated Gradients holds the largest tape (an input gradient per step); Occlusion the most calls.
    let mut ig = ExplainOptions { method: Method::INTEGRATED_GRADIENTS, ..Default::default() };
    ig.attribution.steps = 32;
    let occlusion = ExplainOptions { method: Method::OCCLUSION, ..Default::default() };
    ex.explain_tensor(input.clone(), &ExplainOptions::default()).unwrap(); // builds the kept weights first
    for (name, opts) in [("integrated gradients, 32 steps", ig), ("occlusion", occlusion)] {
        let mut merged = Tape::new();
        let mut record_peak = 0;
        for i in 0..2 {
            ex.set_taping(Some(Taping::record(Shard::new(i, 2).unwrap(), Tape::new())));
            let (outcome, p) = peak_of(|| ex.explain_tensor(input.clone(), &opts).map(|_| ()));
            let recorded = ex.set_taping(None).unwrap().finish(outcome).unwrap();
            record_peak = record_peak.max(p);
            merged.merge(recorded.tape).unwrap();
        }
        let tape_bytes = merged.values() * 4;
        let before = live();
        ex.set_taping(Some(Taping::replay(merged)));
        reset_peak();
        ex.explain_tensor(input.clone(), &opts).unwrap();
        ex.set_taping(None);
        // The tape was live before the replay started: it counts as the replay's.
        let replay_peak = peak() - before + tape_bytes;
        println!(
            "{name}: weights {:.1} MB; peak above the model: recording a shard of 2 {:.1} MB, replaying {:.1} MB (of which the tape {:.1} MB)",
            weights as f64 / MB,
            record_peak as f64 / MB,
            replay_peak as f64 / MB,
            tape_bytes as f64 / MB
        );
        for (phase, p) in [("recording", record_peak), ("replaying", replay_peak)] {
            assert!(weights + p <= 7 * weights / 2, "{name}: {phase} peaks {:.1} MB above {:.1} MB of weights", p as f64 / MB, weights as f64 / MB);
        }
    }
}
