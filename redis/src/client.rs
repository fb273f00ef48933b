//! [`Client`]: the pipelined command connection of one shard.
//!
//! The gateway holds one `Client` per shard (it is `!Send`: `Rc` inside, like everything a
//! shard owns). Any number of tasks on that shard may call it at once; their commands share one
//! connection and are pipelined (see `conn.rs`). Long blocking reads (`BLPOP`, `XREADGROUP …
//! BLOCK`) do not belong here — one would hold up every reply queued behind it — but on a
//! [`Blocking`](crate::Blocking) link; subscriptions on a [`Subscriber`](crate::Subscriber).

use std::rc::Rc;
use std::time::Duration;

use futures_channel::mpsc;

use crate::error::Error;
use crate::link::Link;
use crate::options::Options;
use crate::pipeline::Expect;
use crate::push::Push;
use crate::stats::StatsSnapshot;
use crate::value::Value;

/// A pipelined, self-reconnecting Redis connection (see the module docs). Cheap to clone:
/// clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    link: Rc<Link>,
}

impl Client {
    /// Starts connecting in the background and returns at once: commands wait for the
    /// connection within their timeout (or fail fast, per [`Options::fail_fast`]). For a
    /// gateway that must start while Redis is down. Call on a glommio executor.
    pub fn new(opts: Options) -> Client {
        Client {
            link: Link::start(opts),
        }
    }

    /// Connects and waits for the first connection, retrying with backoff for up to
    /// `connect_timeout`; fails with the reason of the last attempt.
    pub async fn connect(opts: Options) -> Result<Client, Error> {
        let within = opts.connect_timeout;
        let client = Client::new(opts);
        client.link.wait_connected(within).await?;
        Ok(client)
    }

    /// Runs one command (`args[0]` is its name) within the default command timeout.
    pub async fn call(&self, args: &[&[u8]]) -> Result<Value, Error> {
        self.call_within(args, self.link.shared().opts.command_timeout)
            .await
    }

    /// Runs one command within `timeout` (from now to its reply, a reconnect wait included).
    /// A command that times out may still run on the server; its late reply is discarded.
    pub async fn call_within(&self, args: &[&[u8]], timeout: Duration) -> Result<Value, Error> {
        self.link.call(args, Expect::Reply, timeout).await
    }

    /// Pushes that arrive on this connection (`invalidate` after `CLIENT TRACKING on`, and
    /// [`Push::Reconnected`], after which tracking must be turned on again). Replaces the
    /// previous receiver; without one, pushes are dropped (counted).
    pub fn pushes(&self) -> mpsc::Receiver<Push> {
        self.link.push_channel()
    }

    /// Waits until connected, within `within`.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), Error> {
        self.link.wait_connected(within).await
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// Commands waiting for their reply right now.
    pub fn in_flight(&self) -> usize {
        self.link.in_flight()
    }

    /// This link's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.link.shared().stats.snapshot()
    }

    /// The options it was made with.
    pub fn options(&self) -> &Options {
        &self.link.shared().opts
    }

    /// Closes the connection for good (for every clone): in-flight commands fail with
    /// `Disconnected`, later ones with `Closed`.
    pub fn close(&self) {
        self.link.close();
    }
}
