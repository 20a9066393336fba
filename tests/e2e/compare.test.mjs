// End-to-end test of "Compare two models" in the demo page: the page's model (EfficientNet-Lite0)
// and a second ImageNet model (EfficientNet-Lite1, a torchvision-style .pth loaded by URL in its
// own worker) explain chelsea.png with the same method and class; both maps are drawn side by side
// with their deletion and insertion AUCs. Needs what demo.test.mjs needs, plus
// assets/models/efficientnet-lite1.pth (scripts/setup.sh).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO, recordErrors, serveAndBrowse } from './harness.mjs';

const env = serveAndBrowse({ needs: ['assets/models/efficientnet-lite1.pth'] });

/** One slot's tile: its canvas size, how many distinct colours it holds, and its caption. */
const slot = (page, name) =>
  page.evaluate((name) => {
    const fig = document.querySelector(`#compare [data-slot="${name}"]`);
    const c = fig.querySelector('canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const colours = new Set();
    for (let i = 0; i < d.length; i += 16) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return { width: c.width, height: c.height, colours: colours.size, ready: fig.classList.contains('is-ready'), caption: fig.querySelector('figcaption').textContent };
  }, name);

const aucs = (caption) => {
  const m = caption.match(/deletion AUC ([\d.]+) · insertion AUC ([\d.]+)/);
  return m ? { deletion: Number(m[1]), insertion: Number(m[2]) } : null;
};

test('two ImageNet models explain chelsea.png side by side, each with its AUCs', async () => {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const errors = recordErrors(page);
  try {
    await page.goto(env.server.url);
    await page.waitForFunction(() => /ready in/.test(document.querySelector('#model-info').textContent), null, { timeout: 45000, polling: 50 });
    await page.waitForSelector('.tile[data-tile="guided-gradcam"].is-ready:not(.is-pending)', { timeout: 30000 });
    assert.equal(await page.inputValue('#compare-url'), 'assets/models/efficientnet-lite1.pth');
    const t0 = Date.now();
    await page.click('#compare-run');
    await page.waitForSelector('#compare [data-slot="b"].is-ready:not(.is-pending)', { timeout: 120000 }).catch(async (e) => {
      throw new Error(`${e.message}; #compare-status "${await page.locator('#compare-status').textContent()}", #status "${await page.locator('#status').textContent()}"`);
    });
    const ms = Date.now() - t0;
    const a = await slot(page, 'a');
    const b = await slot(page, 'b');
    const status = await page.locator('#compare-status').textContent();
    console.log(`compare after ${ms} ms:\n  ${a.caption}\n  ${b.caption}\n  ${status}`);
    for (const [name, s] of [['A', a], ['B', b]]) {
      assert.ok(s.ready && s.width === 360 && s.height > 100, `${name}: ${JSON.stringify(s)}`);
      assert.ok(s.colours > 500, `${name}'s map looks blank: ${s.colours} colours`);
      const x = aucs(s.caption);
      assert.ok(x, `${name}'s caption has no AUCs: ${s.caption}`);
      assert.ok(x.deletion >= 0 && x.deletion <= 1 && x.insertion >= 0 && x.insertion <= 1, s.caption);
    }
    assert.match(a.caption, /^A: efficientnet-lite0\.safetensors/);
    assert.match(b.caption, /^B: efficientnet-lite1\.pth/);
    // The same class for both: the page's top-1 (a cat class for both ImageNet models).
    assert.match(a.caption, /cat/);
    assert.match(b.caption, /cat/);
    assert.match(status, /^Class 28[1-5]; insertion minus deletion AUC is larger for [AB]/);
    // Two different networks: two different maps.
    assert.notDeepEqual(aucs(a.caption), aucs(b.caption));
    await page.locator('.compare-card').screenshot({ path: join(REPO, 'test-artifacts/e2e/compare.png') });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
