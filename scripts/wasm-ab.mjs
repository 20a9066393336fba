// node scripts/wasm-ab.mjs DIR_A DIR_B [rounds] [arch] [method...]: two wasm-bench builds (see
// scripts/wasm-bench.sh) loaded side by side in one process, their explanations alternating, A and B
// swapping places every round. On a machine whose speed drifts by tens of percent from minute to
// minute, the per-round ratio B/A sees both builds under the same conditions; its median is what
// an A/B reports. GEMM_SHAPES='m,n,k[,t] ...' instead times products ([GEMM_COLD=1]: A from memory).
//
// The instance loaded second can run faster whatever it is: two copies of one build gave B/A
// 0.91-0.95 on ResNet-18 (and 1.00 on EfficientNet-Lite0). So the rounds run in two processes, one
// loading A first and one loading B first, and the A/B is the geometric mean of their two medians.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
const require = createRequire(import.meta.url);
const [dirA, dirB, roundsArg, arch = 'resnet18', ...methodArgs] = process.argv.slice(2);
if (!dirA || !dirB) {
  console.error('usage: node scripts/wasm-ab.mjs DIR_A DIR_B [rounds] [arch] [method...]');
  process.exit(2);
}
const rounds = Number(roundsArg || 15);
const med = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];

// WASM_AB_ORDER=AB or BA: a child that loads the builds in that order and prints its times as JSON.
const order = process.env.WASM_AB_ORDER;
if (!order) {
  const run = (o) => {
    const stdout = execFileSync(process.execPath, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { env: { ...process.env, WASM_AB_ORDER: o }, encoding: 'utf8', maxBuffer: 1 << 24 });
    return JSON.parse(stdout.trim().split('\n').pop()); // the child's last line
  };
  const [ab, ba] = [run('AB'), run('BA')];
  for (const [i, { name, unit, a }] of ab.entries()) {
    const halves = [ab[i], ba[i]].map((r) => med(r.a.map((x, j) => r.b[j] / x)));
    const [ta, tb] = ['a', 'b'].map((k) => med([...ab[i][k], ...ba[i][k]]));
    const show = (x) => (unit === 'GFLOP/s' ? 1 / x : x).toFixed(1);
    console.log(`${name} (${unit}): A ${show(ta)}  B ${show(tb)}  B/A ${Math.sqrt(halves[0] * halves[1]).toFixed(3)} (A loaded first ${halves[0].toFixed(3)}, B first ${halves[1].toFixed(3)}; ${a.length} + ${ba[i].a.length} rounds)`);
  }
  process.exit(0);
}

const dirs = order === 'AB' ? [dirA, dirB] : [dirB, dirA];
const loaded = dirs.map((d) => require(`${d}/gradcam_wasm_bench.js`));
const builds = order === 'AB' ? loaded : [loaded[1], loaded[0]]; // builds[0] is A either way
const half = Math.ceil(rounds / 2);
// Runs `f(build)` for A and B once per round, in alternating order; returns [timesA, timesB].
const alternate = (f) => {
  const t = [[], []];
  for (let r = 0; r < half; r++) {
    for (const i of r % 2 ? [1, 0] : [0, 1]) t[i].push(f(builds[i]));
  }
  return t;
};
// One entry per measurement: times of A and B, one per round (seconds per GFLOP for products, so
// that B/A < 1 means B is faster throughout).
const out = [];
if (process.env.GEMM_SHAPES) {
  loaded.forEach((w) => w.gemm_gflops(256, 64, 256, false, false, 15)); // warm-up (see wasm-bench.mjs)
  for (const shape of process.env.GEMM_SHAPES.split(' ')) {
    const [m, n, k, t] = shape.split(',');
    const [a, b] = alternate((w) => 1 / w.gemm_gflops(+m, +n, +k, t === 't', !!process.env.GEMM_COLD, 5));
    out.push({ name: shape, unit: 'GFLOP/s', a, b });
  }
} else {
  const methods = methodArgs.length ? methodArgs : ['gradcam', 'guided-gradcam'];
  // Synthetic weights (an empty model) for every arch but the bundled default model's.
  const model = arch === 'efficientnet_lite0' ? new Uint8Array(readFileSync(new URL('../assets/models/efficientnet-lite0.safetensors', import.meta.url))) : new Uint8Array(0);
  loaded.forEach((w) => w.method_setup(arch, model));
  for (const method of methods) {
    loaded.forEach((w) => w.method_ms(method)); // warm-up
    const [a, b] = alternate((w) => w.method_ms(method));
    out.push({ name: `${arch} ${method}`, unit: 'ms', a, b });
  }
}
console.log(JSON.stringify(out));
