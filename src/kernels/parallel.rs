//! Splitting a kernel's independent work across threads.
//!
//! Natively and in the threaded wasm build (feature `threads`, a cross-origin-isolated page) the
//! parts run on rayon's pool; in the single-threaded wasm build they run one after another, with
//! no rayon compiled in. Every split is by *outputs*: each part writes its own elements and sums in
//! the same order as one thread would, so the maps are bitwise identical for any thread count.
//!
//! The executor's [`Tuning`] is thread-local, so each part runs inside the caller's tuning.

use super::tuning::{self, Tuning};

/// Whether this build runs parts on a thread pool.
pub const THREADED: bool = cfg!(any(not(target_arch = "wasm32"), feature = "threads"));

/// Below this many multiply-adds a part is not worth handing to another thread (a hand-off in
/// wasm costs tens of microseconds: an `Atomics.notify` and a wake-up).
const MIN_WORK_PER_PART: usize = 1 << 17;

#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
std::thread_local! {
    /// Set while this thread runs a part: a part's own kernels stay on its thread, since the other
    /// threads are busy with the other parts already.
    static IN_PART: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Threads a kernel may split across here: the pool's size, or 1 without a pool or inside a part.
pub fn threads() -> usize {
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        if IN_PART.with(|p| p.get()) {
            1
        } else {
            rayon::current_num_threads().max(1)
        }
    }
    #[cfg(not(any(not(target_arch = "wasm32"), feature = "threads")))]
    {
        1
    }
}

/// How many parts to split `units` independent units of `work_per_unit` multiply-adds into: one
/// per thread, fewer when a part would be too small to pay for its hand-off.
pub(crate) fn parts(units: usize, work_per_unit: usize) -> usize {
    let by_work = units.saturating_mul(work_per_unit) / MIN_WORK_PER_PART;
    threads().min(units).min(by_work).max(1)
}

/// `0..len` cut into `parts` contiguous ranges whose lengths differ by at most `align` (each but
/// the last a multiple of `align`).
pub(crate) fn ranges(len: usize, parts: usize, align: usize) -> Vec<core::ops::Range<usize>> {
    let align = align.max(1);
    let units = len.div_ceil(align);
    let parts = parts.clamp(1, units.max(1));
    (0..parts)
        .map(|p| {
            let (start, end) = (units * p / parts * align, units * (p + 1) / parts * align);
            start.min(len)..end.min(len)
        })
        .collect()
}

/// Runs `f(i, item)` for every item, the items spread over the pool.
pub(crate) fn for_each<T: Send>(items: Vec<T>, f: impl Fn(usize, T) + Sync) {
    if items.len() <= 1 {
        items.into_iter().enumerate().for_each(|(i, t)| f(i, t));
        return;
    }
    run(items, f, tuning::current());
}

#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
fn run<T: Send>(items: Vec<T>, f: impl Fn(usize, T) + Sync, tuning: Tuning) {
    use rayon::prelude::*;
    /// Restores the thread's flag after its part, also when the part panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_PART.with(|p| p.set(self.0));
        }
    }
    items.into_par_iter().enumerate().for_each(|(i, t)| {
        let _restore = Restore(IN_PART.with(|p| p.replace(true)));
        tuning::scoped(tuning, || f(i, t));
    });
}

#[cfg(not(any(not(target_arch = "wasm32"), feature = "threads")))]
fn run<T: Send>(items: Vec<T>, f: impl Fn(usize, T) + Sync, _tuning: Tuning) {
    items.into_iter().enumerate().for_each(|(i, t)| f(i, t));
}

/// Splits `data` into `parts` contiguous runs of whole `unit`-sized chunks (the last chunk may be
/// short) and runs `f(first_chunk_index, run)` on each, the runs spread over the pool.
pub(crate) fn for_each_run<T: Send>(data: &mut [T], unit: usize, parts: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let unit = unit.max(1);
    let chunks = data.len().div_ceil(unit);
    let mut runs = Vec::with_capacity(parts);
    let mut rest = data;
    for r in ranges(chunks, parts, 1) {
        let (run, tail) = rest.split_at_mut((r.len() * unit).min(rest.len()));
        runs.push((r.start, run));
        rest = tail;
    }
    for_each(runs, |_, (first, run)| f(first, run));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once_aligned() {
        for (len, parts, align) in [(49usize, 2usize, 8usize), (12544, 3, 8), (5, 4, 1), (0, 2, 8), (7, 9, 4), (100, 1, 8)] {
            let rs = ranges(len, parts, align);
            assert_eq!(rs.first().map_or(0, |r| r.start), 0);
            assert_eq!(rs.last().map_or(0, |r| r.end), len);
            for w in rs.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_eq!(w[0].end % align, 0, "{len} {parts} {align}: {rs:?}");
            }
            assert!(rs.len() <= parts.max(1));
        }
    }

    #[test]
    fn runs_see_their_own_chunks() {
        let mut data: Vec<usize> = vec![0; 103];
        for_each_run(&mut data, 10, 4, |first, run| {
            for (i, chunk) in run.chunks_mut(10).enumerate() {
                chunk.fill(first + i);
            }
        });
        assert!(data.iter().enumerate().all(|(i, &v)| v == i / 10));
    }

    #[test]
    fn parts_keep_the_callers_tuning() {
        let off = Tuning { winograd: false, ..Tuning::DEFAULT };
        let seen = std::sync::Mutex::new(Vec::new());
        tuning::scoped(off, || for_each((0..8).collect(), |_, _: i32| seen.lock().unwrap().push(tuning::current().winograd)));
        assert_eq!(seen.into_inner().unwrap(), vec![false; 8]);
    }
}
