//! Writes `RawTensor`s as a `.safetensors` file (in memory), stored as F32 or F16.

use std::collections::{HashMap, HashSet};

use safetensors::tensor::{Dtype, TensorView};

use super::legacy_pth::RawTensor;

/// Element type of the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreAs {
    F32,
    F16,
}

/// Serializes the tensors (names must be unique, `data.len()` must equal the shape's product)
/// with optional `__metadata__` string pairs (keys must be unique). F16 rejects finite values
/// beyond f16's range (±65504) rather than writing infinities.
pub fn write_safetensors(tensors: &[RawTensor], dtype: StoreAs, metadata: &[(String, String)]) -> Result<Vec<u8>, String> {
    let mut names = HashSet::with_capacity(tensors.len());
    let mut buffers: Vec<Vec<u8>> = Vec::with_capacity(tensors.len());
    for t in tensors {
        if !names.insert(t.name.as_str()) {
            return Err(format!("tensor name '{}' appears twice", t.name));
        }
        let numel = t.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| format!("tensor '{}': shape {:?} overflows", t.name, t.shape))?;
        if numel != t.data.len() {
            return Err(format!("tensor '{}': shape {:?} has {numel} elements but data has {}", t.name, t.shape, t.data.len()));
        }
        let bytes = match dtype {
            StoreAs::F32 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StoreAs::F16 => {
                let mut b = Vec::with_capacity(t.data.len() * 2);
                for (i, &v) in t.data.iter().enumerate() {
                    let h = half::f16::from_f32(v);
                    if v.is_finite() && h.is_infinite() {
                        return Err(format!("tensor '{}': value {v} at index {i} is outside the f16 range; store as F32", t.name));
                    }
                    b.extend_from_slice(&h.to_le_bytes());
                }
                b
            }
        };
        buffers.push(bytes);
    }
    let st_dtype = match dtype {
        StoreAs::F32 => Dtype::F32,
        StoreAs::F16 => Dtype::F16,
    };
    let views = tensors
        .iter()
        .zip(&buffers)
        .map(|(t, b)| TensorView::new(st_dtype, t.shape.clone(), b).map(|v| (t.name.as_str(), v)).map_err(|e| format!("tensor '{}': {e}", t.name)))
        .collect::<Result<Vec<_>, String>>()?;
    let info = if metadata.is_empty() {
        None
    } else {
        let mut map = HashMap::with_capacity(metadata.len());
        for (k, v) in metadata {
            if map.insert(k.clone(), v.clone()).is_some() {
                return Err(format!("metadata key '{k}' appears twice"));
            }
        }
        Some(map)
    };
    safetensors::tensor::serialize(views, info).map_err(|e| format!("safetensors serialization failed: {e}"))
}
