// The demo page: one GradcamClient (a worker with the wasm Explainer), a photo on a canvas,
// and controls. Every explanation runs off the main thread; nothing is sent anywhere.

import { GradcamClient, COLORMAPS } from './gradcam-client.js';
import { drawRgbChw, cropRect } from './render.js';
import { initCompare } from './compare.js';

const DEFAULT_MODEL = 'assets/models/efficientnet-lite0.safetensors';
const SAMPLES_DIR = 'assets/samples/';
const MAX_SIDE = 1600; // larger photos are scaled down (the heatmap lives on the photo's own grid)


const $ = (sel) => document.querySelector(sel);
const el = {
  dropZone: $('#drop-zone'),
  canvas: $('#overlay-canvas'),
  fileInput: $('#file-input'),
  method: $('#method'),
  methodHelp: $('#method-help'),
  layer: $('#layer'),
  colormap: $('#colormap'),
  colorbar: $('#colorbar'),
  preprocess: $('#preprocess'),
  smoothing: $('#smoothing'),
  methodOptions: $('#method-options'),
  normalize: $('#normalize'),
  opacity: $('#opacity'),
  opacityValue: $('#opacity-value'),
  top5: $('#top5'),
  classForm: $('#class-form'),
  classInput: $('#class-input'),
  status: $('#status'),
  warnings: $('#warnings'),
  backend: $('#backend'),
  timing: $('#timing'),
  title: $('#result-title'),
  sub: $('#result-sub'),
  download: $('#download'),
  evaluate: $('#evaluate'),
  auc: $('#auc'),
  curves: $('#curves'),
  evalRoad: $('#eval-road'),
  showBox: $('#show-box'),
  confidence: $('#confidence'),
  road: $('#road'),
  strip: $('#strip'),
  task: $('#task'),
  progress: $('#progress'),
  progressLabel: $('#progress-label'),
  cancel: $('#cancel'),
  samples: $('#samples'),
  modelInput: $('#model-input'),
  modelInfo: $('#model-info'),
  modelUrlForm: $('#model-url-form'),
  modelUrl: $('#model-url'),
  modelIntegrity: $('#model-integrity'),
};

const state = {
  client: null,
  model: null, // load() info
  modelSource: DEFAULT_MODEL, // URL or {name, bytes, externalData?}
  modelIntegrity: null, // "sha256-<base64>" of a URL model, checked before use (Subresource Integrity syntax)
  labels: null, // text of a labels file the user gave
  labelsName: null,
  loading: null, // Promise of the model
  image: null, // {imageData, name, canvas (the plain photo)}
  classIdx: null, // null: top-1
  result: null,
  box: null, // {result, box}: the 15% box of that result's map (from evaluate), drawn on request
  colorLayer: null, // canvas: the colormapped heatmap at alpha 1 (photo where undefined)
  top5: [],
  methods: null, // the method catalog (client.methods())
  wanted: 0, // generation of the newest request
  running: false,
};

// ---------- small helpers ----------

function fmtMs(ms) {
  if (!(ms >= 0)) return '–';
  return ms >= 100 ? `${Math.round(ms)} ms` : `${ms.toFixed(1)} ms`;
}

/** Which wasm build the worker runs on the CPU (www/thread-pool.js), for the model line; why not a faster one goes in its tooltip. */
function buildText(build) {
  if (!build) return '';
  const which = { 'threads-relaxed-simd': `the threaded relaxed-SIMD build, ${build.threads} threads`, threads: `the threaded build, ${build.threads} threads`, 'relaxed-simd': 'the relaxed-SIMD build, one thread', simd: 'the SIMD build, one thread' }[build.variant];
  return which ? ` CPU path: ${which}.` : '';
}

