//! Tests for the legacy torch.save reader. The fixture is made by scripts/gen_legacy_fixture.py
//! (stdlib pickle + fake torch classes); hostile inputs are written opcode by opcode below.
//! Set GRADCAM_PTH to efficientnet-lite0-57934424.pth to also check the real file.

use gradcam_wasm::weights::legacy_pth::{is_legacy_pth, read_legacy_pth, RawTensor};

const FIXTURE: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny_legacy.pth"));

fn find<'a>(ts: &'a [RawTensor], name: &str) -> &'a RawTensor {
    ts.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
}

#[test]
fn fixture_values_order_and_layouts() {
    assert!(is_legacy_pth(FIXTURE));
    let ts = read_legacy_pth(FIXTURE).unwrap();
    let names: Vec<&str> = ts.iter().map(|t| t.name.as_str()).collect();
    // num_batches_tracked (LongStorage) is skipped; dict order is kept.
    assert_eq!(names, ["a.weight", "a.t", "b.half", "b.bf16", "c.double", "d.offset", "scalar", "empty", "p", "v.view", "bcast.row"]);
    let t = find(&ts, "a.weight");
    assert_eq!(t.shape, [2, 3]);
    assert_eq!(t.data, [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);
    let t = find(&ts, "a.t"); // transposed view of [[0,1,2],[3,4,5]]
    assert_eq!(t.shape, [3, 2]);
    assert_eq!(t.data, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    let t = find(&ts, "b.half");
    assert_eq!(t.data, [0.5, -1.25, 65504.0, 2f32.powi(-24)]);
    let t = find(&ts, "b.bf16");
    assert_eq!(t.shape, [2, 2]);
    assert_eq!(t.data, [1.5, -2.0, 0.25, 3.0]);
    let t = find(&ts, "c.double");
    assert_eq!(t.data, [0.1f64 as f32, -1e-3f64 as f32, 12345.678f64 as f32]);
    let t = find(&ts, "d.offset"); // offset 2, size (2,2), stride (1,2) into a.weight's storage
    assert_eq!(t.data, [0.0, 1.0, 0.5, 1.5]);
    let t = find(&ts, "scalar");
    assert_eq!((t.shape.len(), t.data.as_slice()), (0, [42.0f32].as_slice()));
    let t = find(&ts, "empty");
    assert_eq!((t.shape.as_slice(), t.data.len()), ([0usize, 4].as_slice(), 0));
    assert_eq!(find(&ts, "p").data, [9.0, 8.0]); // torch._utils._rebuild_parameter
    assert_eq!(find(&ts, "v.view").data, [12.0, 13.0]); // legacy storage view (offset 1) + tensor offset 1
    assert_eq!(find(&ts, "bcast.row").data, [13.0, 14.0, 13.0, 14.0]); // stride-0 dim
}

#[test]
fn sniff_and_wrong_formats() {
    assert!(!is_legacy_pth(b""));
    assert!(!is_legacy_pth(b"\x80"));
    assert!(!is_legacy_pth(b"PK\x03\x04rest-of-a-zip"));
    assert!(!is_legacy_pth(&FIXTURE[..13]));
    assert!(is_legacy_pth(&FIXTURE[..14]));
    let e = read_legacy_pth(b"PK\x03\x04rest-of-a-zip").unwrap_err();
    assert!(e.contains("zip"), "{e}");
    let e = read_legacy_pth(b"\x80\x02K\x01.").unwrap_err();
    assert!(e.contains("magic"), "{e}");
    // Protocol-4 framing in front of the magic number is accepted by the sniffer.
    let mut framed = vec![0x80, 4, 0x95];
    framed.extend(13u64.to_le_bytes());
    framed.extend(&FIXTURE[2..15]);
    assert!(is_legacy_pth(&framed));
}

#[test]
fn every_truncation_is_an_error() {
    for n in 0..FIXTURE.len() {
        assert!(read_legacy_pth(&FIXTURE[..n]).is_err(), "prefix of {n} bytes accepted");
    }
    // Trailing bytes after the last storage are ignored (torch ignores them too).
    let mut longer = FIXTURE.to_vec();
    longer.extend(b"trailing");
    assert_eq!(read_legacy_pth(&longer).unwrap(), read_legacy_pth(FIXTURE).unwrap());
}

#[test]
fn byte_mutations_never_panic() {
    for i in 0..FIXTURE.len() {
        for v in [0x00, 0xff, 0x7f, 0x80, b'.', b'(', b'h', b'j', b'R', b'b', b't'] {
            let mut m = FIXTURE.to_vec();
            m[i] = v;
            let _ = read_legacy_pth(&m);
        }
        let mut m = FIXTURE.to_vec();
        m[i] ^= 0x01;
        let _ = read_legacy_pth(&m);
    }
    // Random multi-byte mutations, insertions and deletions (deterministic LCG).
    let mut s: u64 = 0x9e3779b97f4a7c15;
    let mut rnd = move |n: usize| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 33) as usize) % n.max(1)
    };
    for _ in 0..20_000 {
        let mut m = FIXTURE.to_vec();
        for _ in 0..1 + rnd(6) {
            match rnd(4) {
                0 => {
                    let i = rnd(m.len());
                    m[i] = rnd(256) as u8;
                }
                1 => {
                    let i = rnd(m.len());
                    m.insert(i, rnd(256) as u8);
                }
                2 if m.len() > 1 => {
                    let i = rnd(m.len());
                    m.remove(i);
                }
                _ => {
                    // copy a chunk from elsewhere (splices opcodes/memo refs)
                    let a = rnd(m.len());
                    let b = rnd(m.len());
                    let len = rnd(24).min(m.len() - a.max(b));
                    let chunk = m[a..a + len].to_vec();
                    m[b..b + len].copy_from_slice(&chunk);
                }
            }
        }
        let _ = read_legacy_pth(&m);
    }
}

