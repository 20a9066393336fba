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
    pub const EIGEN_GRAD_CAM: Method = Method(&MethodDef {
        name: "eigengradcam",
        aliases: &[],
        label: "EigenGrad-CAM",
        help: "First principal component of gradient times activation: Eigen-CAM made class-specific.",
        needs: Needs::LAYER_GRADIENT,
        grid: Grid::Layer,
        sign: Sign::AsComputed,
        compute: |e| Ok(eigen_grad_cam(e.activations, e.layer_gradient()?).map_err(crate::error::Error::Option)?.into()),
    });
    pub const KPCA_CAM: Method = Method(&MethodDef {
        name: "kpcacam",
        aliases: &["kpca"],
        label: "KPCA-CAM",
        help: "First kernel principal component (sigmoid kernel) of the activations: class-agnostic, gradient-free.",
        needs: Needs::NOTHING,
        grid: Grid::Layer,
        sign: Sign::AsComputed,
        compute: |e| Ok(kpca_cam(e.activations).map_err(crate::error::Error::Option)?.into()),
    });
}

/// EigenGrad-CAM (pytorch-grad-cam's `EigenGradCAM`): Eigen-CAM's projection of dy/dA (.) A.
pub fn eigen_grad_cam(a: &FeatureMap, g: &FeatureMap) -> Result<Map, String> {
    let product: Vec<f32> = a.data.iter().zip(&g.data).map(|(x, y)| x * y).collect();
    eigen_cam(&FeatureMap::new(a.channels, a.height, a.width, product))
}

/// KPCA-CAM (Karmani et al.; pytorch-grad-cam's `KPCA_CAM` with its defaults): the positions' C-channel
/// vectors, centred per channel, projected on the first component of kernel PCA with the sigmoid kernel
/// k(x, y) = tanh(gamma <x, y> + 1), gamma = 1 / C (scikit-learn's `KernelPCA` defaults). The kernel
/// matrix K (n x n, n = H * W) is centred in feature space, K - 1K - K1 + 1K1 (1: the n x n matrix of
/// 1/n); its eigenvector u of largest eigenvalue lambda gives the map u sqrt(lambda) (0 when lambda
/// <= 0), signed so that its largest-magnitude value is positive (scikit-learn's `svd_flip` rule).
/// The n x n matrix (f64) is checked against [`MAX_GRAM_BYTES`] before it is allocated.
pub fn kpca_cam(a: &FeatureMap) -> Result<Map, String> {
    let (c, n) = (a.channels, a.plane_len());
    if n.checked_mul(n).and_then(|nn| nn.checked_mul(8)).is_none_or(|b| b > MAX_GRAM_BYTES) {
        return Err(format!("KPCA-CAM of a {} x {} map needs a {n} x {n} kernel matrix, over its {} MiB budget; pick a layer with a smaller map", a.width, a.height, MAX_GRAM_BYTES >> 20));
    }
    let means: Vec<f64> = (0..c).map(|k| a.plane(k).iter().map(|&v| v as f64).sum::<f64>() / n as f64).collect();
    let gamma = 1.0 / c.max(1) as f64;
    let _kernel = crate::budget::reserve((n * n * 8) as u64, || format!("KPCA-CAM's {n} x {n} kernel matrix")).map_err(|e| e.to_string())?;
    let mut kernel = vec![0.0f64; n * n];
    for (k, mean) in means.iter().enumerate() {
        let x: Vec<f64> = a.plane(k).iter().map(|&v| v as f64 - mean).collect();
        for p in 0..n {
            kernel[p * n + p..(p + 1) * n].iter_mut().zip(&x[p..]).for_each(|(g, xq)| *g += x[p] * xq);
        }
    }
    for p in 0..n {
        for q in p..n {
            let v = (gamma * kernel[p * n + q] + 1.0).tanh();
            kernel[p * n + q] = v;
            kernel[q * n + p] = v;
        }
    }
    let row_means: Vec<f64> = (0..n).map(|p| kernel[p * n..(p + 1) * n].iter().sum::<f64>() / n as f64).collect();
    let all_mean = row_means.iter().sum::<f64>() / n as f64;
    for p in 0..n {
        for q in 0..n {
            kernel[p * n + q] += all_mean - row_means[p] - row_means[q];
        }
    }
    // The sigmoid kernel is not positive semi-definite: the eigenvalue of largest magnitude may be
    // negative. Then shifting by its magnitude makes the largest (algebraic) eigenvalue the largest.
    let mut u = top_eigenvector(&kernel, n);
    let rayleigh = |u: &[f64], m: &[f64]| (0..n).map(|p| u[p] * m[p * n..(p + 1) * n].iter().zip(u).map(|(g, x)| g * x).sum::<f64>()).sum::<f64>();
    let mut lambda = rayleigh(&u, &kernel);
    if lambda < 0.0 {
        let shift = -lambda;
        (0..n).for_each(|p| kernel[p * n + p] += shift);
        u = top_eigenvector(&kernel, n);
        lambda = rayleigh(&u, &kernel) - shift;
    }
    let sigma = lambda.max(0.0).sqrt();
    let mut proj: Vec<f32> = u.iter().map(|&x| (sigma * x) as f32).collect();
    let peak = proj.iter().copied().fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    if peak < 0.0 {
        proj.iter_mut().for_each(|p| *p = -*p);
    }
    Ok(Map::new(a.width, a.height, proj))
}

/// Projects the (H*W) x C activation matrix, centred per channel, on its top right-singular vector,
/// found by power iteration on the C x C Gram matrix. The SVD's sign is arbitrary; we pick the sign
/// that makes the map's largest-magnitude value positive, so the result does not flip between runs.
///
/// The C x C Gram matrix (f64) is bounded by [`MAX_GRAM_BYTES`], checked before it is allocated. A
/// layer with more channels than positions (or more than that bound allows) uses the (H*W) x (H*W)
/// Gram of the same matrix instead (its top eigenvector u gives the same projection,
/// sqrt(lambda) * u) when that one fits; when neither fits, an error says so.
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
    // The smaller Gram gives the same map: the positions' whenever there are fewer positions than
    // channels (a 7 x 7 map of 1280 channels: 49 x 49 instead of 1280 x 1280, ~20x less work).
    let by_positions = !fits(c) || (n < c && fits(n));
    let k = if by_positions { n } else { c };
    let _gram = crate::budget::reserve((k * k * 8) as u64, || format!("Eigen-CAM's {k} x {k} Gram matrix")).map_err(|e| e.to_string())?;
    if by_positions {
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
