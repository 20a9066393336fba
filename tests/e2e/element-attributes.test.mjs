// <gradcam-explainer>'s attributes of issue 16 in Chromium: method changed twice quickly shows only
// the last method's result; backend="cpu" changed to another backend re-runs on a client of that
// backend; loading="eager" loads without scrolling (loading="lazy" waits); score-cam-channels limits
// Score-CAM to that many channels; workers splits it across workers with the same map.
//   node --test tests/e2e/element-attributes.test.mjs

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, recordErrors, startServer } from './harness.mjs';

let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

const MODEL = '../assets/models/efficientnet-lite0.safetensors';
const SRC = '../assets/samples/chelsea.png';

/** A page of embed-example.html that records every element's events (and the status texts it showed) in window.__log. */
async function openPage() {
  const page = await browser.newPage({ viewport: { width: 800, height: 600 } });
  const errors = recordErrors(page);
  await page.addInitScript(() => {
    window.__log = [];
    const note = (e, kind) => window.__log.push({ id: e.target.id, kind, method: e.detail.method, backend: e.detail.backend, message: e.detail.message });
    document.addEventListener('gradcam-result', (e) => note(e, 'result'));
    document.addEventListener('gradcam-error', (e) => note(e, 'error'));
  });
  await page.goto(new URL('www/embed-example.html', server.url).href);
  return { page, errors };
}

/** Adds <gradcam-explainer id=...> with `attrs` at the top of the page; `below` puts it far below the fold. */
function addElement(page, id, attrs, { below = false } = {}) {
  return page.evaluate(
    ({ id, attrs, below }) => {
      const el = document.createElement('gradcam-explainer');
      el.id = id;
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
      if (below) {
        const spacer = document.createElement('div');
        spacer.style.height = '5000px';
        document.body.append(spacer);
      }
      below ? document.body.append(el) : document.body.prepend(el);
      // Every status text the element shows ("Explaining… 3/16"), to read Score-CAM's progress.
      el.__texts = [];
      new MutationObserver(() => el.__texts.push(el.shadowRoot.querySelector('.msg').textContent)).observe(el.shadowRoot, { subtree: true, childList: true, characterData: true });
    },
    { id, attrs, below },
  );
}

const events = (page, id) => page.evaluate((id) => window.__log.filter((e) => e.id === id), id);
const waitEvents = (page, id, n, timeout = 90000) =>
  page.waitForFunction(({ id, n }) => window.__log.filter((e) => e.id === id).length >= n, { id, n }, { timeout, polling: 100 });

test('method changed twice quickly shows only the last method; a run superseded mid-way is never shown', async () => {
  const { page, errors } = await openPage();
  await addElement(page, 'm', { loading: 'eager', src: SRC, model: MODEL, method: 'gradcam' });
  await waitEvents(page, 'm', 1);
  // Two changes in one task: one run, of the last method.
  await page.evaluate(() => {
    const el = document.getElementById('m');
    el.setAttribute('method', 'scorecam');
    el.setAttribute('method', 'layercam');
  });
  await waitEvents(page, 'm', 2);
  // A slow Score-CAM, superseded while it runs (after its first progress text): only the newer method shows.
  await page.evaluate(() => {
    const el = document.getElementById('m');
    el.setAttribute('score-cam-channels', '128');
    el.setAttribute('method', 'scorecam');
  });
  await page.waitForFunction(() => document.getElementById('m').__texts.some((t) => /Explaining… \d+\/128/.test(t)), null, { timeout: 60000, polling: 20 });
  await page.evaluate(() => document.getElementById('m').setAttribute('method', 'gradcam++'));
  await waitEvents(page, 'm', 3);
  await page.waitForTimeout(1000); // a late result of a superseded run would arrive by now
  const log = await events(page, 'm');
  const shown = await page.evaluate(() => document.getElementById('m').result.method);
  console.log('# method changes:', JSON.stringify(log.map((e) => e.method || e.message)), 'shown', shown);
  assert.deepEqual(log.map((e) => e.kind), ['result', 'result', 'result'], `no error event: ${JSON.stringify(log)}`);
  assert.deepEqual(log.map((e) => e.method), ['gradcam', 'layercam', 'gradcam++'], 'no Score-CAM result was ever shown');
  assert.equal(shown, 'gradcam++');
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
  await page.close();
});

