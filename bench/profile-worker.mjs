// A worker of bench/profile.mjs: one build of ours (`threads`: 1 for a single-threaded build, 'auto'
// for the threaded one), timing each op kind with the build's `profileOps` (feature `profile`).
import { loadPackage } from '../www/thread-pool.js';

let pkg = null;
let ex = null;
let images = [];
let k = 0;

const commands = {
  async load({ threads, modelUrl, imageUrls }) {
    pkg = await loadPackage({ threads });
    if (!pkg.mod.profileOps) throw new Error(`the ${pkg.variant} build has no profileOps: build it with --features profile (bench/profile.mjs --build)`);
    ex = new pkg.mod.Explainer(new Uint8Array(await (await fetch(modelUrl)).arrayBuffer()), {});
    for (const url of imageUrls) {
      const bmp = await createImageBitmap(await (await fetch(url)).blob());
      const ctx = new OffscreenCanvas(224, 224).getContext('2d');
      ctx.drawImage(bmp, 0, 0, 224, 224);
      images.push(ctx.getImageData(0, 0, 224, 224));
    }
    return { variant: pkg.variant, threads: pkg.threads };
  },
  /** One explanation, profiled or not: its wall time and, profiled, the ops' lines. The images
   * alternate, so that no run reuses the forward of the one before. */
  run({ method, profiled }) {
    pkg.mod.profileOps(profiled);
    const t0 = performance.now();
    ex.explain(images[k++ % images.length], null, { method });
    const ms = performance.now() - t0;
    return { ms, ops: pkg.mod.profileOps(false) };
  },
};

self.onmessage = async ({ data: { id, cmd, args } }) => {
  try {
    self.postMessage({ id, value: await commands[cmd](args) });
  } catch (e) {
    self.postMessage({ id, error: String((e && e.message) || e) });
  }
};
