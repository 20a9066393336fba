#!/usr/bin/env node
// `npm run bench:ort` (node bench/ort.mjs [flags]): our whole Grad-CAM against onnxruntime-web's forward
// pass alone, single-threaded wasm on both sides, in one headless Chromium page per model. The goal:
// ours within 1.5x of ORT's forward. Prints a markdown table, writes bench/results/<date>-ort.json.
//
//   --models DIR        folder of <name>.onnx (+ <name>.onnx.data) (target/bench-models, from
//                       scripts/gen-bench-models.py)
//   --names a,b         which models (resnet50,efficientnet_b0,convnext_tiny,densenet121,mobilenet_v3_large,vit_b_16)
//   --runs N            timed runs per side (10), after --warmup N (2)
//   --guided-runs N     timed Guided Grad-CAM runs (3; 0 = none)
//   --max-run-s S       skip a model whose first Grad-CAM of ours takes more than S seconds (60)
//
// Parity first: on the same preprocessed input, the top-1 class and our top-5 logits must match ORT's
// within 1e-3 of ORT's max |logit|; otherwise the model gets no timings.

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { cpus } from 'node:os';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, REPO } from '../tests/e2e/harness.mjs';
import { serve, stats } from './serve.mjs';

const TOLERANCE = 1e-3;
const GOAL = 1.5;
const argv = process.argv.slice(2);
const opt = (k, d) => {
  const i = argv.indexOf(k);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : d;
};
const cfg = {
  models: resolve(opt('--models', join(REPO, 'target/bench-models'))),
  names: opt('--names', 'resnet50,efficientnet_b0,convnext_tiny,densenet121,mobilenet_v3_large,vit_b_16').split(',').filter(Boolean),
  runs: Number(opt('--runs', 10)),
  warmup: Number(opt('--warmup', 2)),
  guidedRuns: Number(opt('--guided-runs', 3)),
  maxRunS: Number(opt('--max-run-s', 60)),
};
const say = (s) => process.stderr.write(s + '\n');

for (const [p, why] of [
  ['pkg/gradcam_wasm.js', 'build the wasm package first (bash scripts/build-web.sh)'],
  ['node_modules/onnxruntime-web/dist/ort.wasm.min.mjs', 'npm install'],
]) {
  if (!existsSync(join(REPO, p))) {
    console.error(`${p} is missing: ${why}`);
    process.exit(1);
  }
}
if (!existsSync(cfg.models)) {
  console.error(`${cfg.models} is missing: python3 scripts/gen-bench-models.py, or --models DIR`);
  process.exit(1);
}

async function benchModel(browser, url, name) {
  const out = { name };
  const onnx = join(cfg.models, `${name}.onnx`);
  if (!existsSync(onnx)) return { name, error: `${onnx} is missing` };
  const hasData = existsSync(onnx + '.data');
  const context = await browser.newContext();
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && !/favicon|status of 404/.test(m.text()) && pageErrors.push(m.text()));
  try {
    await page.goto(url + 'bench/ort.html');
    await page.waitForFunction(() => window.O_READY === true, null, { timeout: 60000 });
    const call = (fn, ...args) => page.evaluate(([fn, args]) => window.O[fn](...args), [fn, args]);
    out.env = await call('init', { name, modelUrl: `/models/${name}.onnx`, dataUrl: hasData ? `/models/${name}.onnx.data` : null, imageUrl: '/assets/samples/chelsea.png' });
    // The weights are f32 in the external data file (torch's exporter); the .onnx itself holds the graph
    // and a few small constants, counted too.
    out.f32WeightBytes = out.env.dataBytes + out.env.onnxBytes;
    const lo = await call('loadOurs');
    if (lo.error) throw new Error(`ours: ${lo.error}`);
    const lr = await call('loadOrt');
    if (lr.error) throw new Error(`onnxruntime-web: ${lr.error}`);
    out.load = { ours: lo.ms, ort: lr.ms, oursLayer: lo.layer, oursWasmAfterLoad: lo.wasmBytes };
    out.parity = await call('parity');
    out.parity.pass = out.parity.oursTop1 === out.parity.ortTop1 && out.parity.rel <= TOLERANCE;
    say(`\n== ${name}: load ours ${lo.ms.toFixed(0)} ms, ORT ${lr.ms.toFixed(0)} ms; layer ${lo.layer}; parity top-1 ${out.parity.oursTop1}/${out.parity.ortTop1}, top-5 logits max diff ${out.parity.maxAbs.toExponential(2)} (rel ${out.parity.rel.toExponential(2)} of max |logit| ${out.parity.maxLogit.toExponential(2)}) ${out.parity.pass ? 'PASS' : 'FAIL'}`);
    if (!out.parity.pass) {
      out.error = `parity failed (top-1 ${out.parity.oursTop1}/${out.parity.ortTop1}, rel ${out.parity.rel.toExponential(1)})`;
      return out;
    }
    // Cold: the first Grad-CAM after parity (which ran the forward of image 0) and ORT's next run.
    const cold = await call('runOurs', 'gradcam');
    say(`first Grad-CAM of ours: ${cold.ms.toFixed(0)} ms`);
    if (cold.ms > cfg.maxRunS * 1000) {
      out.error = `skipped (a Grad-CAM of ours takes ${(cold.ms / 1000).toFixed(0)} s > --max-run-s ${cfg.maxRunS})`;
      return out;
    }
    for (let i = 0; i < cfg.warmup; i++) {
      await call('runOurs', 'gradcam');
      await call('runOrt');
    }
    const ours = [];
    const ortT = [];
    const parts = [];
    let reused = 0;
    // Interleaved: ORT, ours, ORT, ours... (the machine may be busy: both sides see the same load)
    for (let i = 0; i < cfg.runs; i++) {
      ortT.push((await call('runOrt')).ms);
      const o = await call('runOurs', 'gradcam');
      ours.push(o.ms);
      parts.push(o.timings);
      reused += o.reused ? 1 : 0;
    }
    out.memAfterGradcam = (await call('memory')).wasmBytes;
    const guided = [];
    const ortG = [];
    for (let i = 0; i < cfg.guidedRuns; i++) {
      ortG.push((await call('runOrt')).ms);
      const o = await call('runOurs', 'guided-gradcam');
      guided.push(o.ms);
      reused += o.reused ? 1 : 0;
    }
    out.memPeak = (await call('memory')).wasmBytes;
    out.ort = stats(ortT);
    out.gradcam = stats(ours);
    out.ortDuringGuided = stats(ortG);
    out.guided = stats(guided);
    out.forwardReused = reused;
    const med = (k) => stats(parts.map((p) => p[k]))?.median;
    out.gradcamParts = { preprocessMs: med('preprocessMs'), forwardMs: med('forwardMs'), methodMs: med('methodMs'), projectMs: med('projectMs') };
    out.ratio = out.gradcam.median / out.ort.median;
    out.goalMet = out.ratio <= GOAL;
    say(`ORT forward ${out.ort.median.toFixed(1)} ms [${out.ort.p25.toFixed(1)}-${out.ort.p75.toFixed(1)}], ours Grad-CAM ${out.gradcam.median.toFixed(1)} ms [${out.gradcam.p25.toFixed(1)}-${out.gradcam.p75.toFixed(1)}] (forward ${out.gradcamParts.forwardMs?.toFixed(1)}, method ${out.gradcamParts.methodMs?.toFixed(1)}), ratio ${out.ratio.toFixed(2)}${out.guided ? `; Guided Grad-CAM ${out.guided.median.toFixed(1)} ms` : ''}; wasm ${(out.memPeak / 1048576).toFixed(1)} MiB; forward reused ${reused}`);
    return out;
  } catch (e) {
    say(`${name}: ${e.stack || e}`);
    out.error = String(e.message || e).split('\n')[0].replace(/^page\.evaluate: /, '').slice(0, 300);
    return out;
  } finally {
    out.pageErrors = pageErrors.slice(0, 10);
    await context.close();
  }
}

