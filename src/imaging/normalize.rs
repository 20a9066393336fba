//! Min-max scaling of a class-activation map to [0, 1] for display, and the softmax of scores.
//!
//! Decisions:
//! - A constant map (max == min, e.g. all zeros after Grad-CAM's ReLU when the
//!   class has no positive evidence) becomes all zeros, not NaN: "nothing to
//!   show" rather than a division by zero.
//! - A NaN or infinity in the map is an error and the map is left untouched:
//!   it means the gradients blew up, and silently skipping it would draw a
//!   plausible-looking but wrong heatmap.
//! - No ReLU here; Grad-CAM applies it before calling this.

/// Finds (min, max) over the selected values; error on the first non-finite one.
fn finite_range<'a>(values: impl Iterator<Item = (usize, &'a f32)>) -> Result<Option<(f32, f32)>, String> {
    let mut range: Option<(f32, f32)> = None;
    for (i, &v) in values {
        if !v.is_finite() {
            return Err(format!("map value at index {i} is {v}: the map must be finite (did the gradients overflow?)"));
        }
        range = Some(match range {
            None => (v, v),
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
        });
    }
    Ok(range)
}

/// Maps `v` from [lo, hi] to [0, 1]; f64 so `hi - lo` cannot overflow.
fn scale(v: f32, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        ((v as f64 - lo as f64) / (hi as f64 - lo as f64)) as f32
    } else {
        0.0
    }
}

/// (x - min) / (max - min) in place. Constant input -> all zeros; any
/// non-finite value -> error, values unchanged. Empty input is fine.
pub fn min_max(values: &mut [f32]) -> Result<(), String> {
    if let Some((lo, hi)) = finite_range(values.iter().enumerate())? {
        values.iter_mut().for_each(|v| *v = scale(*v, lo, hi));
    }
    Ok(())
}

/// Like [`min_max`], but min and max come only from values where `mask` is
/// true (the crop the network saw); values outside the mask become 0 and may
/// be anything, NaN included.
pub fn min_max_masked(values: &mut [f32], mask: &[bool]) -> Result<(), String> {
    if mask.len() != values.len() {
        return Err(format!("mask length mismatch: expected {}, got {}", values.len(), mask.len()));
    }
    let selected = values.iter().enumerate().filter(|(i, _)| mask[*i]);
    let range = finite_range(selected)?;
    for (v, &m) in values.iter_mut().zip(mask) {
        *v = match (m, range) {
            (true, Some((lo, hi))) => scale(*v, lo, hi),
            _ => 0.0,
        };
    }
    Ok(())
}

/// exp(x - max) / sum: probabilities from logits (Score-CAM's channel weights from scores too).
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let peak = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = x.iter().map(|l| (l - peak).exp()).collect();
    let total: f32 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_to_unit_range() {
        let mut v = [2.0, 4.0, 3.0, 6.0];
        min_max(&mut v).unwrap();
        assert_eq!(v, [0.0, 0.5, 0.25, 1.0]);
        let mut v = [-1.0, 1.0];
        min_max(&mut v).unwrap();
        assert_eq!(v, [0.0, 1.0]);
    }

    #[test]
    fn constant_becomes_zero() {
        let mut v = [3.0; 5];
        min_max(&mut v).unwrap();
        assert_eq!(v, [0.0; 5]);
        let mut empty: [f32; 0] = [];
        min_max(&mut empty).unwrap();
    }

    #[test]
    fn extreme_range_does_not_overflow() {
        let mut v = [-3e38, 0.0, 3e38];
        min_max(&mut v).unwrap();
        assert_eq!(v, [0.0, 0.5, 1.0]);
    }

    #[test]
    fn non_finite_is_an_error_and_leaves_values() {
        let mut v = [1.0, f32::NAN, 2.0];
        let e = min_max(&mut v).unwrap_err();
        assert!(e.contains("index 1") && e.contains("NaN"), "{e}");
        assert_eq!((v[0], v[2]), (1.0, 2.0));
        assert!(min_max(&mut [0.0, f32::INFINITY]).unwrap_err().contains("inf"));
    }

    #[test]
    fn masked_uses_only_the_crop() {
        let mut v = [100.0, 1.0, 3.0, f32::NAN];
        min_max_masked(&mut v, &[false, true, true, false]).unwrap();
        assert_eq!(v, [0.0, 0.0, 1.0, 0.0]);
        let mut v = [1.0, f32::NAN];
        assert!(min_max_masked(&mut v, &[true, true]).is_err());
        assert!(min_max_masked(&mut v, &[true]).unwrap_err().contains("expected 2, got 1"));
    }
}
