//! [`Signal`]: a shard-local "something changed" notification for any number of waiters.
//!
//! The driver's tasks wait on conditions (output queued, connection up or down, close asked)
//! rather than sleeping and re-checking. A waiter takes a [`Signal::changed`] future, re-checks
//! its condition, and awaits the future only if the condition is still false: a notify between
//! taking the future and awaiting it is not lost, because the future compares generations.
//! `!Send` by design (a `Cell` and a `RefCell`): everything here lives on one executor.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A generation counter with the wakers of those waiting for it to move.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Wakes every current waiter.
    pub(crate) fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// A future that completes at the first `notify` after this call.
    pub(crate) fn changed(&self) -> Changed<'_> {
        Changed {
            signal: self,
            seen: self.generation.get(),
        }
    }
}

/// See [`Signal::changed`]. Dropping it is harmless (a stale waker is dropped at the next
/// notify); cancel-safe.
#[derive(Debug)]
pub(crate) struct Changed<'a> {
    signal: &'a Signal,
    seen: u64,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let mut wakers = self.signal.wakers.borrow_mut();
        // A task that polls in a loop keeps one entry, not one per poll.
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_notify_after_taking_the_future_is_not_lost() {
        let s = Signal::default();
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut f = Box::pin(s.changed());
        s.notify();
        assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(()));

        let mut g = Box::pin(s.changed());
        for _ in 0..3 {
            assert_eq!(g.as_mut().poll(&mut cx), Poll::Pending);
        }
        assert_eq!(
            s.wakers.borrow().len(),
            1,
            "one waker per task, however often polled"
        );
        s.notify();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(g.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
