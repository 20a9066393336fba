// Issue 14's hostile inputs in the browser, on one wasm instance: images of extreme shape, a
// weight file whose key names carry huge numbers, and a pickle that repeats a large object through
// its memo. Each gives a map or a clear Error within 5 s,
// WebAssembly.Memory grows by a bounded amount, and the same Explainer explains chelsea.png exactly
// as before. (tests/hostile_inputs.rs covers the same classes natively, and .npy headers, which
// only the native CLI reads.)
//   node --test tests/e2e/hostile.test.mjs     (part of npm run test:e2e)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recordErrors, serveAndBrowse } from './harness.mjs';

const env = serveAndBrowse();

test('extreme aspect ratios, huge indices in key names, a pickle memo bomb, a cumulative budget: a map or a clear error, bounded memory, the explainer unharmed', async () => {
  const page = await env.browser.newPage();
  const errors = recordErrors(page);
  await page.goto(new URL('tests/e2e/blank.html', env.server.url).href);
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

    // A legacy torch.save file whose pickle names a 1 MB key, then sets it 65536 more times through
    // the memo (5 bytes each): 64 GB if every reference were copied (tests/hostile_inputs.rs builds
    // the same bytes natively).
    const memoBomb = (keyLen, repeats) => {
      const bytes = [];
      const op = (...b) => { for (const x of b) bytes.push(x); };
      const ascii = (t) => { for (const x of new TextEncoder().encode(t)) bytes.push(x); };
      const u32 = (v) => op(v & 255, (v >>> 8) & 255, (v >>> 16) & 255, (v >>> 24) & 255);
      const str = (t) => { op(0x58); u32(t.length); ascii(t); }; // BINUNICODE
      const int = (v) => { op(0x4a); u32(v); }; // BININT
      const global = (mod, name) => { op(0x63); ascii(`${mod}\n${name}\n`); };
      op(0x80, 2); global('collections', 'OrderedDict'); ascii(')R');
      str('k'.repeat(keyLen)); ascii('q'); op(0);
      global('torch._utils', '_rebuild_tensor_v2'); ascii('(');
      ascii('('); str('storage'); global('torch', 'FloatStorage'); str('0'); str('cpu'); int(1); ascii('NtQ');
      int(0); ascii('('); int(1); ascii('t'); ascii('('); int(1); ascii('t'); op(0x89); ascii('N'); ascii('tR');
      ascii('q'); op(1); ascii('s');
      for (let i = 0; i < repeats; i++) op(0x68, 0, 0x68, 1, 0x73); // BINGET 0, BINGET 1, SETITEM
      ascii('.');
      const pickle = new Uint8Array(bytes.length);
      pickle.set(bytes);
      const magic = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
      const keys = [0x80, 2, 0x5d, 0x28, 0x58, 1, 0, 0, 0, 0x30, 0x65, 0x2e]; // ['0']
      const prefix = [0x80, 2, 0x8a, 10, ...magic, 0x2e, 0x80, 2, 0x4d, 0xe9, 3, 0x2e, 0x80, 2, 0x7d, 0x2e];
      const tail = [...keys, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x3f]; // one storage of one f32 1.0
      const file = new Uint8Array(prefix.length + pickle.length + tail.length);
      file.set(prefix);
      file.set(pickle, prefix.length);
      file.set(tail, prefix.length + pickle.length);
      return file;
    };
    const bomb = memoBomb(1 << 20, 65536);

    const cases = {
      'image 30000 x 1': () => ex.explain(strip(30000, 1)),
      'image 1 x 30000': () => ex.explain(strip(1, 30000)),
      'image 20000 x 3': () => ex.explain(strip(20000, 3)),
      'weights: a key with layer index 4000000000': () => new m.Explainer(huge),
      'legacy .pth: a 1 MB key referenced 65536 times': () => new m.Explainer(bomb),
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
    // One explanation's allocations count together (memoryBudgetMiB): Score-CAM's batch of 64 masked
    // inputs (37 MiB, within its own 64 MiB cap) on top of the forward's layer outputs (51 MiB) does
    // not fit in 67 MiB and is refused before it exists; a batch of 4 then fits.
    const tight = new m.Explainer(model, { memoryBudgetMiB: 67 });
    const budget = {};
    const scoreCam = (batch) => ({ method: 'scorecam', scoreCamChannels: 64, scoreCamBatch: batch });
    try {
      tight.explain(chelsea, undefined, scoreCam(64));
      budget.big = 'explained';
    } catch (e) {
      budget.big = String(e && e.message);
      budget.bigIsError = e instanceof Error;
    }
    budget.small = tight.explain(chelsea, undefined, scoreCam(4)).classIdx;
    tight.free();
    results.budget = budget;
    const after = snapshot(ex.explain(chelsea));
    return { results, same: after === first, baseMiB: base / 1048576 };
  });
  console.log(JSON.stringify(out, null, 2));
  const { budget } = out.results;
  delete out.results.budget;
  assert.ok(budget.bigIsError && /would need 37 MiB for Score-CAM's batch of 64 masked inputs/.test(budget.big) && /memory budget of 67 MiB/.test(budget.big), `a clear Error: ${budget.big}`);
  assert.equal(budget.small, 282, 'a smaller batch fits the same budget');
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
  const memo = out.results['legacy .pth: a 1 MB key referenced 65536 times'];
  assert.ok(!memo.ok && /16 MiB/.test(memo.detail) && /legacy/.test(memo.detail), `the memo references are charged: ${memo.detail}`);
  assert.ok(out.same, 'the explainer gives the same chelsea.png explanation afterwards');
  assert.deepEqual(errors, []);
});
