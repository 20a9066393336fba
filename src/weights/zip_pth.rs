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
use std::io::Cursor;
use zip::{CompressionMethod, ZipArchive};

type Archive<'a> = ZipArchive<Cursor<&'a [u8]>>;

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
    let mut zip = open(bytes)?;
    let (folder, pkl_index) = top_folder(&zip)?;
    check_byteorder(&mut zip, bytes, &folder)?;
    let pkl_name = format!("{folder}data.pkl");
    let pickle = entry_bytes(&mut zip, bytes, pkl_index)?;
    read_state_dict_pickle(pickle, &pkl_name, |key| storage_bytes(&mut zip, bytes, &folder, key))
}

/// Opens the archive and checks every entry's claimed extent against the file's length.
fn open(bytes: &[u8]) -> Result<Archive<'_>, String> {
    let zip = ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a readable zip archive ({e}): the file is truncated or corrupt; {RESAVE_HINT}"))?;
    if zip.len() > MAX_ENTRIES {
        return Err(format!("the zip archive has {} entries, more than the {MAX_ENTRIES} a torch.save file can plausibly have: the file is corrupt", zip.len()));
    }
    for i in 0..zip.len() {
        let e = zip.by_index_data(i).map_err(|e| format!("zip entry #{i} is unreadable ({e}): the file is corrupt"))?;
        let end = e.header_start().checked_add(e.compressed_size());
        if end.is_none_or(|end| end > bytes.len() as u64) {
            return Err(format!(
                "zip entry '{}' claims {} bytes from byte {} but the file is only {} bytes long: it is truncated or corrupt",
                entry_name(&zip, i),
                e.compressed_size(),
                e.header_start(),
                bytes.len()
            ));
        }
    }
    Ok(zip)
}

/// The `<name>/` folder holding `data.pkl` (there must be exactly one) and that entry's index.
fn top_folder(zip: &Archive<'_>) -> Result<(String, usize), String> {
    let names: Vec<String> = (0..zip.len()).map(|i| entry_name(zip, i)).collect();
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
fn check_byteorder<'a>(zip: &mut Archive<'a>, bytes: &'a [u8], folder: &str) -> Result<(), String> {
    let Some(i) = zip.index_for_name_raw(format!("{folder}byteorder").as_bytes()) else {
        return Ok(());
    };
    let raw = entry_bytes(zip, bytes, i)?;
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
fn storage_bytes<'a>(zip: &mut Archive<'a>, bytes: &'a [u8], folder: &str, key: &str) -> Result<&'a [u8], String> {
    let name = format!("{folder}data/{key}");
    let i = zip
        .index_for_name_raw(name.as_bytes())
        .ok_or_else(|| format!("storage '{}' has no zip entry '{}': the archive is incomplete (an entry was removed or renamed); {RESAVE_HINT}", short(key), short(&name)))?;
    entry_bytes(zip, bytes, i)
}

/// One stored entry's bytes, as a slice of the file, after checking its compression, its extent
/// and its CRC-32.
fn entry_bytes<'a>(zip: &mut Archive<'a>, bytes: &'a [u8], i: usize) -> Result<&'a [u8], String> {
    let name = entry_name(zip, i);
    let unreadable = |e: &dyn std::fmt::Display| format!("zip entry '{}' is unreadable ({e}): the file is truncated or corrupt", short(&name));
    let (size, crc) = {
        let e = zip.by_index_data(i).map_err(|e| unreadable(&e))?;
        if e.compression() != CompressionMethod::Stored {
            return Err(format!("zip entry '{}' is compressed ({}); torch.save writes uncompressed entries and only those are read here: {RESAVE_HINT}", short(&name), e.compression()));
        }
        if e.size() != e.compressed_size() {
            return Err(format!("zip entry '{}' is stored uncompressed but claims {} bytes stored and {} uncompressed: the file is corrupt", short(&name), e.compressed_size(), e.size()));
        }
        (e.size(), e.crc32())
    };
    let mut f = zip.by_index(i).map_err(|e| unreadable(&e))?;
    let start = f.data_start().ok_or_else(|| unreadable(&"no data offset"))?;
    let end = start
        .checked_add(size)
        .filter(|&end| end <= bytes.len() as u64)
        .ok_or_else(|| format!("zip entry '{}' claims {size} bytes from byte {start} but the file is only {} bytes long: it is truncated or corrupt", short(&name), bytes.len()))?;
    // torch.serialization.set_crc32_options(False) writes no checksum (0): nothing to check then.
    if crc != 0 {
        // The zip crate checks the CRC when the reader reaches the end; the copy goes to a sink.
        std::io::copy(&mut f, &mut std::io::sink()).map_err(|e| format!("zip entry '{}' fails its check ({e}): the file is corrupt; {RESAVE_HINT}", short(&name)))?;
    }
    Ok(&bytes[start as usize..end as usize])
}

fn entry_name(zip: &Archive<'_>, i: usize) -> String {
    match zip.name_for_index(i) {
        Some(Ok(n)) => n.into_owned(),
        _ => format!("#{i}"),
    }
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
