// AbortSignal on GradcamClient calls (issue 16) in Chromium: aborting a Score-CAM over every channel
// of the default model after its first progress event rejects with an AbortError within 1 s, and the
// same client (same worker, model still loaded) then explains chelsea.png as before; a queued call
// that is aborted is skipped without running (and the image it carried is still known to the
// worker); a bad signal is a clear Error. On a cross-origin-isolated page (serve.mjs --isolate) the
// worker also sees the abort mid-run, through a SharedArrayBuffer: the Score-CAM (and an evaluate)
// stops within one batch, so the next call does not wait for it. On a plain page (no
// SharedArrayBuffer) the same holds through the pauses explainAsync / evaluateAsync make between
// batches (src/cancel.rs): a full Score-CAM aborted at its first progress stops within one batch.
//   node --test tests/e2e/abort.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recordErrors, serveAndBrowse } from './harness.mjs';

// env.isolated: the same site, cross-origin isolated (SharedArrayBuffer exists there).
const env = serveAndBrowse({ isolated: true });

/** A page with a loaded client (window.client) and chelsea.png / coffee.png as ImageData (window.img). */
async function openClient(site = env.server) {
  const page = await env.browser.newPage();
  const errors = recordErrors(page);
  await page.goto(new URL('tests/e2e/blank.html', site.url).href);
  await page.evaluate(async () => {
    const { GradcamClient, toImageData } = await import('/www/gradcam-client.js');
    window.client = new GradcamClient();
    window.loads = 0;
    await client.load('/assets/models/efficientnet-lite0.safetensors');
    window.firstWorker = client.worker;
    window.firstModel = client.model;
    window.img = { chelsea: await toImageData('/assets/samples/chelsea.png'), coffee: await toImageData('/assets/samples/coffee.png') };
    window.sum = (r) => Array.from(r.heatmap).reduce((a, b) => a + b, 0);
  });
  return { page, errors };
}

test('aborting a Score-CAM over all channels rejects with AbortError within 1 s; the worker and its model stay', async () => {
  const { page, errors } = await openClient();
  const out = await page.evaluate(async () => {
    const before = await client.explain(img.chelsea, null, { method: 'gradcam' });
    const ac = new AbortController();
    let abortedAt = 0;
    let progressEvents = 0;
    const t0 = performance.now();
    const running = client.explain(img.chelsea, null, { method: 'scorecam', signal: ac.signal }, (done, total) => {
      progressEvents++;
      if (!abortedAt) {
        abortedAt = performance.now();
        ac.abort();
      }
    });
    let error = null;
    try {
      await running;
    } catch (e) {
      error = { name: e.name, isDOMException: e instanceof DOMException, message: e.message };
    }
    const rejectMs = performance.now() - abortedAt;
    const t1 = performance.now();
    const after = await client.explain(img.chelsea, null, { method: 'gradcam' });
    return {
      error,
      rejectMs,
      firstProgressMs: abortedAt - t0,
      progressEvents,
      nextMs: performance.now() - t1,
      sameWorker: client.worker === firstWorker,
      sameModel: client.model === firstModel,
      before: { classIdx: before.classIdx, sum: sum(before), label: before.label },
      after: { classIdx: after.classIdx, sum: sum(after), label: after.label },
    };
  });
  console.log('# abort Score-CAM:', JSON.stringify(out));
  assert.deepEqual(out.error && [out.error.name, out.error.isDOMException], ['AbortError', true], JSON.stringify(out.error));
  assert.ok(out.rejectMs < 1000, `rejected ${out.rejectMs} ms after abort()`);
  assert.equal(out.progressEvents, 1, 'no progress of the aborted call reaches its callback');
  assert.ok(out.sameWorker, 'the worker was not restarted');
  assert.ok(out.sameModel, 'the model was not reloaded');
  assert.equal(out.after.classIdx, out.before.classIdx);
  assert.equal(out.after.sum, out.before.sum, 'the same explanation as before the abort');
  assert.deepEqual(errors, []);
  await page.close();
});

