//! The threaded wasm build's pool (feature `threads`, built into pkg/threads/ with shared memory).
//!
//! Rayon's global pool is the calling worker's own thread (www/worker.js's, which runs the
//! explanations) plus n - 1 Web Workers that share this module's memory. The caller being thread 0
//! matters: its kernels' parallel loops are then joins inside the pool, in which it takes a part
//! itself, rather than jobs injected from outside that wake the whole pool while it waits. Starting
//! it takes three steps, driven by www/thread-pool.js (`startThreadPool`):
//! 1. `threadPoolStart(n)` makes a queue for the n - 1 thread bodies rayon will hand out;
//! 2. n - 1 Web Workers (www/pool-thread.js) instantiate the same module on the same memory and call
//!    `runPoolThread(queue)`, which waits for a body and runs it for the life of the worker;
//! 3. once all report that they are running, `build()` makes rayon's global pool on the calling
//!    thread, whose spawn handler puts one body per other thread on the queue.
//!
//! Waiting for step 2 before step 3 matters: a pool whose threads never start would leave every
//! kernel waiting forever, while a worker that fails to start is an error the page can see (and
//! fall back to the single-threaded build). The single-threaded build exports `kernelThreads()`
//! only, returning 1.

use wasm_bindgen::prelude::*;

/// Threads the kernels split their work across: the pool's size, or 1 in the single-threaded build.
#[wasm_bindgen(js_name = kernelThreads)]
pub fn kernel_threads() -> usize {
    crate::kernels::parallel::threads()
}

#[cfg(feature = "threads")]
pub use pool::*;

#[cfg(feature = "threads")]
mod pool {
    use std::sync::{mpsc, Mutex};
    use wasm_bindgen::prelude::*;

    /// Thread bodies handed from rayon's spawn handler to the pool's Web Workers.
    type Queue = Mutex<mpsc::Receiver<rayon::ThreadBuilder>>;

    /// A pool being started (steps 1 and 3 above).
    #[wasm_bindgen]
    pub struct ThreadPoolStart {
        threads: usize,
        sender: Option<mpsc::Sender<rayon::ThreadBuilder>>,
        /// Leaked: workers read it for as long as they live, which is as long as the memory.
        queue: &'static Queue,
    }

    /// Step 1: a pool of `threads` threads (1 to 64), this one included.
    #[wasm_bindgen(js_name = threadPoolStart)]
    pub fn thread_pool_start(threads: usize) -> Result<ThreadPoolStart, JsError> {
        if !(1..=64).contains(&threads) {
            return Err(JsError::new(&format!("threads must be between 1 and 64, not {threads}")));
        }
        let (sender, receiver) = mpsc::channel();
        Ok(ThreadPoolStart { threads, sender: Some(sender), queue: Box::leak(Box::new(Mutex::new(receiver))) })
    }

    #[wasm_bindgen]
    impl ThreadPoolStart {
        /// The queue's address in the shared memory, for `runPoolThread` in each worker.
        pub fn queue(&self) -> usize {
            self.queue as *const Queue as usize
        }

        /// Step 3: rayon's global pool: this thread, and the others taken from the queue.
        pub fn build(&mut self) -> Result<(), JsError> {
            let sender = self.sender.take().ok_or_else(|| JsError::new("this thread pool was built already"))?;
            rayon::ThreadPoolBuilder::new()
                .num_threads(self.threads)
                .use_current_thread()
                .spawn_handler(move |body| sender.send(body).map_err(|_| std::io::Error::other("the pool's queue is closed")))
                .build_global()
                .map_err(|e| JsError::new(&format!("could not start the thread pool: {e}")))
        }
    }

    /// Step 2, in a pool worker: waits for one thread body and runs it (it returns only when rayon
    /// shuts the pool down, which the global pool never does).
    #[wasm_bindgen(js_name = runPoolThread)]
    pub fn run_pool_thread(queue: usize) -> Result<(), JsError> {
        // SAFETY: `queue` is the address `ThreadPoolStart::queue` gave out, of a leaked `Queue` in
        // the memory this worker shares; www/pool-thread.js passes nothing else.
        let queue = unsafe { &*(queue as *const Queue) };
        let body = queue.lock().map_err(|_| JsError::new("the pool's queue is poisoned"))?.recv();
        body.map_err(|_| JsError::new("the pool was never built"))?.run();
        Ok(())
    }

    /// TEST ONLY: panics inside a pool thread (a kernel part), so that tests can prove the client
    /// replaces a worker whose pool thread trapped (www/pool-thread.js, tests/e2e/threads.test.mjs).
    #[doc(hidden)]
    #[wasm_bindgen(js_name = __testTrapInPool)]
    pub fn test_trap_in_pool() {
        // Every pool thread runs this; thread 0 is the caller, so only the others panic.
        rayon::broadcast(|ctx| {
            if ctx.index() != 0 {
                panic!("__testTrapInPool(): a panic on purpose in a pool thread (test-only export)");
            }
        });
    }

    /// This module and its memory, for the pool's workers to instantiate the same code on the same memory.
    #[wasm_bindgen(js_name = threadPoolModule)]
    pub fn thread_pool_module() -> js_sys::Array {
        js_sys::Array::of2(&wasm_bindgen::module(), &wasm_bindgen::memory())
    }
}
