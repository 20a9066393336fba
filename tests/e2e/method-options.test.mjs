// End-to-end test of the per-method settings in the demo page: the controls shown are those the
// wasm method catalog lists in each method's `options` (none for Grad-CAM), and a changed value
// reaches explain (the map changes) and evaluate. Needs what demo.test.mjs needs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO, canvasStats, installResultLog, logLength, recordErrors, serveAndBrowse, waitForLog } from './harness.mjs';

const env = serveAndBrowse();

/** The data-option names of the settings shown now ([] when the group is hidden). */
const shown = (page) =>
  page.evaluate(() => {
    const box = document.querySelector('#method-options');
    if (box.hidden) return [];
    return [...box.querySelectorAll('[data-option]')].filter((f) => !f.hidden).map((f) => f.dataset.option);
  });

/** Chooses a method and waits for its map (the result bar's title starts with its label). */
async function explainWith(page, method, label) {
  const from = await logLength(page);
  await page.selectOption('#method', method);
  await waitForLog(page, from, { titleStartsWith: label, hasTiming: true }, `${label}'s map`, 60000);
}

/** Sets a setting (fires change, as a user's commit does) and waits for the re-explained map. */
async function setOption(page, selector, value, label) {
  const from = await logLength(page);
  // Set in the page with one change event, as a committed edit gives (fill would add another on blur).
  await page.evaluate(([sel, v]) => {
    const input = document.querySelector(sel);
    input.value = v;
    input.dispatchEvent(new Event('change', { bubbles: true }));
  }, [selector, value]);
  await waitForLog(page, from, { titleStartsWith: label, hasTiming: true }, `${label} with ${selector} = ${value}`, 60000);
  return canvasStats(page);
}

test('each method shows its own settings, and they reach explain', async () => {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const errors = recordErrors(page);
  try {
    await page.goto(env.server.url);
    await page.waitForFunction(() => /ready in/.test(document.querySelector('#model-info').textContent), null, { timeout: 45000, polling: 50 });
    await page.waitForSelector('.tile[data-tile="guided-gradcam"].is-ready:not(.is-pending)', { timeout: 30000 });
    await installResultLog(page);
    assert.deepEqual(await shown(page), [], 'Grad-CAM takes no settings of its own');

    await explainWith(page, 'integrated-gradients', 'Integrated Gradients');
    assert.deepEqual(await shown(page), ['igSteps', 'igBaseline']);
    const steps4 = await setOption(page, '#opt-ig-steps', '4', 'Integrated Gradients');
    const steps12 = await setOption(page, '#opt-ig-steps', '12', 'Integrated Gradients');
    assert.notEqual(steps4.hash, steps12.hash, 'igSteps 4 and 12 drew the same map');
    const blur = await setOption(page, '#opt-ig-baseline', 'blur', 'Integrated Gradients');
    assert.notEqual(blur.hash, steps12.hash, 'the blurred baseline drew the same map as the black one');
    // evaluate takes the same settings (the map measured is the map shown).
    await page.uncheck('#eval-road');
    await page.click('#evaluate');
    await page
      .waitForFunction(() => /deletion AUC [\d.]+ .* insertion AUC [\d.]+/.test(document.querySelector('#auc').textContent), null, { timeout: 60000, polling: 100 })
      .catch(async (e) => {
        throw new Error(`${e.message}; #auc "${await page.locator('#auc').textContent()}", #status "${await page.locator('#status').textContent()}"`);
      });

    await explainWith(page, 'smoothgrad', 'SmoothGrad');
    assert.deepEqual(await shown(page), ['smoothSamples', 'smoothNoise']);
    const few = await setOption(page, '#opt-smooth-samples', '3', 'SmoothGrad');
    const noisy = await setOption(page, '#opt-smooth-noise', '0.4', 'SmoothGrad');
    assert.notEqual(few.hash, noisy.hash, 'smoothNoise 0.15 and 0.4 drew the same map');

    await explainWith(page, 'occlusion', 'Occlusion');
    assert.deepEqual(await shown(page), ['igBaseline', 'occlusionPatch', 'occlusionStride']);
    const coarse = await setOption(page, '#opt-occlusion-stride', '56', 'Occlusion');
    const fine = await setOption(page, '#opt-occlusion-patch', '112', 'Occlusion');
    assert.notEqual(coarse.hash, fine.hash, 'occlusionPatch 56 and 112 drew the same map');
    await page.screenshot({ path: join(REPO, 'test-artifacts/e2e/method-options-occlusion.png') });

    await explainWith(page, 'scorecam', 'Score-CAM');
    assert.deepEqual(await shown(page), ['scoreCamChannels']);
    const c8 = await setOption(page, '#opt-scorecam-channels', '8', 'Score-CAM');
    const c32 = await setOption(page, '#opt-scorecam-channels', '32', 'Score-CAM');
    assert.notEqual(c8.hash, c32.hash, 'scoreCamChannels 8 and 32 drew the same map');

    await explainWith(page, 'gradcam', 'Grad-CAM');
    assert.deepEqual(await shown(page), []);
    await page.screenshot({ path: join(REPO, 'test-artifacts/e2e/method-options.png') });
    assert.equal(await page.locator('#status').textContent(), '');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
