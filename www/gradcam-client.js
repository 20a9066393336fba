// Promise API over the gradcam-wasm worker: the same calls as the wasm Explainer, run off the
// main thread. Buffers are transferred; progress arrives as callbacks and as 'progress' events.
//
//   const client = new GradcamClient();
//   await client.load('assets/models/efficientnet-lite0.safetensors', {}, (done, total) => ...);
//   const result = await client.explain(imageData, 281, {method: 'gradcam'});
//   ctx.putImageData(await client.overlay(imageData, result, {colormap: 'jet', alpha: 0.5}), 0, 0);

export const COLORMAPS = ['turbo', 'jet', 'viridis', 'inferno'];

const imageKeys = new WeakMap();
let nextImageKey = 1;

function keyOf(imageData) {
  let k = imageKeys.get(imageData);
  if (!k) {
    k = nextImageKey++;
    imageKeys.set(imageData, k);
  }
  return k;
}

function checkImage(imageData) {
  if (!imageData || !imageData.data || !(imageData.width > 0) || !(imageData.height > 0)) {
    throw new Error('expected an image: ImageData, ImageBitmap, <img>, <canvas>, OffscreenCanvas, <video>, a Blob or File, or a URL');
  }
}

// Blobs and bitmaps cannot change, so their pixels (and the worker's forward pass of them) are reused.
const decoded = new WeakMap();

/** The source's pixels, drawn at its natural size. */
function pixelsOf(source, width, height) {
  const canvas = typeof OffscreenCanvas !== 'undefined' ? new OffscreenCanvas(width, height) : Object.assign(document.createElement('canvas'), { width, height });
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(source, 0, 0);
  return ctx.getImageData(0, 0, width, height);
}

/**
 * Any image a page holds, as ImageData: ImageData itself, an ImageBitmap, an <img> (waited for),
 * a <canvas> or OffscreenCanvas, a <video> frame, a VideoFrame, a Blob or File (decoded), or a URL
 * string (fetched: same origin, or served with CORS).
 */
export async function toImageData(image) {
  if (typeof image === 'string' || image instanceof URL) {
    const base = typeof document !== 'undefined' ? document.baseURI : self.location.href;
    const url = new URL(String(image), base);
    const res = await fetch(url);
    if (!res.ok) throw new Error(`could not fetch the image ${url.href}: HTTP ${res.status}`);
    image = await res.blob();
  }
  if (!image || typeof image !== 'object') return checkImage(image);
  if (decoded.has(image)) return decoded.get(image);
  let out;
  if (typeof Blob !== 'undefined' && image instanceof Blob) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(image);
    } catch (e) {
      throw new Error(`the ${image.type || 'file'} could not be decoded as an image: ${e && e.message}`);
    }
    out = pixelsOf(bitmap, bitmap.width, bitmap.height);
    bitmap.close();
  } else if (typeof HTMLImageElement !== 'undefined' && image instanceof HTMLImageElement) {
    await image.decode();
    return pixelsOf(image, image.naturalWidth, image.naturalHeight);
  } else if (typeof HTMLVideoElement !== 'undefined' && image instanceof HTMLVideoElement) {
    return pixelsOf(image, image.videoWidth, image.videoHeight);
  } else if (typeof VideoFrame !== 'undefined' && image instanceof VideoFrame) {
    return pixelsOf(image, image.displayWidth, image.displayHeight);
  } else if (typeof ImageBitmap !== 'undefined' && image instanceof ImageBitmap) {
    out = pixelsOf(image, image.width, image.height);
  } else if (typeof image.getContext === 'function') {
    return pixelsOf(image, image.width, image.height); // a canvas: its pixels now
  } else {
    return image; // ImageData, or an object shaped like one (checked when it is sent)
  }
  decoded.set(image, out);
  return out;
}

/** The rejection of an aborted call, as fetch() gives it: a DOMException named AbortError. */
export function abortError(signal) {
  const reason = signal && signal.reason;
  if (reason instanceof DOMException && reason.name === 'AbortError') return reason;
  const e = new DOMException('The gradcam call was aborted', 'AbortError');
  if (reason !== undefined) Object.defineProperty(e, 'cause', { value: reason }); // the caller's own reason
  return e;
}

