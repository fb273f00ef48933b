//! [`Blocking`]: a connection of its own for commands that wait on the server.
//!
//! `XREADGROUP … BLOCK ms`, `BLPOP`, `BLMOVE` hold their connection until data arrives or the
//! block time ends; on the pipelined [`Client`](crate::Client) every reply queued behind them
//! would wait as long. Each shard keeps one `Blocking` beside its `Client`. Its calls run one
//! after another (they share one connection), and each call's timeout is the block time plus
//! `command_timeout`, so the server's own "nothing came" answer arrives before the client gives
//! up. That matters: a `BLPOP` abandoned by the client but answered later by the server would
//! pop an element nobody receives. (`XREADGROUP` is safe either way: an entry read but not
//! received stays pending in the group and is claimed again.)

use std::rc::Rc;
use std::time::Duration;

use crate::error::Error;
use crate::link::Link;
use crate::options::Options;
use crate::pipeline::Expect;
use crate::stats::StatsSnapshot;
use crate::value::Value;

/// A self-reconnecting connection for blocking reads (see the module docs).
#[derive(Debug, Clone)]
pub struct Blocking {
    link: Rc<Link>,
}

impl Blocking {
    /// Starts connecting in the background. Call on a glommio executor.
    pub fn new(opts: Options) -> Blocking {
        Blocking {
            link: Link::start(opts),
        }
    }

    /// Connects and waits for the first connection.
    pub async fn connect(opts: Options) -> Result<Blocking, Error> {
        let within = opts.connect_timeout;
        let b = Blocking::new(opts);
        b.link.wait_connected(within).await?;
        Ok(b)
    }

    /// Runs a command that the server may hold for up to `block` (the `BLOCK`/timeout argument
    /// the caller put in `args`). A lost connection ends it with `Disconnected` at once.
    pub async fn call(&self, args: &[&[u8]], block: Duration) -> Result<Value, Error> {
        let within = block + self.link.shared().opts.command_timeout;
        self.link.call(args, Expect::Reply, within).await
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// This link's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.link.shared().stats.snapshot()
    }

    /// Closes the connection for good; a blocked call fails with `Disconnected`.
    pub fn close(&self) {
        self.link.close();
    }
}
