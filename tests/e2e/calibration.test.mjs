// The 'auto' backend's calibration (issue 17) in headless Chromium, whose only WebGPU adapter is
// SwiftShader (software). By default 'auto' declines a software adapter unmeasured; `calibrate: true`
// makes it time one Grad-CAM on each backend and keep the faster, as it does by default on hardware
// adapters. The worker keeps the measurement per model and adapter (Cache API), so the next load in a
// fresh worker reuses it instead of measuring again; a kept record that no longer parses is replaced.
//   node --test tests/e2e/calibration.test.mjs     (part of npm run test:e2e; needs pkg/ and the model)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recordErrors, serveAndBrowse } from './harness.mjs';

const env = serveAndBrowse();
let page; // one page for all tests: its origin's Cache API holds the kept calibrations
let errors;

async function openPage() {
  if (page) return page;
  page = await env.browser.newPage();
  errors = recordErrors(page);
  await page.goto(new URL('tests/e2e/blank.html', env.server.url).href);
  return page;
}

/** Loads the default model in a fresh client (a fresh worker) and explains chelsea.png once. */
async function loadAndExplain(loadOptions) {
  return (await openPage()).evaluate(async (loadOptions) => {
    const { GradcamClient, toImageData } = await import('/www/gradcam-client.js');
    const client = new GradcamClient();
    try {
      const info = await client.load('/assets/models/efficientnet-lite0.safetensors', loadOptions);
      const r = await client.explain(await toImageData('/assets/samples/chelsea.png'), null, { method: 'gradcam' });
      return { backend: info.backend, classIdx: r.classIdx };
    } finally {
      client.terminate();
    }
  }, loadOptions);
}

test("'auto' declines SwiftShader unmeasured unless asked to calibrate", { timeout: 300000 }, async () => {
  const plain = await loadAndExplain({});
  assert.equal(plain.backend.backend, 'cpu');
  assert.equal(plain.backend.calibration, null);
  assert.match(plain.backend.note, /software renderer/);
  assert.ok([281, 282, 285].includes(plain.classIdx), 'a cat');
});

test('calibrate: true times both backends, keeps the faster, and a fresh worker reuses the measurement', { timeout: 300000 }, async () => {
  await (await openPage()).evaluate(() => caches.delete('gradcam-calibration-v1'));
  const first = await loadAndExplain({ calibrate: true });
  const c = first.backend.calibration;
  console.log(`calibration on ${c.adapter}: CPU ${c.cpuMs.toFixed(0)} ms, WebGPU ${c.webgpuMs?.toFixed(0)} ms -> ${c.chose}`);
  assert.equal(first.backend.software, true);
  assert.equal(c.cached, false, 'measured by this load');
  assert.ok(c.cpuMs > 0 && Number.isFinite(c.cpuMs), `cpuMs ${c.cpuMs}`);
  assert.ok(c.webgpuMs > 0, `webgpuMs ${c.webgpuMs}`);
  assert.equal(c.chose, c.webgpuMs < c.cpuMs ? 'webgpu' : 'cpu', 'the faster backend');
  assert.equal(first.backend.backend, c.chose, 'and it runs');
  assert.match(first.backend.note, /one Grad-CAM took \d+ ms on the CPU, \d+ ms on WebGPU/);
  assert.ok([281, 282, 285].includes(first.classIdx));

  const again = await loadAndExplain({ calibrate: true });
  assert.deepEqual(again.backend.calibration, { ...c, cached: true }, 'the kept measurement, not a new one');
  assert.equal(again.backend.backend, c.chose);
  assert.match(again.backend.note, /measured by an earlier load/);
  assert.equal(again.classIdx, first.classIdx);
});

test('a kept calibration that no longer parses is measured again, and the load still works', { timeout: 300000 }, async () => {
  // Overwrite every kept record for this model with one the Explainer refuses.
  await (await openPage()).evaluate(async () => {
    const cache = await caches.open('gradcam-calibration-v1');
    for (const key of await cache.keys()) await cache.put(key, new Response(JSON.stringify([{ adapter: 5, chose: 'gpu' }])));
  });
  const r = await loadAndExplain({ calibrate: true });
  assert.equal(r.backend.calibration.cached, false, 'measured afresh');
  assert.ok([281, 282, 285].includes(r.classIdx));
  const kept = await (await openPage()).evaluate(async () => {
    const cache = await caches.open('gradcam-calibration-v1');
    const keys = await cache.keys();
    return keys.length === 1 ? (await cache.match(keys[0])).json() : null;
  });
  assert.equal(kept.length, 1, 'the bad record was replaced');
  assert.equal(typeof kept[0].adapter, 'string');
  assert.deepEqual(errors, []);
});
