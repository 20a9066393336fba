//! Multi-head self-attention (PyTorch's `nn.MultiheadAttention` with query = key = value), forward
//! and input gradient, on token maps stored channel-major: each image is C x T (a C x 1 x T map),
//! so the projections are plain `W x` products and each head's rows are one contiguous block.
//!
//! Per head h (d = C / heads rows of q, k, v): S = q^T k / sqrt(d) (T x T), P = softmax of each
//! row of S, o = v P^T; then y = W_out o + b_out. The backward recomputes q, k, v and P from the
//! input instead of keeping them: a pass keeps only what candle's tape already holds.

use super::{matmul, MatRef};
use crate::graph::{Attention, Linear};

/// `W x + b` for a C_in x T map: (C_out x T).
fn project(l: &Linear, x: &[f32], t: usize) -> Vec<f32> {
    let mut y: Vec<f32> = l.bias.iter().flat_map(|&b| std::iter::repeat_n(b, t)).collect();
    matmul(l.out_features, t, l.in_features, MatRef::new(&l.weight, l.in_features), MatRef::new(x, t), &mut y, t, true);
    y
}

/// The rows of head `h` of a (rows x T) block whose heads are `d` rows each.
fn head(block: &[f32], h: usize, d: usize, t: usize) -> &[f32] {
    &block[h * d * t..(h + 1) * d * t]
}

/// P = row-wise softmax of q^T k * scale (T x T), for one head's q and k (d x T each).
fn probabilities(q: &[f32], k: &[f32], d: usize, t: usize, scale: f32) -> Vec<f32> {
    let mut p = vec![0.0; t * t];
    matmul(t, t, d, MatRef::new(q, t).t(), MatRef::new(k, t), &mut p, t, false);
    for row in p.chunks_exact_mut(t) {
        let peak = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * scale;
        let mut total = 0.0;
        for v in row.iter_mut() {
            *v = (*v * scale - peak).exp();
            total += *v;
        }
        row.iter_mut().for_each(|v| *v /= total);
    }
    p
}

struct Dims {
    c: usize,
    t: usize,
    d: usize,
    scale: f32,
}

fn dims(a: &Attention, len: usize, n: usize) -> Dims {
    let c = a.channels();
    let t = len / (n * c).max(1);
    debug_assert_eq!(len, n * c * t);
    let d = c / a.heads;
    Dims { c, t, d, scale: 1.0 / (d as f32).sqrt() }
}

/// y for `n` images of C x T each.
pub fn self_attention_forward(a: &Attention, x: &[f32], n: usize) -> Vec<f32> {
    let Dims { c, t, d, scale } = dims(a, x.len(), n);
    let mut y = Vec::with_capacity(x.len());
    for img in x.chunks_exact(c * t) {
        let qkv = project(&a.in_proj, img, t);
        let (q, rest) = qkv.split_at(c * t);
        let (k, v) = rest.split_at(c * t);
        let mut o = vec![0.0; c * t];
        for h in 0..a.heads {
            let p = probabilities(head(q, h, d, t), head(k, h, d, t), d, t, scale);
            matmul(d, t, t, MatRef::new(head(v, h, d, t), t), MatRef::new(&p, t).t(), &mut o[h * d * t..], t, false);
        }
        y.extend(project(&a.out_proj, &o, t));
    }
    y
}

/// dx from dy for `n` images of C x T each.
pub fn self_attention_input_grad(a: &Attention, x: &[f32], grad_out: &[f32], n: usize) -> Vec<f32> {
    let Dims { c, t, d, scale } = dims(a, x.len(), n);
    let mut gx = vec![0.0; x.len()];
    for ((img, gy), gx) in x.chunks_exact(c * t).zip(grad_out.chunks_exact(c * t)).zip(gx.chunks_exact_mut(c * t)) {
        let qkv = project(&a.in_proj, img, t);
        // do = W_out^T dy
        let mut go = vec![0.0; c * t];
        matmul(c, t, c, MatRef::new(&a.out_proj.weight, c).t(), MatRef::new(gy, t), &mut go, t, false);
        let mut gqkv = vec![0.0; 3 * c * t];
        for h in 0..a.heads {
            let (q, k, v) = (head(&qkv, h, d, t), head(&qkv[c * t..], h, d, t), head(&qkv[2 * c * t..], h, d, t));
            let go_h = head(&go, h, d, t);
            let p = probabilities(q, k, d, t, scale);
            // dv = do P; dP = do^T v
            matmul(d, t, t, MatRef::new(go_h, t), MatRef::new(&p, t), &mut gqkv[(2 * c + h * d) * t..], t, false);
            let mut gs = vec![0.0; t * t];
            matmul(t, t, d, MatRef::new(go_h, t).t(), MatRef::new(v, t), &mut gs, t, false);
            softmax_backward_in_place(&p, &mut gs, t, scale);
            // dq = k dS^T, dk = q dS (dS already holds the 1/sqrt(d) of S)
            matmul(d, t, t, MatRef::new(k, t), MatRef::new(&gs, t).t(), &mut gqkv[h * d * t..], t, false);
            matmul(d, t, t, MatRef::new(q, t), MatRef::new(&gs, t), &mut gqkv[(c + h * d) * t..], t, false);
        }
        // dx = W_in^T d(qkv)
        matmul(c, t, 3 * c, MatRef::new(&a.in_proj.weight, c).t(), MatRef::new(&gqkv, t), gx, t, false);
    }
    gx
}

