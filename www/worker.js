// Module worker that hosts one gradcam-wasm Explainer, so the page never blocks while a
// network runs. Protocol (all messages are plain objects):
//   page -> worker  {id, cmd, args}
//   worker -> page  {id, type: 'result', value} | {id, type: 'error', message, name}
//                   {id?, type: 'progress', phase: 'download'|'method', done, total}
// Typed arrays in results are transferred, not copied. Progress messages without an id (for
// example posted by the wasm side during Score-CAM) belong to the request being processed.

import { commitModelCache, loadModelBytes, verifyIntegrity } from './model-loader.js';

let wasm = null; // the imported pkg module, after init
let wasmMemory = null; // its WebAssembly.Memory, whose buffer must never be transferred
let wasmReady = null; // Promise of it
let explainer = null;
let modelInfo = null;
let image = null; // {key, imageData}: the last image, kept so that the forward pass can be reused
const results = new Map(); // resultId -> the Explainer's own result object (for overlay)
const MAX_RESULTS = 8;
let nextResultId = 1;

function errorMessage(e) {
  if (e instanceof Error) return e.message;
  if (typeof e === 'string') return e;
  if (e && typeof e.message === 'string') return e.message;
  try {
    return JSON.stringify(e);
  } catch {
    return String(e);
  }
}

function ensureWasm(wasmUrl) {
  if (!wasmReady) {
    wasmReady = (async () => {
      let mod;
      try {
        mod = await import('../pkg/gradcam_wasm.js');
      } catch (e) {
        throw new Error(
          'Could not load the WebAssembly package (pkg/gradcam_wasm.js next to www/): ' + errorMessage(e) +
            '. Build it with: cargo build --target wasm32-unknown-unknown --release && ' +
            'wasm-bindgen --target web --out-dir pkg target/wasm32-unknown-unknown/release/gradcam_wasm.wasm',
        );
      }
      try {
        const exports = await (wasmUrl ? mod.default({ module_or_path: wasmUrl }) : mod.default());
        wasmMemory = exports && exports.memory instanceof WebAssembly.Memory ? exports.memory : null;
      } catch (e) {
        throw new Error('Could not start the WebAssembly module (pkg/gradcam_wasm_bg.wasm): ' + errorMessage(e));
      }
      wasm = mod;
      return mod;
    })();
    wasmReady.catch(() => {
      wasmReady = null; // allow a retry
    });
  }
  return wasmReady;
}

/** A structured-clone-safe copy of whatever the wasm side returned (plain object, Map or class instance). */
const RESULT_KEYS = [
  'heatmap', 'width', 'height', 'raw', 'rawWidth', 'rawHeight', 'classIdx', 'label', 'logit',
  'probability', 'method', 'layer', 'top5', 'timings', 'backend', 'warnings', 'forwardReused',
  'rgb', 'rgbWidth', 'rgbHeight',
];

function plain(v, depth = 0) {
  if (v === null || typeof v !== 'object') return typeof v === 'function' ? undefined : v;
  if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return v;
  if (depth > 8) return undefined;
  if (Array.isArray(v)) return v.map((x) => plain(x, depth + 1));
  if (v instanceof Map) {
    const o = {};
    for (const [k, x] of v) o[String(k)] = plain(x, depth + 1);
    return o;
  }
  if (typeof ImageData !== 'undefined' && v instanceof ImageData) return v;
  const o = {};
  for (const k of Object.keys(v)) {
    if (k.startsWith('__')) continue;
    const x = plain(v[k], depth + 1);
    if (x !== undefined) o[k] = x;
  }
  return o;
}

function plainResult(r) {
  const o = plain(r);
  // Class instances expose their fields as prototype getters, not own keys.
  for (const k of RESULT_KEYS) {
    if (!(k in o) && r != null) {
      let x;
      try {
        x = r[k];
      } catch {
        x = undefined;
      }
      if (x !== undefined && typeof x !== 'function') o[k] = plain(x);
    }
  }
  return o;
}

/** Buffers that may be moved to the page: standalone ones, never a view into wasm memory. */
function transferables(obj, out = new Set(), depth = 0) {
  if (!obj || typeof obj !== 'object' || depth > 4) return out;
  if (ArrayBuffer.isView(obj)) {
    const b = obj.buffer;
    const isWasmMemory = wasmMemory !== null && b === wasmMemory.buffer;
    if (!isWasmMemory && b instanceof ArrayBuffer && obj.byteOffset === 0 && obj.byteLength === b.byteLength) out.add(b);
    return out;
  }
  if (typeof ImageData !== 'undefined' && obj instanceof ImageData) return out; // copied, never transferred
  for (const k of Object.keys(obj)) transferables(obj[k], out, depth + 1);
  return out;
}

function requireExplainer() {
  if (!explainer) throw new Error('No model is loaded: call load() first.');
  return explainer;
}

function currentImage(args) {
  if (args.image) {
    const { buffer, width, height } = args.image;
    image = { key: args.imageKey, imageData: new ImageData(new Uint8ClampedArray(buffer), width, height) };
  } else if (!image || image.key !== args.imageKey) {
    throw new Error('internal: the worker does not hold this image any more; send its pixels again');
  }
  return image.imageData;
}

function remember(result) {
  const id = nextResultId++;
  results.set(id, result);
  while (results.size > MAX_RESULTS) {
    const [oldId, old] = results.entries().next().value;
    results.delete(oldId);
    if (old && typeof old.free === 'function') {
      try {
        old.free();
      } catch {
        /* already freed */
      }
    }
  }
  return id;
}

