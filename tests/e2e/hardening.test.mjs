// Hostile and broken input, memory, concurrency (issue 6), in headless Chromium:
//   node --test tests/e2e/hardening.test.mjs     (part of npm run test:e2e)
// Needs pkg/ (scripts/build-web.sh) and assets/ (scripts/setup.sh).
//
// The module-level tests run the real pkg/ module on an empty page (tests/e2e/blank.html) through
// page.evaluate: one wasm instance per page, so every figure below belongs to one instance.
// The last group drives the webpack-built page (dist/, rebuilt when older than pkg/ or www/) under
// the strict CSP, then with its service worker (www/sw.js) offline.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, artifactsDir, installResultLog, launchBrowser, logLength, recordErrors, recordRequests, startServer, waitForLog } from './harness.mjs';

const CAT_CLASSES = [281, 282, 285]; // tabby, tiger cat, Egyptian cat: a near tie on chelsea.png
const ESPRESSO = 967;
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; base-uri 'none'; frame-ancestors 'self'";

let server;
let browser;

before(async () => {
  for (const f of ['pkg/gradcam_wasm.js', 'pkg/gradcam_wasm_bg.wasm', 'assets/models/efficientnet-lite0.safetensors', 'assets/samples/chelsea.png']) {
    if (!existsSync(join(REPO, f))) throw new Error(`missing ${f}: run scripts/setup.sh (assets) and scripts/build-web.sh (pkg) first`);
  }
  artifactsDir();
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

/**
 * A fresh page with one instance of the wasm module and, on `window.T`: the module `m`, `mem()`
 * (its WebAssembly.Memory size in bytes), the default model's bytes and the samples as ImageData.
 */
async function modulePage() {
  const page = await browser.newPage();
  const errors = recordErrors(page);
  await page.goto(new URL('tests/e2e/blank.html', server.url).href);
  await page.evaluate(async () => {
    const m = await import('/pkg/gradcam_wasm.js');
    const exports = await m.default();
    const image = async (name) => {
      const bitmap = await createImageBitmap(await (await fetch(`/assets/samples/${name}`)).blob());
      const ctx = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d');
      ctx.drawImage(bitmap, 0, 0);
      return ctx.getImageData(0, 0, bitmap.width, bitmap.height);
    };
    const names = ['chelsea.png', 'coffee.png', 'rocket.jpg', 'astronaut.png', 'camera.png', 'coins.png', 'motorcycle_left.png'];
    window.T = {
      m,
      mem: () => exports.memory.buffer.byteLength,
      model: new Uint8Array(await (await fetch('/assets/models/efficientnet-lite0.safetensors')).arrayBuffer()),
      images: Object.fromEntries(await Promise.all(names.map(async (n) => [n, await image(n)]))),
    };
  });
  return { page, errors };
}

describe('one wasm module instance', () => {
  test('every bad call is a JS Error with a helpful message; then chelsea.png is explained exactly as before', async () => {
    const { page, errors } = await modulePage();
    const out = await page.evaluate(async () => {
      const { m, model, images } = window.T;
      const chelsea = images['chelsea.png'];
      const snapshot = (r) => ({ classIdx: r.classIdx, label: r.label, probability: r.probability, top5: r.top5, raw: Array.from(r.raw), width: r.width, height: r.height });
      const ex = new m.Explainer(model);
      const first = snapshot(ex.explain(chelsea));

      // A safetensors file: 8-byte little-endian header length, the JSON header, the data.
      const safetensors = (header, data = new Uint8Array(0)) => {
        const json = new TextEncoder().encode(JSON.stringify(header));
        const out = new Uint8Array(8 + json.length + data.length);
        new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
        out.set(json, 8);
        out.set(data, 8 + json.length);
        return out;
      };
      const headerLen = Number(new DataView(model.buffer, model.byteOffset).getBigUint64(0, true));
      const header = JSON.parse(new TextDecoder().decode(model.subarray(8, 8 + headerLen)));
      const edited = (f) => {
        const copy = model.slice();
        f(copy);
        return copy;
      };
      // The stem's first weight set to an f16 NaN (0x7e00).
      const stem = header['_conv_stem.weight'];
      const nanModel = edited((b) => b.set([0x00, 0x7e], 8 + headerLen + stem.data_offsets[0]));
      // The stem's shape edited in place ([32,3,3,3] -> [32,3,3,4]): the header no longer adds up.
      const headerText = new TextDecoder().decode(model.subarray(8, 8 + headerLen));
      const shapeAt = headerText.indexOf('[32,3,3,3]');
      const badShape = edited((b) => b.set(new TextEncoder().encode('[32,3,3,4]'), 8 + shapeAt));
      // A 2 GB tensor promised by a 100-byte file.
      let huge = safetensors({ w: { dtype: 'F32', shape: [536870912], data_offsets: [0, 2147483648] } });
      huge = safetensors({ w: { dtype: 'F32', shape: [536870912], data_offsets: [0, 2147483648] } }, new Uint8Array(100 - huge.length));
      // Weights of an architecture this crate does not know (a ViT's key names).
      const vit = safetensors(
        {
          'conv_proj.weight': { dtype: 'F32', shape: [4, 3, 2, 2], data_offsets: [0, 192] },
          'encoder.layers.encoder_layer_0.ln_1.weight': { dtype: 'F32', shape: [4], data_offsets: [192, 208] },
          'heads.head.weight': { dtype: 'F32', shape: [10, 4], data_offsets: [208, 368] },
        },
        new Uint8Array(368),
      );
      const headerLength = (n) => edited((b) => new DataView(b.buffer).setBigUint64(0, n, true));

      const bytes = (w, h, n) => ({ width: w, height: h, data: new Uint8ClampedArray(n) });
      const image = (w, h) => bytes(w, h, 4 * w * h);
      const img = image(32, 32);
      const cases = {
        // models
        'model: empty': () => new m.Explainer(new Uint8Array(0)),
        'model: a string': () => new m.Explainer('model.safetensors'),
        'model: text': () => new m.Explainer(new TextEncoder().encode('not a model at all')),
        'model: truncated to half': () => new m.Explainer(model.subarray(0, model.length >> 1)),
        'model: truncated inside the header': () => new m.Explainer(model.subarray(0, 100)),
        'model: header bytes overwritten': () => new m.Explainer(edited((b) => b.fill(0xff, 8, 40))),
        'model: a shape edited in the header': () => new m.Explainer(badShape),
        'model: header length 2^60': () => new m.Explainer(headerLength(2n ** 60n)),
        'model: 2 GB tensor in 100 bytes': () => new m.Explainer(huge),
        'model: NaN weight': () => new m.Explainer(nanModel),
        'model: another architecture (ViT keys)': () => new m.Explainer(vit),
        'model: EfficientNet weights as resnet18': () => new m.Explainer(model, { arch: 'resnet18' }),
        'model: unknown arch': () => new m.Explainer(model, { arch: 'resnet1000' }),
        'model: unknown backend': () => new m.Explainer(model, { backend: 'quantum' }),
        'model: unknown backend (create)': () => m.Explainer.create(model, { backend: 'quantum' }),
        'model: unknown option': () => new m.Explainer(model, { archh: 'resnet18' }),
        // images
        'image: 0x0': () => ex.explain(image(0, 0)),
        'image: data length 7 for 10x10': () => ex.explain(bytes(10, 10, 7)),
        'image: data length 16 for 20000x20000': () => ex.explain(bytes(20000, 20000, 16)),
        'image: (2^32-1) x (2^32-1)': () => ex.explain(bytes(2 ** 32 - 1, 2 ** 32 - 1, 16)),
        'image: width 2^32': () => ex.explain(bytes(2 ** 32, 1, 16)),
        'image: negative width': () => ex.explain(bytes(-4, 4, 64)),
        'image: fractional height': () => ex.explain(bytes(4, 2.5, 40)),
        'image: width as a string': () => ex.explain({ width: '4', height: 4, data: new Uint8ClampedArray(64) }),
        'image: data as an array': () => ex.explain({ width: 1, height: 1, data: [1, 2, 3, 4] }),
        'image: null': () => ex.explain(null),
        // classes
        'class: 1000': () => ex.explain(img, 1000),
        'class: -1': () => ex.explain(img, -1),
        'class: 1.5': () => ex.explain(img, 1.5),
        'class: NaN': () => ex.explain(img, NaN),
        'class: Infinity': () => ex.explain(img, Infinity),
        'class: "cat"': () => ex.explain(img, 'cat'),
        // options
        'option: unknown layer': () => ex.explain(img, undefined, { layer: '_blocks.99' }),
        'option: unknown method': () => ex.explain(img, undefined, { method: 'gradkam' }),
        'option: unknown colormap': () => ex.explain(img, undefined, { colormap: 'rainbow' }),
        'option: backend is no explain option': () => ex.explain(img, undefined, { backend: 'cpu' }),
        'option: alpha 2': () => ex.explain(img, undefined, { alpha: 2 }),
        'option: scoreCamChannels 0': () => ex.explain(img, undefined, { method: 'scorecam', scoreCamChannels: 0 }),
        'option: options is a string': () => ex.explain(img, undefined, 'gradcam'),
        'explainAsync: unknown method': () => ex.explainAsync(img, undefined, { method: 'gradkam' }),
        'explainAsync: class 1000': () => ex.explainAsync(img, 1000),
        'overlay: another size than explained': () => ex.overlay(image(8, 8)),
        'predict: k 0': () => ex.predict(img, 0),
      };
      const outcomes = {};
      for (const [name, f] of Object.entries(cases)) {
        try {
          const r = await f();
          outcomes[name] = { threw: false, what: r && typeof r === 'object' ? Object.keys(r).slice(0, 4).join(',') : String(r) };
          if (r && typeof r.free === 'function') r.free();
        } catch (e) {
          outcomes[name] = { threw: true, isError: e instanceof Error, ctor: e && e.constructor && e.constructor.name, message: String(e && e.message) };
        }
      }

      // Valid edge cases: the smallest image, and one above the documented 16-megapixel limit,
      // which is reduced on the way in (20000 / 5 = 4000: 16,000,000 pixels fit).
      const tiny = ex.explain(image(1, 1));
      const big = bytes(20000, 20000, 0);
      big.data = new Uint8ClampedArray(4 * 20000 * 20000).fill(128);
      const t0 = performance.now();
      const huge20k = ex.explain(big);
      const hugeMs = performance.now() - t0;
      big.data = null;

      const lastResult = ex.explain(chelsea);
      const last = snapshot(lastResult);
      // The result's own overlay() draws what explainer.overlay(image, result) draws (each in its own
      // pixels, not in wasm memory), until its heatmap is moved away.
      const own = lastResult.overlay({ colormap: 'viridis', alpha: 0.4 }).data;
      const viaExplainer = ex.overlay(chelsea, lastResult, { colormap: 'viridis', alpha: 0.4 }).data;
      const overlaySame = own.length === 4 * chelsea.width * chelsea.height && own.every((v, i) => v === viaExplainer[i]);
      structuredClone(lastResult.heatmap, { transfer: [lastResult.heatmap.buffer] });
      let detached = '';
      try {
        lastResult.overlay();
      } catch (e) {
        detached = `${e.constructor.name}: ${e.message}`;
      }
      const fresh = new m.Explainer(model);
      const control = snapshot(fresh.explain(chelsea));
      fresh.free();
      ex.free();
      return {
        outcomes,
        first,
        last,
        control,
        overlaySame,
        detached,
        tiny: { width: tiny.width, height: tiny.height, heat: tiny.heatmap.length },
        huge: { width: huge20k.width, height: huge20k.height, heat: huge20k.heatmap.length, ms: hugeMs, memMB: window.T.mem() / 2 ** 20 },
      };
    });

    // What each message must say: enough to know what to fix.
    const want = {
      'model: empty': ['empty'],
      'model: a string': ['Uint8Array'],
      'model: text': ['not a safetensors file'],
      'model: truncated to half': ['truncated', 'holds only'],
      'model: truncated inside the header': ['truncated', 'only 92 bytes'],
      'model: header bytes overwritten': ['header', 'corrupt'],
      'model: a shape edited in the header': ['_conv_stem.weight', 'corrupt'],
      'model: header length 2^60': ['header length', 'truncated'],
      'model: 2 GB tensor in 100 bytes': ["tensor 'w'", '2147483648', 'holds only'],
      'model: NaN weight': ['_conv_stem.weight', 'non-finite'],
      'model: another architecture (ViT keys)': ['cannot tell the architecture', 'conv_proj.weight'],
      'model: EfficientNet weights as resnet18': ["missing tensor 'conv1.weight'", 'resnet18'],
      'model: unknown arch': ['resnet1000'],
      'model: unknown backend': ["unknown backend 'quantum'", 'auto, cpu, webgpu'],
      'model: unknown backend (create)': ["unknown backend 'quantum'", 'auto, cpu, webgpu'],
      'model: unknown option': ["'archh'", 'arch'],
      'image: 0x0': ['zero size'],
      'image: data length 7 for 10x10': ['expected 400', 'got 7'],
      'image: data length 16 for 20000x20000': ['length mismatch', 'got 16'],
      'image: (2^32-1) x (2^32-1)': ['length mismatch', 'expected 73786976260478468100 bytes', 'got 16'],
      'image: width 2^32': ['out of range'],
      'image: negative width': ['imageData.width', 'negative'],
      'image: fractional height': ['imageData.height', 'integer'],
      'image: width as a string': ['imageData.width', 'number'],
      'image: data as an array': ['Uint8ClampedArray'],
      'image: null': ['ImageData'],
      'class: 1000': ['out of range', '1000 classes'],
      'class: -1': ['negative'],
      'class: 1.5': ['integer'],
      'class: NaN': ['integer'],
      'class: Infinity': ['integer'],
      'class: "cat"': ["'cat' is not a class index"],
      'option: unknown layer': ['_blocks.99'],
      'option: unknown method': ["'gradkam'"],
      'option: unknown colormap': ["'rainbow'"],
      'option: backend is no explain option': ["unknown explain option 'backend'"],
      'option: alpha 2': ['alpha'],
      'option: scoreCamChannels 0': ['scoreCamChannels'],
      'option: options is a string': ['must be an object'],
      'explainAsync: unknown method': ["'gradkam'"],
      'explainAsync: class 1000': ['out of range'],
      'overlay: another size than explained': ['8x8', 'overlay the image that was explained'],
      'predict: k 0': ['at least 1'],
    };
    const rows = Object.entries(out.outcomes).map(([name, o]) => `#   ${name.padEnd(42)} ${o.threw ? `${o.ctor}: ${o.message}` : `RETURNED ${o.what}`}`);
    console.log(`# ${rows.length} bad calls in one module instance:\n${rows.join('\n')}`);
    for (const [name, o] of Object.entries(out.outcomes)) {
      assert.ok(o.threw, `${name}: should throw, returned ${o.what}`);
      assert.ok(o.isError && o.ctor === 'Error', `${name}: should throw a plain Error (no wasm trap), got ${o.ctor}: ${o.message}`);
      assert.ok(o.message.length >= 15, `${name}: the message is too short to help: "${o.message}"`);
      assert.ok(!/panicked|unreachable|RuntimeError/.test(o.message), `${name}: a panic reached JS: ${o.message}`);
      for (const s of want[name] ?? assert.fail(`no expectation for ${name}`)) assert.ok(o.message.includes(s), `${name}: "${o.message}" should mention "${s}"`);
    }
    assert.deepEqual(Object.keys(want).sort(), Object.keys(out.outcomes).sort());

    console.log(`# 1x1 image: heatmap ${out.tiny.width}x${out.tiny.height}; 20000x20000 image: reduced to ${out.huge.width}x${out.huge.height} in ${Math.round(out.huge.ms)} ms, wasm memory now ${out.huge.memMB.toFixed(1)} MB`);
    assert.deepEqual([out.tiny.width, out.tiny.height, out.tiny.heat], [1, 1, 1]);
    assert.deepEqual([out.huge.width, out.huge.height, out.huge.heat], [4000, 4000, 4000 * 4000]);

    // An ImageData that aliased wasm memory would show the second call's pixels (or garbage) here.
    assert.ok(out.overlaySame, 'result.overlay() should equal explainer.overlay(image, result) made after it');
    assert.match(out.detached, /^Error: .*heatmap was transferred/, 'overlay() of a result whose heatmap was transferred');
    // The same instance still explains the real photo, and exactly as before the bad calls.
    console.log(`# chelsea.png after ${rows.length} bad calls: ${out.last.classIdx} ${out.last.label} p ${out.last.probability.toFixed(3)}; top-5 ${out.last.top5.map((p) => p.classIdx)}`);
    assert.ok(CAT_CLASSES.includes(out.last.classIdx), `top-1 of chelsea.png should be a cat (281/282/285), got ${out.last.classIdx} ${out.last.label}`);
    assert.equal(out.last.classIdx, 282, 'top-1 should be 282 tiger cat, as natively');
    assert.equal(out.last.label, 'tiger cat');
    for (const other of [out.first, out.control]) {
      assert.deepEqual(out.last.top5.map((p) => p.classIdx), other.top5.map((p) => p.classIdx));
      const dl = Math.max(...out.last.top5.map((p, i) => Math.abs(p.logit - other.top5[i].logit)));
      const dm = Math.max(...out.last.raw.map((v, i) => Math.abs(v - other.raw[i])));
      assert.ok(dl <= 1e-6 && dm <= 1e-6, `the result changed after the bad calls: logits by ${dl}, raw map by ${dm}`);
    }
    assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), [], 'the page logged errors (a panic prints one)');
    await page.close();
  });

  test('memory: 100 explanations in a row and 20 model replacements do not grow wasm memory', async () => {
    const { page, errors } = await modulePage();
    const out = await page.evaluate(async () => {
      const { m, mem, model, images } = window.T;
      const MB = () => mem() / 2 ** 20;
      const figures = { init: MB() };
      let ex = new m.Explainer(model);
      figures.model = MB();
      // No await between calls that could let a GC or a finalizer run: results that are never
      // freed must cost no wasm memory by themselves. Odd calls sync, even ones explainAsync
      // (the worker's path); the 7 samples have 7 sizes.
      const samples = Object.values(images);
      const after = {};
      const t0 = performance.now();
      for (let i = 1; i <= 100; i++) {
        const img = samples[i % samples.length];
        const r = i % 2 ? ex.explain(img) : await ex.explainAsync(img);
        if (!(r.heatmap.length === img.width * img.height)) throw new Error(`image ${i}: bad heatmap`);
        if ([1, 2, 3, 5, 10, 20, 50, 100].includes(i)) after[i] = MB();
      }
      const msPerImage = (performance.now() - t0) / 100;
      // Replacing the model as the worker does: the new one is built, then the old one freed.
      const replaced = [];
      for (let k = 1; k <= 20; k++) {
        const next = await m.Explainer.create(model, { backend: 'auto' });
        ex.free();
        ex = next;
        ex.explain(images['chelsea.png']);
        replaced.push(MB());
      }
      ex.free();
      return { figures, after, msPerImage, replaced, modelF32MB: (4652008 * 4) / 2 ** 20, modelFileMB: model.length / 2 ** 20 };
    });
    const f = (x) => x.toFixed(1);
    console.log(`# wasm memory: ${f(out.figures.init)} MB at start, ${f(out.figures.model)} MB with the model; after images ${Object.entries(out.after).map(([i, v]) => `${i}: ${f(v)}`).join(', ')} MB (${f(out.msPerImage)} ms per image)`);
    console.log(`# wasm memory after each of 20 model replacements: ${out.replaced.map(f).join(', ')} MB (the model is ${f(out.modelF32MB)} MB as f32)`);
    // Memory never shrinks, but it must stop growing once every image size has been seen.
    assert.ok(out.after[100] - out.after[10] <= 4, `wasm memory grew from ${f(out.after[10])} MB after 10 images to ${f(out.after[100])} MB after 100`);
    assert.ok(out.after[100] - out.figures.model <= 32, `100 explanations took ${f(out.after[100] - out.figures.model)} MB on top of the model`);
    // A model that is not freed would add 17.7 MB per replacement (265 MB from the 5th to the 20th),
    // a leak of 1 MB each 15 MB; allocator fragmentation costs a 5 MB step now and then (measured:
    // 40 replacements plateau at 73.6 MB).
    const late = Math.max(...out.replaced);
    assert.ok(out.replaced[19] - out.replaced[4] <= 10, `model replacements keep growing wasm memory: ${out.replaced.map(f).join(', ')} MB`);
    // During a swap the new model (as f32) and its file's bytes live next to the old model, and the new
    // model's first explanation needs its working set (candle's tape of the recorded forward, measured
    // above as what 100 explanations took on top of the model) where the old model's holes may not fit it.
    const swap = out.modelF32MB + out.modelFileMB;
    const workingSet = out.after[100] - out.figures.model;
    assert.ok(late - out.after[100] <= swap + workingSet + 12, `20 replacements took ${f(late - out.after[100])} MB more than one model, more than a swap needs (${f(swap)} MB + a working set of ${f(workingSet)} MB)`);
    assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), [], 'the page logged errors');
    await page.close();
  });
});

