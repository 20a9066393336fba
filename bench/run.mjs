#!/usr/bin/env node
// `npm run bench` (node bench/run.mjs [flags]): gradcam-wasm against TensorFlow.js 4.22 in headless
// Chromium, plus the native Rust core; prints a markdown table and writes bench/results/<date>.json.
//
//   --quick                  EfficientNet-Lite0 and ResNet-18, Grad-CAM + Guided Grad-CAM, 5 runs, TF.js wasm/cpu/webgl
//   --archs a,b              efficientnet_lite0,resnet18,mobilenet_v2,vgg16
//   --methods m,n            gradcam,guided-gradcam,scorecam
//   --peers p,q              TF.js backends: wasm,cpu (CPU path), webgpu,webgl (GPU path); relaxed: our own
//                            relaxed-SIMD build (pkg/relaxed/) as the CPU path's peer, plain vs relaxed
//   --runs N                 steady-state runs per side and cell (20)
//   --loads N                model loads per side (3)
//   --scorecam-runs N        (3)      --scorecam-channels N  highest-variance channels, both sides (32; 0 = all)
//   --budget-s S             stop a cell's steady-state loop after S seconds (at least 1 run; 60)
//   --max-run-s S            skip a cell whose estimated single run exceeds S seconds (60)
//   --gpu-archs a,b          archs on the GPU path (efficientnet_lite0,resnet18,mobilenet_v2)
//   --tfjs-threads N         TF.js wasm backend threads (1: our wasm is single-threaded)
//   --ours-build B           our single-threaded build, for the paths cpu and webgpu: auto (default), the one
//                            the client picks (pkg/relaxed/ where the engine has relaxed SIMD, as Chromium
//                            does, else pkg/); plain: pkg/, plain SIMD, which every engine runs (with
//                            --peers relaxed: plain against relaxed); relaxed: pkg/relaxed/
//   --no-threads             skip our threaded build (run in a worker: path 'threads'; pkg/threads-relaxed/
//                            where Chromium has relaxed SIMD, as the client picks it)
//   --threads-plain          the threaded build without relaxed SIMD (pkg/threads/)
//   --threads-ab             both threaded builds, interleaved with one thread (relaxed SIMD or not)
//   --threads-one            the threaded build with a pool of one thread as the third in each round:
//                            what the threaded build costs before any split (its atomics, its allocator)
//   --no-ceiling             skip the two-core ceiling that comes with threads vs one thread: two workers of
//                            one thread each, the same explanation on both at once, against one alone
//   --no-native, --no-gpu, --no-sizes
//
// The page (bench/index.html, bench/page.mjs) runs our package from pkg/ (scripts/build-web.sh) in the
// main thread; bench/tfjs-models.mjs builds the same networks in TF.js on the same weights. Before any
// timing, each TF.js backend's logits and raw Grad-CAM map must match ours within 1e-3 (max abs diff).

import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve, sep, relative } from 'node:path';
import { spawnSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import { cpus } from 'node:os';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, REPO } from '../tests/e2e/harness.mjs';
import { serve, stats } from './serve.mjs';