function fmtMB(bytes) {
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

function pct(p) {
  if (!(p >= 0)) return '–';
  if (p >= 0.995) return `${(p * 100).toFixed(0)}%`;
  return p >= 0.1 ? `${(p * 100).toFixed(1)}%` : `${(p * 100).toFixed(2)}%`;
}

function setStatus(text, isError = false) {
  el.status.textContent = text || '';
  el.status.classList.toggle('is-error', Boolean(isError));
}

function showError(e, context) {
  const msg = e && e.message ? e.message : String(e);
  console.error(context || 'gradcam', e);
  setStatus(context ? `${context}: ${msg}` : msg, true);
}

function setTask(label, done, total, cancellable = false) {
  el.task.hidden = false;
  el.progressLabel.textContent = label;
  if (total > 0) {
    el.progress.max = total;
    el.progress.value = Math.min(done, total);
  } else {
    el.progress.removeAttribute('value'); // indeterminate
  }
  el.cancel.hidden = !cancellable;
}

function endTask() {
  el.task.hidden = true;
  el.cancel.hidden = true;
}

function setBusy(on) {
  el.dropZone.classList.toggle('is-busy', on);
  el.dropZone.setAttribute('aria-busy', on ? 'true' : 'false');
}

function options() {
  return {
    method: el.method.value || 'gradcam',
    layer: el.layer.disabled ? undefined : el.layer.value || undefined,
    normalize: el.normalize.value,
    preprocess: el.preprocess.value,
    ...smoothingOptions(),
    ...methodOptions(),
  };
}

/**
 * The chosen method's own settings (Integrated Gradients' steps, Occlusion's patch, ...): the
 * catalog's `options` names them, each a `[data-option]` control; an empty or invalid number is
 * left out, so the library's default applies.
 */
function methodOptions() {
  const o = {};
  for (const key of methodInfo(el.method.value)?.options || []) {
    const input = el.methodOptions.querySelector(`[data-option="${key}"] input, [data-option="${key}"] select`);
    if (!input) continue;
    if (input.type !== 'number') o[key] = input.value;
    else if (input.value !== '' && Number.isFinite(Number(input.value))) o[key] = Number(input.value);
  }
  return o;
}

/** Shows only the settings the chosen method takes (none: the whole group is hidden). */
function updateMethodOptions(info) {
  const keys = info?.options || [];
  for (const f of el.methodOptions.querySelectorAll('[data-option]')) f.hidden = !keys.includes(f.dataset.option);
  el.methodOptions.hidden = !keys.some((k) => el.methodOptions.querySelector(`[data-option="${k}"]`));
}

/** pytorch-grad-cam's smoothings, asked for only where the method takes them (the catalog says). */
function smoothingOptions() {
  const v = el.smoothing.value;
  const takes = methodInfo(el.method.value)?.smoothing || { eigen: false, aug: false };
  const o = {};
  if ((v === 'eigen' || v === 'both') && takes.eigen) o.eigenSmooth = true;
  if ((v === 'aug' || v === 'both') && takes.aug) o.augSmooth = true;
  return o;
}

function alpha() {
  return Number(el.opacity.value);
}

/** `values`: names, or `{name, label}` objects (the method catalog). */
function fillSelect(select, values, selected) {
  select.replaceChildren(
    ...values.map((v) => {
      const o = document.createElement('option');
      o.value = typeof v === 'string' ? v : v.name;
      o.textContent = typeof v === 'string' ? v : v.label;
      if (o.value === selected) o.selected = true;
      return o;
    }),
  );
}

/** The method catalog the wasm module declares (`client.methods()`), once loaded. */
function methodInfo(name) {
  return (state.methods || []).find((m) => m.name === name);
}

function methodLabel(name) {
  return methodInfo(name)?.label || name;
}

/** Fills the method menu from the wasm module's catalog, keeping the current choice. */
async function loadMethods() {
  const list = await state.client.methods();
  state.methods = list;
  const current = el.method.value || 'gradcam';
  fillSelect(el.method, list, list.some((m) => m.name === current) ? current : 'gradcam');
  updateMethodHelp();
}

// ---------- model ----------

function startClient() {
  if (state.client) state.client.terminate();
  state.client = new GradcamClient();
  state.client.addEventListener('progress', (e) => {
    const { phase, done, total } = e.detail;
    if (phase === 'method' && total > 0) {
      setTask(`${methodLabel(el.method.value)}: ${done} / ${total}`, done, total, true);
    }
  });
}

/** `?backend=cpu|webgpu|auto` in the page URL picks the backend (default auto: WebGPU on a hardware GPU). */
function requestedBackend() {
  const b = new URLSearchParams(location.search).get('backend');
  return ['auto', 'cpu', 'webgpu'].includes(b) ? b : 'auto';
}

async function loadModel(source) {
  state.modelSource = source;
  state.model = null;
  state.result = null;
  const isUrl = typeof source === 'string';
  setTask(isUrl ? 'Preparing the model…' : `Reading ${source.name}…`, 0, 0);
  el.layer.disabled = true;
  const t0 = performance.now();
  const job = (async () => {
    // workers 'auto': on a page that is not cross-origin isolated, the long methods and the curves
    // split their batches across one worker per core (bitwise the same maps; isolated pages run the
    // threaded build instead).
    const options = { backend: requestedBackend(), workers: 'auto' };
    if (state.labels) options.labels = state.labels;
    if (!isUrl && source.externalData) options.externalData = source.externalData;
    if (isUrl && state.modelIntegrity) options.integrity = state.modelIntegrity;
    const info = await state.client.load(isUrl ? source : source.bytes, options, (done, total) => {
      const label = total > 0 ? `Downloading the model: ${fmtMB(done)} of ${fmtMB(total)}` : `Downloading the model: ${fmtMB(done)}`;
      setTask(label, done, total);
    });
    return info;
  })();
  state.loading = job;
  try {
    const info = await job;
    if (state.loading !== job) return;
    state.model = info;
    const wall = performance.now() - t0;
    const from = info.source === 'cache' ? 'from the browser cache' : info.source === 'network' ? 'downloaded' : 'from your file';
    const name = isUrl ? source.split('/').pop() : source.name;
    const labels = state.labelsName ? `, class names from ${state.labelsName}` : '';
    el.modelInfo.textContent =
      `${name}: ${info.arch}, ${info.numClasses} classes${labels}, input ${info.inputSize}×${info.inputSize}; ` +
      `${fmtMB(info.bytes)}, ${from}, ready in ${fmtMs(wall)}. ${info.layers.length} layers; default target ${info.defaultLayer}.` +
      buildText(info.build);
    el.modelInfo.title = (info.build && info.build.note) || '';
    if (Array.isArray(info.methods) && info.methods.length) {
      state.methods = info.methods;
      fillSelect(el.method, info.methods, info.methods.some((m) => m.name === el.method.value) ? el.method.value : 'gradcam');
      updateMethodHelp();
    }
    populateLayers(info.layers, info.defaultLayer);
    endTask();
    setStatus('');
    if (state.image) explainNow();
  } catch (e) {
    if (state.loading !== job) return;
    endTask();
    el.title.textContent = 'The model could not be loaded';
    showError(e);
  }
}

/**
 * The model a URL names: `?model=URL&integrity=sha256-...` in the page's address, or the form in the
 * Model card. Same origin only (the page's CSP allows no other); the integrity value, when given, is
 * checked before the model is used or cached, and a mismatch names both digests.
 */
function requestedModel() {
  const q = new URLSearchParams(location.search);
  return { url: q.get('model') || DEFAULT_MODEL, integrity: q.get('integrity') || null };
}

function loadModelFromUrl(url, integrity) {
  state.modelIntegrity = integrity || null;
  state.top5 = [];
  renderTop5();
  return loadModel(url);
}

// ---------- your own model: files picked or dropped together ----------

const MODEL_FILE = /\.(safetensors|pth|pt|bin|onnx)$/i;
const ONNX_DATA_FILE = /\.data$/i;
const LABELS_FILE = /\.(json|txt)$/i;

function isModelSideFile(f) {
  return MODEL_FILE.test(f.name) || ONNX_DATA_FILE.test(f.name) || LABELS_FILE.test(f.name);
}

/**
 * A model file (.safetensors, .pth, .onnx), an ONNX file's external weights (.onnx.data) and a
 * labels file (.json array or .txt, one name per line), in any combination: a .onnx.data or a
 * labels file alone applies to the model already chosen. Nothing leaves the page.
 */
async function useModelFiles(files) {
  const model = files.find((f) => MODEL_FILE.test(f.name));
  const data = files.find((f) => ONNX_DATA_FILE.test(f.name));
  const labels = files.find((f) => LABELS_FILE.test(f.name));
  if (!model && !data && !labels) return;
  if (labels) {
    state.labels = await labels.text();
    state.labelsName = labels.name;
  }
  // The client sends the worker copies, so the bytes kept here stay usable for a reload.
  let source = state.modelSource;
  if (model) source = { name: model.name, bytes: new Uint8Array(await model.arrayBuffer()) };
  if (data) {
    if (typeof source === 'string' || !/\.onnx$/i.test(source.name)) {
      showError(new Error(`${data.name} holds an ONNX file's weights: drop it together with its .onnx file`));
      return;
    }
    source = { ...source, externalData: new Uint8Array(await data.arrayBuffer()) };
  }
  state.top5 = [];
  renderTop5();
  await loadModel(source);
}

function populateLayers(layers, defaultLayer) {
  const opts = layers.map((l) => {
    const o = document.createElement('option');
    o.value = l.name;
    const shape = Array.isArray(l.shape) ? l.shape.join('×') : '';
    o.textContent = `${l.name === defaultLayer ? '* ' : ''}${l.name}${shape ? ` · ${shape}` : ''}`;
    if (l.name === defaultLayer) o.selected = true;
    return o;
  });
  el.layer.replaceChildren(...opts);
  el.layer.value = defaultLayer;
  el.layer.disabled = false;
}

// ---------- image input ----------

async function imageFromBlob(blob, name) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image' });
  } catch {
    throw new Error(`${name || 'This file'} could not be read as an image (PNG, JPEG, WebP, GIF, AVIF or BMP).`);
  }
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const w = Math.max(1, Math.round(bitmap.width * scale));
  const h = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = document.createElement('canvas');
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0, w, h);
  bitmap.close();
  return { imageData: ctx.getImageData(0, 0, w, h), canvas, name: name || 'image', scaled: scale < 1 };
}

