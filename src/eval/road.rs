//! ROAD, remove and debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for
//! Attribution Methods", ICML 2022): the p% most relevant pixels (MoRF) or least relevant (LeRF)
//! are removed and *imputed* from their neighbours, so the removal's shape leaks no class
//! information, and the network scores the result. Noisy linear imputation as the paper (and
//! pytorch-grad-cam's `NoisyLinearImputer`) define it: each removed pixel equals the weighted mean
//! of its 8 neighbours (1/6 for the 4 direct ones, 1/12 for the diagonals; neighbours outside the
//! image left out and the weights renormalized), the kept pixels fixed; then Gaussian noise
//! (sigma `noise`, in units of the normalized input) is added to the imputed pixels. The linear
//! system is solved by Gauss-Seidel sweeps started from the solution on a grid twice as coarse
//! (recursively), which converges in a few dozen sweeps even for holes of 90% of the image.
//!
//! A faithful map makes the MoRF scores fall fast and the LeRF scores stay high; `combined` is
//! pytorch-grad-cam's ROADCombined: the mean over the percentages of (LeRF - MoRF) / 2.

use super::faithfulness::{CurveScore, MAX_BATCH_BYTES};
use crate::error::{Error, Result};
use crate::explainer::softmax;
use crate::fail;
use crate::feature_map::{FeatureMap, Map};
use crate::methods::Forwards;
use crate::synthetic::Rng;

#[derive(Clone, Debug, PartialEq)]
pub struct RoadOptions {
    /// Percentages of pixels removed, each in (0, 100); the paper's 10, 20, ..., 90 by default.
    pub percentages: Vec<f32>,
    /// Sigma of the noise added to imputed pixels (normalized input units); pytorch-grad-cam's 0.01.
    pub noise: f32,
    pub seed: u64,
    /// Gauss-Seidel sweeps at each level of the grid pyramid.
    pub sweeps: usize,
    pub score: CurveScore,
}

impl Default for RoadOptions {
    fn default() -> Self {
        RoadOptions { percentages: (1..=9).map(|k| 10.0 * k as f32).collect(), noise: 0.01, seed: 1, sweeps: 40, score: CurveScore::Probability }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Road {
    pub percentages: Vec<f32>,
    /// The score of the unmodified input.
    pub original: f32,
    /// Scores with the most relevant p% removed and imputed.
    pub morf: Vec<f32>,
    /// Scores with the least relevant p% removed and imputed.
    pub lerf: Vec<f32>,
    /// Mean over the percentages of (LeRF - MoRF) / 2 (higher is better).
    pub combined: f32,
}

/// The most percentages one ROAD evaluation takes (each is two imputations and two forwards).
pub const MAX_PERCENTAGES: usize = 99;

const DIRECT: f32 = 1.0 / 6.0;
const DIAGONAL: f32 = 1.0 / 12.0;

/// Gauss-Seidel sweeps over the unknown pixels of one plane.
fn sweep(plane: &mut [f32], known: &[bool], w: usize, h: usize, sweeps: usize) {
    for _ in 0..sweeps {
        for y in 0..h {
            for x in 0..w {
                let p = y * w + x;
                if known[p] {
                    continue;
                }
                let (mut sum, mut weight) = (0.0f32, 0.0f32);
                for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        if (nx, ny) == (x, y) {
                            continue;
                        }
                        let wt = if nx == x || ny == y { DIRECT } else { DIAGONAL };
                        sum += wt * plane[ny * w + nx];
                        weight += wt;
                    }
                }
                if weight > 0.0 {
                    plane[p] = sum / weight;
                }
            }
        }
    }
}

/// Solves one plane's imputation in place: coarse grid first (its cells known where any of their
/// pixels is, at their known pixels' mean), then sweeps from that start.
fn solve(plane: &mut [f32], known: &[bool], w: usize, h: usize, sweeps: usize) {
    if w * h > 64 && w >= 4 && h >= 4 {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut coarse = vec![0f32; cw * ch];
        let mut coarse_known = vec![false; cw * ch];
        for cy in 0..ch {
            for cx in 0..cw {
                let (mut s, mut n) = (0.0f32, 0usize);
                for y in 2 * cy..(2 * cy + 2).min(h) {
                    for x in 2 * cx..(2 * cx + 2).min(w) {
                        if known[y * w + x] {
                            s += plane[y * w + x];
                            n += 1;
                        }
                    }
                }
                if n > 0 {
                    coarse[cy * cw + cx] = s / n as f32;
                    coarse_known[cy * cw + cx] = true;
                }
            }
        }
        solve(&mut coarse, &coarse_known, cw, ch, sweeps);
        for y in 0..h {
            for x in 0..w {
                if !known[y * w + x] {
                    plane[y * w + x] = coarse[(y / 2) * cw + x / 2];
                }
            }
        }
    } else {
        let (s, n) = plane.iter().zip(known).filter(|(_, &k)| k).fold((0.0f32, 0usize), |(s, n), (v, _)| (s + v, n + 1));
        let mean = if n > 0 { s / n as f32 } else { 0.0 };
        plane.iter_mut().zip(known).filter(|(_, &k)| !k).for_each(|(v, _)| *v = mean);
    }
    sweep(plane, known, w, h, sweeps);
}

