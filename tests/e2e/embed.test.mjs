// The embeddable <gradcam-explainer> element (www/gradcam-explainer.js) on a static page with the
// strict CSP (www/embed-example.html): each element lazy-loads the wasm, explains its image with its
// own class/method/colormap, and draws a canvas; the requested class is the one explained.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { artifactsDir, launchBrowser, recordErrors, startServer } from './harness.mjs';

let server;
let browser;

before(async () => {
  artifactsDir();
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

test('three embedded explainers draw their explanations', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = recordErrors(page);
  // Collect the elements' result events before any of them can fire.
  await page.addInitScript(() => {
    window.__results = [];
    document.addEventListener('gradcam-result', (e) => {
      window.__results.push({ src: e.target.getAttribute('src'), classIdx: e.detail.classIdx, method: e.detail.method, label: e.detail.label });
    });
    document.addEventListener('gradcam-error', (e) => window.__results.push({ src: e.target.getAttribute('src'), error: e.detail.message }));
  });
  await page.goto(new URL('www/embed-example.html', server.url).href);
  await page.waitForFunction(() => window.__results.length >= 3, null, { timeout: 60000, polling: 100 });
  const results = await page.evaluate(() => window.__results);
  const by = (name) => results.find((r) => r.src.endsWith(name));
  assert.ok(results.every((r) => !r.error), `an element failed: ${JSON.stringify(results)}`);
  assert.equal(by('chelsea.png').classIdx, 282, 'class="282" is the class explained');
  assert.equal(by('chelsea.png').method, 'gradcam');
  assert.equal(by('coffee.png').classIdx, 967, 'no class attribute: the top-1 class (espresso)');
  assert.equal(by('coffee.png').method, 'gradcam++');
  assert.equal(by('rocket.jpg').method, 'layercam');
  // Each element drew a non-blank canvas in its shadow root.
  const drawn = await page.evaluate(() =>
    [...document.querySelectorAll('gradcam-explainer')].map((el) => {
      const c = el.shadowRoot.querySelector('canvas');
      if (!c || !c.width) return 0;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let colourful = 0;
      for (let i = 0; i < d.length; i += 4) colourful += Math.abs(d[i] - d[i + 2]) > 40 ? 1 : 0;
      return colourful / (d.length / 4);
    }),
  );
  console.log('embed: results', JSON.stringify(results), 'colourful fractions', drawn.map((x) => x.toFixed(2)).join(' '));
  assert.ok(drawn.every((f) => f > 0.05), `blank canvas in an element: ${drawn}`);
  await page.screenshot({ path: join(artifactsDir(), 'embed.png'), fullPage: true });
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
  await page.close();
});

test('an element explains with the user\'s ONNX model, its .onnx.data and a labels file', async () => {
  const { writeFileSync } = await import('node:fs');
  const { ARTIFACTS } = await import('./harness.mjs');
  // A small ConvNeXt-style net with 5 classes, exported by torch's dynamo exporter (scripts/gen-onnx-fixtures.py).
  const onnx = 'convnext.dynamo.onnx';
  writeFileSync(join(ARTIFACTS, 'labels.txt'), ['label-0', 'label-1', 'label-2', 'label-3', 'label-4'].join('\n') + '\n');
  const page = await browser.newPage({ viewport: { width: 800, height: 600 } });
  const errors = recordErrors(page);
  await page.goto(new URL('www/embed-example.html', server.url).href);
  const result = await page.evaluate(
    ({ onnx }) =>
      new Promise((ok) => {
        const el = document.createElement('gradcam-explainer');
        el.addEventListener('gradcam-result', (e) => ok({ label: e.detail.label, classIdx: e.detail.classIdx, width: e.detail.width }));
        el.addEventListener('gradcam-error', (e) => ok({ error: e.detail.message }));
        for (const [k, v] of Object.entries({
          eager: '',
          src: '../assets/samples/chelsea.png',
          model: `../tests/fixtures/onnx/${onnx}`,
          'model-data': `../tests/fixtures/onnx/${onnx}.data`,
          labels: '../test-artifacts/e2e/labels.txt',
        })) el.setAttribute(k, v);
        document.body.append(el);
      }),
    { onnx },
  );
  assert.ok(!result.error, `the element failed: ${result.error}`);
  assert.match(result.label, /^label-\d$/, `the class is named from labels.txt: ${JSON.stringify(result)}`);
  console.log(`# <gradcam-explainer model="${onnx}" model-data labels>: ${JSON.stringify(result)}`);
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
  await page.close();
});

test('target-class takes a weighted mix of classes, and a bad one is an error event', async () => {
  const page = await browser.newPage({ viewport: { width: 800, height: 600 } });
  const errors = recordErrors(page);
  await page.goto(new URL('www/embed-example.html', server.url).href);
  const explain = (targetClass) =>
    page.evaluate(
      (targetClass) =>
        new Promise((ok) => {
          const el = document.createElement('gradcam-explainer');
          el.addEventListener('gradcam-result', (e) => ok({ classIdx: e.detail.classIdx, logit: e.detail.logit }));
          el.addEventListener('gradcam-error', (e) => ok({ error: e.detail.message }));
          for (const [k, v] of Object.entries({
            eager: '',
            src: '../assets/samples/chelsea.png',
            model: '../assets/models/efficientnet-lite0.safetensors',
            'target-class': targetClass,
          })) el.setAttribute(k, v);
          document.body.append(el);
        }),
      targetClass,
    );
  const [a, b, mix, bad] = [await explain('281'), await explain('285'), await explain('285:0.5, 281:1'), await explain('281:')];
  console.log('# weighted target-class:', JSON.stringify({ a, b, mix, bad }));
  assert.equal(mix.classIdx, 281, 'the heaviest term is the class reported');
  assert.ok(Math.abs(mix.logit - (a.logit + 0.5 * b.logit)) < 1e-3, `the score is y_281 + 0.5 y_285: ${JSON.stringify({ a, b, mix })}`);
  assert.match(bad.error || '', /not a number/, `"281:" is refused with the reason: ${JSON.stringify(bad)}`);
  assert.deepEqual(errors.filter((e) => !/favicon/.test(e)), []);
  await page.close();
});