async function setImageFromBlob(blob, name) {
  try {
    const image = await imageFromBlob(blob, name);
    setImage(image);
  } catch (e) {
    showError(e);
  }
}

function setImage(image) {
  state.image = image;
  state.classIdx = null;
  state.result = null;
  state.colorLayer = null;
  state.top5 = [];
  el.canvas.width = image.imageData.width;
  el.canvas.height = image.imageData.height;
  el.dropZone.classList.remove('is-empty');
  composite();
  renderTop5();
  resetStrip();
  el.download.disabled = true;
  el.timing.textContent = '';
  el.sub.textContent = '';
  el.title.textContent = image.name;
  setStatus(image.scaled ? `Scaled down to ${image.imageData.width}×${image.imageData.height} pixels.` : '');
  for (const b of el.samples.querySelectorAll('.sample')) b.classList.toggle('is-active', b.dataset.sample === image.sample);
  if (state.model) explainNow();
  else if (!state.loading) setStatus('The model is not loaded.', true);
}

async function loadSample(file) {
  try {
    const res = await fetch(SAMPLES_DIR + file);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const image = await imageFromBlob(await res.blob(), file);
    image.sample = file;
    setImage(image);
  } catch (e) {
    showError(e, `Could not open the sample ${file}`);
  }
}

