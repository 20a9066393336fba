//! ReLU / ReLU6 and their (plain or guided) backward passes.

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clamp {
    Relu,
    Relu6,
}

/// max(x, 0), and min(.., 6) for Relu6. NaN maps to 0 in both (`f32::max`
/// prefers the number), which `clamp` would not do.
#[allow(clippy::manual_clamp)]
pub fn relu_forward(x: &[f32], clamp: Clamp) -> Vec<f32> {
    match clamp {
        Clamp::Relu => x.iter().map(|v| v.max(0.0)).collect(),
        Clamp::Relu6 => x.iter().map(|v| v.max(0.0).min(6.0)).collect(),
    }
}

/// Whether the forward is the identity at `v`: PyTorch gives zero gradient
/// exactly at the kinks (x == 0, and x == 6 for Relu6).
fn passes(v: f32, clamp: Clamp) -> bool {
    0.0 < v && (clamp == Clamp::Relu || v < 6.0)
}

/// Plain backward with PyTorch's tie rule: gradient passes iff 0 < x (and x < 6 for Relu6); 0 exactly at x == 0 and x == 6.
/// Guided (Springenberg et al.'s guided backpropagation): additionally only where grad > 0.
pub fn relu_input_grad(x: &[f32], grad_out: &[f32], clamp: Clamp, guided: bool) -> Vec<f32> {
    debug_assert_eq!(x.len(), grad_out.len());
    x.iter()
        .zip(grad_out)
        .map(|(&v, &g)| {
            if passes(v, clamp) && (!guided || g > 0.0) {
                g
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{check_grad, Rng};

    #[test]
    fn relu_input_grad_matches_finite_differences() {
        let mut rng = Rng::new(51);
        // Values in [-8, 8) kept at least 0.05 away from the kinks at 0 and 6.
        let x: Vec<f32> = (0..200)
            .map(|_| 8.0 * rng.uniform())
            .filter(|v| v.abs() > 0.05 && (v - 6.0).abs() > 0.05)
            .collect();
        let r = rng.vec(x.len());
        for clamp in [Clamp::Relu, Clamp::Relu6] {
            let analytic = relu_input_grad(&x, &r, clamp, false);
            check_grad(
                "relu",
                |x| relu_forward(x, clamp),
                &x,
                &r,
                &analytic,
                &mut rng,
            );
        }
    }

    #[test]
    fn relu_forward_values() {
        let x = [-1.0, 0.0, 3.0, 6.0, 7.5];
        assert_eq!(relu_forward(&x, Clamp::Relu), vec![0.0, 0.0, 3.0, 6.0, 7.5]);
        assert_eq!(
            relu_forward(&x, Clamp::Relu6),
            vec![0.0, 0.0, 3.0, 6.0, 6.0]
        );
    }

    #[test]
    fn relu_tie_rules_and_guided_rule() {
        let x = [-1.0, 0.0, 3.0, 3.0, 6.0, 7.5];
        let g = [5.0, 5.0, 2.0, -2.0, 4.0, 1.0];
        assert_eq!(
            relu_input_grad(&x, &g, Clamp::Relu, false),
            vec![0.0, 0.0, 2.0, -2.0, 4.0, 1.0]
        );
        assert_eq!(
            relu_input_grad(&x, &g, Clamp::Relu6, false),
            vec![0.0, 0.0, 2.0, -2.0, 0.0, 0.0]
        );
        assert_eq!(
            relu_input_grad(&x, &g, Clamp::Relu, true),
            vec![0.0, 0.0, 2.0, 0.0, 4.0, 1.0]
        );
        assert_eq!(
            relu_input_grad(&x, &g, Clamp::Relu6, true),
            vec![0.0, 0.0, 2.0, 0.0, 0.0, 0.0]
        );
        // A zero gradient stays zero under the guided rule.
        assert_eq!(
            relu_input_grad(&[1.0], &[0.0], Clamp::Relu, true),
            vec![0.0]
        );
    }
}
