// End-to-end test of the paper's evaluations in the demo page: after "Measure faithfulness" (with
// ROAD ticked) the page shows the ROAD MoRF/LeRF scores and the confidence change of the map's
// region, and the "15% box" checkbox draws the map's box on the overlay. All numbers come from
// the wasm `evaluate` (src/eval); the page only shows them. Needs what evaluate.test.mjs needs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO, recordErrors, serveAndBrowse } from './harness.mjs';

const env = serveAndBrowse();

/** Pixels of the box's green (#00e676) on the overlay canvas. */
const greenPixels = (page) =>
  page.evaluate(() => {
    const c = document.querySelector('#overlay-canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] < 30 && d[i + 1] > 200 && d[i + 2] > 90 && d[i + 2] < 150) n++;
    return n;
  });

test('ROAD, the confidence change and the 15% box are shown', async () => {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const errors = recordErrors(page);
  try {
    await page.goto(env.server.url);
    await page.waitForFunction(() => /ready in/.test(document.querySelector('#model-info').textContent), null, { timeout: 45000, polling: 50 });
    await page.waitForSelector('#evaluate:not([disabled])', { timeout: 30000 });
    await page.waitForSelector('.tile[data-tile="guided-gradcam"].is-ready:not(.is-pending)', { timeout: 30000 });
    const before = await greenPixels(page);

    // The box on request: a cheap evaluate runs when nothing was measured yet.
    await page.check('#show-box');
    await page.waitForFunction(() => document.querySelector('#overlay-canvas').width > 1, null, { timeout: 5000 });
    await page.waitForFunction(
      (n) => {
        const c = document.querySelector('#overlay-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let g = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] < 30 && d[i + 1] > 200 && d[i + 2] > 90 && d[i + 2] < 150) g++;
        return g > n + 200;
      },
      before,
      { timeout: 30000, polling: 200 },
    );
    const withBox = await greenPixels(page);
    console.log(`15% box: ${before} -> ${withBox} green pixels on the overlay`);

    const t0 = Date.now();
    await page.click('#evaluate');
    await page.waitForFunction(() => /combined -?[\d.]+/.test(document.querySelector('#road').textContent), null, { timeout: 90000, polling: 100 });
    const ms = Date.now() - t0;
    const road = await page.locator('#road').textContent();
    const conf = await page.locator('#confidence').textContent();
    const auc = await page.locator('#auc').textContent();
    console.log(`after ${ms} ms:\n  ${auc}\n  ${conf}\n  ${road}`);
    assert.match(auc, /deletion AUC [\d.]+ .* insertion AUC [\d.]+/);
    const morf = road.match(/MoRF ([\d. ]+) \(/)[1].trim().split(' ').map(Number);
    const lerf = road.match(/LeRF ([\d. ]+) \(/)[1].trim().split(' ').map(Number);
    assert.equal(morf.length, 9, road);
    assert.equal(lerf.length, 9, road);
    // A faithful map: removing its most relevant pixels hurts more than removing its least relevant.
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    assert.ok(mean(morf) < mean(lerf), `MoRF ${mean(morf)} should be below LeRF ${mean(lerf)}`);
    assert.match(conf, /p [\d.]+% → [\d.]+%/);
    assert.match(conf, /average drop [\d.]+%, increase (yes|no)/);
    assert.ok(!(await page.locator('#confidence').isHidden()) && !(await page.locator('#road').isHidden()));
    // ROAD's MoRF (orange) and LeRF (green) are drawn dashed on the curves' canvas.
    const road2 = await page.evaluate(() => {
      const c = document.querySelector('#curves');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let orange = 0;
      let green = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i] > 200 && d[i + 1] > 100 && d[i + 1] < 160 && d[i + 2] < 60) orange++;
        if (d[i] < 80 && d[i + 1] > 130 && d[i + 2] < 80) green++;
      }
      return { orange, green };
    });
    assert.ok(road2.orange > 30 && road2.green > 30, JSON.stringify(road2));

    // Unticked: the box goes.
    await page.uncheck('#show-box');
    const without = await greenPixels(page);
    assert.ok(without < withBox - 200, `box still drawn: ${without} vs ${withBox}`);
    await page.check('#show-box');
    await page.screenshot({ path: join(REPO, 'test-artifacts/e2e/evaluations.png'), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