// ---------------------------------------------------------------------------------------------
// hand-written files

const MAGIC_LE: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

fn header() -> Vec<u8> {
    let mut b = vec![0x80, 2, 0x8a, 10];
    b.extend(MAGIC_LE);
    b.push(b'.');
    b.extend([0x80, 2, b'M', 0xe9, 0x03, b'.']); // 1001
    b.extend([0x80, 2, b'}', b'.']); // sys info (empty dict is fine)
    b
}

#[derive(Default)]
struct W(Vec<u8>);
impl W {
    fn op(&mut self, o: &[u8]) -> &mut Self {
        self.0.extend_from_slice(o);
        self
    }
    fn s(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
        self
    }
    fn int(&mut self, v: u32) -> &mut Self {
        if v > i32::MAX as u32 {
            self.0.extend([0x8a, 5]); // LONG1, 5 bytes (positive)
            self.0.extend(v.to_le_bytes());
            self.0.push(0);
        } else {
            self.0.push(b'J');
            self.0.extend(v.to_le_bytes());
        }
        self
    }
    fn global(&mut self, m: &str, n: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend(format!("{m}\n{n}\n").as_bytes());
        self
    }
    fn ints(&mut self, v: &[u32]) -> &mut Self {
        self.op(b"(");
        for &x in v {
            self.int(x);
        }
        self.op(b"t")
    }
}

struct Entry<'a> {
    name: &'a str,
    class: &'a str,
    key: &'a str,
    numel: u32,
    offset: u32,
    shape: &'a [u32],
    stride: &'a [u32],
}

