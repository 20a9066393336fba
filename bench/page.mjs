// The benchmark page: our wasm package (main thread, not the worker) and TensorFlow.js side by side,
// on the same weights and the same 224 x 224 image. bench/run.mjs drives it step by step through
// `window.B` so that it can interleave the two sides (ours, peer, ours, peer, ...) and stop on a budget.
// Every timing here is performance.now() around one call, result read back to JS included.

import { readSafetensors } from './safetensors.mjs';
import { buildModel } from './tfjs-models.mjs';
import { relaxedSimdSupported } from '../www/wasm-features.js';

const tf = window.tf;
// Our single-threaded package for the paths 'cpu' and 'webgpu' (`init`'s `oursBuild`, run.mjs
// --ours-build): pkg/, plain SIMD, which every engine runs; or pkg/relaxed/, which the client picks
// where the engine has relaxed SIMD (www/thread-pool.js), as Chromium does.
let Explainer = null;
const S = {
  arch: null,
  bytes: null,
  images: [], // two 224 x 224 ImageData that differ in one byte: alternating defeats the forward cache
  // (parity runs use parity256 / parity224, never these)
  k: 0,
  kp: 0,
  cls: undefined,
  scoreCamChannels: null,
  ours: {}, // path ('cpu' | 'webgpu') -> Explainer
  peer: null,
  peerBackend: null,
  wasm: null,
  ref: null,
};

