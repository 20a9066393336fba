//! Gradient attributions as Captum defines them: Saliency (Simonyan et al.), Input x Gradient,
//! Integrated Gradients (Sundararajan et al.), SmoothGrad (Smilkov et al.) and Occlusion (Zeiler &
//! Fergus). All live on the input grid. They read plain input gradients (ordinary ReLU backward) at
//! inputs of their choosing through `Evidence::input_gradients`, or target scores of perturbed inputs
//! through `Evidence::forwards`; the network input (and so every baseline) is the *normalized* tensor.

use super::guided::{magnitude, to_rgb};
use super::{Computed, Evidence, Grid, Method, MethodDef, Needs, Sign};
use crate::error::{Error, Result};
use crate::fail;
use crate::feature_map::{FeatureMap, Map};

impl Method {
    pub const SALIENCY: Method = Method(&MethodDef {
        name: "saliency",
        aliases: &["vanilla-gradient", "gradient"],
        label: "Saliency",
        help: "The plain input gradient's magnitude, largest over RGB (Simonyan et al.): fast, noisy.",
        needs: Needs { input_gradients: true, ..Needs::NOTHING },
        grid: Grid::Input,
        sign: Sign::AsComputed,
        compute: saliency_method,
    });
    pub const INPUT_X_GRADIENT: Method = Method(&MethodDef {
        name: "input-x-gradient",
        aliases: &["inputxgradient", "input*gradient", "gradient-x-input"],
        label: "Input x Gradient",
        help: "The input times its plain gradient, summed over RGB (signed; positive part unless signed).",
        needs: Needs { input_gradients: true, ..Needs::NOTHING },
        grid: Grid::Input,
        sign: Sign::Relu,
        compute: input_x_gradient_method,
    });
    pub const INTEGRATED_GRADIENTS: Method = Method(&MethodDef {
        name: "integrated-gradients",
        aliases: &["ig", "integratedgradients"],
        label: "Integrated Gradients",
        help: "Gradients averaged along the path from a black (or blurred) baseline, times the difference; sums to the score change.",
        needs: Needs { input_gradients: true, batched_forwards: true, ..Needs::NOTHING },
        grid: Grid::Input,
        sign: Sign::Relu,
        compute: |e| crate::cancel::run_sync(integrated_gradients_method(e)),
    });
    pub const SMOOTHGRAD: Method = Method(&MethodDef {
        name: "smoothgrad",
        aliases: &["smooth-grad"],
        label: "SmoothGrad",
        help: "The plain input gradient averaged over noisy copies of the input, then its magnitude: Saliency, less noisy.",
        needs: Needs { input_gradients: true, ..Needs::NOTHING },
        grid: Grid::Input,
        sign: Sign::AsComputed,
        compute: |e| crate::cancel::run_sync(smoothgrad_method(e)),
    });
    pub const OCCLUSION: Method = Method(&MethodDef {
        name: "occlusion",
        aliases: &[],
        label: "Occlusion",
        help: "Slides a patch of the baseline over the input: the score's drop where it covers (gradient-free, slow).",
        needs: Needs { batched_forwards: true, ..Needs::NOTHING },
        grid: Grid::Input,
        sign: Sign::Relu,
        compute: |e| crate::cancel::run_sync(occlusion_method(e)),
    });
}

/// What replaces the input in Integrated Gradients' path and under Occlusion's patch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Baseline {
    /// A black image: pixel value 0 through the model's normalization (not the tensor value 0).
    #[default]
    Black,
    /// A Gaussian-blurred copy of the input (sigma: the input's longer side / 20).
    Blur,
}

impl Baseline {
    pub fn from_name(name: &str) -> Result<Baseline> {
        match name.trim().to_ascii_lowercase().as_str() {
            "black" => Ok(Baseline::Black),
            "blur" | "blurred" => Ok(Baseline::Blur),
            _ => fail!(Option, "unknown baseline '{name}'; choose one of black, blur"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Baseline::Black => "black",
            Baseline::Blur => "blur",
        }
    }
}

/// The most Integrated Gradients steps and SmoothGrad samples (each one forward and backward).
pub const MAX_STEPS: usize = 256;
pub const MAX_SAMPLES: usize = 256;
/// The most occlusion windows (each one forward): patch 2, stride 1 at 224 x 224 is 49,729.
pub const MAX_WINDOWS: usize = 65_536;
/// The most bytes of one batch of inputs (as Score-CAM's `MAX_BATCH_BYTES`).
const MAX_BATCH_BYTES: usize = super::score::MAX_BATCH_BYTES;

/// The settings of the attribution methods.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttributionOptions {
    /// Integrated Gradients: steps of the midpoint Riemann sum (default 32).
    pub steps: usize,
    /// Integrated Gradients and Occlusion: what the input is compared with (default black).
    pub baseline: Baseline,
    /// SmoothGrad: noisy copies (default 25).
    pub samples: usize,
    /// SmoothGrad: the noise's standard deviation as a fraction of the input's range, max - min (default 0.15).
    pub noise: f32,
    /// Occlusion: the square patch's side in input pixels (default: a quarter of the input's shorter
    /// side, 56 at 224; see [`AttributionOptions::occlusion_window`]).
    pub patch: Option<usize>,
    /// Occlusion: the patch's step (default: half the patch, 28 at 224).
    pub stride: Option<usize>,
    /// Inputs per batch of gradients or forwards (None: the executor's `forward_batch`).
    pub batch: Option<usize>,
    /// The network-input value of a black pixel per channel, which the explainer fills from the
    /// model's normalization; not a user setting.
    pub black: Option<[f32; 3]>,
}