describe('two explainers in two Web Workers at once', () => {
  test('give the same top-5 logits and raw maps as one alone (within 1e-6)', async () => {
    const page = await browser.newPage();
    const errors = recordErrors(page);
    await page.goto(new URL('tests/e2e/blank.html', server.url).href);
    const out = await page.evaluate(async () => {
      const { GradcamClient } = await import('/www/gradcam-client.js');
      const image = async (name) => {
        const bitmap = await createImageBitmap(await (await fetch(`/assets/samples/${name}`)).blob());
        const ctx = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d');
        ctx.drawImage(bitmap, 0, 0);
        return ctx.getImageData(0, 0, bitmap.width, bitmap.height);
      };
      const jobs = {
        cat: [await image('chelsea.png'), { method: 'gradcam' }],
        coffee: [await image('coffee.png'), { method: 'gradcam++' }],
        rocket: [await image('rocket.jpg'), { method: 'layercam', preprocess: 'resize' }],
      };
      const model = '/assets/models/efficientnet-lite0.safetensors';
      const run = async (client, job) => {
        const t0 = performance.now();
        const r = await client.explain(jobs[job][0], null, jobs[job][1]);
        return { job, t0, t1: performance.now(), top5: r.top5.map((p) => [p.classIdx, p.logit]), raw: Array.from(r.raw) };
      };
      const start = async () => {
        const c = new GradcamClient();
        await c.load(model, { backend: 'cpu' });
        return c;
      };
      const solo = await start();
      const alone = { cat: await run(solo, 'cat'), coffee: await run(solo, 'coffee'), rocket: await run(solo, 'rocket') };
      solo.terminate();
      const [a, b] = await Promise.all([start(), start()]);
      const rounds = [];
      // Each worker's image changes every round, so every call runs its own forward pass.
      for (const [ja, jb] of [['cat', 'coffee'], ['coffee', 'cat'], ['rocket', 'rocket']]) rounds.push(await Promise.all([run(a, ja), run(b, jb)]));
      a.terminate();
      b.terminate();
      return { alone, rounds };
    });
    let worst = { logit: 0, raw: 0 };
    for (const [i, pair] of out.rounds.entries()) {
      const overlap = Math.min(pair[0].t1, pair[1].t1) - Math.max(pair[0].t0, pair[1].t0);
      const span = Math.max(pair[0].t1, pair[1].t1) - Math.min(pair[0].t0, pair[1].t0);
      console.log(`# round ${i + 1}: worker A ${pair[0].job} ${Math.round(pair[0].t1 - pair[0].t0)} ms, worker B ${pair[1].job} ${Math.round(pair[1].t1 - pair[1].t0)} ms, running together for ${Math.round(overlap)} of ${Math.round(span)} ms`);
      assert.ok(overlap > 0.5 * Math.min(pair[0].t1 - pair[0].t0, pair[1].t1 - pair[1].t0), `round ${i + 1}: the two workers did not run at the same time (overlap ${Math.round(overlap)} ms)`);
      for (const r of pair) {
        const ref = out.alone[r.job];
        assert.deepEqual(r.top5.map((p) => p[0]), ref.top5.map((p) => p[0]), `round ${i + 1}, ${r.job}: top-5 classes differ from the explainer alone`);
        assert.equal(r.raw.length, ref.raw.length);
        worst.logit = Math.max(worst.logit, ...r.top5.map((p, k) => Math.abs(p[1] - ref.top5[k][1])));
        worst.raw = Math.max(worst.raw, ...r.raw.map((v, k) => Math.abs(v - ref.raw[k])));
      }
    }
    console.log(`# alone: cat top-1 ${out.alone.cat.top5[0][0]}, coffee top-1 ${out.alone.coffee.top5[0][0]}; two workers at once vs alone: max |logit diff| ${worst.logit}, max |raw map diff| ${worst.raw}`);
    assert.ok(CAT_CLASSES.includes(out.alone.cat.top5[0][0]));
    assert.equal(out.alone.coffee.top5[0][0], ESPRESSO);
    assert.ok(worst.logit <= 1e-6 && worst.raw <= 1e-6, `two workers at once differ from one alone: logits by ${worst.logit}, raw maps by ${worst.raw}`);
    assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), [], 'the page logged errors');
    await page.close();
  });
});

