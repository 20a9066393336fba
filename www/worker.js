// Module worker that hosts one gradcam-wasm Explainer, so the page never blocks while a
// network runs. Protocol (all messages are plain objects):
//   page -> worker  {id, cmd, args}
//   worker -> page  {id, type: 'result', value} | {id, type: 'error', message, name}
//                   {id?, type: 'progress', phase: 'download'|'method', done, total}
// Typed arrays in results are transferred, not copied. Progress messages without an id (for
// example posted by the wasm side during Score-CAM) belong to the request being processed.
//   page -> worker  {cmd: '__cancel', args: {id}}: the page aborted call `id` (its AbortSignal) and
//                   no longer waits for it. Handled at once, not queued: a queued call is skipped
//                   (its image is still kept, later calls may refer to it); a running one stops
//                   at its next batch: explainAsync and evaluateAsync let the event loop run
//                   between the batches of the long methods (src/cancel.rs), so this message is
//                   read mid-run and their isCancelled check then says yes. Its result is dropped.
//   page -> worker  {cmd: '__poolChannel', args: {name}}: a BroadcastChannel name, unique to this worker.
//                   A pool thread of the threaded build that traps says so there (www/pool-thread.js):
//                   this worker is then blocked for good, waiting for that thread, so the client
//                   replaces it (and reloads the model), as after any crash.
//   page -> worker  {cmd: '__abortFlags', args: {flags}}: on a cross-origin-isolated page, an
//                   Int32Array on a SharedArrayBuffer where the page writes an aborted call's id
//                   (at id % length). The worker reads it synchronously between batches, even
//                   where nothing pauses (a synchronous wasm call): its progress callback throws,
//                   which the wasm side turns into a "cancelled" error (src/cancel.rs).
//
// Traps. A Rust panic (or an out-of-memory abort) ends in `RuntimeError: unreachable`, after which
// the wasm instance is unusable. The worker then answers THAT call with an error that names the
// trap and the panic message, replaces the instance with a fresh one, reloads the model from the
// bytes it keeps (`loaded` below), and goes on with the next call; calls queued behind the trapping
// one run on the new instance. How the instance is replaced: wasm-bindgen's `--target web` glue
// keeps the instance in module-level variables, and calling its init function again returns the
// old, trapped instance (`if (wasm !== undefined) return wasm`). scripts/build-web.sh therefore
// runs wasm-bindgen with --experimental-reset-state-function, which exports __wbg_reset_state():
// a new WebAssembly.Instance of the module it already compiled, with fresh imports, heap and
// cached memory views (a few ms, no download, no recompile). Objects of the old instance (the
// Explainer, kept results) are dropped; using one would throw 'stale object'. A glue without that
// function (an older pkg/) cannot be reset in place: the worker then says so with `fatal: true`
// and the client (gradcam-client.js) replaces the whole worker instead. (Re-importing the glue
// with a cache-busting query would also give fresh glue state, but not in the webpack build,
// which bundles the glue once.)

import { commitModelCache, loadModelBytes, readCalibrations, saveCalibration, verifyIntegrity } from './model-loader.js';
import { loadPackage } from './thread-pool.js';

let wasm = null; // the imported pkg module, after init
let wasmMemory = null; // its WebAssembly.Memory, whose buffer must never be transferred
let wasmReady = null; // Promise of it
let build = null; // {variant: 'threads-relaxed-simd' | 'threads' | 'relaxed-simd' | 'simd', threads, note}: which build runs, on how many threads, why not a faster one
let explainer = null;
let modelInfo = null;
let loaded = null; // {bytes, opts}: the model of `explainer`, kept to reload it after a trap
let trapSignal = null; // {reject}: how a trap seen outside the running call (a wasm task) fails that call
let strayTrap = null; // a trap seen while no call ran: the next call replaces the instance first
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

