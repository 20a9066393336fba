//! Score-CAM (Wang et al.): each channel, upsampled to the input and min-max normalized, masks the
//! input; the target score of each masked input, softmaxed over channels, weighs the channels.
//! Batched forwards; an option keeps only the channels of highest variance (a faster variant).

use super::{Grid, Method, MethodDef, Needs, Sign};
use crate::error::Result;
use crate::feature_map::{FeatureMap, Map};
use crate::methods::cam::weighted_sum;

impl Method {
    pub const SCORE_CAM: Method = Method(&MethodDef {
        name: "scorecam",
        aliases: &[],
        label: "Score-CAM",
        help: "Masks the input with each channel (the most varied ones, if limited) and scores it: gradient-free, slower.",
        needs: Needs { batched_forwards: true, ..Needs::NOTHING },
        grid: Grid::Layer,
        sign: Sign::Relu,
        compute: |e| crate::cancel::run_sync(score_cam_method(e)),
    });
}

/// Masked inputs per forward when nobody chose (the executors choose: `Executor::forward_batch`).
const DEFAULT_BATCH: usize = 4;
/// The most bytes one batch of masked inputs may hold (f32, n x 3 x H x W): 64 MiB (111 inputs of
/// 224 x 224, 5 of 1024 x 1024). A batch asked for beyond it (or beyond the channel count) is cut
/// to fit, never below one input, so the masked batch is sized from this budget before it is
/// allocated, whatever `batch` says.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

#[derive(Clone, Copy, Debug, Default)]
pub struct ScoreCamOptions {
    /// Masked inputs per forward pass (None: the executor's `forward_batch`).
    pub batch: Option<usize>,
    /// Keep only this many channels, those with the highest activation variance (None: all).
    pub max_channels: Option<usize>,
}

/// Bilinear upsampling with align_corners=True, as Score-CAM's reference implementation does.
/// Separable: each source row is resampled along x once, and each output row blends two of those,
/// the same products and sums, in the same order, as interpolating every pixel from its 4 neighbours.
fn upsample_align_corners(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    // (first source index, second, weight of the second) for each output index.
    let taps = |s: usize, d: usize| -> Vec<(usize, usize, f32)> {
        let step = if d > 1 { (s as f32 - 1.0) / (d as f32 - 1.0) } else { 0.0 };
        (0..d)
            .map(|i| {
                let f = i as f32 * step;
                let i0 = f.floor() as usize;
                (i0, (i0 + 1).min(s - 1), f - f.floor())
            })
            .collect()
    };
    let (xs, ys) = (taps(sw, dw), taps(sh, dh));
    let rows: Vec<f32> = src.chunks_exact(sw).flat_map(|row| xs.iter().map(move |&(x0, x1, tx)| row[x0] * (1.0 - tx) + row[x1] * tx)).collect();
    let mut out = Vec::with_capacity(dw * dh);
    for &(y0, y1, ty) in &ys {
        let (top, bottom) = (&rows[y0 * dw..(y0 + 1) * dw], &rows[y1 * dw..(y1 + 1) * dw]);
        out.extend(top.iter().zip(bottom).map(|(t, b)| t * (1.0 - ty) + b * ty));
    }
    out
}

fn variance(v: &[f32]) -> f32 {
    let mean = v.iter().sum::<f32>() / v.len() as f32;
    v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / v.len() as f32
}

/// Runs `n` inputs of 3 x H x W and returns their n x classes logits.
pub type LogitsBatch<'a> = super::Forwards<'a>;

pub(super) fn score_cam_method<'r, 'e>(e: &'r mut super::Evidence<'e>) -> super::ComputeFuture<'r> {
    Box::pin(async move { Ok(weighted_sum(e.activations, &score_cam_weights_async(e.activations, e.input, e.target, e.score_cam, e.forwards, e.progress).await?).into()) })
}

/// `logits_batch(inputs, n)` runs n masked inputs (n x 3 x H x W) and returns n x classes logits;
/// `progress(done, total)` is called after each batch.
pub fn score_cam(a: &FeatureMap, input: &FeatureMap, target: &[f32], opts: ScoreCamOptions, logits_batch: &mut LogitsBatch, progress: &mut dyn FnMut(usize, usize)) -> Result<Map> {
    Ok(weighted_sum(a, &score_cam_weights(a, input, target, opts, logits_batch, progress)?))
}