/** `signal` checked (an AbortSignal or nothing), so a wrong value fails loudly instead of never aborting. */
function checkSignal(signal, where) {
  if (signal === undefined || signal === null) return null;
  const ok = typeof AbortSignal !== 'undefined' ? signal instanceof AbortSignal : typeof signal.addEventListener === 'function' && 'aborted' in signal;
  if (!ok) throw new Error(`${where}: signal must be an AbortSignal (from new AbortController().signal), got ${typeof signal}`);
  return signal;
}

/** options without `signal` (which the worker must not see: it cannot be cloned) and the signal. */
function splitSignal(options, where) {
  if (options !== undefined && options !== null && typeof options !== 'object') throw new Error(`${where}: options must be an object, got ${typeof options}`);
  const { signal, ...rest } = options || {};
  return { options: rest, signal: checkSignal(signal, where) };
}

/** classIdx as the worker takes it: null (top-1), a number, or a weighted string "281:1,285:0.5". */
function classArg(classIdx) {
  if (classIdx === null || classIdx === undefined || classIdx === '') return null;
  if (typeof classIdx === 'string' && /[:,]/.test(classIdx)) return classIdx; // weighted: wasm parses it
  return Number(classIdx);
}

/** load()'s `workers`: 'auto' or a whole number from 1 to 16 (default 1). */
function checkWorkers(w) {
  if (w === undefined || w === null) return 1;
  if (w === 'auto') return 'auto';
  if (Number.isInteger(w) && w >= 1 && w <= 16) return w;
  throw new Error(`load(): workers must be 'auto' or a whole number from 1 to 16, got ${JSON.stringify(w)}`);
}

/** A method name as the wasm side matches it: lowercase, without '-', '_' or spaces. */
function methodKey(name) {
  return String(name).trim().toLowerCase().replace(/[^a-z0-9+]/g, '');
}

/** Several ShardTapes (disjoint calls) as one. */
function mergeTapes(tapes) {
  const calls = new Uint32Array(tapes.reduce((n, t) => n + t.calls.length, 0));
  const lengths = new Uint32Array(calls.length);
  const data = new Float32Array(tapes.reduce((n, t) => n + t.data.length, 0));
  let c = 0;
  let d = 0;
  for (const t of tapes) {
    calls.set(t.calls, c);
    lengths.set(t.lengths, c);
    data.set(t.data, d);
    c += t.calls.length;
    d += t.data.length;
  }
  return { calls, lengths, data };
}

function tapeBuffers(t) {
  return [t.calls.buffer, t.lengths.buffer, t.data.buffer];
}

export class GradcamClient extends EventTarget {
  /**
   * @param {{worker?: Worker, workerUrl?: string|URL, wasmUrl?: string|URL}} [options]
   *   `wasmUrl` overrides where the worker finds gradcam_wasm_bg.wasm (default: next to gradcam_wasm.js).
   */
  constructor(options = {}) {
    super();
    this.wasmUrl = options.wasmUrl ? String(options.wasmUrl) : undefined;
    this._workerUrl = options.workerUrl;
    this._ownWorker = !options.worker; // a worker the caller passed cannot be re-created here
    this._pending = new Map(); // id -> {resolve, reject, onProgress, cmd}
    this._nextId = 1;
    this._imageKeyInWorker = 0;
    this.model = null; // what load() returned
    this._modelSource = null; // {source, options}: what load() loaded, kept to reload it in a new worker
    this._dead = null; // an Error: why the worker died; the next call starts a new one
    this._restarting = null; // Promise of the new worker (and the reloaded model)
    this._terminated = false;
    this._decoding = null; // a Promise while an image that is not ImageData is being decoded (see _withImage)
    // On a cross-origin-isolated page, aborted call ids are also written here, where the worker reads
    // them synchronously between batches: a running method then stops within one batch.
    this._workersAsked = 1; // load()'s `workers`
    this._shards = []; // GradcamClients of the extra shard workers, started by load()
    this._shardsReady = null; // Promise of them (loaded with the model's bytes)
    this._abortFlags = typeof crossOriginIsolated !== 'undefined' && crossOriginIsolated && typeof SharedArrayBuffer === 'function' ? new Int32Array(new SharedArrayBuffer(4 * 256)) : null;
    this._startWorker(options.worker);
  }

