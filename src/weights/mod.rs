//! Weight files: safetensors (f32/f16/bf16, computed in f32) and the legacy `torch.save` format.
//!
//! A `WeightMap` hands out tensors by name with the shape the architecture expects, and remembers
//! which keys were taken so that a file with extra or missing keys is reported, not half-loaded.

pub mod legacy_pth;
pub mod safetensors_writer;

use crate::error::{Error, Result};
use crate::fail;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

/// One tensor of a weight file, converted to f32.
#[derive(Clone, Debug)]
pub struct Param {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// All tensors of a weight file by name, plus the bookkeeping of which ones the model used.
#[derive(Debug, Default)]
pub struct WeightMap {
    params: BTreeMap<String, Param>,
    taken: RefCell<BTreeSet<String>>,
}

/// The key suffixes that carry no weights (PyTorch's batch-norm step counter).
fn is_bookkeeping(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

impl WeightMap {
    pub fn from_params(params: impl IntoIterator<Item = (String, Param)>) -> Self {
        WeightMap { params: params.into_iter().collect(), taken: Default::default() }
    }

    /// Parses safetensors bytes. Integer tensors are only accepted for bookkeeping keys.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        use safetensors::tensor::{Dtype, SafeTensors};
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            Error::Weights(format!("not a readable safetensors file ({e}); expected the bytes of a .safetensors file"))
        })?;
        let mut params = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                _ if is_bookkeeping(&name) => continue,
                other => return fail!(Weights, "tensor '{name}' has dtype {other:?}; only F32, F16 and BF16 weights are supported"),
            };
            if is_bookkeeping(&name) {
                continue;
            }
            if data.is_empty() {
                return fail!(Weights, "tensor '{name}' has shape {shape:?} with no elements");
            }
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return fail!(Weights, "tensor '{name}' holds a non-finite value ({}) at flat index {i}; the file is corrupt or was saved after training diverged", data[i]);
            }
            params.insert(name, Param { shape, data });
        }
        if params.is_empty() {
            return fail!(Weights, "the file holds no float tensors");
        }
        Ok(Self::from_params(params))
    }

    /// Parses a legacy (pre-1.6) `torch.save` state dict.
    pub fn from_legacy_pth(bytes: &[u8]) -> Result<Self> {
        let tensors = legacy_pth::read_legacy_pth(bytes).map_err(Error::Weights)?;
        Ok(Self::from_params(
            tensors.into_iter().filter(|t| !is_bookkeeping(&t.name)).map(|t| (t.name, Param { shape: t.shape, data: t.data })),
        ))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.params.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.params.get(name).map(|p| p.shape.as_slice())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.keys().map(|s| s.as_str())
    }

    /// Takes a tensor that must exist, checking its shape. `None` in `expected` matches any size.
    pub fn take(&self, name: &str, expected: &[Option<usize>]) -> Result<&Param> {
        let p = self.params.get(name).ok_or_else(|| {
            Error::Weights(format!("missing tensor '{name}': the file does not fit this architecture (wrong --arch, or a model of another kind)"))
        })?;
        let fits = p.shape.len() == expected.len() && p.shape.iter().zip(expected).all(|(a, e)| e.map_or(true, |e| e == *a));
        if !fits {
            let want: Vec<String> = expected.iter().map(|e| e.map_or("*".into(), |v| v.to_string())).collect();
            return fail!(Weights, "tensor '{name}' has shape {:?} but this architecture needs [{}]", p.shape, want.join(", "));
        }
        self.taken.borrow_mut().insert(name.to_string());
        Ok(p)
    }

    /// Takes a tensor if present (e.g. an optional conv bias).
    pub fn take_optional(&self, name: &str, expected: &[Option<usize>]) -> Result<Option<&Param>> {
        if self.contains(name) {
            self.take(name, expected).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Keys the model never asked for: a sign that the file belongs to another architecture.
    pub fn untaken(&self) -> Vec<String> {
        let taken = self.taken.borrow();
        self.params.keys().filter(|k| !taken.contains(*k)).cloned().collect()
    }
}
