//! Cooperative cancellation of a long computation, checked once per batch.
//!
//! The long methods (Score-CAM, Ablation-CAM, Integrated Gradients, SmoothGrad, Occlusion,
//! augmentation smoothing) and the faithfulness curves call [`check`] after each batch of forwards;
//! it fails with [`Error::Cancelled`] once [`request`] was called, or once the poller that
//! [`set_poller`] installed says so. The wasm bindings request it when the caller's progress callback
//! throws (the worker throws there when the page aborted the call) and poll the caller's
//! `isCancelled` option; native callers never do, and pay one thread-local read per batch.
//!
//! A synchronous run cannot see a message that arrives while it runs (a worker reads its messages
//! between tasks). So the long loops are `async` and call [`checkpoint`] between batches: with a
//! pause installed ([`set_pause`]: the wasm bindings' async entries install one that waits for the
//! next task of the event loop) the host's event loop runs there, and an abort message can set the
//! flag [`check`] reads. Without a pause every checkpoint is ready at once, and [`run_sync`] runs
//! the same code synchronously (native callers, the synchronous JS entries, short methods).

use crate::error::{Error, Result};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// What a checkpoint awaits to let the host's event loop run (a promise of its next task, in JS).
pub type Pause = Rc<dyn Fn() -> Pin<Box<dyn Future<Output = ()>>>>;

thread_local! {
    static REQUESTED: Cell<bool> = const { Cell::new(false) };
    static POLLER: RefCell<Option<Box<dyn Fn() -> bool>>> = const { RefCell::new(None) };
    static PAUSE: RefCell<Option<Pause>> = const { RefCell::new(None) };
}

/// Asks the running computation to stop at its next batch.
pub fn request() {
    REQUESTED.with(|r| r.set(true));
}

/// Starts a new computation: no request pending, and `poller` (if any) asked at each check.
pub fn reset(poller: Option<Box<dyn Fn() -> bool>>) {
    REQUESTED.with(|r| r.set(false));
    POLLER.with(|p| *p.borrow_mut() = poller);
}

/// Whether the running computation was asked to stop.
pub fn requested() -> bool {
    if REQUESTED.with(|r| r.get()) {
        return true;
    }
    let polled = POLLER.with(|p| p.borrow().as_ref().is_some_and(|f| f()));
    if polled {
        request();
    }
    polled
}

/// `Err(Error::Cancelled)` once a stop was asked for: called between batches.
pub fn check() -> Result<()> {
    if requested() {
        return Err(Error::Cancelled("the caller aborted this call".into()));
    }
    Ok(())
}

/// Installs (or, with `None`, removes) what [`checkpoint`] awaits; returns the one it replaces.
pub fn set_pause(pause: Option<Pause>) -> Option<Pause> {
    PAUSE.with(|p| std::mem::replace(&mut *p.borrow_mut(), pause))
}

/// Between batches of a long loop: [`check`], then the installed pause (if any), then `check` again,
/// so a stop asked for while the event loop ran is seen before the next batch starts.
pub async fn checkpoint() -> Result<()> {
    check()?;
    let pause = PAUSE.with(|p| p.borrow().clone());
    if let Some(pause) = pause {
        pause().await;
        check()?;
    }
    Ok(())
}

/// Runs `f`, whose only awaits are [`checkpoint`]s, to completion now: the pause is removed while it
/// runs (and put back after), so every checkpoint is ready at once.
pub fn run_sync<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    let saved = set_pause(None);
    let out = match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => Err(Error::Internal("a synchronous explanation waited for something other than a checkpoint".into())),
    };
    set_pause(saved);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_or_the_poller_stops_until_the_next_reset() {
        reset(None);
        assert!(check().is_ok());
        request();
        assert!(matches!(check(), Err(Error::Cancelled(_))));
        reset(Some(Box::new(|| true)));
        assert!(check().is_err());
        reset(None);
        assert!(check().is_ok());
    }

    #[test]
    fn run_sync_finishes_a_loop_of_checkpoints_even_with_a_pause_that_never_ends() {
        reset(None);
        let calls = Rc::new(Cell::new(0));
        let seen = calls.clone();
        set_pause(Some(Rc::new(move || {
            seen.set(seen.get() + 1);
            Box::pin(std::future::pending::<()>())
        })));
        let batches = run_sync(async {
            for _ in 0..3 {
                checkpoint().await?;
            }
            Ok(3)
        });
        assert_eq!(batches.unwrap(), 3);
        assert_eq!(calls.get(), 0, "no pause inside run_sync");
        assert!(set_pause(None).is_some(), "the pause is back after it");
        request();
        assert!(matches!(run_sync(checkpoint()), Err(Error::Cancelled(_))));
        reset(None);
    }
}