impl Default for AttributionOptions {
    fn default() -> Self {
        AttributionOptions { steps: 32, baseline: Baseline::Black, samples: 25, noise: 0.15, patch: None, stride: None, batch: None, black: None }
    }
}

impl AttributionOptions {
    /// Checks the settings against their budgets, before anything is allocated.
    pub fn check(&self) -> Result<()> {
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return fail!(Option, "integrated-gradients steps {} is out of range; use 1 to {MAX_STEPS}", self.steps);
        }
        if !(1..=MAX_SAMPLES).contains(&self.samples) {
            return fail!(Option, "smoothgrad samples {} is out of range; use 1 to {MAX_SAMPLES}", self.samples);
        }
        if !(self.noise.is_finite() && (0.0..=1.0).contains(&self.noise)) {
            return fail!(Option, "smoothgrad noise {} is out of range; use a fraction of the input range from 0 to 1 (default 0.15)", self.noise);
        }
        let bad_stride = matches!((self.patch, self.stride), (Some(p), Some(s)) if s > p);
        if self.patch == Some(0) || self.stride == Some(0) || bad_stride {
            return fail!(Option, "occlusion patch {:?} and stride {:?} are not usable; use a patch of at least 1 pixel and a stride from 1 to the patch", self.patch, self.stride);
        }
        if self.batch == Some(0) {
            return fail!(Option, "a batch of 0 inputs is not usable");
        }
        Ok(())
    }

    /// Occlusion's (patch, stride) on an h x w input: the ones set, else a patch of a quarter of the
    /// shorter side and a stride of half the patch. The default keeps the overlap of the usual
    /// Captum settings (stride = half the patch: each pixel under up to four windows) at a bounded
    /// cost, 7 or 8 windows a side at any input size (at 224: patch 56, stride 28, 49 windows); the
    /// old fixed 16 / 8 took 729 forwards at 224 (about 19 s natively, far over the 3 s a page can
    /// wait) and grew with the input's area.
    pub fn occlusion_window(&self, h: usize, w: usize) -> (usize, usize) {
        let patch = self.patch.unwrap_or((h.min(w) / 4).max(1));
        (patch, self.stride.unwrap_or((patch / 2).max(1)))
    }

    /// Inputs per batch for inputs of `len` values.
    fn batch_for(&self, len: usize) -> usize {
        self.batch.unwrap_or(4).min((MAX_BATCH_BYTES / (4 * len.max(1))).max(1)).max(1)
    }
}

/// Plain input gradients of `n` inputs (n x 3 x H x W in, n x 3 x H x W out) of the target score.
pub type InputGradients<'a> = dyn FnMut(&[f32], usize) -> Result<Vec<f32>> + 'a;

/// The input gradient at each of `inputs` (n x len), batched, reporting (done + k, total).
async fn gradients_at(e: &mut Evidence<'_>, inputs: &[f32], n: usize, done: usize, total: usize, mut each: impl FnMut(usize, &[f32])) -> Result<()> {
    let len = inputs.len() / n.max(1);
    let batch = e.attribution.batch_for(len);
    for (b, chunk) in inputs.chunks(batch * len).enumerate() {
        let k = chunk.len() / len;
        let g = (e.input_gradients)(chunk, k)?;
        if g.len() != chunk.len() {
            return fail!(Internal, "input gradients: {} values for {k} inputs of {len}", g.len());
        }
        for (i, gi) in g.chunks(len).enumerate() {
            each(b * batch + i, gi);
        }
        (e.progress)(done + b * batch + k, total);
        crate::cancel::checkpoint().await?;
    }
    Ok(())
}