// ---------- explanation ----------

function explainNow() {
  state.wanted++;
  if (!state.running) run();
}

async function run() {
  state.running = true;
  try {
    while (state.image && state.model) {
      const gen = state.wanted;
      const image = state.image;
      const opts = options();
      const cls = state.classIdx;
      setBusy(true);
      const slow = setTimeout(() => {
        if (gen === state.wanted) setTask(`Computing ${methodLabel(opts.method)}…`, 0, 0, true);
      }, 600);
      let result;
      try {
        result = await state.client.explain(image.imageData, cls, opts);
      } catch (e) {
        clearTimeout(slow);
        endTask();
        if (gen !== state.wanted) continue; // superseded (or cancelled): run the newest request
        if (e.message !== 'cancelled') showError(e);
        break;
      }
      clearTimeout(slow);
      endTask();
      if (gen !== state.wanted || image !== state.image) continue; // superseded
      state.result = result;
      if (!state.top5.length && Array.isArray(result.top5)) state.top5 = result.top5;
      await refreshColorLayer();
      if (gen !== state.wanted) continue;
      showResult(result);
      setBusy(false);
      await renderStrip(gen, result, opts);
      if (gen === state.wanted) break;
    }
  } finally {
    state.running = false;
    setBusy(false);
  }
}

async function refreshColorLayer() {
  const { result, image } = state;
  if (!result || !image) return;
  const colormap = el.colormap.value;
  const layer = await state.client.overlay(image.imageData, result, { colormap, alpha: 1 });
  if (state.result !== result) return;
  state.colorLayer = toCanvas(layer);
  composite();
}

function toCanvas(imageData) {
  const c = document.createElement('canvas');
  c.width = imageData.width;
  c.height = imageData.height;
  c.getContext('2d').putImageData(imageData, 0, 0);
  return c;
}

/** photo, then the colour layer at the chosen opacity: (1 - a) * photo + a * colour, as the wasm overlay. */
function composite() {
  const { image, colorLayer } = state;
  if (!image) return;
  const ctx = el.canvas.getContext('2d');
  ctx.globalAlpha = 1;
  ctx.drawImage(image.canvas, 0, 0);
  if (colorLayer) {
    ctx.globalAlpha = alpha();
    ctx.drawImage(colorLayer, 0, 0);
    ctx.globalAlpha = 1;
  }
  drawBox(ctx);
  renderStripGradcam();
}

function showResult(r) {
  const name = r.methodLabel || methodLabel(r.method);
  el.title.textContent = `${name} of “${r.label}”`;
  el.sub.textContent = `class ${r.classIdx} · p ${pct(r.probability)} · logit ${Number(r.logit).toFixed(2)} · layer ${r.layer}`;
  const t = r.timings || {};
  const parts = [];
  if (t.forwardMs !== undefined) parts.push((r.forwardReused ?? t.forwardReused) ? 'forward reused' : `forward ${fmtMs(t.forwardMs)}`);
  if (t.methodMs !== undefined) parts.push(`${name} ${fmtMs(t.methodMs)}`);
  if (t.projectMs !== undefined) parts.push(`map ${fmtMs(t.projectMs)}`);
  el.timing.textContent = `${fmtMs(t.totalMs)} in total${parts.length ? `: ${parts.join(', ')}` : ''}`;
  el.timing.title = `preprocess ${fmtMs(t.preprocessMs)}, forward ${fmtMs(t.forwardMs)}, method ${fmtMs(t.methodMs)}, projection ${fmtMs(t.projectMs)}; map ${r.rawWidth}×${r.rawHeight} at ${r.layer}`;
  const backends = { cpu: 'CPU · WebAssembly', webgpu: 'GPU · WebGPU' };
  el.backend.textContent = backends[r.backend] || String(r.backend || 'unknown');
  el.backend.title = (state.model && state.model.backend && state.model.backend.note) || '';
  el.warnings.replaceChildren(
    ...(r.warnings || []).map((w) => {
      const li = document.createElement('li');
      li.textContent = w;
      return li;
    }),
  );
  el.warnings.hidden = !(r.warnings && r.warnings.length);
  el.download.disabled = false;
  el.evaluate.disabled = false;
  el.curves.hidden = true;
  el.confidence.hidden = true;
  el.road.hidden = true;
  if (el.showBox.checked) requestBox(r);
  el.auc.textContent = 'Deletion and insertion curves of this map (100 steps each).';
  setStatus('');
  renderTop5();
}

