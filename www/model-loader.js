// Downloads model weights with progress, and keeps them in the Cache API so that a second
// visit (or a second page embedding the same model) reads them from disk instead of the network.
// Works in a window and in a worker; without the Cache API (insecure origins, some private
// modes, file://) it simply downloads every time.
//
// The cache cannot be poisoned or go stale (issue 14):
// - nothing that is not a model is cached: an HTML page (a 200 error page, a captive portal) is
//   refused as soon as it arrives, and with `deferCache` a download is cached only once the caller
//   says it parsed as a model (commitModelCache(bytes), which the worker calls after
//   Explainer.create succeeded);
// - `integrity` ("sha256-<base64>", as Subresource Integrity writes it; sha384 and sha512 too, several
//   values separated by spaces) is checked with crypto.subtle.digest before the bytes are used or
//   cached, from the network and from the cache alike; a mismatch is an Error naming both digests;
// - a cached model is revalidated whenever the browser is online: a conditional request
//   (If-None-Match / If-Modified-Since from the cached copy's ETag / Last-Modified) answered 304
//   reads the cached copy, a 200 is the new file and replaces it; offline (or when the server
//   fails) the cached copy is used;
// - Content-Length is only a progress estimate: the body is read as a stream into chunks, with a
//   running limit (`maxBytes`, default 2 GiB), and assembled at its real size.

export const MODEL_CACHE_NAME = 'gradcam-models-v1';
/** Largest model (or .onnx.data) accepted by default, in bytes; `maxBytes` overrides it. */
export const DEFAULT_MAX_MODEL_BYTES = 2 * 1024 ** 3;

function baseUrl() {
  if (typeof document !== 'undefined' && document.baseURI) return document.baseURI;
  if (typeof self !== 'undefined' && self.location) return self.location.href;
  return undefined;
}

/** Absolute URL of `url`, resolved against the page (or the worker). */
export function resolveModelUrl(url) {
  return new URL(String(url), baseUrl()).href;
}

async function openCache() {
  try {
    if (typeof caches === 'undefined' || !caches || typeof caches.open !== 'function') return null;
    return await caches.open(MODEL_CACHE_NAME);
  } catch {
    // SecurityError on opaque origins, or storage disabled: behave as if there were no cache.
    return null;
  }
}

// ---------- integrity (Subresource Integrity's syntax) ----------

const SRI = {
  sha256: { name: 'SHA-256', bytes: 32, rank: 1 },
  sha384: { name: 'SHA-384', bytes: 48, rank: 2 },
  sha512: { name: 'SHA-512', bytes: 64, rank: 3 },
};

function base64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s);
}

/**
 * The digests an integrity value names: [{alg, digest (standard base64)}]. Like SRI, tokens of an
 * unknown algorithm and options after '?' are ignored; unlike a browser, a value that names no usable
 * digest is an Error (a typo must not switch the check off), and so is a digest of the wrong length.
 */
export function parseIntegrity(value) {
  const text = String(value == null ? '' : value).trim();
  const out = [];
  for (const token of text.split(/\s+/).filter(Boolean)) {
    const m = /^([A-Za-z0-9]+)-([A-Za-z0-9+/_-]+={0,2})(\?.*)?$/.exec(token);
    if (!m || !SRI[m[1].toLowerCase()]) continue;
    const alg = m[1].toLowerCase();
    const digest = m[2].replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '');
    let length = -1;
    try {
      length = atob(digest + '='.repeat((4 - (digest.length % 4)) % 4)).length;
    } catch {
      /* not base64 */
    }
    if (length !== SRI[alg].bytes) {
      throw new Error(`integrity "${token}" is not a ${SRI[alg].name} digest: ${alg}- must be followed by the base64 of ${SRI[alg].bytes} bytes (as \`openssl dgst -${alg} -binary FILE | base64\` prints it)`);
    }
    out.push({ alg, digest: btoa(atob(digest + '='.repeat((4 - (digest.length % 4)) % 4))) });
  }
  if (out.length === 0) {
    throw new Error(`integrity "${text}" names no sha256, sha384 or sha512 digest; write it as Subresource Integrity does: sha256-<base64 digest>`);
  }
  return out;
}

