// Hostile and broken input, memory, concurrency (issue 6), in headless Chromium:
//   node --test tests/e2e/hardening.test.mjs     (part of npm run test:e2e)
// Needs pkg/ (scripts/build-web.sh) and assets/ (scripts/setup.sh).
//
// The module-level tests run the real pkg/ module on an empty page (tests/e2e/blank.html) through
// page.evaluate: one wasm instance per page, so every figure below belongs to one instance.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, artifactsDir, launchBrowser, recordErrors, startServer } from './harness.mjs';

const CAT_CLASSES = [281, 282, 285]; // tabby, tiger cat, Egyptian cat: a near tie on chelsea.png

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
        'class: "3"': () => ex.explain(img, '3'),
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

      const last = snapshot(ex.explain(chelsea));
      const fresh = new m.Explainer(model);
      const control = snapshot(fresh.explain(chelsea));
      fresh.free();
      ex.free();
      return {
        outcomes,
        first,
        last,
        control,
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
      'class: "3"': ['number'],
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

  test('memory: 100 explanations in a row and 10 model replacements do not grow wasm memory', async () => {
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
      for (let k = 1; k <= 10; k++) {
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
    console.log(`# wasm memory after each of 10 model replacements: ${out.replaced.map(f).join(', ')} MB (the model is ${f(out.modelF32MB)} MB as f32)`);
    // Memory never shrinks, but it must stop growing once every image size has been seen.
    assert.ok(out.after[100] - out.after[10] <= 4, `wasm memory grew from ${f(out.after[10])} MB after 10 images to ${f(out.after[100])} MB after 100`);
    assert.ok(out.after[100] - out.figures.model <= 32, `100 explanations took ${f(out.after[100] - out.figures.model)} MB on top of the model`);
    // A model that is not freed would add 17.7 MB per replacement (over 140 MB from the 2nd to the
    // 10th); allocator fragmentation may cost a few MB once.
    const late = Math.max(...out.replaced.slice(2));
    assert.ok(late - out.replaced[1] <= 8, `model replacements keep growing wasm memory: ${out.replaced.map(f).join(', ')} MB`);
    // During a swap the new model (as f32) and its file's bytes live next to the old model.
    const swap = out.modelF32MB + out.modelFileMB;
    assert.ok(late - out.after[100] <= swap + 4, `10 replacements took ${f(late - out.after[100])} MB more than one model, more than a swap needs (${f(swap)} MB)`);
    assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), [], 'the page logged errors');
    await page.close();
  });
});
