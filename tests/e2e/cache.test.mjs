// The model cache cannot be poisoned or go stale (issue 14), in headless Chromium:
//   node --test tests/e2e/cache.test.mjs     (part of npm run test:e2e)
// Needs pkg/ (scripts/build-web.sh) and assets/ (scripts/setup.sh).
//
// The page comes from one origin: a small server in this test answers the model URLs under /flaky/
// as each test scripts them (an HTML error page with status 200 once, another version of the file,
// validators or none) and hands every other request to www/serve.mjs. Pages are
// tests/e2e/blank.html with <gradcam-explainer> elements made in them, and the demo page itself for
// its URL loader. Every page of a test shares one browser context, hence one Cache Storage.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, request } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, artifactsDir, launchBrowser, recordErrors, startServer } from './harness.mjs';

const MODEL = join(REPO, 'assets/models/efficientnet-lite0.safetensors');
const BIASED_CLASS = 7; // 'cock': the class the second version of the model is biased to
const CACHE = 'gradcam-models-v1';

let backend; // www/serve.mjs
let front; // this test's server: /flaky/* scripted, the rest proxied to backend
let origin;
let browser;
let v1;
let v2;
const routes = new Map(); // path -> (req, res, log) => void
const log = []; // {path, status, inm, ims, bytes}

const sri = (bytes, alg = 'sha256') => `${alg}-${createHash(alg).update(bytes).digest('base64')}`;

/** The model with the classifier's bias of BIASED_CLASS set to 128 (f16 0x5800): a valid model, another file. */
function biased(model) {
  const copy = Buffer.from(model);
  const n = Number(copy.readBigUInt64LE(0));
  const header = JSON.parse(copy.subarray(8, 8 + n).toString());
  const at = 8 + n + header['_fc.bias'].data_offsets[0] + 2 * BIASED_CLASS;
  copy.writeUInt16LE(0x5800, at);
  return copy;
}

const HTML_ERROR = Buffer.from('<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head><body><h1>Please try again later</h1></body></html>\n');

/** A file with validators, answering conditional requests as a real server does. */
function file(bytes, { etag, lastModified, type = 'application/octet-stream' } = {}) {
  return (req, res, entry) => {
    const headers = { 'content-type': type, 'cache-control': 'no-cache' };
    if (etag) headers.etag = etag;
    if (lastModified) headers['last-modified'] = lastModified;
    const inm = req.headers['if-none-match'];
    const ims = req.headers['if-modified-since'];
    if ((etag && inm === etag) || (!inm && lastModified && ims === lastModified)) {
      entry.status = 304;
      res.writeHead(304, headers);
      return res.end();
    }
    entry.status = 200;
    entry.bytes = bytes.length;
    res.writeHead(200, { ...headers, 'content-length': bytes.length });
    res.end(req.method === 'HEAD' ? undefined : bytes);
  };
}

/** Answers with each handler in turn, the last one from then on. */
const sequence = (...handlers) => {
  let i = 0;
  return (req, res, entry) => handlers[Math.min(i++, handlers.length - 1)](req, res, entry);
};

before(async () => {
  for (const f of ['pkg/gradcam_wasm.js', 'pkg/gradcam_wasm_bg.wasm', 'assets/models/efficientnet-lite0.safetensors', 'assets/samples/chelsea.png']) {
    if (!existsSync(join(REPO, f))) throw new Error(`missing ${f}: run scripts/setup.sh (assets) and scripts/build-web.sh (pkg) first`);
  }
  artifactsDir();
  v1 = readFileSync(MODEL);
  v2 = biased(v1);
  [backend, browser] = await Promise.all([startServer(), launchBrowser()]);
  const back = new URL(backend.url);
  front = createServer((req, res) => {
    const path = req.url.split('?')[0];
    const route = routes.get(path);
    if (route) {
      const entry = { path, inm: req.headers['if-none-match'] || null, ims: req.headers['if-modified-since'] || null };
      log.push(entry);
      return route(req, res, entry);
    }
    const proxied = request(
      { host: back.hostname, port: back.port, path: req.url, method: req.method, headers: { ...req.headers, host: back.host } },
      (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      },
    );
    proxied.on('error', () => res.destroy());
    req.pipe(proxied);
  });
  await new Promise((ok) => front.listen(0, '127.0.0.1', ok));
  origin = `http://127.0.0.1:${front.address().port}`;
});

after(async () => {
  await browser?.close().catch(() => {});
  await new Promise((ok) => (front ? front.close(ok) : ok()));
  await backend?.stop();
});

