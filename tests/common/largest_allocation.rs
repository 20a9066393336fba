//! The largest single allocation made by this thread, to show that sizes a file claims are never
//! allocated. A test crate installs it with
//! `#[global_allocator] static ALLOC: largest_allocation::Tracker = largest_allocation::Tracker;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Tracker;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|p| p.set(p.get().max(size)));
}

unsafe impl GlobalAlloc for Tracker {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
pub fn largest_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|p| p.set(0));
    let r = f();
    (r, LARGEST.with(|p| p.get()))
}
