// Downloads model weights with progress, and keeps them in the Cache API so that a second
// visit (or a second page embedding the same model) reads them from disk instead of the network.
// Works in a window and in a worker; without the Cache API (insecure origins, some private
// modes, file://) it simply downloads every time.

export const MODEL_CACHE_NAME = 'gradcam-models-v1';

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

/** Reads a Response body into one Uint8Array, reporting (received, total) as chunks arrive. */
async function readBody(response, onProgress, signal) {
  const header = Number(response.headers.get('content-length'));
  // A compressed transfer reports the compressed length: only trust it as an estimate.
  const encoded = (response.headers.get('content-encoding') || 'identity') !== 'identity';
  let total = Number.isFinite(header) && header > 0 && !encoded ? header : 0;
  if (!response.body || typeof response.body.getReader !== 'function') {
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (onProgress) onProgress(bytes.length, bytes.length);
    return bytes;
  }
  const reader = response.body.getReader();
  let buffer = new Uint8Array(total || 1 << 20);
  let received = 0;
  if (onProgress) onProgress(0, total);
  for (;;) {
    if (signal && signal.aborted) {
      reader.cancel().catch(() => {});
      throw new Error('model download aborted');
    }
    const { done, value } = await reader.read();
    if (done) break;
    if (received + value.length > buffer.length) {
      const grown = new Uint8Array(Math.max(buffer.length * 2, received + value.length));
      grown.set(buffer.subarray(0, received));
      buffer = grown;
    }
    buffer.set(value, received);
    received += value.length;
    if (onProgress) onProgress(received, Math.max(total, received));
  }
  total = received;
  if (onProgress) onProgress(received, total);
  return received === buffer.length ? buffer : buffer.slice(0, received);
}

/**
 * Fetches model bytes from `url`.
 *
 * @param {string|URL} url
 * @param {{onProgress?: (received: number, total: number) => void, signal?: AbortSignal,
 *          cache?: boolean}} [options]  `total` is 0 while the size is unknown.
 * @returns {Promise<Uint8Array>} the bytes; `loadModelBytes.lastSource` tells 'cache' or 'network'.
 */
export async function loadModelBytes(url, { onProgress, signal, cache: useCache = true } = {}) {
  const href = resolveModelUrl(url);
  const cache = useCache ? await openCache() : null;
  if (cache) {
    try {
      const hit = await cache.match(href);
      if (hit && hit.ok) {
        const bytes = await readBody(hit, onProgress, signal);
        if (bytes.length > 0) {
          loadModelBytes.lastSource = 'cache';
          return bytes;
        }
        await cache.delete(href);
      }
    } catch (e) {
      if (signal && signal.aborted) throw e;
      // A broken cache entry: fall through to the network.
    }
  }

  let response;
  try {
    response = await fetch(href, { signal, cache: 'no-cache' });
  } catch (e) {
    throw new Error(`Could not download the model from ${href}: ${e && e.message ? e.message : e}`);
  }
  if (!response.ok) {
    throw new Error(`Could not download the model from ${href}: HTTP ${response.status} ${response.statusText}`.trim());
  }
  const bytes = await readBody(response, onProgress, signal);
  if (bytes.length === 0) throw new Error(`The model at ${href} is empty (0 bytes).`);
  loadModelBytes.lastSource = 'network';

  if (cache) {
    try {
      await cache.put(href, new Response(bytes, {
        headers: {
          'content-type': response.headers.get('content-type') || 'application/octet-stream',
          'content-length': String(bytes.length),
        },
      }));
    } catch {
      // Quota exceeded or storage disabled: the model still works, it just is not cached.
    }
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

/** Removes one model (or, without `url`, every cached model). Returns whether anything was removed. */
export async function clearModelCache(url) {
  try {
    if (url === undefined) {
      return typeof caches !== 'undefined' && (await caches.delete(MODEL_CACHE_NAME));
    }
    const cache = await openCache();
    return cache ? await cache.delete(resolveModelUrl(url)) : false;
  } catch {
    return false;
  }
}
