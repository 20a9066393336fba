//! Faithfulness of a map: does the network's score follow the pixels the map ranks first?
//!
//! **Deletion** (Petsiuk et al., RISE): the network input's pixels (or `cell` x `cell` cells) are
//! replaced by a baseline in the map's order, most important first, over `steps` steps; the curve
//! is the target's score after each step, and a faithful map makes it fall fast (low AUC).
//! **Insertion**: starting from the baseline, the input's pixels come back in the same order; a
//! faithful map makes the score rise fast (high AUC). The curve's x is the fraction of cells
//! removed (inserted), from 0 to 1, and its AUC the trapezoid rule over [0, 1].
//!
//! The score is, by default, the target class's **softmax probability** (for a weighted target
//! sum_c w_c p_c), as RISE plots it; `CurveScore::Logit` gives the class score before softmax.
//! Everything runs on the *network input* grid (after resize, crop and normalization): the map is
//! brought there bilinearly, and the baselines are computed on the normalized input.
//!
//! **Average drop / increase in confidence** (Chattopadhay et al., Grad-CAM++, Section 5.1): the
//! input is multiplied by the map min-max normalized to [0, 1] (the region the map keeps), as
//! pytorch-grad-cam's `CamMultImageConfidenceChange` does on the normalized tensor; with Y the
//! score of the input and O that of the kept region, drop = max(0, Y - O) / Y and increase =
//! [Y < O]; over a set of images, Average Drop = 100 x mean(drop) and Increase in Confidence =
//! 100 x mean(increase).

use crate::error::{Error, Result};
use crate::explainer::{softmax, ExplainOptions, Explainer, Explanation, Target};
use crate::fail;
use crate::feature_map::{FeatureMap, Map};
use crate::imaging::project::upsample_bilinear;
use crate::imaging::rgb::RgbImage;
use crate::methods::Forwards;

/// The most steps a curve may take (each is one forward).
pub const MAX_STEPS: usize = 1000;
/// The most bytes one batch of modified inputs may hold (f32, n x 3 x H x W): 64 MiB, as Score-CAM's.
pub const MAX_BATCH_BYTES: usize = crate::methods::score::MAX_BATCH_BYTES;

/// What removed pixels become.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Baseline {
    /// The input blurred by a Gaussian of this sigma in pixels (kernel 2 * ceil(2 sigma) + 1
    /// taps, borders clamped); RISE's insertion uses sigma 5 (an 11-tap kernel).
    Blur(f32),
    /// Each channel's mean over the input.
    Mean,
    /// One value in every channel of the normalized input (0 is the dataset mean for mean/std
    /// normalization).
    Constant(f32),
}

/// What a curve measures after each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CurveScore {
    /// The target's softmax probability (sum_c w_c p_c for a weighted target).
    #[default]
    Probability,
    /// The target's score before softmax (sum_c w_c y_c).
    Logit,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurveOptions {
    /// Steps from nothing removed to everything removed; the curve has steps + 1 points.
    pub steps: usize,
    pub baseline: Baseline,
    /// Side of the square cells removed together (1: single pixels).
    pub cell: usize,
    pub score: CurveScore,
    /// Inputs per forward (None: the executor's `forward_batch`); cut to `MAX_BATCH_BYTES`.
    pub batch: Option<usize>,
}

impl Default for CurveOptions {
    fn default() -> Self {
        CurveOptions { steps: 100, baseline: Baseline::Blur(5.0), cell: 1, score: CurveScore::Probability, batch: None }
    }
}

/// One curve: `scores[k]` after `fractions[k]` of the cells were removed (deletion) or inserted.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Curve {
    pub fractions: Vec<f32>,
    pub scores: Vec<f32>,
    /// Trapezoid rule over the fractions (0 to 1).
    pub auc: f32,
}

/// The confidence of the input and of the region the map keeps (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ConfidenceChange {
    /// Y: the score of the input.
    pub original: f32,
    /// O: the score of the input multiplied by the [0, 1] map.
    pub kept: f32,
    /// max(0, Y - O) / Y (0 when Y is 0).
    pub drop: f32,
    /// Y < O.
    pub increase: bool,
}

impl ConfidenceChange {
    pub fn new(original: f32, kept: f32) -> ConfidenceChange {
        let drop = if original > 0.0 { (original - kept).max(0.0) / original } else { 0.0 };
        ConfidenceChange { original, kept, drop, increase: original < kept }
    }
}

/// Average Drop and Increase in Confidence over a set of images, both in percent.
pub fn average_drop_increase(changes: &[ConfidenceChange]) -> (f32, f32) {
    if changes.is_empty() {
        return (0.0, 0.0);
    }
    let n = changes.len() as f32;
    (100.0 * changes.iter().map(|c| c.drop).sum::<f32>() / n, 100.0 * changes.iter().filter(|c| c.increase).count() as f32 / n)
}

