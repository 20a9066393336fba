// The threaded wasm builds (issue 17) in Chromium: on a cross-origin-isolated page the client's
// worker runs one with a kernel thread per core: pkg/threads-relaxed/ by default (Chromium has relaxed
// SIMD), pkg/threads/ with `relaxedSimd: false`. Every method gives bitwise the map of the
// single-threaded build with the same SIMD (the kernels split their outputs, never a sum): the plain
// build, which a page that is not isolated runs with `relaxedSimd: false`, or the relaxed-SIMD build,
// which it runs by default (whose fused multiply-adds round differently from the plain build's:
// tests/e2e/relaxed-simd.test.mjs). `threads: 1` takes a single-threaded build on an isolated page too. The times of both builds are printed (the
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
let relaxed;
let threadedRelaxed;

test('an isolated page runs a threaded build with a thread per core; a plain page a single-threaded one', async () => {
  single = await explainAll(env.server, { relaxedSimd: false });
  threaded = await explainAll(env.isolated, { relaxedSimd: false });
  relaxed = await explainAll(env.server);
  threadedRelaxed = await explainAll(env.isolated);
  assert.equal(single.isolated, false);
  assert.equal(single.build.variant, 'simd');
  assert.equal(single.build.threads, 1);
  assert.match(single.build.note, /not cross-origin isolated/, 'the page is told why it runs on one thread');
  assert.equal(relaxed.build.variant, 'relaxed-simd', JSON.stringify(relaxed.build));
  assert.ok(threaded.cores >= 2, 'this test needs a machine with 2 cores or more');
  for (const [run, variant] of [[threaded, 'threads'], [threadedRelaxed, 'threads-relaxed-simd']]) {
    assert.equal(run.isolated, true);
    assert.deepEqual(run.build, { variant, threads: Math.min(16, run.cores), note: null });
    assert.deepEqual(run.errors, []);
  }
  for (const o of METHODS) {
    const ms = (run) => run.ms[o.method].toFixed(0);
    console.log(`# ${o.method} (ms): plain SIMD one thread ${ms(single)}, ${threaded.build.threads} threads ${ms(threaded)}; relaxed SIMD one thread ${ms(relaxed)}, ${threadedRelaxed.build.threads} threads ${ms(threadedRelaxed)}`);
  }
});

/** Checks that every method's map, class and logit are bitwise the same in the runs `a` and `b`. */
function assertBitwiseSame(a, b) {
  for (const o of METHODS) {
    const x = a.maps[o.method];
    const y = b.maps[o.method];
    assert.equal(y.classIdx, x.classIdx, o.method);
    assert.equal(y.logit, x.logit, `${o.method}: logit`);
    assert.equal(y.heatmap.length, x.heatmap.length);
    const diff = x.heatmap.reduce((m, v, i) => Math.max(m, Math.abs(v - y.heatmap[i])), 0);
    assert.equal(diff, 0, `${o.method}: max |difference| ${diff}`);
    assert.ok(x.heatmap.some((v) => v > 0.5), `${o.method}: the map is not empty`);
  }
}

test('every method gives bitwise the single-threaded map on the threaded build', () => {
  assert.ok(single && threaded, 'the first test ran');
  assertBitwiseSame(single, threaded);
});

test('every method gives bitwise the map of the relaxed-SIMD build on the threaded relaxed-SIMD build', () => {
  assert.ok(relaxed && threadedRelaxed, 'the first test ran');
  assertBitwiseSame(relaxed, threadedRelaxed);
  // The two SIMD flavours do differ (fused multiply-adds round once), so the check above is not
  // the plain build's map twice.
  const diff = single.maps.gradcam.heatmap.reduce((m, v, i) => Math.max(m, Math.abs(v - relaxed.maps.gradcam.heatmap[i])), 0);
  console.log(`# Grad-CAM map, plain vs relaxed SIMD: max |difference| ${diff}`);
  assert.notEqual(single.maps.gradcam.logit, relaxed.maps.gradcam.logit, 'the relaxed builds compute with fused multiply-adds');
});

test('threads: 1 takes a single-threaded build on an isolated page; a bad thread count is a clear error', async () => {
  const one = await explainAll(env.isolated, { threads: 1, relaxedSimd: false });
  assert.deepEqual(one.build, { variant: 'simd', threads: 1, note: null });
  assert.deepEqual(one.maps.gradcam.heatmap, single.maps.gradcam.heatmap);
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

test('where pkg/threads-relaxed/ is missing, an isolated page falls back to the plain threaded build and says why', async () => {
  assert.ok(threaded, 'the first test ran');
  const context = await env.browser.newContext();
  let refused = 0;
  await context.route('**/pkg/threads-relaxed/**', (route) => {
    refused++;
    return route.fulfill({ status: 404, contentType: 'text/plain', body: 'not deployed' });
  });
  const page = await context.newPage();
  await page.goto(new URL('tests/e2e/blank.html', env.isolated.url).href);
  const out = await page.evaluate(async () => {
    const { GradcamClient, toImageData } = await import('/www/gradcam-client.js');
    const client = new GradcamClient();
    const info = await client.load('/assets/models/efficientnet-lite0.safetensors');
    const r = await client.explain(await toImageData('/assets/samples/chelsea.png'), null, { method: 'gradcam' });
    client.terminate();
    return { build: info.build, heatmap: Array.from(r.heatmap) };
  });
  await context.close();
  assert.ok(refused > 0, 'the page asked for the relaxed threaded build');
  assert.equal(out.build.variant, 'threads', JSON.stringify(out.build));
  assert.match(out.build.note, /the threads-relaxed-simd build did not start/);
  assert.deepEqual(out.heatmap, threaded.maps.gradcam.heatmap, 'the map of the plain threaded build');
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
  assert.equal(out.build.variant, 'threads-relaxed-simd', 'the new worker runs the threaded build again');
  assert.ok(out.same, 'the same map after the restart');
});
