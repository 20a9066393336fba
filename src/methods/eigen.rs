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
        compute: |e| Ok(eigen_cam(e.activations).into()),
    });
}

/// Projects the (H*W) x C activation matrix, centred per channel, on its top right-singular vector,
/// found by power iteration on the C x C Gram matrix. The SVD's sign is arbitrary; we pick the sign
/// that makes the map's largest-magnitude value positive, so the result does not flip between runs.
pub fn eigen_cam(a: &FeatureMap) -> Map {
    let (c, n) = (a.channels, a.plane_len());
    let means: Vec<f32> = (0..c).map(|k| a.plane(k).iter().sum::<f32>() / n as f32).collect();
    let centred: Vec<f32> = (0..c).flat_map(|k| a.plane(k).iter().map(|v| v - means[k]).collect::<Vec<_>>()).collect();
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
    Map::new(a.width, a.height, proj)
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
