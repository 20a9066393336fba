//! Reader for LEGACY (PyTorch < 1.6, non-zip) `torch.save` files, from bytes.
//!
//! Layout of such a file (see `torch/serialization.py`, `_legacy_save`):
//! 1. pickle: the magic number 0x1950a86a20f9469cfc6c (a LONG1),
//! 2. pickle: the protocol version (1001),
//! 3. pickle: sys info (`{'protocol_version': 1001, 'little_endian': True, 'type_sizes': {...}}`),
//! 4. pickle: the object that was saved; for us a state dict (an `OrderedDict` of
//!    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`),
//!    storages being persistent ids `('storage', torch.FloatStorage, key, location, numel[, view])`,
//! 5. pickle: the list of storage keys,
//! 6. for each key, in that order: u64 LE element count, then the raw little-endian elements.
//!
//! The pickle machine here is our own, deliberately small one rather than
//! `candle_core::pickle::Stack`: that one panics on LONG1 values wider than 8 bytes (the magic
//! number is 10 bytes), allocates whatever a BINUNICODE length claims, deep-clones memo entries
//! on every GET (exponential memory for a few bytes of input) and drops nested objects
//! recursively. Here objects live in an arena and refer to each other by index, every length is
//! checked against the bytes that remain, and nothing recurses over attacker-controlled depth.
//! Every malformed input gives an `Err(String)` saying what is wrong and where.
//!
//! The zip format (`zip_pth`) pickles the state dict the same way and keeps each storage in its
//! own zip entry instead of after the pickles: `read_state_dict_pickle` is the part both share.
//! Both accept a checkpoint dict that holds the state dict (`{'state_dict': sd, 'epoch': 3}`)
//! and refuse a pickled `nn.Module` (`torch.save(model)`) with a hint to save a state dict.

use std::collections::HashMap;

/// One floating-point tensor of the state dict, converted to f32 and made contiguous (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

const MAGIC_NUMBER: u128 = 0x1950a86a20f9469cfc6c;
const PROTOCOL_VERSION: i128 = 1001;
/// Objects one pickle may create. A real state dict uses ~40 per tensor (EfficientNet-Lite0:
/// ~13k in all); this bounds memory (48 bytes per object) for hostile inputs made of nothing
/// but 1-byte opcodes.
const MAX_OBJECTS: usize = 1_000_000;
/// Tensors may alias storages (tied weights), but the f32 output may not exceed this many times
/// the number of elements actually stored in the file.
const MAX_ALIAS_FACTOR: u64 = 4;
/// Bytes of strings one pickle may have copied out of it, counted per copy, cumulatively: each
/// reference to a memoized string (a memo GET costs 2 bytes of input) that becomes a key, a tensor
/// name, a storage key or a class name is charged again. A real state dict copies well under 1 MiB
/// (EfficientNet-Lite0: ~25 KiB); without this budget a 1 MB string referenced 65536 times would
/// cost 64 GB of copies.
pub const MAX_COPIED_STRING_BYTES: u64 = 16 << 20;

fn copy_budget_error() -> String {
    format!(
        "the pickle copies more than {} MiB of strings and sizes out of its objects (one object referenced over and over through the memo?): the file is corrupt or hostile",
        MAX_COPIED_STRING_BYTES >> 20
    )
}

/// Cheap sniff: pickle PROTO (0x80, version 2..=5), an optional protocol-4 FRAME, then the magic
/// number as a 10-byte LONG1.
pub fn is_legacy_pth(bytes: &[u8]) -> bool {
    if bytes.len() < 2 || bytes[0] != 0x80 || !(2..=5).contains(&bytes[1]) {
        return false;
    }
    let mut rest = &bytes[2..];
    if rest.first() == Some(&0x95) {
        if rest.len() < 9 {
            return false;
        }
        rest = &rest[9..];
    }
    rest.len() >= 12 && rest[0] == 0x8a && rest[1] == 10 && rest[2..12] == MAGIC_NUMBER.to_le_bytes()[..10]
}

/// Reads every floating-point tensor (Float, Half, BFloat16, Double storages) of a legacy
/// `torch.save(state_dict)` file (or of a checkpoint dict holding one), in the state dict's
/// order. Tensors on integer or bool storages (`num_batches_tracked`, ...) and plain Python values
/// in the dict are skipped.
pub fn read_legacy_pth(bytes: &[u8]) -> Result<Vec<RawTensor>, String> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Err("this is a zip-format .pth (PyTorch >= 1.6), not a legacy torch.save file".into());
    }
    if !is_legacy_pth(bytes) {
        return Err("not a legacy torch.save file: it does not start with the pickled magic number 0x1950a86a20f9469cfc6c".into());
    }
    let mut cur = Cursor { bytes, pos: 0 };
    read_preamble(&mut cur)?;
    // 4. the saved object
    let sd_start = cur.pos;
    let sd = Pickle::load(&mut cur, "state-dict pickle")?;
    let sd_where = format!("state-dict pickle (bytes {sd_start}..{})", cur.pos);
    let parsed = StateDict::parse(&sd).map_err(|e| format!("{sd_where}: {e}"))?;
    drop(sd);
    // 5. storage keys, 6. the storage data
    let data = read_legacy_storages(&mut cur, &parsed.storages)?;
    parsed.materialize(|key| data.get(key).copied().ok_or_else(|| format!("storage '{}' is missing from the storage-key list, so the file has no data for it", short(key))))
}

/// Reads the tensors of a state-dict pickle whose storages live outside it (the zip format's
/// `data.pkl`, whose storage `key` is the zip entry `data/<key>`). `storage_bytes(key)` returns
/// the raw little-endian bytes of a storage (at least as many as the pickle declares for it; it is
/// asked only for storages that float tensors use) or says why it cannot. `what` names the
/// pickle in error messages.
pub(crate) fn read_state_dict_pickle<'a>(pickle: &[u8], what: &str, storage_bytes: impl FnMut(&str) -> Result<&'a [u8], String>) -> Result<Vec<RawTensor>, String> {
    let mut cur = Cursor { bytes: pickle, pos: 0 };
    let sd = Pickle::load(&mut cur, what)?;
    let parsed = StateDict::parse(&sd).map_err(|e| format!("{what}: {e}"))?;
    drop(sd);
    parsed.materialize(storage_bytes)
}

