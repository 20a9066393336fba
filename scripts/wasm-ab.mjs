// node scripts/wasm-ab.mjs DIR_A DIR_B [rounds] [arch] [method...]: two wasm-bench builds (see
// scripts/wasm-bench.sh) loaded side by side in one process, their explanations alternating, A and B
// swapping places every round. On a machine whose speed drifts by tens of percent from minute to
// minute, the per-round ratio B/A sees both builds under the same conditions; its median is what
// an A/B reports. GEMM_SHAPES='m,n,k[,t] ...' instead times products ([GEMM_COLD=1]: A from memory).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const [dirA, dirB, roundsArg, arch = 'resnet18', ...methodArgs] = process.argv.slice(2);
if (!dirA || !dirB) {
  console.error('usage: node scripts/wasm-ab.mjs DIR_A DIR_B [rounds] [arch] [method...]');
  process.exit(2);
}
const builds = [dirA, dirB].map((d) => require(`${d}/gradcam_wasm_bench.js`));
const rounds = Number(roundsArg || 15);
const med = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
// Times (ms, or seconds per GFLOP) of A and B, one per round; B/A < 1: B is faster.
const report = (name, a, b, show = (x) => x.toFixed(1)) => {
  const ratios = a.map((x, i) => b[i] / x);
  console.log(`${name}: A ${show(med(a))}  B ${show(med(b))}  B/A median ${med(ratios).toFixed(3)} (per round ${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)})`);
};
// Runs `f(build)` for A and B once per round, in alternating order; returns [timesA, timesB].
const alternate = (f) => {
  const t = [[], []];
  for (let r = 0; r < rounds; r++) {
    for (const i of r % 2 ? [1, 0] : [0, 1]) t[i].push(f(builds[i]));
  }
  return t;
};
if (process.env.GEMM_SHAPES) {
  for (const shape of process.env.GEMM_SHAPES.split(' ')) {
    const [m, n, k, t] = shape.split(',');
    // GFLOP/s inverted to time, so that B/A < 1 means B is faster throughout.
    const [a, b] = alternate((w) => 1 / w.gemm_gflops(+m, +n, +k, t === 't', !!process.env.GEMM_COLD, 5));
    report(`${shape} GFLOP/s`, a, b, (x) => (1 / x).toFixed(1));
  }
} else {
  const methods = methodArgs.length ? methodArgs : ['gradcam', 'guided-gradcam'];
  // Synthetic weights (an empty model) for every arch but the bundled default model's.
  const model = arch === 'efficientnet_lite0' ? new Uint8Array(readFileSync(new URL('../assets/models/efficientnet-lite0.safetensors', import.meta.url))) : new Uint8Array(0);
  builds.forEach((w) => w.method_setup(arch, model));
  for (const method of methods) {
    builds.forEach((w) => w.method_ms(method)); // warm-up
    const [a, b] = alternate((w) => w.method_ms(method));
    report(`${arch} ${method} (ms)`, a, b);
  }
}