const mib = (b) => (b == null ? '-' : (b / 1048576).toFixed(1));
const f = (x) => (x == null ? '-' : x >= 100 ? x.toFixed(0) : x.toFixed(1));

function table(results) {
  const L = [];
  L.push('| model | ORT forward ms | ours Grad-CAM ms | ratio (ours/ORT) | goal 1.5x met? | ours Guided Grad-CAM ms (ratio) | our peak wasm MiB | 4x weights MiB | parity (top-1, rel. logit diff) |');
  L.push('|---|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    const par = r.parity ? `${r.parity.oursTop1 === r.parity.ortTop1 ? 'same' : 'DIFFERENT'}, ${r.parity.rel.toExponential(1)}` : '-';
    if (!r.gradcam) {
      L.push(`| ${r.name} | ${r.error ?? '-'} | | | | | ${mib(r.memPeak ?? r.load?.oursWasmAfterLoad)} | ${r.f32WeightBytes ? mib(4 * r.f32WeightBytes) : '-'} | ${par} |`);
      continue;
    }
    const g = r.guided ? `${f(r.guided.median)} (${(r.guided.median / r.ortDuringGuided.median).toFixed(2)})` : '-';
    L.push(`| ${r.name} | ${f(r.ort.median)} | ${f(r.gradcam.median)} | ${r.ratio.toFixed(2)} | ${r.goalMet ? 'yes' : 'no'} | ${g} | ${mib(r.memPeak)} | ${mib(4 * r.f32WeightBytes)} | ${par} |`);
  }
  return L.join('\n');
}

const started = new Date();
const { server, url } = await serve(REPO, { '/models/': cfg.models });
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
const chromiumVersion = browser.version();
const results = [];
try {
  for (const name of cfg.names) results.push(await benchModel(browser, url, name));
} finally {
  await browser.close();
  server.close();
}
const md = table(results);
const doc = {
  date: started.toISOString(),
  config: { ...cfg, models: relative(REPO, cfg.models) || cfg.models },
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version, chromium: chromiumVersion, ort: results.find((r) => r.env)?.env.ortVersion, crossOriginIsolated: results.find((r) => r.env)?.env.crossOriginIsolated },
  results,
  table: md,
};
mkdirSync(join(REPO, 'bench/results'), { recursive: true });
const file = join(REPO, 'bench/results', `${started.toISOString().replace(/[:]/g, '-').replace(/\..*/, '')}-ort.json`);
writeFileSync(file, JSON.stringify(doc, null, 1));
console.log(md);
say(`\nwrote ${relative(REPO, file)}`);