/// Pickles 1-3 of a legacy file: magic number, protocol version, sys info.
fn read_preamble(cur: &mut Cursor<'_>) -> Result<(), String> {
    let magic = Pickle::load(cur, "magic-number pickle")?;
    match magic.node(magic.root) {
        Node::Int(v) if *v as u128 == MAGIC_NUMBER && *v > 0 => {}
        _ => return Err("not a legacy torch.save file: magic number mismatch".into()),
    }
    let proto = Pickle::load(cur, "protocol-version pickle")?;
    match proto.node(proto.root) {
        Node::Int(PROTOCOL_VERSION) => {}
        Node::Int(v) => return Err(format!("unsupported legacy torch.save protocol version {v} (expected 1001)")),
        other => return Err(format!("protocol-version pickle holds {}, not an int", other.kind())),
    }
    let sys = Pickle::load(cur, "sys-info pickle")?;
    check_sys_info(&sys)
}

/// Pickle 5 (the storage keys) and, for each key in that order, its element count and data.
/// Every key must be declared by the state dict, once, with the count it declares there.
fn read_legacy_storages<'a>(cur: &mut Cursor<'a>, storages: &HashMap<String, StorageMeta>) -> Result<HashMap<String, &'a [u8]>, String> {
    let keys_start = cur.pos;
    let keys = Pickle::load(cur, "storage-key pickle")?;
    let keys_where = format!("storage-key pickle (bytes {keys_start}..{})", cur.pos);
    let key_list = storage_key_list(&keys).map_err(|e| format!("{keys_where}: {e}"))?;
    let mut data: HashMap<String, &'a [u8]> = HashMap::new();
    for key in key_list {
        let at = cur.pos;
        let st = storages.get(&key).ok_or_else(|| format!("{keys_where}: storage key '{}' is not used by any persistent id of the state dict", short(&key)))?;
        if data.contains_key(&key) {
            return Err(format!("{keys_where}: storage key '{}' is listed twice", short(&key)));
        }
        let count = cur.u64().ok_or_else(|| format!("storage '{}' at byte {at}: file ends before its 8-byte element count", short(&key)))?;
        if count != st.numel {
            return Err(format!("storage '{}' at byte {at}: the file stores {count} elements but the state dict declares {}", short(&key), st.numel));
        }
        let nbytes = count
            .checked_mul(st.dtype.size() as u64)
            .filter(|&n| n <= cur.remaining() as u64)
            .ok_or_else(|| format!("storage '{}' at byte {}: {count} elements of {} bytes claimed but only {} bytes remain", short(&key), at + 8, st.dtype.size(), cur.remaining()))?;
        let bytes = cur.take(nbytes as usize).expect("length checked above");
        data.insert(key, bytes);
    }
    Ok(data)
}

fn storage_key_list(keys: &Pickle) -> Result<Vec<String>, String> {
    match keys.node(keys.root) {
        Node::List(items) | Node::Tuple(items) => items
            .iter()
            .enumerate()
            .map(|(i, &k)| match keys.node(k) {
                Node::Str(s) => keys.copy_of(s),
                other => Err(format!("item {i} is {}, not a string", other.kind())),
            })
            .collect(),
        other => Err(format!("holds {}, not a list of storage keys", other.kind())),
    }
}

/// A state dict as parsed from its pickle: the storages it declares and its tensors' layouts,
/// in dict order. Nothing is read from the storages yet (cheap and bounded by the pickle's size).
struct StateDict {
    storages: HashMap<String, StorageMeta>,
    specs: Vec<(String, TensorSpec)>,
}

impl StateDict {
    fn parse(sd: &Pickle) -> Result<StateDict, String> {
        // Every BINPERSID declares a storage (as torch's persistent_load does, whether or not the
        // object is reachable).
        let mut storages: HashMap<String, StorageMeta> = HashMap::new();
        for node in &sd.nodes {
            if let Node::PersId(pid) = node {
                if let Some(decl) = parse_storage_pid(sd, *pid)? {
                    declare_storage(&mut storages, decl)?;
                }
            }
        }
        let entries = state_dict_entries(sd)?;
        let mut specs: Vec<(String, TensorSpec)> = Vec::with_capacity(entries.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (name, value) in entries {
            let spec = match parse_tensor(sd, value) {
                Ok(Some(spec)) => spec,
                Ok(None) => continue,
                Err(e) => return Err(format!("entry '{}': {e}", short(&name))),
            };
            // Python dict semantics: a repeated key keeps its first position and takes the last value.
            if let Some(&i) = seen.get(&name) {
                specs[i].1 = spec;
            } else {
                seen.insert(name.clone(), specs.len());
                specs.push((name, spec));
            }
        }
        Ok(StateDict { storages, specs })
    }

    /// Fetches the bytes of every storage a float tensor uses (each once, its length checked),
    /// then converts each float tensor to contiguous f32. Integer tensors (num_batches_tracked)
    /// are skipped without asking for their storage.
    fn materialize<'a>(self, mut storage_bytes: impl FnMut(&str) -> Result<&'a [u8], String>) -> Result<Vec<RawTensor>, String> {
        let mut data: HashMap<&str, &'a [u8]> = HashMap::new();
        let mut stored_elements: u64 = 0;
        for (name, spec) in &self.specs {
            let key = spec.storage_key.as_str();
            let st = self.meta(name, key)?;
            if st.dtype.to_f32_kind().is_none() || data.contains_key(key) {
                continue;
            }
            let bytes = storage_bytes(key).map_err(|e| format!("tensor '{}': {e}", short(name)))?;
            let bytes = st.prefix_of(bytes).map_err(|e| format!("tensor '{}': storage '{}' {e}", short(name), short(key)))?;
            data.insert(key, bytes);
            stored_elements = stored_elements.saturating_add(st.numel);
        }
        // Tensors may alias storages (tied weights), within a budget.
        let budget = stored_elements.saturating_mul(MAX_ALIAS_FACTOR);
        let mut produced: u64 = 0;
        let mut out = Vec::new();
        for (name, spec) in &self.specs {
            let Some(&bytes) = data.get(spec.storage_key.as_str()) else {
                continue; // an integer storage
            };
            let st = self.meta(name, &spec.storage_key)?;
            let (values, numel) = tensor_values(st, bytes, spec).map_err(|e| format!("tensor '{}': {e}", short(name)))?;
            produced = produced.saturating_add(numel);
            if produced > budget {
                return Err(format!("tensor '{}': the tensors alias their storages more than {MAX_ALIAS_FACTOR}x ({produced} elements requested, {stored_elements} stored)", short(name)));
            }
            out.push(RawTensor { name: name.clone(), shape: spec.shape.iter().map(|&d| d as usize).collect(), data: values });
        }
        Ok(out)
    }