/// All of one map's faithfulness numbers.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Faithfulness {
    pub deletion: Curve,
    pub insertion: Curve,
    pub confidence: ConfidenceChange,
}

/// Area under (x, y) by the trapezoid rule.
pub fn trapezoid(xs: &[f32], ys: &[f32]) -> f32 {
    xs.windows(2).zip(ys.windows(2)).map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0).sum()
}

/// The score of each row of `logits` (n x classes) for the target weights.
fn scores(logits: &[f32], target: &[f32], score: CurveScore) -> Result<Vec<f32>> {
    let k = target.len();
    if k == 0 || !logits.len().is_multiple_of(k) {
        return fail!(Internal, "{} logits do not split into rows of {k} classes", logits.len());
    }
    Ok(logits
        .chunks_exact(k)
        .map(|row| {
            let values = match score {
                CurveScore::Probability => softmax(row),
                CurveScore::Logit => row.to_vec(),
            };
            values.iter().zip(target).map(|(v, w)| v * w).sum()
        })
        .collect())
}

/// Checks the input tensor and the map against each other.
fn check(input: &FeatureMap, map: &Map) -> Result<usize> {
    let n = input.height.checked_mul(input.width).filter(|&n| n > 0).ok_or_else(|| Error::Input(format!("a {}x{} input has no pixels", input.width, input.height)))?;
    if input.channels != 3 || n.checked_mul(3) != Some(input.data.len()) {
        return fail!(Input, "expected a 3 x {} x {} input, got {} channels and {} values", input.height, input.width, input.channels, input.data.len());
    }
    if (map.width, map.height) != (input.width, input.height) || map.data.len() != n {
        return fail!(Input, "the map is {}x{} but the input is {}x{}; bring the map to the input grid first", map.width, map.height, input.width, input.height);
    }
    if map.data.iter().any(|v| !v.is_finite()) {
        return fail!(Input, "the map holds a non-finite value");
    }
    Ok(n)
}

/// Inputs per forward: the asked batch (or `default`), cut so a batch stays within MAX_BATCH_BYTES.
fn batch_size(asked: Option<usize>, default: usize, pixels: usize) -> usize {
    let per_input = pixels.saturating_mul(3 * 4).max(1);
    asked.unwrap_or(default).clamp(1, (MAX_BATCH_BYTES / per_input).max(1))
}