/// The target score of each of `n` inputs (n x len), by the evidence's batched forwards.
fn scores(e: &mut Evidence, inputs: &[f32], n: usize) -> Result<Vec<f32>> {
    let logits = (e.forwards)(inputs, n)?;
    let classes = logits.len() / n.max(1);
    if classes != e.target.len() || logits.len() != n * classes {
        return fail!(Internal, "forwards: {} logits for {n} inputs and {} classes", logits.len(), e.target.len());
    }
    Ok(logits.chunks(classes).map(|l| l.iter().zip(e.target).map(|(a, b)| a * b).sum()).collect())
}

impl Evidence<'_> {
    /// The plain input gradient at one input of the evidence's shape, 3 x H x W.
    pub fn input_gradient_at(&mut self, x: &[f32]) -> Result<FeatureMap> {
        let (h, w) = (self.input.height, self.input.width);
        if x.len() != 3 * h * w {
            return fail!(Internal, "an input gradient asked at {} values, not 3 x {h} x {w}", x.len());
        }
        let g = (self.input_gradients)(x, 1)?;
        if g.len() != x.len() {
            return fail!(Internal, "input gradients: {} values for one input of {}", g.len(), x.len());
        }
        Ok(FeatureMap::new(3, h, w, g))
    }
}

fn check_input(x: &FeatureMap) -> Result<()> {
    if x.channels != 3 || x.data.len() != 3 * x.height * x.width || x.data.is_empty() {
        return fail!(Input, "the attribution methods take a 3 x H x W input, got {} channels of {} x {}", x.channels, x.height, x.width);
    }
    Ok(())
}

fn saliency_method(e: &mut Evidence) -> Result<Computed> {
    check_input(e.input)?;
    let x = e.input.data.clone();
    Ok(gradient_image(e.input_gradient_at(&x)?))
}

/// A gradient as a heatmap (per pixel, the largest magnitude over RGB) and as an RGB image.
fn gradient_image(g: FeatureMap) -> Computed {
    let rgb = FeatureMap::new(3, g.height, g.width, to_rgb(&g));
    Computed { map: magnitude(&g), rgb: Some(rgb), warnings: Vec::new() }
}

/// Signed per-channel attributions as a heatmap (their sum over RGB, signed) and as an RGB image.
fn attribution_image(a: FeatureMap) -> Computed {
    let rgb = FeatureMap::new(3, a.height, a.width, to_rgb(&a));
    Computed { map: channel_sum(&a), rgb: Some(rgb), warnings: Vec::new() }
}

/// sum_c a_c per pixel.
pub fn channel_sum(a: &FeatureMap) -> Map {
    let n = a.plane_len();
    Map::new(a.width, a.height, (0..n).map(|i| (0..a.channels).map(|c| a.data[c * n + i]).sum()).collect())
}

fn input_x_gradient_method(e: &mut Evidence) -> Result<Computed> {
    check_input(e.input)?;
    let x = e.input.clone();
    let g = e.input_gradient_at(&x.data)?;
    Ok(attribution_image(FeatureMap::new(3, x.height, x.width, x.data.iter().zip(&g.data).map(|(a, b)| a * b).collect())))
}

/// The baseline for this input: black through the model's normalization, or the blurred input.
pub fn baseline(x: &FeatureMap, kind: Baseline, black: Option<[f32; 3]>) -> Result<FeatureMap> {
    match kind {
        Baseline::Black => {
            let black = black.ok_or_else(|| Error::Internal("the black baseline needs the model's normalization, which was not given".into()))?;
            let n = x.plane_len();
            Ok(FeatureMap::new(3, x.height, x.width, (0..3 * n).map(|i| black[i / n]).collect()))
        }
        Baseline::Blur => Ok(gaussian_blur(x, x.height.max(x.width) as f32 / 20.0)),
    }
}

