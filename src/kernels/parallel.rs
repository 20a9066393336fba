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
    /// Set while this thread keeps the pool awake ([`awake`]): nested calls add no pollers.
    static AWAKE: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
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

/// Runs `f` on this thread while the pool's other threads, instead of sleeping between its parallel
/// loops, poll for their parts. A sleeping pool thread in wasm is a Web Worker in `Atomics.wait`; waking
/// it took about 0.1 ms per loop in Chromium (`bench/profile.mjs`), as long as a small conv's half, and
/// an EfficientNet-Lite0 Grad-CAM has 49 such loops. So a forward or a backward walk keeps the pool
/// awake for its length, and lets it sleep between calls. Outside a pool (a native caller that is not
/// a pool thread, the single-threaded build) this is `f()`.
pub fn awake<R>(f: impl FnOnce() -> R) -> R {
    keep_awake(f)
}

#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
fn keep_awake<R>(f: impl FnOnce() -> R) -> R {
    use core::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    /// Tells the pollers to stop when `f` returns or unwinds.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
            AWAKE.with(|a| a.set(false));
        }
    }
    let me = rayon::current_thread_index();
    if me.is_none() || threads() < 2 || AWAKE.with(|a| a.replace(true)) {
        return f();
    }
    let stop = Stop(Arc::new(AtomicBool::new(false)));
    for _ in 1..threads() {
        let stop = stop.0.clone();
        rayon::spawn(move || {
            // This thread may pick a poller up itself while it waits inside `f`: it must not poll.
            if rayon::current_thread_index() == me {
                return;
            }
            while !stop.load(Ordering::Acquire) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    core::hint::spin_loop();
                }
            }
        });
    }
    let r = f();
    drop(stop);
    r
}

#[cfg(not(any(not(target_arch = "wasm32"), feature = "threads")))]
fn keep_awake<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The parts go to whoever claims them first: this thread and one helper job per other thread (taken
/// at once by a thread kept [`awake`], else by one that wakes). This thread, done with what it
/// claimed, waits for the parts still running elsewhere without sleeping: a sleeping waiter in wasm
/// is woken about 0.1 ms after the last part ends, which rayon's own join would cost at every loop.
#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
fn run<T: Send>(items: Vec<T>, f: impl Fn(usize, T) + Sync, tuning: Tuning) {
    use core::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    /// Restores the thread's flag after its part, also when the part panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_PART.with(|p| p.set(self.0));
        }
    }
    /// Counts a part as done when it ends, also by a panic (else the wait below would never end).
    struct Done<'a>(&'a AtomicUsize);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Release);
        }
    }
    let n = items.len();
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let (next, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let profiled = crate::profile::enabled();
    let durations = Mutex::new(Vec::new());
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        let _done = Done(&done);
        let item = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = item {
            let _restore = Restore(IN_PART.with(|p| p.replace(true)));
            let start = if profiled { crate::clock::now_ms() } else { 0.0 };
            tuning::scoped(tuning, || f(i, t));
            if profiled {
                durations.lock().unwrap_or_else(|e| e.into_inner()).push((crate::clock::now_ms() - start, rayon::current_thread_index()));
            }
        }
    };
    let t0 = if profiled { crate::clock::now_ms() } else { 0.0 };
    rayon::scope(|s| {
        for _ in 1..threads().min(n) {
            s.spawn(|_| work());
        }
        work();
        while done.load(Ordering::Acquire) < n {
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                core::hint::spin_loop();
            }
        }
    });
    if profiled {
        // Where a split loses time: parts that start late, parts of unequal length, and parts
        // that run slower on the other threads than on the caller's.
        let (wall, d) = (crate::clock::now_ms() - t0, durations.into_inner().unwrap_or_else(|e| e.into_inner()));
        let longest = d.iter().map(|p| p.0).fold(0.0, f64::max);
        crate::profile::add("  parallel: wall - longest part", wall - longest);
        crate::profile::add("  parallel: longest - mean part", longest - d.iter().map(|p| p.0).sum::<f64>() / d.len().max(1) as f64);
        let me = rayon::current_thread_index();
        crate::profile::add("  parallel: the caller's parts", d.iter().filter(|p| p.1 == me).map(|p| p.0).sum());
        crate::profile::add("  parallel: other threads' parts", d.iter().filter(|p| p.1 != me).map(|p| p.0).sum());
        crate::profile::add("  parallel: wall", wall);
    }
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

/// Values per piece of an elementwise pass's split ([`in_runs`]): a few L1-sized runs.
pub(crate) const RUN: usize = 4096;

/// Runs `f(offset, run)` over `out` cut into runs of whole [`RUN`]s, spread over the pool. An
/// elementwise pass after a conv split across threads would otherwise be the serial part of that
/// conv: on two threads, a pass over its whole output while the other thread waits. Each element is
/// computed alone, so the bits are the same on any number of threads.
pub(crate) fn in_runs<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    let parts = parts(out.len().div_ceil(RUN), RUN);
    for_each_run(out, RUN, parts, |first, run| f(first * RUN, run));
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

    /// Inside a pool kept awake, every part runs once, nested calls neither add pollers nor wait
    /// for them, and the pollers stop with the call (else this test would never end).
    #[test]
    fn an_awake_pool_runs_every_part_once_and_lets_go() {
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
            let sums = pool.install(|| {
                awake(|| {
                    (0..50)
                        .map(|round| {
                            let hits: Vec<std::sync::atomic::AtomicUsize> = (0..7).map(|_| Default::default()).collect();
                            awake(|| for_each((0..7).collect(), |i, v: usize| _ = hits[i].fetch_add(v + round, core::sync::atomic::Ordering::Relaxed)));
                            hits.iter().map(|h| h.load(core::sync::atomic::Ordering::Relaxed)).sum::<usize>()
                        })
                        .sum::<usize>()
                })
            });
            assert_eq!(sums, (0..50).map(|r| 21 + 7 * r).sum::<usize>(), "{threads} threads");
            assert!(!pool.install(|| AWAKE.with(|a| a.get())), "the flag is cleared");
        }
    }

    /// A part that panics ends the call with that panic instead of leaving the caller waiting.
    #[test]
    fn a_panicking_part_does_not_hang_the_caller() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.install(|| awake(|| for_each((0..6).collect(), |i, _: usize| assert!(i != 4, "part 4 fails"))))));
        assert!(r.is_err());
        let after: Vec<usize> = pool.install(|| {
            let out = std::sync::Mutex::new(Vec::new());
            for_each((0..4).collect(), |i, _: usize| out.lock().unwrap().push(i));
            out.into_inner().unwrap()
        });
        assert_eq!(after.len(), 4, "the pool still works");
    }

    #[test]
    fn parts_keep_the_callers_tuning() {
        let off = Tuning { winograd: false, ..Tuning::DEFAULT };
        let seen = std::sync::Mutex::new(Vec::new());
        tuning::scoped(off, || for_each((0..8).collect(), |_, _: i32| seen.lock().unwrap().push(tuning::current().winograd)));
        assert_eq!(seen.into_inner().unwrap(), vec![false; 8]);
    }
}
