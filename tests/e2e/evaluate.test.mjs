// End-to-end test of the faithfulness panel (src/eval through the wasm `evaluate`): the demo page's
// "Measure faithfulness" button draws the deletion and insertion curves under the map and shows
// their AUCs. Needs what demo.test.mjs needs (pkg/ rebuilt with scripts/build-web.sh, assets/, Chromium).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO, recordErrors, serveAndBrowse } from './harness.mjs';

const env = serveAndBrowse();

test('the page draws deletion and insertion curves with their AUCs', async () => {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const errors = recordErrors(page);
  try {
    await page.goto(env.server.url);
    await page.waitForFunction(() => /ready in/.test(document.querySelector('#model-info').textContent), null, { timeout: 45000, polling: 50 });
    await page.waitForSelector('#top5 li[data-class]', { timeout: 30000 });
    await page.waitForSelector('#evaluate:not([disabled])', { timeout: 30000 });
    await page.waitForSelector('.tile[data-tile="guided-gradcam"].is-ready:not(.is-pending)', { timeout: 30000 });
    const t0 = Date.now();
    await page.click('#evaluate');
    await page.waitForFunction(() => /deletion AUC [\d.]+ .* insertion AUC [\d.]+/.test(document.querySelector('#auc').textContent), null, { timeout: 60000, polling: 100 });
    const ms = Date.now() - t0;
    const auc = await page.locator('#auc').textContent();
    const [, del, ins] = auc.match(/deletion AUC ([\d.]+).*insertion AUC ([\d.]+)/);
    console.log(`faithfulness panel: "${auc}" (${ms} ms from the click)`);
    assert.ok(Number(del) >= 0 && Number(del) <= 1 && Number(ins) >= 0 && Number(ins) <= 1, auc);
    assert.ok(Number(del) < Number(ins), `Grad-CAM of the start-up photo: deletion AUC ${del} should be below insertion AUC ${ins}`);
    // The curves are drawn: red (deletion) and blue (insertion) pixels on the canvas.
    const colours = await page.evaluate(() => {
      const c = document.querySelector('#curves');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let red = 0;
      let blue = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i] > 180 && d[i + 2] < 80) red++;
        if (d[i + 2] > 150 && d[i] < 80) blue++;
      }
      return { hidden: c.hidden, red, blue };
    });
    assert.ok(!colours.hidden && colours.red > 50 && colours.blue > 50, JSON.stringify(colours));
    await page.screenshot({ path: join(REPO, 'test-artifacts/e2e/evaluate.png') });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