/// The baseline tensor for an input.
pub fn baseline(input: &FeatureMap, baseline: Baseline) -> Result<Vec<f32>> {
    let (w, h) = (input.width, input.height);
    let n = w * h;
    match baseline {
        Baseline::Constant(v) if v.is_finite() => Ok(vec![v; input.data.len()]),
        Baseline::Constant(v) => fail!(Option, "a constant baseline must be finite, got {v}"),
        Baseline::Mean => Ok(input.data.chunks_exact(n).flat_map(|p| std::iter::repeat_n(p.iter().sum::<f32>() / n as f32, n)).collect()),
        Baseline::Blur(sigma) => {
            if !(sigma > 0.0 && sigma <= 256.0) {
                return fail!(Option, "the blur sigma must be in (0, 256] pixels, got {sigma}");
            }
            let radius = (2.0 * sigma).ceil() as usize;
            let kernel: Vec<f32> = (0..=2 * radius).map(|i| (-((i as f32 - radius as f32).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
            let total: f32 = kernel.iter().sum();
            let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
            let tap = |i: usize, k: usize, len: usize| (i + k).saturating_sub(radius).min(len - 1);
            let mut out = Vec::with_capacity(input.data.len());
            let mut rows = vec![0f32; n];
            for plane in input.data.chunks_exact(n) {
                for y in 0..h {
                    for x in 0..w {
                        rows[y * w + x] = kernel.iter().enumerate().map(|(k, kv)| kv * plane[y * w + tap(x, k, w)]).sum();
                    }
                }
                for y in 0..h {
                    for x in 0..w {
                        out.push(kernel.iter().enumerate().map(|(k, kv)| kv * rows[tap(y, k, h) * w + x]).sum());
                    }
                }
            }
            Ok(out)
        }
    }
}

/// The cells of the input in the map's order, most important first (ties: raster order); each
/// cell is the list of its pixel indices. A cell's importance is the map's mean over it.
fn ordered_cells(map: &Map, cell: usize) -> Vec<Vec<usize>> {
    let (w, h) = (map.width, map.height);
    let (cw, ch) = (w.div_ceil(cell), h.div_ceil(cell));
    let mut cells: Vec<(f32, Vec<usize>)> = Vec::with_capacity(cw * ch);
    for cy in 0..ch {
        for cx in 0..cw {
            let pixels: Vec<usize> = (cy * cell..((cy + 1) * cell).min(h)).flat_map(|y| (cx * cell..((cx + 1) * cell).min(w)).map(move |x| y * w + x)).collect();
            let mean = pixels.iter().map(|&p| map.data[p]).sum::<f32>() / pixels.len() as f32;
            cells.push((mean, pixels));
        }
    }
    cells.sort_by(|a, b| b.0.total_cmp(&a.0)); // stable: ties keep raster order
    cells.into_iter().map(|c| c.1).collect()
}

/// One curve: from `start`, cells are set from `end` in order; the score after each step.
#[allow(clippy::too_many_arguments)]
async fn curve(start: &[f32], end: &[f32], cells: &[Vec<usize>], pixels: usize, target: &[f32], forwards: &mut Forwards<'_>, opts: &CurveOptions, batch: usize) -> Result<Curve> {
    let steps = opts.steps;
    let total = cells.len();
    let counts: Vec<usize> = (0..=steps).map(|k| ((k * total) as f64 / steps as f64).round() as usize).collect();
    let mut current = start.to_vec();
    let mut done = 0;
    let mut scores_out = Vec::with_capacity(steps + 1);
    let _buffer = crate::budget::reserve_floats(batch.saturating_mul(current.len()), || format!("a batch of {batch} modified inputs"))?;
    let mut buffer: Vec<f32> = Vec::with_capacity(batch * current.len());
    for chunk in counts.chunks(batch) {
        buffer.clear();
        for &count in chunk {
            for cell in &cells[done..count] {
                for &p in cell {
                    for c in 0..3 {
                        current[c * pixels + p] = end[c * pixels + p];
                    }
                }
            }
            done = count;
            buffer.extend_from_slice(&current);
        }
        let logits = forwards(&buffer, chunk.len())?;
        scores_out.extend(scores(&logits, target, opts.score)?);
        crate::cancel::checkpoint().await?;
    }
    let fractions: Vec<f32> = counts.iter().map(|&c| c as f32 / total as f32).collect();
    let auc = trapezoid(&fractions, &scores_out);
    Ok(Curve { fractions, scores: scores_out, auc })
}

/// Checks the curve options before anything is allocated.
fn check_options(opts: &CurveOptions, input: &FeatureMap) -> Result<()> {
    if !(1..=MAX_STEPS).contains(&opts.steps) {
        return fail!(Option, "a curve takes 1 to {MAX_STEPS} steps (each is one forward), got {}", opts.steps);
    }
    if opts.cell == 0 || opts.cell > input.width.min(input.height) {
        return fail!(Option, "the cell side must be 1 to {} pixels (the input's shorter side), got {}", input.width.min(input.height), opts.cell);
    }
    Ok(())
}

/// Deletion and insertion curves of `map` (on the input's grid) for the `target` weights over the
/// logits; `forwards(inputs, n)` returns n x classes logits; `default_batch` is the executor's.
pub fn deletion_insertion(input: &FeatureMap, map: &Map, target: &[f32], forwards: &mut Forwards, opts: &CurveOptions, default_batch: usize) -> Result<(Curve, Curve)> {
    crate::cancel::run_sync(deletion_insertion_async(input, map, target, forwards, opts, default_batch))
}

/// `deletion_insertion`, pausing between batches (`crate::cancel::checkpoint`).
pub async fn deletion_insertion_async(input: &FeatureMap, map: &Map, target: &[f32], forwards: &mut Forwards<'_>, opts: &CurveOptions, default_batch: usize) -> Result<(Curve, Curve)> {
    let pixels = check(input, map)?;
    check_options(opts, input)?;
    let batch = batch_size(opts.batch, default_batch, pixels);
    let base = baseline(input, opts.baseline)?;
    let cells = ordered_cells(map, opts.cell);
    let deletion = curve(&input.data, &base, &cells, pixels, target, forwards, opts, batch).await?;
    let insertion = curve(&base, &input.data, &cells, pixels, target, forwards, opts, batch).await?;
    Ok((deletion, insertion))
}

/// The confidence of the input and of the input multiplied by the map min-max normalized to [0, 1].
pub fn confidence_change(input: &FeatureMap, map: &Map, target: &[f32], forwards: &mut Forwards, score: CurveScore) -> Result<ConfidenceChange> {
    let pixels = check(input, map)?;
    let (lo, hi) = (map.min(), map.max());
    let range = hi - lo;
    let mut both = input.data.clone();
    both.reserve(input.data.len());
    for c in 0..3 {
        for p in 0..pixels {
            let m = if range > 0.0 { (map.data[p] - lo) / range } else { 0.0 };
            both.push(input.data[c * pixels + p] * m);
        }
    }
    let logits = forwards(&both, 2)?;
    let s = scores(&logits, target, score)?;
    Ok(ConfidenceChange::new(s[0], s[1]))
}

/// An explanation's raw map brought (bilinearly) to the network input's grid.
pub fn map_on_input(e: &Explanation) -> Result<Map> {
    let (w, h) = (e.geometry.input_w, e.geometry.input_h);
    if (e.raw.width, e.raw.height) == (w, h) {
        return Ok(e.raw.clone());
    }
    Ok(Map::new(w, h, upsample_bilinear(&e.raw.data, e.raw.width, e.raw.height, w, h).map_err(Error::Internal)?))
}

/// The network input an explanation of `image` made with `explain` ran on, its map on that grid,
/// and its target's weights over the logits (the top-1 class it resolved to, or the weighted target).
pub fn prepared(explainer: &Explainer, image: &RgbImage, e: &Explanation, explain: &ExplainOptions) -> Result<(FeatureMap, Map, Vec<f32>)> {
    let (input, _) = explainer.prepare_input(image, explain)?;
    let map = map_on_input(e)?;
    let classes = explainer.model().graph.num_classes;
    let target = match &explain.target {
        Target::Top1 => Target::Class(e.class),
        t => t.clone(),
    };
    let (_, weights) = explainer.resolve_target(&target, &vec![0.0; classes])?;
    Ok((input, map, weights))
}

/// ROAD (`eval::road`) of an explanation of `image` made with `explain`, through the explainer's executor.
pub fn road_of(explainer: &Explainer, image: &RgbImage, e: &Explanation, explain: &ExplainOptions, opts: &super::road::RoadOptions) -> Result<super::road::Road> {
    crate::budget::within(&explainer.budget(), || road_within_budget(explainer, image, e, explain, opts))
}

fn road_within_budget(explainer: &Explainer, image: &RgbImage, e: &Explanation, explain: &ExplainOptions, opts: &super::road::RoadOptions) -> Result<super::road::Road> {
    let (input, map, weights) = prepared(explainer, image, e, explain)?;
    let (h, w) = (input.height, input.width);
    super::road::road(&input, &map, &weights, &mut |x: &[f32], n: usize| explainer.logits_batch(x, n, h, w), opts)
}

/// Deletion, insertion and confidence change of an explanation of `image` made with `explain`
/// (its resize and target), through the explainer's executor.
/// Runs within one budget of the explainer's (`Explainer::budget`).
pub fn faithfulness(explainer: &Explainer, image: &RgbImage, e: &Explanation, explain: &ExplainOptions, opts: &CurveOptions) -> Result<Faithfulness> {
    crate::cancel::run_sync(faithfulness_async(explainer, image, e, explain, opts))
}

/// `faithfulness`, pausing between the curves' batches (`crate::cancel::checkpoint`).
pub async fn faithfulness_async(explainer: &Explainer, image: &RgbImage, e: &Explanation, explain: &ExplainOptions, opts: &CurveOptions) -> Result<Faithfulness> {
    crate::budget::within_async(&explainer.budget(), faithfulness_within_budget(explainer, image, e, explain, opts)).await
}

async fn faithfulness_within_budget(explainer: &Explainer, image: &RgbImage, e: &Explanation, explain: &ExplainOptions, opts: &CurveOptions) -> Result<Faithfulness> {
    let (input, map, weights) = prepared(explainer, image, e, explain)?;
    let (h, w) = (input.height, input.width);
    let mut run = |x: &[f32], n: usize| explainer.logits_batch(x, n, h, w);
    let (deletion, insertion) = deletion_insertion_async(&input, &map, &weights, &mut run, opts, explainer.forward_batch()).await?;
    let confidence = confidence_change(&input, &map, &weights, &mut run, opts.score)?;
    Ok(Faithfulness { deletion, insertion, confidence })
}

/// An explanation with its faithfulness and, when asked, its ROAD.
pub struct Measured {
    pub explanation: Explanation,
    pub faithfulness: Faithfulness,
    pub road: Option<super::road::Road>,
}

/// Explains `image` as `explain` says, then measures the map: deletion, insertion and the
/// confidence change (pausing between batches), and ROAD when `road` is given.
pub async fn measure_async(
    explainer: &mut Explainer,
    image: &RgbImage,
    explain: &ExplainOptions,
    curves: &CurveOptions,
    road: Option<&super::road::RoadOptions>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Measured> {
    let explanation = explainer.explain_with_progress_async(image, explain, progress).await?;
    // The curves' inputs follow the map: a shard that made up some of the method's outputs
    // (`crate::tape`) must not record them.
    explainer.tape_barrier();
    let faithfulness = faithfulness_async(explainer, image, &explanation, explain, curves).await?;
    let road = road.map(|opts| road_of(explainer, image, &explanation, explain, opts)).transpose()?;
    Ok(Measured { explanation, faithfulness, road })
}
