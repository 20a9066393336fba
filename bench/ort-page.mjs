// The onnxruntime-web benchmark page: our wasm package (CPU path, main thread) and onnxruntime-web's
// wasm backend (one thread, SIMD), on the same ONNX file and the same input (224 x 224, or the size
// the model takes: 299 for Inception v3). bench/ort.mjs
// drives it through `window.O`, interleaving the two sides. Every timing is performance.now() around
// one call, result in JS included.

import init, { Explainer } from '../pkg/gradcam_wasm.js';
import * as ort from '../node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';

const MEAN = [0.485, 0.456, 0.406];
const STD = [0.229, 0.224, 0.225];
const S = { wasm: null, onnx: null, data: null, name: null, images: [], inputs: [], k: 0, kp: 0, cls: undefined, ours: null, session: null };
const log = (s) => (document.getElementById('log').textContent += s + '\n');
const argmax = (a) => a.reduce((bi, v, i) => (v > a[bi] ? i : bi), 0);
const err = (e) => String(e?.message ?? e).split('\n')[0].slice(0, 300);

/** (x / 255 - mean) / std, NCHW, in f32: what our `preprocess: 'resize'` does on an image already at the model's size. */
function toTensor(img) {
  const { width: w, height: h, data } = img;
  const out = new Float32Array(3 * w * h);
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(MEAN[c]);
    const s = Math.fround(STD[c]);
    for (let i = 0; i < w * h; i++) out[c * w * h + i] = Math.fround(Math.fround(Math.fround(data[4 * i + c] / 255) - m) / s);
  }
  return out;
}

window.O = {
  async init({ name, modelUrl, dataUrl, imageUrl }) {
    S.wasm = await init();
    S.name = name;
    const get = async (u) => new Uint8Array(await (await fetch(u)).arrayBuffer());
    S.onnx = await get(modelUrl);
    S.data = dataUrl ? await get(dataUrl) : null;
    S.bitmap = await createImageBitmap(await (await fetch(imageUrl)).blob());
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.simd = true;
    ort.env.wasm.proxy = false;
    ort.env.wasm.wasmPaths = '/node_modules/onnxruntime-web/dist/';
    log(`init ${name}: ${S.onnx.length} + ${S.data?.length ?? 0} bytes`);
    return {
      crossOriginIsolated: self.crossOriginIsolated,
      userAgent: navigator.userAgent,
      ortVersion: ort.env.versions?.web ?? ort.env.versions?.common ?? null,
      onnxBytes: S.onnx.length,
      dataBytes: S.data?.length ?? 0,
      wasmFresh: S.wasm.memory.buffer.byteLength,
    };
  },

  /** bytes in memory -> ready, each side. */
  loadOurs() {
    const t0 = performance.now();
    try {
      S.ours = new Explainer(S.onnx, { externalData: S.data ?? undefined, mean: MEAN, std: STD });
    } catch (e) {
      return { error: err(e) };
    }
    const ms = performance.now() - t0;
    // Both sides get the photo at the size our loader found for the model.
    const n = (S.size = S.ours.inputSize());
    const ctx = new OffscreenCanvas(n, n).getContext('2d');
    ctx.drawImage(S.bitmap, 0, 0, n, n);
    const img = ctx.getImageData(0, 0, n, n);
    const img2 = new ImageData(new Uint8ClampedArray(img.data), n, n);
    img2.data[0] ^= 1; // two images that differ in one byte: alternating them defeats our forward cache
    S.images = [img, img2];
    S.inputs = S.images.map(toTensor);
    return { ms, layer: S.ours.defaultLayer(), arch: S.ours.arch(), wasmBytes: S.wasm.memory.buffer.byteLength };
  },
  async loadOrt() {
    const t0 = performance.now();
    try {
      const opts = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
      if (S.data) opts.externalData = [{ path: `${S.name}.onnx.data`, data: S.data }];
      S.session = await ort.InferenceSession.create(S.onnx, opts);
    } catch (e) {
      return { error: err(e) };
    }
    return { ms: performance.now() - t0, inputs: S.session.inputNames, outputs: S.session.outputNames };
  },

  async ortForward(i) {
    const x = new ort.Tensor('float32', S.inputs[i], [1, 3, S.size, S.size]);
    const t0 = performance.now();
    const out = await S.session.run({ [S.session.inputNames[0]]: x });
    const logits = out[S.session.outputNames[0]].data;
    const ms = performance.now() - t0;
    return { ms, logits };
  },

  /** Top-1 and the top-5 logits of ours against ORT's, on image 0; relative to ORT's max |logit|. */
  async parity() {
    const r = S.ours.explain(S.images[0], undefined, { method: 'gradcam', preprocess: 'resize' });
    const { logits } = await this.ortForward(0);
    const maxLogit = logits.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    let maxAbs = 0;
    for (const p of r.top5) maxAbs = Math.max(maxAbs, Math.abs(p.logit - logits[p.classIdx]));
    const ortTop1 = argmax(logits);
    S.cls = r.classIdx;
    S.k = 1; // the next explanation takes the other image
    return { oursTop1: r.classIdx, ortTop1, maxAbs, maxLogit, rel: maxAbs / Math.max(maxLogit, 1e-12), oursTop5: r.top5.map((p) => [p.classIdx, p.logit]), ortAtTop5: r.top5.map((p) => logits[p.classIdx]) };
  },

  runOurs(method) {
    const img = S.images[S.k++ % 2];
    const t0 = performance.now();
    const r = S.ours.explain(img, S.cls, { method, preprocess: 'resize' });
    const ms = performance.now() - t0;
    return { ms, reused: r.timings.forwardReused, timings: { ...r.timings } };
  },
  async runOrt() {
    const { ms } = await this.ortForward(S.kp++ % 2);
    return { ms };
  },

  /** wasm memory only grows: its size now is our peak so far. */
  memory() {
    return { wasmBytes: S.wasm.memory.buffer.byteLength };
  },
};
window.O_READY = true;
