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
    let dt = now_ms() - t;
    TABLE.with(|tb| {
        let mut tb = tb.borrow_mut();
        let e = tb.entry(kind()).or_insert((0.0, 0));
        e.0 += dt;
        e.1 += 1;
    });
    r
}

pub fn take() -> Vec<(String, f64, usize)> {
    TABLE.with(|tb| std::mem::take(&mut *tb.borrow_mut()).into_iter().map(|(k, (ms, n))| (k, ms, n)).collect())
}