/// Score-CAM's per-channel weights (0 for the channels not scored).
pub fn score_cam_weights(a: &FeatureMap, input: &FeatureMap, target: &[f32], opts: ScoreCamOptions, logits_batch: &mut LogitsBatch, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<f32>> {
    crate::cancel::run_sync(score_cam_weights_async(a, input, target, opts, logits_batch, progress))
}

/// `score_cam_weights`, pausing between batches (`crate::cancel::checkpoint`).
pub async fn score_cam_weights_async(
    a: &FeatureMap,
    input: &FeatureMap,
    target: &[f32],
    opts: ScoreCamOptions,
    logits_batch: &mut LogitsBatch<'_>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f32>> {
    let mut steps = ScoreCamSteps::new(a, input, opts);
    let _batch = crate::budget::reserve_floats(steps.batch.saturating_mul(input.data.len()), || format!("Score-CAM's batch of {} masked inputs", steps.batch))?;
    while let Some((masked, n)) = steps.next_batch() {
        let logits = logits_batch(&masked, n)?;
        steps.add_logits(&logits, target)?;
        let (done, total) = steps.progress();
        progress(done, total);
        crate::cancel::checkpoint().await?;
    }
    Ok(steps.weights())
}

/// Score-CAM as steps, so that the batched forwards can be run synchronously (`score_cam`) or awaited
/// (the WebGPU session) by the same code: `next_batch` -> forwards -> `add_logits`, until `finish`.
///
/// A forward runs once per distinct mask (`plan_jobs`). A constant channel carries no location: its
/// mask is all zero, so every constant channel scores the same blank input. After ReLU most channels
/// of a late layer are constant (on EfficientNet-Lite0's last 1280, 30-65% of them for the bundled
/// photos), and of the others 8-12% repeat another's normalized plane (most are active in a single
/// cell), so this skips that share of the forwards and changes no score.
pub struct ScoreCamSteps<'a> {
    a: &'a FeatureMap,
    input: &'a FeatureMap,
    /// The channels to score, in order.
    channels: Vec<usize>,
    /// The masked inputs to run, in order: `Some(k)` masks with channel k, `None` is the blank input.
    jobs: Vec<Option<usize>>,
    /// For each of `channels`, the job that scores it.
    job_of: Vec<usize>,
    batch: usize,
    /// The scores of the jobs run so far.
    scores: Vec<f32>,
}

