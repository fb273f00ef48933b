//! A stream wrapper that caps how many bytes may be read while a budget is set, so a client
//! cannot make the gateway buffer more than the pre-auth limit before it authenticates.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// Bytes still allowed to be read; `usize::MAX` means unlimited.
pub type Budget = Rc<Cell<usize>>;

/// `S` with a read budget.
#[derive(Debug)]
pub struct Limited<S> {
    inner: S,
    budget: Budget,
}

impl<S> Limited<S> {
    /// Wraps `inner` with `budget`.
    pub fn new(inner: S, budget: Budget) -> Self {
        Limited { inner, budget }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let left = self.budget.get();
        if left == 0 {
            return Poll::Ready(Err(io::Error::other("preauth payload too large")));
        }
        let cap = buf.len().min(left);
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, &mut buf[..cap]) {
            Poll::Ready(Ok(n)) => {
                if left != usize::MAX {
                    this.budget.set(left - n);
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