function ensureWasm(wasmUrl, threads, relaxedSimd) {
  if (!wasmReady) {
    wasmReady = (async () => {
      let pkg;
      try {
        pkg = await loadPackage({ threads, relaxedSimd, wasmUrl, trapChannel: poolChannel });
      } catch (e) {
        throw new Error(
          'Could not load the WebAssembly package (pkg/gradcam_wasm.js next to www/): ' + errorMessage(e) +
            '. Build it with: bash scripts/build-web.sh',
        );
      }
      const { mod, exports } = pkg;
      wasmMemory = exports && exports.memory instanceof WebAssembly.Memory ? exports.memory : null;
      if (typeof mod.lastPanicMessage !== 'function' || typeof mod.__wbg_reset_state !== 'function') {
        console.warn('gradcam worker: this pkg/ cannot be reset in place after a trap (rebuild it with scripts/build-web.sh); a trap will restart the worker');
      }
      if (pkg.fallback) console.info(`gradcam worker: running the ${pkg.variant} build: ${pkg.fallback}`);
      build = { variant: pkg.variant, threads: pkg.threads, note: pkg.fallback };
      wasm = mod;
      return mod;
    })();
    wasmReady.catch(() => {
      wasmReady = null; // allow a retry
    });
  }
  return wasmReady;
}

/** A structured-clone-safe copy of a wasm result (the plain objects of src/schema.rs) without its functions. */
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

// Calls the page aborted (ids): read by the queue below before and after each call.
const cancelled = new Set();
let lastFinished = 0; // the highest id whose call ended: a cancel for it or an older one is moot
let abortFlags = null; // Int32Array on a SharedArrayBuffer, or null (see the protocol above)
let poolChannel = null; // the BroadcastChannel name where a trapped pool thread tells the client (see the protocol above)

/** Has the page aborted call `id`? The shared flags are read synchronously, even mid-computation. */
function isAborted(id) {
  if (cancelled.has(id)) return true;
  if (abortFlags === null || Atomics.load(abortFlags, id % abortFlags.length) !== id) return false;
  cancelled.add(id); // so that finish() drops its answer
  return true;
}

/** What the wasm side is handed to stop an aborted call between batches. */
function cancelHooks(isCancelled, post, phase) {
  return {
    isCancelled,
    onProgress: (done, total) => {
      // Throwing here is how the wasm side learns of it at once (src/wasm.rs: Request::progress).
      if (isCancelled()) throw new DOMException('the call was aborted', 'AbortError');
      post({ type: 'progress', phase, done, total });
    },
  };
}

/** Explainer.create, with the calibrations earlier loads measured for these bytes when 'auto' may use
 *  them; a fresh measurement is kept for the next load. A kept record that no longer parses is dropped. */
async function createExplainer(bytes, opts) {
  const auto = !opts.backend || opts.backend === 'auto';
  const known = auto && typeof navigator !== 'undefined' && navigator.gpu ? await readCalibrations(bytes) : [];
  let next;
  try {
    next = await wasm.Explainer.create(bytes, known.length ? { ...opts, calibration: known } : opts);
  } catch (e) {
    if (!known.length || !/option 'calibration'/.test(e && e.message)) throw e;
    next = await wasm.Explainer.create(bytes, opts);
  }
  const measured = next.backendInfo().calibration;
  if (measured && !measured.cached) await saveCalibration(bytes, measured);
  return next;
}