  _startWorker(given) {
    const worker =
      given ||
      (this._workerUrl
        ? new Worker(this._workerUrl, { type: 'module' })
        : new Worker(new URL('./worker.js', import.meta.url), { type: 'module' }));
    this.worker = worker;
    // Events of a worker that was replaced are ignored.
    worker.addEventListener('message', (e) => worker === this.worker && this._onMessage(e.data));
    worker.addEventListener('error', (e) => {
      if (e && typeof e.preventDefault === 'function') e.preventDefault();
      if (worker !== this.worker) return;
      const where = e && e.filename ? ` (${e.filename}:${e.lineno})` : '';
      this._workerDied(`failed to start or crashed${where}: ${(e && e.message) || 'see the console'}`);
    });
    worker.addEventListener('messageerror', () => {
      if (worker === this.worker) this._failAll(new Error('A message from the gradcam worker could not be read'));
    });
    if (this._abortFlags) worker.postMessage({ cmd: '__abortFlags', args: { flags: this._abortFlags } });
    this._listenToPool(worker);
  }

  /**
   * A pool thread of the threaded build that traps leaves the worker blocked for good (it waits for
   * that thread), so the thread says so on a BroadcastChannel of this worker's own, and the worker is
   * replaced as after a crash.
   */
  _listenToPool(worker) {
    if (this._poolChannel) this._poolChannel.close();
    this._poolChannel = null;
    if (typeof BroadcastChannel !== 'function') return;
    const name = `gradcam-pool-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
    const channel = new BroadcastChannel(name);
    channel.onmessage = ({ data }) => {
      if (worker === this.worker && data && data.trap) this._workerDied(`was blocked by a kernel thread that trapped (${data.trap})`);
    };
    this._poolChannel = channel;
    worker.postMessage({ cmd: '__poolChannel', args: { name } });
  }

  /**
   * The worker is gone (it crashed, or its wasm instance could not be replaced after a trap): every
   * pending call is rejected with `why`, and the next call starts a new worker and reloads the model.
   */
  _workerDied(why) {
    if (this._terminated) return;
    const worker = this.worker;
    try {
      worker.terminate();
    } catch {
      /* already gone */
    }
    const next = !this._ownWorker
      ? 'This client was given its worker and cannot start another: create a new GradcamClient and load() the model again.'
      : this._modelSource
        ? 'The next call starts a new worker and reloads the model.'
        : 'The next call starts a new worker; load() a model first.';
    this._dead = new Error(`The gradcam worker ${why}. ${next}`);
    this._dead.name = 'WorkerError';
    const pending = this._pending.size;
    const err = new Error(`The gradcam worker ${why}; ${pending > 1 ? `this call and ${pending - 1} other pending call(s) were` : 'this call was'} cancelled. ${next}`);
    err.name = 'WorkerError';
    this._failAll(err);
  }

  /** A new worker in place of a dead one, with the model reloaded (when this client holds its source). */
  _restart(reload) {
    if (!this._restarting) {
      const why = this._dead;
      this._restarting = (async () => {
        if (!this._ownWorker) throw why;
        this._startWorker();
        this._dead = null;
        this._imageKeyInWorker = 0;
        if (!reload || !this._modelSource) return;
        const { source, options } = this._modelSource;
        try {
          const { args, transfer } = await this._loadArgs(source, options);
          this.model = await this._send('load', args, transfer);
          this.model.workers = this._workerCount();
        } catch (e) {
          this.model = null;
          this._modelSource = null;
          throw new Error(`The gradcam worker had died (${why.message}), and reloading the model in a new worker failed: ${e.message}. Call load() again.`);
        }
      })().finally(() => {
        this._restarting = null;
      });
    }
    return this._restarting;
  }

  _failAll(error) {
    for (const p of this._pending.values()) p.reject(error);
    this._pending.clear();
    this._imageKeyInWorker = 0;
  }

  _onMessage(msg) {
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'progress') {
      // Without an id, progress belongs to the request the worker is running: the oldest one.
      const p = msg.id != null ? this._pending.get(msg.id) : this._pending.values().next().value;
      const detail = { phase: msg.phase || (p && p.cmd === 'load' ? 'download' : 'method'), done: msg.done, total: msg.total, request: p ? p.cmd : null };
      if (p && p.onProgress) {
        try {
          p.onProgress(msg.done, msg.total, detail);
        } catch (e) {
          console.error(e);
        }
      }
      this.dispatchEvent(new CustomEvent('progress', { detail }));
      return;
    }
    const p = this._pending.get(msg.id);
    if (!p) return;
    this._pending.delete(msg.id);
    if (msg.type === 'result') p.resolve(msg.value);
    else {
      const err = new Error(msg.message || 'unknown error in the gradcam worker');
      if (msg.name && msg.name !== 'Error') err.name = msg.name;
      if (msg.trap) err.trapped = true; // the wasm module trapped; the worker replaced it (see worker.js)
      if (msg.modelLost) this.model = null; // ... but could not reload the model: load() again
      p.reject(err);
      // The worker could not replace its trapped instance: replace the worker.
      if (msg.fatal) this._workerDied('could not recover from a trap of its WebAssembly module');
    }
  }

  _call(cmd, args = {}, transfer = [], onProgress = null, signal = null) {
    if (this._terminated) return Promise.reject(new Error('This GradcamClient was terminated'));
    if (this._dead || this._restarting) {
      // The worker died: a new one first (with the model reloaded, unless this call loads or frees one).
      return this._restart(cmd !== 'load' && cmd !== 'free').then(() => this._call(cmd, args, transfer, onProgress, signal));
    }
    return this._send(cmd, args, transfer, onProgress, signal);
  }

  _send(cmd, args = {}, transfer = [], onProgress = null, signal = null) {
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const done = (settle) => (v) => {
        if (signal) signal.removeEventListener('abort', onAbort);
        settle(v);
      };
      const onAbort = () => this._abort(id, signal);
      this._pending.set(id, { resolve: done(resolve), reject: done(reject), onProgress, cmd });
      try {
        // Sent even when already aborted: the message may carry the image the next calls refer to,
        // and the worker, told at once, skips the call but keeps the image.
        this.worker.postMessage({ id, cmd, args }, transfer);
      } catch (e) {
        this._pending.delete(id);
        reject(e instanceof Error ? e : new Error(String(e)));
        return;
      }
      if (!signal) return;
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Aborts call `id`: its promise rejects now with an AbortError, and the worker is told, so that it
   * skips the call if it is still queued, or drops its result if it is running (the worker and its
   * model stay; see worker.js for how far a running method gets before it notices).
   */
  _abort(id, signal) {
    const p = this._pending.get(id);
    if (!p) return; // settled already
    this._pending.delete(id);
    if (this._abortFlags) Atomics.store(this._abortFlags, id % this._abortFlags.length, id); // seen mid-run
    try {
      this.worker.postMessage({ cmd: '__cancel', args: { id } });
    } catch {
      /* the worker is gone: nothing runs there any more */
    }
    p.reject(abortError(signal));
  }

  /**
   * Runs `run(imageData)` in call order: at once for an ImageData (so the call is sent, and queued in
   * the worker, as it is made), after decoding for any other image, later calls waiting behind it.
   */
  _withImage(image, run) {
    const plain = image && typeof image === 'object' && 'data' in image && 'width' in image;
    if (plain && !this._decoding) return run(image);
    const decoded = (this._decoding || Promise.resolve()).then(() => toImageData(image));
    const result = decoded.then(run); // registered first, so it sends before the next call's turn
    const sent = decoded.then(
      () => {},
      () => {},
    );
    this._decoding = sent;
    sent.then(() => {
      if (this._decoding === sent) this._decoding = null;
    });
    return result;
  }

  /** The image part of a request: pixels only when the worker does not already hold this image. */
  _imageArgs(imageData) {
    checkImage(imageData);
    const imageKey = keyOf(imageData);
    if (imageKey === this._imageKeyInWorker) return { args: { imageKey }, transfer: [] };
    const copy = imageData.data.slice(); // the caller keeps its ImageData; the copy is moved
    this._imageKeyInWorker = imageKey;
    return {
      args: { imageKey, image: { buffer: copy.buffer, width: imageData.width, height: imageData.height } },
      transfer: [copy.buffer],
    };
  }

  /**
   * Loads a model. `urlOrBytes`: a URL (downloaded in the worker, through the Cache API) or the
   * bytes (ArrayBuffer / Uint8Array; copied, so the caller's array stays usable).
   * @param {{arch?: string, labels?: string[]}} [options]
   * @param {(received: number, total: number) => void} [onProgress]  total is 0 while unknown.
   * @param {{arch?: string, labels?: string[], backend?: 'auto'|'cpu'|'webgpu', integrity?: string,
   *          externalDataIntegrity?: string, memoryBudgetMiB?: number, threads?: 'auto'|number, relaxedSimd?: boolean, calibrate?: boolean}} [options]  integrity: "sha256-<base64>" (SRI syntax)
   * @returns {Promise<{url, bytes, source: 'network'|'cache'|'memory', downloadMs, initMs, layers, methods, defaultLayer,
   *   backend: {backend: 'cpu'|'webgpu', requested, adapter, software, note},
   *   build: {variant: 'threads-relaxed-simd'|'threads'|'relaxed-simd'|'simd', threads: number, note: string|null}}>}
   */
  async load(urlOrBytes, options = {}, onProgress = null) {
    const split = splitSignal(options, 'load()');
    if (split.signal && split.signal.aborted) throw abortError(split.signal);
    const workers = checkWorkers(split.options.workers);
    const { args, transfer, keep } = await this._loadArgs(urlOrBytes, split.options);
    this.model = await this._call('load', args, transfer, onProgress, split.signal);
    this._modelSource = keep; // to reload it if the worker dies
    this._workersAsked = workers;
    this.model.workers = this._workerCount();
    // The shard workers start (or, already running, take the new model) now: what a page fetches for
    // them (the worker's script, the wasm) it fetches during its first load(), never while explaining.
    // If they cannot start, long calls run in one worker and try them again.
    if (this.model.workers > 1) {
      await this._ensureShards(this.model.workers, true).catch((e) => console.warn(`gradcam: the shard workers could not start (${e.message}); long calls run in one worker for now`));
    } else {
      this._dropShards();
    }
    return this.model;
  }

  /**
   * How many workers the batched methods use: `workers` of load() ('auto': one per core up to 4 on a
   * page that is not cross-origin isolated, where the threaded build cannot run), 1 on the WebGPU
   * backend, with the threaded build (its threads use every core already) or a pkg/ without shards.
   */
  _workerCount() {
    const m = this.model;
    const shardable = m && m.backend && m.backend.backend === 'cpu' && !(m.build && m.build.variant.startsWith('threads')) && (m.shardedMethods || []).length > 0;
    if (!shardable || !this._ownWorker) return 1;
    if (this._workersAsked !== 'auto') return this._workersAsked;
    const isolated = typeof crossOriginIsolated !== 'undefined' && crossOriginIsolated;
    const cores = (typeof navigator !== 'undefined' && navigator.hardwareConcurrency) || 1;
    return isolated ? 1 : Math.max(1, Math.min(cores, 4));
  }

  /** Whether `call` ('explain' with these options, or 'evaluate') splits its batches across workers. */
  _shardsFor(call, options) {
    const k = this.model ? this.model.workers || 1 : 1;
    if (k < 2) return 1;
    if (call === 'evaluate') return k; // its curves are batched whatever the method
    const names = (this.model.shardedMethods || []).map(methodKey);
    return names.includes(methodKey(options.method || 'gradcam')) ? k : 1;
  }

  /**
   * The k - 1 shard workers, each loaded with the main worker's copy of the model bytes (no download).
   * `reload`: the main worker has a new model; running shard workers take it rather than being replaced.
   */
  _ensureShards(k, reload = false) {
    if (!reload && this._shards.length === k - 1 && this._shardsReady) return this._shardsReady;
    const running = this._shards.length === k - 1 ? this._shards : null;
    if (!running) this._dropShards();
    const ready = (async () => {
      const { bytes, options, build } = await this._call('modelBytes');
      const opts = { ...options, backend: 'cpu', threads: 1, workers: 1, relaxedSimd: !!(build && build.variant === 'relaxed-simd') };
      const source = new Blob([bytes]); // each shard copies it; kept to reload a shard that dies
      this._shards = running || Array.from({ length: k - 1 }, () => new GradcamClient({ workerUrl: this._workerUrl, wasmUrl: this.wasmUrl }));
      await Promise.all(this._shards.map((c) => c.load(source, opts)));
      return this._shards;
    })();
    ready.catch(() => {
      if (this._shardsReady === ready) this._dropShards();
    });
    this._shardsReady = ready;
    return ready;
  }

  _dropShards() {
    for (const c of this._shards) c.terminate();
    this._shards = [];
    this._shardsReady = null;
  }

  /**
   * `call` ('explain' or 'evaluate') with its batched calls split across k workers: every worker
   * records its share (the main worker shard 0), in rounds until every stage is recorded (an
   * evaluate's curves follow its map), then the main worker replays the merged tapes, giving the
   * result, bit for bit, of the unsharded call. A shard that fails (its worker died) makes the call
   * run unsharded in the main worker instead; an abort rejects at once and stops every worker.
   */
  async _runSharded(call, imageData, args, k, onProgress, signal) {
    let shards;
    try {
      shards = await this._ensureShards(k);
    } catch (e) {
      console.warn(`gradcam: the shard workers could not start (${e.message}); this call runs in one worker`);
      return this._sendWithImage(call, imageData, args, onProgress, signal);
    }
    const done = new Array(k).fill(0);
    const report = (i) => (d, total) => {
      done[i] = d;
      if (onProgress) onProgress(Math.min(total, done.reduce((a, b) => a + b, 0)), total);
    };
    // The shards' own signal: the caller's abort stops them all, and so does one shard failing (the
    // others stop within a batch, so the fallback below does not wait behind their work).
    const shardsSignal = new AbortController();
    const stopShards = () => shardsSignal.abort(signal && signal.reason);
    if (signal) signal.addEventListener('abort', stopShards, { once: true });
    let known;
    try {
      for (let round = 0; round < 4; round++) {
        const sharded = { ...args, count: k, known };
        const tapes = await Promise.all([
          this._sendWithImage('recordShard', imageData, { ...sharded, index: 0 }, report(0), shardsSignal.signal),
          ...shards.map((c, i) => c._sendWithImage('recordShard', imageData, { ...sharded, index: i + 1 }, report(i + 1), shardsSignal.signal)),
        ]);
        known = mergeTapes(known ? [known, ...tapes] : tapes);
        if (tapes.every((t) => t.complete)) break;
      }
    } catch (e) {
      if (signal && signal.aborted) throw abortError(signal);
      stopShards();
      console.warn(`gradcam: a shard of this ${call} failed (${e.message}); it runs in one worker instead`);
      return this._sendWithImage(call, imageData, args, onProgress, signal);
    } finally {
      if (signal) signal.removeEventListener('abort', stopShards);
    }
    return this._sendWithImage('replay', imageData, { ...args, call, tape: known }, null, signal, tapeBuffers(known));
  }

  /** Sends `cmd` with the image's pixels unless this client's worker holds them already. */
  _sendWithImage(cmd, imageData, args, onProgress, signal, transfer = []) {
    const image = this._imageArgs(imageData);
    return this._call(cmd, { ...args, ...image.args }, [...image.transfer, ...transfer], onProgress, signal);
  }

  /** load()'s request: {args, transfer}, and `keep`, what reloads the same model later (no detached buffers). */
  async _loadArgs(urlOrBytes, options = {}) {
    const keep = { source: urlOrBytes, options: { ...options } };
    let source;
    const transfer = [];
    if (typeof urlOrBytes === 'string' || urlOrBytes instanceof URL) {
      const base = typeof document !== 'undefined' ? document.baseURI : self.location.href;
      source = new URL(String(urlOrBytes), base).href;
    } else if (urlOrBytes instanceof ArrayBuffer || ArrayBuffer.isView(urlOrBytes)) {
      const view = urlOrBytes instanceof ArrayBuffer ? new Uint8Array(urlOrBytes) : new Uint8Array(urlOrBytes.buffer, urlOrBytes.byteOffset, urlOrBytes.byteLength);
      source = view.slice();
      transfer.push(source.buffer);
      if (typeof Blob !== 'undefined') keep.source = new Blob([source]); // a copy the caller cannot change
    } else if (typeof Blob !== 'undefined' && urlOrBytes instanceof Blob) {
      source = new Uint8Array(await urlOrBytes.arrayBuffer());
      transfer.push(source.buffer);
    } else {
      throw new Error('load() needs a URL, an ArrayBuffer, a Uint8Array or a Blob');
    }
    const opts = {};
    if (options && options.arch) opts.arch = String(options.arch);
    // An array of names, or the text of a labels file (a JSON array or one name per line).
    if (options && options.labels) opts.labels = typeof options.labels === 'string' ? options.labels : Array.from(options.labels, String);
    if (options && options.backend) opts.backend = String(options.backend); // 'auto' | 'cpu' | 'webgpu'
    // Subresource Integrity of the model (and of its .onnx.data): "sha256-<base64>", checked before use.
    if (options && options.integrity) opts.integrity = String(options.integrity);
    if (options && options.externalDataIntegrity) opts.externalDataIntegrity = String(options.externalDataIntegrity);
    if (options && options.inputSize != null) opts.inputSize = Number(options.inputSize);
    if (options && options.mean) opts.mean = Array.from(options.mean, Number);
    if (options && options.std) opts.std = Array.from(options.std, Number);
    // The most memory one explanation may hold at once (its forward and its method's buffers together).
    if (options && options.memoryBudgetMiB != null) opts.memoryBudgetMiB = Number(options.memoryBudgetMiB);
    // Kernel threads: 'auto' (one per core on a cross-origin-isolated page, else 1) or a number. The
    // worker's first load decides which build it runs (www/thread-pool.js).
    if (options && options.threads != null) opts.threads = options.threads === 'auto' ? 'auto' : Number(options.threads);
    // false: the plain SIMD builds only, whose maps are the same on every CPU (relaxed SIMD's fused
    // multiply-adds may round differently from one machine to another).
    if (options && options.relaxedSimd != null) opts.relaxedSimd = !!options.relaxedSimd;
    // backend 'auto' on a WebGPU adapter: whether to time both backends once per model and adapter.
    if (options && options.calibrate != null) opts.calibrate = !!options.calibrate;
    // An ONNX file's external weights (<name>.onnx.data): a URL, bytes or a Blob, like the model.
    if (options && options.externalData) {
      const d = options.externalData;
      if (typeof d === 'string' || d instanceof URL) {
        const base = typeof document !== 'undefined' ? document.baseURI : self.location.href;
        opts.externalData = new URL(String(d), base).href;
      } else {
        const bytes = d instanceof ArrayBuffer || ArrayBuffer.isView(d) ? new Uint8Array(d instanceof ArrayBuffer ? d : d.buffer, d.byteOffset || 0, d.byteLength).slice() : new Uint8Array(await d.arrayBuffer());
        opts.externalData = bytes;
        transfer.push(bytes.buffer);
        if (typeof Blob !== 'undefined') keep.options.externalData = new Blob([bytes]);
      }
    }
    return { args: { source, options: opts, wasmUrl: this.wasmUrl }, transfer, keep };
  }

  /**
   * Explains `classIdx` (default: the top-1 class) for `imageData`.
   * @param {ImageData|ImageBitmap|HTMLImageElement|HTMLCanvasElement|OffscreenCanvas|Blob|string} image  any image (`toImageData`)
   * @param {number|string|null} [classIdx]  an index, or a weighted mix "281:1,285:0.5" (explains
   *   1*y_281 + 0.5*y_285; at most 64 terms; parsed and checked in wasm)
   * @param {{method?, layer?, colormap?, alpha?, normalize?: 'minmax'|'raw', preprocess?: 'crop'|'resize'}} [options]
   * @param {(done: number, total: number) => void} [onProgress]  for long methods (Score-CAM)
   */
  explain(image, classIdx = null, options = {}, onProgress = null) {
    return this._signalled(options, 'explain()', (opts, signal) =>
      this._withImage(image, (imageData) => this._explain(imageData, classIdx, opts, onProgress, signal)),
    );
  }

  /**
   * Runs `start(optionsWithoutSignal, signal)` unless the signal is already aborted; bad options or
   * a bad signal reject (never throw synchronously, like every other failure of these calls).
   */
  _signalled(options, where, start) {
    try {
      const { options: opts, signal } = splitSignal(options, where);
      if (signal && signal.aborted) return Promise.reject(abortError(signal));
      return start(opts, signal);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  _explain(imageData, classIdx, options, onProgress, signal) {
    const opts = {};
    for (const [k, v] of Object.entries(options || {})) if (v !== undefined && v !== null && v !== '') opts[k] = v;
    const cls = classArg(classIdx);
    checkImage(imageData);
    const k = this._shardsFor('explain', opts);
    if (k > 1) return this._runSharded('explain', imageData, { call: 'explain', classIdx: cls, options: opts }, k, onProgress, signal);
    return this._sendWithImage('explain', imageData, { classIdx: cls, options: opts }, onProgress, signal);
  }

  /**
   * Faithfulness of `classIdx`'s map (default: top-1) for `imageData`, on the CPU: deletion and
   * insertion curves of the class's softmax probability with their AUCs, the confidence change when
   * only the map's region is kept, and its 15% box (`EvaluateResult` in pkg/gradcam_wasm.d.ts).
   * @param {{method?, layer?, preprocess?, steps?: number, baseline?: 'blur'|'mean', cell?: number, road?: boolean}} [options]
   */
  evaluate(image, classIdx = null, options = {}) {
    return this._signalled(options, 'evaluate()', (opts, signal) =>
      this._withImage(image, (imageData) => this._evaluate(imageData, classIdx, opts, signal)),
    );
  }

  _evaluate(imageData, classIdx, options, signal) {
    const opts = {};
    for (const [k, v] of Object.entries(options || {})) if (v !== undefined && v !== null && v !== '') opts[k] = v;
    const cls = classArg(classIdx);
    checkImage(imageData);
    const k = this._shardsFor('evaluate', opts);
    if (k > 1) return this._runSharded('evaluate', imageData, { call: 'evaluate', classIdx: cls, options: opts }, k, null, signal);
    return this._sendWithImage('evaluate', imageData, { classIdx: cls, options: opts }, null, signal);
  }

  /** Top-k classes: [{class, label, logit, probability}]. `options.signal` aborts the call. */
  predict(image, k = 5, options = {}) {
    return this._signalled(options, 'predict()', (_, signal) => this._withImage(image, (imageData) => this._predict(imageData, k, signal)));
  }

  _predict(imageData, k, signal) {
    const { args, transfer } = this._imageArgs(imageData);
    return this._call('predict', { ...args, k }, transfer, null, signal);
  }

  /** The photo with the colormapped heatmap of `result` blended in, as ImageData. */
  overlay(image, result, options = {}) {
    return this._signalled(options, 'overlay()', (opts, signal) =>
      this._withImage(image, (imageData) => this._overlay(imageData, result, opts, signal)),
    );
  }

  _overlay(imageData, result, options, signal) {
    const { args, transfer } = this._imageArgs(imageData);
    const slim = { ...result };
    delete slim.rgb; // not needed for an overlay; spares a copy
    return this._call('overlay', { ...args, resultId: result && result.resultId, result: slim, options }, transfer, null, signal).then(
      (v) => new ImageData(v.pixels, v.width, v.height),
    );
  }

  layers({ signal } = {}) {
    return this._signalled({ signal }, 'layers()', (_, s) => this._call('layers', {}, [], null, s));
  }

  /**
   * Every method `explain` takes, as the wasm module declares them: `[{name, aliases, label, help,
   * grid, needs}]` (no model needed). Menus and help texts read this; no list is kept in JS.
   */
  methods() {
    if (!this._methods) {
      this._methods = this._call('methods', { wasmUrl: this.wasmUrl }).catch((e) => {
        this._methods = null; // ask again next time
        throw e;
      });
    }
    return this._methods;
  }

  defaultLayer({ signal } = {}) {
    return this._signalled({ signal }, 'defaultLayer()', (_, s) => this._call('defaultLayer', {}, [], null, s));
  }

  /** Frees the model in the worker (the worker stays usable for another load()). */
  free() {
    this.model = null;
    this._dropShards();
    return this._call('free');
  }

  /**
   * TEST ONLY: makes the wasm module in the worker trap through its test-only export (src/trap.rs),
   * so that tests can prove the recovery; the call rejects with the trap's error. `inTask`: the panic
   * happens inside a wasm task, as one inside explainAsync would.
   */
  __testTrap({ inTask = false, inPool = false } = {}) {
    return this._call('__testTrap', { inTask: !!inTask, inPool: !!inPool, wasmUrl: this.wasmUrl });
  }

  /** Stops the worker at once (cancels a running Score-CAM); pending calls reject. */
  terminate() {
    this._dropShards();
    this.worker.terminate();
    if (this._poolChannel) this._poolChannel.close();
    this._terminated = true;
    this._failAll(new Error('cancelled'));
  }
}

export default GradcamClient;
