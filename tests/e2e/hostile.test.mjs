// Issue 14's hostile inputs in the browser, on one wasm instance: images of extreme shape and a
// weight file whose key names carry huge numbers. Each gives a map or a clear Error within 5 s,
// WebAssembly.Memory grows by a bounded amount, and the same Explainer explains chelsea.png exactly
// as before. (tests/hostile_inputs.rs covers the same classes natively, with pickles and .npy too.)
//   node --test tests/e2e/hostile.test.mjs     (part of npm run test:e2e)

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

test('extreme aspect ratios and huge indices in key names: a map or a clear error, bounded memory, the explainer unharmed', async () => {
  const page = await browser.newPage();
  const errors = recordErrors(page);
  await page.goto(new URL('tests/e2e/blank.html', server.url).href);
  const out = await page.evaluate(async () => {
    const m = await import('/pkg/gradcam_wasm.js');
    const exports = await m.default();
    const mem = () => exports.memory.buffer.byteLength;
    const model = new Uint8Array(await (await fetch('/assets/models/efficientnet-lite0.safetensors')).arrayBuffer());
    const bitmap = await createImageBitmap(await (await fetch('/assets/samples/chelsea.png')).blob());
    const ctx = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d');
    ctx.drawImage(bitmap, 0, 0);
    const chelsea = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
    const ex = new m.Explainer(model);
    const before = ex.explain(chelsea);
    const snapshot = (r) => JSON.stringify({ c: r.classIdx, p: r.probability, raw: Array.from(r.raw) });
    const first = snapshot(before);
    const base = mem();

    // A striped image of the given shape (content, so a map has something to show).
    const strip = (w, h) => {
      const data = new Uint8ClampedArray(4 * w * h);
      for (let i = 0; i < w * h; i++) data.set([(i * 7) % 256, (i * 13) % 256, (i * 29) % 256, 255], 4 * i);
      return new ImageData(data, w, h);
    };
    // The default model with one more key whose layer index is 4e9: the builder must not loop to it.
    const headerLen = Number(new DataView(model.buffer, model.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(model.subarray(8, 8 + headerLen)));
    const end = Math.max(...Object.values(header).filter((t) => t.data_offsets).map((t) => t.data_offsets[1]));
    header['_blocks.4000000000._depthwise_conv.weight'] = { dtype: 'F16', shape: [1], data_offsets: [end, end + 2] };
    const json = new TextEncoder().encode(JSON.stringify(header));
    const data = model.subarray(8 + headerLen);
    const huge = new Uint8Array(8 + json.length + data.length + 2);
    new DataView(huge.buffer).setBigUint64(0, BigInt(json.length), true);
    huge.set(json, 8);
    huge.set(data, 8 + json.length);

    const cases = {
      'image 30000 x 1': () => ex.explain(strip(30000, 1)),
      'image 1 x 30000': () => ex.explain(strip(1, 30000)),
      'image 20000 x 3': () => ex.explain(strip(20000, 3)),
      'weights: a key with layer index 4000000000': () => new m.Explainer(huge),
    };
    const results = {};
    for (const [name, f] of Object.entries(cases)) {
      const t0 = performance.now();
      try {
        const r = f();
        results[name] = { ok: true, detail: r.width ? `map ${r.width}x${r.height}, class ${r.classIdx}` : 'loaded' };
        if (r.free) r.free();
      } catch (e) {
        results[name] = { ok: false, isError: e instanceof Error, detail: String(e && e.message) };
      }
      results[name].ms = performance.now() - t0;
      results[name].growthMiB = (mem() - base) / 1048576;
    }
    const after = snapshot(ex.explain(chelsea));
    return { results, same: after === first, baseMiB: base / 1048576 };
  });
  console.log(JSON.stringify(out, null, 2));
  for (const [name, r] of Object.entries(out.results)) {
    assert.ok(r.ms < 5000, `${name}: ${r.ms} ms`);
    assert.ok(r.growthMiB < 64, `${name}: wasm memory grew by ${r.growthMiB} MiB`);
    if (!r.ok) assert.ok(r.isError && r.detail.length > 20, `${name}: a clear Error, got ${r.detail}`);
  }
  for (const shape of ['image 30000 x 1', 'image 1 x 30000', 'image 20000 x 3']) {
    assert.ok(out.results[shape].ok, `${shape}: preprocessing only the crop the network sees, any aspect ratio works: ${out.results[shape].detail}`);
  }
  const key = out.results['weights: a key with layer index 4000000000'];
  assert.ok(!key.ok && /4000000000/.test(key.detail), `the huge index is named: ${key.detail}`);
  assert.ok(out.same, 'the explainer gives the same chelsea.png explanation afterwards');
  assert.deepEqual(errors, []);
});
