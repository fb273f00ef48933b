//! What an operator sees of the cluster: the status JSON (`gateway status --verbose`) and
//! the Prometheus lines the gateway appends to `/metrics`. Read from the [`Ownership`] view;
//! cheap enough for every scrape (one pass over the slots).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::ownership::{Ownership, SlotOwner};

impl Ownership {
    /// Members (live, expected, which expected are missing), owned and releasing slots with
    /// their epochs, Redis round trip, renew failures, the last error and the last renew's age.
    pub fn status_json(&self) -> Value {
        let h = self.health();
        let (mut owned, mut releasing, mut elsewhere, mut unknown) =
            (Vec::new(), Vec::new(), 0u32, 0u32);
        for s in 0..self.slots() {
            match self.owner(s) {
                SlotOwner::Mine { epoch } => owned.push(json!({"slot": s, "epoch": epoch})),
                SlotOwner::Releasing { epoch } => {
                    releasing.push(json!({"slot": s, "epoch": epoch}))
                }
                SlotOwner::Member(_) => elsewhere += 1,
                SlotOwner::Unknown => unknown += 1,
            }
        }
        let missing: Vec<&String> = self
            .expected()
            .iter()
            .filter(|n| !h.live.contains(n))
            .collect();
        json!({
            "me": self.me(),
            "left": h.left,
            "members": {
                "live": h.live,
                "expected": self.expected(),
                "missingExpected": missing,
            },
            "slots": {
                "total": self.slots(),
                "owned": owned,
                "releasing": releasing,
                "elsewhere": elsewhere,
                "unknown": unknown,
            },
            "renew": {
                "rttMs": h.rtt_us as f64 / 1000.0,
                "lastAgeMs": h.last_renew.map(|t| t.elapsed().as_millis() as u64),
                "failures": self.renew_failures.load(Ordering::Relaxed),
            },
            "leases": {
                "gained": self.gained_total.load(Ordering::Relaxed),
                "lost": self.lost_total.load(Ordering::Relaxed),
            },
            "errors": {
                "redis": self.redis_errors.load(Ordering::Relaxed),
                "last": h.last_error,
            },
        })
    }

    /// Prometheus text (with `# HELP`/`# TYPE`) for `/metrics`.
    pub fn prometheus(&self) -> String {
        let h = self.health();
        let owned = self.owned();
        let releasing = (0..self.slots())
            .filter(|&s| matches!(self.owner(s), SlotOwner::Releasing { .. }))
            .count();
        let mut out = String::with_capacity(1024 + owned.len() * 48);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let one = |v: String| [(String::new(), v)];
        metric(
            "shardgate_cluster_members",
            "gauge",
            "Live cluster members (heartbeats), this one included.",
            &one(h.live.len().to_string()),
        );
        metric(
            "shardgate_cluster_members_expected",
            "gauge",
            "Members listed in gateway.clustering.nodes.",
            &one(self.expected().len().to_string()),
        );
        metric(
            "shardgate_cluster_slots_owned",
            "gauge",
            "Slots this member holds the lease of and serves.",
            &one(owned.len().to_string()),
        );
        metric(
            "shardgate_cluster_slots_releasing",
            "gauge",
            "Slots this member is draining before handing them over.",
            &one(releasing.to_string()),
        );
        let epochs: Vec<(String, String)> = owned
            .iter()
            .map(|(s, e)| (format!("{{slot=\"{s}\"}}"), e.to_string()))
            .collect();
        metric(
            "shardgate_cluster_lease_epoch",
            "gauge",
            "Fencing epoch of each slot this member holds.",
            &epochs,
        );
        metric(
            "shardgate_cluster_leases_gained_total",
            "counter",
            "Leases acquired.",
            &one(self.gained_total.load(Ordering::Relaxed).to_string()),
        );
        metric(
            "shardgate_cluster_leases_lost_total",
            "counter",
            "Leases given up without a voluntary release (taken, expired, deadline passed).",
            &one(self.lost_total.load(Ordering::Relaxed).to_string()),
        );
        metric(
            "shardgate_cluster_renew_failures_total",
            "counter",
            "Renew rounds that got no answer from Redis.",
            &one(self.renew_failures.load(Ordering::Relaxed).to_string()),
        );
        metric(
            "shardgate_cluster_redis_errors_total",
            "counter",
            "Failed Redis calls of the cluster driver.",
            &one(self.redis_errors.load(Ordering::Relaxed).to_string()),
        );
        metric(
            "shardgate_cluster_redis_rtt_seconds",
            "gauge",
            "Round trip of the last renew and heartbeat round.",
            &one(format!("{:.6}", h.rtt_us as f64 / 1e6)),
        );
        if let Some(t) = h.last_renew {
            metric(
                "shardgate_cluster_last_renew_age_seconds",
                "gauge",
                "Time since the last successful renew round started.",
                &one(format!("{:.3}", t.elapsed().as_secs_f64())),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_metrics_show_owned_slots_and_missing_members() {
        let o = Ownership::new("a:1", 4, vec!["a:1".into(), "b:1".into()]);
        o.set(1, SlotOwner::Mine { epoch: 5 });
        o.set(2, SlotOwner::Releasing { epoch: 3 });
        o.with_health(|h| h.live = vec!["a:1".into()]);
        let s = o.status_json();
        assert_eq!(s["slots"]["owned"], json!([{"slot": 1, "epoch": 5}]));
        assert_eq!(s["slots"]["releasing"][0]["slot"], 2);
        assert_eq!(s["members"]["missingExpected"], json!(["b:1"]));
        let text = o.prometheus();
        assert!(
            text.contains("shardgate_cluster_lease_epoch{slot=\"1\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("shardgate_cluster_slots_owned 1\n"), "{text}");
        assert!(text.contains("shardgate_cluster_members 1\n"), "{text}");
    }
}