const TOLERANCE = 1e-3;
const argv = process.argv.slice(2);
const has = (k) => argv.includes(k);
const opt = (k, d) => {
  const i = argv.indexOf(k);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : d;
};
const quick = has('--quick');
const list = (k, d) => opt(k, d).split(',').filter(Boolean);
const cfg = {
  quick,
  archs: list('--archs', quick ? 'efficientnet_lite0,resnet18' : 'efficientnet_lite0,resnet18,mobilenet_v2,vgg16'),
  methods: list('--methods', quick ? 'gradcam,guided-gradcam' : 'gradcam,guided-gradcam,scorecam'),
  peers: list('--peers', quick ? 'wasm,cpu,webgl' : 'wasm,cpu,webgpu,webgl'),
  runs: Number(opt('--runs', quick ? 5 : 20)),
  loads: Number(opt('--loads', quick ? 1 : 3)),
  scorecamRuns: Number(opt('--scorecam-runs', quick ? 1 : 3)),
  scorecamChannels: Number(opt('--scorecam-channels', 32)),
  budgetS: Number(opt('--budget-s', quick ? 15 : 60)),
  maxRunS: Number(opt('--max-run-s', quick ? 20 : 60)),
  gpuArchs: list('--gpu-archs', 'efficientnet_lite0,resnet18,mobilenet_v2'),
  tfjsThreads: Number(opt('--tfjs-threads', 1)),
  threads: !has('--no-threads') && existsSync(join(REPO, 'pkg/threads/gradcam_wasm.js')),
  threadsRelaxed: !has('--threads-plain'),
  threadsAb: has('--threads-ab'),
  threadsOne: has('--threads-one'),
  oursBuild: opt('--ours-build', 'auto'),
  ceiling: !has('--no-ceiling'),
  native: !has('--no-native'),
  gpu: !has('--no-gpu'),
  sizes: !has('--no-sizes'),
};
if (!['auto', 'plain', 'relaxed'].includes(cfg.oursBuild)) {
  console.error(`--ours-build ${cfg.oursBuild}: expected auto, plain or relaxed`);
  process.exit(2);
}
if (cfg.oursBuild !== 'plain' && !existsSync(join(REPO, 'pkg/relaxed/gradcam_wasm.js'))) {
  console.error(`--ours-build ${cfg.oursBuild}: pkg/relaxed/ is missing: bash scripts/build-web.sh builds it (or --ours-build plain)`);
  process.exit(1);
}
const CPU_PEERS = ['wasm', 'cpu', 'relaxed'].filter((p) => cfg.peers.includes(p));
const GPU_PEERS = ['webgpu', 'webgl'].filter((p) => cfg.peers.includes(p));
const METHOD_NAME = { gradcam: 'Grad-CAM', 'guided-gradcam': 'Guided Grad-CAM', scorecam: 'Score-CAM' };
const say = (s) => process.stderr.write(s + '\n');
/** A peer's name in the output: a TF.js backend, or our relaxed-SIMD build. */
const peerName = (peer) => (peer === 'relaxed' ? 'ours-relaxed' : `tfjs-${peer}`);

// ------------------------------------------------------------------ inputs

if (!existsSync(join(REPO, 'pkg/gradcam_wasm.js'))) {
  console.error('pkg/ is missing: build the wasm package first (bash scripts/build-web.sh)');
  process.exit(1);
}
if (!existsSync(join(REPO, 'node_modules/@tensorflow/tfjs/dist/tf.min.js'))) {
  console.error('TensorFlow.js is missing: npm install');
  process.exit(1);
}

function modelPath(arch) {
  if (arch === 'efficientnet_lite0') {
    const p = join(REPO, 'assets/models/efficientnet-lite0.safetensors');
    if (!existsSync(p)) throw new Error(`${p} is missing: run scripts/setup.sh`);
    return p;
  }
  const dir = join(REPO, 'bench/weights');
  mkdirSync(dir, { recursive: true });
  const p = join(dir, `${arch}.safetensors`);
  if (!existsSync(p)) {
    say(`writing synthetic ${arch} weights to ${relative(REPO, p)} (cargo run --release --bin bench -- --write-synthetic)`);
    const r = spawnSync('cargo', ['run', '--quiet', '--release', '--bin', 'bench', '--', '--write-synthetic', arch, p], { cwd: REPO, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`could not write synthetic weights for ${arch}`);
  }
  return p;
}

// ------------------------------------------------------------------ the browser part

/** The CPU path's peak wasm memory, alone on a page of its own (see `cpuPeakMemory` in page.mjs). */
async function cpuPeakMemory(browser, url, arch, modelUrl) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(url + 'bench/index.html');
    await page.waitForFunction(() => window.B_READY === true, null, { timeout: 60000 });
    const call = (fn, ...args) => page.evaluate(([fn, args]) => window.B[fn](...args), [fn, args]);
    await call('init', { arch, modelUrl, imageUrl: '/assets/samples/chelsea.png', tfjsThreads: cfg.tfjsThreads, scoreCamChannels: null, oursBuild: cfg.oursBuild });
    return await call('cpuPeakMemory');
  } catch (e) {
    return { error: `n/a (${String(e.message || e).split('\n')[0].slice(0, 200)})` };
  } finally {
    await context.close();
  }
}