    fn meta(&self, name: &str, key: &str) -> Result<&StorageMeta, String> {
        self.storages.get(key).ok_or_else(|| format!("tensor '{}': storage '{}' was never declared", short(name), short(key)))
    }
}

/// One tensor's values as contiguous f32 (checking its view and layout against the storage),
/// and its element count.
fn tensor_values(st: &StorageMeta, bytes: &[u8], spec: &TensorSpec) -> Result<(Vec<f32>, u64), String> {
    let (view_off, view_len) = match spec.view {
        None => (0u64, st.numel),
        Some((off, len)) => {
            if off.checked_add(len).is_none_or(|end| end > st.numel) {
                return Err(format!("storage view [{off}, +{len}) lies outside storage '{}' of {} elements", short(&spec.storage_key), st.numel));
            }
            (off, len)
        }
    };
    let numel = check_layout(spec, view_len)?;
    crate::budget::reserve_floats(numel as usize, || format!("a tensor of storage {} ({numel} values)", short(&spec.storage_key))).map_err(|e| e.to_string())?.keep();
    let esz = st.dtype.size();
    let view_bytes = &bytes[(view_off as usize) * esz..((view_off + view_len) as usize) * esz];
    Ok((gather(view_bytes, st.dtype, spec, numel as usize), numel))
}

// ---------------------------------------------------------------------------------------------
// storages and tensors

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StorageDtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "DoubleStorage" => Self::F64,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
    fn to_f32_kind(self) -> Option<Self> {
        matches!(self, Self::F32 | Self::F16 | Self::BF16 | Self::F64).then_some(self)
    }
}

/// What the state dict declares about one storage.
struct StorageMeta {
    dtype: StorageDtype,
    numel: u64,
}

impl StorageMeta {
    /// The first `numel` elements' bytes of `bytes`, or an error (the caller puts the storage's
    /// name in front) if there are fewer bytes than that.
    fn prefix_of<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], String> {
        let need = self.numel.checked_mul(self.dtype.size() as u64);
        match need {
            Some(n) if n <= bytes.len() as u64 => Ok(&bytes[..n as usize]),
            _ => Err(format!(
                "holds {} bytes but its {} elements of {:?} need {}: the file is truncated or corrupt",
                bytes.len(),
                self.numel,
                self.dtype,
                need.map_or("more than 2^64".to_string(), |n| n.to_string())
            )),
        }
    }
}

struct StorageDecl {
    key: String,
    dtype: StorageDtype,
    numel: u64,
}

struct TensorSpec {
    storage_key: String,
    /// (offset, len) in elements of a legacy storage view, if the persistent id has one.
    view: Option<(u64, u64)>,
    offset: u64,
    shape: Vec<u64>,
    stride: Vec<u64>,
}

fn declare_storage(storages: &mut HashMap<String, StorageMeta>, d: StorageDecl) -> Result<(), String> {
    match storages.get(&d.key) {
        Some(s) if s.dtype != d.dtype || s.numel != d.numel => {
            Err(format!("storage '{}' is declared twice with different types or sizes ({:?}/{} vs {:?}/{})", short(&d.key), s.dtype, s.numel, d.dtype, d.numel))
        }
        Some(_) => Ok(()),
        None => {
            storages.insert(d.key, StorageMeta { dtype: d.dtype, numel: d.numel });
            Ok(())
        }
    }
}

/// `('storage', <class torch.XStorage>, key, location, numel[, view_metadata])`.
/// Returns `Ok(None)` for persistent ids of other kinds (e.g. `'module'` of full-model saves).
fn parse_storage_pid(p: &Pickle, pid: Id) -> Result<Option<StorageDecl>, String> {
    let items = match p.node(pid) {
        Node::Tuple(items) => items,
        other => return Err(format!("persistent id is {}, not a tuple", other.kind())),
    };
    match items.first().map(|&i| p.node(i)) {
        Some(Node::Str(s)) if s == "storage" => {}
        Some(Node::Str(_)) => return Ok(None),
        _ => return Err("persistent id does not start with a type-name string".into()),
    }
    if items.len() != 5 && items.len() != 6 {
        return Err(format!("storage persistent id has {} items (expected 5 or 6)", items.len()));
    }
    let dtype = match p.node(items[1]) {
        Node::Global { module, name } if module == "torch" || module == "torch.cuda" => {
            StorageDtype::from_class(name).ok_or_else(|| format!("unsupported storage type {}.{}", short(module), short(name)))?
        }
        Node::Global { module, name } => return Err(format!("unsupported storage type {}.{}", short(module), short(name))),
        other => return Err(format!("storage type is {}, not a class", other.kind())),
    };
    let key = p.copy_of(p.string(items[2]).ok_or("storage key is not a string")?)?;
    p.string(items[3]).ok_or("storage location is not a string")?;
    let numel = p.non_negative(items[4]).ok_or("storage element count is not a non-negative int")?;
    Ok(Some(StorageDecl { key, dtype, numel }))
}

