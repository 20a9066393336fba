//! Reading and writing NumPy `.npy` arrays of floats (for test vectors and
//! maps exported from PyTorch).
//!
//! Format: magic `\x93NUMPY`, version (1, 2 or 3), header length (u16 for
//! v1, u32 for v2/v3, little-endian), then a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`, then the
//! raw data. We read little-endian `<f4` and `<f8` (converted to f32), C
//! order only; anything else is a clear error rather than a guess.

const MAGIC: &[u8] = b"\x93NUMPY";
/// numpy aligns the data start to 64 bytes.
const ALIGN: usize = 64;
/// How deeply the header's dicts, tuples and lists may nest. numpy writes 2 levels (a dict holding
/// the shape tuple); the parser recurses once per level, so a deeper header is refused before it
/// could exhaust the stack.
pub const MAX_HEADER_DEPTH: usize = 16;

/// A Python literal as it can appear in a `.npy` header.
#[derive(Clone, Debug, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Int(usize),
    Seq(Vec<Lit>),
    Dict(Vec<(String, Lit)>),
}

/// A minimal parser for the header's Python literal (dicts, tuples, lists,
/// strings, ints, booleans); enough for every header numpy writes.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    /// Containers open at `pos` (at most `MAX_HEADER_DEPTH`).
    depth: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        match self.peek() {
            Some(x) if x == c => {
                self.pos += 1;
                Ok(())
            }
            other => Err(format!("expected '{}' at byte {} of the header, found {:?}", c as char, self.pos, other.map(|b| b as char))),
        }
    }

    fn value(&mut self) -> Result<Lit, String> {
        let open = self.peek();
        if matches!(open, Some(b'{' | b'(' | b'[')) {
            if self.depth >= MAX_HEADER_DEPTH {
                return Err(format!("the .npy header nests deeper than {MAX_HEADER_DEPTH} levels (at byte {}); numpy writes 2", self.pos));
            }
            self.depth += 1;
            let v = match open {
                Some(b'{') => self.dict(),
                Some(b'(') => self.seq(b'(', b')'),
                _ => self.seq(b'[', b']'),
            };
            self.depth -= 1;
            return v;
        }
        match open {
            Some(b'\'') | Some(b'"') => self.string().map(Lit::Str),
            Some(c) if c.is_ascii_digit() => self.int(),
            Some(c) if c.is_ascii_alphabetic() => self.word(),
            other => Err(format!("unexpected {:?} at byte {} of the header", other.map(|b| b as char), self.pos)),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.s[self.pos];
        let start = self.pos + 1;
        let len = self.s[start..].iter().position(|&c| c == quote).ok_or("unterminated string in the header")?;
        self.pos = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec()).map_err(|_| "header string is not UTF-8".to_string())
    }

    fn int(&mut self) -> Result<Lit, String> {
        let start = self.pos;
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default();
        // Python 2 era numpy wrote longs as `3L`.
        if self.s.get(self.pos) == Some(&b'L') {
            self.pos += 1;
        }
        text.parse().map(Lit::Int).map_err(|_| format!("header number {text} is too large"))
    }

    fn word(&mut self) -> Result<Lit, String> {
        let start = self.pos;
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
            self.pos += 1;
        }
        match &self.s[start..self.pos] {
            b"True" => Ok(Lit::Bool(true)),
            b"False" => Ok(Lit::Bool(false)),
            w => Err(format!("unexpected word '{}' in the header", String::from_utf8_lossy(w))),
        }
    }

    /// Comma-separated items up to `close`; a trailing comma is allowed.
    fn items<T>(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Result<T, String>) -> Result<Vec<T>, String> {
        let mut out = Vec::new();
        while self.peek() != Some(close) {
            out.push(item(self)?);
            if self.peek() == Some(b',') {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.expect(close)?;
        Ok(out)
    }

    fn seq(&mut self, open: u8, close: u8) -> Result<Lit, String> {
        self.expect(open)?;
        self.items(close, |p| p.value()).map(Lit::Seq)
    }

    fn dict(&mut self) -> Result<Lit, String> {
        self.expect(b'{')?;
        let entries = self.items(b'}', |p| {
            let key = match p.value()? {
                Lit::Str(k) => k,
                other => return Err(format!("header dict key {other:?} is not a string")),
            };
            p.expect(b':')?;
            Ok((key, p.value()?))
        })?;
        Ok(Lit::Dict(entries))
    }
}

/// Element type we can read.
#[derive(Clone, Copy)]
enum Dtype {
    F4,
    F8,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F4 => 4,
            Dtype::F8 => 8,
        }
    }
}