async function benchArch(browser, url, arch) {
  const out = { arch, cells: [], loads: [], parity: [], gpu: null };
  const modelUrl = '/' + relative(REPO, modelPath(arch)).split(sep).join('/');
  const context = await browser.newContext();
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => ['error', 'warning'].includes(m.type()) && !/favicon|status of 404|willReadFrequently/.test(m.text()) && pageErrors.push(`${m.type()}: ${m.text()}`));
  await page.goto(url + 'bench/index.html');
  await page.waitForFunction(() => window.B_READY === true, null, { timeout: 60000 });
  const call = (fn, ...args) => page.evaluate(([fn, args]) => window.B[fn](...args), [fn, args]);

  out.env = await call('init', { arch, modelUrl, imageUrl: '/assets/samples/chelsea.png', tfjsThreads: cfg.tfjsThreads, scoreCamChannels: cfg.scorecamChannels || null, threadsRelaxed: cfg.threadsRelaxed, threadsOne: cfg.threadsOne, oursBuild: cfg.oursBuild });
  say(`\n== ${arch} (${(out.env.modelBytes / 1e6).toFixed(1)} MB weights file; ours on one thread: the ${out.env.oursBuild === 'relaxed' ? 'relaxed-SIMD' : 'plain SIMD'} build)`);
  // Before anything else touches the GPU or the CPU: the number issue 5 bounds by 4x the f32 weights.
  out.cpuPeak = await cpuPeakMemory(browser, url, arch, modelUrl);
  const f32mb = (out.env.params * 4) / 1048576;
  say(out.cpuPeak.error ? `cpu peak memory: ${out.cpuPeak.error}` : `cpu peak memory (own page): ${(out.cpuPeak.explained / 1048576).toFixed(1)} MiB after Grad-CAM + Guided Grad-CAM (${(out.cpuPeak.loaded / 1048576).toFixed(1)} loaded); 4x f32 weights = ${(4 * f32mb).toFixed(1)} MiB`);

  // Our CPU explainer first: its top-1 class is the class every run explains, its logits and raw
  // Grad-CAM map are the parity reference.
  const first = await call('loadOurs', 'cpu');
  if (first.error) throw new Error(`our explainer failed to load ${arch}: ${first.error}`);
  out.layer = first.layer;
  const firstCold = await call('runOurs', 'cpu', 'gradcam');
  out.ref = await call('reference');
  say(`ours cpu: load ${first.ms.toFixed(0)} ms, cold Grad-CAM ${firstCold.ms.toFixed(0)} ms, class ${out.ref.cls}, layer ${out.ref.layer}, raw ${out.ref.rawShape.join('x')}`);

  async function pairing(path, peer) {
    const pair = `${path} vs ${peerName(peer)}`;
    // Model load, interleaved: ours, peer, ours, peer...
    const lo = [];
    const lp = [];
    let peerError = null;
    let oursError = null;
    for (let i = 0; i < cfg.loads; i++) {
      const o = await call('loadOurs', path);
      if (o.error) {
        oursError = o.error;
        break;
      }
      lo.push(o.ms);
      const p = await call('loadPeer', peer);
      if (p.error) {
        peerError = p.error;
        break;
      }
      lp.push(p.ms);
      out.peerInfo = { ...(out.peerInfo || {}), [peer]: p };
    }
    if (oursError) {
      say(`${pair}: ours ${oursError}`);
      out.loads.push({ path, peer, ours: { error: oursError } });
      for (const method of cfg.methods) out.cells.push({ path, peer, method, error: `ours: ${oursError}` });
      return;
    }
    out.loads.push({ path, peer, ours: stats(lo), peerStats: peerError ? { error: peerError } : stats(lp) });
    if (peerError) {
      say(`${pair}: peer ${peerError}`);
      for (const method of cfg.methods) out.cells.push({ path, peer, method, error: peerError });
      return;
    }
    // Cold: the first Grad-CAM after the load, on each side.
    const co = await call('runOurs', path, 'gradcam');
    const cp = await call('runPeer', 'gradcam');
    // Parity before timing anything.
    const par = cp.error ? cp : await call('peerParity');
    const ok = !par.error && par.logitsMaxAbs <= TOLERANCE && par.rawMaxAbs <= TOLERANCE;
    out.parity.push({ path, peer, ...par, pass: ok });
    say(
      `${pair}: load ${stats(lo).median.toFixed(0)} / ${stats(lp).median.toFixed(0)} ms; parity ` +
        (par.error ? par.error : `logits ${par.logitsMaxAbs.toExponential(2)}, raw map ${par.rawMaxAbs.toExponential(2)} (max |logit| ${par.maxLogit.toFixed(1)}, max raw ${par.maxRaw.toExponential(2)}) ${ok ? 'PASS' : 'FAIL'}`),
    );
    if (!ok) {
      const pg = out.peerInfo?.[peer]?.poolGrad;
      const poolNote = pg && Math.abs(pg.gradientSum - pg.windows) > 0.5 ? `; TF.js ${peer} MaxPoolGrad drops gradients: ${pg.gradientSum} of ${pg.windows} windows reach the input` : '';
      const why = par.error || `n/a (parity failed: logits ${par.logitsMaxAbs.toExponential(1)}, raw map ${par.rawMaxAbs.toExponential(1)}${poolNote})`;
      out.parity[out.parity.length - 1].why = why;
      for (const method of cfg.methods) out.cells.push({ path, peer, method, error: why, oursCold: method === 'gradcam' ? co.ms : undefined });
      await call('disposePeer');
      return;
    }
    for (const method of cfg.methods) {
      const cell = { path, peer, method, ours: { times: [] }, peerT: { times: [] } };
      out.cells.push(cell);
      // wasm memory only grows: its size before the first Score-CAM is the peak of the other methods.
      if (method === 'scorecam' && out.memoryBeforeScoreCam == null) out.memoryBeforeScoreCam = await call('memory');
      let oc = co;
      let pc = cp;
      if (method !== 'gradcam') {
        // Skip what would take too long: estimate one run of each side from its cold Grad-CAM. When
        // only the peer's is too long, ours is still timed alone (the row says why the peer has none).
        const factor = method === 'scorecam' ? (cfg.scorecamChannels || 1280) + 1 : 4;
        const estOurs = (co.ms * factor) / 1000;
        const estPeer = (cp.ms * factor) / 1000;
        if (estOurs > cfg.maxRunS) {
          cell.error = `skipped (est. ${estOurs.toFixed(0)} s per run of ours > --max-run-s ${cfg.maxRunS})`;
          say(`${pair} ${method}: ${cell.error}`);
          continue;
        }
        oc = await call('runOurs', path, method);
        pc = estPeer > cfg.maxRunS ? { error: `skipped (est. ${estPeer.toFixed(0)} s per run > --max-run-s ${cfg.maxRunS})` } : await call('runPeer', method);
      }
      cell.ours.cold = oc.ms;
      cell.ours.backend = oc.backend;
      if (pc.error) {
        cell.error = pc.error;
        say(`${pair} ${method}: peer ${pc.error}`);
        // still time ours alone (the row shows it, with the peer's reason)
      } else cell.peerT.cold = pc.ms;
      if (!cell.error && pc.ms > cfg.maxRunS * 1000) {
        cell.error = `steady state skipped (first run ${(pc.ms / 1000).toFixed(0)} s > --max-run-s ${cfg.maxRunS})`;
      }
      const n = method === 'scorecam' ? cfg.scorecamRuns : cfg.runs;
      const t0 = Date.now();
      let reused = 0;
      for (let i = 0; i < n; i++) {
        if (i > 0 && Date.now() - t0 > cfg.budgetS * 1000) {
          cell.cut = `stopped after ${i} runs (--budget-s ${cfg.budgetS})`;
          break;
        }
        const o = await call('runOurs', path, method);
        cell.ours.times.push(o.ms);
        reused += o.reused ? 1 : 0;
        if (o.backend !== path) cell.oursFellBack = (cell.oursFellBack || 0) + 1;
        if (!cell.error) {
          const p = await call('runPeer', method);
          if (p.error) {
            cell.error = p.error;
            continue;
          }
          cell.peerT.times.push(p.ms);
        }
      }
      cell.ours.stats = stats(cell.ours.times);
      cell.peerT.stats = stats(cell.peerT.times);
      cell.forwardReused = reused;
      const ps = cell.peerT.stats;
      say(
        `${pair} ${method}: ours ${cell.ours.stats.median.toFixed(1)} ms` +
          (ps ? `, peer ${ps.median.toFixed(1)} ms, ratio ${ratio(cell.ours.stats.median, ps.median)}` : `, peer ${cell.error}`) +
          ` (n=${cell.ours.stats.n}${cell.cut ? ', ' + cell.cut : ''})`,
      );
    }
    await call('disposePeer');
  }

  const paths = [{ path: 'cpu', peers: CPU_PEERS }];
  if (cfg.threads) paths.push({ path: 'threads', peers: CPU_PEERS });
  if (cfg.gpu) {
    if (!cfg.gpuArchs.includes(arch)) out.gpu = { skipped: `not in --gpu-archs (software WebGPU adapter on this machine; add ${arch} to run it)` };
    else paths.push({ path: 'webgpu', peers: GPU_PEERS });
  }
  for (const { path, peers } of paths) {
    if (path === 'threads') {
      const o = await call('loadOurs', 'threads');
      if (o.error) {
        out.threads = { error: o.error };
        say(`ours threads: ${o.error}`);
        continue;
      }
      say(`ours threads: the ${o.info.variant} build, ${o.info.threads} threads`);
      const other = cfg.threadsAb || cfg.threadsOne ? await call('loadOurs', 'threads-other') : null;
      if (other?.error) say(`ours threads, the other build: ${other.error}`);
      const otherVariant = other && !other.error ? other.info.variant : null;
      let pair = false;
      if (cfg.ceiling && o.info.threads !== 2) say(`two-core ceiling: skipped (a pool of ${o.info.threads} threads)`);
      else if (cfg.ceiling) {
        const loaded = [await call('loadOurs', 'threads-pair-a'), await call('loadOurs', 'threads-pair-b')];
        const failed = loaded.find((r) => r.error);
        if (failed) say(`two-core ceiling: ${failed.error}`);
        pair = !failed;
      }
      out.threads = { threads: o.info.threads, variant: o.info.variant, otherVariant, vsOne: await threadsVsOne(call, otherVariant, pair) };
      for (const p of ['threads-pair-a', 'threads-pair-b']) await call('endWorker', p);
    }
    if (path === 'webgpu') {
      // Our WebGPU explainer against our CPU reference, before any TF.js backend touches the GPU.
      const o = await call('loadOurs', 'webgpu');
      if (o.error) {
        out.gpu = { error: o.error };
        say(`ours webgpu: ${o.error}`);
        for (const peer of peers) for (const method of cfg.methods) out.cells.push({ path, peer, method, error: `ours: ${o.error}` });
        continue;
      }
      out.gpu = { ...(await call('oursGpuParity')), info: o.info };
      say(`ours webgpu (${o.info?.adapter}) vs ours cpu: ran on ${out.gpu.backend}, raw max abs diff ${out.gpu.rawMaxAbs.toExponential(2)}, class logit diff ${out.gpu.logitDiff.toExponential(2)}`);
    }
    for (const peer of peers) {
      try {
        await pairing(path, peer);
      } catch (e) {
        // One pairing failing (a TF.js backend throwing, a lost device) must not lose the others.
        const why = `n/a (${String(e.message || e).split('\n')[0].replace(/^page\.evaluate: /, '').slice(0, 200)})`;
        say(`${path} vs ${peerName(peer)}: ${why}`);
        for (const method of cfg.methods) if (!out.cells.some((c) => c.path === path && c.peer === peer && c.method === method)) out.cells.push({ path, peer, method, error: why });
        await call('disposePeer').catch(() => {});
      }
    }
  }
  out.memory = await call('memory');
  out.pageErrors = pageErrors.slice(0, 20);
  await context.close();
  return out;
}