test('backend="cpu" changed to "webgpu" re-runs on a client of that backend', async () => {
  const { page, errors } = await openPage();
  await addElement(page, 'b', { loading: 'eager', src: SRC, model: MODEL, backend: 'cpu' });
  await waitEvents(page, 'b', 1);
  const firstClient = await page.evaluate(() => {
    window.__firstClient = document.getElementById('b')._client;
    return !!window.__firstClient;
  });
  await page.evaluate(() => document.getElementById('b').setAttribute('backend', 'webgpu'));
  await waitEvents(page, 'b', 2);
  const log = await events(page, 'b');
  const moved = await page.evaluate(() => {
    const c = document.getElementById('b')._client;
    return { differs: c !== window.__firstClient, requested: c.model.backend.requested, first: window.__firstClient.model.backend.requested };
  });
  console.log('# backend change:', JSON.stringify(log.map((e) => e.backend)), JSON.stringify(moved));
  assert.ok(firstClient);
  assert.deepEqual(log.map((e) => e.kind), ['result', 'result'], JSON.stringify(log));
  assert.ok(moved.differs, 'a new backend means another client (and worker)');
  assert.equal(moved.first, 'cpu');
  assert.equal(moved.requested, 'webgpu');
  assert.deepEqual(errors.filter((e) => !/favicon|WebGPU|adapter/i.test(e)), []);
  await page.close();
});

test('loading="eager" loads without scrolling; loading="lazy" waits until scrolled to; eager is an alias', async () => {
  const { page, errors } = await openPage();
  await addElement(page, 'lazy', { loading: 'lazy', src: SRC, model: MODEL }, { below: true });
  await addElement(page, 'eager', { loading: 'eager', src: SRC, model: MODEL }, { below: true });
  await addElement(page, 'alias', { eager: '', src: SRC, model: MODEL }, { below: true });
  await waitEvents(page, 'eager', 1);
  await waitEvents(page, 'alias', 1);
  await page.waitForTimeout(500);
  assert.equal((await events(page, 'lazy')).length, 0, 'the lazy element below the fold has not run');
  // Switching the lazy one to eager starts it without scrolling.
  await page.evaluate(() => document.getElementById('lazy').setAttribute('loading', 'eager'));
  await waitEvents(page, 'lazy', 1);
  const kinds = [...(await events(page, 'eager')), ...(await events(page, 'alias')), ...(await events(page, 'lazy'))].map((e) => e.kind);
  assert.deepEqual(kinds, ['result', 'result', 'result']);
  assert.equal(await page.evaluate(() => window.scrollY), 0, 'nothing scrolled');
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
  await page.close();
});

test('score-cam-channels limits Score-CAM; a bad value is a clear error', async () => {
  const { page, errors } = await openPage();
  const t0 = Date.now();
  await addElement(page, 's', { loading: 'eager', src: SRC, model: MODEL, method: 'scorecam', 'score-cam-channels': '16' });
  await waitEvents(page, 's', 1);
  const ms = Date.now() - t0;
  const texts = await page.evaluate(() => document.getElementById('s').__texts);
  const totals = [...new Set(texts.map((t) => /Explaining… \d+\/(\d+)/.exec(t)).filter(Boolean).map((m) => Number(m[1])))];
  console.log(`# score-cam-channels=16: progress totals ${JSON.stringify(totals)}, ${ms} ms`);
  assert.equal((await events(page, 's'))[0].kind, 'result');
  assert.deepEqual(totals, [16], 'Score-CAM counted 16 channels');
  await page.evaluate(() => document.getElementById('s').setAttribute('score-cam-channels', 'many'));
  await waitEvents(page, 's', 2);
  const bad = (await events(page, 's'))[1];
  assert.equal(bad.kind, 'error');
  assert.match(bad.message, /score-cam-channels must be a whole number/);
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
  await page.close();
});

test('workers="2" splits Score-CAM across two workers with the same map; a bad value is a clear error', async () => {
  const { page, errors } = await openPage();
  const attrs = { loading: 'eager', src: SRC, model: MODEL, method: 'scorecam', 'score-cam-channels': '64' };
  await addElement(page, 'one', attrs);
  await waitEvents(page, 'one', 1);
  await addElement(page, 'two', { ...attrs, workers: '2' });
  await waitEvents(page, 'two', 1);
  const out = await page.evaluate(() => {
    const [one, two] = ['one', 'two'].map((id) => document.getElementById(id));
    const bits = (el) => Array.from(new Uint32Array(Float32Array.from(el.result.heatmap).buffer)).join(',');
    return { workers: [one._client.model.workers, two._client.model.workers], separate: one._client !== two._client, same: bits(one) === bits(two) };
  });
  console.log('# workers attribute:', JSON.stringify(out));
  assert.deepEqual((await events(page, 'two')).map((e) => e.kind), ['result']);
  assert.deepEqual(out.workers, [1, 2]);
  assert.ok(out.separate, 'another workers count means another client');
  assert.ok(out.same, 'the map of two workers is bitwise that of one');
  await page.evaluate(() => document.getElementById('two').setAttribute('workers', 'lots'));
  await waitEvents(page, 'two', 2);
  const bad = (await events(page, 'two'))[1];
  assert.equal(bad.kind, 'error');
  assert.match(bad.message, /workers must be 'auto' or a whole number/);
  assert.deepEqual(errors.filter((e) => !/favicon|workers must be/.test(e)), []);
  await page.close();
});
