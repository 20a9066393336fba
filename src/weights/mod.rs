//! Weight files: safetensors (f32/f16/bf16, computed in f32) and `torch.save` files, both the
//! zip format (PyTorch >= 1.6) and the legacy one. `WeightMap::from_bytes` tells them apart.
//!
//! A `WeightMap` hands out tensors by name with the shape the architecture expects, and remembers
//! which keys were taken so that a file with extra or missing keys is reported, not half-loaded.

pub mod legacy_pth;
pub mod safetensors_writer;
pub mod zip_pth;
pub mod zip_reader;

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
///
/// `take` moves a tensor's data out (to the graph, which folds batch-norm into it in place), so
/// loading holds each weight once: the map's copy never lives beside the graph's.
#[derive(Debug, Default)]
pub struct WeightMap {
    params: BTreeMap<String, Param>,
    /// The data of the tensors not taken yet, by name.
    data: RefCell<BTreeMap<String, Vec<f32>>>,
    taken: RefCell<BTreeSet<String>>,
}

/// The key suffixes that carry no weights (PyTorch's batch-norm step counter).
fn is_bookkeeping(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// The prefix `nn.DataParallel` / `DistributedDataParallel` put on every key of a wrapped model.
const DATA_PARALLEL_PREFIX: &str = "module.";

/// Strips `module.` from every name when every name has it (a state dict saved from a
/// DataParallel-wrapped model), so that such files load like the unwrapped model's.
fn strip_data_parallel_prefix(params: &mut [(String, Param)]) {
    if !params.is_empty() && params.iter().all(|(n, _)| n.starts_with(DATA_PARALLEL_PREFIX)) {
        for (n, _) in params.iter_mut() {
            n.drain(..DATA_PARALLEL_PREFIX.len());
        }
    }
}

impl WeightMap {
    /// A map of these tensors. Names that all start with `module.` (DataParallel) lose it.
    pub fn from_params(params: impl IntoIterator<Item = (String, Param)>) -> Self {
        let mut params: Vec<(String, Param)> = params.into_iter().collect();
        strip_data_parallel_prefix(&mut params);
        let mut shapes = BTreeMap::new();
        let mut data = BTreeMap::new();
        for (name, p) in params {
            data.insert(name.clone(), p.data);
            shapes.insert(name, Param { shape: p.shape, data: Vec::new() });
        }
        WeightMap { params: shapes, data: RefCell::new(data), taken: Default::default() }
    }

    /// Parses a weight file of any supported format, told apart by its first bytes: a zip-format
    /// `torch.save` file (PyTorch >= 1.6), a legacy one, else safetensors.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if zip_pth::is_zip(bytes) {
            Self::from_zip_pth(bytes)
        } else if legacy_pth::is_legacy_pth(bytes) {
            Self::from_legacy_pth(bytes)
        } else {
            Self::from_safetensors(bytes)
        }
    }

    /// Parses safetensors bytes. Integer tensors are only accepted for bookkeeping keys.
    ///
    /// The header is checked by `check_safetensors_header` first, so that a truncated or hostile
    /// file is reported by what is wrong with it (and nothing is allocated from a size it claims).
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        use safetensors::tensor::{Dtype, SafeTensors};
        check_safetensors_header(bytes)?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Weights(format!("not a readable safetensors file ({e}); expected the bytes of a .safetensors file")))?;
        let mut params = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let raw = view.data();
            let numel = shape.iter().product::<usize>();
            crate::budget::reserve_floats(numel, || format!("tensor '{name}' ({numel} values)"))?.keep();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                _ if is_bookkeeping(&name) => continue,
                other => return fail!(Weights, "tensor '{name}' has dtype {other:?}; only F32, F16 and BF16 weights are supported (save the weights as float32, e.g. with `tensor.float()`)"),
            };
            if is_bookkeeping(&name) {
                continue;
            }
            check_values(&name, &shape, &data)?;
            params.insert(name, Param { shape, data });
        }
        if params.is_empty() {
            return fail!(Weights, "the file holds no float tensors");
        }
        Ok(Self::from_params(params))
    }

    /// Parses a legacy (pre-1.6) `torch.save` state dict, with the same value checks as safetensors.
    pub fn from_legacy_pth(bytes: &[u8]) -> Result<Self> {
        let tensors = legacy_pth::read_legacy_pth(bytes).map_err(|e| Error::Weights(format!("not a readable legacy .pth file: {e}")))?;
        Self::from_torch_tensors(tensors, "legacy .pth")
    }

    /// Parses a zip-format (PyTorch >= 1.6) `torch.save` state dict, with the same value checks
    /// as safetensors.
    pub fn from_zip_pth(bytes: &[u8]) -> Result<Self> {
        let tensors = zip_pth::read_zip_pth(bytes).map_err(|e| Error::Weights(format!("not a readable zip-format .pth file: {e}")))?;
        Self::from_torch_tensors(tensors, "zip-format .pth")
    }

    /// The float tensors of a `torch.save` file, bookkeeping dropped and values checked.
    fn from_torch_tensors(tensors: Vec<legacy_pth::RawTensor>, format: &str) -> Result<Self> {
        let mut params = Vec::with_capacity(tensors.len());
        for t in tensors.into_iter().filter(|t| !is_bookkeeping(&t.name)) {
            check_values(&t.name, &t.shape, &t.data)?;
            params.push((t.name, Param { shape: t.shape, data: t.data }));
        }
        if params.is_empty() {
            return fail!(Weights, "the {format} file holds no float tensors");
        }
        Ok(Self::from_params(params))
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

    /// Checks that a tensor exists with the shape the architecture expects. `None` in `expected`
    /// matches any size.
    pub fn check(&self, name: &str, expected: &[Option<usize>]) -> Result<&[usize]> {
        let p = self.params.get(name).ok_or_else(|| Error::Weights(format!("missing tensor '{name}': the file does not fit this architecture (wrong --arch, or a model of another kind)")))?;
        let fits = p.shape.len() == expected.len() && p.shape.iter().zip(expected).all(|(a, e)| e.is_none_or(|e| e == *a));
        if !fits {
            let want: Vec<String> = expected.iter().map(|e| e.map_or("*".into(), |v| v.to_string())).collect();
            return fail!(Weights, "tensor '{name}' has shape {:?} but this architecture needs [{}]", p.shape, want.join(", "));
        }
        Ok(&p.shape)
    }

    /// Takes a tensor that must exist, checking its shape, and moves its data out of the map.
    pub fn take(&self, name: &str, expected: &[Option<usize>]) -> Result<Param> {
        let shape = self.check(name, expected)?.to_vec();
        let data = self.data.borrow_mut().remove(name).ok_or_else(|| Error::Internal(format!("tensor '{name}' was taken twice")))?;
        self.taken.borrow_mut().insert(name.to_string());
        Ok(Param { shape, data })
    }

    /// Takes a tensor if present (e.g. an optional conv bias).
    pub fn take_optional(&self, name: &str, expected: &[Option<usize>]) -> Result<Option<Param>> {
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

/// Refuses empty tensors and non-finite values, naming the tensor.
fn check_values(name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
    if data.is_empty() {
        return fail!(Weights, "tensor '{name}' has shape {shape:?} with no elements (a zero-size tensor); the file is corrupt or not a trained model");
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return fail!(Weights, "tensor '{name}' holds a non-finite value ({}) at flat index {i}; the file is corrupt or was saved after training diverged", data[i]);
    }
    Ok(())
}

/// What the header says about one tensor (only the fields that locate its bytes).
#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Bytes per element of the safetensors dtypes whose size is a whole number of bytes.
fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// The header's tensor entries in file order; a name given twice is an error (serde would keep
/// only the last one silently).
struct HeaderEntries(Vec<(String, HeaderEntry)>);

impl<'de> serde::Deserialize<'de> for HeaderEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HeaderEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object mapping tensor names to {dtype, shape, data_offsets}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<HeaderEntries, A::Error> {
                use serde::de::Error as _;
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if !seen.insert(name.clone()) {
                        return Err(A::Error::custom(format!("DUPLICATE:{name}")));
                    }
                    if name == "__metadata__" {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        continue;
                    }
                    let entry: HeaderEntry = map.next_value().map_err(|e| A::Error::custom(format!("entry '{name}': {e}")))?;
                    out.push((name, entry));
                }
                Ok(HeaderEntries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The largest header the safetensors crate reads (100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Checks the framing and the header of a safetensors file against the file's real size, with a
/// message that says what is wrong: too short, truncated, header not JSON, a name given twice, a
/// tensor whose bytes lie past the end of the file or do not match its dtype and shape.
pub fn check_safetensors_header(bytes: &[u8]) -> Result<()> {
    let len = bytes.len() as u64;
    if bytes.is_empty() {
        return fail!(Weights, "the weight file is empty (0 bytes); expected a .safetensors, .pth or .onnx file");
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return fail!(
            Weights,
            "this is a zip-format PyTorch file (torch.save since 1.6), not safetensors: load it with WeightMap::from_bytes (which reads zip .pth files), or convert it to .safetensors"
        );
    }
    if bytes.len() < 8 {
        return fail!(Weights, "the file is only {len} bytes: too short for a safetensors file (an 8-byte header length, then a JSON header); it is truncated or not a weight file");
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > len - 8 {
        return fail!(Weights, "the safetensors header length field says {n} bytes but only {} bytes follow it: the file is truncated or not a safetensors file", len - 8);
    }
    if n > MAX_HEADER_BYTES {
        return fail!(Weights, "the safetensors header is {n} bytes, more than the {MAX_HEADER_BYTES} the format allows: the file is corrupt or not a safetensors file");
    }
    let header = &bytes[8..8 + n as usize];
    let text = std::str::from_utf8(header).map_err(|e| Error::Weights(format!("the safetensors header is not UTF-8 text ({e}): the file is corrupt or not a safetensors file")))?;
    let entries: HeaderEntries = serde_json::from_str(text).map_err(|e| {
        let m = e.to_string();
        match m.strip_prefix("DUPLICATE:") {
            Some(rest) => {
                let name = rest.split(" at line ").next().unwrap_or(rest);
                Error::Weights(format!("the safetensors header lists tensor '{name}' twice (duplicate key); each name must appear once: the file was edited by hand or written by a broken tool"))
            }
            None => Error::Weights(format!("the safetensors header is not valid JSON of the expected form ({m}): the file is corrupt or not a safetensors file")),
        }
    })?;
    let data_len = len - 8 - n;
    for (name, e) in &entries.0 {
        let (start, end) = e.data_offsets;
        if start > end {
            return fail!(Weights, "tensor '{name}' has data_offsets [{start}, {end}] that run backwards: the header is corrupt");
        }
        if end > data_len {
            return fail!(Weights, "tensor '{name}' claims bytes {start}..{end} of the data section but the file holds only {data_len} data bytes: the file is truncated or its header is corrupt");
        }
        if let Some(size) = dtype_bytes(&e.dtype) {
            let needed = e.shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
            if needed != Some(end - start) {
                let needed = needed.map_or("more than 2^64".to_string(), |v| v.to_string());
                return fail!(Weights, "tensor '{name}' (dtype {}, shape {:?}) needs {needed} bytes but its data_offsets span {} bytes: the header is corrupt", e.dtype, e.shape, end - start);
            }
        }
    }
    Ok(())
}