function renderTop5() {
  const list = state.top5;
  if (!list.length) {
    const li = document.createElement('li');
    li.className = 'placeholder';
    li.textContent = state.image ? 'Classifying…' : 'Open a photo to see what the network sees.';
    el.top5.replaceChildren(li);
    return;
  }
  const selected = state.result ? state.result.classIdx : null;
  el.top5.replaceChildren(
    ...list.map((c) => {
      const li = document.createElement('li');
      li.dataset.class = String(c.classIdx);
      li.classList.toggle('is-selected', c.classIdx === selected);
      const b = document.createElement('button');
      b.type = 'button';
      b.setAttribute('aria-pressed', c.classIdx === selected ? 'true' : 'false');
      b.title = `Explain class ${c.classIdx} (${c.label}); logit ${Number(c.logit).toFixed(3)}`;
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = c.label;
      const idx = document.createElement('span');
      idx.className = 'idx';
      idx.textContent = `#${c.classIdx}`;
      name.append(idx);
      const p = document.createElement('span');
      p.className = 'pct';
      p.textContent = pct(c.probability);
      const bar = document.createElement('span');
      bar.className = 'bar';
      const fill = document.createElement('span');
      fill.className = 'bar-fill';
      fill.style.width = `${Math.max(0.8, 100 * c.probability)}%`;
      bar.append(fill);
      b.append(name, p, bar);
      li.append(b);
      return li;
    }),
  );
}

// ---------- the Figure-1 strip ----------

const tiles = {};
for (const fig of el.strip.querySelectorAll('.tile')) tiles[fig.dataset.tile] = fig;
const stripState = { gradcam: null }; // {result, colorLayer} for the Grad-CAM tile

function resetStrip() {
  stripState.gradcam = null;
  for (const fig of Object.values(tiles)) {
    fig.classList.remove('is-ready');
    const c = fig.querySelector('canvas');
    c.width = 1;
    c.height = 1;
  }
  if (state.image) drawTile(tiles.original, (ctx, r) => ctx.drawImage(state.image.canvas, r.x, r.y, r.width, r.height, 0, 0, ctx.canvas.width, ctx.canvas.height), null);
}

/** The region of the photo the network saw, and a tile canvas of that aspect ratio. */
function tileRegion(result) {
  const { width, height } = state.image.imageData;
  return cropRect(width, height, el.preprocess.value, result);
}

function drawTile(fig, draw, result) {
  const r = tileRegion(result);
  const c = fig.querySelector('canvas');
  const w = 360;
  c.width = w;
  c.height = Math.max(1, Math.round((w * r.height) / r.width));
  const ctx = c.getContext('2d');
  ctx.imageSmoothingQuality = 'high';
  draw(ctx, r);
  fig.classList.add('is-ready');
  fig.classList.remove('is-pending');
}

function renderStripGradcam() {
  const g = stripState.gradcam;
  if (!g || !state.image) return;
  drawTile(tiles.gradcam, (ctx, r) => {
    const args = [r.x, r.y, r.width, r.height, 0, 0, ctx.canvas.width, ctx.canvas.height];
    ctx.drawImage(state.image.canvas, ...args);
    ctx.globalAlpha = alpha();
    ctx.drawImage(g.colorLayer, ...args);
    ctx.globalAlpha = 1;
  }, g.result);
}

