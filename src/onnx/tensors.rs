//! Initializers and constants: every byte length is checked against the tensor's dims and dtype
//! before anything is allocated, and external data (`location`, `offset`, `length`) against the
//! real length of the `.onnx.data` buffer.

use super::proto::TensorProto;
use crate::error::{Error, Result};
use crate::fail;

/// The most tensor elements one import decodes (all initializers and constants together): 1.6 GB
/// of f32, more than VGG-19 (144M parameters) needs.
pub const MAX_PARAMETERS: usize = 400_000_000;

#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A constant tensor: an initializer, a `Constant` node, or a folded shape computation.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub dims: Vec<usize>,
    pub data: Data,
}

impl Const {
    pub fn f32(dims: Vec<usize>, data: Vec<f32>) -> Const {
        Const { dims, data: Data::F32(data) }
    }

    pub fn i64(dims: Vec<usize>, data: Vec<i64>) -> Const {
        Const { dims, data: Data::I64(data) }
    }

    pub fn numel(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    pub fn is_int(&self) -> bool {
        matches!(self.data, Data::I64(_))
    }

    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The values as integers (floats only when they are whole numbers).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match &self.data {
            Data::I64(v) => Some(v.clone()),
            Data::F32(v) => v.iter().map(|&x| (x.fract() == 0.0 && x.abs() < 9.0e15).then_some(x as i64)).collect(),
        }
    }

    pub fn scalar_f32(&self) -> Option<f32> {
        (self.numel() == 1).then(|| self.to_f32()[0])
    }

    /// Refuses NaN and infinities in a weight, naming the tensor.
    pub fn check_finite(&self, name: &str) -> Result<()> {
        if let Data::F32(v) = &self.data {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return fail!(Weights, "tensor '{name}' holds a non-finite value ({}) at flat index {i}; the file is corrupt or was exported after training diverged", v[i]);
            }
        }
        Ok(())
    }
}

/// The values as f32, moved out when no one else holds the constant.
pub fn into_f32(c: std::rc::Rc<Const>) -> Vec<f32> {
    match std::rc::Rc::try_unwrap(c) {
        Ok(Const { data: Data::F32(v), .. }) => v,
        Ok(other) => other.to_f32(),
        Err(shared) => shared.to_f32(),
    }
}

/// ONNX TensorProto.DataType codes.
mod dtype {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const UINT32: i32 = 12;
    pub const UINT64: i32 = 13;
    pub const BFLOAT16: i32 = 16;
}

pub fn dtype_name(t: i32) -> &'static str {
    match t {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        12 => "uint32",
        13 => "uint64",
        14 => "complex64",
        15 => "complex128",
        16 => "bfloat16",
        17..=20 => "float8",
        21 | 22 => "int4",
        _ => "an unknown type",
    }
}

/// Bytes per element of the dtypes this importer reads.
fn element_bytes(t: i32) -> Option<usize> {
    use dtype::*;
    Some(match t {
        UINT8 | INT8 | BOOL => 1,
        UINT16 | INT16 | FLOAT16 | BFLOAT16 => 2,
        FLOAT | INT32 | UINT32 => 4,
        INT64 | DOUBLE | UINT64 => 8,
        _ => return None,
    })
}

const EXTERNAL: i32 = 1;

fn external_field<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data.iter().find(|e| e.key == key).map(|e| e.value.as_str())
}

/// The one external data file the initializers refer to, if any. Several files are refused.
pub fn external_location(inits: &[TensorProto]) -> Result<Option<String>> {
    let mut found: Option<&str> = None;
    for t in inits.iter().filter(|t| t.data_location == EXTERNAL) {
        let Some(loc) = external_field(t, "location") else {
            return fail!(Weights, "tensor '{}' is stored as external data but names no location", t.name);
        };
        match found {
            Some(f) if f != loc => {
                return fail!(
                    Weights,
                    "the weights are spread over several external files ('{f}', '{loc}', ...); only one .onnx.data file is supported: re-save the model with all tensors in one file"
                )
            }
            _ => found = Some(loc),
        }
    }
    Ok(found.map(str::to_string))
}

/// Counts the elements decoded so far against `MAX_PARAMETERS`.
#[derive(Default)]
pub struct Budget {
    pub elements: usize,
}

/// Where a tensor's values are, once its dims, dtype and byte length have been checked.
struct Located<'t> {
    dims: Vec<usize>,
    numel: usize,
    /// Little-endian bytes (raw_data or a slice of the external data); `None`: the typed fields.
    raw: Option<&'t [u8]>,
}

