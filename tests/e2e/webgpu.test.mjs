// The demo page on the WebGPU backend, in headless Chromium whose only adapter is SwiftShader:
//   ?backend=webgpu  explains on WebGPU and says so under the result ("GPU · WebGPU");
//   no parameter     ('auto') declines the software adapter, explains on the CPU and says why.
// Both give the same top-5 for the start-up sample.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recordErrors, serveAndBrowse } from './harness.mjs';

const env = serveAndBrowse();

/** Opens the demo with `query`, waits for the start-up sample's explanation; returns what it shows. */
async function shown(query) {
  const page = await env.browser.newPage();
  const errors = recordErrors(page);
  try {
    await page.goto(env.server.url + query);
    // SwiftShader runs the network in software: give the first explanation time.
    await page.waitForSelector('#top5 li[data-class]', { timeout: 120000 });
    await page.waitForFunction(() => document.querySelector('#backend').textContent.trim() !== '', null, { timeout: 120000 });
    const top5 = await page.$$eval('#top5 li[data-class]', (lis) => lis.map((li) => Number(li.dataset.class)));
    const backend = (await page.textContent('#backend')).trim();
    const why = await page.getAttribute('#backend', 'title');
    const timing = (await page.textContent('#timing')).trim();
    return { top5, backend, why, timing, errors: errors.filter((e) => !/WebGPU/.test(e)) };
  } finally {
    await page.close();
  }
}

test('?backend=webgpu explains on WebGPU, auto declines SwiftShader, same classes', { timeout: 300000 }, async () => {
  const gpu = await shown('?backend=webgpu');
  const auto = await shown('');
  console.log(`webgpu: ${gpu.backend} (${gpu.why}); ${gpu.timing}`);
  console.log(`auto:   ${auto.backend} (${auto.why}); ${auto.timing}`);
  assert.equal(gpu.backend, 'GPU · WebGPU');
  assert.match(gpu.why, /WebGPU on/);
  assert.equal(auto.backend, 'CPU · WebAssembly');
  assert.match(auto.why, /software renderer/);
  assert.deepEqual(gpu.top5, auto.top5, 'both backends rank the same classes');
  assert.deepEqual(gpu.errors, [], 'no page errors on WebGPU');
  assert.deepEqual(auto.errors, [], 'no page errors on the CPU');
});
