// Recovery from a trap (issue 14), in headless Chromium:
//   node --test tests/e2e/trap-recovery.test.mjs     (part of npm run test:e2e)
// Needs pkg/ built by scripts/build-web.sh (its glue exports __wbg_reset_state) and assets/.
//
// A panic in wasm traps the module (RuntimeError: unreachable). Through the test-only export
// __testTrap (src/trap.rs) the module traps on purpose, via the GradcamClient the demo page uses and
// via a <gradcam-explainer>; then the SAME client and the SAME element explain the next photo, with
// the top class it had before the trap, within 2 s of the trap. The trapping call's error names the
// trap and carries the Rust panic message; a call queued behind it runs on the new instance.
// The worker itself dying is covered too: pending calls reject saying so, and the next call starts a
// new worker and reloads the model (also what happens with a pkg/ whose glue cannot be reset). Last,
// the demo page: its own explain call traps, it shows the error, and the next photo is explained.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO, installResultLog, logLength, recordErrors, serveAndBrowse, waitForLog } from './harness.mjs';

const RECOVERY_MS = 2000;
const SAMPLES = join(REPO, 'assets/samples');
const MODEL = '/assets/models/efficientnet-lite0.safetensors';
// What a trap logs on purpose: the panic hook's console line (and Chromium's echo of it).
const EXPECTED = /gradcam-wasm: panicked|__testTrap|favicon/;

const env = serveAndBrowse();

async function blankPage() {
  const page = await env.browser.newPage();
  const errors = recordErrors(page);
  await page.goto(new URL('tests/e2e/blank.html', env.server.url).href);
  return { page, errors };
}

test('GradcamClient: a trap fails that call only, names the trap; the same client explains the next photo within 2 s', async () => {
  const { page, errors } = await blankPage();
  const out = await page.evaluate(async (MODEL) => {
    const { GradcamClient } = await import('/www/gradcam-client.js');
    const image = async (name) => {
      const bitmap = await createImageBitmap(await (await fetch(`/assets/samples/${name}`)).blob());
      const ctx = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d');
      ctx.drawImage(bitmap, 0, 0);
      return ctx.getImageData(0, 0, bitmap.width, bitmap.height);
    };
    const chelsea = await image('chelsea.png');
    const coffee = await image('coffee.png');
    const snap = (r) => ({ classIdx: r.classIdx, label: r.label, probability: r.probability });
    const failure = (e) => ({ error: true, name: e.name, message: e.message, trapped: !!e.trapped });
    const client = new GradcamClient();
    await client.load(MODEL, { backend: 'cpu' });
    const out = { before: { chelsea: snap(await client.explain(chelsea)), coffee: snap(await client.explain(coffee)) }, runs: [] };
    // A panic in a plain call, then one inside a wasm task (as in explainAsync).
    for (const inTask of [false, true]) {
      const t0 = performance.now();
      const trap = client.__testTrap({ inTask }).then(() => ({ error: false }), failure);
      const queued = client.explain(coffee).then(snap, failure); // sent before the trap: waits behind it
      const trapped = await trap;
      const tError = performance.now() - t0;
      const q = await queued;
      const next = snap(await client.explain(chelsea));
      out.runs.push({ inTask, trapped, queued: q, next, tError, tNext: performance.now() - t0 });
    }
    // The worker itself dies while a call is pending (an uncaught error in it, as a crash reports).
    const pending = client.explain(coffee, null, { method: 'scorecam' }).then(snap, failure);
    const t0 = performance.now();
    client.worker.dispatchEvent(new ErrorEvent('error', { message: 'simulated crash' }));
    out.died = { pending: await pending, next: snap(await client.explain(chelsea)), tNext: performance.now() - t0 };
    client.terminate();
    return out;
  }, MODEL);
  console.log('trap-recovery (client):', JSON.stringify(out, null, 1));
  const { before: b } = out;
  assert.ok([281, 282, 285].includes(b.chelsea.classIdx), `chelsea.png before the trap: ${JSON.stringify(b.chelsea)}`);
  assert.equal(b.coffee.classIdx, 967, 'coffee.png: espresso');
  for (const r of out.runs) {
    const where = r.inTask ? 'inside a wasm task' : 'in a call';
    assert.equal(r.trapped.error, true, `${where}: the trapping call must fail`);
    assert.equal(r.trapped.name, 'RuntimeError', `${where}: ${r.trapped.message}`);
    assert.ok(r.trapped.trapped, `${where}: the error is marked as a trap`);
    assert.match(r.trapped.message, /WebAssembly module trapped \(RuntimeError: unreachable\)/, `${where}: the message names the trap`);
    assert.match(r.trapped.message, /panicked at .*__testTrap/, `${where}: the message carries the Rust panic message`);
    assert.match(r.trapped.message, /re-instantiated and the model reloaded/, `${where}: the message says what was done`);
    assert.deepEqual(r.queued, b.coffee, `${where}: the call queued behind the trap runs on the new instance`);
    assert.deepEqual(r.next, b.chelsea, `${where}: the same client explains chelsea.png as before the trap`);
    assert.ok(r.tNext < RECOVERY_MS, `${where}: the next photo was explained ${r.tNext.toFixed(0)} ms after the trap (limit ${RECOVERY_MS})`);
  }
  assert.equal(out.died.pending.error, true, 'the call pending in the dead worker fails');
  assert.match(out.died.pending.message, /gradcam worker failed to start or crashed: simulated crash; this call was cancelled\. The next call starts a new worker and reloads the model/);
  assert.deepEqual(out.died.next, b.chelsea, 'a new worker with the model reloaded explains chelsea.png as before');
  assert.ok(out.died.tNext < RECOVERY_MS, `a new worker explained ${out.died.tNext.toFixed(0)} ms after the crash (limit ${RECOVERY_MS})`);
  assert.deepEqual(errors.filter((e) => !EXPECTED.test(e)), [], 'the page logged errors');
  await page.close();
});

