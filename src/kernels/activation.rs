//! ReLU / ReLU6 and their backward passes: plain, guided, or deconvolution's.

/// How a ReLU/ReLU6 passes a gradient back during one backward walk. Only these units change: smooth
/// activations, pools and convs keep their true backward under every rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReluRule {
    /// The true derivative (PyTorch's tie rule at the kinks).
    #[default]
    Plain,
    /// Guided backpropagation (Springenberg et al.): the true derivative, and only positive gradients.
    Guided,
    /// Deconvolution (Zeiler & Fergus): the positive part of the incoming gradient, whatever the
    /// forward input was (for ReLU6 too).
    Deconv,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clamp {
    Relu,
    Relu6,
}

/// max(x, 0), and min(.., 6) for Relu6. NaN stays NaN, as in PyTorch (`torch.relu(nan)` is nan):
/// a numerical fault upstream must reach the logits and be reported, not turn into zeros.
pub fn relu_forward(x: &[f32], clamp: Clamp) -> Vec<f32> {
    let mut y = x.to_vec();
    clamp_in_place(&mut y, clamp);
    y
}

/// [`relu_forward`] in place, written as compare-and-select so it vectorises (also on wasm32 simd128,
/// where `f32::max`'s NaN rule would force a scalar loop). The comparisons are negated
/// (`!(v <= 0)`), so a NaN fails them and passes through unchanged.
/// Split across threads where the build has them ([`super::parallel::in_runs`]).
pub fn clamp_in_place(x: &mut [f32], clamp: Clamp) {
    super::parallel::in_runs(x, |_, run| clamp_slice(run, clamp));
}

/// [`clamp_in_place`] on this thread: also for kernels that clamp their output block by block
/// while it is in cache (`sgemm`), with the same bits.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub(crate) fn clamp_slice(x: &mut [f32], clamp: Clamp) {
    match clamp {
        Clamp::Relu => x.iter_mut().for_each(|v| *v = if !(*v <= 0.0) { *v } else { 0.0 }),
        Clamp::Relu6 => x.iter_mut().for_each(|v| {
            let r = if !(*v <= 0.0) { *v } else { 0.0 };
            *v = if !(r >= 6.0) { r } else { 6.0 };
        }),
    }
}

/// The backward mask of a ReLU/ReLU6 read off its *output* `y`: 1 where the gradient passes
/// (0 < y, and y < 6 for Relu6; an input at or above 6 gives y == 6). Same rule as [`relu_input_grad`].
pub fn relu_mask(y: &[f32], clamp: Clamp) -> Vec<u8> {
    match clamp {
        Clamp::Relu => y.iter().map(|&v| (v > 0.0) as u8).collect(),
        Clamp::Relu6 => y.iter().map(|&v| ((v > 0.0) & (v < 6.0)) as u8).collect(),
    }
}

/// The ReLU/ReLU6 backward read off its *output* `y` in one pass (same rule as [`relu_input_grad`]):
/// g where 0 < y (and y < 6 for Relu6) and, guided, g > 0; else 0. Deconv: max(g, 0).
pub fn relu_output_grad(y: &[f32], g: &[f32], clamp: Clamp, rule: ReluRule) -> Vec<f32> {
    debug_assert_eq!(y.len(), g.len());
    let gate = ReluGate { y, clamp, rule };
    if super::parallel::threads() == 1 {
        let mut out = Vec::with_capacity(g.len());
        gate.extend(0, g, &mut out); // no zeroed buffer first
        return out;
    }
    let mut out = super::fresh(g.len());
    super::parallel::in_runs(&mut out, |at, run| {
        let len = run.len();
        gate.apply(at, &g[at..][..len], super::zeroed(run));
    });
    // SAFETY: the runs cover `out`, and each was zeroed, then written.
    unsafe { super::written(out) }
}

/// A ReLU/ReLU6's backward, read off its output `y`: what [`relu_output_grad`] does to a gradient,
/// for kernels that apply it to the parts of the gradient they read (a conv's input gradient,
/// `conv2d_input_grad_gated`) instead of in a pass of its own.
#[derive(Clone, Copy)]
pub struct ReluGate<'a> {
    pub y: &'a [f32],
    pub clamp: Clamp,
    pub rule: ReluRule,
}

