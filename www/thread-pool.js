// Loads the wasm package, the fastest build this page can run:
// - 'threads-relaxed-simd' (pkg/threads-relaxed/) and 'threads' (pkg/threads/): on a
//   cross-origin-isolated page, which alone may share memory between workers; their kernels split
//   across a thread per core, the first with relaxed SIMD's fused multiply-adds where the engine has
//   them. They must run in a worker (their waits block), which is where www/worker.js and the
//   benchmark run them;
// - 'relaxed-simd' (pkg/relaxed/): one thread, fused multiply-adds where the engine has relaxed SIMD
//   (about 10% faster; its roundings may differ from one CPU to another, so `relaxedSimd: false`
//   asks for the plain build's maps, the same on every machine);
// - 'simd' (pkg/): one thread, plain SIMD, everywhere.
// A build that fails to start falls back to the next, and the result says why.

import { relaxedSimdSupported } from './wasm-features.js';

/** Whether this context can run the threaded build (SharedArrayBuffer needs cross-origin isolation). */
export function threadsAvailable() {
  return self.crossOriginIsolated === true && typeof SharedArrayBuffer === 'function' && typeof Atomics === 'object';
}

/** The pool size for `threads` ('auto' or undefined: one per core, at most 16; 1: no pool). */
export function poolSize(threads) {
  if (threads === undefined || threads === null || threads === 'auto') return Math.min(16, Math.max(1, navigator.hardwareConcurrency || 1));
  const n = Number(threads);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new Error(`threads must be 'auto' or a whole number from 1 to 64, not ${JSON.stringify(threads)}`);
  return n;
}

const START_TIMEOUT_MS = 30000;

/**
 * Starts a pool of `n` threads for the threaded module `mod` (already initialised): this thread
 * (it must be the one that runs the explanations) and `n - 1` pool workers. Resolves once every
 * worker runs; rejects (terminating the ones that started) if one fails or none answers in 30 s,
 * so a page never waits on a pool that does not exist. A thread that traps later posts
 * `{trap: message}` on the BroadcastChannel `trapChannel` (the worker that waits for it is blocked).
 * `relaxed`: `mod` is the threads + relaxed-SIMD build, whose glue the pool threads must load too.
 */
export async function startThreadPool(mod, n, trapChannel = null, relaxed = false) {
  const [module, memory] = mod.threadPoolModule();
  const start = mod.threadPoolStart(n);
  const queue = start.queue();
  const workers = [];
  try {
    await Promise.all(
      Array.from({ length: n - 1 }, (_, i) =>
        new Promise((resolve, reject) => {
          const w = new Worker(new URL('./pool-thread.js', import.meta.url), { type: 'module', name: `gradcam pool thread ${i + 1}` });
          workers.push(w);
          const timer = setTimeout(() => reject(new Error(`pool thread ${i + 1} did not start within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
          w.onmessage = ({ data }) => {
            clearTimeout(timer);
            if (data && data.ready) resolve();
            else reject(new Error(`pool thread ${i + 1} failed to start: ${(data && data.error) || 'no reason given'}`));
          };
          w.onerror = (e) => {
            clearTimeout(timer);
            e.preventDefault();
            reject(new Error(`pool thread ${i + 1} failed to start: ${e.message || 'its script did not load'}`));
          };
          w.postMessage({ module, memory, queue, trapChannel, relaxed });
        }),
      ),
    );
    start.build();
  } catch (e) {
    for (const w of workers) w.terminate();
    throw e;
  } finally {
    start.free();
  }
  return workers;
}

/**
 * Imports and initialises the package: `{mod, exports, threads, variant, fallback}`. `threads`:
 * 'auto' (default), or a pool size; 1 takes a single-threaded build. `relaxedSimd: false` keeps to
 * the plain SIMD builds (threaded or not). `wasmUrl` (the plain .wasm somewhere else) takes the plain build.
 */
export async function loadPackage({ threads = 'auto', relaxedSimd = true, wasmUrl, trapChannel = null } = {}) {
  const n = poolSize(threads);
  const why = [];
  if (n > 1 && !wasmUrl) {
    if (!threadsAvailable()) why.push('the page is not cross-origin isolated (COOP same-origin + COEP require-corp), so it cannot share memory between threads');
    else {
      const relaxed = relaxedSimd !== false && relaxedSimdSupported();
      for (const variant of relaxed ? ['threads-relaxed-simd', 'threads'] : ['threads']) {
        try {
          // Two literal imports, not one computed path, so that bundlers see both packages.
          const mod = await (variant === 'threads' ? import('../pkg/threads/gradcam_wasm.js') : import('../pkg/threads-relaxed/gradcam_wasm.js'));
          const exports = await mod.default();
          const workers = await startThreadPool(mod, n, trapChannel, variant !== 'threads');
          return { mod, exports, threads: mod.kernelThreads(), variant, workers, fallback: why.join('; ') || null };
        } catch (e) {
          why.push(`the ${variant} build did not start (${String((e && e.message) || e)})`);
        }
      }
    }
  }
  if (relaxedSimd !== false && !wasmUrl && relaxedSimdSupported()) {
    try {
      const mod = await import('../pkg/relaxed/gradcam_wasm.js');
      const exports = await mod.default();
      return { mod, exports, threads: 1, variant: 'relaxed-simd', workers: [], fallback: why.join('; ') || null };
    } catch (e) {
      why.push(`the relaxed-SIMD build did not start (${String((e && e.message) || e)})`);
    }
  }
  const mod = await import('../pkg/gradcam_wasm.js');
  const exports = await (wasmUrl ? mod.default({ module_or_path: wasmUrl }) : mod.default());
  return { mod, exports, threads: 1, variant: 'simd', workers: [], fallback: why.join('; ') || null };
}
