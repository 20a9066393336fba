// Which wasm build this engine can run: pkg/relaxed/ (relaxed SIMD, scripts/build-web.sh) or pkg/.
// Feature detection by validation: an engine without relaxed SIMD rejects the opcode, so
// WebAssembly.validate answers without compiling or running anything.

/**
 * (module (func (param v128) (result v128)
 *   local.get 0 local.get 0 local.get 0 f32x4.relaxed_madd))
 * f32x4.relaxed_madd is 0xfd 0x105 (LEB128 0x85 0x02), the instruction the kernels' `madd` becomes.
 */
const RELAXED_MADD_MODULE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
  0x01, 0x06, 0x01, 0x60, 0x01, 0x7b, 0x01, 0x7b, // type section: (v128) -> v128
  0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
  0x0a, 0x0d, 0x01, 0x0b, 0x00, 0x20, 0x00, 0x20, 0x00, 0x20, 0x00, 0xfd, 0x85, 0x02, 0x0b, // code
]);

let relaxed = null;

/** Whether this engine validates relaxed-SIMD code (cached: the answer cannot change in a page). */
export function relaxedSimdSupported() {
  if (relaxed === null) {
    try {
      relaxed = typeof WebAssembly === 'object' && WebAssembly.validate(RELAXED_MADD_MODULE);
    } catch {
      relaxed = false;
    }
  }
  return relaxed;
}