/**
 * Checks `bytes` against an integrity value: the strongest algorithm named decides, and any of its
 * digests may match (as SRI does). Resolves to the matching "alg-digest"; throws an Error naming the
 * expected and the actual digest otherwise.
 */
export async function verifyIntegrity(bytes, integrity, what = 'the model') {
  const wanted = parseIntegrity(integrity);
  const best = Math.max(...wanted.map((w) => SRI[w.alg].rank));
  const alg = Object.keys(SRI).find((a) => SRI[a].rank === best);
  const expected = wanted.filter((w) => w.alg === alg).map((w) => `${alg}-${w.digest}`);
  const subtle = typeof crypto !== 'undefined' && crypto && crypto.subtle;
  if (!subtle) {
    throw new Error(`Cannot check the integrity of ${what}: crypto.subtle is missing (not a secure context; serve the page over https or from localhost)`);
  }
  const actual = `${alg}-${base64(new Uint8Array(await subtle.digest(SRI[alg].name, bytes)))}`;
  if (!expected.includes(actual)) {
    const err = new Error(`Integrity check failed for ${what}: expected ${expected.join(' or ')}, got ${actual} (${bytes.length} bytes). The file is not the one the page asked for; it was neither used nor cached.`);
    err.name = 'IntegrityError';
    throw err;
  }
  return actual;
}

// ---------- reading a body, and what is surely not a model ----------

function fmtBytes(n) {
  return n >= 1024 ** 2 ? `${(n / 1024 ** 2).toFixed(1)} MiB` : `${n} bytes`;
}

/**
 * Reads a Response body into one Uint8Array of its real size, reporting (received, total) as chunks
 * arrive. Content-Length is only the progress total (and an early refusal when over `maxBytes`),
 * never an allocation size.
 */
async function readBody(response, { onProgress, signal, maxBytes, what }) {
  const header = Number(response.headers.get('content-length'));
  // A compressed transfer reports the compressed length: only trust it as an estimate.
  const encoded = (response.headers.get('content-encoding') || 'identity') !== 'identity';
  const total = Number.isFinite(header) && header > 0 && !encoded ? header : 0;
  const tooBig = (n) => new Error(`${what[0].toUpperCase()}${what.slice(1)} is larger than the limit of ${fmtBytes(maxBytes)} (${n}); pass a larger maxBytes to load it`);
  if (total > maxBytes) {
    if (response.body && typeof response.body.cancel === 'function') response.body.cancel().catch(() => {});
    throw tooBig(`Content-Length ${fmtBytes(total)}`);
  }
  if (!response.body || typeof response.body.getReader !== 'function') {
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (bytes.length > maxBytes) throw tooBig(`${fmtBytes(bytes.length)} received`);
    if (onProgress) onProgress(bytes.length, bytes.length);
    return bytes;
  }
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  if (onProgress) onProgress(0, total);
  for (;;) {
    if (signal && signal.aborted) {
      reader.cancel().catch(() => {});
      throw new Error('model download aborted');
    }
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      if (signal && signal.aborted) throw new Error('model download aborted');
      const of = total ? ` of ${fmtBytes(total)}` : '';
      throw new Error(`The download of ${what} broke off after ${fmtBytes(received)}${of}: ${e && e.message ? e.message : e}`);
    }
    const { done, value } = chunk;
    if (done) break;
    received += value.length;
    if (received > maxBytes) {
      reader.cancel().catch(() => {});
      throw tooBig(`over ${fmtBytes(maxBytes)} received${total ? ` although Content-Length said ${fmtBytes(total)}` : ''}`);
    }
    chunks.push(value);
    if (onProgress) onProgress(received, Math.max(total, received));
  }
  if (onProgress) onProgress(received, received);
  if (chunks.length === 1 && chunks[0].byteOffset === 0 && chunks[0].byteLength === chunks[0].buffer.byteLength) return chunks[0];
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  return bytes;
}

