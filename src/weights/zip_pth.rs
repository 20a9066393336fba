//! Reader for zip-format `torch.save` files (PyTorch >= 1.6), from bytes.
//!
//! Layout (torch/serialization.py `_save`, written by PyTorchStreamWriter): a zip archive whose
//! entries are STORED (not compressed), all under one top folder `<name>/`:
//! - `<name>/data.pkl`: the saved object, pickled (protocol 2); tensors are
//!   `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` with storages as
//!   persistent ids `('storage', torch.FloatStorage, key, location, numel)`, as in the legacy
//!   format;
//! - `<name>/data/<key>`: the raw little-endian bytes of storage `key` (64-byte aligned);
//! - `<name>/byteorder` ("little"; older torch versions do not write it), `version`, ...
//!
//! The pickle runs on the legacy reader's bounded machine (`read_state_dict_pickle`); this module
//! finds the entries and hands out their bytes as slices of the input (no copy, so a model is not
//! held twice in wasm memory). Every size the archive claims is checked against the file before
//! anything is read, and each entry's CRC-32 is checked so that a flipped bit in the weights is
//! reported, not silently computed with.

use super::legacy_pth::{read_state_dict_pickle, short, RawTensor};
use super::zip_reader::{data_start, entries, Entry};

/// Entries one archive may have: a state dict has one per storage plus ~6 (a large model ~1000).
const MAX_ENTRIES: usize = 100_000;
/// The `byteorder` entry holds "little" or "big"; anything longer is not one.
const MAX_BYTEORDER_LEN: usize = 16;
/// What to do about a file this reader refuses as a whole.
const RESAVE_HINT: &str = "re-save it with torch.save(model.state_dict(), 'model.pth'), or convert it to .safetensors";

/// Cheap sniff: a zip archive starts with a local file header.
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Reads every floating-point tensor (Float, Half, BFloat16, Double storages) of a zip-format
/// `torch.save(state_dict)` file (or a checkpoint dict holding one), in the state dict's order,
/// converted to f32 and made contiguous. Integer tensors (`num_batches_tracked`) are skipped.
pub fn read_zip_pth(bytes: &[u8]) -> Result<Vec<RawTensor>, String> {
    let zip = open(bytes)?;
    let (folder, pkl_index) = top_folder(&zip)?;
    check_byteorder(&zip, bytes, &folder)?;
    let pkl_name = format!("{folder}data.pkl");
    let pickle = entry_bytes(bytes, &zip[pkl_index])?;
    read_state_dict_pickle(pickle, &pkl_name, |key| storage_bytes(&zip, bytes, &folder, key))
}

/// Reads the central directory and checks every entry's claimed extent against the file's length.
fn open(bytes: &[u8]) -> Result<Vec<Entry<'_>>, String> {
    let zip = entries(bytes, MAX_ENTRIES).map_err(|e| format!("{e}; {RESAVE_HINT}"))?;
    for e in &zip {
        let end = e.header_start.checked_add(e.compressed_size);
        if end.is_none_or(|end| end > bytes.len() as u64) {
            return Err(format!(
                "zip entry '{}' claims {} bytes from byte {} but the file is only {} bytes long: it is truncated or corrupt",
                short(&e.name_lossy()),
                e.compressed_size,
                e.header_start,
                bytes.len()
            ));
        }
    }
    Ok(zip)
}

