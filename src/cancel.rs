//! Cooperative cancellation of a long computation, checked once per batch.
//!
//! The long methods (Score-CAM, Ablation-CAM, Integrated Gradients, SmoothGrad, Occlusion,
//! augmentation smoothing) and the faithfulness curves call [`check`] after each batch of forwards;
//! it fails with [`Error::Cancelled`] once [`request`] was called, or once the poller that
//! [`set_poller`] installed says so. The wasm bindings request it when the caller's progress callback
//! throws (the worker throws there when the page aborted the call) and poll the caller's
//! `isCancelled` option; native callers never do, and pay one thread-local read per batch.

use crate::error::{Error, Result};
use std::cell::{Cell, RefCell};

thread_local! {
    static REQUESTED: Cell<bool> = const { Cell::new(false) };
    static POLLER: RefCell<Option<Box<dyn Fn() -> bool>>> = const { RefCell::new(None) };
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
}