impl ReluGate<'_> {
    /// `out[i]` = the gradient that passes where the gradient at element `at + i` is `g[i]`.
    pub(crate) fn apply(&self, at: usize, g: &[f32], out: &mut [f32]) {
        let (y, lo_g, hi) = self.bounds(at, g.len());
        match self.rule {
            ReluRule::Deconv => out.iter_mut().zip(g).for_each(|(o, &g)| *o = if g > 0.0 { g } else { 0.0 }),
            _ => out.iter_mut().zip(y).zip(g).for_each(|((o, &y), &g)| *o = Self::pass(y, g, lo_g, hi)),
        }
    }

    /// [`Self::apply`] appended to `out`.
    fn extend(&self, at: usize, g: &[f32], out: &mut Vec<f32>) {
        let (y, lo_g, hi) = self.bounds(at, g.len());
        match self.rule {
            ReluRule::Deconv => out.extend(g.iter().map(|&g| if g > 0.0 { g } else { 0.0 })),
            _ => out.extend(y.iter().zip(g).map(|(&y, &g)| Self::pass(y, g, lo_g, hi))),
        }
    }

    /// `y`'s elements `at..at + len`, the gradient's lower bound (the guided rule passes only
    /// positive gradients) and the output's upper bound.
    fn bounds(&self, at: usize, len: usize) -> (&[f32], f32, f32) {
        let hi = if self.clamp == Clamp::Relu6 { 6.0 } else { f32::INFINITY };
        let lo_g = if self.rule == ReluRule::Guided { 0.0 } else { f32::NEG_INFINITY };
        (&self.y[at..][..len], lo_g, hi)
    }

    /// `&`, not `&&`: three compares and one select per element, which vectorise; short-circuit
    /// branches mispredict on the guided rule's random signs (they cost ResNet-18's guided walk 26 ms).
    #[inline(always)]
    fn pass(y: f32, g: f32, lo_g: f32, hi: f32) -> f32 {
        if (y > 0.0) & (y < hi) & (g > lo_g) {
            g
        } else {
            0.0
        }
    }
}

/// The ReLU backward from a [`relu_mask`], in place: g stays where the mask is 1 (and, guided,
/// where g > 0), else 0. Deconv ignores the mask: max(g, 0).
pub fn mask_grad_in_place(g: &mut [f32], mask: &[u8], rule: ReluRule) {
    debug_assert_eq!(g.len(), mask.len());
    match rule {
        ReluRule::Plain => g.iter_mut().zip(mask).for_each(|(v, &m)| *v = if m != 0 { *v } else { 0.0 }),
        ReluRule::Guided => g.iter_mut().zip(mask).for_each(|(v, &m)| *v = if (m != 0) & (*v > 0.0) { *v } else { 0.0 }),
        ReluRule::Deconv => g.iter_mut().for_each(|v| *v = if *v > 0.0 { *v } else { 0.0 }),
    }
}

/// Whether the forward is the identity at `v`: PyTorch gives zero gradient
/// exactly at the kinks (x == 0, and x == 6 for Relu6).
fn passes(v: f32, clamp: Clamp) -> bool {
    (0.0 < v) & ((clamp == Clamp::Relu) | (v < 6.0))
}

