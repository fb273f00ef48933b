//! [`Link`]: a connection to Redis that comes back by itself.
//!
//! A link is what [`Client`](crate::Client), [`Subscriber`](crate::Subscriber) and
//! [`Blocking`](crate::Blocking) share: the current [`Conn`] (if any), and a supervisor task that
//! opens it, waits for it to die, and opens the next one after a capped, jittered backoff
//! ([`Backoff`]). After a reconnect it first restores the subscriptions (if any), then makes the
//! connection visible to callers, then emits [`Push::Reconnected`].
//!
//! Ownership: the public handle owns the `Rc<Link>`; the supervisor holds only a `Weak` to it
//! (plus the shared options and counters), so dropping the last handle drops the link, whose
//! `Drop` closes the connection, which ends the supervisor. While disconnected a command either
//! fails at once or waits for the next connection within its timeout (`Options::fail_fast`);
//! it never waits longer.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use futures_channel::mpsc;
use futures_lite::future::or;
use glommio::timer::Timer;
use tracing::{debug, info};

use crate::backoff::Backoff;
use crate::conn::{await_reply, Conn};
use crate::error::Error;
use crate::options::Options;
use crate::pipeline::Expect;
use crate::push::Push;
use crate::signal::Signal;
use crate::stats::Stats;
use crate::value::Value;

/// What the supervisor and the connections need of a link without keeping it alive.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) opts: Options,
    pub(crate) stats: Stats,
    /// Where pushes go; `None` (nobody asked) or a closed receiver drops them (counted).
    pushes: RefCell<Option<mpsc::Sender<Push>>>,
}

impl Shared {
    /// Hands a push to its consumer without ever waiting: a full channel drops it.
    pub(crate) fn deliver_push(&self, push: Push) {
        let delivered = match self.pushes.borrow_mut().as_mut() {
            Some(tx) => tx.try_send(push).is_ok(),
            None => false,
        };
        self.stats.push(delivered);
    }

    /// Tells the push consumer (if any) that pushes may have been lost; not a server push,
    /// so not counted as one.
    fn notify_reconnected(&self) {
        if let Some(tx) = self.pushes.borrow_mut().as_mut() {
            let _ = tx.try_send(Push::Reconnected);
        }
    }
}

/// The channels and patterns a subscriber link restores after a reconnect.
#[derive(Debug, Default, Clone)]
pub(crate) struct Subscriptions {
    pub(crate) channels: BTreeSet<Vec<u8>>,
    pub(crate) patterns: BTreeSet<Vec<u8>>,
}

/// A self-reconnecting connection (see the module docs).
#[derive(Debug)]
pub(crate) struct Link {
    shared: Rc<Shared>,
    current: RefCell<Option<Rc<Conn>>>,
    /// Notified when a connection is installed or lost, when an attempt fails, and on close.
    state: Signal,
    /// Why the last attempt failed, until one succeeds (what `connect` reports).
    last_error: RefCell<Option<Error>>,
    closed: Cell<bool>,
    pub(crate) subscriptions: RefCell<Subscriptions>,
}