test('<gradcam-explainer>: shows the trap, then the same element explains the next photo within 2 s', async () => {
  const { page, errors } = await blankPage();
  const out = await page.evaluate(async (MODEL) => {
    await import('/www/gradcam-explainer.js');
    const events = [];
    const el = document.createElement('gradcam-explainer');
    el.addEventListener('gradcam-result', (e) => events.push({ classIdx: e.detail.classIdx, label: e.detail.label, probability: e.detail.probability, src: el.getAttribute('src'), t: performance.now() }));
    el.addEventListener('gradcam-error', (e) => events.push({ error: e.detail.message, name: e.detail.name, t: performance.now() }));
    for (const [k, v] of Object.entries({ eager: '', backend: 'cpu', model: MODEL, src: '/assets/samples/chelsea.png' })) el.setAttribute(k, v);
    document.body.append(el);
    const waitFor = async (n, timeout) => {
      const t0 = performance.now();
      while (events.length < n) {
        if (performance.now() - t0 > timeout) throw new Error(`waited ${timeout} ms for event ${n}: ${JSON.stringify(events)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      return events[n - 1];
    };
    const first = await waitFor(1, 60000);
    // The element's next explain goes, once, to the test-only export: the element's own call traps.
    const client = el._client;
    const explain = client.explain;
    client.explain = () => {
      client.explain = explain;
      return client.__testTrap();
    };
    const t0 = performance.now();
    el.setAttribute('src', '/assets/samples/coffee.png');
    const trap = await waitFor(2, 10000);
    const shown = { text: el.shadowRoot.querySelector('.state .msg').textContent, error: el.shadowRoot.querySelector('.state').classList.contains('error'), hidden: el.shadowRoot.querySelector('.state').hidden };
    el.setAttribute('src', '/assets/samples/chelsea.png');
    const next = await waitFor(3, 10000);
    const sameClient = el._client === client;
    el.setAttribute('src', '/assets/samples/coffee.png');
    const coffee = await waitFor(4, 10000);
    return { first, trap, shown, next, coffee, sameClient, tNext: next.t - t0 };
  }, MODEL);
  console.log('trap-recovery (element):', JSON.stringify(out, null, 1));
  assert.ok(!out.first.error, `the element explained chelsea.png before the trap: ${JSON.stringify(out.first)}`);
  assert.match(out.trap.error || '', /WebAssembly module trapped \(RuntimeError: unreachable\).*panicked at/s, 'the element reports the trap');
  assert.equal(out.trap.name, 'RuntimeError');
  assert.ok(out.shown.error && !out.shown.hidden, 'the element shows the error');
  assert.match(out.shown.text, /trapped/, 'the element shows the trap message');
  assert.ok(!out.next.error, `after the trap: ${JSON.stringify(out.next)}`);
  assert.equal(out.next.classIdx, out.first.classIdx, 'the same element explains chelsea.png with the class it had before the trap');
  assert.equal(out.next.probability, out.first.probability);
  assert.ok(out.sameClient, 'the element still uses the same client');
  assert.equal(out.coffee.classIdx, 967, 'and the next photo (coffee.png) as espresso');
  assert.ok(out.tNext < RECOVERY_MS, `the element explained chelsea.png ${out.tNext.toFixed(0)} ms after the trap (limit ${RECOVERY_MS})`);
  assert.deepEqual(errors.filter((e) => !EXPECTED.test(e)), [], 'the page logged errors');
  await page.close();
});

test('a pkg/ whose glue cannot make a new instance: the trap is reported, the client replaces the worker and reloads the model', async () => {
  const context = await env.browser.newContext();
  // The glue of a wasm-bindgen run without --experimental-reset-state-function: no __wbg_reset_state export.
  let rewritten = 0;
  await context.route(/\/pkg\/((relaxed|threads)\/)?gradcam_wasm\.js$/, async (route) => {
    const response = await route.fetch();
    const body = (await response.text()).replace(/export function __wbg_reset_state\b/, () => {
      rewritten++;
      return 'function __wbg_reset_state';
    });
    await route.fulfill({ response, body });
  });
  const page = await context.newPage();
  const errors = recordErrors(page);
  await page.goto(new URL('tests/e2e/blank.html', env.server.url).href);
  const out = await page.evaluate(async (MODEL) => {
    const { GradcamClient } = await import('/www/gradcam-client.js');
    const bitmap = await createImageBitmap(await (await fetch('/assets/samples/chelsea.png')).blob());
    const ctx = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d');
    ctx.drawImage(bitmap, 0, 0);
    const chelsea = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
    const snap = (r) => ({ classIdx: r.classIdx, probability: r.probability });
    const failure = (e) => ({ error: true, name: e.name, message: e.message });
    const client = new GradcamClient();
    await client.load(MODEL, { backend: 'cpu' });
    const before = snap(await client.explain(chelsea));
    const firstWorker = client.worker;
    const t0 = performance.now();
    const trapped = await client.__testTrap().then(() => ({ error: false }), failure);
    const next = snap(await client.explain(chelsea));
    const tNext = performance.now() - t0;
    const out = { before, trapped, next, tNext, newWorker: client.worker !== firstWorker };
    client.terminate();
    return out;
  }, MODEL);
  console.log('trap-recovery (no reset in the glue):', JSON.stringify(out, null, 1));
  assert.ok(rewritten >= 1, 'the glue was served without __wbg_reset_state');
  assert.equal(out.trapped.name, 'RuntimeError');
  assert.match(out.trapped.message, /WebAssembly module trapped \(RuntimeError: unreachable\) during __testTrap\(\); the Rust code panicked at .*But this build of pkg\/ cannot make a new WebAssembly instance/);
  assert.ok(out.newWorker, 'the client started a new worker');
  assert.deepEqual(out.next, out.before, 'the new worker explains chelsea.png as before the trap');
  assert.ok(out.tNext < RECOVERY_MS, `explained ${out.tNext.toFixed(0)} ms after the trap (limit ${RECOVERY_MS})`);
  assert.deepEqual(errors.filter((e) => !EXPECTED.test(e)), [], 'the page logged errors');
  await context.close();
});

test('the demo page: its explain call traps, the page shows it, the next photo is explained within 2 s', async () => {
  const page = await env.browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = recordErrors(page);
  // The demo's client is private to its module: the trap is forced by turning the page's next
  // 'explain' message to its worker into the test-only '__testTrap' (same id, so the demo's own
  // call gets the trap's answer).
  await page.addInitScript(() => {
    const post = Worker.prototype.postMessage;
    window.__trapNextExplain = false;
    Worker.prototype.postMessage = function (msg, transfer) {
      if (window.__trapNextExplain && msg && msg.cmd === 'explain') {
        window.__trapNextExplain = false;
        window.__trapAt = performance.now();
        msg = { ...msg, cmd: '__testTrap' };
      }
      return post.call(this, msg, transfer);
    };
  });
  await page.goto(env.server.url);
  await page.waitForFunction(() => /ready in/.test(document.querySelector('#model-info').textContent), null, { timeout: 45000, polling: 50 });
  await page.waitForSelector('.tile[data-tile="guided-gradcam"].is-ready:not(.is-pending)', { timeout: 30000 });
  await installResultLog(page);
  const top1 = () => page.$$eval('#top5 li[data-class]', (lis) => Number(lis[0].dataset.class));

  let from = await logLength(page);
  await page.setInputFiles('#file-input', join(SAMPLES, 'chelsea.png'));
  const reset = await waitForLog(page, from, { title: 'chelsea.png', hasTiming: false }, 'chelsea.png to replace the photo');
  await waitForLog(page, reset.index + 1, { hasTiming: true, titleIncludes: '“' }, 'the explanation of chelsea.png');
  const before = await top1();
  await page.waitForSelector('.tile[data-tile="guided-gradcam"].is-ready:not(.is-pending)', { timeout: 30000 });

  await page.evaluate(() => (window.__trapNextExplain = true));
  await page.setInputFiles('#file-input', join(SAMPLES, 'coffee.png'));
  await page.waitForFunction(() => document.querySelector('#status').classList.contains('is-error'), null, { timeout: 10000, polling: 20 });
  const shown = await page.locator('#status').textContent();

  from = await logLength(page);
  await page.setInputFiles('#file-input', join(SAMPLES, 'chelsea.png'));
  // (#timing is still empty after the failed call, so no 'photo replaced' entry comes first)
  const entry = await waitForLog(page, from, { hasTiming: true, titleIncludes: '“' }, 'the explanation of chelsea.png after the trap', 10000);
  const after = await top1();
  const ms = entry.t - (await page.evaluate(() => window.__trapAt));
  const statusError = await page.locator('#status').evaluate((n) => n.classList.contains('is-error'));
  console.log(`trap-recovery (demo): shown "${shown}"; then ${entry.title} (${entry.sub}), ${ms.toFixed(0)} ms after the trap`);
  assert.match(shown, /WebAssembly module trapped \(RuntimeError: unreachable\).*panicked at .*model reloaded/, 'the page shows the trap');
  assert.equal(after, before, 'chelsea.png has the top class it had before the trap');
  assert.ok(entry.sub.startsWith(`class ${before} `), `the explanation is of that class: "${entry.sub}"`);
  assert.ok(!statusError, 'the error is cleared by the next result');
  assert.ok(ms < RECOVERY_MS, `the next photo was explained ${ms.toFixed(0)} ms after the trap (limit ${RECOVERY_MS})`);
  assert.deepEqual(errors.filter((e) => !EXPECTED.test(e) && !/trapped/.test(e)), [], 'the page logged errors');
  await page.close();
});