/**
 * Why `bytes` surely are not a model file (nor an ONNX file's external data), or null. A quick
 * check of the first bytes only: a page of markup (an HTML error page served with status 200, a
 * captive portal's login page) or nothing at all. Whether it parses as a model is the wasm side's
 * call (see `deferCache`).
 */
export function notAModel(bytes) {
  if (bytes.length === 0) return 'is empty (0 bytes)';
  let i = 0;
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) i = 3; // UTF-8 BOM
  while (i < bytes.length && i < 256 && (bytes[i] === 0x20 || bytes[i] === 0x09 || bytes[i] === 0x0a || bytes[i] === 0x0d)) i++;
  if (bytes[i] !== 0x3c) return null; // '<'
  const head = bytes.subarray(i, Math.min(bytes.length, i + 64));
  // Markup: '<' then a letter, '!' or '?', and printable text after it; weights look nothing like it.
  const printable = head.every((b) => (b >= 0x20 && b < 0x7f) || b === 0x09 || b === 0x0a || b === 0x0d || b >= 0x80);
  if (!printable || !/^<[!?A-Za-z]/.test(String.fromCharCode(head[0], head[1] || 0))) return null;
  const text = new TextDecoder().decode(bytes.subarray(i, Math.min(bytes.length, i + 400))).replace(/\s+/g, ' ');
  const title = /<title[^>]*>([^<]*)/i.exec(text);
  const kind = /^<(!doctype html|html|head|body)/i.test(text) ? 'an HTML page' : 'markup (HTML or XML)';
  return `is ${kind}, not a model${title ? ` (titled "${title[1].trim().slice(0, 80)}")` : ''}: it starts with "${text.slice(0, 60)}"`;
}

// ---------- the loader ----------

/** Downloads kept back from the cache until they parsed (deferCache): bytes -> {cache, href, headers}. */
const pending = new WeakMap();

async function store(cache, href, bytes, headers) {
  try {
    await cache.put(href, new Response(bytes, { headers }));
  } catch {
    // Quota exceeded or storage disabled: the model still works, it just is not cached.
  }
}

/**
 * Caches downloads that loadModelBytes(..., {deferCache: true}) returned, now that they parsed as a
 * model: call it with those very arrays (others, and repeated calls, are ignored).
 */
export async function commitModelCache(...arrays) {
  for (const bytes of arrays) {
    const entry = bytes && typeof bytes === 'object' ? pending.get(bytes) : undefined;
    if (!entry) continue;
    pending.delete(bytes);
    await store(entry.cache, entry.href, bytes, entry.headers);
  }
}

const sameOrigin = (href) => {
  try {
    return new URL(href).origin === new URL(baseUrl() || href).origin;
  } catch {
    return false;
  }
};

/**
 * Fetches model bytes from `url`, through the model cache.
 *
 * @param {string|URL} url
 * @param {{onProgress?: (received: number, total: number) => void, signal?: AbortSignal,
 *          cache?: boolean, integrity?: string, maxBytes?: number, deferCache?: boolean}} [options]
 *   `total` is 0 while the size is unknown. `integrity`: "sha256-<base64>" (SRI syntax), checked
 *   before the bytes are returned or cached. `maxBytes`: the largest body accepted (default 2 GiB).
 *   `deferCache`: a download is cached only by commitModelCache(bytes), once it parsed.
 * @returns {Promise<Uint8Array>} the bytes; `loadModelBytes.lastSource` tells 'cache' or 'network'.
 */