/**
 * Our threaded build against our single-threaded one, interleaved (one, threads, one, threads...),
 * per method: the same images, class and options; bitwise the same map is checked by the e2e tests.
 * `otherVariant` (--threads-ab, --threads-one): the other threaded build too, before or after the
 * first one in alternate rounds.
 */
async function threadsVsOne(call, otherVariant = null, pair = false) {
  const rows = [];
  for (const method of cfg.methods) {
    if (method === 'scorecam' && !cfg.scorecamChannels) continue; // all 1280 channels: minutes per run
    const one = [];
    const many = [];
    await call('runOurs', 'cpu', method); // warm both
    await call('runOurs', 'threads', method);
    if (otherVariant) await call('runOurs', 'threads-other', method);
    if (pair) await call('runPair', method);
    const other = [];
    const alone = [];
    const together = [];
    const n = method === 'scorecam' ? cfg.scorecamRuns : cfg.runs;
    const t0 = Date.now();
    for (let i = 0; i < n && (i === 0 || Date.now() - t0 < cfg.budgetS * 1000); i++) {
      one.push((await call('runOurs', 'cpu', method)).ms);
      // The two threaded builds swap places every round: with the same build in both places, the
      // one run third measured up to 12% faster than the one run second (docs/performance.md, 26).
      if (otherVariant && i % 2 === 1) other.push((await call('runOurs', 'threads-other', method)).ms);
      many.push((await call('runOurs', 'threads', method)).ms);
      if (otherVariant && i % 2 === 0) other.push((await call('runOurs', 'threads-other', method)).ms);
      if (pair) {
        alone.push((await call('runOurs', 'threads-pair-a', method)).ms);
        together.push(...(await call('runPair', method)));
      }
    }
    const row = { method, one: stats(one), threads: stats(many) };
    rows.push(row);
    say(`threads vs one thread ${method}: ${row.threads.median.toFixed(1)} / ${row.one.median.toFixed(1)} ms, ratio ${ratio(row.threads.median, row.one.median)} (n=${one.length})`);
    if (pair) {
      // Two whole explanations at once, each on its own core, take `together` each; a perfect split
      // of one explanation into two halves would take about half of that. So this machine's cores,
      // as its other tenants leave them, allow threads / one thread of together / (2 * alone) at best.
      row.ceiling = { alone: stats(alone), together: stats(together) };
      row.ceiling.ratio = row.ceiling.together.median / (2 * row.ceiling.alone.median);
      say(`  two-core ceiling: one thread alone ${row.ceiling.alone.median.toFixed(1)} ms, two at once ${row.ceiling.together.median.toFixed(1)} ms each: a perfect 2-way split would reach ${row.ceiling.ratio.toFixed(2)}`);
    }
    if (otherVariant) {
      row.other = { variant: otherVariant, ...stats(other) };
      say(`  ${otherVariant} build: ${row.other.median.toFixed(1)} ms, ratio to one thread ${ratio(row.other.median, row.one.median)}`);
    }
  }
  return rows;
}

