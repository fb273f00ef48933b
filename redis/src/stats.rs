//! [`Stats`]: per-link counters, updated in place on the shard, read as a [`StatsSnapshot`].
//!
//! `Cell`s, not atomics: a link lives on one shard. The gateway sums the snapshots of its
//! shards (`+`) for `/metrics` and `gateway status`.

use std::cell::Cell;
use std::ops::Add;
use std::time::Duration;

/// The live counters of one link.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    commands: Cell<u64>,
    errors: Cell<u64>,
    timeouts: Cell<u64>,
    disconnected: Cell<u64>,
    reconnects: Cell<u64>,
    replies: Cell<u64>,
    rtt_sum_us: Cell<u64>,
    pushes: Cell<u64>,
    pushes_dropped: Cell<u64>,
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get().wrapping_add(by));
}

impl Stats {
    pub(crate) fn command(&self) {
        bump(&self.commands, 1);
    }

    /// A command ended in `err` (a server error reply or a client-side failure).
    pub(crate) fn failed(&self, err: &crate::Error) {
        bump(&self.errors, 1);
        match err {
            crate::Error::Timeout(_) => bump(&self.timeouts, 1),
            crate::Error::Disconnected => bump(&self.disconnected, 1),
            _ => {}
        }
    }

    /// A reply (value or error) arrived `rtt` after its command was queued.
    pub(crate) fn reply(&self, rtt: Duration) {
        bump(&self.replies, 1);
        bump(
            &self.rtt_sum_us,
            rtt.as_micros().min(u64::MAX as u128) as u64,
        );
    }

    pub(crate) fn reconnect(&self) {
        bump(&self.reconnects, 1);
    }

    pub(crate) fn push(&self, delivered: bool) {
        bump(&self.pushes, 1);
        if !delivered {
            bump(&self.pushes_dropped, 1);
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            commands: self.commands.get(),
            errors: self.errors.get(),
            timeouts: self.timeouts.get(),
            disconnected: self.disconnected.get(),
            reconnects: self.reconnects.get(),
            replies: self.replies.get(),
            rtt_sum: Duration::from_micros(self.rtt_sum_us.get()),
            pushes: self.pushes.get(),
            pushes_dropped: self.pushes_dropped.get(),
        }
    }
}

/// Counters of one link (or, summed, of many) at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Commands called.
    pub commands: u64,
    /// Commands that ended in an error (server error replies included).
    pub errors: u64,
    /// Of `errors`: no reply within the command timeout.
    pub timeouts: u64,
    /// Of `errors`: the connection was lost or down.
    pub disconnected: u64,
    /// Connections re-established after a loss (the first connect is not counted).
    pub reconnects: u64,
    /// Replies received (late ones of timed-out commands included).
    pub replies: u64,
    /// Sum of round-trip times of `replies`, from queueing to reply; mean = sum / replies.
    pub rtt_sum: Duration,
    /// Pushes received (pub/sub messages, invalidations).
    pub pushes: u64,
    /// Of `pushes`: dropped because the push channel was full or nobody listened.
    pub pushes_dropped: u64,
}

impl StatsSnapshot {
    /// Mean round-trip time, if any reply arrived.
    pub fn mean_rtt(&self) -> Option<Duration> {
        (self.replies > 0).then(|| self.rtt_sum / self.replies.min(u32::MAX as u64) as u32)
    }
}

impl Add for StatsSnapshot {
    type Output = StatsSnapshot;

    fn add(self, o: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            commands: self.commands + o.commands,
            errors: self.errors + o.errors,
            timeouts: self.timeouts + o.timeouts,
            disconnected: self.disconnected + o.disconnected,
            reconnects: self.reconnects + o.reconnects,
            replies: self.replies + o.replies,
            rtt_sum: self.rtt_sum + o.rtt_sum,
            pushes: self.pushes + o.pushes,
            pushes_dropped: self.pushes_dropped + o.pushes_dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind_and_snapshots_sum() {
        let s = Stats::default();
        s.command();
        s.command();
        s.failed(&crate::Error::Timeout(Duration::from_secs(1)));
        s.failed(&crate::Error::Disconnected);
        s.reply(Duration::from_millis(3));
        s.reply(Duration::from_millis(1));
        let a = s.snapshot();
        assert_eq!(
            (a.commands, a.errors, a.timeouts, a.disconnected),
            (2, 2, 1, 1)
        );
        assert_eq!(a.mean_rtt(), Some(Duration::from_millis(2)));
        let sum = a + a;
        assert_eq!(sum.replies, 4);
        assert_eq!(sum.rtt_sum, Duration::from_millis(8));
        assert_eq!(StatsSnapshot::default().mean_rtt(), None);
    }
}
