// <gradcam-explainer>: a photo with its Grad-CAM (or other) explanation, computed on the
// visitor's device. The wasm package and the model load only when the element scrolls into
// view; every element on a page that names the same model shares one worker and one download.
//
//   <script type="module" src="gradcam/www/gradcam-explainer.js"></script>
//   <gradcam-explainer src="cat.jpg" model="gradcam/model.safetensors" class="281"
//                      method="gradcam" colormap="jet" alpha="0.5"></gradcam-explainer>
//
// Attributes: src (photo), model (weights URL; default the bundled EfficientNet-Lite0,
// ../assets/models/efficientnet-lite0.safetensors relative to this module), class or target-class
// (class index; default the top-1 class; target-class may also be a weighted mix "281:1,285:0.5"), method,
// layer, colormap, alpha (0..1), preprocess ('crop' | 'resize'), normalize ('minmax' | 'raw'),
// arch, backend ('auto' | 'cpu' | 'webgpu'; default auto: WebGPU on a hardware GPU, else the CPU;
// changing it moves the element to a client of that backend), score-cam-channels (Score-CAM and
// its kin use only the N strongest channels), labels (a labels file's URL), caption ('none' hides
// it), loading ('lazy': when visible, the default; 'eager': at once; the boolean `eager` attribute
// is an alias of loading="eager"), integrity (the model's "sha256-<base64>", as Subresource
// Integrity writes it: checked before the model is used or cached), workers ('auto' or 1-16: the
// long methods, Score-CAM first, split their batches across that many workers; 'auto' is one per
// core, up to 4, on a page that is not cross-origin isolated; default 1).
// Any attribute change re-runs the explanation; the superseded run is aborted (its AbortSignal), so
// a queued call is dropped before it runs and an old result is never shown after a newer one.
// Events: 'gradcam-result' (detail: the result), 'gradcam-error' (detail: the Error).
// Property: element.result (the last result), element.explain() (re-run).

import { GradcamClient } from './gradcam-client.js';

// The bundled default model, found from this module's own URL (so it works from any page and
// folder, and bundlers copy it as an asset): assets/ sits beside www/ in the repository and in the
// npm package alike.
const DEFAULT_MODEL = new URL('../assets/models/efficientnet-lite0.safetensors', import.meta.url).href;
const MAX_SIDE = 1600;
const clients = new Map(); // model URL + arch -> Promise<GradcamClient>

function sharedClient(modelUrl, settings, onProgress) {
  const key = JSON.stringify([modelUrl, settings]);
  let entry = clients.get(key);
  if (entry && entry.client.model === null && entry.ready) {
    // Its worker died and the model could not be reloaded there: start over with a new client.
    clients.delete(key);
    entry.client.terminate();
    entry = null;
  }
  if (!entry) {
    const client = new GradcamClient();
    entry = { client, listeners: new Set(), promise: null, ready: false };
    entry.promise = loadOptions(settings)
      .then((options) =>
        client.load(modelUrl, options, (done, total) => {
          for (const f of entry.listeners) f(done, total);
        }),
      )
      .then(() => {
        entry.ready = true;
        return client;
      });
    entry.promise.catch(() => {
      clients.delete(key); // a later element may retry
      client.terminate();
    });
    clients.set(key, entry);
  }
  if (onProgress) entry.listeners.add(onProgress);
  return entry.promise.finally(() => onProgress && entry.listeners.delete(onProgress));
}

/** The model settings an element's attributes give (URLs resolved against the page), for client.load(). */
function modelSettings(el) {
  const url = (name) => (el.getAttribute(name) ? new URL(el.getAttribute(name), document.baseURI).href : null);
  const settings = {};
  for (const [attr, key] of [['arch', 'arch'], ['backend', 'backend']]) if (el.getAttribute(attr)) settings[key] = el.getAttribute(attr);
  if (el.getAttribute('input-size')) settings.inputSize = Number(el.getAttribute('input-size'));
  if (url('model-data')) settings.externalData = url('model-data');
  if (el.getAttribute('integrity')) settings.integrity = el.getAttribute('integrity');
  if (url('labels')) settings.labelsUrl = url('labels');
  // client.load() checks it ('auto' or 1-16) and says what is wrong.
  const workers = (el.getAttribute('workers') || '').trim();
  if (workers) settings.workers = workers === 'auto' || !/^\d+$/.test(workers) ? workers : Number(workers);
  return settings;
}

/** client.load() options from modelSettings(): the labels file is read here, once per model. */
async function loadOptions(settings) {
  const { labelsUrl, ...options } = settings;
  if (labelsUrl) {
    const r = await fetch(labelsUrl);
    if (!r.ok) throw new Error(`labels: ${labelsUrl} answered ${r.status}`);
    options.labels = await r.text();
  }
  return options;
}

