//! Per-op timing of the CPU executor, off by default (`scripts/wasm-bench.sh` with PROFILE=1 turns it on):
//! where the milliseconds of a forward and a backward go, by op kind.

use crate::clock::now_ms;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static TABLE: RefCell<BTreeMap<String, (f64, usize)>> = const { RefCell::new(BTreeMap::new()) };
}

pub fn enable(on: bool) {
    ON.with(|o| o.set(on));
}

pub fn enabled() -> bool {
    ON.with(|o| o.get())
}

/// Runs `f`, charging its time to `kind()` when profiling is on.
pub fn time<T>(kind: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let t = now_ms();
    let r = f();
    charge(kind(), now_ms() - t);
    r
}

/// Charges `ms` to `kind` when profiling is on.
pub fn add(kind: &str, ms: f64) {
    if enabled() {
        charge(kind.to_string(), ms);
    }
}

/// One more call of `kind`, of `ms`, in this thread's table.
fn charge(kind: String, ms: f64) {
    TABLE.with(|tb| {
        let mut tb = tb.borrow_mut();
        let e = tb.entry(kind).or_insert((0.0, 0));
        e.0 += ms;
        e.1 += 1;
    });
}

pub fn take() -> Vec<(String, f64, usize)> {
    TABLE.with(|tb| std::mem::take(&mut *tb.borrow_mut()).into_iter().map(|(k, (ms, n))| (k, ms, n)).collect())
}

/// `profileOps(on)`, in wasm builds with the `profile` feature (bench/profile.mjs builds its own): the
/// ops this thread timed since the last call, one `kind<TAB>ms<TAB>count` line each; `on` says whether
/// to go on timing.
#[cfg(all(target_arch = "wasm32", feature = "profile"))]
#[wasm_bindgen::prelude::wasm_bindgen(js_name = profileOps)]
pub fn profile_ops(on: bool) -> String {
    let lines: Vec<String> = take().into_iter().map(|(k, ms, n)| format!("{k}\t{ms:.3}\t{n}")).collect();
    enable(on);
    lines.join("\n")
}