fn parse_dtype(descr: &Lit) -> Result<Dtype, String> {
    match descr {
        Lit::Str(s) if s == "<f4" => Ok(Dtype::F4),
        Lit::Str(s) if s == "<f8" => Ok(Dtype::F8),
        Lit::Str(s) if s.starts_with('>') => Err(format!("dtype '{s}' is big-endian; save as little-endian ('<f4')")),
        other => Err(format!("unsupported dtype {other:?}; only '<f4' (float32) and '<f8' (float64) are read")),
    }
}

fn parse_shape(shape: &Lit) -> Result<Vec<usize>, String> {
    let Lit::Seq(items) = shape else {
        return Err(format!("header shape {shape:?} is not a tuple"));
    };
    items
        .iter()
        .map(|d| match d {
            Lit::Int(n) => Ok(*n),
            other => Err(format!("header shape entry {other:?} is not an integer")),
        })
        .collect()
}

/// Splits the file into (header text, data bytes), checking magic and version.
fn split_header(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (missing \\x93NUMPY magic)".to_string());
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        2 | 3 => return Err("truncated .npy header".to_string()),
        v => return Err(format!("unsupported .npy format version {v}.{}; expected 1, 2 or 3", bytes[7])),
    };
    let end = start.checked_add(len).filter(|&e| e <= bytes.len()).ok_or("truncated .npy header")?;
    Ok((&bytes[start..end], &bytes[end..]))
}

/// Reads the header dict into (dtype, shape), refusing Fortran order.
fn parse_header(header: &[u8]) -> Result<(Dtype, Vec<usize>), String> {
    let Lit::Dict(entries) = (Parser { s: header, pos: 0, depth: 0 }).value()? else {
        return Err("the .npy header is not a dict".to_string());
    };
    let get = |k: &str| entries.iter().find(|(key, _)| key == k).map(|(_, v)| v).ok_or(format!("the .npy header has no '{k}'"));
    if *get("fortran_order")? != Lit::Bool(false) {
        return Err("array is in Fortran order; save it C-contiguous (np.ascontiguousarray)".to_string());
    }
    Ok((parse_dtype(get("descr")?)?, parse_shape(get("shape")?)?))
}

/// Decodes little-endian floats to f32 (f64 values are narrowed).
fn decode(data: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F4 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F8 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8")) as f32).collect(),
    }
}

/// Reads a `.npy` file of `<f4` or `<f8` values: (shape, values in C order).
/// A 0-d array gives shape `[]` and one value.
pub fn read_npy_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    let (header, data) = split_header(bytes)?;
    let (dtype, shape) = parse_header(header)?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape is too large")?;
    let expected = count.checked_mul(dtype.size()).ok_or("shape is too large")?;
    if data.len() < expected {
        return Err(format!("truncated .npy data for shape {shape:?}: expected {expected} bytes, got {}", data.len()));
    }
    if data.len() > expected {
        return Err(format!("{} unexpected bytes after the data of shape {shape:?}", data.len() - expected));
    }
    Ok((shape, decode(data, dtype)))
}

