// The threaded wasm build (pkg/threads/, issue 17) in Chromium: on a cross-origin-isolated page the
// client's worker runs it with one kernel thread per core, and every method gives bitwise the map of
// the plain single-threaded build (the kernels split their outputs, never a sum), which a page that
// is not isolated runs with `relaxedSimd: false` (by default it runs the relaxed-SIMD build, whose
// fused multiply-adds round differently: tests/e2e/relaxed-simd.test.mjs). `threads: 1` takes a
// single-threaded build on an isolated page too. The times of both builds are printed (the
// benchmark, `npm run bench`, measures them properly). A kernel thread that traps is recovered from.
//   node --test tests/e2e/threads.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recordErrors, serveAndBrowse } from './harness.mjs';

// env.server: not isolated, the single-threaded build; env.isolated: COOP + COEP, the threaded build.
const env = serveAndBrowse({ isolated: true });

const METHODS = [
  { method: 'gradcam' },
  { method: 'guided-gradcam' },
  { method: 'scorecam', scoreCamChannels: 16 },
  { method: 'integrated-gradients', igSteps: 8 },
];

/** Loads the default model in a client on `site` and explains chelsea.png with every method in METHODS. */
async function explainAll(site, loadOptions = {}) {
  const page = await env.browser.newPage();
  const errors = recordErrors(page);
  await page.goto(new URL('tests/e2e/blank.html', site.url).href);
  const out = await page.evaluate(
    async ({ methods, loadOptions }) => {
      const { GradcamClient, toImageData } = await import('/www/gradcam-client.js');
      const client = new GradcamClient();
      const info = await client.load('/assets/models/efficientnet-lite0.safetensors', loadOptions);
      const img = await toImageData('/assets/samples/chelsea.png');
      const maps = {};
      const ms = {};
      for (const o of methods) {
        await client.explain(img, null, o); // warm
        const t0 = performance.now();
        const r = await client.explain(img, null, o);
        ms[o.method] = performance.now() - t0;
        maps[o.method] = { heatmap: Array.from(r.heatmap), classIdx: r.classIdx, logit: r.logit };
      }
      client.terminate();
      return { build: info.build, isolated: self.crossOriginIsolated, cores: navigator.hardwareConcurrency, maps, ms };
    },
    { methods: METHODS, loadOptions },
  );
  await page.close();
  return { ...out, errors };
}

let single;
let threaded;

test('an isolated page runs the threaded build with a thread per core; a plain page the single-threaded one', async () => {
  [single, threaded] = [await explainAll(env.server, { relaxedSimd: false }), await explainAll(env.isolated)];
  assert.equal(single.isolated, false);
  assert.equal(single.build.variant, 'simd');
  assert.equal(single.build.threads, 1);
  assert.match(single.build.note, /not cross-origin isolated/, 'the page is told why it runs on one thread');
  assert.equal(threaded.isolated, true);
  assert.equal(threaded.build.variant, 'threads', JSON.stringify(threaded.build));
  assert.equal(threaded.build.threads, Math.min(16, threaded.cores));
  assert.ok(threaded.cores >= 2, 'this test needs a machine with 2 cores or more');
  assert.deepEqual(threaded.errors, []);
  for (const o of METHODS) {
    console.log(`# ${o.method}: one thread ${single.ms[o.method].toFixed(0)} ms, ${threaded.build.threads} threads ${threaded.ms[o.method].toFixed(0)} ms`);
  }
});

test('every method gives bitwise the single-threaded map on the threaded build', () => {
  assert.ok(single && threaded, 'the first test ran');
  for (const o of METHODS) {
    const a = single.maps[o.method];
    const b = threaded.maps[o.method];
    assert.equal(b.classIdx, a.classIdx, o.method);
    assert.equal(b.logit, a.logit, `${o.method}: logit`);
    assert.equal(b.heatmap.length, a.heatmap.length);
    const diff = a.heatmap.reduce((m, v, i) => Math.max(m, Math.abs(v - b.heatmap[i])), 0);
    assert.equal(diff, 0, `${o.method}: max |difference| ${diff}`);
    assert.ok(a.heatmap.some((v) => v > 0.5), `${o.method}: the map is not empty`);
  }
});

test('threads: 1 takes a single-threaded build on an isolated page, a plain page the relaxed-SIMD one by default; a bad thread count is a clear error', async () => {
  const one = await explainAll(env.isolated, { threads: 1, relaxedSimd: false });
  assert.deepEqual(one.build, { variant: 'simd', threads: 1, note: null });
  assert.deepEqual(one.maps.gradcam.heatmap, single.maps.gradcam.heatmap);
  const relaxed = await explainAll(env.server);
  assert.equal(relaxed.build.variant, 'relaxed-simd', JSON.stringify(relaxed.build));
  assert.equal(relaxed.maps.gradcam.classIdx, single.maps.gradcam.classIdx);
  const page = await env.browser.newPage();
  await page.goto(new URL('tests/e2e/blank.html', env.isolated.url).href);
  const message = await page.evaluate(async () => {
    const { GradcamClient } = await import('/www/gradcam-client.js');
    const client = new GradcamClient();
    try {
      await client.load('/assets/models/efficientnet-lite0.safetensors', { threads: 1000 });
      return 'loaded';
    } catch (e) {
      return e.message;
    } finally {
      client.terminate();
    }
  });
  await page.close();
  assert.match(message, /threads must be 'auto' or a whole number from 1 to 64, not 1000/);
});

test('a kernel thread that traps: the call fails with a message, the client replaces the worker, the next call gives the same map', async () => {
  const page = await env.browser.newPage();
  await page.goto(new URL('tests/e2e/blank.html', env.isolated.url).href);
  const out = await page.evaluate(async () => {
    const { GradcamClient, toImageData } = await import('/www/gradcam-client.js');
    const client = new GradcamClient();
    await client.load('/assets/models/efficientnet-lite0.safetensors');
    const img = await toImageData('/assets/samples/chelsea.png');
    const before = await client.explain(img, null, { method: 'guided-gradcam' });
    const firstWorker = client.worker;
    let error = null;
    const t0 = performance.now();
    try {
      await client.__testTrap({ inPool: true });
    } catch (e) {
      error = { name: e.name, message: e.message, ms: performance.now() - t0 };
    }
    const after = await client.explain(img, null, { method: 'guided-gradcam' });
    const same = before.heatmap.length === after.heatmap.length && before.heatmap.every((v, i) => v === after.heatmap[i]);
    const result = { error, same, replaced: client.worker !== firstWorker, build: client.model.build };
    client.terminate();
    return result;
  });
  await page.close();
  assert.ok(out.error, 'the trapping call rejected');
  assert.equal(out.error.name, 'WorkerError');
  assert.match(out.error.message, /kernel thread that trapped .*__testTrapInPool\(\): a panic on purpose in a pool thread/);
  assert.ok(out.replaced, 'a new worker');
  assert.equal(out.build.variant, 'threads', 'the new worker runs the threaded build again');
  assert.ok(out.same, 'the same map after the restart');
});