const handlers = {
  async load({ source, options, wasmUrl }, post, isCancelled = () => false) {
    const t0 = performance.now();
    await ensureWasm(wasmUrl, options && options.threads, options && options.relaxedSimd);
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
    if (options && options.memoryBudgetMiB != null) opts.memoryBudgetMiB = options.memoryBudgetMiB;
    if (options && options.externalData) {
      // An ONNX file's <name>.onnx.data: bytes from the page, or a URL fetched (and cached) like the model.
      const d = options.externalData;
      opts.externalData = typeof d === 'string' ? await loadModelBytes(d, { integrity: options.externalDataIntegrity, deferCache: true }) : d;
    }
    // 'auto' (default): WebGPU on a hardware adapter, else the CPU; create() never fails for lack of a
    // GPU. On an adapter it measures both once per model (calibrate), reusing earlier measurements.
    if (options && options.backend) opts.backend = options.backend;
    if (options && options.calibrate != null) opts.calibrate = options.calibrate;
    const next = await createExplainer(bytes, opts);
    await commitModelCache(bytes, opts.externalData); // only now: what does not parse is never cached
    if (isCancelled()) {
      // An aborted load must not replace the model the page still uses.
      next.free();
      throw new DOMException('load() was aborted', 'AbortError');
    }
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
    loaded = { bytes, opts };
    const t2 = performance.now();
    modelInfo = {
      url,
      bytes: bytes.length,
      source: from,
      downloadMs: t1 - t0,
      initMs: t2 - t1,
      layers: plain(explainer.layers()),
      methods: plain(wasm.methodCatalog()),
      defaultLayer: explainer.defaultLayer(),
      arch: explainer.arch(),
      inputSize: explainer.inputSize(),
      numClasses: explainer.numClasses(),
      backend: plain(explainer.backendInfo()),
      build,
      // The method names (and aliases) whose batches the client may split across workers; empty
      // for a pkg/ without recordShardAsync.
      shardedMethods: shardedMethods(),
    };
    return modelInfo;
  },

  /** A copy of the loaded model's bytes and options, for the client's shard workers (no download). */
  async modelBytes() {
    if (!loaded) throw new Error('No model is loaded: call load() first.');
    const { bytes, opts } = loaded;
    const copy = { ...opts };
    if (opts.externalData) copy.externalData = opts.externalData.slice();
    return { bytes: bytes.slice(), options: copy, build };
  },

  /** This worker's share (shard `index` of `count`) of an explain's or evaluate's batched calls. */
  async recordShard(args, post, isCancelled = () => false) {
    const img = currentImage(args);
    const ex = requireExplainer();
    const cls = args.classIdx === null || args.classIdx === undefined ? undefined : args.classIdx;
    const options = { ...(args.options || {}), ...cancelHooks(isCancelled, post, 'method') };
    return plain(await ex.recordShardAsync(args.call, img, cls, options, args.index, args.count, args.known || undefined));
  },

  /** An explain or evaluate whose batched calls are answered from the shards' merged tape. */
  async replay(args, post, isCancelled = () => false) {
    const img = currentImage(args);
    const ex = requireExplainer();
    const cls = args.classIdx === null || args.classIdx === undefined ? undefined : args.classIdx;
    const options = { ...(args.options || {}), ...cancelHooks(isCancelled, post, 'method') };
    const r = await ex.replayAsync(args.call, img, cls, options, args.tape);
    const value = plain(r);
    if (args.call === 'explain' && r && typeof r.free === 'function') value.resultId = remember(r);
    return value;
  },

  async explain(args, post, isCancelled = () => false) {
    const img = currentImage(args); // first: the image is kept even when the call fails
    const ex = requireExplainer();
    const cls = args.classIdx === null || args.classIdx === undefined ? undefined : args.classIdx;
    // explainAsync runs on the explainer's backend (WebGPU or the CPU) and falls back to the CPU by itself.
    const r = await ex.explainAsync(img, cls, { ...(args.options || {}), ...cancelHooks(isCancelled, post, 'method') });
    const value = plain(r);
    // A wasm-bindgen object is kept for overlay(); a plain object is not, because its typed
    // arrays are about to be transferred (the page sends them back with overlay()).
    if (r && typeof r.free === 'function') value.resultId = remember(r);
    return value;
  },

  /** Deletion / insertion curves, their AUCs, the confidence change and the 15% box (`evaluate`, CPU). */
  async evaluate(args, post, isCancelled = () => false) {
    const img = currentImage(args);
    const ex = requireExplainer();
    const cls = args.classIdx === null || args.classIdx === undefined ? undefined : args.classIdx;
    const options = { ...(args.options || {}), ...cancelHooks(isCancelled, post, 'method') };
    // evaluateAsync pauses between batches, so an abort is seen mid-run (evaluate: an older pkg/).
    return plain(typeof ex.evaluateAsync === 'function' ? await ex.evaluateAsync(img, cls, options) : ex.evaluate(img, cls, options));
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

  /** Every method with its label, help, grid and needs (`methodCatalog()`): no model needed. */
  async methods({ wasmUrl } = {}) {
    const mod = await ensureWasm(wasmUrl);
    return plain(mod.methodCatalog());
  },

  async defaultLayer() {
    return requireExplainer().defaultLayer();
  },

  async info() {
    return modelInfo;
  },

  // TEST ONLY: makes the module trap through its test-only export (see src/trap.rs), so that tests
  // can prove the recovery; `inTask` traps inside a wasm task, as a panic in explainAsync would.
  async __testTrap({ inTask, inPool, wasmUrl }) {
    const mod = await ensureWasm(wasmUrl);
    if (typeof mod.__testTrap !== 'function') throw new Error('this pkg/ has no __testTrap export: rebuild it with scripts/build-web.sh');
    if (inPool) {
      if (typeof mod.__testTrapInPool !== 'function') throw new Error('__testTrap({inPool}) needs the threaded build (a cross-origin-isolated page)');
      mod.__testTrapInPool(); // blocks this worker for good: the client hears of it on the pool channel
    }
    mod.__testTrap(!!inTask);
    return new Promise(() => {}); // inTask: the trap arrives through trapSignal
  },

  async free() {
    if (explainer) explainer.free();
    explainer = null;
    loaded = null;
    modelInfo = null;
    image = null;
    results.clear();
    return true;
  },
};

/** Every method name and alias whose batched calls are worth splitting across workers (src/tape.rs). */
function shardedMethods() {
  if (!explainer || typeof explainer.recordShardAsync !== 'function' || typeof wasm.shardsWell !== 'function') return [];
  const names = [];
  for (const m of wasm.methodCatalog()) if (wasm.shardsWell(m.name)) names.push(m.name, ...(m.aliases || []));
  return names;
}

/** Is `e` an error after which the wasm instance cannot be used any more? */
function isTrap(e) {
  if (typeof WebAssembly !== 'undefined' && e instanceof WebAssembly.RuntimeError) return true;
  // A JS stack overflow thrown through wasm frames leaves Rust state half-updated just the same.
  return e instanceof RangeError && /call stack/i.test(e.message);
}

/**
 * Replaces the trapped instance with a fresh one and reloads the model into it. Returns a sentence
 * for the error message; throws (with `fatal`) when the glue cannot make a new instance.
 */
async function recoverFromTrap(cmd) {
  const t0 = performance.now();
  const old = loaded;
  explainer = null;
  modelInfo = old ? modelInfo : null;
  results.clear(); // objects of the dead instance: never free()d, they die with it
  if (build && build.variant.startsWith('threads')) {
    // A fresh instance would have fresh shared memory, which the pool's threads do not see.
    const e = new Error('the threaded build cannot make a new WebAssembly instance beside its pool threads; the client restarts the worker');
    e.fatal = true;
    throw e;
  }
  if (!wasm || typeof wasm.__wbg_reset_state !== 'function') {
    const e = new Error('this build of pkg/ cannot make a new WebAssembly instance in the worker (rebuild it with scripts/build-web.sh); the client restarts the worker');
    e.fatal = true;
    throw e;
  }
  wasm.__wbg_reset_state();
  try {
    wasmMemory = wasm.__wasmMemory ? wasm.__wasmMemory() : null;
  } catch {
    wasmMemory = null;
  }
  if (!old) return `The module was re-instantiated in ${Math.round(performance.now() - t0)} ms (no model was loaded).`;
  try {
    explainer = await createExplainer(old.bytes, old.opts);
    loaded = old;
  } catch (e) {
    loaded = null;
    modelInfo = null;
    if (isTrap(e)) {
      wasm.__wbg_reset_state(); // the model itself traps: leave a clean instance without it
    }
    return `The module was re-instantiated, but the model could not be reloaded (${errorMessage(e)}): call load() again.`;
  }
  const which = cmd === 'load' ? 'the model loaded before this call was' : 'the model';
  return `The module was re-instantiated and ${which} reloaded in ${Math.round(performance.now() - t0)} ms; the next call runs normally.`;
}

/** The reply to a call that trapped: what trapped, the Rust panic message, what was done about it. */
async function trapReply(cmd, e) {
  let panic = null;
  try {
    panic = wasm && typeof wasm.lastPanicMessage === 'function' ? wasm.lastPanicMessage() : null; // from the trapped instance
  } catch {
    panic = null; // the instance is too broken even for that
  }
  const what = `The WebAssembly module trapped (${(e && e.name) || 'RuntimeError'}: ${errorMessage(e)}) during ${cmd}()`;
  const why = panic ? `; the Rust code ${panic.replace(/\s+/g, ' ').trim()}` : '; no Rust panic message was recorded (an out-of-memory abort or a stack overflow traps without one)';
  let done;
  let fatal = false;
  try {
    done = await recoverFromTrap(cmd);
  } catch (r) {
    done = `But ${errorMessage(r)}.`;
    fatal = true; // the client replaces the whole worker
  }
  // modelLost: the instance is new but holds no model; the client forgets its model info.
  return { message: `${what}${why}. ${done}`, fatal, modelLost: !fatal && explainer === null };
}

// A trap inside a wasm task (a future polled from a microtask, as in explainAsync) is not an
// exception of any call: it arrives here, and fails the call that is running.
function onStrayTrap(event, error) {
  if (!isTrap(error)) return;
  event.preventDefault(); // handled here: not a crash of the worker (the page's Worker 'error' event)
  if (trapSignal) trapSignal.reject(error);
  else strayTrap = error;
}
self.addEventListener('error', (event) => onStrayTrap(event, event.error));
self.addEventListener('unhandledrejection', (event) => onStrayTrap(event, event.reason));

// Requests run one at a time, in order: the Explainer is not re-entrant.
let queue = Promise.resolve();

/** A call the page aborted before it ran: skipped, but the image it carries is kept for later calls. */
function skipCancelled(id, args) {
  cancelled.delete(id);
  if (args && args.image) {
    try {
      currentImage(args);
    } catch {
      /* a malformed image: the call would have failed anyway */
    }
  }
}

/** A finished call: its cancel mark goes (the page answered its promise already). Frees a dropped result. */
function finish(id, value) {
  lastFinished = Math.max(lastFinished, id);
  if (!cancelled.delete(id)) return false;
  const kept = value && value.resultId != null ? results.get(value.resultId) : undefined;
  if (kept !== undefined) {
    results.delete(value.resultId); // the page never sees its id: no overlay() can ask for it
    try {
      kept.free();
    } catch {
      /* already freed */
    }
  }
  return true;
}

self.addEventListener('message', (event) => {
  const msg = event.data;
  if (!msg || typeof msg !== 'object' || typeof msg.cmd !== 'string') return;
  const { id, cmd, args } = msg;
  if (cmd === '__cancel') {
    const target = args && args.id;
    if (typeof target === 'number' && target > lastFinished) cancelled.add(target);
    return;
  }
  if (cmd === '__poolChannel') {
    if (args && typeof args.name === 'string') poolChannel = args.name;
    return;
  }
  if (cmd === '__abortFlags') {
    const flags = args && args.flags;
    if (flags instanceof Int32Array && typeof SharedArrayBuffer === 'function' && flags.buffer instanceof SharedArrayBuffer) abortFlags = flags;
    return;
  }
  queue = queue.then(async () => {
    // One task's wait first: a call that arrived while another ran would otherwise start in the same
    // task as its own message, before the cancel the page sent right after it is read.
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (isAborted(id)) return skipCancelled(id, args);
    const post = (m, transfer) => self.postMessage({ id, ...m }, transfer || []);
    const isCancelled = () => isAborted(id);
    const handler = handlers[cmd];
    try {
      if (strayTrap) {
        // The instance trapped while no call ran: it is replaced before this call runs.
        const e = strayTrap;
        strayTrap = null;
        const reply = await trapReply('a wasm task between calls', e);
        if (reply.fatal) {
          self.postMessage({ id, type: 'error', name: 'RuntimeError', trap: true, ...reply });
          return;
        }
        console.warn(`gradcam worker: ${reply.message}`);
      }
      if (!handler) throw new Error(`unknown command '${cmd}'`);
      const trapped = new Promise((_, reject) => (trapSignal = { reject }));
      trapped.catch(() => {});
      const value = await Promise.race([handler(args || {}, post, isCancelled), trapped]);
      if (finish(id, value)) return; // aborted while it ran: nobody waits for the answer
      let transfer = [];
      try {
        transfer = [...transferables(value)];
        self.postMessage({ id, type: 'result', value }, transfer);
      } catch {
        self.postMessage({ id, type: 'result', value }); // fall back to copying
      }
    } catch (e) {
      if (finish(id, null) && !isTrap(e)) return; // aborted: the page already rejected the call
      if (isTrap(e)) {
        self.postMessage({ id, type: 'error', name: 'RuntimeError', trap: true, ...(await trapReply(cmd, e)) });
      } else {
        self.postMessage({ id, type: 'error', message: errorMessage(e), name: (e && e.name) || 'Error' });
      }
    } finally {
      trapSignal = null;
    }
  });
});