const log = (s) => (document.getElementById('log').textContent += s + '\n');
const maxAbs = (a, b) => {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
const maxAbsOf = (a) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const argmax = (a) => a.reduce((bi, v, i) => (v > a[bi] ? i : bi), 0);
const shortError = (e) => {
  const m = String(e?.message ?? e);
  const k = m.match(/'(\w+)' not yet implemented or not found in the registry/);
  if (k) return `no ${k[1]} kernel`;
  return m.split('\n')[0].slice(0, 200);
};

/**
 * Our threaded build in bench/ours-worker.mjs: `call(cmd, args)` resolves with its reply. `path`
 * 'threads': the build the client would pick (`S.threadsRelaxed`); 'threads-other': the other SIMD
 * flavour, for an A/B of the two threaded builds (run.mjs --threads-ab), or with --threads-one the
 * same build as 'threads' with a pool of one thread. `k`: the worker's own image
 * alternation (interleaved with the main thread's, it must not share S.k).
 */
function threadsWorker(path) {
  S.threads ??= {};
  if (!S.threads[path]) {
    const worker = new Worker(new URL('./ours-worker.mjs', import.meta.url), { type: 'module' });
    const waiting = new Map();
    let next = 1;
    worker.onmessage = ({ data }) => {
      const w = waiting.get(data.id);
      waiting.delete(data.id);
      if (data.error) w.reject(new Error(data.error));
      else w.resolve(data.value);
    };
    const call = (cmd, args) => new Promise((resolve, reject) => {
      const id = next++;
      waiting.set(id, { resolve, reject });
      worker.postMessage({ id, cmd, args });
    });
    // A pool of one thread: --threads-one's 'threads-other', and the two workers of the two-core
    // ceiling ('threads-pair-a', 'threads-pair-b'), all the same build as 'threads'.
    const pair = path.startsWith('threads-pair');
    const one = pair || (path !== 'threads' && S.threadsOne);
    S.threads[path] = { worker, call, sentImages: false, k: 0, relaxedSimd: path === 'threads' || one ? S.threadsRelaxed : !S.threadsRelaxed, one };
  }
  return S.threads[path];
}

function oursOptions(method) {
  const o = { method, preprocess: 'resize', normalize: 'minmax' };
  if (method === 'scorecam' && S.scoreCamChannels) o.scoreCamChannels = S.scoreCamChannels;
  return o;
}

// The peer `relaxed`: our own package built with relaxed SIMD (pkg/relaxed/, scripts/build-web.sh), a
// second module instance on the same page, so that plain and relaxed alternate call by call.
let relaxedPkg = null;

async function loadRelaxed() {
  if (!relaxedSimdSupported()) return { error: 'n/a (this browser has no relaxed SIMD)' };
  if (S.oursBuild === 'relaxed') return { error: 'n/a (ours is the relaxed-SIMD build already: --ours-build plain compares the two)' };
  try {
    if (!relaxedPkg) {
      const mod = await import('../pkg/relaxed/gradcam_wasm.js');
      await mod.default();
      relaxedPkg = mod;
    }
  } catch (e) {
    return { error: `n/a (pkg/relaxed/ did not load: ${shortError(e)}; build it with scripts/build-web.sh)` };
  }
  const t0 = performance.now();
  let ex;
  try {
    ex = new relaxedPkg.Explainer(S.bytes, { arch: S.arch });
  } catch (e) {
    return { error: `n/a (${shortError(e)})` };
  }
  const ms = performance.now() - t0;
  S.peer = { explainer: ex, dispose: () => ex.free() };
  S.peerBackend = 'relaxed';
  return { ms, backend: 'relaxed', layer: ex.defaultLayer() };
}

/** Like `runOurs` on the relaxed explainer; for parity, the same logits and raw map as `reference`. */
function runRelaxed(method, which) {
  const ex = S.peer.explainer;
  const t0 = performance.now();
  try {
    if (which !== 'parity') ex.explain(S.images[S.kp++ % 2], S.cls, oursOptions(method));
    else {
      const preds = ex.predict(S.parity256, ex.numClasses());
      const logits = new Float32Array(preds.length);
      for (const p of preds) logits[p.classIdx] = p.logit;
      const r = ex.explain(S.parity256, S.cls, { method: 'gradcam', preprocess: 'crop' });
      S.lastPeer = { raw: Float32Array.from(r.raw), logits, rawShape: [r.rawHeight, r.rawWidth] };
    }
  } catch (e) {
    return { error: `n/a (${shortError(e)})` };
  }
  return { ms: performance.now() - t0 };
}

window.B = {
  async init({ arch, modelUrl, imageUrl, tfjsThreads, scoreCamChannels, threadsRelaxed = true, threadsOne = false, oursBuild = 'auto' }) {
    S.threadsRelaxed = threadsRelaxed;
    S.threadsOne = threadsOne;
    if (oursBuild === 'relaxed' && !relaxedSimdSupported()) throw new Error('--ours-build relaxed: this browser has no relaxed SIMD');
    S.oursBuild = oursBuild === 'auto' ? (relaxedSimdSupported() ? 'relaxed' : 'plain') : oursBuild;
    const mod = await import(S.oursBuild === 'relaxed' ? '../pkg/relaxed/gradcam_wasm.js' : '../pkg/gradcam_wasm.js');
    S.wasm = await mod.default();
    Explainer = mod.Explainer;
    S.arch = arch;
    S.scoreCamChannels = scoreCamChannels || null;
    S.bytes = new Uint8Array(await (await fetch(modelUrl)).arrayBuffer());
    const bmp = await createImageBitmap(await (await fetch(imageUrl)).blob());
    const canvas = new OffscreenCanvas(224, 224);
    const ctx = canvas.getContext('2d');
    ctx.drawImage(bmp, 0, 0, 224, 224);
    const img = ctx.getImageData(0, 0, 224, 224);
    const img2 = new ImageData(new Uint8ClampedArray(img.data), 224, 224);
    img2.data[0] ^= 1;
    S.images = [img, img2];
    // Parity inputs: our predict() (all logits) always takes the model's own transform, resize the
    // shorter side to 256 + centre crop 224. On a 256 x 256 image that is exactly its central 224 x 224
    // window, which is what the peer gets.
    const c256 = new OffscreenCanvas(256, 256);
    const x256 = c256.getContext('2d');
    x256.drawImage(bmp, 0, 0, 256, 256);
    S.parity256 = x256.getImageData(0, 0, 256, 256);
    S.parity224 = x256.getImageData(16, 16, 224, 224);
    tf.wasm.setWasmPaths('/node_modules/@tensorflow/tfjs-backend-wasm/dist/');
    if (tfjsThreads) tf.wasm.setThreadsCount(tfjsThreads);
    const st = readSafetensors(S.bytes);
    const params = st.names.reduce((n, k) => n + st.shape(k).reduce((a, b) => a * b, 1), 0);
    log(`init ${arch}: ${S.bytes.length} bytes`);
    return {
      crossOriginIsolated: self.crossOriginIsolated,
      userAgent: navigator.userAgent,
      hardwareConcurrency: navigator.hardwareConcurrency,
      hasCreate: typeof Explainer.create === 'function',
      oursBuild: S.oursBuild,
      modelBytes: S.bytes.length,
      params,
      tfjsVersion: tf.version.tfjs,
      gpu: !!navigator.gpu,
    };
  },

  /**
   * Our explainer on 'cpu' (new Explainer), 'webgpu' (await Explainer.create) or 'threads' (the
   * threaded build in a worker, one kernel thread per core). Timed: bytes -> ready.
   */
  async loadOurs(path) {
    if (path.startsWith('threads')) {
      const t = threadsWorker(path);
      try {
        if (!t.sentImages) t.sentImages = await t.call('images', { images: S.images });
        const r = await t.call('load', { bytes: S.bytes, arch: S.arch, relaxedSimd: t.relaxedSimd, poolOfOne: t.one });
        return { ms: r.ms, layer: r.layer, backend: 'threads', info: { threads: r.threads, variant: r.variant } };
      } catch (e) {
        return { error: `n/a (${shortError(e)})` };
      }
    }
    if (S.ours[path]) {
      S.ours[path].free();
      delete S.ours[path];
    }
    if (path === 'webgpu' && typeof Explainer.create !== 'function') return { error: 'n/a (this build has no Explainer.create)' };
    // Chromium's software adapter is sometimes not handed out right after a previous device was
    // dropped: retry a few times (the time of the successful attempt is the load time).
    let ex;
    let ms;
    let info = null;
    for (let attempt = 1; ; attempt++) {
      const t0 = performance.now();
      try {
        ex = path === 'cpu' ? new Explainer(S.bytes, { arch: S.arch }) : await Explainer.create(S.bytes, { arch: S.arch, backend: 'webgpu' });
      } catch (e) {
        return { error: `n/a (${shortError(e)})` };
      }
      ms = performance.now() - t0;
      info = typeof ex.backendInfo === 'function' ? ex.backendInfo() : null;
      if (path === 'cpu' || ex.backend() === 'webgpu' || attempt >= 4) break;
      ex.free();
      await new Promise((r) => setTimeout(r, 1000));
    }
    S.ours[path] = ex;
    if (path === 'webgpu' && ex.backend() !== 'webgpu') return { error: `n/a (WebGPU did not start: ${info?.note ?? 'unknown'})`, ms };
    return { ms, layer: ex.defaultLayer(), backend: ex.backend(), info: info && { ...info } };
  },

  /**
   * The two-core ceiling's round: the same explanation on two workers with a pool of one thread
   * each, started together. Each call's time, as each worker measured it.
   */
  async runPair(method) {
    return Promise.all(['threads-pair-a', 'threads-pair-b'].map(async (path) => (await window.B.runOurs(path, method)).ms));
  },

  /** Ends a worker of ours (its module instance and model with it). */
  endWorker(path) {
    S.threads?.[path]?.worker.terminate();
    if (S.threads) delete S.threads[path];
  },

  async runOurs(path, method) {
    if (path.startsWith('threads')) {
      const t = threadsWorker(path);
      const r = await t.call('run', { k: t.k++, cls: S.cls, options: oursOptions(method) });
      S.lastOurs = r;
      return { ms: r.ms, reused: r.reused, backend: 'threads', classIdx: r.classIdx };
    }
    const ex = S.ours[path];
    // Every call takes the other image than the call before, so no call reuses a forward pass.
    const img = S.images[S.k++ % 2];
    const cls = S.cls;
    const t0 = performance.now();
    const r = path === 'cpu' ? ex.explain(img, cls, oursOptions(method)) : await ex.explainAsync(img, cls, oursOptions(method));
    const ms = performance.now() - t0;
    if (S.cls === undefined) S.cls = r.classIdx;
    S.lastOurs = r;
    return { ms, reused: r.timings.forwardReused, backend: r.backend, classIdx: r.classIdx, totalMs: r.timings.totalMs };
  },

  /** Our CPU result on image 0 (logits of all classes, the raw Grad-CAM map): the parity reference. */
  reference() {
    const ex = S.ours.cpu;
    const preds = ex.predict(S.parity256, ex.numClasses());
    const logits = new Float32Array(preds.length);
    for (const p of preds) logits[p.classIdx] = p.logit;
    const r = ex.explain(S.parity256, S.cls, { method: 'gradcam', preprocess: 'crop' });
    S.ref = { logits, raw: Float32Array.from(r.raw), rawShape: [r.rawHeight, r.rawWidth], cls: S.cls, layer: r.layer };
    return { cls: S.cls, top1Logit: logits[S.cls], maxLogit: maxAbsOf(logits), maxRaw: maxAbsOf(S.ref.raw), rawShape: S.ref.rawShape, layer: r.layer };
  },

  /** Our WebGPU explainer against the CPU reference (same image, class, method). */
  async oursGpuParity() {
    const r = await S.ours.webgpu.explainAsync(S.parity256, S.ref.cls, { method: 'gradcam', preprocess: 'crop' });
    return { backend: r.backend, rawMaxAbs: maxAbs(Float32Array.from(r.raw), S.ref.raw), logitDiff: Math.abs(r.logit - S.ref.logits[S.ref.cls]) };
  },

  async loadPeer(backend) {
    if (S.peer) {
      S.peer.dispose();
      S.peer = null;
    }
    if (backend === 'relaxed') return loadRelaxed();
    try {
      if (tf.getBackend() !== backend) {
        const ok = await tf.setBackend(backend);
        if (!ok) return { error: `n/a (TF.js ${backend} backend did not start)` };
      }
      await tf.ready();
    } catch (e) {
      return { error: `n/a (TF.js ${backend} backend did not start: ${shortError(e)})` };
    }
    const t0 = performance.now();
    let model;
    try {
      model = buildModel(tf, S.arch, readSafetensors(S.bytes));
    } catch (e) {
      return { error: `n/a (${shortError(e)})` };
    }
    const ms = performance.now() - t0;
    S.peer = model;
    S.peerBackend = backend;
    // A self-test of the backend's max-pool gradient: every 2x2 window's gradient must land somewhere,
    // so the input gradient of sum(maxPool(a)) sums to the number of windows.
    let poolGrad;
    try {
      poolGrad = tf.tidy(() => {
        const a = tf.randomNormal([1, 14, 14, 64], 0, 1, 'float32', 5);
        const g = tf.grad((v) => tf.sum(tf.maxPool(v, 2, 2, 0)))(a);
        return { windows: 7 * 7 * 64, gradientSum: tf.sum(g).dataSync()[0] };
      });
    } catch (e) {
      poolGrad = { error: shortError(e) };
    }
    return {
      ms,
      backend: tf.getBackend(),
      layer: model.layer,
      threads: backend === 'wasm' ? tf.wasm.getThreadsCount() : null,
      numTensors: tf.memory().numTensors,
      poolGrad,
    };
  },

  async runPeer(method, which = null) {
    if (S.peerBackend === 'relaxed') return runRelaxed(method, which);
    const img = which === 'parity' ? S.parity224 : S.images[S.kp++ % 2];
    const cls = S.cls;
    const t0 = performance.now();
    let out;
    let x;
    try {
      x = S.peer.preprocess(img);
      if (method === 'gradcam') out = S.peer.gradcam(x, cls);
      else if (method === 'guided-gradcam') out = S.peer.guidedGradcam(x, cls);
      else if (method === 'scorecam') out = S.peer.scorecam(x, cls, { channels: S.scoreCamChannels, batch: 16 });
      else throw new Error(`unknown method ${method}`);
      const [heatmap, raw, logits] = await Promise.all([out.heatmap.data(), out.raw.data(), out.logits ? out.logits.data() : null]);
      const ms = performance.now() - t0;
      S.lastPeer = { raw, logits, rawShape: out.raw.shape, heatmapSize: heatmap.length };
      return { ms };
    } catch (e) {
      return { error: `n/a (${shortError(e)})` };
    } finally {
      tf.dispose(x);
      if (out) tf.dispose(Object.values(out));
    }
  },

  /** The peer's Grad-CAM on image 0 against our CPU reference: logits and raw map, max abs diff. */
  async peerParity() {
    const r = await this.runPeer('gradcam', 'parity');
    if (r.error) return r;
    const p = S.lastPeer;
    const shapeOk = p.rawShape[0] === S.ref.rawShape[0] && p.rawShape[1] === S.ref.rawShape[1];
    return {
      logitsMaxAbs: maxAbs(p.logits, S.ref.logits),
      rawMaxAbs: shapeOk ? maxAbs(p.raw, S.ref.raw) : Infinity,
      rawShape: p.rawShape,
      peerTop1: argmax(p.logits),
      oursTop1: argmax(S.ref.logits),
      maxLogit: maxAbsOf(S.ref.logits),
      maxRaw: maxAbsOf(S.ref.raw),
      sample: [Array.from(S.ref.logits.slice(0, 4)), Array.from(p.logits.slice(0, 4))],
    };
  },

  disposePeer() {
    const tfPeer = S.peerBackend !== 'relaxed'; // TF.js may never have started when the peer is ours
    if (S.peer) S.peer.dispose();
    S.peer = null;
    S.peerBackend = null;
    return { numTensors: tfPeer ? tf.memory().numTensors : null };
  },

  /**
   * The CPU path's peak wasm memory, on a page that has done nothing else since `init` (a fresh wasm
   * instance): load the CPU explainer, then Grad-CAM and Guided Grad-CAM of one image (the guided
   * call reuses the forward pass, as switching methods in an app does). wasm memory only grows, so
   * its size at the end is the peak.
   */
  cpuPeakMemory() {
    const bytes = () => S.wasm.memory.buffer.byteLength;
    const fresh = bytes();
    const ex = new Explainer(S.bytes, { arch: S.arch });
    const loaded = bytes();
    ex.explain(S.images[0], undefined, oursOptions('gradcam'));
    ex.explain(S.images[0], undefined, oursOptions('guided-gradcam'));
    const explained = bytes();
    ex.free();
    return { fresh, loaded, explained };
  },

  /** wasm memory only grows: its size now is the peak so far. */
  memory() {
    return { wasmBytes: S.wasm.memory.buffer.byteLength, jsHeap: performance.memory ? performance.memory.usedJSHeapSize : null };
  },
};
window.B_READY = true;