/// The input with the `removed` pixels imputed (noisy linear imputation, see the module comment).
pub fn impute(input: &FeatureMap, removed: &[bool], noise: f32, rng: &mut Rng, sweeps: usize) -> Result<Vec<f32>> {
    let (w, h) = (input.width, input.height);
    let n = w * h;
    if removed.len() != n || input.data.len() != 3 * n || n == 0 {
        return fail!(Input, "the removal mask has {} pixels for a 3 x {h} x {w} input of {} values", removed.len(), input.data.len());
    }
    let known: Vec<bool> = removed.iter().map(|r| !r).collect();
    let mut out = input.data.clone();
    for plane in out.chunks_exact_mut(n) {
        solve(plane, &known, w, h, sweeps);
        if noise > 0.0 {
            for (v, _) in plane.iter_mut().zip(removed).filter(|(_, &r)| r) {
                // Box-Muller from two uniforms in (0, 1].
                let u1 = ((rng.uniform() + 1.0) / 2.0).max(1e-7);
                let u2 = (rng.uniform() + 1.0) / 2.0;
                *v += noise * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
            }
        }
    }
    Ok(out)
}

fn score_of(logits: &[f32], target: &[f32], score: CurveScore) -> f32 {
    let values = match score {
        CurveScore::Probability => softmax(logits),
        CurveScore::Logit => logits.to_vec(),
    };
    values.iter().zip(target).map(|(v, w)| v * w).sum()
}

/// ROAD MoRF and LeRF scores of `map` (on the input's grid) for the `target` weights.
pub fn road(input: &FeatureMap, map: &Map, target: &[f32], forwards: &mut Forwards, opts: &RoadOptions) -> Result<Road> {
    let (w, h) = (input.width, input.height);
    let n = w.checked_mul(h).filter(|&n| n > 0 && input.data.len() == 3 * n).ok_or_else(|| Error::Input(format!("expected a 3 x {h} x {w} input")))?;
    if (map.width, map.height) != (w, h) || map.data.len() != n || map.data.iter().any(|v| !v.is_finite()) {
        return fail!(Input, "the map must be finite and on the input's {w}x{h} grid, got {}x{}", map.width, map.height);
    }
    if opts.percentages.is_empty() || opts.percentages.len() > MAX_PERCENTAGES || opts.percentages.iter().any(|p| !(*p > 0.0 && *p < 100.0)) {
        return fail!(Option, "ROAD takes 1 to {MAX_PERCENTAGES} percentages, each strictly between 0 and 100, got {:?}", opts.percentages);
    }
    if !(opts.noise >= 0.0 && opts.noise.is_finite() && (1..=1000).contains(&opts.sweeps)) {
        return fail!(Option, "ROAD's noise must be finite and >= 0 and its sweeps 1 to 1000, got {} and {}", opts.noise, opts.sweeps);
    }
    // Two inputs per forward (MoRF and LeRF of one percentage), plus the original once.
    if n.saturating_mul(3 * 4 * 2) > MAX_BATCH_BYTES {
        return fail!(Input, "a {w}x{h} input is too large for ROAD's batches of two ({} MiB budget)", MAX_BATCH_BYTES >> 20);
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| map.data[b].total_cmp(&map.data[a]));
    let mut rng = Rng::new(opts.seed);
    let k = target.len();
    let original = score_of(&forwards(&input.data, 1)?, target, opts.score);
    let (mut morf, mut lerf) = (Vec::new(), Vec::new());
    for &p in &opts.percentages {
        let count = ((p as f64 / 100.0) * n as f64).round() as usize;
        let mut most = vec![false; n];
        order[..count].iter().for_each(|&i| most[i] = true);
        let mut least = vec![false; n];
        order[n - count..].iter().for_each(|&i| least[i] = true);
        let mut both = impute(input, &most, opts.noise, &mut rng, opts.sweeps)?;
        both.extend(impute(input, &least, opts.noise, &mut rng, opts.sweeps)?);
        let logits = forwards(&both, 2)?;
        if logits.len() != 2 * k {
            return fail!(Internal, "{} logits for two inputs of {k} classes", logits.len());
        }
        morf.push(score_of(&logits[..k], target, opts.score));
        lerf.push(score_of(&logits[k..], target, opts.score));
    }
    let combined = morf.iter().zip(&lerf).map(|(m, l)| (l - m) / 2.0).sum::<f32>() / morf.len() as f32;
    Ok(Road { percentages: opts.percentages.clone(), original, morf, lerf, combined })
}