async function renderStrip(gen, main, opts) {
  const image = state.image;
  const cls = main.classIdx;
  const same = { layer: opts.layer, normalize: 'minmax', preprocess: opts.preprocess };
  drawTile(tiles.original, (ctx, r) => ctx.drawImage(image.canvas, r.x, r.y, r.width, r.height, 0, 0, ctx.canvas.width, ctx.canvas.height), main);
  for (const name of ['guided-backprop', 'gradcam', 'guided-gradcam']) tiles[name].classList.add('is-pending');
  const stale = () => gen !== state.wanted || image !== state.image;
  try {
    // Grad-CAM: reuse the main result when it is one.
    let gc = main.method === 'gradcam' && opts.normalize === 'minmax' ? main : null;
    if (!gc) gc = await state.client.explain(image.imageData, cls, { ...same, method: 'gradcam' });
    if (stale()) return;
    const layer = main === gc && state.colorLayer ? state.colorLayer : toCanvas(await state.client.overlay(image.imageData, gc, { colormap: el.colormap.value, alpha: 1 }));
    if (stale()) return;
    stripState.gradcam = { result: gc, colorLayer: layer };
    renderStripGradcam();
    for (const name of ['guided-backprop', 'guided-gradcam']) {
      const r = name === main.method ? main : await state.client.explain(image.imageData, cls, { ...same, method: name });
      if (stale()) return;
      if (r.rgb && r.rgbWidth && r.rgbHeight) {
        drawTile(tiles[name], (ctx) => drawRgbChw(ctx, r.rgb, r.rgbWidth, r.rgbHeight), r);
      } else {
        // No gradient image came back: show the heatmap itself, in grey.
        drawTile(tiles[name], (ctx, reg) => {
          const c = heatToGrey(r);
          ctx.drawImage(c, reg.x, reg.y, reg.width, reg.height, 0, 0, ctx.canvas.width, ctx.canvas.height);
        }, r);
      }
    }
    const caption = el.strip.parentElement.querySelector('#strip-caption');
    if (caption) caption.dataset.label = main.label;
  } catch (e) {
    if (!stale()) showError(e, 'Figure strip');
    for (const fig of Object.values(tiles)) fig.classList.remove('is-pending');
  }
}

function heatToGrey(r) {
  const c = document.createElement('canvas');
  c.width = r.width;
  c.height = r.height;
  const ctx = c.getContext('2d');
  const img = ctx.createImageData(r.width, r.height);
  for (let i = 0; i < r.heatmap.length; i++) {
    const v = Math.round(255 * Math.min(1, Math.max(0, r.heatmap[i])));
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

// ---------- download ----------

function download() {
  if (!state.result || !state.image) return;
  const r = state.result;
  const base = state.image.name.replace(/\.[a-z0-9]+$/i, '').replace(/[^\w.-]+/g, '_') || 'image';
  const label = String(r.label || r.classIdx).replace(/[^\w.-]+/g, '_');
  const name = `${base}-${r.method}-${r.classIdx}-${label}.png`;
  el.canvas.toBlob((blob) => {
    if (!blob) return showError(new Error('The canvas could not be encoded as PNG.'));
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }, 'image/png');
}

// ---------- wiring ----------

function updateMethodHelp() {
  const info = methodInfo(el.method.value);
  el.methodHelp.textContent = info?.help || '';
  updateMethodOptions(info);
  // A method that reads only the activations (Eigen-CAM, KPCA-CAM) gives the same map for every class.
  el.top5.classList.toggle('is-agnostic', !!info?.classAgnostic);
  // The smoothings the method does not take are greyed out (and not sent).
  const takes = info?.smoothing || { eigen: false, aug: false };
  for (const o of el.smoothing.options) {
    o.disabled = (o.value === 'eigen' && !takes.eigen) || (o.value === 'aug' && !takes.aug) || (o.value === 'both' && !(takes.eigen && takes.aug));
  }
}

function updateColorbar() {
  for (const c of COLORMAPS) el.colorbar.classList.toggle(`cm-${c}`, el.colormap.value === c);
}

function wire() {
  fillSelect(el.colormap, COLORMAPS, 'jet');
  updateMethodHelp();
  updateColorbar();

  el.fileInput.addEventListener('change', () => {
    const f = el.fileInput.files && el.fileInput.files[0];
    if (f) setImageFromBlob(f, f.name);
    el.fileInput.value = '';
  });
  el.dropZone.addEventListener('click', (e) => {
    if (el.dropZone.classList.contains('is-empty') && !e.target.closest('label')) el.fileInput.click();
  });
  el.dropZone.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      el.fileInput.click();
    }
  });

  // Drag and drop anywhere on the page; the drop zone shows the target.
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');
  document.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    depth++;
    el.dropZone.classList.add('is-dragging');
  });
  document.addEventListener('dragleave', (e) => {
    if (!hasFiles(e)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) el.dropZone.classList.remove('is-dragging');
  });
  document.addEventListener('dragover', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
  });
  document.addEventListener('drop', (e) => {
    if (!e.dataTransfer) return;
    e.preventDefault();
    depth = 0;
    el.dropZone.classList.remove('is-dragging');
    const files = Array.from(e.dataTransfer.files || []);
    if (files.some(isModelSideFile)) {
      useModelFiles(files);
      return;
    }
    const f = files.find((x) => x.type.startsWith('image/')) || files[0];
    if (f) setImageFromBlob(f, f.name);
  });
  document.addEventListener('paste', (e) => {
    const items = Array.from((e.clipboardData && e.clipboardData.items) || []);
    const item = items.find((i) => i.kind === 'file' && i.type.startsWith('image/'));
    if (!item) return;
    e.preventDefault();
    const f = item.getAsFile();
    if (f) setImageFromBlob(f, f.name && f.name !== 'image.png' ? f.name : 'pasted.png');
  });

  el.samples.addEventListener('click', (e) => {
    const b = e.target.closest('[data-sample]');
    if (b) loadSample(b.dataset.sample);
  });

  el.top5.addEventListener('click', (e) => {
    const li = e.target.closest('li[data-class]');
    if (!li) return;
    state.classIdx = Number(li.dataset.class);
    for (const x of el.top5.querySelectorAll('li')) x.classList.toggle('is-selected', x === li);
    explainNow();
  });
  el.classForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const v = el.classInput.value.trim();
    if (v === '' || !state.image) return;
    state.classIdx = Number(v);
    explainNow();
  });

  for (const s of [el.method, el.layer, el.preprocess, el.normalize, el.smoothing]) {
    s.addEventListener('change', () => {
      if (s === el.method) updateMethodHelp();
      explainNow();
    });
  }
  // A changed setting of the method re-explains (on commit, not on every keystroke).
  el.methodOptions.addEventListener('change', () => explainNow());
  el.colormap.addEventListener('change', async () => {
    updateColorbar();
    try {
      await refreshColorLayer();
      const g = stripState.gradcam;
      if (g && state.image) {
        g.colorLayer = toCanvas(await state.client.overlay(state.image.imageData, g.result, { colormap: el.colormap.value, alpha: 1 }));
        renderStripGradcam();
      }
    } catch (e) {
      showError(e);
    }
  });
  el.opacity.addEventListener('input', () => {
    el.opacityValue.textContent = `${Math.round(alpha() * 100)}%`;
    composite();
  });
  el.download.addEventListener('click', download);
  el.cancel.addEventListener('click', async () => {
    // Stop the worker (the only way to interrupt wasm), then reload the model from the cache.
    state.wanted++;
    startClient();
    state.running = false;
    setBusy(false);
    const was = methodLabel(el.method.value);
    el.method.value = 'gradcam'; // do not start the slow method again
    updateMethodHelp();
    await loadModel(state.modelSource);
    setStatus(`${was} cancelled; showing Grad-CAM.`);
  });
  el.modelUrlForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const url = el.modelUrl.value.trim();
    if (url) loadModelFromUrl(url, el.modelIntegrity.value.trim());
  });
  el.modelInput.addEventListener('change', async () => {
    const files = Array.from(el.modelInput.files || []);
    el.modelInput.value = '';
    await useModelFiles(files);
  });
}