/** dist/ as `npm run build:web` makes it now: rebuilt when missing or older than pkg/ or www/. */
function ensureDist() {
  const built = join(REPO, 'dist/sw.js');
  const inputs = ['pkg/gradcam_wasm_bg.wasm', 'webpack.config.js', 'index.html', ...readdirSync(join(REPO, 'www')).map((f) => `www/${f}`)];
  const stale = !existsSync(built) || inputs.some((f) => statSync(join(REPO, f)).mtimeMs > statSync(built).mtimeMs);
  if (stale) {
    console.log('# dist/ is missing or older than its sources: npm run build:web');
    execFileSync('npm', ['run', '--silent', 'build:web'], { cwd: REPO, stdio: 'ignore' });
  }
}

describe('the webpack-built page (dist/): strict CSP, then offline', () => {
  let dist;
  let context;
  let page;
  let errors;
  let requests;
  const responses = [];

  before(async () => {
    ensureDist();
    dist = await startServer({ dir: 'dist' });
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    // CSP violations of the page, recorded from before its first script runs.
    await context.addInitScript(() => {
      window.__progress = []; // every text of the task label (model download progress)
      document.addEventListener('DOMContentLoaded', () => {
        const label = document.querySelector('#progress-label');
        new MutationObserver(() => window.__progress.push(label.textContent)).observe(label, { childList: true, characterData: true, subtree: true });
      });
      window.__csp = [];
      document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`));
    });
    page = await context.newPage();
    errors = recordErrors(page);
    requests = recordRequests(context, page);
    context.on('response', (r) => responses.push(r));
  });

  after(async () => {
    await context?.close();
    await dist?.stop();
  });

  /** Waits for the model and the start-up sample's explanation and strip (the worker is idle then). */
  async function ready(what) {
    await page.waitForFunction(() => /ready in/.test(document.querySelector('#model-info').textContent), null, { timeout: 45000, polling: 100 }).catch(async () => {
      throw new Error(`${what}: the model did not load: "${await page.locator('#status').textContent()}"`);
    });
    await page.waitForSelector('.tile[data-tile="guided-gradcam"].is-ready:not(.is-pending)', { timeout: 30000 });
    await installResultLog(page);
  }

  /** Chooses a photo with #file-input, as a user does, and returns the finished result bar. */
  async function explainUserPhoto(file) {
    const from = await logLength(page);
    await page.setInputFiles('#file-input', join(REPO, 'assets/samples', file));
    const reset = await waitForLog(page, from, { title: file, hasTiming: false }, `${file} to replace the photo`);
    const entry = await waitForLog(page, reset.index + 1, { hasTiming: true, titleIncludes: '“' }, `the explanation of ${file}`);
    const top1 = await page.$eval('#top5 li[data-class]', (li) => Number(li.dataset.class));
    return { ...entry, top1 };
  }

  const workerViolations = () => Promise.all(page.workers().map((w) => w.evaluate(() => self.__csp || []).catch(() => [])));

  test('a user photo is explained end to end under the strict CSP, with no violation', async () => {
    // Workers report their own violations: listen in each as soon as it exists.
    page.on('worker', (w) => w.evaluate(() => {
      self.__csp = [];
      self.addEventListener('securitypolicyviolation', (e) => self.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI}`));
    }).catch(() => {}));
    const response = await page.goto(dist.url);
    assert.equal(response.headers()['content-security-policy'], CSP, 'the page must be served with the strict CSP header');
    await ready('first visit');
    assert.match(await page.locator('#model-info').textContent(), /downloaded, ready in/);
    // The worker's script comes with the policy too: a worker runs under its own script's CSP.
    const workerScript = responses.find((r) => r.request().resourceType() === 'script' && /\/www\/\d+\.[0-9a-f]+\.js$/.test(r.url()) && page.workers().some((w) => w.url() === r.url()));
    assert.ok(workerScript, `the worker's script response was not seen: ${page.workers().map((w) => w.url())}`);
    assert.equal(workerScript.headers()['content-security-policy'], CSP, `the worker script ${workerScript.url()} must carry the CSP header`);

    // Let the service worker finish caching the app shell before the privacy check starts.
    await page.evaluate(() => navigator.serviceWorker.ready);
    requests.phase = 'explaining';
    const r = await explainUserPhoto('coffee.png');
    console.log(`# dist/ under "${CSP}": ${r.title} (${r.sub}); ${r.timing}`);
    assert.equal(r.top1, ESPRESSO, `coffee.png should be espresso, got ${r.top1}`);
    const late = requests.during('explaining').filter((q) => !/^(blob|data):/.test(q.url));
    assert.deepEqual(late.map((q) => `${q.method} ${q.url}`), [], 'requests were made while a photo was explained');

    const inPage = await page.evaluate(() => window.__csp);
    const inWorkers = (await workerViolations()).flat();
    assert.deepEqual([...inPage, ...inWorkers], [], 'securitypolicyviolation events');
    assert.deepEqual(errors, [], 'console errors (a CSP violation logs one)');

    // The detectors work: a data: image breaks default-src 'self' and must show up in both.
    await page.evaluate(() => {
      const img = new Image();
      img.src = 'data:image/gif;base64,R0lGODlhAQABAAAAACw=';
      document.body.append(img);
    });
    await page.waitForFunction(() => window.__csp.length > 0, null, { timeout: 5000, polling: 50 });
    await page.waitForTimeout(100);
    assert.ok(errors.some((e) => /Content Security Policy/.test(e)), `a deliberate violation should log a console error: ${errors}`);
    errors.length = 0;
    await page.evaluate(() => (window.__csp.length = 0));
  });

  test('with the service worker in control, the model still downloads past it, with progress', async () => {
    assert.ok(await page.evaluate(() => Boolean(navigator.serviceWorker.controller)), 'the service worker should control the page');
    await page.evaluate(() => caches.delete('gradcam-models-v1'));
    const before = responses.length;
    await page.reload();
    await ready('second visit');
    assert.match(await page.locator('#model-info').textContent(), /downloaded, ready in/);
    const model = responses.slice(before).find((r) => r.url().endsWith('/assets/models/efficientnet-lite0.safetensors'));
    assert.ok(model && !model.fromServiceWorker(), 'the model should come from the network, untouched by the service worker');
    const progress = await page.evaluate(() => window.__progress.filter((t) => /^Downloading the model: [\d.]+ MB of 9\.0 MB$/.test(t)));
    console.log(`# second visit: the model downloaded past the service worker; ${progress.length} progress updates, from "${progress[0]}" to "${progress.at(-1)}"`);
    assert.ok(progress.length >= 1, 'the download progress (with the total size) should be shown');
  });

  test('offline after the first visit: the service worker serves the app, the model comes from the cache', async () => {
    const sw = await page.evaluate(async () => {
      const reg = await navigator.serviceWorker.ready;
      const names = await caches.keys();
      const shell = names.find((n) => n.startsWith('gradcam-shell-'));
      const keys = shell ? (await (await caches.open(shell)).keys()).map((r) => new URL(r.url).pathname) : [];
      const model = await (await caches.open('gradcam-models-v1')).keys();
      return { state: reg.active && reg.active.state, controlled: Boolean(navigator.serviceWorker.controller), names, keys, models: model.map((r) => new URL(r.url).pathname) };
    });
    console.log(`# service worker ${sw.state}, controlling: ${sw.controlled}; caches ${sw.names.join(', ')}; ${sw.keys.length} shell files; models ${sw.models.join(', ')}`);
    assert.equal(sw.state, 'activated');
    assert.ok(sw.controlled, 'the first visit should be controlled by the service worker (clients.claim)');
    for (const want of [/^\/$/, /^\/www\/demo\.[0-9a-f]+\.js$/, /^\/pkg\/gradcam_wasm_bg\.[0-9a-f]+\.wasm$/, /^\/assets\/samples\/chelsea\.png$/]) {
      assert.ok(sw.keys.some((k) => want.test(k)), `the shell cache lacks ${want}: ${sw.keys.join(' ')}`);
    }
    assert.ok(!sw.keys.some((k) => k.startsWith('/assets/models/')), 'the model must not be cached twice');
    assert.deepEqual(sw.models, ['/assets/models/efficientnet-lite0.safetensors']);

    // Really offline: the browser says so and the server is gone.
    await context.setOffline(true);
    await dist.stop();
    requests.phase = 'offline';
    const before = responses.length;
    const failures = [];
    context.on('requestfailed', (q) => failures.push(q.url()));
    const response = await page.reload();
    assert.ok(response.fromServiceWorker(), 'the page should come from the service worker');
    await ready('offline reload');
    const info = await page.locator('#model-info').textContent();
    assert.match(info, /from the browser cache/, `#model-info: "${info}"`);
    const t0 = Date.now();
    const r = await explainUserPhoto('coffee.png');
    console.log(`# offline: ${r.title} (${r.sub}); ${r.timing}; the photo explained ${Date.now() - t0} ms after it was chosen`);
    assert.equal(r.top1, ESPRESSO, `coffee.png should be espresso, got ${r.top1}`);
    // Every request of the offline visit was answered by the service worker (the model by the Cache API, with no request).
    const offline = responses.slice(before);
    const answered = offline.filter((x) => x.fromServiceWorker()).map((x) => new URL(x.url()).pathname);
    const other = offline.filter((x) => !x.fromServiceWorker()).map((x) => `${x.status()} ${x.url()}`);
    console.log(`# offline: ${answered.length} responses from the service worker (${answered.join(' ')}); ${failures.length} failed requests (${failures.join(' ')})`);
    assert.deepEqual(other, [], 'responses that did not come from the service worker while offline');
    assert.ok(answered.some((u) => /\/pkg\/gradcam_wasm_bg\.[0-9a-f]+\.wasm$/.test(u)), 'the wasm should come from the service worker');
    // Only two requests may fail offline: the service worker's try of the network for the page
    // (network first, so that a new build shows at once when online) and the browser's update check of sw.js.
    assert.deepEqual(failures.filter((u) => u !== dist.url && u !== new URL('sw.js', dist.url).href), [], 'requests that failed offline');
    assert.deepEqual(errors.filter((e) => !/ERR_INTERNET_DISCONNECTED|sw\.js/.test(e)), [], 'the offline page logged errors');
  });
});
