//! `gateway.clustering`: several gateways sharing one Redis, each slot of sessions owned by
//! one of them through a Redis lease (issue 22; the design is in `crate::cluster`).
//!
//! Only the seed's shape is accepted: `mode: "active_active"`, elections on Redis leases.
//! `consensus: "raft"` is refused by name — shardgate never runs a consensus of its own.

use serde::{Deserialize, Serialize};

use super::duration::Millis;

/// `gateway.clustering`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusteringConfig {
    /// Join a cluster. Default false. Needs `queue.backend: "redis"`: the leases live in the
    /// queue's Redis (`queue.redis.url`, same `keyPrefix`, `slots`).
    pub enabled: bool,
    /// `"active_active"` (the only mode): every member serves the slots it holds.
    pub mode: ClusterMode,
    /// `host:port` of the members you expect (informational: status and doctor report which
    /// of them are live, by member id, so set each member's `memberId` to its entry here).
    pub nodes: Vec<String>,
    /// Lease and heartbeat time-to-live. Default "3s". A member that died is replaced within
    /// about this plus one tick (electionTimeout/6); one that cannot renew stops serving
    /// after two thirds of it. Lower: faster failover, more Redis traffic and more false
    /// failovers on a slow network or a stalled host.
    pub election_timeout: Millis,
    /// This member's id in Redis; unique in the cluster and stable across restarts. Default
    /// (null): `"{hostname}:{bound port}"`, resolved at start.
    pub member_id: Option<String>,
    /// Where elections happen: absent or `"redis"` (leases with fencing epochs). `"raft"` is
    /// refused: shardgate does not run its own consensus.
    pub consensus: Option<String>,
}

/// `gateway.clustering.mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ClusterMode {
    /// Every member serves its own slots; any member takes requests for any session.
    #[default]
    #[serde(rename = "active_active")]
    ActiveActive,
}

impl Default for ClusteringConfig {
    fn default() -> Self {
        ClusteringConfig {
            enabled: false,
            mode: ClusterMode::ActiveActive,
            nodes: Vec::new(),
            election_timeout: Millis(3_000),
            member_id: None,
            consensus: None,
        }
    }
}

/// Shortest `electionTimeout`: its tick (a sixth) must stay well above a Redis round trip.
const MIN_ELECTION_TIMEOUT_MS: u64 = 300;

impl ClusteringConfig {
    /// Checks the keys given the queue backend (the caller names
    /// `gateway.clustering.<key>` in its error).
    pub fn check(&self, queue_backend: &str) -> Result<(), (&'static str, String)> {
        match self.consensus.as_deref() {
            None | Some("redis") => {}
            Some("raft") => {
                return Err((
                    "consensus",
                    "\"raft\" is not supported: shardgate elects slot owners with Redis \
                     leases and fencing epochs, never a consensus of its own; remove the key \
                     or set \"redis\""
                        .into(),
                ))
            }
            Some(other) => {
                return Err((
                    "consensus",
                    format!("unknown engine {other:?} (only \"redis\")"),
                ))
            }
        }
        if !self.enabled {
            return Ok(());
        }
        if queue_backend != "redis" {
            return Err((
                "enabled",
                format!(
                    "clustering needs queue.backend \"redis\" (the leases live in the queue's \
                     Redis), not {queue_backend:?}"
                ),
            ));
        }
        if self.election_timeout.0 < MIN_ELECTION_TIMEOUT_MS {
            return Err((
                "electionTimeout",
                format!("must be at least {MIN_ELECTION_TIMEOUT_MS}ms"),
            ));
        }
        if let Some(id) = &self.member_id {
            if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(("memberId", "must be non-empty, without spaces".into()));
            }
        }
        if let Some(n) = self.nodes.iter().find(|n| n.rsplit_once(':').is_none()) {
            return Err(("nodes", format!("{n:?} is not host:port")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_is_refused_by_name_and_redis_accepted() {
        let mut c = ClusteringConfig {
            consensus: Some("raft".into()),
            ..Default::default()
        };
        let (key, why) = c.check("memory").unwrap_err();
        assert_eq!(key, "consensus");
        assert!(why.contains("Redis leases"), "{why}");
        c.consensus = Some("redis".into());
        assert!(c.check("memory").is_ok());
        c.consensus = Some("etcd".into());
        assert_eq!(c.check("memory").unwrap_err().0, "consensus");
    }

    #[test]
    fn enabled_needs_the_redis_queue() {
        let mut c = ClusteringConfig {
            enabled: true,
            ..Default::default()
        };
        assert_eq!(c.check("journal").unwrap_err().0, "enabled");
        assert!(c.check("redis").is_ok());
        c.election_timeout = Millis(100);
        assert_eq!(c.check("redis").unwrap_err().0, "electionTimeout");
        c.election_timeout = Millis(3_000);
        c.member_id = Some("a b".into());
        assert_eq!(c.check("redis").unwrap_err().0, "memberId");
        c.member_id = None;
        c.nodes = vec!["10.0.0.1".into()];
        assert_eq!(c.check("redis").unwrap_err().0, "nodes");
    }
}
