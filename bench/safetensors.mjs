// A minimal safetensors reader for the benchmark's TF.js side: f32, f16 and bf16 tensors, decoded to
// Float32Array (what both sides compute in). Works in the browser and in node.
//
// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:
// [begin, end]}, "__metadata__": {...}}, then the data; offsets are relative to the end of the header.

let F16_TABLE = null;

/** Float32 value of every f16 bit pattern (65536 entries, built once). */
function f16Table() {
  if (F16_TABLE) return F16_TABLE;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) t[h] = s * m * 2 ** -24; // subnormal (and zero)
    else if (e === 31) t[h] = m ? NaN : s * Infinity;
    else t[h] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  F16_TABLE = t;
  return t;
}

/**
 * Parses a safetensors file held in `bytes` (Uint8Array or ArrayBuffer).
 * Returns { metadata, names, get(name) -> { shape, data: Float32Array } } with tensors decoded lazily.
 */
export function readSafetensors(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (u8.length < 8) throw new Error('safetensors: file shorter than its 8-byte header length');
  const dv = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  if (8 + n > u8.length) throw new Error(`safetensors: header of ${n} bytes runs past the file (${u8.length} bytes)`);
  const header = JSON.parse(new TextDecoder().decode(u8.subarray(8, 8 + n)));
  const base = 8 + n;
  const metadata = header.__metadata__ || {};
  delete header.__metadata__;
  const names = Object.keys(header);
  const get = (name) => {
    const info = header[name];
    if (!info) throw new Error(`safetensors: no tensor '${name}'`);
    const [begin, end] = info.data_offsets;
    const count = info.shape.reduce((a, b) => a * b, 1);
    const off = u8.byteOffset + base + begin;
    let data;
    if (info.dtype === 'F32') {
      if (end - begin !== 4 * count) throw new Error(`safetensors: '${name}' has ${end - begin} bytes for ${count} f32 values`);
      data = off % 4 === 0 ? new Float32Array(u8.buffer, off, count).slice() : new Float32Array(u8.slice(base + begin, base + end).buffer);
    } else if (info.dtype === 'F16' || info.dtype === 'BF16') {
      if (end - begin !== 2 * count) throw new Error(`safetensors: '${name}' has ${end - begin} bytes for ${count} 16-bit values`);
      const half = off % 2 === 0 ? new Uint16Array(u8.buffer, off, count) : new Uint16Array(u8.slice(base + begin, base + end).buffer);
      data = new Float32Array(count);
      if (info.dtype === 'F16') {
        const t = f16Table();
        for (let i = 0; i < count; i++) data[i] = t[half[i]];
      } else {
        const bits = new Uint32Array(data.buffer);
        for (let i = 0; i < count; i++) bits[i] = half[i] << 16;
      }
    } else {
      throw new Error(`safetensors: '${name}' has dtype ${info.dtype}; only F32, F16 and BF16 are read`);
    }
    return { shape: info.shape.slice(), data };
  };
  return { metadata, names, has: (name) => name in header, shape: (name) => header[name]?.shape, get };
}