impl<'a> ScoreCamSteps<'a> {
    pub fn new(a: &'a FeatureMap, input: &'a FeatureMap, opts: ScoreCamOptions) -> ScoreCamSteps<'a> {
        let mut channels: Vec<usize> = (0..a.channels).collect();
        if let Some(keep) = opts.max_channels {
            let var: Vec<f32> = (0..a.channels).map(|k| variance(a.plane(k))).collect();
            channels.sort_by(|&x, &y| var[y].total_cmp(&var[x]));
            channels.truncate(keep.max(1));
        }
        let (jobs, job_of) = plan_jobs(a, &channels);
        let per_input = input.data.len().saturating_mul(4).max(1);
        let batch = opts.batch.unwrap_or(DEFAULT_BATCH).min(jobs.len()).min(MAX_BATCH_BYTES / per_input).max(1);
        ScoreCamSteps { a, input, channels, jobs, job_of, batch, scores: Vec::new() }
    }

    /// The next batch of masked inputs (n x 3 x H x W) and n; `None` once every channel is scored.
    pub fn next_batch(&self) -> Option<(Vec<f32>, usize)> {
        let start = self.scores.len();
        let chunk = self.jobs.get(start..(start + self.batch).min(self.jobs.len())).filter(|c| !c.is_empty())?;
        let input = self.input;
        let mut masked = Vec::with_capacity(chunk.len() * input.data.len());
        for job in chunk {
            match job.and_then(|k| self.mask(k)) {
                Some(m) => (0..3).for_each(|c| masked.extend(input.plane(c).iter().zip(&m).map(|(x, w)| x * w))),
                None => masked.resize(masked.len() + input.data.len(), 0.0),
            }
        }
        Some((masked, chunk.len()))
    }

    /// Channel k upsampled to the input and min-max normalized; `None` where that leaves no location
    /// (a constant plane). Activations are finite here (the explainer refuses a pass with others).
    fn mask(&self, k: usize) -> Option<Vec<f32>> {
        let (input, a) = (self.input, self.a);
        stretched(upsample_align_corners(&normalized_plane(a.plane(k))?, a.width, a.height, input.width, input.height))
    }

    /// Scores the batch `next_batch` returned, from its n x classes logits.
    pub fn add_logits(&mut self, logits: &[f32], target: &[f32]) -> Result<()> {
        let classes = target.len();
        let n = self.batch.min(self.jobs.len() - self.scores.len());
        if classes == 0 || logits.len() != n * classes {
            return Err(crate::Error::Internal(format!("score-cam: {} logits for a batch of {n} x {classes} classes", logits.len())));
        }
        for row in logits.chunks_exact(classes) {
            self.scores.push(row.iter().zip(target).map(|(l, t)| l * t).sum::<f32>());
        }
        Ok(())
    }

    /// (channels scored, channels to score).
    pub fn progress(&self) -> (usize, usize) {
        (self.job_of.iter().filter(|&&j| j < self.scores.len()).count(), self.channels.len())
    }

    /// The map: channels weighted by the softmax of their scores.
    pub fn finish(self) -> Map {
        weighted_sum(self.a, &self.weights())
    }

    /// The channels' weights: the softmax of their scores (0 for the channels not scored).
    pub fn weights(&self) -> Vec<f32> {
        // Softmax over channels (a baseline score subtracted from all would cancel here).
        let scored: Vec<(usize, f32)> = self.channels.iter().zip(&self.job_of).filter_map(|(&k, &j)| Some((k, *self.scores.get(j)?))).collect();
        let probabilities = crate::imaging::normalize::softmax(&scored.iter().map(|s| s.1).collect::<Vec<_>>());
        let mut weights = vec![0.0f32; self.a.channels];
        for (&(k, _), p) in scored.iter().zip(probabilities) {
            weights[k] = p;
        }
        weights
    }
}

/// A plane min-max normalized on its own grid; `None` for a constant plane, which has no location.
/// Normalizing before upsampling gives the mask that normalizing after does (bilinear weights sum to
/// 1, so upsampling commutes with the affine stretch; the mask is stretched again after it), and
/// makes the masks of proportional channels (e.g. two channels active in one cell) bitwise equal.
fn normalized_plane(plane: &[f32]) -> Option<Vec<f32>> {
    stretched(plane.to_vec())
}

/// `v` min-max stretched to [0, 1] in place (in f32: masks are many and large, and need no more);
/// `None` when it is constant.
fn stretched(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let (lo, hi) = v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
    (hi > lo).then(|| {
        v.iter_mut().for_each(|x| *x = (*x - lo) / (hi - lo));
        v
    })
}

