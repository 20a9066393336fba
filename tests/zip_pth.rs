//! Zip-format `torch.save` files (PyTorch >= 1.6): real files written by torch 2.15
//! (scripts/gen-zip-pth-fixtures.py) are read value for value, checkpoints and DataParallel
//! prefixes are unwrapped, pickled modules are refused with a hint, and broken archives made from
//! the good fixtures (truncated, sizes patched, entries removed, bytes flipped) give an error
//! that says what is wrong: never a panic, never an allocation of a size the file merely claims.

use gradcam_wasm::weights::legacy_pth::{read_legacy_pth, RawTensor};
use gradcam_wasm::weights::safetensors_writer::{write_safetensors, StoreAs};
use gradcam_wasm::weights::zip_pth::{is_zip, read_zip_pth};
use gradcam_wasm::weights::WeightMap;
use std::io::{Cursor, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

#[path = "common/largest_allocation.rs"]
mod largest_allocation;

#[global_allocator]
static ALLOC: largest_allocation::Tracker = largest_allocation::Tracker;

// ---------------------------------------------------------------------------------------------
// fixtures and helpers

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/zip_pth/", $name)).as_slice()
    };
}

const TINY_F32: &[u8] = fixture!("tiny_f32.pth");
const TINY_F16: &[u8] = fixture!("tiny_f16.pth");
const TINY_BF16: &[u8] = fixture!("tiny_bf16.pth");
const CHECKPOINT: &[u8] = fixture!("checkpoint.pth");
const DATA_PARALLEL: &[u8] = fixture!("data_parallel.pth");
const VIEWS: &[u8] = fixture!("views.pth");
const NO_CRC: &[u8] = fixture!("no_crc.pth");
const WHOLE_MODEL: &[u8] = fixture!("whole_model.pth");
const NO_TENSORS: &[u8] = fixture!("no_tensors.pth");
const LEGACY_CHECKPOINT: &[u8] = fixture!("legacy_checkpoint.pth");
const LEGACY_WHOLE_MODEL: &[u8] = fixture!("legacy_whole_model.pth");
const EXPECTED: &[u8] = fixture!("expected.safetensors");

/// The float tensors of the tiny model's state dict, in state-dict order.
const TINY_KEYS: [&str; 8] = ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "5.weight", "5.bias"];

/// The tensors written by the generator, by '<fixture>/<key>'.
fn expected(fixture: &str) -> Vec<RawTensor> {
    let st = safetensors::SafeTensors::deserialize(EXPECTED).unwrap();
    let prefix = format!("{fixture}/");
    let mut out: Vec<RawTensor> = st
        .tensors()
        .into_iter()
        .filter_map(|(name, v)| {
            let key = name.strip_prefix(&prefix)?.to_string();
            let data = v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            Some(RawTensor { name: key, shape: v.shape().to_vec(), data })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "expected.safetensors has no tensors for '{fixture}'");
    out
}

/// Same names, shapes and bit-identical values, whatever the order.
#[track_caller]
fn assert_same(mut got: Vec<RawTensor>, want: &[RawTensor]) {
    got.sort_by(|a, b| a.name.cmp(&b.name));
    let names = |ts: &[RawTensor]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(want));
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.shape, w.shape, "{}", g.name);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&g.data), bits(&w.data), "{}", g.name);
    }
}

/// The WeightMap's tensors (all taken), as RawTensors.
fn map_tensors(m: &WeightMap) -> Vec<RawTensor> {
    let names: Vec<String> = m.names().map(String::from).collect();
    names
        .into_iter()
        .map(|n| {
            let shape: Vec<Option<usize>> = m.shape(&n).unwrap().iter().map(|&d| Some(d)).collect();
            let p = m.take(&n, &shape).unwrap();
            RawTensor { name: n, shape: p.shape, data: p.data }
        })
        .collect()
}

/// `WeightMap::from_bytes` on `bytes` must fail without a panic and without one allocation over
/// 16x the input plus 1 MiB; returns the message.
fn load_err(case: &str, bytes: &[u8]) -> String {
    match load(case, bytes) {
        Ok(_) => panic!("{case}: a bad file was accepted"),
        Err(e) => e,
    }
}