/// Plain backward with PyTorch's tie rule: gradient passes iff 0 < x (and x < 6 for Relu6); 0 exactly at x == 0 and x == 6.
/// Guided (Springenberg et al.'s guided backpropagation): additionally only where grad > 0.
/// Deconv (Zeiler & Fergus): wherever grad > 0, whatever x.
pub fn relu_input_grad(x: &[f32], grad_out: &[f32], clamp: Clamp, rule: ReluRule) -> Vec<f32> {
    debug_assert_eq!(x.len(), grad_out.len());
    let pass = |v: f32, g: f32| match rule {
        ReluRule::Plain => passes(v, clamp),
        ReluRule::Guided => passes(v, clamp) & (g > 0.0),
        ReluRule::Deconv => g > 0.0,
    };
    x.iter().zip(grad_out).map(|(&v, &g)| if pass(v, g) { g } else { 0.0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::parallel::RUN;
    use crate::kernels::testutil::{check_grad, Rng};

    #[test]
    fn relu_input_grad_matches_finite_differences() {
        let mut rng = Rng::new(51);
        // Values in [-8, 8) kept at least 0.05 away from the kinks at 0 and 6.
        let x: Vec<f32> = (0..200).map(|_| 8.0 * rng.uniform()).filter(|v| v.abs() > 0.05 && (v - 6.0).abs() > 0.05).collect();
        let r = rng.vec(x.len());
        for clamp in [Clamp::Relu, Clamp::Relu6] {
            let analytic = relu_input_grad(&x, &r, clamp, ReluRule::Plain);
            check_grad("relu", |x| relu_forward(x, clamp), &x, &r, &analytic, &mut rng);
        }
    }

    /// Split into runs on 3 threads, the forward and the backward give the bits of one thread's
    /// element-by-element rule, with a ragged last run.
    #[test]
    fn split_passes_are_elementwise_on_any_thread_count() {
        let pool = |n: usize| rayon::ThreadPoolBuilder::new().num_threads(n).build().expect("a pool");
        let (one, three) = (pool(1), pool(3));
        let mut rng = Rng::new(52);
        let len = 100 * RUN + 3;
        assert_eq!(three.install(|| crate::kernels::parallel::parts(len.div_ceil(RUN), RUN)), 3, "the pass splits");
        let x: Vec<f32> = (0..len).map(|_| 16.0 * rng.uniform() - 4.0).collect();
        let g = rng.vec(len);
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for clamp in [Clamp::Relu, Clamp::Relu6] {
            let hi = if clamp == Clamp::Relu6 { 6.0 } else { f32::INFINITY };
            let want_y: Vec<f32> = x.iter().map(|&v| v.max(0.0).min(hi)).collect();
            let want_g: Vec<f32> = want_y.iter().zip(&g).map(|(&y, &g)| if y > 0.0 && y < hi && g > 0.0 { g } else { 0.0 }).collect();
            for p in [&one, &three] {
                let y = p.install(|| relu_forward(&x, clamp));
                assert_eq!(bits(&y), bits(&want_y), "{clamp:?} forward");
                assert_eq!(bits(&p.install(|| relu_output_grad(&y, &g, clamp, ReluRule::Guided))), bits(&want_g), "{clamp:?} guided backward");
            }
        }
    }

    #[test]
    fn in_place_forward_and_mask_agree_with_reference() {
        let x = [-1.0, 0.0, 3.0, 3.0, 6.0, 7.5, f32::NAN, -0.0];
        let g = [5.0, 5.0, 2.0, -2.0, 4.0, 1.0, 1.0, 1.0];
        for clamp in [Clamp::Relu, Clamp::Relu6] {
            let mut y = x.to_vec();
            clamp_in_place(&mut y, clamp);
            let want = relu_forward(&x, clamp);
            assert_eq!(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            let m = relu_mask(&y, clamp);
            for rule in [ReluRule::Plain, ReluRule::Guided, ReluRule::Deconv] {
                assert_eq!(relu_output_grad(&y, &g, clamp, rule), relu_input_grad(&x, &g, clamp, rule), "output rule {clamp:?} {rule:?}");
                let mut gm = g.to_vec();
                mask_grad_in_place(&mut gm, &m, rule);
                assert_eq!(gm, relu_input_grad(&x, &g, clamp, rule), "{clamp:?} {rule:?}");
            }
        }
    }

    #[test]
    fn nan_passes_through_relu_as_in_pytorch() {
        let x = [f32::NAN, -1.0, f32::INFINITY, f32::NEG_INFINITY, 2.0];
        for clamp in [Clamp::Relu, Clamp::Relu6] {
            let y = relu_forward(&x, clamp);
            assert!(y[0].is_nan(), "{clamp:?}");
            assert_eq!(y[1..], [0.0, if clamp == Clamp::Relu { f32::INFINITY } else { 6.0 }, 0.0, 2.0]);
        }
    }

    #[test]
    fn relu_forward_values() {
        let x = [-1.0, 0.0, 3.0, 6.0, 7.5];
        assert_eq!(relu_forward(&x, Clamp::Relu), vec![0.0, 0.0, 3.0, 6.0, 7.5]);
        assert_eq!(relu_forward(&x, Clamp::Relu6), vec![0.0, 0.0, 3.0, 6.0, 6.0]);
    }

    #[test]
    fn relu_tie_rules_and_guided_rule() {
        let x = [-1.0, 0.0, 3.0, 3.0, 6.0, 7.5];
        let g = [5.0, 5.0, 2.0, -2.0, 4.0, 1.0];
        assert_eq!(relu_input_grad(&x, &g, Clamp::Relu, ReluRule::Plain), vec![0.0, 0.0, 2.0, -2.0, 4.0, 1.0]);
        assert_eq!(relu_input_grad(&x, &g, Clamp::Relu6, ReluRule::Plain), vec![0.0, 0.0, 2.0, -2.0, 0.0, 0.0]);
        assert_eq!(relu_input_grad(&x, &g, Clamp::Relu, ReluRule::Guided), vec![0.0, 0.0, 2.0, 0.0, 4.0, 1.0]);
        assert_eq!(relu_input_grad(&x, &g, Clamp::Relu6, ReluRule::Guided), vec![0.0, 0.0, 2.0, 0.0, 0.0, 0.0]);
        // Deconvolution passes every positive gradient, where the unit was off (x = -1, 0) or clamped
        // at 6 too, and no negative one.
        assert_eq!(relu_input_grad(&x, &g, Clamp::Relu, ReluRule::Deconv), vec![5.0, 5.0, 2.0, 0.0, 4.0, 1.0]);
        assert_eq!(relu_input_grad(&x, &g, Clamp::Relu6, ReluRule::Deconv), vec![5.0, 5.0, 2.0, 0.0, 4.0, 1.0]);
        // A zero gradient stays zero under the guided rule.
        assert_eq!(relu_input_grad(&[1.0], &[0.0], Clamp::Relu, ReluRule::Guided), vec![0.0]);
    }
}