// ------------------------------------------------------------------ native rows

function nativeRows() {
  const args = ['run', '--quiet', '--release', '--bin', 'bench', '--', '--json', '--archs', cfg.archs.join(','), '--methods', cfg.methods.join(','), '--runs', String(cfg.runs), '--scorecam-runs', String(cfg.scorecamRuns)];
  if (cfg.scorecamChannels) args.push('--scorecam-channels', String(cfg.scorecamChannels));
  say(`\nnative: cargo ${args.join(' ')}`);
  const r = spawnSync('cargo', args, { cwd: REPO, encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) return { error: `cargo run --bin bench failed (${r.status})` };
  return JSON.parse(r.stdout);
}

// ------------------------------------------------------------------ bundle sizes

function sizes() {
  const entry = (p) => {
    const b = readFileSync(join(REPO, p));
    return { path: p, raw: b.length, gzip: gzipSync(b, { level: 9 }).length };
  };
  const walk = (d) => readdirSync(join(REPO, d), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)]));
  const out = {
    ours: ['pkg/gradcam_wasm_bg.wasm', 'pkg/gradcam_wasm.js'].map(entry),
    tfjs: [
      'node_modules/@tensorflow/tfjs/dist/tf.min.js',
      'node_modules/@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js',
      'node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm',
      'node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm',
      'node_modules/@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js',
    ].map(entry),
  };
  if (!existsSync(join(REPO, 'dist')) && !quick) {
    say('building dist/ (npm run build:web) for its size');
    spawnSync('npm', ['run', '--silent', 'build:web'], { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'] });
  }
  if (existsSync(join(REPO, 'dist'))) {
    const files = walk('dist').filter((f) => /\.(js|wasm|mjs)$/.test(f));
    const all = files.map(entry);
    out.dist = { files: all.length, raw: all.reduce((a, e) => a + e.raw, 0), gzip: all.reduce((a, e) => a + e.gzip, 0), largest: all.sort((a, b) => b.raw - a.raw).slice(0, 4) };
  } else out.dist = { error: 'dist/ missing (npm run build:web)' };
  return out;
}

// ------------------------------------------------------------------ the table

/** Shorter reasons for the table: TF.js's missing-kernel message names the kernel and the backend. */
const reason = (e) =>
  String(e ?? '')
    .replace(/Kernel '(\w+)' not registered for backend '(\w+)'/, "no $1 kernel in TF.js's $2 backend")
    .replace(/; noop support not compiled in.*found no adapters/, '');
const ms = (x) => (x == null ? '-' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const spread = (s) => (s ? `${ms(s.median)} [${ms(s.p25)}-${ms(s.p75)}]` : '-');
// Ratios under 0.2 get a third decimal: the goals sit at 0.1, and 0.096 is not 0.10.
const ratio = (a, b) => (a != null && b ? (a / b).toFixed(a / b < 0.2 ? 3 : 2) : '-');
const mb = (b) => (b / 1048576).toFixed(1);

/** One line per arch and method: steady-state medians (ms) of every pairing, ratios ours/peer. */
function summary(results, native) {
  const L = [];
  const relaxed = results.some((r) => r.cells?.some((c) => c.peer === 'relaxed'));
  const pairs = [['cpu', 'wasm'], ['cpu', 'cpu'], ...(relaxed ? [['cpu', 'relaxed']] : []), ['webgpu', 'webgl'], ['webgpu', 'webgpu']];
  L.push('| arch | method | ' + pairs.map(([p, q]) => `ours ${p} / ${peerName(q)} (ratio)`).join(' | ') + ' | ours native |');
  L.push('|---|---|' + pairs.map(() => '---|').join('') + '---|');
  for (const r of results) {
    if (r.error) continue;
    const n = (native?.archs || []).find((a) => a.arch === r.arch);
    for (const method of [...new Set(r.cells.map((c) => c.method))]) {
      const cols = pairs.map(([path, peer]) => {
        const c = r.cells.find((x) => x.path === path && x.peer === peer && x.method === method);
        if (!c) return path === 'webgpu' && r.gpu?.skipped ? 'not run' : '-';
        const o = c.ours?.stats?.median;
        const p = c.peerT?.stats?.median;
        if (o == null) return 'n/a';
        return p != null ? `${ms(o)} / ${ms(p)} (${ratio(o, p)})` : `${ms(o)} / n/a`;
      });
      const nm = n?.methods?.find((m) => m.method === method);
      L.push(`| ${r.arch} | ${METHOD_NAME[method]} | ${cols.join(' | ')} | ${nm ? ms(nm.median_ms) : '-'} |`);
    }
  }
  return L.join('\n');
}

function table(results, native, sz) {
  const L = [summary(results, native), ''];
  const nat = (arch) => (native?.archs || []).find((a) => a.arch === arch);
  L.push('| arch | measure (ms) | path | ours | peer | peer value | ours/peer | ours native |');
  L.push('|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    if (r.error) {
      L.push(`| ${r.arch} | error: ${r.error} | | | | | | |`);
      continue;
    }
    const n = nat(r.arch);
    for (const l of r.loads) {
      const pv = l.peerStats?.error ? reason(l.peerStats.error) : ms(l.peerStats?.median);
      const ov = l.ours?.error ? l.ours.error : ms(l.ours?.median);
      L.push(`| ${r.arch} | model load (bytes -> ready), median of ${l.ours?.n ?? '-'} | ${l.path} | ${ov} | ${peerName(l.peer)} | ${pv} | ${ratio(l.ours?.median, l.peerStats?.median)} | ${l.path === 'cpu' && n ? ms(n.load_ms) : ''} |`);
    }
    for (const c of r.cells) {
      const nm = n?.methods?.find((m) => m.method === c.method);
      const natCold = c.path === 'cpu' && nm ? ms(nm.cold_ms) : '';
      const natMed = c.path === 'cpu' && nm ? `${ms(nm.median_ms)} [${ms(nm.p25_ms)}-${ms(nm.p75_ms)}]` : '';
      const name = METHOD_NAME[c.method];
      if (!c.ours?.stats) {
        L.push(`| ${r.arch} | ${name} | ${c.path} | ${c.oursCold != null ? 'cold ' + ms(c.oursCold) : '-'} | ${peerName(c.peer)} | ${reason(c.error)} | - | ${natMed} |`);
        continue;
      }
      const pc = c.peerT.cold != null ? ms(c.peerT.cold) : reason(c.error);
      const pm = c.peerT.stats ? spread(c.peerT.stats) : reason(c.error);
      L.push(`| ${r.arch} | ${name} first (cold) | ${c.path} | ${ms(c.ours.cold)} | ${peerName(c.peer)} | ${pc} | ${ratio(c.ours.cold, c.peerT.cold)} | ${natCold} |`);
      const fb = (c.oursFellBack ? ` (${c.oursFellBack} runs fell back to cpu)` : '') + (c.forwardReused ? ` (${c.forwardReused} runs reused a forward pass)` : '');
      L.push(`| ${r.arch} | ${name} median [p25-p75], n=${c.ours.stats.n} | ${c.path} | ${spread(c.ours.stats)}${fb} | ${peerName(c.peer)} | ${pm} | ${ratio(c.ours.stats.median, c.peerT.stats?.median)} | ${natMed} |`);
    }
    if (r.gpu?.skipped) L.push(`| ${r.arch} | WebGPU path | webgpu | ${r.gpu.skipped} | | | | |`);
    const f32 = r.env.params * 4;
    const before = r.memoryBeforeScoreCam ? `; ${mb(r.memoryBeforeScoreCam.wasmBytes)} before the first Score-CAM (ours: 4 masked inputs per forward on the CPU, 16 on WebGPU)` : '';
    const cpu = r.cpuPeak?.error ? reason(r.cpuPeak.error) : r.cpuPeak ? `${mb(r.cpuPeak.explained)} (${mb(r.cpuPeak.loaded)} loaded)` : 'n/a';
    L.push(`| ${r.arch} | peak wasm memory (MiB), CPU path alone: load, Grad-CAM, Guided Grad-CAM | cpu | ${cpu} | | | | f32 weights ${mb(f32)} MiB; 4x = ${mb(4 * f32)} MiB |`);
    L.push(`| ${r.arch} | wasm memory (MiB) at the end of the benchmark page (cpu and webgpu explainers, re-loads, all methods) | cpu+webgpu | ${mb(r.memory.wasmBytes)}${before} | | | | |`);
  }
  L.push('');
  L.push('Parity before timing (max abs diff against our CPU path; tolerance 1e-3):');
  L.push('');
  L.push('| arch | pair | logits | raw Grad-CAM map | max abs logit | max raw | top-1 ours/peer | result |');
  L.push('|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    for (const p of r.parity || []) {
      if (p.error) L.push(`| ${r.arch} | ${p.path} vs ${peerName(p.peer)} | ${reason(p.error)} | | | | | n/a |`);
      else L.push(`| ${r.arch} | ${p.path} vs ${peerName(p.peer)} | ${p.logitsMaxAbs.toExponential(2)} | ${p.rawMaxAbs.toExponential(2)} | ${p.maxLogit.toFixed(2)} | ${p.maxRaw.toExponential(2)} | ${p.oursTop1}/${p.peerTop1} | ${p.pass ? 'pass' : 'FAIL: ' + (p.why || '')} |`);
    }
    if (r.gpu && r.gpu.rawMaxAbs != null) L.push(`| ${r.arch} | ours webgpu vs ours cpu | ${r.gpu.logitDiff.toExponential(2)} (class logit) | ${r.gpu.rawMaxAbs.toExponential(2)} | | | | ${r.gpu.rawMaxAbs <= TOLERANCE ? 'pass' : 'FAIL'} |`);
  }
  if (sz) {
    L.push('');
    L.push('| bundle | raw bytes | gzip -9 bytes |');
    L.push('|---|---|---|');
    for (const e of [...sz.ours, ...sz.tfjs]) L.push(`| ${e.path.replace('node_modules/', '')} | ${e.raw} | ${e.gzip} |`);
    if (sz.dist && !sz.dist.error) L.push(`| dist/ (webpack, ${sz.dist.files} .js/.wasm files) | ${sz.dist.raw} | ${sz.dist.gzip} |`);
    else if (sz.dist) L.push(`| dist/ | ${sz.dist.error} | |`);
  }
  return L.join('\n');
}

