use gradcam_wasm::weights::legacy_pth::{read_legacy_pth, RawTensor};
use gradcam_wasm::weights::safetensors_writer::{write_safetensors, StoreAs};
use safetensors::{tensor::Dtype, SafeTensors};

const FIXTURE: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny_legacy.pth"));

fn t(name: &str, shape: &[usize], data: &[f32]) -> RawTensor {
    RawTensor { name: name.into(), shape: shape.to_vec(), data: data.to_vec() }
}

fn read_back(bytes: &[u8], name: &str) -> (Dtype, Vec<usize>, Vec<f32>) {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let v = st.tensor(name).unwrap();
    let data = match v.dtype() {
        Dtype::F32 => v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        Dtype::F16 => v.data().chunks_exact(2).map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect(),
        d => panic!("unexpected dtype {d:?}"),
    };
    (v.dtype(), v.shape().to_vec(), data)
}

fn sample() -> Vec<RawTensor> {
    let mut ts = read_legacy_pth(FIXTURE).unwrap();
    ts.push(t("z.many", &[3, 5], &(0..15).map(|i| (i as f32).sin() * 1e3 + 0.1234567).collect::<Vec<_>>()));
    ts
}

#[test]
fn f32_round_trip_is_exact() {
    let ts = sample();
    let meta = vec![("format".to_string(), "pt".to_string()), ("source".to_string(), "test".to_string())];
    let bytes = write_safetensors(&ts, StoreAs::F32, &meta).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), ts.len());
    for x in &ts {
        let (dt, shape, data) = read_back(&bytes, &x.name);
        assert_eq!((dt, &shape, &data), (Dtype::F32, &x.shape, &x.data), "{}", x.name);
    }
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let m = header.metadata().as_ref().unwrap();
    assert_eq!(m.get("format").map(String::as_str), Some("pt"));
    assert_eq!(m.get("source").map(String::as_str), Some("test"));
}

#[test]
fn f16_round_trip_within_rounding() {
    let ts = sample();
    let bytes = write_safetensors(&ts, StoreAs::F16, &[]).unwrap();
    for x in &ts {
        let (dt, shape, data) = read_back(&bytes, &x.name);
        assert_eq!((dt, &shape), (Dtype::F16, &x.shape));
        for (a, b) in x.data.iter().zip(&data) {
            assert_eq!(half::f16::from_f32(*a).to_f32(), *b); // exactly f16 rounding
            assert!((a - b).abs() <= a.abs() * 2f32.powi(-11) + 2f32.powi(-25), "{a} vs {b}");
        }
    }
}

#[test]
fn writer_errors() {
    let e = write_safetensors(&[t("a", &[2], &[1.0, 2.0]), t("a", &[1], &[1.0])], StoreAs::F32, &[]).unwrap_err();
    assert!(e.contains("twice"), "{e}");
    let e = write_safetensors(&[t("a", &[2, 2], &[1.0])], StoreAs::F32, &[]).unwrap_err();
    assert!(e.contains("4 elements"), "{e}");
    let e = write_safetensors(&[t("a", &[1], &[1e6])], StoreAs::F16, &[]).unwrap_err();
    assert!(e.contains("f16 range"), "{e}");
    let m = vec![("k".to_string(), "1".to_string()), ("k".to_string(), "2".to_string())];
    assert!(write_safetensors(&[], StoreAs::F32, &m).unwrap_err().contains("twice"));
    // empty file and empty tensors are fine
    let b = write_safetensors(&[t("e", &[0, 3], &[])], StoreAs::F16, &[]).unwrap();
    assert_eq!(read_back(&b, "e").1, [0, 3]);
}

/// With GRADCAM_PTH set: the whole real model through F32 (exact) and F16.
#[test]
fn real_file_round_trip() {
    let Ok(path) = std::env::var("GRADCAM_PTH") else {
        println!("note: GRADCAM_PTH is not set; skipping the real-file round trip");
        return;
    };
    let ts = read_legacy_pth(&std::fs::read(path).unwrap()).unwrap();
    let meta = [("format".to_string(), "pt".to_string())];
    let b32 = write_safetensors(&ts, StoreAs::F32, &meta).unwrap();
    let b16 = write_safetensors(&ts, StoreAs::F16, &meta).unwrap();
    println!("f32: {} bytes, f16: {} bytes", b32.len(), b16.len());
    for x in &ts {
        assert_eq!(read_back(&b32, &x.name).2, x.data);
        let h = read_back(&b16, &x.name).2;
        assert!(x.data.iter().zip(&h).all(|(a, b)| half::f16::from_f32(*a).to_f32() == *b));
    }
}
