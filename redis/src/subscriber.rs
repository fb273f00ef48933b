//! [`Subscriber`]: the pub/sub connection of one shard.
//!
//! A connection that subscribes receives messages as RESP3 pushes at any time; keeping it apart
//! from the pipelined [`Client`](crate::Client) keeps a burst of messages from sitting in front
//! of command replies. Messages come out of the receiver returned by
//! [`Subscriber::connect`]. The subscriber remembers its channels and patterns and restores
//! them after a reconnect, then sends [`Push::Reconnected`]: messages published while it was
//! down are lost, so consumers treat pub/sub as a hint and reconcile from the data.

use std::rc::Rc;
use std::time::Duration;

use futures_channel::mpsc;

use crate::error::Error;
use crate::link::Link;
use crate::options::Options;
use crate::pipeline::Expect;
use crate::push::Push;
use crate::stats::StatsSnapshot;

/// A self-resubscribing pub/sub connection (see the module docs).
#[derive(Debug, Clone)]
pub struct Subscriber {
    link: Rc<Link>,
}

impl Subscriber {
    /// Connects; the receiver yields [`Push::Message`], [`Push::PMessage`] and
    /// [`Push::Reconnected`] (and any other push the server sends). If the receiver falls
    /// `Options::push_capacity` behind, messages are dropped and counted.
    pub async fn connect(opts: Options) -> Result<(Subscriber, mpsc::Receiver<Push>), Error> {
        let within = opts.connect_timeout;
        let link = Link::start(opts);
        let rx = link.push_channel();
        link.wait_connected(within).await?;
        Ok((Subscriber { link }, rx))
    }

    /// Subscribes to `channels` and waits for the server's confirmation of each.
    pub async fn subscribe(&self, channels: &[&[u8]]) -> Result<(), Error> {
        self.change(b"SUBSCRIBE", channels, |s| &mut s.channels, true)
            .await
    }

    /// Subscribes to the glob-style `patterns`.
    pub async fn psubscribe(&self, patterns: &[&[u8]]) -> Result<(), Error> {
        self.change(b"PSUBSCRIBE", patterns, |s| &mut s.patterns, true)
            .await
    }

    /// Unsubscribes from `channels` (each must be named).
    pub async fn unsubscribe(&self, channels: &[&[u8]]) -> Result<(), Error> {
        self.change(b"UNSUBSCRIBE", channels, |s| &mut s.channels, false)
            .await
    }

    /// Unsubscribes from `patterns` (each must be named).
    pub async fn punsubscribe(&self, patterns: &[&[u8]]) -> Result<(), Error> {
        self.change(b"PUNSUBSCRIBE", patterns, |s| &mut s.patterns, false)
            .await
    }

    /// Records the change first (so a reconnect in between restores the new set), then sends
    /// it and waits for one confirmation per name.
    async fn change(
        &self,
        cmd: &[u8],
        names: &[&[u8]],
        set: fn(&mut crate::link::Subscriptions) -> &mut std::collections::BTreeSet<Vec<u8>>,
        add: bool,
    ) -> Result<(), Error> {
        if names.is_empty() {
            return Ok(());
        }
        {
            let mut subs = self.link.subscriptions.borrow_mut();
            let set = set(&mut subs);
            for n in names {
                if add {
                    set.insert(n.to_vec());
                } else {
                    set.remove(*n);
                }
            }
        }
        let mut args: Vec<&[u8]> = Vec::with_capacity(names.len() + 1);
        args.push(cmd);
        args.extend_from_slice(names);
        let within = self.link.shared().opts.command_timeout;
        self.link
            .call(&args, Expect::Confirmations(names.len()), within)
            .await
            .map(drop)
    }

    /// Waits until connected (and resubscribed), within `within`.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), Error> {
        self.link.wait_connected(within).await
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// This link's counters (`pushes`, `pushes_dropped` count messages).
    pub fn stats(&self) -> StatsSnapshot {
        self.link.shared().stats.snapshot()
    }

    /// Closes the connection for good; the receiver then ends.
    pub fn close(&self) {
        self.link.close();
    }
}
