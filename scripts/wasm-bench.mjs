// node scripts/wasm-bench.mjs [runs] [arch...]: times the wasm build (see scripts/wasm-bench.sh).
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const dir = process.env.WASM_BENCH_DIR || '/tmp/gradcam-wasm-bench';
const { bench, peak_memory, synthetic_bytes, use_gemm_crate, use_winograd, use_a_in_place, use_kept, gemm_gflops, use_batch_columns, batch_setup, batch_run, batched_methods, batch_profile, batch_peak_mb, maxpool_ms } = require(`${dir}/gradcam_wasm_bench.js`);
if (process.env.SYNTHETIC_OUT) {
  // Child of a PEAK run: synthetic weights built in an instance of their own.
  const [arch, dtype] = process.env.SYNTHETIC_OUT.split(':');
  writeFileSync(process.argv[2], synthetic_bytes(arch, dtype === 'f16'));
  process.exit(0);
}
if (process.env.PEAK) {
  // Peak wasm memory needs a fresh instance: `PEAK=efficientnet_lite0 node scripts/wasm-bench.mjs`;
  // other architectures get synthetic weights (f16 unless PEAK_DTYPE=f32), written to a file by
  // another process so that building them does not grow this instance's memory.
  const arch = process.env.PEAK;
  let model;
  if (arch === 'efficientnet_lite0') {
    model = new Uint8Array(readFileSync(new URL('../assets/models/efficientnet-lite0.safetensors', import.meta.url)));
  } else {
    const file = join(mkdtempSync(join(tmpdir(), 'peak-')), `${arch}.safetensors`);
    const env = { ...process.env, PEAK: '', SYNTHETIC_OUT: `${arch}:${process.env.PEAK_DTYPE || 'f16'}` };
    execFileSync(process.execPath, [fileURLToPath(import.meta.url), file], { env });
    model = new Uint8Array(readFileSync(file));
    rmSync(file);
  }
  console.log(arch, peak_memory(arch, model));
  process.exit(0);
}
if (process.env.MAXPOOL) {
  // MAXPOOL=1: ms of ResNet-18's stem max pool, the value alone and with its argmax.
  for (let i = 0; i < 3; i++) console.log('maxpool 64x112x112 3x3/2: value', maxpool_ms(false, 15).toFixed(2), 'ms; with argmax', maxpool_ms(true, 15).toFixed(2), 'ms');
  process.exit(0);
}
if (process.env.GEMM_SHAPES) {
  // GEMM_SHAPES='m,n,k[,t] ...' (t: A transposed): GFLOP/s of each product in our wasm GEMM;
  // GEMM_COLD=1 reads each product's A from memory (a new copy each time). One product first, not
  // reported: V8 runs a function on its baseline compiler until the optimized code is ready, which put
  // the first shape listed at 0.3-0.8x of its speed in a later place.
  gemm_gflops(256, 64, 256, false, false, 15);
  for (const shape of process.env.GEMM_SHAPES.split(' ')) {
    const [m, n, k, t] = shape.split(',');
    for (const inplace of [true, false]) {
      use_a_in_place(inplace);
      console.log(shape, inplace ? 'A in place' : 'A packed', gemm_gflops(+m, +n, +k, t === 't', !!process.env.GEMM_COLD, 15).toFixed(1), 'GFLOP/s');
    }
  }
  process.exit(0);
}
if (process.env.BATCH) {
  // BATCH='1 4 8' [METHODS=channels] node scripts/wasm-bench.mjs [rounds] [arch...]: ms per image of a
  // batched forward with the batch's images side by side in the convs' products (on) or one image at
  // a time (off), alternating; with METHODS, Score-CAM over that many channels and deletion +
  // insertion (100 steps), batch BATCH_METHODS (default: the executor's).
  const rounds = Number(process.argv[2] || 3);
  const archs = process.argv.slice(3).length ? process.argv.slice(3) : ['efficientnet_lite0', 'resnet18'];
  const med = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
  for (const arch of archs) {
    const model = arch === 'efficientnet_lite0'
      ? new Uint8Array(readFileSync(new URL('../assets/models/efficientnet-lite0.safetensors', import.meta.url)))
      : new Uint8Array(0);
    for (const n of process.env.BATCH.split(' ').map(Number)) {
      // Per image: wall ms and CPU ms (less disturbed when other work shares the cores).
      const rows = { on: [], off: [] }, cpu = { on: [], off: [] };
      for (let r = 0; r < rounds; r++) {
        for (const kind of ['off', 'on']) {
          use_batch_columns(kind === 'on');
          batch_setup(arch, model, n);
          for (let i = 0; i < 3; i++) {
            const [t, c] = [performance.now(), process.cpuUsage()];
            batch_run();
            rows[kind].push((performance.now() - t) / n);
            cpu[kind].push(process.cpuUsage(c).user / 1000 / n);
          }
        }
      }
      const [con, coff] = [med(cpu.on), med(cpu.off)];
      const peak = {};
      for (const kind of ['off', 'on']) {
        use_batch_columns(kind === 'on');
        batch_setup(arch, model, n);
        peak[kind] = batch_peak_mb();
      }
      const [on, off] = [med(rows.on), med(rows.off)];
      if (process.env.PROFILE) {
        for (const kind of ['off', 'on']) {
          use_batch_columns(kind === 'on');
          console.log(`${arch} n=${n} ${kind}:\n` + batch_profile(arch, model, n));
        }
      }
      console.log(arch, `n=${n}`, `off ${off.toFixed(2)} ms/image`, `on ${on.toFixed(2)} ms/image`, `on/off ${(on / off).toFixed(3)}`, `| CPU off ${coff.toFixed(2)} on ${con.toFixed(2)} on/off ${(con / coff).toFixed(3)}`, `| peak live heap MB off ${peak.off.toFixed(1)} on ${peak.on.toFixed(1)}`);
    }
    if (process.env.METHODS) {
      for (let r = 0; r < rounds; r++) {
        for (const kind of ['off', 'on']) {
          use_batch_columns(kind === 'on');
          console.log(arch, kind, batched_methods(arch, model, Number(process.env.METHODS), Number(process.env.BATCH_METHODS || 0)));
        }
      }
    }
  }
  process.exit(0);
}
// GEMM=crate: time the gemm crate's kernel instead of ours (see AB=gemm below for an A/B).
if (process.env.GEMM === 'crate') use_gemm_crate(true);
const runs = Number(process.argv[2] || 5);
const archs = process.argv.slice(3).length ? process.argv.slice(3) : ['efficientnet_lite0', 'resnet18'];
// AB=gemm: our simd128 GEMM vs the gemm crate; AB=winograd: Winograd vs im2col + GEMM for the 3x3
// stride-1 convs; AB=inplace: A read in place vs packed; AB=kept: F(2x2)'s transformed weights kept
// vs transformed per call. Alternating in one process; medians of the medians.
const ab = {
  gemm: { kinds: ['own', 'crate'], set: (k) => use_gemm_crate(k === 'crate') },
  winograd: { kinds: ['winograd', 'direct'], set: (k) => use_winograd(k === 'winograd') },
  inplace: { kinds: ['in-place', 'packed'], set: (k) => use_a_in_place(k === 'in-place') },
  kept: { kinds: ['kept', 'per-call'], set: (k) => use_kept(k === 'kept') },
}[process.env.AB || ''];
if (ab) {
  for (const arch of archs) {
    const model = arch === 'efficientnet_lite0'
      ? new Uint8Array(readFileSync(new URL('../assets/models/efficientnet-lite0.safetensors', import.meta.url)))
      : new Uint8Array(0);
    const rows = Object.fromEntries(ab.kinds.map(k => [k, []]));
    for (let round = 0; round < 4; round++) {
      for (const kind of ab.kinds) {
        ab.set(kind);
        // CPU time of the whole call too: less disturbed than wall time when other work shares the cores.
        const cpu0 = process.cpuUsage();
        const { profile_gradcam, profile_guided_gradcam_after, ...r } = JSON.parse(bench(arch, model, runs));
        r.call_cpu_ms = process.cpuUsage(cpu0).user / 1000;
        rows[kind].push(r);
      }
    }
    const med = (v) => v.sort((a, b) => a - b)[v.length >> 1];
    for (const kind of ab.kinds) {
      const keys = ['forward_ms', 'gradcam_ms', 'guided_gradcam_ms', 'call_cpu_ms'];
      console.log(arch, kind, JSON.stringify(Object.fromEntries(keys.map(k => [k, med(rows[kind].map(r => r[k]))]))));
    }
  }
  process.exit(0);
}
for (const arch of archs) {
  const model = arch === 'efficientnet_lite0'
    ? new Uint8Array(readFileSync(new URL('../assets/models/efficientnet-lite0.safetensors', import.meta.url)))
    : new Uint8Array(0);
  const r = JSON.parse(bench(arch, model, runs));
  const { profile_gradcam: pg, profile_guided_gradcam_after: pgg, ...main } = r;
  console.log(JSON.stringify(main));
  const show = (name, p) => console.log(`  ${name}: ` + p.sort((a, b) => b.ms - a.ms).map(o => `${o.op} ${o.ms.toFixed(1)}ms/${o.calls}`).join(', '));
  if (process.env.PROFILE) { show('gradcam', pg); show('guided-gc (reused fwd)', pgg); }
}