/// The index of the entry named `name`.
fn find(zip: &[Entry<'_>], name: &str) -> Option<usize> {
    zip.iter().position(|e| e.name == name.as_bytes())
}

/// The `<name>/` folder holding `data.pkl` (there must be exactly one) and that entry's index.
fn top_folder(zip: &[Entry<'_>]) -> Result<(String, usize), String> {
    let names: Vec<String> = zip.iter().map(Entry::name_lossy).collect();
    let folders: Vec<(&str, usize)> = names.iter().enumerate().filter_map(|(i, n)| Some((n.strip_suffix("data.pkl")?, i))).filter(|(f, _)| f.ends_with('/') && f.matches('/').count() == 1).collect();
    match folders.as_slice() {
        &[(one, i)] => Ok((one.to_string(), i)),
        [] => Err(format!("the zip archive has no '<folder>/data.pkl' entry (it has {}), so it is not a torch.save file; {RESAVE_HINT}", list_names(&names))),
        many => Err(format!(
            "the zip archive has {} data.pkl entries (in {}); a torch.save file has one",
            many.len(),
            many.iter().take(4).map(|(f, _)| format!("'{}'", short(f))).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Refuses big-endian files (the storages would have to be byte-swapped). A missing `byteorder`
/// entry means little-endian: older torch versions do not write it, and torch reads such files
/// as little-endian.
fn check_byteorder(zip: &[Entry<'_>], bytes: &[u8], folder: &str) -> Result<(), String> {
    let Some(i) = find(zip, &format!("{folder}byteorder")) else {
        return Ok(());
    };
    let raw = entry_bytes(bytes, &zip[i])?;
    if raw.len() > MAX_BYTEORDER_LEN {
        return Err(format!("the 'byteorder' entry is {} bytes long, not 'little' or 'big': the file is corrupt", raw.len()));
    }
    match String::from_utf8_lossy(raw).trim() {
        "little" => Ok(()),
        "big" => Err(
            "the file was saved on a big-endian machine (its 'byteorder' entry says 'big'); only little-endian files can be read: load it with torch and save it again on a little-endian machine (x86 or ARM)"
                .into(),
        ),
        other => Err(format!("the 'byteorder' entry says '{}', not 'little' or 'big': the file is corrupt", short(other))),
    }
}

/// The bytes of storage `key`, the entry `<folder>data/<key>`.
fn storage_bytes<'a>(zip: &[Entry<'_>], bytes: &'a [u8], folder: &str, key: &str) -> Result<&'a [u8], String> {
    let name = format!("{folder}data/{key}");
    let i = find(zip, &name).ok_or_else(|| format!("storage '{}' has no zip entry '{}': the archive is incomplete (an entry was removed or renamed); {RESAVE_HINT}", short(key), short(&name)))?;
    entry_bytes(bytes, &zip[i])
}

/// One stored entry's bytes, as a slice of the file, after checking its compression, its extent
/// and its CRC-32.
fn entry_bytes<'a>(bytes: &'a [u8], e: &Entry<'_>) -> Result<&'a [u8], String> {
    let name = e.name_lossy();
    if e.method != 0 {
        return Err(format!("zip entry '{}' is compressed (method {}); torch.save writes uncompressed entries and only those are read here: {RESAVE_HINT}", short(&name), e.method));
    }
    if e.size != e.compressed_size {
        return Err(format!("zip entry '{}' is stored uncompressed but claims {} bytes stored and {} uncompressed: the file is corrupt", short(&name), e.compressed_size, e.size));
    }
    let start = data_start(bytes, e).ok_or_else(|| format!("zip entry '{}' has no local header at byte {}: the file is truncated or corrupt", short(&name), e.header_start))?;
    let end = start
        .checked_add(e.size)
        .filter(|&end| end <= bytes.len() as u64)
        .ok_or_else(|| format!("zip entry '{}' claims {} bytes from byte {start} but the file is only {} bytes long: it is truncated or corrupt", short(&name), e.size, bytes.len()))?;
    let data = &bytes[start as usize..end as usize];
    // torch.serialization.set_crc32_options(False) writes no checksum (0): nothing to check then.
    if e.crc32 != 0 && crc32fast::hash(data) != e.crc32 {
        return Err(format!("zip entry '{}' fails its checksum (CRC-32): the file is corrupt; {RESAVE_HINT}", short(&name)));
    }
    Ok(data)
}

fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        return "no entries".into();
    }
    let mut shown: Vec<String> = names.iter().take(6).map(|n| format!("'{}'", short(n))).collect();
    if names.len() > 6 {
        shown.push(format!("... {} in all", names.len()));
    }
    shown.join(", ")
}
