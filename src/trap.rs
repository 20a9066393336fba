//! Traps in the browser (wasm32 only). A Rust panic in wasm32 ends in an `unreachable` instruction
//! (panic=abort, or unwinding that reaches an export), which JS sees as `RuntimeError: unreachable`
//! with no Rust message; after it the instance is unusable (borrows, the stack pointer and the
//! allocator are left mid-call). So:
//! - a panic hook, installed once when the module starts, records the panic message here (and logs
//!   it to the console), so that whoever catches the trap can report what Rust said;
//! - `lastPanicMessage()` reads it back, from the trapped instance, before that instance is thrown
//!   away (www/worker.js then builds a fresh instance and reloads the model);
//! - `__testTrap()` panics on purpose. It exists only so that tests can prove the recovery from a
//!   trap (tests/e2e/trap-recovery.test.mjs); pages have no use for it.

use std::cell::RefCell;
use std::sync::Once;
use wasm_bindgen::prelude::*;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs when the module is instantiated (each fresh instance runs it again).
#[wasm_bindgen(start)]
fn start() {
    install_panic_hook();
}

/// Installs the hook that records the panic message; only the first call does anything.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            // "panicked at src/x.rs:1:2:\nmessage": the default hook's text, which wasm32 would drop.
            let message = info.to_string();
            web_sys::console::error_1(&JsValue::from_str(&format!("gradcam-wasm: {message}")));
            LAST_PANIC.with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    *p = Some(message);
                }
            });
        }));
    });
}

/// The message of the last Rust panic in this instance (undefined if none). Read it right after a
/// `RuntimeError` from a call: it says what the Rust code was doing when the module trapped. A trap
/// without a panic (out of memory, a stack overflow) records nothing.
#[wasm_bindgen(js_name = lastPanicMessage)]
pub fn last_panic_message() -> Option<String> {
    LAST_PANIC.with(|p| p.try_borrow().ok().and_then(|p| p.clone()))
}

/// TEST ONLY: panics on purpose, so that the module traps (`RuntimeError: unreachable`). It exists
/// only so that tests can prove that the worker recovers from a trap; never call it from a page.
/// `inTask` true: the panic happens in a spawned future (as it would inside `explainAsync`), so the
/// trap surfaces as an uncaught error of a microtask, not as an exception of this call.
#[doc(hidden)]
#[wasm_bindgen(js_name = __testTrap)]
pub fn test_trap(#[wasm_bindgen(js_name = inTask)] in_task: Option<bool>) {
    if in_task == Some(true) {
        wasm_bindgen_futures::spawn_local(async {
            panic!("__testTrap(inTask): a panic on purpose in a spawned future (test-only export)");
        });
    } else {
        panic!("__testTrap(): a panic on purpose (test-only export)");
    }
}

/// The `WebAssembly.Memory` of this instance: a fresh instance has a new one, and views into it
/// must never be transferred to another thread (www/worker.js checks).
#[doc(hidden)]
#[wasm_bindgen(js_name = __wasmMemory)]
pub fn wasm_memory() -> JsValue {
    wasm_bindgen::memory()
}