/**
 * The built site (npm run build:web) works offline after the first visit: webpack defines
 * __GRADCAM_SW__ and emits that service worker (www/sw.js). The unbundled page registers none.
 */
function registerServiceWorker() {
  const url = typeof __GRADCAM_SW__ === 'string' ? __GRADCAM_SW__ : null; // eslint-disable-line no-undef
  if (!url || !('serviceWorker' in navigator)) return;
  // After the page has loaded, so that caching the app shell never competes with the first explanation's files.
  const register = () =>
    navigator.serviceWorker.register(url).catch((e) => console.warn('gradcam: no offline copy of this page:', e && e.message));
  if (document.readyState === 'complete') register();
  else window.addEventListener('load', register, { once: true });
}

/** What "Compare two models" takes from the page: model A and the photo, method and class shown. */
function compareContext() {
  const src = state.modelSource;
  return {
    client: state.model ? state.client : null,
    image: state.image,
    classIdx: state.result ? state.result.classIdx : null,
    options: options(),
    colormap: el.colormap.value,
    alpha: alpha(),
    modelName: typeof src === 'string' ? src.split('/').pop() : src.name,
    numClasses: state.model?.numClasses,
    backend: requestedBackend(),
  };
}

wire();
initCompare(compareContext, showError);
renderTop5();
startClient();
loadMethods().catch(showError);
{
  const { url, integrity } = requestedModel();
  el.modelUrl.value = url;
  el.modelIntegrity.value = integrity || '';
  loadModelFromUrl(url, integrity);
}
loadSample('chelsea.png');
registerServiceWorker();

// ---------- faithfulness: deletion and insertion curves (src/eval) ----------

/** `evaluate`'s options: those of the map shown (attribution settings included), plus ROAD if ticked. */
function evaluateOptions() {
  return { ...options(), road: el.evalRoad.checked };
}

el.evaluate.addEventListener('click', async () => {
  const { image, result } = state;
  if (!image || !result) return;
  el.evaluate.disabled = true;
  const opts = evaluateOptions();
  el.auc.textContent = `Measuring: ${202 + (opts.road ? 19 : 0)} forwards…`;
  try {
    const r = await state.client.evaluate(image.imageData, result.classIdx, opts);
    if (state.result !== result) return; // another explanation since
    drawCurves(r);
    el.auc.textContent = `deletion AUC ${r.deletion.auc.toFixed(3)} (lower is better) · insertion AUC ${r.insertion.auc.toFixed(3)} (higher is better) · ${fmtMs(r.ms)}`;
    showConfidence(r.confidence);
    showRoad(r.road);
    setBox(result, r.box);
  } catch (e) {
    el.auc.textContent = '';
    showError(e, 'Faithfulness');
  } finally {
    el.evaluate.disabled = false;
  }
});

