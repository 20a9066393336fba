//! Eigen-CAM (Muhammad & Yeasin): the projection of the activations on their first principal
//! component. Gradient-free, so it is the same for every class.

use super::{Grid, Method, MethodDef, Needs, Sign};
use crate::feature_map::{FeatureMap, Map};

impl Method {
    pub const EIGEN_CAM: Method = Method(&MethodDef {
        name: "eigencam",
        aliases: &[],
        label: "Eigen-CAM",
        help: "First principal component of the activations: class-agnostic, gradient-free.",
        needs: Needs::NOTHING,
        grid: Grid::Layer,
        sign: Sign::AsComputed,
        compute: |e| Ok(eigen_cam(e.activations).map_err(crate::error::Error::Option)?.into()),
    });
}

/// Projects the (H*W) x C activation matrix, centred per channel, on its top right-singular vector,
/// found by power iteration on the C x C Gram matrix. The SVD's sign is arbitrary; we pick the sign
/// that makes the map's largest-magnitude value positive, so the result does not flip between runs.
///
/// The C x C Gram matrix (f64) is bounded by [`MAX_GRAM_BYTES`], checked before it is allocated. A
/// layer with more channels than that allows uses the (H*W) x (H*W) Gram of the same matrix instead
/// (its top eigenvector u gives the same projection, sqrt(lambda) * u) when that one fits; when
/// neither fits, an error says so.
pub fn eigen_cam(a: &FeatureMap) -> Result<Map, String> {
    let (c, n) = (a.channels, a.plane_len());
    let fits = |k: usize| k.checked_mul(k).and_then(|kk| kk.checked_mul(8)).is_some_and(|b| b <= MAX_GRAM_BYTES);
    if !fits(c) && !fits(n) {
        return Err(format!(
            "Eigen-CAM of a layer with {c} channels of {n} positions needs a {k} x {k} matrix, over its {} MiB budget; pick a layer with fewer channels or a smaller map",
            MAX_GRAM_BYTES >> 20,
            k = c.min(n)
        ));
    }
    let means: Vec<f32> = (0..c).map(|k| a.plane(k).iter().sum::<f32>() / n as f32).collect();
    let centred: Vec<f32> = (0..c).flat_map(|k| a.plane(k).iter().map(|v| v - means[k]).collect::<Vec<_>>()).collect();
    if !fits(c) {
        return Ok(eigen_cam_by_positions(&centred, c, n, a.width, a.height));
    }
    let mut gram = vec![0.0f64; c * c];
    for i in 0..c {
        for j in i..c {
            let dot: f64 = centred[i * n..(i + 1) * n].iter().zip(&centred[j * n..(j + 1) * n]).map(|(x, y)| (*x as f64) * (*y as f64)).sum();
            gram[i * c + j] = dot;
            gram[j * c + i] = dot;
        }
    }
    let v = top_eigenvector(&gram, c);
    let mut proj = vec![0.0f32; n];
    for k in 0..c {
        let vk = v[k] as f32;
        proj.iter_mut().zip(&centred[k * n..(k + 1) * n]).for_each(|(p, x)| *p += vk * x);
    }
    let peak = proj.iter().copied().fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    if peak < 0.0 {
        proj.iter_mut().for_each(|p| *p = -*p);
    }
    Ok(Map::new(a.width, a.height, proj))
}

/// The most bytes Eigen-CAM's Gram matrix (f64) may take: 256 MiB (C x C up to C = 5792).
pub const MAX_GRAM_BYTES: usize = 256 << 20;

/// Eigen-CAM through the n x n Gram matrix X X^T of the centred (n positions) x (c channels)
/// matrix: its top eigenvector u, eigenvalue lambda, give X v = sqrt(lambda) u.
fn eigen_cam_by_positions(centred: &[f32], c: usize, n: usize, width: usize, height: usize) -> Map {
    let mut gram = vec![0.0f64; n * n];
    for k in 0..c {
        let x = &centred[k * n..(k + 1) * n];
        for p in 0..n {
            let xp = x[p] as f64;
            gram[p * n + p..(p + 1) * n].iter_mut().zip(&x[p..]).for_each(|(g, &xq)| *g += xp * xq as f64);
        }
    }
    for p in 0..n {
        for q in 0..p {
            gram[p * n + q] = gram[q * n + p];
        }
    }
    let u = top_eigenvector(&gram, n);
    let lambda: f64 = (0..n).map(|p| u[p] * gram[p * n..(p + 1) * n].iter().zip(&u).map(|(g, x)| g * x).sum::<f64>()).sum();
    let sigma = lambda.max(0.0).sqrt();
    let mut proj: Vec<f32> = u.iter().map(|&x| (sigma * x) as f32).collect();
    let peak = proj.iter().copied().fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    if peak < 0.0 {
        proj.iter_mut().for_each(|p| *p = -*p);
    }
    Map::new(width, height, proj)
}

fn top_eigenvector(m: &[f64], c: usize) -> Vec<f64> {
    // Start from the row sums (never orthogonal to the top eigenvector of a PSD Gram matrix unless 0).
    let mut v: Vec<f64> = (0..c).map(|i| m[i * c..(i + 1) * c].iter().map(|x| x.abs()).sum::<f64>() + 1e-3).collect();
    for _ in 0..200 {
        let mut next: Vec<f64> = (0..c).map(|i| m[i * c..(i + 1) * c].iter().zip(&v).map(|(a, b)| a * b).sum()).collect();
        let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return v;
        }
        next.iter_mut().for_each(|x| *x /= norm);
        let delta: f64 = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
        v = next;
        if delta < 1e-10 {
            break;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_grams_give_the_same_map() {
        let (c, h, w) = (5, 3, 4);
        let data: Vec<f32> = (0..c * h * w).map(|i| ((i * 7919 % 97) as f32 / 97.0 - 0.3) * (1.0 + (i % 5) as f32)).collect();
        let a = FeatureMap::new(c, h, w, data);
        let by_channels = eigen_cam(&a).unwrap();
        let n = h * w;
        let means: Vec<f32> = (0..c).map(|k| a.plane(k).iter().sum::<f32>() / n as f32).collect();
        let centred: Vec<f32> = (0..c).flat_map(|k| a.plane(k).iter().map(|v| v - means[k]).collect::<Vec<_>>()).collect();
        let by_positions = eigen_cam_by_positions(&centred, c, n, w, h);
        for (x, y) in by_channels.data.iter().zip(&by_positions.data) {
            assert!((x - y).abs() < 1e-2 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }
}
