#!/usr/bin/env node
// Batches split across workers (issue 17, src/tape.rs), timed in headless Chromium on a page that is
// NOT cross-origin isolated, with the plain SIMD build (pkg/; --relaxed: pkg/relaxed/, which Chromium
// gets by default): a GradcamClient loaded with workers: 1
// against one with workers: N on the same page, interleaved, on EfficientNet-Lite0 and a photo
// (chelsea.png unless --image names another of assets/samples/):
//   - Score-CAM over all 1280 channels of the default layer,
//   - evaluate's deletion + insertion curves, 100 steps each (Grad-CAM's map),
//   - Integrated Gradients, 32 steps.
// Each result of N workers is checked bitwise against the one of 1 worker before it is timed.
// Prints the machine's load (`uptime`) before and after, and how much parallel CPU the machine gives
// right now: the time of N threads (node worker_threads) each spinning the same loop over the time of one (1.0: N free
// cores; N: one core's worth, as when others' builds use the rest). Other work skews the ratios.
//
//   node bench/shards.mjs [--workers N (2)] [--repeats R (2)] [--only scorecam,curves,ig] [--image astronaut.png] [--relaxed]
//                       [--score-cam-batch N (the executor's: 4)] [--isolated]

import { execSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { launchBrowser, startServer } from '../tests/e2e/harness.mjs';

const argv = process.argv.slice(2);
const opt = (k, d) => {
  const i = argv.indexOf(k);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : d;
};
const workers = Number(opt('--workers', 2));
const repeats = Number(opt('--repeats', 2));
const only = opt('--only', 'scorecam,curves,ig').split(',');
const image = opt('--image', 'chelsea.png');
const relaxedSimd = argv.includes('--relaxed');
const scoreCamBatch = opt('--score-cam-batch', null);
// --isolated: a cross-origin-isolated page, where N is the threaded build's thread pool instead
// (threads: 1, a single-threaded build, against threads: 'auto'); workers stay at 1 there.
const isolated = argv.includes('--isolated');
const load = () => execSync('uptime').toString().trim().replace(/^.*load/, 'load');

/** The time of `n` threads spinning the same loop at once over the time of one. */
async function spin(n) {
  const src = 'let x = 0; for (let i = 0; i < 5e8; i++) x += i % 7; require("node:worker_threads").parentPort.postMessage(x);';
  const time = async (k) => {
    const t0 = performance.now();
    await Promise.all(Array.from({ length: k }, () => new Promise((ok) => new Worker(src, { eval: true }).once('message', ok))));
    return performance.now() - t0;
  };
  const one = await time(1);
  return ((await time(n)) / one).toFixed(2);
}

const CASES = {
  scorecam: { label: 'Score-CAM, all 1280 channels', call: 'explain', options: { method: 'scorecam', ...(scoreCamBatch ? { scoreCamBatch: Number(scoreCamBatch) } : {}) } },
  curves: { label: 'deletion + insertion, 100 steps', call: 'evaluate', options: { method: 'gradcam', steps: 100 } },
  ig: { label: 'Integrated Gradients, 32 steps', call: 'explain', options: { method: 'integrated-gradients', igSteps: 32 } },
};

const [server, browser] = await Promise.all([startServer(isolated ? { extraArgs: ['--isolate'] } : {}), launchBrowser()]);
try {
  const page = await browser.newPage();
  page.on('console', (m) => m.type() === 'warning' && console.log(`page: ${m.text()}`));
  await page.goto(new URL('tests/e2e/blank.html', server.url).href);
  const setup = await page.evaluate(async ([n, image, relaxedSimd, isolated]) => {
    const { GradcamClient, toImageData } = await import('/www/gradcam-client.js');
    window.clients = {};
    for (const k of [1, n]) {
      clients[k] = new GradcamClient();
      await clients[k].load('/assets/models/efficientnet-lite0.safetensors', isolated ? { relaxedSimd, threads: k === 1 ? 1 : 'auto' } : { relaxedSimd, workers: k });
    }
    window.img = await toImageData(`/assets/samples/${image}`);
    window.bits = (a) => Array.from(new Uint32Array(Float32Array.from(a).buffer));
    window.key = (r) => bits(r.deletion ? [...r.deletion.scores, ...r.insertion.scores] : r.heatmap).join(',');
    window.run = async (k, call, options) => {
      const t0 = performance.now();
      const r = await clients[k][call](img, null, options);
      return { ms: performance.now() - t0, key: key(r) };
    };
    return { isolated: crossOriginIsolated, cores: navigator.hardwareConcurrency, build: [clients[1].model.build.variant, clients[n].model.build.variant].join(' vs '), workers: [clients[1].model.workers, clients[n].model.workers] };
  }, [workers, image, relaxedSimd, isolated]);
  console.log(`page: cross-origin isolated ${setup.isolated}, hardwareConcurrency ${setup.cores}, build ${setup.build}, workers ${setup.workers.join(' vs ')}`);
  console.log(`before: ${load()}; ${workers} spinning threads take ${await spin(workers)}x the time of one`);
  const rows = [];
  for (const name of only) {
    const c = CASES[name];
    const capacity = await spin(workers);
    // Untimed: starts the shard workers and checks that both give the same bits.
    const warm = await page.evaluate(async ([k, c]) => [await run(1, c.call, c.options), await run(k, c.call, c.options)], [workers, c]);
    if (warm[0].key !== warm[1].key) throw new Error(`${c.label}: ${workers} workers differ from 1`);
    const times = { 1: [], [workers]: [] };
    for (let r = 0; r < repeats; r++) {
      for (const k of r % 2 ? [workers, 1] : [1, workers]) {
        const t = await page.evaluate(async ([k, c]) => run(k, c.call, c.options), [k, c]);
        if (t.key !== warm[0].key) throw new Error(`${c.label}: run ${r} with ${k} workers differs`);
        times[k].push(t.ms);
      }
    }
    const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
    const row = { case: c.label, one: median(times[1]), many: median(times[workers]), all: times, load: load() };
    rows.push(row);
    console.log(`${c.label}: 1 worker ${(row.one / 1000).toFixed(2)} s, ${workers} workers ${(row.many / 1000).toFixed(2)} s (ratio ${(row.many / row.one).toFixed(2)}); runs ${JSON.stringify(times)}; ${row.load}; spinning threads ${capacity}x`);
  }
  console.log(`after: ${load()}; ${workers} spinning threads take ${await spin(workers)}x the time of one`);
} finally {
  await browser.close().catch(() => {});
  await server.stop();
}
