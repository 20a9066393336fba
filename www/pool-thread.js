// One thread of the threaded build's pool (src/wasm_threads.rs, started by thread-pool.js): it
// instantiates the same compiled module on the same shared memory, says so, then runs one of
// rayon's threads until the page closes (runPoolThread does not return).
self.onmessage = async ({ data }) => {
  try {
    const glue = await import('../pkg/threads/gradcam_wasm.js');
    await glue.default({ module_or_path: data.module, memory: data.memory });
    self.postMessage({ ready: true });
    glue.runPoolThread(data.queue);
  } catch (e) {
    self.postMessage({ error: String((e && e.message) || e) });
  }
};