const STYLE = `
:host { display: block; position: relative; max-width: 100%; contain: content;
  font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: inherit; }
:host([hidden]) { display: none; }
figure { margin: 0; }
.frame { position: relative; border-radius: var(--gradcam-radius, 8px); overflow: hidden;
  background: var(--gradcam-placeholder, rgba(127,127,127,0.15)); min-height: 48px; }
canvas { display: block; width: 100%; height: auto; }
.frame.empty canvas { aspect-ratio: 4 / 3; }
.state { position: absolute; left: 50%; top: 50%; transform: translate(-50%, -50%);
  display: flex; flex-direction: column; align-items: center; gap: 8px; text-align: center;
  padding: 8px 12px; border-radius: 8px; background: rgba(20,20,25,0.72); color: #fff; max-width: 85%; }
.state[hidden] { display: none; }
.bar { width: 140px; height: 4px; border-radius: 2px; background: rgba(255,255,255,0.25); overflow: hidden; }
.bar > span { display: block; height: 100%; width: 0; background: #fff; transition: width .15s; }
.state.error { background: rgba(150,20,20,0.85); }
figcaption { margin-top: 6px; opacity: 0.8; font-size: 0.95em; }
figcaption[hidden] { display: none; }
`;

class GradcamExplainerElement extends HTMLElement {
  static get observedAttributes() {
    return ['src', 'model', 'model-data', 'labels', 'input-size', 'class', 'target-class', 'method', 'layer', 'colormap', 'alpha', 'preprocess', 'normalize', 'arch', 'backend', 'score-cam-channels', 'caption', 'integrity', 'loading', 'eager', 'workers'];
  }

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(STYLE);
    root.adoptedStyleSheets = [sheet];
    root.innerHTML = `<figure part="figure"><div class="frame empty" part="frame"><canvas part="canvas" role="img"></canvas>
      <div class="state" part="status"><span class="msg">Explanation loads when visible</span><div class="bar"><span></span></div></div></div>
      <figcaption part="caption" hidden></figcaption></figure>`;
    this._canvas = root.querySelector('canvas');
    this._frame = root.querySelector('.frame');
    this._state = root.querySelector('.state');
    this._msg = root.querySelector('.msg');
    this._bar = root.querySelector('.bar');
    this._barFill = root.querySelector('.bar > span');
    this._caption = root.querySelector('figcaption');
    this._started = false;
    this._image = null; // {src, imageData, canvas}
    this._colorLayer = null;
    this.result = null;
    this._gen = 0;
    this._timer = 0;
    this._controller = null; // aborts the run in flight when a newer one starts
  }

  /** loading="eager" (or the older boolean `eager`) loads at once; anything else waits until visible. */
  get _eager() {
    const loading = (this.getAttribute('loading') || '').trim().toLowerCase();
    if (loading === 'eager') return true;
    if (loading === 'lazy') return false;
    return this.hasAttribute('eager');
  }

  connectedCallback() {
    if (this._started) return;
    if (this._eager || typeof IntersectionObserver === 'undefined') {
      this._start();
      return;
    }
    if (this._observer) return;
    this._observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) {
          this._observer.disconnect();
          this._observer = null;
          this._start();
        }
      },
      { rootMargin: '300px' },
    );
    this._observer.observe(this);
  }

  disconnectedCallback() {
    if (this._observer) this._observer.disconnect();
    this._observer = null;
    if (this._controller) {
      // Removed mid-run: the work is dropped; a re-insertion starts it again.
      this._abortRun();
      this._gen++;
      this._started = false;
    }
  }

  attributeChangedCallback(name, oldValue, value) {
    if (oldValue === value) return;
    if (name === 'loading' || name === 'eager') {
      if (!this._started && this.isConnected && this._eager) {
        if (this._observer) this._observer.disconnect();
        this._observer = null;
        this._start();
      }
      return; // once started, how it loads no longer matters
    }
    if (!this._started) return;
    if (name === 'alpha') return this._composite();
    if (name === 'caption') return this._renderCaption();
    if (name === 'colormap') return this._recolor();
    if (name === 'src') this._image = null;
    this._abortRun(); // at once: its queued call is dropped before the worker reaches it
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.explain(), 0); // one run for several attribute changes
  }

  _abortRun() {
    if (this._controller) this._controller.abort();
    this._controller = null;
  }

  /** The explain options the attributes give; a bad score-cam-channels is a clear error. */
  _explainOptions() {
    const opts = {};
    for (const k of ['method', 'layer', 'preprocess', 'normalize']) {
      const v = this.getAttribute(k);
      if (v) opts[k] = v;
    }
    const channels = this.getAttribute('score-cam-channels');
    if (channels !== null && channels.trim() !== '') {
      const n = Number(channels);
      if (!Number.isInteger(n) || n < 1) throw new Error(`score-cam-channels must be a whole number of at least 1, got "${channels}"`);
      opts.scoreCamChannels = n;
    }
    return opts;
  }

  _start() {
    if (this._started) return;
    this._started = true;
    this.explain();
  }

  get _alpha() {
    const a = Number(this.getAttribute('alpha') ?? 0.5);
    return Number.isFinite(a) ? Math.min(1, Math.max(0, a)) : 0.5;
  }

  get _classIdx() {
    const v = (this.getAttribute('target-class') ?? this.getAttribute('class') ?? '').trim();
    if (/^\d+$/.test(v)) return Number(v);
    // A weighted mix ("281:1,285:0.5") only from target-class: "class" may also hold CSS class names.
    const t = (this.getAttribute('target-class') ?? '').trim();
    return /^\d+\s*:/.test(t) ? t : null;
  }

  _show(message, progress = null, isError = false) {
    this._state.hidden = false;
    this._state.classList.toggle('error', isError);
    this._msg.textContent = message;
    this._bar.hidden = progress === null;
    if (progress !== null) this._barFill.style.width = `${Math.round(progress * 100)}%`;
  }

  async _loadImage(src) {
    const res = await fetch(new URL(src, document.baseURI));
    if (!res.ok) throw new Error(`could not load the image ${src}: HTTP ${res.status}`);
    const bitmap = await createImageBitmap(await res.blob(), { imageOrientation: 'from-image' });
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement('canvas');
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return { src, canvas, imageData: ctx.getImageData(0, 0, canvas.width, canvas.height) };
  }

  /** (Re-)computes the explanation from the current attributes. Resolves to the result. */
  async explain() {
    const gen = ++this._gen;
    this._abortRun();
    const controller = new AbortController();
    this._controller = controller;
    const { signal } = controller;
    // Superseded by a newer run, or aborted by an attribute change whose run has not started yet.
    const stale = () => gen !== this._gen || signal.aborted;
    const src = this.getAttribute('src');
    if (!src) {
      this._show('No src attribute', null, true);
      return null;
    }
    try {
      if (!this._image || this._image.src !== src) {
        this._show('Loading the image…');
        const image = await this._loadImage(src);
        if (stale()) return null;
        this._image = image;
        this._colorLayer = null;
        this._canvas.width = image.canvas.width;
        this._canvas.height = image.canvas.height;
        this._frame.classList.remove('empty');
        this._composite();
      }
      const modelUrl = new URL(this.getAttribute('model') || DEFAULT_MODEL, document.baseURI).href;
      this._show('Loading the model…', 0);
      const client = await sharedClient(modelUrl, modelSettings(this), (done, total) => {
        if (!stale()) this._show('Downloading the model…', total > 0 ? done / total : 0);
      });
      if (stale()) return null;
      this._show('Explaining…');
      const opts = { ...this._explainOptions(), signal };
      const result = await client.explain(this._image.imageData, this._classIdx, opts, (done, total) => {
        if (!stale()) this._show(`Explaining… ${done}/${total}`, total > 0 ? done / total : 0);
      });
      if (stale()) return null;
      const layer = await client.overlay(this._image.imageData, result, { colormap: this.getAttribute('colormap') || 'jet', alpha: 1, signal });
      if (stale()) return null;
      this._client = client;
      this.result = result;
      this._colorLayer = toCanvas(layer);
      this._composite();
      this._state.hidden = true;
      this._renderCaption();
      this.dispatchEvent(new CustomEvent('gradcam-result', { detail: result, bubbles: true, composed: true }));
      return result;
    } catch (e) {
      if (stale()) return null;
      const err = e instanceof Error ? e : new Error(String(e));
      this._show(err.message, null, true);
      this.dispatchEvent(new CustomEvent('gradcam-error', { detail: err, bubbles: true, composed: true }));
      return null;
    } finally {
      if (this._controller === controller) this._controller = null; // done: nothing left to abort
    }
  }

  async _recolor() {
    if (!this.result || !this._client || !this._image) return;
    const result = this.result;
    try {
      const layer = await this._client.overlay(this._image.imageData, result, { colormap: this.getAttribute('colormap') || 'jet', alpha: 1 });
      if (this.result !== result) return;
      this._colorLayer = toCanvas(layer);
      this._composite();
    } catch (e) {
      this._show(e.message, null, true);
    }
  }

  /** photo + alpha * colour layer: the same constant-alpha blend as the wasm overlay. */
  _composite() {
    if (!this._image) return;
    const ctx = this._canvas.getContext('2d');
    ctx.globalAlpha = 1;
    ctx.drawImage(this._image.canvas, 0, 0);
    if (this._colorLayer) {
      ctx.globalAlpha = this._alpha;
      ctx.drawImage(this._colorLayer, 0, 0);
      ctx.globalAlpha = 1;
    }
  }

  _renderCaption() {
    const r = this.result;
    const hide = !r || this.getAttribute('caption') === 'none';
    this._caption.hidden = hide;
    if (hide) return;
    const text = `${r.methodLabel || r.method}: ${r.label} (class ${r.classIdx}, p ${(100 * r.probability).toFixed(1)}%)`;
    this._caption.textContent = this.getAttribute('caption') || text;
    this._canvas.setAttribute('aria-label', `${text}, heatmap over the photo`);
  }
}

function toCanvas(imageData) {
  const c = document.createElement('canvas');
  c.width = imageData.width;
  c.height = imageData.height;
  c.getContext('2d').putImageData(imageData, 0, 0);
  return c;
}

if (!customElements.get('gradcam-explainer')) customElements.define('gradcam-explainer', GradcamExplainerElement);

export { GradcamExplainerElement };