fn locate<'t>(t: &'t TensorProto, external: Option<&'t [u8]>) -> Result<Located<'t>> {
    let name = if t.name.is_empty() { "(unnamed constant)" } else { t.name.as_str() };
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return fail!(Weights, "tensor '{name}' has a negative dimension in {:?}: the file is corrupt", t.dims);
        }
        dims.push(d as usize);
    }
    let numel = match dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
        Some(n) if n <= MAX_PARAMETERS => n,
        _ => return fail!(Weights, "tensor '{name}' has shape {dims:?}: more elements than this importer accepts ({MAX_PARAMETERS})"),
    };
    let Some(size) = element_bytes(t.data_type) else {
        return fail!(Weights, "tensor '{name}' has dtype {} ({}); weights must be float32, float16, bfloat16 or float64 (and shapes int64)", dtype_name(t.data_type), t.data_type);
    };
    let nbytes = numel * size; // numel <= 4e8 and size <= 8: no overflow
    let raw = if t.data_location == EXTERNAL {
        let loc = external_field(t, "location").unwrap_or("");
        let Some(file) = external else {
            return fail!(Weights, "this ONNX file keeps its weights in '{loc}' (external data); pass that file too");
        };
        let parse = |key: &str| -> Result<Option<u64>> {
            match external_field(t, key) {
                None => Ok(None),
                Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| Error::Weights(format!("tensor '{name}' has an external-data {key} '{v}' that is not a number"))),
            }
        };
        let offset = parse("offset")?.unwrap_or(0);
        if let Some(len) = parse("length")? {
            if len != nbytes as u64 {
                return fail!(Weights, "tensor '{name}' (dtype {}, shape {dims:?}) needs {nbytes} bytes but its external-data length says {len}: the file is corrupt", dtype_name(t.data_type));
            }
        }
        match offset.checked_add(nbytes as u64) {
            Some(end) if end <= file.len() as u64 => Some(&file[offset as usize..end as usize]),
            _ => {
                return fail!(
                    Weights,
                    "tensor '{name}' is stored at bytes {offset}..{} of '{loc}', but the external data given has only {} bytes: it is truncated or belongs to another export",
                    offset.saturating_add(nbytes as u64),
                    file.len()
                )
            }
        }
    } else if !t.raw_data.is_empty() || numel == 0 {
        if t.raw_data.len() != nbytes {
            return fail!(Weights, "tensor '{name}' (dtype {}, shape {dims:?}) needs {nbytes} bytes but holds {}: the file is truncated or corrupt", dtype_name(t.data_type), t.raw_data.len());
        }
        Some(t.raw_data.as_slice())
    } else {
        use dtype::*;
        let have = match t.data_type {
            FLOAT => t.float_data.len(),
            DOUBLE => t.double_data.len(),
            INT64 => t.int64_data.len(),
            UINT32 | UINT64 => t.uint64_data.len(),
            _ => t.int32_data.len(),
        };
        if have != numel {
            return fail!(Weights, "tensor '{name}' (dtype {}, shape {dims:?}) needs {numel} values but holds {have}: the file is truncated or corrupt", dtype_name(t.data_type));
        }
        None
    };
    Ok(Located { dims, numel, raw })
}

/// Checks every initializer (dims, dtype, byte length, external-data range) before any is
/// decoded, and the total against `MAX_PARAMETERS`.
pub fn check_all(inits: &[TensorProto], external: Option<&[u8]>) -> Result<()> {
    let mut total = 0usize;
    for t in inits {
        total += locate(t, external)?.numel;
        if total > MAX_PARAMETERS {
            return fail!(Weights, "the model holds more than {MAX_PARAMETERS} weight elements; it is too large to import here");
        }
    }
    Ok(())
}

/// Decodes one tensor to f32 (float types) or i64 (integer types), checking sizes first.
pub fn decode(t: &TensorProto, external: Option<&[u8]>, budget: &mut Budget) -> Result<Const> {
    let l = locate(t, external)?;
    budget.elements += l.numel;
    if budget.elements > MAX_PARAMETERS {
        return fail!(Weights, "the model holds more than {MAX_PARAMETERS} weight elements; it is too large to import here");
    }
    let name = if t.name.is_empty() { "(unnamed constant)" } else { t.name.as_str() };
    crate::budget::reserve_floats(l.numel, || format!("tensor '{name}' ({} values)", l.numel))?.keep();
    Ok(match l.raw {
        Some(raw) => from_le_bytes(t.data_type, l.dims, raw),
        None => typed_fields(t, l.dims),
    })
}

fn from_le_bytes(data_type: i32, dims: Vec<usize>, raw: &[u8]) -> Const {
    use dtype::*;
    let f32s = |v: Vec<f32>| Const::f32(dims.clone(), v);
    let i64s = |v: Vec<i64>| Const::i64(dims.clone(), v);
    match data_type {
        FLOAT => f32s(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
        FLOAT16 => f32s(raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        BFLOAT16 => f32s(raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        DOUBLE => f32s(raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()),
        INT64 => i64s(raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()),
        UINT64 => i64s(raw.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as i64).collect()),
        INT32 => i64s(raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64).collect()),
        UINT32 => i64s(raw.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64).collect()),
        INT16 => i64s(raw.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as i64).collect()),
        UINT16 => i64s(raw.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as i64).collect()),
        INT8 => i64s(raw.iter().map(|&b| b as i8 as i64).collect()),
        _ => i64s(raw.iter().map(|&b| b as i64).collect()), // UINT8, BOOL
    }
}

/// A tensor whose values sit in the typed repeated fields (small constants, older exporters);
/// their count was checked by `locate`.
fn typed_fields(t: &TensorProto, dims: Vec<usize>) -> Const {
    use dtype::*;
    match t.data_type {
        FLOAT => Const::f32(dims, t.float_data.clone()),
        DOUBLE => Const::f32(dims, t.double_data.iter().map(|&v| v as f32).collect()),
        FLOAT16 => Const::f32(dims, t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16).to_f32()).collect()),
        BFLOAT16 => Const::f32(dims, t.int32_data.iter().map(|&v| half::bf16::from_bits(v as u16).to_f32()).collect()),
        INT64 => Const::i64(dims, t.int64_data.clone()),
        UINT32 | UINT64 => Const::i64(dims, t.uint64_data.iter().map(|&v| v as i64).collect()),
        _ => Const::i64(dims, t.int32_data.iter().map(|&v| v as i64).collect()),
    }
}