/// `WeightMap::from_bytes`, checked for panics and for the allocation bound.
fn load(case: &str, bytes: &[u8]) -> Result<WeightMap, String> {
    let (r, peak) = largest_allocation::largest_during(|| catch_unwind(AssertUnwindSafe(|| WeightMap::from_bytes(bytes))));
    let limit = 16 * bytes.len() + (1 << 20);
    assert!(peak <= limit, "{case}: one allocation of {peak} bytes for a {}-byte input", bytes.len());
    match r {
        Err(_) => panic!("{case}: WeightMap::from_bytes panicked"),
        Ok(r) => r.map_err(|e| e.to_string()),
    }
}

/// Asserts that the message holds every one of `parts` (case-insensitively).
#[track_caller]
fn says(msg: &str, parts: &[&str]) {
    let low = msg.to_lowercase();
    for p in parts {
        assert!(low.contains(&p.to_lowercase()), "message lacks '{p}': {msg}");
    }
}

/// A copy of the archive, rewritten by the zip crate with stored entries: `edit` gets each
/// entry's name and bytes and returns what to write instead (`None` drops the entry).
fn rebuild(src: &[u8], mut edit: impl FnMut(&str, Vec<u8>) -> Option<(String, Vec<u8>)>) -> Vec<u8> {
    let mut zin = ZipArchive::new(Cursor::new(src)).unwrap();
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        if let Some((name, data)) = edit(&name, data) {
            w.start_file(name, opts).unwrap();
            w.write_all(&data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

/// Where a name's local (`PK\x03\x04`) and central (`PK\x01\x02`) headers start.
fn header_offsets(bytes: &[u8], name: &str) -> (usize, usize) {
    let find = |sig: &[u8], name_len_at: usize, name_at: usize| {
        (0..bytes.len() - name_at)
            .find(|&i| {
                bytes[i..].starts_with(sig) && {
                    let n = u16::from_le_bytes([bytes[i + name_len_at], bytes[i + name_len_at + 1]]) as usize;
                    bytes.get(i + name_at..i + name_at + n) == Some(name.as_bytes())
                }
            })
            .unwrap_or_else(|| panic!("no header for '{name}'"))
    };
    (find(b"PK\x03\x04", 26, 30), find(b"PK\x01\x02", 28, 46))
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// A xorshift generator: deterministic mutations.
fn rng(seed: u64) -> impl FnMut(usize) -> usize {
    let mut s = seed;
    move |n: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % n.max(1) as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// good files

#[test]
fn reads_each_float_dtype_exactly() {
    for (tag, bytes) in [("tiny_f32", TINY_F32), ("tiny_f16", TINY_F16), ("tiny_bf16", TINY_BF16)] {
        assert!(is_zip(bytes));
        let ts = read_zip_pth(bytes).unwrap_or_else(|e| panic!("{tag}: {e}"));
        // State-dict order, num_batches_tracked (int64) skipped.
        assert_eq!(ts.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), TINY_KEYS, "{tag}");
        assert_eq!(ts[0].shape, [4, 3, 3, 3]);
        assert_same(ts, &expected(tag));
    }
    // The dtypes really differ (f16 and bf16 round the f32 weights differently).
    assert_ne!(expected("tiny_f16")[0].data, expected("tiny_f32")[0].data);
    assert_ne!(expected("tiny_f16")[0].data, expected("tiny_bf16")[0].data);
}

#[test]
fn views_of_one_storage() {
    // Transposed, offset and strided views of one storage come out contiguous, with their values.
    assert_same(read_zip_pth(VIEWS).unwrap(), &expected("views"));
}

#[test]
fn file_without_checksums_reads() {
    // torch.serialization.set_crc32_options(False) writes CRC 0 for every entry.
    assert_same(read_zip_pth(NO_CRC).unwrap(), &expected("tiny_f32"));
}

#[test]
fn from_bytes_sniffs_every_format() {
    let want = expected("tiny_f32");
    assert_same(map_tensors(&load("zip", TINY_F32).unwrap()), &want);
    assert_same(map_tensors(&load("legacy", LEGACY_CHECKPOINT).unwrap()), &want);
    let st = write_safetensors(&want, StoreAs::F32, &[]).unwrap();
    assert_same(map_tensors(&load("safetensors", &st).unwrap()), &want);
    // The direct safetensors entry point still names the zip format, and the way out.
    let e = WeightMap::from_safetensors(TINY_F32).unwrap_err().to_string();
    says(&e, &["zip", "WeightMap::from_bytes"]);
}

#[test]
fn checkpoint_dicts_are_unwrapped() {
    // {'epoch': 3, 'state_dict': sd, 'best_acc': 0.5}, in both formats.
    let want = expected("tiny_f32");
    assert_same(read_zip_pth(CHECKPOINT).unwrap(), &want);
    assert_same(read_legacy_pth(LEGACY_CHECKPOINT).unwrap(), &want);
    // Other keys, in order of preference, by rewriting the checkpoint's pickle.
    let pkl_with_key = |key: &str| {
        rebuild(CHECKPOINT, |name, data| {
            let data = if name.ends_with("data.pkl") { replace_key(&data, "state_dict", key) } else { data };
            Some((name.to_string(), data))
        })
    };
    for key in ["model_state_dict", "model", "net", "ema"] {
        assert_same(read_zip_pth(&pkl_with_key(key)).unwrap(), &want);
    }
    // An unknown key is not guessed at: the message lists the keys.
    let e = load_err("unknown key", &pkl_with_key("weights"));
    says(&e, &["no tensors", "'epoch'", "'weights'", "torch.save(model.state_dict(), 'model.pth')"]);
}

/// The pickle with the BINUNICODE string `from` replaced by `to` (protocol 2 has no shorter form).
fn replace_key(pkl: &[u8], from: &str, to: &str) -> Vec<u8> {
    let binunicode = |s: &str| [&[b'X'][..], &(s.len() as u32).to_le_bytes(), s.as_bytes()].concat();
    let (old, new) = (binunicode(from), binunicode(to));
    let at = pkl.windows(old.len()).position(|w| w == old).expect("key in the pickle");
    [&pkl[..at], &new[..], &pkl[at + old.len()..]].concat()
}

#[test]
fn data_parallel_prefix_is_stripped() {
    let ts = read_zip_pth(DATA_PARALLEL).unwrap();
    assert!(ts.iter().all(|t| t.name.starts_with("module.")), "the reader keeps the file's names");
    let want = expected("tiny_f32");
    assert_same(map_tensors(&load("data parallel", DATA_PARALLEL).unwrap()), &want);
    // safetensors files get the same treatment...
    let prefixed: Vec<RawTensor> = want.iter().map(|t| RawTensor { name: format!("module.{}", t.name), ..t.clone() }).collect();
    let st = write_safetensors(&prefixed, StoreAs::F32, &[]).unwrap();
    assert_same(map_tensors(&load("prefixed safetensors", &st).unwrap()), &want);
    // ...but a prefix on only some keys is a name like any other.
    let mut mixed = prefixed.clone();
    mixed[0].name = want[0].name.clone();
    let st = write_safetensors(&mixed, StoreAs::F32, &[]).unwrap();
    assert_same(map_tensors(&load("mixed prefixes", &st).unwrap()), &mixed);
}

#[test]
fn pickled_modules_and_empty_dicts_are_refused() {
    for (case, bytes) in [("zip", WHOLE_MODEL), ("legacy", LEGACY_WHOLE_MODEL)] {
        let e = load_err(case, bytes);
        says(&e, &["whole pickled model", "torch.nn.modules.container.Sequential", "torch.save(model.state_dict(), 'model.pth')"]);
    }
    let e = load_err("no tensors", NO_TENSORS);
    says(&e, &["no tensors", "'epoch'", "'lr'", "torch.save(model.state_dict(), 'model.pth')"]);
    // A checkpoint whose 'model' entry is a pickled module.
    let module_pkl = {
        let mut z = ZipArchive::new(Cursor::new(WHOLE_MODEL)).unwrap();
        let mut v = Vec::new();
        z.by_name("whole_model/data.pkl").unwrap().read_to_end(&mut v).unwrap();
        v
    };
    // {'model': <module>}: PROTO 2, EMPTY_DICT, 'model', <the module pickle's body>, SETITEM, STOP.
    let body = &module_pkl[2..module_pkl.len() - 1];
    let pkl = [&[0x80, 2, b'}', 0x8c, 5][..], b"model", body, b"s."].concat();
    let wrapped = rebuild(WHOLE_MODEL, |name, data| Some((name.to_string(), if name.ends_with("data.pkl") { pkl.clone() } else { data })));
    says(&load_err("checkpoint of a module", &wrapped), &["'model' entry", "whole pickled model", "model.state_dict()"]);
}

// ---------------------------------------------------------------------------------------------
// broken files

#[test]
fn every_truncation_is_an_error() {
    for n in 0..TINY_F32.len() {
        let e = load_err(&format!("prefix of {n} bytes"), &TINY_F32[..n]);
        match n {
            0 => says(&e, &["empty"]),
            1..=3 => says(&e, &["too short"]),
            _ => says(&e, &["zip", "truncated or corrupt"]),
        }
    }
}

#[test]
fn unreadable_zip_says_what_to_do() {
    // Kept from the days when zip files were refused: the message still says "zip" and "convert".
    says(&load_err("stub", b"PK\x03\x04rest-of-a-zip-file"), &["zip", "truncated", "convert"]);
}

#[test]
fn entry_larger_than_the_file() {
    let (local, central) = header_offsets(TINY_F32, "tiny_f32/data/0");
    assert_eq!(get_u32(TINY_F32, central + 20), 432, "the fixture's layout changed");
    for (case, fields) in [("central", vec![central + 20, central + 24]), ("both", vec![local + 18, local + 22, central + 20, central + 24])] {
        let mut m = TINY_F32.to_vec();
        for at in fields {
            put_u32(&mut m, at, 0x7fff_0000);
        }
        says(&load_err(case, &m), &["tiny_f32/data/0", "claims 2147418112 bytes", "truncated"]);
    }
}

#[test]
fn missing_storage_names_its_key() {
    // Renamed in place (same length, so nothing else moves)...
    let mut m = TINY_F32.to_vec();
    let (local, central) = header_offsets(TINY_F32, "tiny_f32/data/0");
    m[local + 30 + 14] = b'Z';
    m[central + 46 + 14] = b'Z';
    says(&load_err("renamed", &m), &["storage '0'", "no zip entry 'tiny_f32/data/0'", "0.weight"]);
    // ...or dropped.
    let m = rebuild(TINY_F32, |n, d| (n != "tiny_f32/data/7").then(|| (n.to_string(), d)));
    says(&load_err("removed", &m), &["storage '7'", "no zip entry 'tiny_f32/data/7'", "5.weight"]);
    // An integer storage nobody reads may be missing (num_batches_tracked is skipped).
    let m = rebuild(TINY_F32, |n, d| (n != "tiny_f32/data/6").then(|| (n.to_string(), d)));
    assert_same(map_tensors(&load("int storage removed", &m).unwrap()), &expected("tiny_f32"));
}

#[test]
fn storage_shorter_than_its_elements() {
    let m = rebuild(TINY_F32, |n, mut d| {
        if n == "tiny_f32/data/0" {
            d.truncate(428);
        }
        Some((n.to_string(), d))
    });
    says(&load_err("short storage", &m), &["storage '0'", "holds 428 bytes", "need 432", "0.weight"]);
    let m = rebuild(TINY_F16, |n, d| Some((n.to_string(), if n == "tiny_f16/data/1" { Vec::new() } else { d })));
    says(&load_err("empty storage", &m), &["storage '1'", "holds 0 bytes", "F16", "need 8"]);
}

#[test]
fn missing_data_pkl_and_other_layouts() {
    let m = rebuild(TINY_F32, |n, d| (!n.ends_with("data.pkl")).then(|| (n.to_string(), d)));
    says(&load_err("no data.pkl", &m), &["no '<folder>/data.pkl'", "tiny_f32/byteorder"]);
    let m = rebuild(TINY_F32, |n, d| Some((n.replacen("tiny_f32/", "", 1), d)));
    says(&load_err("no top folder", &m), &["data.pkl"]);
    // Every entry twice, under two folders: two data.pkl, and no telling which is meant.
    let mut zin = ZipArchive::new(Cursor::new(TINY_F32)).unwrap();
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for folder in ["tiny_f32/", "other/"] {
        for i in 0..zin.len() {
            let mut f = zin.by_index(i).unwrap();
            let name = f.name().unwrap().replacen("tiny_f32/", folder, 1);
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            w.start_file(name, opts).unwrap();
            w.write_all(&data).unwrap();
        }
    }
    let m = w.finish().unwrap().into_inner();
    says(&load_err("two data.pkl", &m), &["2 data.pkl entries", "'tiny_f32/'", "'other/'"]);
}

#[test]
fn big_endian_byteorder() {
    let m = rebuild(TINY_F32, |n, d| Some((n.to_string(), if n.ends_with("/byteorder") { b"big".to_vec() } else { d })));
    says(&load_err("big", &m), &["big-endian", "'big'", "little-endian"]);
    let m = rebuild(TINY_F32, |n, d| Some((n.to_string(), if n.ends_with("/byteorder") { b"middle".to_vec() } else { d })));
    says(&load_err("middle", &m), &["'middle'", "not 'little' or 'big'"]);
    // Files from older torch versions have no byteorder entry: little-endian.
    let m = rebuild(TINY_F32, |n, d| (!n.ends_with("/byteorder")).then(|| (n.to_string(), d)));
    assert_same(read_zip_pth(&m).unwrap(), &expected("tiny_f32"));
}

#[test]
fn compressed_entries_and_bad_checksums() {
    // Method patched to deflate (8): refused by name, not misread.
    let mut m = TINY_F32.to_vec();
    let (local, central) = header_offsets(TINY_F32, "tiny_f32/data/0");
    m[local + 8] = 8;
    m[central + 10] = 8;
    says(&load_err("deflated", &m), &["tiny_f32/data/0", "compressed", "uncompressed"]);
    // One flipped bit in a weight: the CRC-32 says so.
    let mut m = TINY_F32.to_vec();
    let data_at = local + 30 + 15 + u16::from_le_bytes([m[local + 28], m[local + 29]]) as usize;
    m[data_at + 100] ^= 0x10;
    says(&load_err("bit flip", &m), &["tiny_f32/data/0", "checksum", "corrupt"]);
}

#[test]
fn entry_count_is_bounded() {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for i in 0..100_001 {
        w.start_file(format!("{i:x}"), opts).unwrap();
    }
    let m = w.finish().unwrap().into_inner();
    says(&load_err("many entries", &m), &["100001 entries"]);
}

#[test]
fn rebuilt_fixture_still_reads() {
    // The hostile cases above are built with `rebuild`; unedited, it must give a good file.
    let m = rebuild(TINY_F32, |n, d| Some((n.to_string(), d)));
    assert_same(read_zip_pth(&m).unwrap(), &expected("tiny_f32"));
}

#[test]
fn byte_mutations_never_panic() {
    // Every byte of the tiny file set to a few values (the CRC catches most in the data, but the
    // zip structures are parsed first), then random multi-byte edits. The file without checksums
    // lets the edits through to the pickle machine and the storage layouts.
    for (case, file) in [("crc", TINY_F32), ("no crc", NO_CRC)] {
        for i in 0..file.len() {
            for v in [0x00, 0xff, 0x80] {
                let mut m = file.to_vec();
                m[i] = v;
                let _ = load(&format!("{case}: byte {i} = {v:#x}"), &m);
            }
        }
    }
    let mut rnd = rng(0x2545f4914f6cdd1d);
    for k in 0..600 {
        let file = [TINY_F32, NO_CRC, VIEWS, CHECKPOINT][k % 4];
        let mut m = file.to_vec();
        for _ in 0..1 + rnd(4) {
            let i = rnd(m.len());
            match rnd(4) {
                0 | 1 => m[i] = rnd(256) as u8,
                2 => m.insert(i, rnd(256) as u8),
                _ => {
                    m.remove(i);
                }
            }
        }
        let _ = load(&format!("random mutation {k}"), &m);
    }
}

#[test]
fn pickle_mutations_never_panic() {
    // Edits inside data.pkl, with the archive rebuilt around them (so its CRC is right and the
    // pickle machine sees every edit).
    let pkl = {
        let mut z = ZipArchive::new(Cursor::new(CHECKPOINT)).unwrap();
        let mut v = Vec::new();
        z.by_name("checkpoint/data.pkl").unwrap().read_to_end(&mut v).unwrap();
        v
    };
    let mut rnd = rng(0x9e3779b97f4a7c15);
    let mut accepted = 0;
    for k in 0..300 {
        let mut p = pkl.clone();
        for _ in 0..1 + rnd(3) {
            let i = rnd(p.len());
            match rnd(3) {
                0 => p[i] = rnd(256) as u8,
                1 => p.insert(i, rnd(256) as u8),
                _ => {
                    p.remove(i);
                }
            }
        }
        let m = rebuild(CHECKPOINT, |n, d| Some((n.to_string(), if n.ends_with("data.pkl") { p.clone() } else { d })));
        if load(&format!("pickle mutation {k}"), &m).is_ok() {
            accepted += 1;
        }
    }
    // Some edits hit harmless bytes (a float's value, a memo index); most must be caught.
    assert!(accepted < 150, "{accepted} of 300 mutated pickles loaded");
}

// ---------------------------------------------------------------------------------------------
// real-size files (not committed)

/// Runs only when GRADCAM_ZIP_PTH_DIR holds the files of
/// `scripts/gen-zip-pth-fixtures.py --real DIR` (torchvision resnet18, ~47 MB each).
#[test]
fn real_torchvision_files() {
    let Ok(dir) = std::env::var("GRADCAM_ZIP_PTH_DIR") else {
        println!("note: GRADCAM_ZIP_PTH_DIR is not set; skipping the real-file check");
        return;
    };
    let read = |f: &str| std::fs::read(format!("{dir}/{f}")).unwrap_or_else(|e| panic!("{dir}/{f}: {e}"));
    let exp = read("resnet18_expected.safetensors");
    let st = safetensors::SafeTensors::deserialize(&exp).unwrap();
    let want = |tag: &str| -> Vec<RawTensor> {
        let mut v: Vec<RawTensor> = st
            .tensors()
            .into_iter()
            .filter_map(|(name, t)| {
                let name = name.strip_prefix(&format!("{tag}/"))?.to_string();
                let data = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
                Some(RawTensor { name, shape: t.shape().to_vec(), data })
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    };
    let (f32s, f16s) = (want("f32"), want("f16"));
    assert_eq!(f32s.len(), 102); // 122 entries minus 20 num_batches_tracked
    for (file, want) in [("resnet18.pth", &f32s), ("resnet18_f16.pth", &f16s), ("resnet18_checkpoint.pth", &f32s)] {
        let bytes = read(file);
        let map = WeightMap::from_bytes(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_same(map_tensors(&map), want);
        let map = WeightMap::from_bytes(&bytes).unwrap();
        let arch = gradcam_wasm::Arch::detect(&map).unwrap();
        assert_eq!(arch, gradcam_wasm::Arch::ResNet18, "{file}");
        let graph = arch.build(&map).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(graph.num_classes, 1000);
        assert!(map.untaken().is_empty(), "{file}: {:?}", map.untaken());
    }
}