/// Each channel blurred by a normalized Gaussian of `sigma` pixels (radius 3 sigma, edges
/// replicated). Linear with weights summing to 1, so blurring the normalized tensor is blurring the
/// pixels, then normalizing.
pub fn gaussian_blur(x: &FeatureMap, sigma: f32) -> FeatureMap {
    let r = (3.0 * sigma).ceil().max(1.0) as isize;
    let k: Vec<f32> = (-r..=r).map(|d| (-((d * d) as f32) / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / total).collect();
    let (h, w) = (x.height as isize, x.width as isize);
    let mut out = x.data.clone();
    let mut tmp = vec![0.0f32; x.plane_len()];
    for c in 0..x.channels {
        let plane = &mut out[c * x.plane_len()..(c + 1) * x.plane_len()];
        for y in 0..h {
            for xx in 0..w {
                tmp[(y * w + xx) as usize] = (-r..=r).map(|d| k[(d + r) as usize] * plane[(y * w + (xx + d).clamp(0, w - 1)) as usize]).sum();
            }
        }
        for y in 0..h {
            for xx in 0..w {
                plane[(y * w + xx) as usize] = (-r..=r).map(|d| k[(d + r) as usize] * tmp[((y + d).clamp(0, h - 1) * w + xx) as usize]).sum();
            }
        }
    }
    FeatureMap::new(x.channels, x.height, x.width, out)
}

/// Integrated Gradients with the midpoint Riemann rule: alpha_k = (k + 1/2) / N,
/// IG = (x - b) (.) (1/N) sum_k grad f(b + alpha_k (x - b)). The map is the signed sum over RGB.
/// Completeness (sum IG = f(x) - f(b)) is checked: a gap over 1% becomes a warning.
pub(super) fn integrated_gradients_method<'r, 'e>(e: &'r mut Evidence<'e>) -> super::ComputeFuture<'r> {
    Box::pin(integrated_gradients(e))
}

async fn integrated_gradients(e: &mut Evidence<'_>) -> Result<Computed> {
    e.attribution.check()?;
    check_input(e.input)?;
    let x = e.input.clone();
    let b = baseline(&x, e.attribution.baseline, e.attribution.black)?;
    let n = e.attribution.steps;
    let total = n + 2;
    let len = x.data.len();
    // f(x) and f(b), for the completeness check.
    let both: Vec<f32> = x.data.iter().chain(&b.data).copied().collect();
    let fx_fb = scores(e, &both, 2)?;
    drop(both);
    (e.progress)(2, total);
    let mut avg = vec![0.0f32; len];
    let batch = e.attribution.batch_for(len);
    let _batch = crate::budget::reserve_floats(batch.saturating_mul(len), || format!("a batch of {batch} modified inputs"))?;
    let mut k0 = 0;
    while k0 < n {
        let k1 = (k0 + batch).min(n);
        let mut path = Vec::with_capacity((k1 - k0) * len);
        for k in k0..k1 {
            let alpha = (k as f32 + 0.5) / n as f32;
            path.extend(x.data.iter().zip(&b.data).map(|(xi, bi)| bi + alpha * (xi - bi)));
        }
        gradients_at(e, &path, k1 - k0, 2 + k0, total, |_, g| avg.iter_mut().zip(g).for_each(|(a, gi)| *a += gi / n as f32)).await?;
        k0 = k1;
    }
    let attr: Vec<f32> = avg.iter().zip(x.data.iter().zip(&b.data)).map(|(g, (xi, bi))| (xi - bi) * g).collect();
    let mut out = attribution_image(FeatureMap::new(3, x.height, x.width, attr));
    let sum: f64 = out.map.data.iter().map(|&v| v as f64).sum();
    let delta = (fx_fb[0] - fx_fb[1]) as f64;
    if let Some(w) = completeness_warning(sum, delta, n, e.attribution.baseline) {
        out.warnings.push(w);
    }
    Ok(out)
}

/// The relative gap |sum - delta| / |delta| of Integrated Gradients' completeness.
pub fn completeness_gap(sum: f64, delta: f64) -> f64 {
    (sum - delta).abs() / delta.abs().max(1e-12)
}

fn completeness_warning(sum: f64, delta: f64, steps: usize, baseline: Baseline) -> Option<String> {
    let gap = completeness_gap(sum, delta);
    (gap > 0.01).then(|| {
        format!(
            "integrated gradients: the attributions sum to {sum:.4} but f(input) - f({} baseline) = {delta:.4}, a {:.1}% gap (over 1%): the path integral is not converged; raise the steps (now {steps})",
            baseline.name(),
            100.0 * gap
        )
    })
}

/// A deterministic stream of standard normal values (splitmix64, Box-Muller), so the same input
/// gives the same SmoothGrad map.
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next(&mut self) -> f32 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// SmoothGrad: the plain gradient averaged over `samples` copies x + N(0, sigma^2), sigma = noise *
/// (max x - min x); the map is its magnitude (largest |.| over RGB) as Saliency's.
pub(super) fn smoothgrad_method<'r, 'e>(e: &'r mut Evidence<'e>) -> super::ComputeFuture<'r> {
    Box::pin(smoothgrad(e))
}

