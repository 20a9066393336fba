// GradcamClient.explain takes any image a page holds (issue 16): ImageData, ImageBitmap, <img>,
// <canvas>, OffscreenCanvas, a Blob, a File and a URL string all give the same explanation of
// chelsea.png, and something that is not an image is a clear Error.
//   node --test tests/e2e/client-inputs.test.mjs     (part of npm run test:e2e)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recordErrors, serveAndBrowse } from './harness.mjs';

const env = serveAndBrowse();

test('every kind of image input gives the same explanation; a non-image is a clear Error', async () => {
  const page = await env.browser.newPage();
  const errors = recordErrors(page);
  await page.goto(new URL('tests/e2e/blank.html', env.server.url).href);
  const out = await page.evaluate(async () => {
    const { GradcamClient } = await import('/www/gradcam-client.js');
    const client = new GradcamClient();
    await client.load('/assets/models/efficientnet-lite0.safetensors');
    const url = '/assets/samples/chelsea.png';
    const blob = await (await fetch(url)).blob();
    const bitmap = await createImageBitmap(blob);
    const img = new Image();
    img.src = url;
    const canvas = document.createElement('canvas');
    [canvas.width, canvas.height] = [bitmap.width, bitmap.height];
    canvas.getContext('2d').drawImage(bitmap, 0, 0);
    const offscreen = new OffscreenCanvas(bitmap.width, bitmap.height);
    offscreen.getContext('2d').drawImage(bitmap, 0, 0);
    const imageData = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    const inputs = {
      ImageData: imageData,
      ImageBitmap: bitmap,
      HTMLImageElement: img,
      HTMLCanvasElement: canvas,
      OffscreenCanvas: offscreen,
      Blob: blob,
      File: new File([blob], 'chelsea.png', { type: 'image/png' }),
      'URL string': url,
    };
    const results = {};
    for (const [name, input] of Object.entries(inputs)) {
      const r = await client.explain(input);
      let sum = 0;
      for (const v of r.heatmap) sum += v;
      results[name] = { classIdx: r.classIdx, width: r.width, height: r.height, sum };
    }
    const refusals = {};
    for (const [name, bad] of Object.entries({ number: 42, 'text blob': new Blob(['not an image'], { type: 'text/plain' }), 'missing URL': '/assets/samples/none.png' })) {
      try {
        await client.explain(bad);
        refusals[name] = 'explained';
      } catch (e) {
        refusals[name] = e instanceof Error ? e.message : `not an Error: ${e}`;
      }
    }
    const after = await client.explain(imageData);
    client.terminate();
    return { results, refusals, afterClass: after.classIdx };
  });
  console.log(JSON.stringify(out, null, 2));
  const reference = out.results.ImageData;
  assert.equal(reference.classIdx, 282);
  for (const [name, r] of Object.entries(out.results)) {
    assert.deepEqual([r.classIdx, r.width, r.height], [reference.classIdx, reference.width, reference.height], name);
    assert.ok(Math.abs(r.sum - reference.sum) <= 1e-4 * reference.sum, `${name}: the same heatmap (${r.sum} vs ${reference.sum})`);
  }
  assert.match(out.refusals.number, /expected an image/);
  assert.match(out.refusals['text blob'], /could not be decoded as an image/);
  assert.match(out.refusals['missing URL'], /HTTP 404/);
  assert.equal(out.afterClass, 282, 'the client still explains');
  assert.deepEqual(
    errors.filter((e) => !/status of 404/.test(e)),
    [],
  );
});