/** A blank page of the origin with the element's module loaded. */
async function blankPage(context) {
  const page = await context.newPage();
  const errors = recordErrors(page);
  await page.goto(`${origin}/tests/e2e/blank.html`);
  await page.evaluate(() => import('/www/gradcam-explainer.js'));
  return { page, errors };
}

/**
 * A <gradcam-explainer eager> with `attrs` on chelsea.png; resolves to {classIdx, label} or {error}
 * (the message the element shows).
 */
function explainWithElement(page, attrs) {
  return page.evaluate(
    (attrs) =>
      new Promise((resolve) => {
        const el = document.createElement('gradcam-explainer');
        el.setAttribute('eager', '');
        el.setAttribute('src', '/assets/samples/chelsea.png');
        for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
        el.addEventListener('gradcam-result', (e) => resolve({ classIdx: e.detail.classIdx, label: e.detail.label }), { once: true });
        el.addEventListener('gradcam-error', () => resolve({ error: el.shadowRoot.querySelector('.msg').textContent }), { once: true });
        document.body.append(el);
      }),
    attrs,
  );
}

/** What the model cache holds for `path`: {bytes, etag, sha256} or null. */
function cached(page, path) {
  return page.evaluate(
    async ({ path, name }) => {
      const hit = await (await caches.open(name)).match(new URL(path, location.href).href);
      if (!hit) return null;
      const bytes = new Uint8Array(await hit.arrayBuffer());
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
      return { bytes: bytes.length, etag: hit.headers.get('etag'), sha256: `sha256-${btoa(String.fromCharCode(...digest))}` };
    },
    { path, name: CACHE },
  );
}

const requestsTo = (path) => log.filter((e) => e.path === path);

test('an HTML error page served once with status 200 is refused and not cached; the next load works, and is cached', async () => {
  const path = '/flaky/html-once/model.safetensors';
  routes.set(path, sequence((req, res, entry) => {
    entry.status = 200;
    entry.bytes = HTML_ERROR.length;
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': HTML_ERROR.length, etag: '"error-page"' });
    res.end(HTML_ERROR);
  }, file(v1, { etag: '"v1"' })));
  const context = await browser.newContext();
  const { page, errors } = await blankPage(context);

  const first = await explainWithElement(page, { model: path });
  console.log(`# HTML error page with 200: the element shows "${first.error}"`);
  assert.ok(first.error, `the error page must not explain anything: ${JSON.stringify(first)}`);
  assert.match(first.error, /HTML page, not a model/);
  assert.match(first.error, /503 Service Unavailable/, 'the message quotes the page it got');
  assert.equal(await cached(page, path), null, 'the error page must not be cached');

  // The same page recovers: another element (or this one again) loads the real file.
  const second = await explainWithElement(page, { model: path });
  assert.equal(second.error, undefined, `the second load must work: ${second.error}`);
  assert.ok([281, 282, 285].includes(second.classIdx), `chelsea.png is a cat: ${JSON.stringify(second)}`);
  const held = await cached(page, path);
  assert.deepEqual(held, { bytes: v1.length, etag: '"v1"', sha256: sri(v1) }, 'the real file is what the cache holds');

  // A fresh page revalidates the cached copy (If-None-Match) and reads it from the cache on 304.
  const { page: page2 } = await blankPage(context);
  const third = await explainWithElement(page2, { model: path });
  assert.equal(third.classIdx, second.classIdx);
  const seen = requestsTo(path).map((e) => `${e.status}${e.inm ? ` (If-None-Match ${e.inm})` : ''}`);
  console.log(`# ${path}: ${seen.join(', ')}`);
  assert.deepEqual(seen, ['200', '200', '304 (If-None-Match "v1")']);
  assert.deepEqual(errors.filter((e) => !/gradcam-error|503|HTML page/.test(e)), []);
  await context.close();
});

test('a body that is not HTML but does not parse as a model is not cached either (cached only after it parsed)', async () => {
  const path = '/flaky/garbage-once/model.safetensors';
  const garbage = Buffer.alloc(4096, 0x41);
  garbage.writeBigUInt64LE(64n, 0); // a safetensors-looking length, then no JSON
  routes.set(path, sequence(file(garbage, { etag: '"garbage"' }), file(v1, { etag: '"v1"' })));
  const context = await browser.newContext();
  const { page } = await blankPage(context);
  const first = await explainWithElement(page, { model: path });
  console.log(`# garbage with 200: the element shows "${first.error}"`);
  assert.ok(first.error, 'garbage must not explain anything');
  assert.equal(await cached(page, path), null, 'what did not parse as a model must not be cached');
  const second = await explainWithElement(page, { model: path });
  assert.equal(second.error, undefined, `the second load must work: ${second.error}`);
  assert.equal((await cached(page, path)).sha256, sri(v1));
  await context.close();
});

