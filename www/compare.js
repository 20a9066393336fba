// "Compare two models": the demo page's model (A) and a second one (B, its own GradcamClient, so
// its worker and memory are apart from the page's) explain the same photo with the same method and
// class; each map is drawn with its deletion and insertion AUCs (the wasm `evaluate`), side by side,
// as in the Grad-CAM paper's study of a stronger and a weaker network.

import { GradcamClient } from './gradcam-client.js';

const $ = (sel) => document.querySelector(sel);
const TILE_WIDTH = 360;

/**
 * `page()` returns what the page shows now: {client, image, classIdx, options, colormap, alpha,
 * modelName, numClasses, backend}; `showError(e, context)` reports a failure.
 */
export function initCompare(page, showError) {
  const el = {
    form: $('#compare-form'),
    url: $('#compare-url'),
    file: $('#compare-file'),
    run: $('#compare-run'),
    status: $('#compare-status'),
    tiles: $('#compare'),
    a: $('#compare [data-slot="a"]'),
    b: $('#compare [data-slot="b"]'),
  };
  // B's model: its source (a URL string or {name, bytes}) and the promise of its load() info.
  const slot = { client: null, source: null, loaded: null };

  /** Loads B once per source; a new URL or file replaces the model (the worker is reused). */
  function loadB(source, backend) {
    if (slot.loaded && slot.source === source) return slot.loaded;
    if (!slot.client) slot.client = new GradcamClient();
    slot.source = source;
    const bytes = typeof source === 'string' ? source : source.bytes;
    slot.loaded = slot.client.load(bytes, { backend });
    slot.loaded.catch(() => (slot.loaded = null)); // try again on the next Compare
    return slot.loaded;
  }

  function sourceB() {
    return slot.file || el.url.value.trim();
  }

  async function compare() {
    const p = page();
    if (!p.client || !p.image || p.classIdx === null) return setStatus('Open a photo and wait for its explanation first.');
    const source = sourceB();
    if (!source) return setStatus('Give model B a URL or a file.');
    el.run.disabled = true;
    el.tiles.hidden = false; // empty until the first comparison, so it takes no room before
    for (const fig of [el.a, el.b]) fig.classList.add('is-pending');
    try {
      setStatus(`Loading model B (${nameOf(source)})…`);
      const infoB = await loadB(source, p.backend);
      const cls = p.classIdx;
      setStatus(`Explaining class ${cls} with both models and measuring each map (${202 * 2} forwards)…`);
      // B has its own layers: its default target layer, the rest of the settings as A's.
      const optsB = { ...p.options, layer: undefined };
      const [a, b] = await Promise.all([runOne(p.client, p, p.options, cls), runOne(slot.client, p, optsB, cls)]);
      if (page().image !== p.image) return setStatus('The photo changed meanwhile: compare again.');
      drawSlot(el.a, p, a, `A: ${p.modelName}`);
      drawSlot(el.b, p, b, `B: ${nameOf(source)}`);
      setStatus(classNote(p, infoB, a, b));
    } catch (e) {
      setStatus('');
      showError(e, 'Compare');
    } finally {
      el.run.disabled = false;
      for (const fig of [el.a, el.b]) fig.classList.remove('is-pending');
    }
  }

  /** One model's map (explain + its colour layer) and its curves' AUCs (evaluate). */
  async function runOne(client, p, options, cls) {
    const result = await client.explain(p.image.imageData, cls, options);
    const layer = await client.overlay(p.image.imageData, result, { colormap: p.colormap, alpha: 1 });
    const evaluation = await client.evaluate(p.image.imageData, cls, { ...options, road: false });
    return { result, layer, evaluation };
  }

  function setStatus(text) {
    el.status.textContent = text;
  }

  el.form.addEventListener('submit', (e) => {
    e.preventDefault();
    compare();
  });
  el.url.addEventListener('input', () => (slot.file = null)); // a typed URL wins over a file picked before
  el.file.addEventListener('change', async () => {
    const f = el.file.files && el.file.files[0];
    el.file.value = '';
    if (!f) return;
    slot.file = { name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) };
    el.url.value = '';
    compare();
  });
}

function nameOf(source) {
  return typeof source === 'string' ? source.split('/').pop() : source.name;
}

/** The photo with the map at the page's opacity, scaled to the tile, and the map's numbers below. */
function drawSlot(fig, p, { result, layer, evaluation }, title) {
  const { width, height } = p.image.imageData;
  const c = fig.querySelector('canvas');
  c.width = TILE_WIDTH;
  c.height = Math.max(1, Math.round((TILE_WIDTH * height) / width));
  const ctx = c.getContext('2d');
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(p.image.canvas, 0, 0, c.width, c.height);
  ctx.globalAlpha = p.alpha;
  ctx.drawImage(toCanvas(layer), 0, 0, c.width, c.height);
  ctx.globalAlpha = 1;
  const cap = fig.querySelector('figcaption');
  const small = document.createElement('small');
  small.className = 'compare-auc';
  small.textContent =
    `“${result.label}” p ${(100 * result.probability).toFixed(1)}% · ` +
    `deletion AUC ${evaluation.deletion.auc.toFixed(3)} · insertion AUC ${evaluation.insertion.auc.toFixed(3)}`;
  cap.replaceChildren(document.createTextNode(title), small);
  fig.classList.add('is-ready');
}

function toCanvas(imageData) {
  const c = document.createElement('canvas');
  c.width = imageData.width;
  c.height = imageData.height;
  c.getContext('2d').putImageData(imageData, 0, 0);
  return c;
}

/** Which model's map is the more faithful, and a warning when the class indices mean different things. */
function classNote(p, infoB, a, b) {
  const differ = infoB.numClasses !== p.numClasses || a.result.label !== b.result.label;
  const better = (x, y) => x.evaluation.insertion.auc - x.evaluation.deletion.auc > y.evaluation.insertion.auc - y.evaluation.deletion.auc;
  const verdict = better(a, b) ? 'A' : 'B';
  const note = differ ? ` Careful: class ${p.classIdx} is “${a.result.label}” for A but “${b.result.label}” for B.` : '';
  return `Class ${p.classIdx}; insertion minus deletion AUC is larger for ${verdict} (by this measure, its map is the more faithful).${note}`;
}
