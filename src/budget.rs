//! The memory budget of one load or one explanation, counted cumulatively.
//!
//! Each parser and method already checks every size its input declares before allocating (a tensor's
//! shape, a Score-CAM batch, Eigen-CAM's Gram matrix). Those checks are per allocation: many
//! allocations, each within its own limit, could still add up to more than the device has. So a
//! load or an explanation runs [`within`] a [`Budget`], and every allocation whose size the input
//! decides first takes a [`Reservation`] from it with [`reserve`]. A reservation is given back when
//! it is dropped (a batch buffer) or kept until the scope ends ([`Reservation::keep`]: a decoded
//! weight). The budget is the most bytes reserved at once, so it bounds the peak, not the traffic.
//!
//! The scope is thread-local, so the parsers and methods need no extra argument and tests running
//! in parallel do not share a budget. Outside any scope, `reserve` always succeeds.

use crate::error::{Error, Result};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Bytes allowed on top of 4x the model's f32 weights, for an explanation and for a load (the
/// file's own bytes stand in for the weights there; see [`for_load`]).
pub const HEADROOM: u64 = 512 << 20;

/// A byte limit and what is reserved against it now.
#[derive(Debug)]
pub struct Budget {
    /// "loading the model", "this explanation": the start of the error message.
    what: &'static str,
    limit: u64,
    live: Cell<u64>,
    peak: Cell<u64>,
    /// What to tell the user when it runs out: how to raise the limit.
    hint: &'static str,
    /// The error kind it runs out with (`Error::Weights` for a load, `Error::Input` otherwise).
    kind: fn(String) -> Error,
}

impl Budget {
    pub fn new(what: &'static str, limit: u64, hint: &'static str, kind: fn(String) -> Error) -> Rc<Budget> {
        Rc::new(Budget { what, limit, live: Cell::new(0), peak: Cell::new(0), hint, kind })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The most bytes reserved at once so far.
    pub fn peak(&self) -> u64 {
        self.peak.get()
    }

    fn take(&self, bytes: u64, for_what: &dyn Fn() -> String) -> Result<()> {
        let live = self.live.get();
        match live.checked_add(bytes) {
            Some(total) if total <= self.limit => {
                self.live.set(total);
                self.peak.set(self.peak.get().max(total));
                Ok(())
            }
            _ => Err((self.kind)(format!(
                "{} would need {} MiB for {} on top of the {} MiB it holds already, over its memory budget of {} MiB; {}",
                self.what,
                mib(bytes),
                for_what(),
                mib(live),
                mib(self.limit),
                self.hint
            ))),
        }
    }

    fn give_back(&self, bytes: u64) {
        self.live.set(self.live.get().saturating_sub(bytes));
    }
}

fn mib(bytes: u64) -> String {
    let m = bytes as f64 / (1u64 << 20) as f64;
    if m >= 10.0 {
        format!("{m:.0}")
    } else {
        format!("{m:.1}")
    }
}

thread_local! {
    static SCOPES: RefCell<Vec<Rc<Budget>>> = const { RefCell::new(Vec::new()) };
}

/// Pops the scope even when `f` unwinds, so a caught panic cannot leave a stale budget behind.
struct ScopeGuard;

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        SCOPES.with(|s| s.borrow_mut().pop());
    }
}

/// Runs `f` with `budget` as the budget every [`reserve`] inside it charges (the innermost scope
/// wins when scopes nest).
pub fn within<T>(budget: &Rc<Budget>, f: impl FnOnce() -> T) -> T {
    SCOPES.with(|s| s.borrow_mut().push(budget.clone()));
    let _pop = ScopeGuard;
    f()
}

/// `within` for a future: `budget` is the scope while `f` runs, at each of its polls (and not while
/// it is paused, when other code may run on this thread).
pub async fn within_async<F: std::future::Future>(budget: &Rc<Budget>, f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| within(budget, || f.as_mut().poll(cx))).await
}

/// The budget of loading a model from `file_bytes` bytes: 4x the f32 weights they can hold (an f16
/// file doubles when decoded) plus [`HEADROOM`].
pub fn for_load(file_bytes: usize) -> Rc<Budget> {
    let limit = (file_bytes as u64).saturating_mul(8).saturating_add(HEADROOM);
    Budget::new("loading the model", limit, "the file declares more data than it holds: is it corrupt, or not a model file?", Error::Weights)
}

/// Bytes held against the current budget until dropped (or until the scope ends, after `keep`).
#[must_use = "a reservation is given back when dropped"]
pub struct Reservation {
    budget: Option<Rc<Budget>>,
    bytes: u64,
}

impl Reservation {
    /// Holds the bytes until the scope ends: for what outlives the function that allocated it.
    pub fn keep(mut self) {
        self.budget = None;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give_back(self.bytes);
        }
    }
}

/// Reserves `bytes` against the current budget, or says what would exceed it. `for_what` names the
/// allocation for the message ("the Score-CAM batch of 16 masked inputs").
pub fn reserve(bytes: u64, for_what: impl Fn() -> String) -> Result<Reservation> {
    let budget = SCOPES.with(|s| s.borrow().last().cloned());
    if let Some(b) = &budget {
        b.take(bytes, &for_what)?;
    }
    Ok(Reservation { budget, bytes })
}

/// [`reserve`] for `n` f32 values; `n` may come straight from the input (checked arithmetic here).
pub fn reserve_floats(n: usize, for_what: impl Fn() -> String) -> Result<Reservation> {
    reserve((n as u64).saturating_mul(4), for_what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_and_come_back() {
        let b = Budget::new("this test", 100, "raise it", Error::Input);
        within(&b, || {
            let first = reserve(60, || "the first".into()).unwrap();
            let err = reserve(50, || "the second".into()).err().unwrap().to_string();
            assert!(err.contains("this test would need") && err.contains("for the second") && err.contains("raise it"), "{err}");
            drop(first);
            reserve(50, || "the second".into()).unwrap().keep();
            reserve(50, || "the third".into()).unwrap().keep();
            assert!(reserve(1, || "one more".into()).is_err());
        });
        assert_eq!(b.peak(), 100);
        // Outside the scope nothing is charged.
        reserve(u64::MAX, || "anything".into()).unwrap().keep();
    }

    #[test]
    fn the_innermost_scope_is_charged_and_popped_after_a_panic() {
        let outer = Budget::new("outer", 10, "", Error::Input);
        let inner = Budget::new("inner", 1000, "", Error::Input);
        within(&outer, || {
            within(&inner, || reserve(500, || "x".into()).unwrap().keep());
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| within(&inner, || panic!("boom"))));
            assert!(caught.is_err());
            assert!(reserve(500, || "y".into()).is_err(), "the outer scope is in force again");
        });
        assert_eq!(inner.peak(), 500);
    }
}