test('integrity: a wrong value is refused with both digests named; a malformed one is an error; the right one works', async () => {
  const path = '/flaky/integrity/model.safetensors';
  routes.set(path, file(v1, { etag: '"v1"' }));
  const wrong = sri(v2);
  const right = sri(v1);
  const context = await browser.newContext();
  const { page, errors } = await blankPage(context);

  const refused = await explainWithElement(page, { model: path, integrity: wrong });
  console.log(`# wrong integrity: "${refused.error}"`);
  assert.ok(refused.error, 'a wrong integrity must refuse the model');
  assert.ok(refused.error.includes(`expected ${wrong}`), refused.error);
  assert.ok(refused.error.includes(`got ${right}`), refused.error);
  assert.equal(await cached(page, path), null, 'a file that fails its integrity check is not cached');

  const malformed = await explainWithElement(page, { model: path, integrity: 'sha256-abc' });
  assert.match(malformed.error || '', /not a SHA-256 digest/, `a malformed value: ${JSON.stringify(malformed)}`);

  const ok = await explainWithElement(page, { model: path, integrity: right });
  assert.equal(ok.error, undefined, `the right integrity must load: ${ok.error}`);
  assert.ok([281, 282, 285].includes(ok.classIdx));
  // Several values (SRI's list): the strongest algorithm decides; a cached copy is checked too.
  const strongest = await explainWithElement(page, { model: path, integrity: `${wrong} ${sri(v1, 'sha384')}`, method: 'gradcam++' });
  assert.equal(strongest.error, undefined, `sha384 outranks the wrong sha256: ${strongest.error}`);
  const fromCache = await explainWithElement(page, { model: path, integrity: sri(v2, 'sha512'), method: 'layercam' });
  assert.match(fromCache.error || '', /^Integrity check failed for .*: expected sha512-\S+, got sha512-/, JSON.stringify(fromCache));
  assert.equal((await cached(page, path)).sha256, right, 'a page asking for another file does not evict the cached one');

  // The client's load options take it too, for a URL and for bytes.
  const viaClient = await page.evaluate(async ({ path, wrong, right }) => {
    const { GradcamClient } = await import('/www/gradcam-client.js');
    const client = new GradcamClient();
    const attempt = (source, integrity) => client.load(source, { integrity }).then((m) => `loaded ${m.arch}`, (e) => `${e.name}: ${e.message}`);
    try {
      const bytes = new Uint8Array(await (await fetch(path)).arrayBuffer());
      return { url: await attempt(path, wrong), bytes: await attempt(bytes, wrong), rightBytes: await attempt(bytes, right) };
    } finally {
      client.terminate();
    }
  }, { path, wrong, right });
  assert.match(viaClient.url, /^IntegrityError: Integrity check failed for the model at /);
  assert.match(viaClient.bytes, /^IntegrityError: Integrity check failed for the model bytes: expected /);
  assert.equal(viaClient.rightBytes, 'loaded efficientnet_lite0');
  assert.deepEqual(errors.filter((e) => !/Integrity|digest/.test(e)), []);
  await context.close();
});

test("the demo's URL loader: ?model=&integrity= refuses a wrong digest with a clear message, then loads with the right one", async () => {
  const path = '/flaky/demo/model.safetensors';
  routes.set(path, file(v1, { etag: '"v1"' }));
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const wrong = sri(v2);
  await page.goto(`${origin}/?model=${encodeURIComponent(path)}&integrity=${encodeURIComponent(wrong)}`);
  await page.waitForFunction(() => /Integrity check failed/.test(document.querySelector('#status').textContent), null, { timeout: 30000, polling: 100 });
  const status = await page.locator('#status').textContent();
  console.log(`# demo, wrong integrity: "${status}"`);
  assert.ok(status.includes(`expected ${wrong}`) && status.includes(`got ${sri(v1)}`), status);
  assert.equal(await page.locator('#result-title').textContent(), 'The model could not be loaded');
  // The user corrects it in the Model card's form: the page recovers without a reload.
  await page.locator('details.model-card summary').click();
  await page.fill('#model-integrity', sri(v1));
  await page.click('#model-url-form button[type=submit]');
  await page.waitForFunction(() => /ready in/.test(document.querySelector('#model-info').textContent), null, { timeout: 45000, polling: 100 });
  assert.match(await page.locator('#model-info').textContent(), /^model\.safetensors: efficientnet_lite0/);
  await page.waitForFunction(() => document.querySelector('#top5 li[data-class]'), null, { timeout: 30000 });
  const top1 = await page.$eval('#top5 li[data-class]', (li) => Number(li.dataset.class));
  assert.ok([281, 282, 285].includes(top1), `chelsea.png is a cat: ${top1}`);
  await page.screenshot({ path: join(artifactsDir(), 'cache-demo-integrity.png') });
  await context.close();
});

