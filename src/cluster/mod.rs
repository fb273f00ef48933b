//! Cluster membership and slot ownership on Redis leases (`gateway.clustering`, issue 22).
//!
//! Several gateways share one Redis (the queue's). Session keys hash to P slots
//! ([`crate::queue::redis::keys::Keys::slot`]); each slot is served by at most one gateway
//! at a time, the holder of its **lease**, and every queue write of the slot carries the
//! slot's **fencing epoch**, which each acquisition raises.
//!
//! # How it works
//! - Membership: every member writes a heartbeat key with a TTL (`electionTimeout`) and adds
//!   itself to a members set once per tick (electionTimeout/6); the live members are the set
//!   filtered by existing heartbeat keys ([`lease`]). No pub/sub: a missed message cannot
//!   leave a member with a wrong view for longer than one tick.
//! - Desired owner: rendezvous hashing over the live members ([`rendezvous`]); a join or a
//!   leave moves about 1/n of the slots and nothing else.
//! - Leases: `{p}:lease:{slot}` names the holder, with `PX electionTimeout`. Acquire = one
//!   script (`SET NX PX`, then `INCR {p}:epoch:{slot}`), renew = one script for all held
//!   slots (compare-and-expire), release = compare-and-delete. The decisions are the sans-IO
//!   [`planner`]; the [`driver`] runs them on shard 0 and writes the [`ownership`] view every
//!   shard reads per request.
//! - Handover: a member that is no longer a slot's desired owner drains it (the host's
//!   `drain`, bounded by one electionTimeout; the view says `Releasing`), then deletes the
//!   lease; the new owner takes it at its next tick. A member that died is replaced once its
//!   lease expires, about one electionTimeout after its last renewal: the others read how
//!   long its heartbeat has left and look again right when it ends, not at their next tick.
//!
//! # What this is not: consensus
//! These are leases with fencing, not consensus. Safety of the data rests on the epoch: the
//! queue's scripts refuse a write whose epoch is not the slot's current one, atomically in
//! Redis, so a paused or partitioned old owner can never complete, dead-letter or admit into
//! a slot someone else took — whatever its own view says. The view itself is advisory.
//!
//! Liveness and exclusivity of *serving* rest on time:
//! - Leases expire on Redis's clock; the local deadline uses this host's monotonic clock
//!   (never the wall clock): a member stops serving at (start of its last successful renew
//!   round) + ttl − ttl/3. Redis set the TTL after that start, so the member stops at least
//!   ttl/3 before anyone else can acquire — as long as the two clocks run at about the same
//!   rate and this process is not stalled for more than ttl/3 right at its deadline (a
//!   stalled process serves a few requests late; the epoch still fences their writes).
//! - Partition: a member cut off from Redis stops serving its slots at its deadline; the
//!   members that still reach Redis take them once the leases expire. A member that reaches
//!   Redis but not the other members keeps its slots (membership is only what Redis sees);
//!   forwarding to it fails and is answered as unavailable.
//! - Redis itself is the single point of truth: if it is down, nobody can renew, so every
//!   member stops serving every slot within ttl·2/3 and takes them back when Redis returns.
//!   With `appendfsync always`, leases and epochs survive a Redis restart; a Sentinel
//!   failover to a replica can lose the last writes (replication is asynchronous), which
//!   may lower an epoch: run one Redis with its disk, or accept that window.
//! - Member ids must be unique. Two live processes with one id renew the same leases and
//!   both views say `Mine`; only the epoch (raised by the later acquisition) keeps the older
//!   one's writes out. Nothing detects that misconfiguration yet.
//!
//! # Host contract
//! The host (the gateway's queue and routing, [`ClusterHost`]) is told on shard 0:
//! `gained(slot, epoch)` after the view says `Mine` (read the slot back, then serve it),
//! `drain(slot)` before a voluntary release (finish in-flight work, accept nothing new), and
//! `lost(slot)` once the slot is no longer served (lease lost, deadline passed, released, or
//! left) — exactly once per `gained`.

pub mod driver;
mod host;
pub mod lease;
pub mod ownership;
pub mod planner;
pub mod rendezvous;
mod report;

pub use driver::{start, ClusterHandle};
pub use host::ClusterHost;
pub use ownership::{MemberIdx, Ownership, SlotOwner};

use crate::config::ClusteringConfig;

/// This member's id: `gateway.clustering.memberId`, or `"{hostname}:{bound_port}"`.
pub fn member_id(cfg: &ClusteringConfig, bound_port: u16) -> String {
    if let Some(id) = &cfg.member_id {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{bound_port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_id_defaults_to_host_and_port() {
        let mut c = ClusteringConfig::default();
        let id = member_id(&c, 18789);
        assert!(id.ends_with(":18789") && id.len() > 6, "{id}");
        c.member_id = Some("gw-a".into());
        assert_eq!(member_id(&c, 1), "gw-a");
    }
}