// ------------------------------------------------------------------ main

if (opt('--table')) {
  // Re-render the table of results files: node bench/run.mjs --table A.json [B.json ...]; with several,
  // an architecture's results come from the last file that has them without an error.
  const rest = argv.slice(argv.indexOf('--table') + 1);
  const files = rest.slice(0, rest.findIndex((a) => a.startsWith('--')) >>> 0);
  const docs = files.map((f) => JSON.parse(readFileSync(f, 'utf8')));
  const byArch = new Map();
  for (const d of docs) for (const r of d.results) if (!r.error || !byArch.has(r.arch)) byArch.set(r.arch, r);
  const last = (k) => docs.map((d) => d[k]).filter(Boolean).pop();
  const merged = { ...docs[0], sources: files.map((f) => relative(REPO, resolve(f))), results: [...byArch.values()], native: last('native'), sizes: last('sizes') };
  merged.table = table(merged.results, merged.native, merged.sizes);
  if (has('--out')) writeFileSync(opt('--out'), JSON.stringify(merged, null, 1));
  console.log(merged.table);
  process.exit(0);
}

const started = new Date();
const { server, url } = await serve(REPO);
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
const chromiumVersion = browser.version();
const results = [];
let env = null;
try {
  for (const arch of cfg.archs) {
    try {
      const r = await benchArch(browser, url, arch);
      env = env || r.env;
      results.push(r);
    } catch (e) {
      say(`${arch}: ${e.stack || e}`);
      results.push({ arch, error: String(e.message || e).split('\n')[0] });
    }
  }
} finally {
  await browser.close();
  server.close();
}
const native = cfg.native ? nativeRows() : null;
const sz = cfg.sizes ? sizes() : null;
const md = table(results, native, sz);
const doc = {
  date: started.toISOString(),
  config: cfg,
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version, chromium: chromiumVersion, userAgent: env?.userAgent, crossOriginIsolated: env?.crossOriginIsolated, tfjs: env?.tfjsVersion },
  results,
  native,
  sizes: sz,
  table: md,
};
mkdirSync(join(REPO, 'bench/results'), { recursive: true });
const file = join(REPO, 'bench/results', `${started.toISOString().replace(/[:]/g, '-').replace(/\..*/, '')}${quick ? '-quick' : ''}.json`);
writeFileSync(file, JSON.stringify(doc, null, 1));
console.log(md);
say(`\nwrote ${relative(REPO, file)}`);