/// numpy's Python repr of a shape tuple: `()`, `(3,)`, `(2, 3)`.
fn shape_repr(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

/// Writes `data` as a little-endian float32 `.npy` (version 1, C order, data
/// aligned to 64 bytes like numpy).
pub fn write_npy_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>, String> {
    let count: usize = shape.iter().product();
    if count != data.len() {
        return Err(format!("shape {shape:?} holds {count} values, got {}", data.len()));
    }
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}", shape_repr(shape));
    // Pad with spaces so magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let pad = (ALIGN - (10 + header.len() + 1) % ALIGN) % ALIGN;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let len = u16::try_from(header.len()).map_err(|_| "shape too long for a version 1 header".to_string())?;
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file laid out as numpy writes it: header padded with spaces and '\n'
    /// to a 64-byte boundary (for the small shapes here, byte-identical to
    /// numpy 2.x `np.save`, checked once by hand).
    fn numpy_file(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let len_bytes = if version == 1 { 2 } else { 4 };
        let mut header = dict.to_string();
        while !(8 + len_bytes + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    const DICT_2X3: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

    #[test]
    fn reads_numpy_f4() {
        let file = numpy_file(1, DICT_2X3, &f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
        assert_eq!(file.len(), 152); // as np.save(np.arange(6, dtype='<f4').reshape(2, 3))
        let (shape, data) = read_npy_f32(&file).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn reads_f8_versions_2_and_3_and_scalars() {
        let data: Vec<u8> = [1.5f64, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        for version in [2, 3] {
            let file = numpy_file(version, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", &data);
            assert_eq!(read_npy_f32(&file).unwrap(), (vec![2], vec![1.5, -2.0]));
        }
        let file = numpy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", &f32_bytes(&[7.0]));
        assert_eq!(read_npy_f32(&file).unwrap(), (vec![], vec![7.0]));
        // Key order and quoting are not fixed by the format.
        let file = numpy_file(1, "{\"shape\": [1, 1], \"fortran_order\": False, \"descr\": \"<f4\"}", &f32_bytes(&[3.0]));
        assert_eq!(read_npy_f32(&file).unwrap(), (vec![1, 1], vec![3.0]));
    }

    #[test]
    fn writer_matches_numpy_layout_and_round_trips() {
        let data = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let file = write_npy_f32(&[2, 3], &data).unwrap();
        assert_eq!(file, numpy_file(1, DICT_2X3, &f32_bytes(&data)));
        assert_eq!(read_npy_f32(&file).unwrap(), (vec![2, 3], data.to_vec()));
        assert_eq!(read_npy_f32(&write_npy_f32(&[], &[9.0]).unwrap()).unwrap(), (vec![], vec![9.0]));
        assert!(write_npy_f32(&[2, 2], &data).is_err());
    }

    #[test]
    fn clear_errors() {
        let err = |b: &[u8]| read_npy_f32(b).unwrap_err();
        let good = numpy_file(1, DICT_2X3, &f32_bytes(&[0.0; 6]));
        assert!(err(b"PK\x03\x04 not npy").contains("magic"));
        assert!(err(&good[..good.len() - 1]).contains("expected 24 bytes, got 23"));
        assert!(err(&[good.as_slice(), &[0]].concat()).contains("1 unexpected bytes"));
        assert!(err(&good[..50]).contains("truncated .npy header"));
        let fortran = numpy_file(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", &[0; 24]);
        assert!(err(&fortran).contains("Fortran"));
        let big = numpy_file(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", &[0; 24]);
        assert!(err(&big).contains("big-endian"));
        let int = numpy_file(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", &[0; 24]);
        assert!(err(&int).contains("unsupported dtype"));
        let mut v9 = good.clone();
        v9[6] = 9;
        assert!(err(&v9).contains("version 9"));
        let no_shape = numpy_file(1, "{'descr': '<f4', 'fortran_order': False, }", &[]);
        assert!(err(&no_shape).contains("no 'shape'"));
    }
}