/** Average drop / increase in confidence (Chattopadhay et al.) for this one photo: the photo times the map. */
function showConfidence(c) {
  el.confidence.hidden = !c;
  if (!c) return;
  const change = c.increase ? 'an increase' : `a drop of ${(100 * c.drop).toFixed(1)}%`;
  el.confidence.textContent =
    `Keeping only the map's region (photo × map): p ${pct(c.original)} → ${pct(c.kept)}, ${change} ` +
    `(average drop ${(100 * c.drop).toFixed(1)}%, increase ${c.increase ? 'yes' : 'no'}; lower drop is better).`;
}

/** ROAD (Rong et al.): the probability with the most (MoRF) or least (LeRF) relevant pixels imputed. */
function showRoad(road) {
  el.road.hidden = !road;
  if (!road) return;
  const list = (xs) => xs.map((v) => v.toFixed(2)).join(' ');
  const pcts = road.percentages.map((p) => Math.round(p)).join(', ');
  el.road.textContent =
    `ROAD at ${pcts}% removed: MoRF ${list(road.morf)} (lower is better) · LeRF ${list(road.lerf)} (higher is better) · ` +
    `combined ${road.combined.toFixed(3)}`;
}

// ---------- the 15% box (the paper's localization box, from evaluate) ----------

function setBox(result, box) {
  state.box = { result, box };
  composite();
}

/** The box of the shown map; one cheap evaluate (a single deletion step) when none was measured yet. */
async function requestBox(result) {
  if (!state.image || (state.box && state.box.result === result)) return composite();
  try {
    const r = await state.client.evaluate(state.image.imageData, result.classIdx, { ...options(), steps: 1 });
    if (state.result === result) setBox(result, r.box);
  } catch (e) {
    showError(e, '15% box');
  }
}

function drawBox(ctx) {
  const b = state.box;
  if (!el.showBox.checked || !b || b.result !== state.result || !b.box) return;
  const { x0, y0, x1, y1 } = b.box;
  // A line about 0.4% of the photo's longer side, so it stays visible on large photos.
  const lw = Math.max(2, Math.round(Math.max(ctx.canvas.width, ctx.canvas.height) / 250));
  ctx.strokeStyle = '#00e676';
  ctx.lineWidth = lw;
  ctx.strokeRect(x0 + lw / 2, y0 + lw / 2, Math.max(1, x1 - x0 + 1 - lw), Math.max(1, y1 - y0 + 1 - lw));
}

el.showBox.addEventListener('change', () => {
  if (el.showBox.checked && state.result) requestBox(state.result);
  else composite();
});

/** The two curves of the class probability against the fraction of pixels removed / inserted (and ROAD's, if run). */
function drawCurves(r) {
  const c = el.curves;
  c.hidden = false;
  const ctx = c.getContext('2d');
  const [w, h, pad] = [c.width, c.height, 16];
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = '#888';
  ctx.lineWidth = 1;
  ctx.strokeRect(pad, 4, w - pad - 4, h - pad - 4);
  const line = (curve, color) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    curve.fractions.forEach((x, i) => {
      const px = pad + x * (w - pad - 4);
      const py = h - pad - Math.max(0, Math.min(1, curve.scores[i])) * (h - pad - 4);
      if (i === 0) ctx.moveTo(px, py);
      else ctx.lineTo(px, py);
    });
    ctx.stroke();
  };
  line(r.deletion, '#d62728');
  line(r.insertion, '#1f77b4');
  if (r.road) {
    // ROAD's scores at 10..90% removed, dashed, on the same axes (x: the fraction removed).
    const xs = r.road.percentages.map((p) => p / 100);
    ctx.setLineDash([4, 3]);
    line({ fractions: xs, scores: r.road.morf }, '#ff7f0e');
    line({ fractions: xs, scores: r.road.lerf }, '#2ca02c');
    ctx.setLineDash([]);
  }
  ctx.fillStyle = '#888';
  ctx.font = '10px sans-serif';
  ctx.fillText('p', 4, 12);
  ctx.fillText('fraction of pixels', w / 2 - 40, h - 3);
  ctx.fillStyle = '#d62728';
  ctx.fillText('deletion', w - 110, 16);
  ctx.fillStyle = '#1f77b4';
  ctx.fillText('insertion', w - 58, 16);
  if (r.road) {
    ctx.fillStyle = '#ff7f0e';
    ctx.fillText('ROAD MoRF', w - 126, 28);
    ctx.fillStyle = '#2ca02c';
    ctx.fillText('LeRF', w - 58, 28);
  }
}