test('an aborted queued call is skipped, and the image it carried is still known to the worker', async () => {
  const { page, errors } = await openClient();
  const out = await page.evaluate(async () => {
    const slow = client.explain(img.chelsea, null, { method: 'scorecam', scoreCamChannels: 64 });
    const ac = new AbortController();
    let queuedProgress = 0;
    // Queued behind the slow call; it carries coffee.png's pixels, which the next call only names.
    const queued = client.explain(img.coffee, null, { method: 'scorecam', signal: ac.signal }, () => queuedProgress++);
    ac.abort(new Error('user changed their mind'));
    const queuedError = await queued.then(
      () => null,
      (e) => ({ name: e.name, cause: e.cause && e.cause.message }),
    );
    await slow;
    const t0 = performance.now();
    const next = await client.explain(img.coffee, null, { method: 'gradcam' });
    const nextMs = performance.now() - t0;
    const plain = await client.explain(img.coffee, null, { method: 'gradcam' });
    // Already aborted: rejects at once without sending anything.
    const pre = await client.explain(img.coffee, null, { signal: AbortSignal.abort() }).then(() => null, (e) => e.name);
    const bad = await client.explain(img.coffee, null, { signal: 'stop' }).then(() => null, (e) => `${e.name}: ${e.message}`);
    const predictAbort = await client.predict(img.coffee, 5, { signal: AbortSignal.abort() }).then(() => null, (e) => e.name);
    return { queuedError, queuedProgress, nextMs, nextClass: next.classIdx, sameMap: sum(next) === sum(plain), pre, bad, predictAbort, sameWorker: client.worker === firstWorker };
  });
  console.log('# abort queued:', JSON.stringify(out));
  assert.deepEqual(out.queuedError, { name: 'AbortError', cause: 'user changed their mind' });
  assert.equal(out.queuedProgress, 0, 'the aborted Score-CAM never ran');
  assert.ok(out.nextMs < 3000, `the next call did not wait for a Score-CAM over all channels: ${out.nextMs} ms`);
  assert.equal(out.nextClass, 967, 'coffee.png (sent with the aborted call) explained: espresso');
  assert.ok(out.sameMap);
  assert.equal(out.pre, 'AbortError');
  assert.match(out.bad, /^Error: explain\(\): signal must be an AbortSignal/);
  assert.equal(out.predictAbort, 'AbortError');
  assert.ok(out.sameWorker);
  assert.deepEqual(errors, []);
  await page.close();
});

/** Aborts `method` after its first progress event (or after `afterMs` for calls without progress); times both calls. */
function abortThenExplain(page, { call, afterMs = null }) {
  return page.evaluate(
    async ({ call, afterMs }) => {
      const before = await client.explain(img.chelsea, null, { method: 'gradcam' });
      const ac = new AbortController();
      let abortedAt = 0;
      const abort = () => {
        if (abortedAt) return;
        abortedAt = performance.now();
        ac.abort();
      };
      const t0 = performance.now();
      const running =
        call === 'evaluate'
          ? client.evaluate(img.chelsea, null, { method: 'gradcam', steps: 224, signal: ac.signal })
          : client.explain(img.chelsea, null, { method: call, signal: ac.signal }, abort);
      if (afterMs !== null) setTimeout(abort, afterMs);
      const error = await running.then(
        () => null,
        (e) => e.name,
      );
      const rejectMs = performance.now() - abortedAt;
      const t1 = performance.now();
      const after = await client.explain(img.chelsea, null, { method: 'gradcam' });
      return {
        isolated: crossOriginIsolated,
        error,
        abortAfterMs: abortedAt - t0,
        rejectMs,
        nextMs: performance.now() - t1,
        sameWorker: client.worker === firstWorker,
        sameModel: client.model === firstModel,
        same: sum(after) === sum(before) && after.classIdx === before.classIdx,
      };
    },
    { call, afterMs },
  );
}

for (const isolated of [true, false]) {
  const site = isolated ? 'cross-origin isolated' : 'not isolated';
  test(`${site}: an aborted Score-CAM over all channels, and an aborted evaluate, stop within one batch`, async () => {
    const { page, errors } = await openClient(isolated ? env.isolated : env.server);
    for (const [call, afterMs] of [['scorecam', null], ['evaluate', 300]]) {
      const out = await abortThenExplain(page, { call, afterMs });
      console.log(`# ${site}: abort ${call}:`, JSON.stringify(out));
      assert.equal(out.isolated, isolated, `the page is ${site}`);
      assert.equal(out.error, 'AbortError');
      assert.ok(out.rejectMs < 1000, `rejected ${out.rejectMs} ms after abort()`);
      // One batch of Score-CAM (or of the curves) and a Grad-CAM, not the rest of the computation
      // (Score-CAM's other ~450 forwards on this photo take 10 s or more).
      assert.ok(out.nextMs < 3000, `the next call waited ${out.nextMs} ms: the aborted ${call} ran on`);
      assert.ok(out.sameWorker && out.sameModel, 'no worker restart, no model reload');
      assert.ok(out.same, 'the same explanation as before the abort');
    }
    assert.deepEqual(errors, []);
    await page.close();
  });
}
