//! Live heap bytes and their peak, process-wide, for the tests and benchmarks that bound memory
//! (tests/memory.rs, tests/hostile_inputs.rs, scripts/wasm-bench). A crate installs it with
//! `#[global_allocator] static ALLOC: peak_allocator::Counting = peak_allocator::Counting;`.
//! The counters are process-wide: a crate that reads them runs its measurements in one test.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            PEAK.fetch_max(LIVE.fetch_add(layout.size(), Relaxed) + layout.size(), Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

/// Bytes live now.
pub fn live() -> usize {
    LIVE.load(Relaxed)
}

/// The most bytes live at once since the start (or the last `reset_peak`).
pub fn peak() -> usize {
    PEAK.load(Relaxed)
}

/// Starts a new peak from what is live now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}

/// Runs `f` and returns its result with the peak live bytes above what was live before it.
pub fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = live();
    reset_peak();
    let r = f();
    (r, peak().saturating_sub(before))
}