/// The storage's view metadata (6th item of the persistent id): `None` or `(view_key, offset, size)`.
fn parse_view(p: &Pickle, pid: Id) -> Result<Option<(u64, u64)>, String> {
    let Node::Tuple(items) = p.node(pid) else {
        return Ok(None);
    };
    let Some(&v) = items.get(5) else {
        return Ok(None);
    };
    match p.node(v) {
        Node::None => Ok(None),
        Node::Tuple(t) if t.len() == 3 => {
            p.string(t[0]).ok_or("storage view key is not a string")?;
            let off = p.non_negative(t[1]).ok_or("storage view offset is not a non-negative int")?;
            let len = p.non_negative(t[2]).ok_or("storage view size is not a non-negative int")?;
            Ok(Some((off, len)))
        }
        other => Err(format!("storage view metadata is {}, not None or a 3-tuple", other.kind())),
    }
}

/// What to do when a file holds something other than a state dict.
const SAVE_HINT: &str = "save a state dict: torch.save(model.state_dict(), 'model.pth')";

/// Keys under which training checkpoints keep the model's state dict, most preferred first.
const CHECKPOINT_KEYS: [&str; 5] = ["state_dict", "model_state_dict", "model", "net", "ema"];

/// The state dict's `(name, value)` items. The top-level object must be a dict (an OrderedDict)
/// of tensors, or a checkpoint dict without tensors of its own that holds one under one of
/// `CHECKPOINT_KEYS`. A pickled `nn.Module`, any other object, or a dict without tensors is an
/// error that says what the file holds.
fn state_dict_entries(p: &Pickle) -> Result<Vec<(String, Id)>, String> {
    let top = p.unwrap_build(p.root);
    let Node::Dict(items) = p.node(top) else {
        return Err(not_a_state_dict(p, top, "the saved object"));
    };
    let items = if holds_tensor(p, items) { items } else { checkpoint_state_dict(p, items)? };
    items
        .iter()
        .enumerate()
        .map(|(i, &(k, v))| match p.node(k) {
            Node::Str(s) => Ok((p.copy_of(s)?, v)),
            other => Err(format!("state dict key #{i} is {}, not a string", other.kind())),
        })
        .collect()
}

/// The state dict inside a checkpoint dict (`{'state_dict': ..., 'epoch': 3}`).
fn checkpoint_state_dict<'p>(p: &'p Pickle, items: &'p [(Id, Id)]) -> Result<&'p [(Id, Id)], String> {
    for key in CHECKPOINT_KEYS {
        let Some(&(_, v)) = items.iter().find(|&&(k, _)| p.string(k) == Some(key)) else {
            continue;
        };
        let v = p.unwrap_build(v);
        match p.node(v) {
            Node::Dict(inner) if holds_tensor(p, inner) => return Ok(inner),
            Node::Reduce { .. } => return Err(not_a_state_dict(p, v, &format!("the checkpoint's '{key}' entry"))),
            _ => {} // e.g. an empty 'ema' dict: try the next key
        }
    }
    if let Some(class) = module_class(p) {
        return Err(format!("the file holds a whole pickled model (it uses the class {class}), not a state dict; {SAVE_HINT}"));
    }
    Err(format!("the saved object is a dict with no tensors (keys: {}), not a state dict; {SAVE_HINT}", dict_keys(p, items)))
}

/// Whether a dict has at least one value built by one of torch's `_rebuild_*` functions.
fn holds_tensor(p: &Pickle, items: &[(Id, Id)]) -> bool {
    items.iter().any(|&(_, v)| match p.node(p.unwrap_build(v)) {
        Node::Reduce { func, .. } => matches!(p.node(*func),
            Node::Global { module, name } if module.starts_with("torch") && name.starts_with("_rebuild")),
        _ => false,
    })
}

/// The error for an object `id` (described as `what`) that is not a state dict: names a pickled
/// model's class, or the object's kind.
fn not_a_state_dict(p: &Pickle, id: Id, what: &str) -> String {
    if let Some(class) = module_class(p) {
        let own = class_name(p, id).unwrap_or(class);
        return format!("{what} is a whole pickled model ({own}), not a state dict (it was saved with torch.save(model)); {SAVE_HINT}");
    }
    let kind = match class_name(p, id) {
        Some(class) => format!("an object of class {class}"),
        None => p.node(id).kind(),
    };
    format!("{what} is {kind}, not a state dict (was it saved with torch.save(model) instead of torch.save(model.state_dict())?); {SAVE_HINT}")
}

/// The first `torch.nn` / torchvision / timm module class the pickle refers to, if any: the
/// sign of `torch.save(model)`.
fn module_class(p: &Pickle) -> Option<String> {
    p.nodes.iter().find_map(|n| match n {
        Node::Global { module, name } if ["torch.nn.modules", "torchvision.models", "timm.models"].iter().any(|m| module.starts_with(m)) => Some(format!("{}.{}", short(module), short(name))),
        _ => None,
    })
}

/// `module.Class` for an object made by calling a class (REDUCE/NEWOBJ, then maybe BUILD).
fn class_name(p: &Pickle, id: Id) -> Option<String> {
    match p.node(p.unwrap_build(id)) {
        Node::Reduce { func, .. } => match p.node(*func) {
            Node::Global { module, name } => Some(format!("{}.{}", short(module), short(name))),
            _ => None,
        },
        _ => None,
    }
}