impl Link {
    /// Starts a link (the supervisor connects in the background). Call on a glommio executor.
    pub(crate) fn start(opts: Options) -> Rc<Link> {
        let shared = Rc::new(Shared {
            opts,
            stats: Stats::default(),
            pushes: RefCell::new(None),
        });
        let link = Rc::new(Link {
            shared: shared.clone(),
            current: RefCell::new(None),
            state: Signal::default(),
            last_error: RefCell::new(None),
            closed: Cell::new(false),
            subscriptions: RefCell::new(Subscriptions::default()),
        });
        glommio::spawn_local(supervise(Rc::downgrade(&link), shared)).detach();
        link
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// A new push channel; pushes go to it from now on (a previous receiver gets no more).
    pub(crate) fn push_channel(&self) -> mpsc::Receiver<Push> {
        let (tx, rx) = mpsc::channel(self.shared.opts.push_capacity.max(1));
        *self.shared.pushes.borrow_mut() = Some(tx);
        rx
    }

    /// Waits until connected; fails with the last attempt's error once an attempt failed and
    /// `within` ran out (or at once if closed).
    pub(crate) async fn wait_connected(&self, within: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        loop {
            let changed = self.state.changed();
            if self.closed.get() {
                return Err(Error::Closed);
            }
            if self.live().is_some() {
                return Ok(());
            }
            if !wait_until(changed, deadline).await {
                return Err(self
                    .last_error
                    .borrow()
                    .clone()
                    .unwrap_or(Error::Disconnected));
            }
        }
    }

    /// The current connection if it is alive.
    fn live(&self) -> Option<Rc<Conn>> {
        self.current
            .borrow()
            .as_ref()
            .filter(|c| c.is_alive())
            .cloned()
    }

    /// True while a live connection is installed.
    pub(crate) fn is_connected(&self) -> bool {
        self.live().is_some()
    }

    /// Requests waiting for their reply on the current connection.
    pub(crate) fn in_flight(&self) -> usize {
        self.live().map_or(0, |c| c.in_flight())
    }

    /// Runs one command within `within` (waiting for a reconnect counts), and counts it.
    pub(crate) async fn call(
        &self,
        args: &[&[u8]],
        expect: Expect,
        within: Duration,
    ) -> Result<Value, Error> {
        self.shared.stats.command();
        let result = self.call_uncounted(args, expect, within).await;
        if let Err(e) = &result {
            self.shared.stats.failed(e);
        }
        result
    }

    async fn call_uncounted(
        &self,
        args: &[&[u8]],
        expect: Expect,
        within: Duration,
    ) -> Result<Value, Error> {
        let deadline = Instant::now() + within;
        let conn = self.ready_conn(deadline).await?;
        let rx = conn.send(args, expect)?;
        match await_reply(rx, deadline.saturating_duration_since(Instant::now())).await {
            // Report the caller's timeout, not what was left of it after a reconnect wait.
            Err(Error::Timeout(_)) => Err(Error::Timeout(within)),
            other => other,
        }
    }

    async fn ready_conn(&self, deadline: Instant) -> Result<Rc<Conn>, Error> {
        loop {
            let changed = self.state.changed();
            if self.closed.get() {
                return Err(Error::Closed);
            }
            if let Some(conn) = self.live() {
                return Ok(conn);
            }
            if self.shared.opts.fail_fast || !wait_until(changed, deadline).await {
                return Err(Error::Disconnected);
            }
        }
    }

    /// Closes the link for good: the connection is closed (pending requests get
    /// `Disconnected`), later calls get `Closed`, the supervisor ends.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        // Dropping the sender ends the push receiver.
        self.shared.pushes.borrow_mut().take();
        if let Some(conn) = self.current.borrow_mut().take() {
            conn.close();
        }
        self.state.notify();
    }

    fn install(&self, conn: Rc<Conn>) {
        *self.current.borrow_mut() = Some(conn);
        *self.last_error.borrow_mut() = None;
        self.state.notify();
    }

    fn lost(&self) {
        self.current.borrow_mut().take();
        self.state.notify();
    }

    fn attempt_failed(&self, e: Error) {
        *self.last_error.borrow_mut() = Some(e);
        self.state.notify();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
    }
}

/// Awaits `changed` until `deadline`; false when the deadline came first.
async fn wait_until(changed: crate::signal::Changed<'_>, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    or(
        async {
            changed.await;
            true
        },
        async {
            Timer::new(left).await;
            false
        },
    )
    .await
}

/// The supervisor: connect, serve until the connection dies, back off, repeat; ends when the
/// link is gone or closed.
async fn supervise(link: Weak<Link>, shared: Rc<Shared>) {
    let opts = &shared.opts;
    let mut backoff = Backoff::new(opts.reconnect_min, opts.reconnect_max);
    let mut connected_before = false;
    loop {
        let subs = match link.upgrade() {
            Some(l) if !l.closed.get() => l.subscriptions.borrow().clone(),
            _ => return,
        };
        let opened = match Conn::open(shared.clone()).await {
            Ok(conn) => match resubscribe(&conn, &subs, opts.command_timeout).await {
                Ok(()) => Ok(conn),
                Err(e) => {
                    conn.close();
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        let Some(l) = link.upgrade() else {
            if let Ok(conn) = opened {
                conn.close();
            }
            return;
        };
        if l.closed.get() {
            if let Ok(conn) = opened {
                conn.close();
            }
            return;
        }
        match opened {
            Ok(conn) => {
                backoff.reset();
                if connected_before {
                    shared.stats.reconnect();
                    info!(addr = %opts.addr, "redis reconnected");
                }
                l.install(conn.clone());
                if connected_before {
                    shared.notify_reconnected();
                }
                connected_before = true;
                drop(l);
                conn.died().await;
                match link.upgrade() {
                    Some(l) => l.lost(),
                    None => return,
                }
            }
            Err(e) => {
                debug!(addr = %opts.addr, error = %e, "redis connect failed");
                l.attempt_failed(e);
                drop(l);
                Timer::new(backoff.next_delay(fastrand::f64())).await;
            }
        }
    }
}

/// Restores a subscriber's channels and patterns on a fresh connection, before callers see it.
async fn resubscribe(conn: &Conn, subs: &Subscriptions, within: Duration) -> Result<(), Error> {
    for (cmd, names) in [
        (b"SUBSCRIBE".as_slice(), &subs.channels),
        (b"PSUBSCRIBE".as_slice(), &subs.patterns),
    ] {
        if names.is_empty() {
            continue;
        }
        let mut args: Vec<&[u8]> = vec![cmd];
        args.extend(names.iter().map(Vec::as_slice));
        conn.request(&args, Expect::Confirmations(names.len()), within)
            .await?;
    }
    Ok(())
}