/// state dict pickle + key list + storages (claimed count, raw bytes).
fn file(entries: &[Entry], keys: &[&str], storages: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut b = header();
    let mut w = W::default();
    w.op(&[0x80, 2]).global("collections", "OrderedDict").op(b")R");
    for e in entries {
        w.s(e.name).global("torch._utils", "_rebuild_tensor_v2").op(b"(");
        w.op(b"(").s("storage").global("torch", e.class).s(e.key).s("cpu").int(e.numel).op(b"NtQ");
        w.int(e.offset).ints(e.shape).ints(e.stride).op(&[0x89]).op(b"N").op(b"tR").op(b"s");
    }
    w.op(b".");
    b.extend(w.0);
    let mut k = W::default();
    k.op(&[0x80, 2]).op(b"]").op(b"(");
    for key in keys {
        k.s(key);
    }
    k.op(b"e.");
    b.extend(k.0);
    for (count, data) in storages {
        b.extend(count.to_le_bytes());
        b.extend(data);
    }
    b
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn one<'a>(shape: &'a [u32], stride: &'a [u32], offset: u32, numel: u32) -> Entry<'a> {
    Entry { name: "w", class: "FloatStorage", key: "0", numel, offset, shape, stride }
}

#[test]
fn hand_written_file_reads() {
    let f = file(&[one(&[2, 2], &[1, 2], 0, 4)], &["0"], &[(4, f32_bytes(&[1.0, 2.0, 3.0, 4.0]))]);
    let ts = read_legacy_pth(&f).unwrap();
    assert_eq!(ts, [RawTensor { name: "w".into(), shape: vec![2, 2], data: vec![1.0, 3.0, 2.0, 4.0] }]);
}

fn err(f: &[u8]) -> String {
    let e = read_legacy_pth(f).unwrap_err();
    eprintln!("{e}");
    e
}

#[test]
fn layout_errors() {
    let data = || vec![(4u64, f32_bytes(&[1.0, 2.0, 3.0, 4.0]))];
    assert!(err(&file(&[one(&[2, 2], &[2, 1], 1, 4)], &["0"], &data())).contains("reaches element 4"));
    assert!(err(&file(&[one(&[3, 2], &[2, 1], 0, 4)], &["0"], &data())).contains("reaches element"));
    assert!(err(&file(&[one(&[1000, 1000], &[0, 0], 0, 4)], &["0"], &data())).contains("broadcast"));
    assert!(err(&file(&[one(&[2, 2], &[2], 0, 4)], &["0"], &data())).contains("dims"));
    const BIG: u32 = u32::MAX;
    assert!(read_legacy_pth(&file(&[one(&[BIG, BIG, BIG], &[1, 1, 1], 0, 4)], &["0"], &data())).is_err());
    assert!(read_legacy_pth(&file(&[one(&[2, 2], &[BIG, BIG], BIG, 4)], &["0"], &data())).is_err());
}

#[test]
fn storage_errors() {
    let e = one(&[4], &[1], 0, 4);
    // count in the data section disagrees with the persistent id
    assert!(err(&file(&[one(&[4], &[1], 0, 4)], &["0"], &[(3, f32_bytes(&[1.0, 2.0, 3.0]))])).contains("declares"));
    // huge claimed counts never allocate
    let huge = |n: u32| file(&[one(&[1], &[1], 0, n)], &["0"], &[(n as u64, vec![0; 16])]);
    assert!(err(&huge(u32::MAX)).contains("remain"));
    let mut f = file(&[one(&[1], &[1], 0, 4)], &["0"], &[]);
    f.extend(u64::MAX.to_le_bytes());
    assert!(read_legacy_pth(&f).is_err());
    // key list mentions an unknown storage / omits a used one / repeats one
    assert!(err(&file(&[e], &["0", "zz"], &[(4, f32_bytes(&[0.0; 4]))])).contains("not used"));
    assert!(err(&file(&[one(&[4], &[1], 0, 4)], &[], &[])).contains("missing"));
    let d = f32_bytes(&[0.0; 4]);
    assert!(err(&file(&[one(&[4], &[1], 0, 4)], &["0", "0"], &[(4, d.clone()), (4, d)])).contains("twice"));
    // unsupported storage class
    let c = Entry { class: "ComplexFloatStorage", ..one(&[1], &[1], 0, 1) };
    assert!(err(&file(&[c], &["0"], &[(1, vec![0; 8])])).contains("unsupported storage type"));
    // the same key declared with two types
    let a = one(&[1], &[1], 0, 1);
    let b = Entry { name: "x", class: "HalfStorage", ..one(&[1], &[1], 0, 1) };
    assert!(err(&file(&[a, b], &["0"], &[(1, vec![0; 4])])).contains("declared twice"));
}

#[test]
fn aliasing_budget() {
    // 10 tensors all reading the same 4-element storage: 40 > 4 * 4 elements.
    let names: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    let es: Vec<Entry> = names.iter().map(|n| Entry { name: n, ..one(&[4], &[1], 0, 4) }).collect();
    assert!(err(&file(&es, &["0"], &[(4, f32_bytes(&[0.0; 4]))])).contains("alias"));
    let es: Vec<Entry> = names[..4].iter().map(|n| Entry { name: n, ..one(&[4], &[1], 0, 4) }).collect();
    assert_eq!(read_legacy_pth(&file(&es, &["0"], &[(4, f32_bytes(&[0.0; 4]))])).unwrap().len(), 4);
}

fn with_state_dict_pickle(p: &[u8]) -> Vec<u8> {
    let mut b = header();
    b.extend(p);
    b.extend([0x80, 2, b']', b'.']);
    b
}

#[test]
fn hostile_pickles() {
    // BINUNICODE claiming 4 GiB
    let e = err(&with_state_dict_pickle(b"\x80\x02X\xff\xff\xff\xffabc."));
    assert!(e.contains("ends inside") && e.contains("byte 27"), "{e}");
    // BINUNICODE8 / BINBYTES8 claiming 2^64-1
    assert!(read_legacy_pth(&with_state_dict_pickle(b"\x8d\xff\xff\xff\xff\xff\xff\xff\xffab.")).is_err());
    assert!(read_legacy_pth(&with_state_dict_pickle(b"\x8e\xff\xff\xff\xff\xff\xff\xff\xffab.")).is_err());
    // FRAME claiming more than remains
    assert!(read_legacy_pth(&with_state_dict_pickle(b"\x95\xff\xff\xff\xff\xff\xff\xff\x7f.")).is_err());
    // LONG1 of 255 bytes and LONG4 of 2^31-1 bytes
    let mut p = vec![0x8a, 255];
    p.extend([0x41; 255]);
    p.push(b'.');
    assert!(err(&with_state_dict_pickle(&p)).contains("not a state dict"));
    assert!(read_legacy_pth(&with_state_dict_pickle(b"\x8b\xff\xff\xff\x7fab.")).is_err());
    // stack underflow, unbalanced marks, bad memo, unknown opcode, missing STOP
    for p in [&b"R."[..], b"(t(.", b"h\x05.", b"j\x00\x00\x01\x00.", b"\xff.", b"N", b"(0.", b"s.", b"Na."] {
        assert!(read_legacy_pth(&with_state_dict_pickle(p)).is_err(), "{p:?}");
    }
    // Memo bomb: x = (x, x) repeated 200k times is 2^200000 objects for a cloning VM; linear here.
    let mut p = vec![b']', b'q', 0];
    for _ in 0..200_000 {
        p.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
    }
    p.push(b'.');
    assert!(err(&with_state_dict_pickle(&p)).contains("not a state dict"));
    // Nesting 900k levels deep: nothing recurses, nothing overflows.
    let mut p = vec![b'N'];
    p.extend(std::iter::repeat_n(0x85u8, 900_000));
    p.push(b'.');
    assert!(err(&with_state_dict_pickle(&p)).contains("not a state dict"));
    // Object count is capped (memory stays bounded for inputs made of 1-byte opcodes).
    let mut p = vec![b'N'; 1_500_000];
    p.push(b'.');
    assert!(err(&with_state_dict_pickle(&p)).contains("objects in one pickle"));
    // A list that contains itself (cycle) as the state dict's only value.
    let p = b"}q\x00X\x01\x00\x00\x00k]q\x01h\x01a\x73.";
    assert!(read_legacy_pth(&with_state_dict_pickle(p)).is_err());
}

#[test]
fn non_tensor_values_and_wrappers() {
    // {'state_dict': OrderedDict(w=tensor), 'epoch': 3}: unwrapped; plain values are skipped.
    let mut w = W::default();
    w.op(&[0x80, 2]).op(b"}").s("epoch").int(3).op(b"s").s("state_dict");
    w.global("collections", "OrderedDict").op(b")R").s("w").global("torch._utils", "_rebuild_tensor_v2").op(b"(");
    w.op(b"(").s("storage").global("torch", "FloatStorage").s("0").s("cpu").int(2).op(b"NtQ");
    w.int(0).ints(&[2]).ints(&[1]).op(&[0x89]).op(b"NtR").op(b"s").s("note").s("hello").op(b"s").op(b"s.");
    let mut f = header();
    f.extend(w.0);
    f.extend([0x80, 2, b']', b'X', 1, 0, 0, 0, b'0', b'a', b'.']);
    f.extend(2u64.to_le_bytes());
    f.extend(f32_bytes(&[5.0, 6.0]));
    let ts = read_legacy_pth(&f).unwrap();
    assert_eq!(ts, [RawTensor { name: "w".into(), shape: vec![2], data: vec![5.0, 6.0] }]);
    // An unknown rebuild function is an error, not a silent skip.
    let mut w = W::default();
    w.op(&[0x80, 2]).op(b"}").s("q").global("torch._utils", "_rebuild_qtensor").op(b")R").op(b"s.");
    assert!(err(&with_state_dict_pickle(&w.0)).contains("_rebuild_qtensor"));
}

/// Runs only when GRADCAM_PTH points at efficientnet-lite0-57934424.pth (no download in tests).
#[test]
fn real_efficientnet_lite0_file() {
    let Ok(path) = std::env::var("GRADCAM_PTH") else {
        println!("note: GRADCAM_PTH is not set; skipping the real-file check");
        return;
    };
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("GRADCAM_PTH={path}: {e}"));
    let ts = read_legacy_pth(&bytes).unwrap();
    assert_eq!(ts.len(), 247); // 296 entries minus 49 num_batches_tracked
    let total: usize = ts.iter().map(|t| t.data.len()).sum();
    let params: usize = ts.iter().filter(|t| !t.name.contains(".running_")).map(|t| t.data.len()).sum();
    assert_eq!((total, params), (4_694_024, 4_652_008));
    assert_eq!(ts[0].name, "_conv_stem.weight");
    assert_eq!(ts[0].shape, [32, 3, 3, 3]);
    let last = ts.last().unwrap();
    assert_eq!((last.name.as_str(), last.shape.as_slice()), ("_fc.bias", [1000usize].as_slice()));
    let fc = find(&ts, "_fc.weight");
    assert_eq!(fc.shape, [1000, 1280]);
    // Checked against a stdlib-only Python reader (pickle + struct + array) (stdlib pickle + struct + array):
    // f32 bits of the first values and the in-order f64 sum.
    let bits = |t: &RawTensor| t.data[..3].iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let sum = |t: &RawTensor| t.data.iter().map(|&v| v as f64).sum::<f64>().to_bits();
    assert_eq!(bits(&ts[0]), [0xbf8e1f7e, 0xbfa785ca, 0xbc266930]); // stored permuted (stride 1,32,288,96)
    assert_eq!(sum(&ts[0]), 0xc03acfb660a88000);
    assert_eq!(bits(fc), [0xbd3ad202, 0xbdc1f6a4, 0xbd68d299]);
    assert_eq!(sum(fc), 0xc07d6a1efee3f8c0);
    assert_eq!(bits(last), [0x3d034af6, 0xbc82f492, 0x3bad5de7]);
    assert_eq!(sum(last), 0xbfa9819c3b800000);
    let dw = find(&ts, "_blocks.0._depthwise_conv.weight");
    assert_eq!((dw.shape.as_slice(), bits(dw)), ([32usize, 1, 3, 3].as_slice(), vec![0xbe2dc3f7, 0x3e574db8, 0xbd04abc4]));
    assert_eq!(sum(dw), 0x4014e2c1eac00000);
}
