#!/usr/bin/env node
// node bench/profile.mjs [--build] [--runs N] [--method gradcam|guided-gradcam]: where the threaded
// build's time goes, op kind by op kind, next to the single-threaded build's, in headless Chromium on a
// cross-origin-isolated page. Each build runs in a worker of its own; runs alternate between them.
// Needs builds with the `profile` feature in pkg/relaxed/ and pkg/threads-relaxed/: --build makes them
// (`scripts/build-web.sh --profile`; scripts/build-web.sh without the flag puts the real ones back).
import { spawnSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, REPO } from '../tests/e2e/harness.mjs';
import { serve } from './serve.mjs';

const argv = process.argv.slice(2);
const opt = (k, d) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : d);
const runs = Number(opt('--runs', 20));
const method = opt('--method', 'gradcam');

if (argv.includes('--build')) {
  const r = spawnSync('bash', ['scripts/build-web.sh', '--profile'], { cwd: REPO, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const { server, url } = await serve(REPO);
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.log('page:', m.text()));
  await page.goto(`${url}/bench/index.html`);
  const out = await page.evaluate(
    async ({ runs, method }) => {
      const start = (threads) => {
        const w = new Worker('/bench/profile-worker.mjs', { type: 'module' });
        let next = 1;
        const waiting = new Map();
        w.onmessage = ({ data }) => {
          const p = waiting.get(data.id);
          waiting.delete(data.id);
          data.error ? p.reject(new Error(data.error)) : p.resolve(data.value);
        };
        const call = (cmd, args) => new Promise((resolve, reject) => { const id = next++; waiting.set(id, { resolve, reject }); w.postMessage({ id, cmd, args }); });
        return { threads, call };
      };
      const sides = [start(1), start('auto')];
      const info = [];
      for (const s of sides) info.push(await s.call('load', { threads: s.threads, modelUrl: '/assets/models/efficientnet-lite0.safetensors', imageUrls: ['/assets/samples/chelsea.png', '/assets/samples/coffee.png'] }));
      const table = sides.map(() => new Map());
      const wall = sides.map(() => []);
      for (let i = 0; i < runs + 3; i++) {
        for (const [k, s] of sides.entries()) {
          const r = await s.call('run', { method, profiled: i >= 3 && i % 2 === 1 });
          if (i < 3) continue;
          if (i % 2 === 0) wall[k].push(r.ms); // unprofiled runs give the wall times
          for (const line of r.ops.split('\n').filter(Boolean)) {
            const [kind, ms, n] = line.split('\t');
            const e = table[k].get(kind) || [0, 0];
            table[k].set(kind, [e[0] + Number(ms), e[1] + Number(n)]);
          }
        }
      }
      return { info, wall, table: table.map((t) => [...t]) };
    },
    { runs, method },
  );
  const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const profiled = Math.floor(runs / 2);
  const [one, many] = out.table.map((t) => new Map(t));
  console.log(`${method}, EfficientNet-Lite0, chelsea.png and coffee.png: ${out.info.map((i) => `${i.variant} (${i.threads} threads) ${median(out.wall[out.info.indexOf(i)]).toFixed(1)} ms`).join(' vs ')}`);
  console.log('op kind (ms per explanation, summed over its calls): one thread, threads, ratio');
  const kinds = [...new Set([...one.keys(), ...many.keys()])].filter((k) => !k.startsWith('  ') || k.startsWith('  parallel')).sort((a, b) => (one.get(b)?.[0] ?? 0) - (one.get(a)?.[0] ?? 0));
  let sum = [0, 0];
  for (const k of kinds) {
    const [a, b] = [one.get(k)?.[0] ?? 0, many.get(k)?.[0] ?? 0].map((v) => v / profiled);
    if (!k.startsWith('  ')) sum = [sum[0] + a, sum[1] + b];
    console.log(`${k.padEnd(32)} ${a.toFixed(2).padStart(7)} ${b.toFixed(2).padStart(7)} ${(b / a).toFixed(2).padStart(6)}  (${(one.get(k)?.[1] ?? 0) / profiled} / ${(many.get(k)?.[1] ?? 0) / profiled} calls)`);
  }
  console.log(`${'sum of the timed ops'.padEnd(32)} ${sum[0].toFixed(2).padStart(7)} ${sum[1].toFixed(2).padStart(7)} ${(sum[1] / sum[0]).toFixed(2).padStart(6)}`);
} finally {
  await browser.close();
  server.close();
}
