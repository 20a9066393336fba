// One thread of the threaded build's pool (src/wasm_threads.rs, started by thread-pool.js): it
// instantiates the same compiled module on the same shared memory, says so, then runs one of
// rayon's threads until the page closes (runPoolThread does not return).
//
// A trap here (a Rust panic in a kernel) leaves the worker that waits for this thread blocked for
// good; its own event loop cannot hear of it. So this thread says so on the BroadcastChannel the
// client listens to (`trapChannel`), and the client replaces that worker.
self.onmessage = async ({ data }) => {
  let glue;
  try {
    // The same build as the thread that started the pool (thread-pool.js: `relaxed`).
    glue = await (data.relaxed ? import('../pkg/threads-relaxed/gradcam_wasm.js') : import('../pkg/threads/gradcam_wasm.js'));
    await glue.default({ module_or_path: data.module, memory: data.memory });
  } catch (e) {
    self.postMessage({ error: String((e && e.message) || e) });
    return;
  }
  self.postMessage({ ready: true });
  try {
    glue.runPoolThread(data.queue);
  } catch (e) {
    let panic = null;
    try {
      panic = glue.lastPanicMessage();
    } catch {
      panic = null;
    }
    const message = `${(e && e.name) || 'Error'}: ${(e && e.message) || e}${panic ? `; the Rust code ${panic.replace(/\s+/g, ' ').trim()}` : ''}`;
    if (data.trapChannel) new BroadcastChannel(data.trapChannel).postMessage({ trap: message });
  }
};