/// Up to 8 of a dict's keys, quoted, for messages.
fn dict_keys(p: &Pickle, items: &[(Id, Id)]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    let mut keys: Vec<String> = items
        .iter()
        .take(8)
        .map(|&(k, _)| match p.string(k) {
            Some(s) => format!("'{}'", short(s)),
            None => p.node(k).kind(),
        })
        .collect();
    if items.len() > 8 {
        keys.push(format!("... {} in all", items.len()));
    }
    keys.join(", ")
}

/// A dict value -> a tensor spec, `None` for plain Python values, an error for anything else.
fn parse_tensor(p: &Pickle, value: Id) -> Result<Option<TensorSpec>, String> {
    let value = p.unwrap_build(value);
    match p.node(value) {
        Node::None | Node::Bool(_) | Node::Int(_) | Node::BigInt | Node::Float | Node::Str(_) | Node::Bytes => Ok(None),
        Node::Reduce { func, args } => parse_call(p, *func, *args, 0).map(Some),
        other => Err(format!("value is {}, not a tensor", other.kind())),
    }
}

/// `func(*args)` where func should be one of torch's tensor rebuild functions.
fn parse_call(p: &Pickle, func: Id, args: Id, depth: u32) -> Result<TensorSpec, String> {
    if depth > 4 {
        return Err("tensor wrapped too deeply".into());
    }
    let (module, name) = match p.node(func) {
        Node::Global { module, name } => (module.as_str(), name.as_str()),
        other => return Err(format!("value is built by {}, not by a torch rebuild function", other.kind())),
    };
    let args = match p.node(args) {
        Node::Tuple(a) => a,
        other => return Err(format!("arguments of {}.{} are {}, not a tuple", short(module), short(name), other.kind())),
    };
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {}
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
            // (data, requires_grad, backward_hooks[, state]); data is itself a reduced tensor
            let &data = args.first().ok_or("_rebuild_parameter without arguments")?;
            return match p.node(p.unwrap_build(data)) {
                Node::Reduce { func, args } => parse_call(p, *func, *args, depth + 1),
                other => Err(format!("parameter data is {}, not a tensor", other.kind())),
            };
        }
        ("torch._tensor", "_rebuild_from_type_v2") | ("torch.tensor", "_rebuild_from_type_v2") => {
            // (func, new_type, args, state): func(*args)
            if args.len() < 3 {
                return Err("_rebuild_from_type_v2 with fewer than 3 arguments".into());
            }
            return parse_call(p, args[0], args[2], depth + 1);
        }
        _ => return Err(format!("unsupported tensor constructor {}.{}", short(module), short(name))),
    }
    if args.len() < 4 {
        return Err(format!("{name} has {} arguments (expected at least 4)", args.len()));
    }
    let storage = match p.node(args[0]) {
        Node::PersId(pid) => *pid,
        other => return Err(format!("tensor storage is {}, not a persistent id", other.kind())),
    };
    let decl = parse_storage_pid(p, storage)?.ok_or("tensor storage is not a 'storage' persistent id")?;
    let view = parse_view(p, storage)?;
    let offset = p.non_negative(args[1]).ok_or("storage offset is not a non-negative int")?;
    let over = |what: &str| {
        if p.copied.get().saturating_add(8 * p.tuple_len(args[2]).max(p.tuple_len(args[3])) as u64) > MAX_COPIED_STRING_BYTES {
            copy_budget_error()
        } else {
            format!("{what} is not a tuple of non-negative ints")
        }
    };
    let shape = p.int_tuple(args[2]).ok_or_else(|| over("size"))?;
    let stride = p.int_tuple(args[3]).ok_or_else(|| over("stride"))?;
    if shape.len() != stride.len() {
        return Err(format!("size has {} dims but stride has {}", shape.len(), stride.len()));
    }
    Ok(TensorSpec { storage_key: decl.key, view, offset, shape, stride })
}

/// Checks that every element the view addresses lies in the storage (of `len` elements);
/// returns the element count.
fn check_layout(spec: &TensorSpec, len: u64) -> Result<u64, String> {
    let desc = || format!("offset {}, size {:?}, stride {:?}", spec.offset, spec.shape, spec.stride);
    let mut numel: u64 = 1;
    for &d in &spec.shape {
        numel = numel.checked_mul(d).ok_or_else(|| format!("element count overflows ({})", desc()))?;
    }
    if numel == 0 {
        return Ok(0);
    }
    let mut last = spec.offset;
    for (&d, &s) in spec.shape.iter().zip(&spec.stride) {
        last = (d - 1).checked_mul(s).and_then(|x| x.checked_add(last)).ok_or_else(|| format!("index overflows ({})", desc()))?;
    }
    if last >= len {
        return Err(format!("{} reaches element {last} of a storage of {len} elements", desc()));
    }
    if numel > len {
        return Err(format!("{} has {numel} elements, more than its storage's {len} (broadcast views are not supported)", desc()));
    }
    Ok(numel)
}

fn gather(bytes: &[u8], dtype: StorageDtype, spec: &TensorSpec, numel: usize) -> Vec<f32> {
    let esz = dtype.size();
    let get = |i: usize| -> f32 {
        let b = &bytes[i * esz..(i + 1) * esz];
        match dtype {
            StorageDtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            StorageDtype::F16 => half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            StorageDtype::BF16 => half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            StorageDtype::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
            _ => unreachable!("integer storages are skipped before gathering"),
        }
    };
    let mut out = Vec::with_capacity(numel);
    if numel == 0 {
        return out;
    }
    let offset = spec.offset as usize;
    // Contiguous (row-major) fast path. Size-1 dims may carry any stride.
    let mut expect = 1u64;
    let mut contiguous = true;
    for (&d, &s) in spec.shape.iter().zip(&spec.stride).rev() {
        if d != 1 && s != expect {
            contiguous = false;
            break;
        }
        expect *= d;
    }
    if contiguous {
        out.extend((offset..offset + numel).map(get));
        return out;
    }
    // Strided: odometer over the multi-index. Size-1 dims get stride 0 (their stride is
    // arbitrary); for the others check_layout bounds (size - 1) * stride below the storage
    // length, so size * stride stays below twice that.
    let nd = spec.shape.len();
    let shape: Vec<usize> = spec.shape.iter().map(|&d| d as usize).collect();
    let stride: Vec<usize> = spec.shape.iter().zip(&spec.stride).map(|(&d, &s)| if d == 1 { 0 } else { s as usize }).collect();
    let mut idx = vec![0usize; nd];
    let mut pos = offset;
    for n in 0..numel {
        out.push(get(pos));
        if n + 1 == numel {
            break;
        }
        for k in (0..nd).rev() {
            idx[k] += 1;
            pos += stride[k];
            if idx[k] < shape[k] {
                break;
            }
            pos -= stride[k] * shape[k];
            idx[k] = 0;
        }
    }
    out
}

