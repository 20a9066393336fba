// The relaxed-SIMD build (pkg/relaxed/, scripts/build-web.sh) and its feature detection
// (www/wasm-features.js), in Chromium:
//   node --test tests/e2e/relaxed-simd.test.mjs     (part of npm run test:e2e; needs pkg/ and pkg/relaxed/)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recordErrors, serveAndBrowse } from './harness.mjs';

const site = serveAndBrowse({ needs: ['pkg/relaxed/gradcam_wasm.js', 'pkg/relaxed/gradcam_wasm_bg.wasm'] });

test('Chromium is detected as relaxed-SIMD capable, and both builds explain the photo alike', async () => {
  const context = await site.browser.newContext();
  try {
    const page = await context.newPage();
    const errors = recordErrors(page);
    await page.goto(new URL('tests/e2e/blank.html', site.server.url).href);
    const r = await page.evaluate(async () => {
      const { relaxedSimdSupported } = await import('/www/wasm-features.js');
      const bytes = new Uint8Array(await (await fetch('/assets/models/efficientnet-lite0.safetensors')).arrayBuffer());
      const bmp = await createImageBitmap(await (await fetch('/assets/samples/chelsea.png')).blob());
      const ctx = new OffscreenCanvas(224, 224).getContext('2d');
      ctx.drawImage(bmp, 0, 0, 224, 224);
      const img = ctx.getImageData(0, 0, 224, 224);
      const explain = async (url) => {
        const m = await import(url);
        await m.default();
        const ex = new m.Explainer(bytes, {});
        const out = {};
        for (const method of ['gradcam', 'guided-gradcam']) {
          const res = ex.explain(img, undefined, { method });
          out[method] = { classIdx: res.classIdx, logit: res.logit, raw: Array.from(res.raw) };
        }
        ex.free();
        return out;
      };
      return { supported: relaxedSimdSupported(), plain: await explain('/pkg/gradcam_wasm.js'), relaxed: await explain('/pkg/relaxed/gradcam_wasm.js') };
    });
    assert.equal(r.supported, true, 'Chromium validates f32x4.relaxed_madd');
    for (const method of ['gradcam', 'guided-gradcam']) {
      const [p, q] = [r.plain[method], r.relaxed[method]];
      assert.equal(q.classIdx, p.classIdx, `${method}: class`);
      assert.ok(Math.abs(q.logit - p.logit) <= 1e-4, `${method}: logit ${q.logit} vs ${p.logit}`);
      assert.equal(q.raw.length, p.raw.length, `${method}: map size`);
      const scale = Math.max(...p.raw.map(Math.abs));
      const diff = Math.max(...p.raw.map((v, i) => Math.abs(v - q.raw[i])));
      // The wasm parity tests' tolerance against native (1e-4), relative to the map's largest value.
      assert.ok(scale > 0 && diff <= 1e-4 * scale, `${method}: raw maps differ by ${diff} (max ${scale})`);
    }
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