const handlers = {
  async load({ source, options, wasmUrl }, post) {
    const t0 = performance.now();
    await ensureWasm(wasmUrl);
    let bytes;
    let from = 'memory';
    let url = null;
    if (typeof source === 'string') {
      url = source;
      bytes = await loadModelBytes(source, {
        onProgress: (done, total) => post({ type: 'progress', phase: 'download', done, total }),
        integrity: options && options.integrity,
        deferCache: true, // cached by commitModelCache() below, once it parsed as a model
      });
      from = loadModelBytes.lastSource || 'network';
    } else if (source instanceof ArrayBuffer) {
      bytes = new Uint8Array(source);
    } else if (ArrayBuffer.isView(source)) {
      bytes = new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
    } else {
      throw new Error('load() needs a URL string, an ArrayBuffer or a Uint8Array');
    }
    if (options && options.integrity && typeof source !== 'string') await verifyIntegrity(bytes, options.integrity, 'the model bytes');
    const t1 = performance.now();
    const opts = {};
    if (options && options.arch) opts.arch = options.arch;
    if (options && (Array.isArray(options.labels) || typeof options.labels === 'string')) opts.labels = options.labels;
    if (options && options.inputSize != null) opts.inputSize = options.inputSize;
    if (options && options.mean) opts.mean = options.mean;
    if (options && options.std) opts.std = options.std;
    if (options && options.externalData) {
      // An ONNX file's <name>.onnx.data: bytes from the page, or a URL fetched (and cached) like the model.
      const d = options.externalData;
      opts.externalData = typeof d === 'string' ? await loadModelBytes(d, { integrity: options.externalDataIntegrity, deferCache: true }) : d;
    }
    // 'auto' (default): WebGPU on a hardware adapter, else the CPU; create() never fails for lack of a GPU.
    if (options && options.backend) opts.backend = options.backend;
    const next = await wasm.Explainer.create(bytes, opts);
    await commitModelCache(bytes, opts.externalData); // only now: what does not parse is never cached
    if (explainer) {
      try {
        explainer.free();
      } catch {
        /* ignore */
      }
    }
    for (const r of results.values()) if (r && typeof r.free === 'function') try { r.free(); } catch { /* ignore */ }
    results.clear();
    explainer = next;
    const t2 = performance.now();
    modelInfo = {
      url,
      bytes: bytes.length,
      source: from,
      downloadMs: t1 - t0,
      initMs: t2 - t1,
      layers: plain(explainer.layers()),
      methods: plain(explainer.methods()),
      defaultLayer: explainer.defaultLayer(),
      arch: explainer.arch(),
      inputSize: explainer.inputSize(),
      numClasses: explainer.numClasses(),
      backend: plain(explainer.backendInfo()),
    };
    return modelInfo;
  },

  async explain(args, post) {
    const img = currentImage(args); // first: the image is kept even when the call fails
    const ex = requireExplainer();
    const cls = args.classIdx === null || args.classIdx === undefined ? undefined : args.classIdx;
    const onProgress = (done, total) => post({ type: 'progress', phase: 'method', done, total });
    // explainAsync runs on the explainer's backend (WebGPU or the CPU) and falls back to the CPU by itself.
    const r = await ex.explainAsync(img, cls, { ...(args.options || {}), onProgress });
    const value = plainResult(r);
    // A wasm-bindgen object is kept for overlay(); a plain object is not, because its typed
    // arrays are about to be transferred (the page sends them back with overlay()).
    if (r && typeof r.free === 'function') value.resultId = remember(r);
    return value;
  },

  async overlay(args) {
    const img = currentImage(args); // first: the image is kept even when the call fails
    const ex = requireExplainer();
    const own = args.resultId != null ? results.get(args.resultId) : undefined;
    const out = ex.overlay(img, own !== undefined ? own : args.result, args.options || {});
    // Sent as its pixels, which are transferred (an ImageData itself can only be copied).
    const pixels = out.data.byteOffset === 0 && out.data.byteLength === out.data.buffer.byteLength ? out.data : out.data.slice();
    return { imageData: true, pixels, width: out.width, height: out.height };
  },

  async predict(args) {
    const img = currentImage(args);
    return plain(requireExplainer().predict(img, args.k ?? 5));
  },

  async layers() {
    return plain(requireExplainer().layers());
  },

  async methods() {
    return plain(requireExplainer().methods());
  },

  async defaultLayer() {
    return requireExplainer().defaultLayer();
  },

  async info() {
    return modelInfo;
  },

  async free() {
    if (explainer) explainer.free();
    explainer = null;
    modelInfo = null;
    image = null;
    results.clear();
    return true;
  },
};

// Requests run one at a time, in order: the Explainer is not re-entrant.
let queue = Promise.resolve();

self.addEventListener('message', (event) => {
  const msg = event.data;
  if (!msg || typeof msg !== 'object' || typeof msg.cmd !== 'string') return;
  const { id, cmd, args } = msg;
  queue = queue.then(async () => {
    const post = (m, transfer) => self.postMessage({ id, ...m }, transfer || []);
    const handler = handlers[cmd];
    try {
      if (!handler) throw new Error(`unknown command '${cmd}'`);
      const value = await handler(args || {}, post);
      let transfer = [];
      try {
        transfer = [...transferables(value)];
        self.postMessage({ id, type: 'result', value }, transfer);
      } catch {
        self.postMessage({ id, type: 'result', value }); // fall back to copying
      }
    } catch (e) {
      self.postMessage({ id, type: 'error', message: errorMessage(e), name: (e && e.name) || 'Error' });
    }
  });
});