fn check_sys_info(p: &Pickle) -> Result<(), String> {
    let Node::Dict(items) = p.node(p.root) else {
        return Err(format!("sys-info pickle holds {}, not a dict", p.node(p.root).kind()));
    };
    for &(k, v) in items {
        if p.string(k) == Some("little_endian") && matches!(p.node(v), Node::Bool(false)) {
            return Err("big-endian legacy torch.save files are not supported".into());
        }
    }
    Ok(())
}

/// `s`, cut to 80 bytes for messages (names in hostile files can be megabytes long).
pub(crate) fn short(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

// ---------------------------------------------------------------------------------------------
// a small, bounded pickle machine

type Id = usize;

enum Node {
    None,
    Bool(bool),
    Int(i128),
    /// An integer wider than 128 bits (never valid where we need a number).
    BigInt,
    Float,
    Str(String),
    Bytes,
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Global {
        module: String,
        name: String,
    },
    /// `func(*args)` for anything but dict constructors (also NEWOBJ `cls.__new__(cls, *args)`).
    Reduce {
        func: Id,
        args: Id,
    },
    /// BUILD on a non-dict object: `obj.__setstate__(state)`; we only ever look at `obj`.
    Build {
        obj: Id,
    },
    PersId(Id),
}

impl Node {
    fn kind(&self) -> String {
        match self {
            Node::None => "None".into(),
            Node::Bool(_) => "a bool".into(),
            Node::Int(_) | Node::BigInt => "an int".into(),
            Node::Float => "a float".into(),
            Node::Str(s) => format!("the string '{}'", short(s)),
            Node::Bytes => "bytes".into(),
            Node::Tuple(t) => format!("a {}-tuple", t.len()),
            Node::List(_) => "a list".into(),
            Node::Dict(_) => "a dict".into(),
            Node::Global { module, name } => {
                format!("the global {}.{}", short(module), short(name))
            }
            Node::Reduce { .. } => "a reduced object".into(),
            Node::Build { .. } => "a built object".into(),
            Node::PersId(_) => "a persistent id".into(),
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.remaining() {
            return None;
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Some(s)
    }
    fn take_u64_len(&mut self, n: u64) -> Option<&'a [u8]> {
        usize::try_from(n).ok().and_then(|n| self.take(n))
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    fn line(&mut self) -> Option<&'a [u8]> {
        let rest = &self.bytes[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n')?;
        self.pos += n + 1;
        Some(&rest[..n])
    }
}

/// Little-endian two's-complement integer of `b.len()` bytes (LONG1/LONG4).
fn decode_long(b: &[u8]) -> Node {
    if b.is_empty() {
        return Node::Int(0);
    }
    if b.len() > 16 {
        return Node::BigInt;
    }
    let negative = b[b.len() - 1] & 0x80 != 0;
    let mut buf = [if negative { 0xff } else { 0 }; 16];
    buf[..b.len()].copy_from_slice(b);
    Node::Int(i128::from_le_bytes(buf))
}

enum Item {
    Mark,
    Obj(Id),
}

struct Pickle {
    nodes: Vec<Node>,
    root: Id,
    /// Bytes of strings copied out of this pickle so far (`MAX_COPIED_STRING_BYTES`).
    copied: std::cell::Cell<u64>,
}

impl Pickle {
    /// An owned copy of `s`, a string of this pickle, charged to its copy budget.
    fn copy_of(&self, s: &str) -> Result<String, String> {
        let total = self.copied.get().saturating_add(s.len() as u64);
        if total > MAX_COPIED_STRING_BYTES {
            return Err(copy_budget_error());
        }
        self.copied.set(total);
        Ok(s.to_owned())
    }
    fn node(&self, id: Id) -> &Node {
        &self.nodes[id]
    }
    fn string(&self, id: Id) -> Option<&str> {
        match self.node(id) {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }
    fn non_negative(&self, id: Id) -> Option<u64> {
        match self.node(id) {
            Node::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
    /// A tuple of non-negative ints (a size or stride), its copy charged to the copy budget
    /// (8 bytes per item): `None` when it is not one, or when the budget is spent.
    fn int_tuple(&self, id: Id) -> Option<Vec<u64>> {
        match self.node(id) {
            Node::Tuple(items) => {
                let total = self.copied.get().saturating_add(8 * items.len() as u64);
                if total > MAX_COPIED_STRING_BYTES {
                    return None;
                }
                self.copied.set(total);
                items.iter().map(|&i| self.non_negative(i)).collect()
            }
            _ => None,
        }
    }
    fn tuple_len(&self, id: Id) -> usize {
        match self.node(id) {
            Node::Tuple(items) => items.len(),
            _ => 0,
        }
    }
    fn unwrap_build(&self, mut id: Id) -> Id {
        // Build nodes always point at older nodes, so this terminates.
        while let Node::Build { obj } = self.node(id) {
            id = *obj;
        }
        id
    }
    /// Runs one pickle from the cursor up to and including its STOP opcode.
    fn load(cur: &mut Cursor<'_>, what: &str) -> Result<Pickle, String> {
        let start = cur.pos;
        let mut m = Machine { nodes: Vec::new(), stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), copied: 0 };
        loop {
            let at = cur.pos;
            let Some(op) = cur.u8() else {
                return Err(format!("{what} (from byte {start}): the file ends before the pickle's STOP opcode"));
            };
            match m.step(op, cur) {
                Ok(Some(root)) => return Ok(Pickle { nodes: m.nodes, root, copied: std::cell::Cell::new(m.copied) }),
                Ok(None) => {}
                Err(e) => return Err(format!("{what} (from byte {start}): opcode 0x{op:02x} at byte {at}: {e}")),
            }
        }
    }
}

struct Machine {
    nodes: Vec<Node>,
    stack: Vec<Item>,
    /// Stack lengths at each MARK (CPython's metastack).
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
    /// Bytes of strings copied by STACK_GLOBAL (`MAX_COPIED_STRING_BYTES`).
    copied: u64,
}

const TRUNC: &str = "the file ends inside this opcode's argument";

impl Machine {
    fn alloc(&mut self, n: Node) -> Result<Id, String> {
        if self.nodes.len() >= MAX_OBJECTS {
            return Err(format!("more than {MAX_OBJECTS} objects in one pickle"));
        }
        self.nodes.push(n);
        Ok(self.nodes.len() - 1)
    }
    fn push_new(&mut self, n: Node) -> Result<(), String> {
        let id = self.alloc(n)?;
        self.stack.push(Item::Obj(id));
        Ok(())
    }
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }
    fn pop(&mut self) -> Result<Id, String> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        match self.stack.pop() {
            Some(Item::Obj(id)) => Ok(id),
            _ => Err("stack underflow".into()),
        }
    }
    fn top(&self) -> Result<Id, String> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        match self.stack.last() {
            Some(Item::Obj(id)) => Ok(*id),
            _ => Err("stack underflow".into()),
        }
    }
    fn pop_mark(&mut self) -> Result<Vec<Id>, String> {
        let m = self.marks.pop().ok_or("no MARK to pop to")?;
        let items = self.stack.split_off(m);
        self.stack.pop(); // the Mark item itself
        items
            .into_iter()
            .map(|i| match i {
                Item::Obj(id) => Ok(id),
                Item::Mark => Err("unbalanced MARK".to_string()),
            })
            .collect()
    }
    fn memo_get(&mut self, key: u64) -> Result<(), String> {
        let id = *self.memo.get(&key).ok_or_else(|| format!("memo key {key} was never PUT"))?;
        self.stack.push(Item::Obj(id));
        Ok(())
    }
    fn memo_put(&mut self, key: u64) -> Result<(), String> {
        let id = self.top()?;
        if self.memo.len() >= MAX_OBJECTS {
            return Err("memo too large".into());
        }
        self.memo.insert(key, id);
        Ok(())
    }
    fn is_dict_ctor(&self, func: Id) -> bool {
        matches!(self.nodes[func], Node::Global { ref module, ref name }
            if (module == "collections" && name == "OrderedDict")
            || ((module == "builtins" || module == "__builtin__") && name == "dict"))
    }
    fn reduce(&mut self, func: Id, args: Id) -> Result<(), String> {
        if self.is_dict_ctor(func) {
            match &self.nodes[args] {
                Node::Tuple(a) if a.is_empty() => return self.push_new(Node::Dict(Vec::new())),
                _ => return Err("OrderedDict/dict constructed with arguments (unsupported)".into()),
            }
        }
        self.push_new(Node::Reduce { func, args })
    }
    fn string(&mut self, b: &[u8]) -> Result<(), String> {
        let s = String::from_utf8_lossy(b).into_owned();
        self.push_new(Node::Str(s))
    }

    /// Executes one opcode; `Some(root)` on STOP.
    fn step(&mut self, op: u8, cur: &mut Cursor<'_>) -> Result<Option<Id>, String> {
        match op {
            0x80 => {
                let v = cur.u8().ok_or(TRUNC)?; // PROTO
                if v > 5 {
                    return Err(format!("unsupported pickle protocol {v}"));
                }
            }
            0x95 => {
                let n = cur.u64().ok_or(TRUNC)?; // FRAME: only a hint, but must fit
                if n > cur.remaining() as u64 {
                    return Err(format!("FRAME of {n} bytes but only {} remain", cur.remaining()));
                }
            }
            b'.' => {
                // STOP
                return self.pop().map(Some);
            }
            b'(' => {
                self.marks.push(self.stack.len() + 1);
                self.stack.push(Item::Mark);
            }
            b'0' => {
                // POP
                if self.stack.len() > self.floor() {
                    self.stack.pop();
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?; // POP_MARK
            }
            b'2' => {
                let id = self.top()?; // DUP
                self.stack.push(Item::Obj(id));
            }
            b'N' => self.push_new(Node::None)?,
            0x88 => self.push_new(Node::Bool(true))?,
            0x89 => self.push_new(Node::Bool(false))?,
            b'J' => {
                let v = cur.u32().ok_or(TRUNC)? as i32;
                self.push_new(Node::Int(v as i128))?
            }
            b'K' => {
                let v = cur.u8().ok_or(TRUNC)?;
                self.push_new(Node::Int(v as i128))?
            }
            b'M' => {
                let v = cur.u16().ok_or(TRUNC)?;
                self.push_new(Node::Int(v as i128))?
            }
            0x8a => {
                let n = cur.u8().ok_or(TRUNC)?; // LONG1
                let b = cur.take(n as usize).ok_or(TRUNC)?;
                self.push_new(decode_long(b))?
            }
            0x8b => {
                let n = cur.u32().ok_or(TRUNC)? as i32; // LONG4
                if n < 0 {
                    return Err("negative LONG4 length".into());
                }
                let b = cur.take(n as usize).ok_or(TRUNC)?;
                self.push_new(decode_long(b))?
            }
            b'G' => {
                let b = cur.take(8).ok_or(TRUNC)?;
                {
                    let _ = b; // BINFLOAT: value never needed
                    self.push_new(Node::Float)?
                }
            }
            b'X' => {
                let n = cur.u32().ok_or(TRUNC)?; // BINUNICODE
                let b = cur.take(n as usize).ok_or(TRUNC)?;
                self.string(b)?
            }
            0x8c => {
                let n = cur.u8().ok_or(TRUNC)?; // SHORT_BINUNICODE
                let b = cur.take(n as usize).ok_or(TRUNC)?;
                self.string(b)?
            }
            0x8d => {
                let n = cur.u64().ok_or(TRUNC)?; // BINUNICODE8
                let b = cur.take_u64_len(n).ok_or(TRUNC)?;
                self.string(b)?
            }
            b'T' => {
                let n = cur.u32().ok_or(TRUNC)? as i32; // BINSTRING (Python 2 str)
                if n < 0 {
                    return Err("negative BINSTRING length".into());
                }
                let b = cur.take(n as usize).ok_or(TRUNC)?;
                self.string(b)?
            }
            b'U' => {
                let n = cur.u8().ok_or(TRUNC)?; // SHORT_BINSTRING
                let b = cur.take(n as usize).ok_or(TRUNC)?;
                self.string(b)?
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                let n = match op {
                    b'B' => cur.u32().ok_or(TRUNC)? as u64,
                    b'C' => cur.u8().ok_or(TRUNC)? as u64,
                    _ => cur.u64().ok_or(TRUNC)?,
                };
                cur.take_u64_len(n).ok_or(TRUNC)?;
                self.push_new(Node::Bytes)?
            }
            b')' => self.push_new(Node::Tuple(Vec::new()))?,
            0x85..=0x87 => {
                let n = (op - 0x84) as usize; // TUPLE1..3
                let mut items = vec![0; n];
                for slot in items.iter_mut().rev() {
                    *slot = self.pop()?;
                }
                self.push_new(Node::Tuple(items))?
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push_new(Node::Tuple(items))?
            }
            b']' => self.push_new(Node::List(Vec::new()))?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push_new(Node::List(items))?
            }
            b'}' => self.push_new(Node::Dict(Vec::new()))?,
            b'd' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err("DICT with an odd number of items".into());
                }
                let pairs = items.chunks_exact(2).map(|c| (c[0], c[1])).collect();
                self.push_new(Node::Dict(pairs))?
            }
            b'a' => {
                let v = self.pop()?; // APPEND
                let l = self.top()?;
                match &mut self.nodes[l] {
                    Node::List(items) => items.push(v),
                    other => return Err(format!("APPEND to {}", other.kind())),
                }
            }
            b'e' => {
                let vs = self.pop_mark()?; // APPENDS
                let l = self.top()?;
                match &mut self.nodes[l] {
                    Node::List(items) => items.extend(vs),
                    other => return Err(format!("APPENDS to {}", other.kind())),
                }
            }
            b's' | b'u' => {
                let kv = if op == b's' {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    vec![k, v]
                } else {
                    self.pop_mark()?
                };
                if kv.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                let d = self.top()?;
                match &mut self.nodes[d] {
                    Node::Dict(items) => items.extend(kv.chunks_exact(2).map(|c| (c[0], c[1]))),
                    other => return Err(format!("SETITEM on {}", other.kind())),
                }
            }
            b'c' => {
                let module = cur.line().ok_or(TRUNC)?; // GLOBAL
                let name = cur.line().ok_or(TRUNC)?;
                let module = String::from_utf8_lossy(module).into_owned();
                let name = String::from_utf8_lossy(name).into_owned();
                self.push_new(Node::Global { module, name })?
            }
            0x93 => {
                let name = self.pop()?; // STACK_GLOBAL
                let module = self.pop()?;
                match (&self.nodes[module], &self.nodes[name]) {
                    (Node::Str(m), Node::Str(n)) => {
                        self.copied = self.copied.saturating_add(m.len() as u64 + n.len() as u64);
                        if self.copied > MAX_COPIED_STRING_BYTES {
                            return Err(copy_budget_error());
                        }
                        let g = Node::Global { module: m.clone(), name: n.clone() };
                        self.push_new(g)?
                    }
                    _ => return Err("STACK_GLOBAL on non-strings".into()),
                }
            }
            b'R' => {
                let args = self.pop()?; // REDUCE
                let func = self.pop()?;
                self.reduce(func, args)?
            }
            0x81 => {
                let args = self.pop()?; // NEWOBJ
                let cls = self.pop()?;
                self.reduce(cls, args)?
            }
            0x92 => {
                let _kwargs = self.pop()?; // NEWOBJ_EX
                let args = self.pop()?;
                let cls = self.pop()?;
                self.reduce(cls, args)?
            }
            b'b' => {
                let _state = self.pop()?; // BUILD
                let obj = self.top()?;
                // BUILD on an (Ordered)Dict sets attributes such as `_metadata`, not items.
                if !matches!(self.nodes[obj], Node::Dict(_)) {
                    self.stack.pop();
                    self.push_new(Node::Build { obj })?;
                }
            }
            b'Q' => {
                let pid = self.pop()?; // BINPERSID
                self.push_new(Node::PersId(pid))?
            }
            b'h' => {
                let k = cur.u8().ok_or(TRUNC)?;
                self.memo_get(k as u64)?
            }
            b'j' => {
                let k = cur.u32().ok_or(TRUNC)?;
                self.memo_get(k as u64)?
            }
            b'q' => {
                let k = cur.u8().ok_or(TRUNC)?;
                self.memo_put(k as u64)?
            }
            b'r' => {
                let k = cur.u32().ok_or(TRUNC)?;
                self.memo_put(k as u64)?
            }
            0x94 => {
                let k = self.memo.len() as u64; // MEMOIZE
                self.memo_put(k)?
            }
            _ => return Err("unsupported or invalid opcode".into()),
        }
        Ok(None)
    }
}