async fn smoothgrad(e: &mut Evidence<'_>) -> Result<Computed> {
    e.attribution.check()?;
    check_input(e.input)?;
    let x = e.input.clone();
    let (lo, hi) = x.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let sigma = e.attribution.noise * (hi - lo);
    let n = e.attribution.samples;
    let len = x.data.len();
    let batch = e.attribution.batch_for(len);
    let _batch = crate::budget::reserve_floats(batch.saturating_mul(len), || format!("a batch of {batch} modified inputs"))?;
    let mut rng = Normal(0x5eed_5300_7468_0000);
    let mut avg = vec![0.0f32; len];
    let mut k0 = 0;
    while k0 < n {
        let k1 = (k0 + batch).min(n);
        let mut noisy = Vec::with_capacity((k1 - k0) * len);
        for _ in k0..k1 {
            noisy.extend(x.data.iter().map(|v| v + sigma * rng.next()));
        }
        gradients_at(e, &noisy, k1 - k0, k0, n, |_, g| avg.iter_mut().zip(g).for_each(|(a, gi)| *a += gi / n as f32)).await?;
        k0 = k1;
    }
    Ok(gradient_image(FeatureMap::new(3, x.height, x.width, avg)))
}

/// Window starts along a side of `len`: 0, stride, 2 stride... and a last one flush with the edge
/// when the stride leaves it uncovered, so every pixel is occluded at least once.
pub fn window_starts(len: usize, patch: usize, stride: usize) -> Vec<usize> {
    let mut s: Vec<usize> = (0..).map(|i| i * stride).take_while(|&s| s + patch <= len).collect();
    if s.last().is_some_and(|&l| l + patch < len) {
        s.push(len - patch);
    }
    s
}

/// Occlusion: for each window (patch x patch, every `stride` pixels), the input with that window
/// replaced by the baseline is scored; a pixel's value is the mean of f(x) - f(occluded) over the
/// windows covering it (Captum divides by the same count).
pub(super) fn occlusion_method<'r, 'e>(e: &'r mut Evidence<'e>) -> super::ComputeFuture<'r> {
    Box::pin(occlusion(e))
}

async fn occlusion(e: &mut Evidence<'_>) -> Result<Computed> {
    e.attribution.check()?;
    check_input(e.input)?;
    let x = e.input.clone();
    let (h, w) = (x.height, x.width);
    let (p, stride) = e.attribution.occlusion_window(h, w);
    if p > h || p > w {
        return fail!(Option, "the occlusion patch ({p} px) is larger than the {w} x {h} input; use a patch of at most {}", h.min(w));
    }
    if stride > p {
        return fail!(Option, "the occlusion stride ({stride} px) is larger than the patch ({p} px), which would leave pixels unoccluded; use a stride of at most {p}");
    }
    let (ys, xs) = (window_starts(h, p, stride), window_starts(w, p, stride));
    let windows: Vec<(usize, usize)> = ys.iter().flat_map(|&y| xs.iter().map(move |&x0| (y, x0))).collect();
    if windows.len() > MAX_WINDOWS {
        return fail!(Option, "occlusion with patch {p} and stride {stride} on a {w} x {h} input takes {} forwards, over the budget of {MAX_WINDOWS}; use a larger stride", windows.len());
    }
    let b = baseline(&x, e.attribution.baseline, e.attribution.black)?;
    let total = windows.len() + 1;
    let fx = scores(e, &x.data, 1)?[0];
    (e.progress)(1, total);
    let (n, len) = (h * w, x.data.len());
    let mut sum = vec![0.0f32; n];
    let mut count = vec![0u32; n];
    let batch = e.attribution.batch_for(len);
    let _batch = crate::budget::reserve_floats(batch.saturating_mul(len), || format!("a batch of {batch} modified inputs"))?;
    for (bi, chunk) in windows.chunks(batch).enumerate() {
        let mut occluded = Vec::with_capacity(chunk.len() * len);
        for &(y0, x0) in chunk {
            let start = occluded.len();
            occluded.extend_from_slice(&x.data);
            for c in 0..3 {
                for y in y0..y0 + p {
                    let row = c * n + y * w;
                    occluded[start + row + x0..start + row + x0 + p].copy_from_slice(&b.data[row + x0..row + x0 + p]);
                }
            }
        }
        let s = scores(e, &occluded, chunk.len())?;
        for (&(y0, x0), sk) in chunk.iter().zip(s) {
            for y in y0..y0 + p {
                for i in y * w + x0..y * w + x0 + p {
                    sum[i] += fx - sk;
                    count[i] += 1;
                }
            }
        }
        (e.progress)(1 + bi * batch + chunk.len(), total);
        crate::cancel::checkpoint().await?;
    }
    let map = sum.iter().zip(&count).map(|(s, &c)| if c > 0 { s / c as f32 } else { 0.0 }).collect();
    Ok(Map::new(w, h, map).into())
}