test('a model changed on the server replaces the cached one (ETag, and Last-Modified alone)', async () => {
  const context = await browser.newContext();
  for (const [path, validators] of [
    ['/flaky/changed-etag/model.safetensors', [{ etag: '"v1"' }, { etag: '"v2"' }]],
    ['/flaky/changed-date/model.safetensors', [{ lastModified: 'Sat, 05 Dec 2026 10:00:00 GMT' }, { lastModified: 'Sat, 05 Dec 2026 11:00:00 GMT' }]],
  ]) {
    routes.set(path, file(v1, validators[0]));
    const { page } = await blankPage(context);
    const a = await explainWithElement(page, { model: path });
    assert.ok([281, 282, 285].includes(a.classIdx), JSON.stringify(a));
    await page.close();
    // Unchanged: a new page revalidates and keeps the cached copy.
    const { page: same } = await blankPage(context);
    const b = await explainWithElement(same, { model: path });
    assert.equal(b.classIdx, a.classIdx);
    await same.close();
    // Changed on the server: the next page gets the new file and the cache holds it.
    routes.set(path, file(v2, validators[1]));
    const { page: next } = await blankPage(context);
    const c = await explainWithElement(next, { model: path });
    assert.equal(c.classIdx, BIASED_CLASS, `the new file (biased to class ${BIASED_CLASS}) must be used: ${JSON.stringify(c)}`);
    assert.equal((await cached(next, path)).sha256, sri(v2), 'the cache holds the new file');
    await next.close();
    // And from then on the new copy is the one revalidated.
    const { page: last } = await blankPage(context);
    const d = await explainWithElement(last, { model: path });
    assert.equal(d.classIdx, BIASED_CLASS);
    await last.close();
    const seen = requestsTo(path).map((e) => `${e.status}${e.inm ? ` (If-None-Match ${e.inm})` : ''}${e.ims ? ` (If-Modified-Since ${e.ims})` : ''}`);
    console.log(`# ${path}: ${seen.join(', ')}`);
    assert.deepEqual(seen.map((s) => s.slice(0, 3)), ['200', '304', '200', '304']);
    assert.ok(requestsTo(path).slice(1).every((e) => e.inm || e.ims), 'every later request is conditional');
  }
  await context.close();
});

test('Content-Length is not trusted: the body is read with a running limit', async () => {
  const lying = '/flaky/lying/model.safetensors';
  const chunked = '/flaky/chunked/model.safetensors';
  // Says 1 GiB, sends the real 9 MB file and closes: no 1 GiB buffer, just a failed download.
  routes.set(lying, (req, res, entry) => {
    entry.status = 200;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 1024 ** 3 });
    res.write(v1, () => res.destroy());
  });
  routes.set(chunked, (req, res, entry) => {
    entry.status = 200;
    res.writeHead(200, { 'content-type': 'application/octet-stream' }); // chunked: no length at all
    res.end(v1);
  });
  const context = await browser.newContext();
  const { page } = await blankPage(context);
  const out = await page.evaluate(async ({ lying, chunked }) => {
    const { loadModelBytes } = await import('/www/model-loader.js');
    const attempt = async (url, options) => {
      const t0 = performance.now();
      try {
        const bytes = await loadModelBytes(url, { cache: false, ...options });
        return { bytes: bytes.length, ms: performance.now() - t0 };
      } catch (e) {
        return { error: e.message, ms: performance.now() - t0 };
      }
    };
    return {
      overLimitDeclared: await attempt(lying, { maxBytes: 64 * 1024 ** 2 }),
      lyingWithinLimit: await attempt(lying, {}),
      chunkedOverLimit: await attempt(chunked, { maxBytes: 1024 ** 2 }),
      chunkedWithinLimit: await attempt(chunked, {}),
    };
  }, { lying, chunked });
  console.log(`# Content-Length: ${JSON.stringify(out)}`);
  assert.match(out.overLimitDeclared.error, /larger than the limit of 64\.0 MiB \(Content-Length 1024\.0 MiB\)/);
  assert.match(out.lyingWithinLimit.error || '', /^The download of .* broke off after [\d.]+ MiB of 1024\.0 MiB/, 'a body shorter than its Content-Length is a failed download');
  assert.match(out.chunkedOverLimit.error, /larger than the limit of 1\.0 MiB \(over 1\.0 MiB received\)/);
  assert.equal(out.chunkedWithinLimit.bytes, v1.length);
  await context.close();
});