/// The forwards that score `channels`: one per distinct mask, in the order channels first need it.
/// Channels whose normalized planes are bitwise equal mask the input identically, so they share one
/// forward and its score; every constant channel shares the blank input's (`None`).
fn plan_jobs(a: &FeatureMap, channels: &[usize]) -> (Vec<Option<usize>>, Vec<usize>) {
    let mut job_of_mask: std::collections::HashMap<Option<Vec<u32>>, usize> = std::collections::HashMap::new();
    let mut jobs = Vec::new();
    let job_of = channels
        .iter()
        .map(|&k| {
            let key = normalized_plane(a.plane(k)).map(|n| n.iter().map(|v| v.to_bits()).collect::<Vec<u32>>());
            let job = key.is_some().then_some(k);
            *job_of_mask.entry(key).or_insert_with(|| {
                jobs.push(job);
                jobs.len() - 1
            })
        })
        .collect();
    (jobs, job_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_is_cut_to_the_channels_and_the_byte_budget() {
        // 200 channels, each a distinct mask: (0, k, 200).
        let a = FeatureMap::new(200, 1, 3, (0..200).flat_map(|k| [0.0, k as f32, 200.0]).collect());
        let small = FeatureMap::new(3, 4, 4, vec![1.0; 48]);
        let opts = ScoreCamOptions { batch: Some(usize::MAX), max_channels: None };
        assert_eq!(ScoreCamSteps::new(&a, &small, opts).next_batch().map(|b| b.1), Some(200));
        // 1024 x 1024 inputs are 12 MiB each: 5 fit in 64 MiB.
        let big = FeatureMap::new(3, 1024, 1024, vec![1.0; 3 << 20]);
        let steps = ScoreCamSteps::new(&a, &big, opts);
        let (masked, n) = steps.next_batch().unwrap();
        assert_eq!((n, masked.len()), (5, 5 * (3 << 20)));
    }

    #[test]
    fn constant_and_repeated_channels_share_forwards_and_score_them() {
        // Channels 1 (zero) and 2 (saturated at 6) are constant; 0 and 3 vary; 4 is 3 x channel 0 + 1,
        // the same mask as channel 0.
        let a = FeatureMap::new(5, 2, 2, vec![0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 6.0, 6.0, 6.0, 6.0, 4.0, 0.0, 0.0, 0.0, 1.0, 4.0, 7.0, 10.0]);
        let input = FeatureMap::new(3, 2, 2, (1..=12).map(|v| v as f32).collect());
        let mut inputs_run = 0;
        // One class whose logit is the sum of the input plus 1, so the blank input scores 1.
        let mut logits = |x: &[f32], n: usize| {
            inputs_run += n;
            Ok(x.chunks(12).map(|img| img.iter().sum::<f32>() + 1.0).collect())
        };
        let mut reports = Vec::new();
        let opts = ScoreCamOptions { batch: Some(2), max_channels: None };
        let w = score_cam_weights(&a, &input, &[1.0], opts, &mut logits, &mut |done, total| reports.push((done, total))).unwrap();
        assert_eq!(inputs_run, 3, "channel 0 (and 4), the blank input, channel 3");
        assert_eq!(reports, vec![(4, 5), (5, 5)]);
        // By hand: channel 0's mask is (0, 1/3, 2/3, 1), channel 3's (1, 0, 0, 0); each masks all 3 planes.
        let plane_sums = |m: [f32; 4]| (0..3).map(|c| (0..4).map(|i| (1 + 4 * c + i) as f32 * m[i]).sum::<f32>()).sum::<f32>();
        let ramp = plane_sums([0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]) + 1.0;
        let scores = [ramp, 1.0, 1.0, plane_sums([1.0, 0.0, 0.0, 0.0]) + 1.0, ramp];
        let expected = crate::imaging::normalize::softmax(&scores);
        for (k, (w, e)) in w.iter().zip(&expected).enumerate() {
            assert!((w - e).abs() < 1e-6, "channel {k}: {w} vs {e} by hand");
        }
    }

    #[test]
    fn separable_upsampling_is_bitwise_the_four_neighbour_formula() {
        // Per pixel, align_corners=True: blend the two rows' blends of the two columns.
        let direct = |src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize| -> Vec<f32> {
            let step = |s: usize, d: usize| if d > 1 { (s as f32 - 1.0) / (d as f32 - 1.0) } else { 0.0 };
            let mut out = Vec::new();
            for y in 0..dh {
                let sy = y as f32 * step(sh, dh);
                let (y0, ty) = (sy.floor() as usize, sy - sy.floor());
                let y1 = (y0 + 1).min(sh - 1);
                for x in 0..dw {
                    let sx = x as f32 * step(sw, dw);
                    let (x0, tx) = (sx.floor() as usize, sx - sx.floor());
                    let x1 = (x0 + 1).min(sw - 1);
                    let top = src[y0 * sw + x0] * (1.0 - tx) + src[y0 * sw + x1] * tx;
                    let bottom = src[y1 * sw + x0] * (1.0 - tx) + src[y1 * sw + x1] * tx;
                    out.push(top * (1.0 - ty) + bottom * ty);
                }
            }
            out
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (sw, sh, dw, dh) in [(7, 7, 224, 224), (7, 5, 23, 17), (3, 2, 1, 1), (1, 4, 9, 3), (5, 5, 5, 5)] {
            let src: Vec<f32> = (0..sw * sh).map(|i| ((i * 37 % 11) as f32).sqrt()).collect();
            assert_eq!(bits(&upsample_align_corners(&src, sw, sh, dw, dh)), bits(&direct(&src, sw, sh, dw, dh)), "{sw}x{sh} -> {dw}x{dh}");
        }
    }
}
