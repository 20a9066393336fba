// Our threaded build for the benchmark page, in a worker (its kernels' waits block, so it runs in a
// worker, as www/worker.js runs it for the client). The page (bench/page.mjs, path 'threads') sends
// the same images and options as to its main-thread explainer; every time is performance.now()
// around one call here, as on the page.
import { loadPackage, startThreadPool } from '../www/thread-pool.js';
import { relaxedSimdSupported } from '../www/wasm-features.js';

let pkg = null;
let ex = null;
let images = [];

const commands = {
  async load({ bytes, arch, threads, relaxedSimd, poolOfOne }) {
    pkg ??= poolOfOne ? await poolOfOneThread(relaxedSimd) : await loadPackage({ threads, relaxedSimd });
    if (!pkg.variant.startsWith('threads')) throw new Error(`the threaded build did not start: ${pkg.fallback}`);
    if (ex) ex.free();
    const t0 = performance.now();
    ex = new pkg.mod.Explainer(bytes, { arch });
    return { ms: performance.now() - t0, layer: ex.defaultLayer(), backend: ex.backend(), threads: pkg.threads, variant: pkg.variant };
  },
  images(args) {
    images = args.images;
    return images.length;
  },
  run({ k, cls, options }) {
    const img = images[k % images.length];
    const t0 = performance.now();
    const r = ex.explain(img, cls, options);
    const ms = performance.now() - t0;
    return { ms, reused: r.timings.forwardReused, backend: 'threads', classIdx: r.classIdx, raw: Float32Array.from(r.raw), logit: r.logit };
  },
};

/** The threaded build the client would pick, with a pool of this thread alone (bench --threads-one). */
async function poolOfOneThread(relaxedSimd) {
  const relaxed = relaxedSimd !== false && relaxedSimdSupported();
  const mod = await (relaxed ? import('../pkg/threads-relaxed/gradcam_wasm.js') : import('../pkg/threads/gradcam_wasm.js'));
  await mod.default();
  await startThreadPool(mod, 1, null, relaxed);
  return { mod, threads: mod.kernelThreads(), variant: `${relaxed ? 'threads-relaxed-simd' : 'threads'}, a pool of one` };
}

self.onmessage = async ({ data: { id, cmd, args } }) => {
  try {
    self.postMessage({ id, value: await commands[cmd](args) });
  } catch (e) {
    self.postMessage({ id, error: String((e && e.message) || e) });
  }
};