export async function loadModelBytes(url, options = {}) {
  const { onProgress, signal, cache: useCache = true, integrity, maxBytes = DEFAULT_MAX_MODEL_BYTES, deferCache = false } = options;
  const href = resolveModelUrl(url);
  if (integrity) parseIntegrity(integrity); // a malformed value fails before any download
  const what = `the model at ${href}`;
  const cache = useCache ? await openCache() : null;
  let cached = null;
  if (cache && !options.bypassCachedCopy) {
    try {
      cached = await cache.match(href);
      if (cached && !cached.ok) cached = null;
    } catch {
      cached = null; // a broken cache entry: as if there were none
    }
  }
  const aborted = () => new Error('model download aborted');

  /** The cached copy, checked like a download: {bytes} or {failure}. */
  const fromCache = async () => {
    let bytes;
    try {
      bytes = await readBody(cached, { onProgress, signal, maxBytes, what });
    } catch (e) {
      if (signal && signal.aborted) throw e;
      bytes = new Uint8Array(0);
    }
    const problem = notAModel(bytes);
    let failure = problem ? new Error(`The cached copy of ${what} ${problem}`) : null;
    if (!failure && integrity) {
      try {
        await verifyIntegrity(bytes, integrity, `the cached copy of ${what}`);
      } catch (e) {
        failure = e;
      }
    }
    if (failure) {
      // Not a model: never to be read again. Another file than the page asks for (integrity): kept for
      // the pages that ask for it, and fetched afresh for this one.
      if (problem) await cache.delete(href).catch(() => {});
      return { failure };
    }
    loadModelBytes.lastSource = 'cache';
    return { bytes };
  };

  // Ask the server first (cheaply, when a copy is cached), unless the browser knows it is offline.
  const offline = typeof navigator !== 'undefined' && navigator.onLine === false;
  let response = null;
  let networkError = null;
  if (!(cached && offline)) {
    const own = sameOrigin(href);
    const headers = {};
    if (cached && own) {
      // Conditional headers are not CORS-safelisted: only on our own origin (no preflight).
      const etag = cached.headers.get('etag');
      const lastModified = cached.headers.get('last-modified');
      if (etag) headers['if-none-match'] = etag;
      if (lastModified) headers['if-modified-since'] = lastModified;
    }
    try {
      // Our own cache holds the file: keep the HTTP cache out of it (a 304 reaches us as a 304).
      response = await fetch(href, { signal, headers, cache: cache && own ? 'no-store' : 'no-cache' });
    } catch (e) {
      if (signal && signal.aborted) throw aborted();
      networkError = e;
    }
  }
  const validators = (r) => [r.headers.get('etag'), r.headers.get('last-modified')];
  const unchanged =
    response && cached &&
    (response.status === 304 ||
      (response.ok && validators(response).some(Boolean) && validators(response).every((v, i) => v === validators(cached)[i])));

  if (cached && (!response || !response.ok || unchanged)) {
    // Offline, the server failing, or the same file: the cached copy.
    if (response && response.body) response.body.cancel().catch(() => {});
    const hit = await fromCache();
    if (hit.bytes) return hit.bytes;
    // The cached copy failed a check: fetch the file afresh when the server is there.
    if (!offline && !networkError) return loadModelBytes(url, { ...options, bypassCachedCopy: true });
    throw hit.failure;
  }
  if (!response) {
    throw new Error(`Could not download ${what}: ${networkError && networkError.message ? networkError.message : networkError || 'offline'}`);
  }
  if (!response.ok) {
    if (response.body) response.body.cancel().catch(() => {});
    throw new Error(`Could not download ${what}: HTTP ${response.status} ${response.statusText}`.trim());
  }

  // A new file (or the first download): checked before it is used, and before it is cached.
  const bytes = await readBody(response, { onProgress, signal, maxBytes, what });
  let failure = null;
  const problem = notAModel(bytes);
  if (problem) failure = new Error(`The server answered ${href} with something that ${problem}. It was not cached; the model was not loaded.`);
  if (!failure && integrity) {
    try {
      await verifyIntegrity(bytes, integrity, what);
    } catch (e) {
      failure = e;
    }
  }
  if (failure) {
    if (cached) {
      // A good copy is still at hand (a captive portal's page, say): better than nothing.
      const hit = await fromCache();
      if (hit.bytes) {
        console.warn(`gradcam: ${failure.message} Using the cached copy.`);
        return hit.bytes;
      }
    }
    throw failure;
  }
  loadModelBytes.lastSource = 'network';
  if (cache) {
    const headers = { 'content-type': response.headers.get('content-type') || 'application/octet-stream' };
    for (const h of ['etag', 'last-modified']) if (response.headers.get(h)) headers[h] = response.headers.get(h);
    if (deferCache) pending.set(bytes, { cache, href, headers });
    else await store(cache, href, bytes, headers);
  }
  return bytes;
}
loadModelBytes.lastSource = null;

