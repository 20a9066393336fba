// Service worker of the built demo: the page opens and explains offline after one visit.
// `npm run build:web` emits it as dist/sw.js behind one line, self.GRADCAM_PRECACHE = {version, urls},
// naming that build's files (page, scripts, the worker, the wasm, styles, samples); www/demo.js
// registers it only in that build. The model is not in the list: www/model-loader.js already keeps
// it in the Cache API ('gradcam-models-v1'), with download progress, and reads it from there offline.
//
// What it never does: touch other origins, answer the model's request (that keeps the download
// progress and the model cache as they are), fetch anything by itself after installing, or keep a
// file that is not what it should be (an HTML page where a script or the wasm belongs; see precache).

const { version, urls } = self.GRADCAM_PRECACHE || { version: 'unbuilt', urls: [] };
const PREFIX = 'gradcam-shell-';
const CACHE = PREFIX + version; // one cache per build: a new build never reads an old build's files
const absolute = (u) => new URL(u, self.registration.scope).href;
const PRECACHED = new Set(urls.map(absolute));
const PAGE = absolute('./');

/**
 * One file of the build, fetched past the HTTP cache and checked before it is kept: a 200 that is an
 * HTML page where a script, the wasm or an image belongs (a captive portal, an error page) would
 * otherwise be served from this cache for as long as the build lives. A failed check fails the
 * install; the browser tries again on a later visit.
 */
async function precache(cache, url) {
  const response = await fetch(url, { cache: 'no-store' });
  const type = (response.headers.get('content-type') || '').toLowerCase();
  const page = url === PAGE || /\.html$/.test(new URL(url).pathname);
  if (!response.ok || response.redirected || (!page && type.startsWith('text/html'))) {
    throw new Error(`not precached: ${url} answered ${response.status} ${type || '(no type)'}${response.redirected ? ', redirected' : ''}`);
  }
  if (/\.wasm$/.test(new URL(url).pathname) && !type.startsWith('application/wasm')) throw new Error(`not precached: ${url} is ${type}, not application/wasm`);
  await cache.put(url, response);
}

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => Promise.all(urls.map(absolute).map((url) => precache(cache, url)))));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) if (name.startsWith(PREFIX) && name !== CACHE) await caches.delete(name);
      // Control the page of the first visit at once, so that it works offline without a reload.
      await self.clients.claim();
    })(),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  if (request.mode === 'navigate') {
    // The page: from the network when there is one (a new build shows at once), else this build's copy.
    event.respondWith(fetch(request).catch(async () => (await caches.match(PAGE, { cacheName: CACHE })) || Response.error()));
    return;
  }
  const url = request.url.split('#')[0];
  if (!PRECACHED.has(url)) return; // the model, or anything this build did not emit: the browser's own way
  event.respondWith(caches.match(url, { cacheName: CACHE }).then((hit) => hit || fetch(request)));
});