/// Turns dP into d(q^T k) in place: P (dP - rowsum(P dP)) * scale, row by row.
fn softmax_backward_in_place(p: &[f32], g: &mut [f32], t: usize, scale: f32) {
    for (pr, gr) in p.chunks_exact(t).zip(g.chunks_exact_mut(t)) {
        let dot: f32 = pr.iter().zip(gr.iter()).map(|(a, b)| a * b).sum();
        pr.iter().zip(gr.iter_mut()).for_each(|(&pv, gv)| *gv = pv * (*gv - dot) * scale);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_close, check_grad, Rng};
    use super::*;

    fn random_attention(rng: &mut Rng, c: usize, heads: usize) -> Attention {
        let lin =
            |rng: &mut Rng, out: usize| Linear { weight: rng.vec(out * c).iter().map(|v| v * 0.8).collect(), bias: rng.vec(out).iter().map(|v| v * 0.3).collect(), in_features: c, out_features: out };
        Attention { heads, in_proj: lin(rng, 3 * c), out_proj: lin(rng, c) }
    }

    /// The textbook form, token-major, in f64: softmax(Q K^T / sqrt(d)) V per head.
    fn naive(a: &Attention, x: &[f32], c: usize, t: usize) -> Vec<f64> {
        let lin = |l: &Linear, rows: &[Vec<f64>]| -> Vec<Vec<f64>> {
            rows.iter().map(|r| (0..l.out_features).map(|o| l.bias[o] as f64 + (0..l.in_features).map(|i| l.weight[o * l.in_features + i] as f64 * r[i]).sum::<f64>()).collect()).collect()
        };
        let tokens: Vec<Vec<f64>> = (0..t).map(|i| (0..c).map(|ch| x[ch * t + i] as f64).collect()).collect();
        let qkv = lin(&a.in_proj, &tokens);
        let d = c / a.heads;
        let mut o = vec![vec![0.0; c]; t];
        for h in 0..a.heads {
            for i in 0..t {
                let s: Vec<f64> = (0..t).map(|j| (0..d).map(|e| qkv[i][h * d + e] * qkv[j][c + h * d + e]).sum::<f64>() / (d as f64).sqrt()).collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for j in 0..t {
                    let pij = (s[j] - m).exp() / total;
                    (0..d).for_each(|e| o[i][h * d + e] += pij * qkv[j][2 * c + h * d + e]);
                }
            }
        }
        let y = lin(&a.out_proj, &o);
        (0..c).flat_map(|ch| y.iter().map(move |r| r[ch])).collect()
    }

    #[test]
    fn forward_matches_the_textbook_form() {
        let mut rng = Rng::new(3);
        for (c, heads, t, n) in [(8, 2, 5, 1), (12, 3, 7, 2), (6, 1, 1, 1)] {
            let a = random_attention(&mut rng, c, heads);
            let x = rng.vec(n * c * t);
            let y = self_attention_forward(&a, &x, n);
            let want: Vec<f64> = x.chunks(c * t).flat_map(|img| naive(&a, img, c, t)).collect();
            assert_close(&format!("attention c{c} h{heads} t{t} n{n}"), &y, &want, 1e-5);
        }
    }

    #[test]
    fn input_gradient_matches_finite_differences() {
        let mut rng = Rng::new(5);
        for (c, heads, t, n) in [(8, 2, 5, 1), (12, 3, 7, 2), (4, 4, 3, 1)] {
            let a = random_attention(&mut rng, c, heads);
            let x: Vec<f32> = rng.vec(n * c * t).iter().map(|v| v * 2.0).collect();
            let r = rng.vec(x.len());
            let g = self_attention_input_grad(&a, &x, &r, n);
            check_grad(&format!("attention c{c} h{heads} t{t}"), |x| self_attention_forward(&a, x, n), &x, &r, &g, &mut rng);
        }
    }
}