/** Whether `url` is already in the model cache. */
export async function isModelCached(url) {
  const cache = await openCache();
  if (!cache) return false;
  try {
    return Boolean(await cache.match(resolveModelUrl(url)));
  } catch {
    return false;
  }
}

// ---------- the auto backend's calibrations ----------

// With backend 'auto' on a WebGPU adapter, the Explainer times one Grad-CAM on each backend and keeps
// the faster (backendInfo().calibration). These keep those records per model (a list, one per
// adapter), so the next load of the same model on the same adapter reuses the choice.
const CALIBRATION_CACHE_NAME = 'gradcam-calibration-v1';
const MAX_CALIBRATIONS = 16;

/** A cheap identity of the model bytes: their length and an FNV-1a hash of every 997th byte (a
 *  false match could only cost a slower backend, never a wrong map). */
function modelKey(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i += 997) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
  return `${bytes.length}-${h.toString(16)}`;
}

/** Whether a kept record has the fields the Explainer reads (storage is not trusted). */
const wellFormed = (r) => r && typeof r.adapter === 'string' && (r.chose === 'cpu' || r.chose === 'webgpu') && typeof r.cpuMs === 'number';

async function calibrationSlot(bytes) {
  if (typeof caches === 'undefined' || !caches || typeof caches.open !== 'function') return null;
  const cache = await caches.open(CALIBRATION_CACHE_NAME);
  return { cache, key: new URL(`gradcam-calibration/${modelKey(bytes)}`, baseUrl()).href };
}

/** The calibration records kept for these model bytes ([] when none, or without a Cache API). */
export async function readCalibrations(bytes) {
  try {
    const slot = await calibrationSlot(bytes);
    const hit = slot && (await slot.cache.match(slot.key));
    const list = hit ? await hit.json() : [];
    return Array.isArray(list) ? list.filter(wellFormed).slice(0, MAX_CALIBRATIONS) : [];
  } catch {
    return [];
  }
}

/** Keeps `record` (a fresh backendInfo().calibration) for these model bytes, replacing the same adapter's. */
export async function saveCalibration(bytes, record) {
  try {
    const slot = await calibrationSlot(bytes);
    if (!slot) return;
    const list = [record, ...(await readCalibrations(bytes)).filter((r) => r && r.adapter !== record.adapter)].slice(0, MAX_CALIBRATIONS);
    await slot.cache.put(slot.key, new Response(JSON.stringify(list.map(({ cached, ...r }) => r)), { headers: { 'content-type': 'application/json' } }));
  } catch {
    /* no Cache API here (opaque origin, storage off): the next load measures again */
  }
}

/** Removes one model (or, without `url`, every cached model and every calibration). Returns whether anything was removed. */
export async function clearModelCache(url) {
  try {
    if (url === undefined) {
      if (typeof caches === 'undefined') return false;
      const [models] = await Promise.all([caches.delete(MODEL_CACHE_NAME), caches.delete(CALIBRATION_CACHE_NAME)]);
      return models;
    }
    const cache = await openCache();
    return cache ? await cache.delete(resolveModelUrl(url)) : false;
  } catch {
    return false;
  }
}
