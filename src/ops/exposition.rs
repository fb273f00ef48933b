//! `GET /metrics`: every shard's counters ([`super::metrics`]) gathered over the mesh, summed,
//! and written as Prometheus text; also the per-shard snapshots `gateway.profile` reads.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::rc::Rc;

use serde_json::{json, Value};

use super::metrics::{latency_histogram, LATENCY_MAX_US};
use crate::shard::GatewayShard;

/// Latency histograms of one shard as `{method: [[value, count], …]}` (merged on read).
pub fn latency_snapshot(s: &GatewayShard) -> Value {
    let l = s.metrics().latency.borrow();
    let m: serde_json::Map<String, Value> = l
        .iter()
        .map(|(k, h)| {
            let pts: Vec<Value> = h
                .iter_recorded()
                .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
                .collect();
            (k.to_string(), Value::Array(pts))
        })
        .collect();
    Value::Object(m)
}

/// Merges shards' latency snapshots into one histogram per method.
pub fn merge_latency(per: &[Value]) -> BTreeMap<String, hdrhistogram::Histogram<u64>> {
    let mut out: BTreeMap<String, hdrhistogram::Histogram<u64>> = BTreeMap::new();
    for v in per {
        let Some(m) = v.as_object() else { continue };
        for (method, pts) in m {
            let h = out.entry(method.clone()).or_insert_with(latency_histogram);
            for p in pts.as_array().into_iter().flatten() {
                let (val, n) = (p[0].as_u64().unwrap_or(1), p[1].as_u64().unwrap_or(0));
                let _ = h.record_n(val.clamp(1, LATENCY_MAX_US), n);
            }
        }
    }
    out
}

/// One shard's snapshot, as JSON (sent over the mesh).
pub fn snapshot(s: &GatewayShard) -> Value {
    let m = &s.metrics();
    let (authed, sockets) = s.conn_counts();
    let mut by_role: BTreeMap<String, u64> = BTreeMap::new();
    for c in s.all_conns() {
        if let Some(a) = c.auth.borrow().as_ref() {
            *by_role.entry(a.role.clone()).or_insert(0) += 1;
        }
    }
    let core = s.queue().core.borrow();
    let d = &core.dedup;
    json!({
        "requests": m.requests.borrow().iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "refused": m.refused.get(), "accepted": m.accepted.get(), "hellos": m.hellos.get(),
        "handshakeFailures": m.handshake_failures.get(),
        "refusals": m.refusals.borrow().iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "connections": authed, "sockets": sockets, "byRole": by_role,
        "sessions": s.sessions().map.borrow().len(), "inflight": s.inflight().get(),
        "queue": s.queue().stats_json(),
        "dedupEntries": d.len(), "dedupEvictedLive": d.evicted_live,
        "nodes": s.nodes().registry.borrow().len(),
        "mesh": mesh_json(s),
        "channels": s.channels().json(0)["counters"].take(),
    })
}

/// A shard's mesh counters: sends, outbox backlog, refusals and what became of them.
fn mesh_json(s: &GatewayShard) -> Value {
    let st = s.mesh_stats();
    json!({
        "sent": st.sent, "backlog": st.backlog, "refusedFull": st.refused_full,
        "refusedClosed": st.refused_closed, "lostOnClose": st.lost_on_close,
        "lost": s.metrics().mesh_lost.borrow().iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

fn sum(per: &[Value], f: impl Fn(&Value) -> Option<u64>) -> u64 {
    per.iter().filter_map(f).sum()
}

/// Renders the Prometheus text exposition of every shard.
pub async fn render(shard: &Rc<GatewayShard>) -> String {
    let per = shard.gather(|s| snapshot(s)).await;
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let per_shard = |key: &str| -> Vec<(String, u64)> {
        per.iter()
            .enumerate()
            .map(|(i, v)| (format!("{{shard=\"{i}\"}}"), v[key].as_u64().unwrap_or(0)))
            .collect()
    };
    metric(
        "shardgate_up",
        "gauge",
        "1 while the gateway serves.",
        vec![(String::new(), 1)],
    );
    metric(
        "shardgate_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
        vec![(String::new(), shard.shared().uptime_ms() / 1000)],
    );
    metric(
        "shardgate_shards",
        "gauge",
        "Number of shards.",
        vec![(String::new(), shard.shards() as u64)],
    );
    metric(
        "shardgate_shedding",
        "gauge",
        "1 while over the memory cap (new connections and runs refused).",
        vec![(
            String::new(),
            u64::from(
                shard
                    .shared()
                    .shedding
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        )],
    );
    metric(
        "shardgate_resident_memory_bytes",
        "gauge",
        "Resident set size of the process.",
        vec![(String::new(), crate::ops::metrics::rss_bytes())],
    );
    metric(
        "shardgate_connections",
        "gauge",
        "Authenticated connections per shard.",
        per_shard("connections"),
    );
    metric(
        "shardgate_sockets",
        "gauge",
        "Open WebSocket connections per shard (any state).",
        per_shard("sockets"),
    );
    let mut roles: BTreeMap<String, u64> = BTreeMap::new();
    for v in &per {
        if let Some(m) = v["byRole"].as_object() {
            for (k, x) in m {
                *roles.entry(k.clone()).or_insert(0) += x.as_u64().unwrap_or(0);
            }
        }
    }
    metric(
        "shardgate_connections_by_role",
        "gauge",
        "Authenticated connections by role.",
        roles
            .into_iter()
            .map(|(r, v)| (format!("{{role=\"{r}\"}}"), v))
            .collect(),
    );
    metric(
        "shardgate_connections_accepted_total",
        "counter",
        "TCP connections accepted.",
        vec![(String::new(), sum(&per, |v| v["accepted"].as_u64()))],
    );
    metric(
        "shardgate_handshakes_total",
        "counter",
        "Completed handshakes (hello-ok).",
        vec![(String::new(), sum(&per, |v| v["hellos"].as_u64()))],
    );
    metric(
        "shardgate_handshake_failures_total",
        "counter",
        "Refused handshakes.",
        vec![(
            String::new(),
            sum(&per, |v| v["handshakeFailures"].as_u64()),
        )],
    );
    let mut refusals: BTreeMap<String, u64> = BTreeMap::new();
    for v in &per {
        for (k, x) in v["refusals"].as_object().into_iter().flatten() {
            *refusals.entry(k.clone()).or_insert(0) += x.as_u64().unwrap_or(0);
        }
    }
    metric(
        "shardgate_refusals_total",
        "counter",
        "Connections and requests refused by access limits, TLS, MFA and pairing, by reason.",
        refusals
            .into_iter()
            .map(|(r, v)| (format!("{{reason=\"{r}\"}}"), v))
            .collect(),
    );
    let mut methods: BTreeMap<String, u64> = BTreeMap::new();
    for v in &per {
        if let Some(m) = v["requests"].as_object() {
            for (k, x) in m {
                *methods.entry(k.clone()).or_insert(0) += x.as_u64().unwrap_or(0);
            }
        }
    }
    metric(
        "shardgate_requests_total",
        "counter",
        "Requests dispatched, by method.",
        methods
            .into_iter()
            .map(|(m, v)| (format!("{{method=\"{m}\"}}"), v))
            .collect(),
    );
    metric(
        "shardgate_requests_refused_total",
        "counter",
        "Requests refused before dispatch.",
        vec![(String::new(), sum(&per, |v| v["refused"].as_u64()))],
    );
    let mesh = |key: &str| -> Vec<(String, u64)> {
        per.iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    format!("{{shard=\"{i}\"}}"),
                    v["mesh"][key].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    metric(
        "shardgate_mesh_sent_total",
        "counter",
        "Messages sent to other shards, by sending shard.",
        mesh("sent"),
    );
    metric(
        "shardgate_mesh_backlog",
        "gauge",
        "Messages waiting in a shard's outboxes for slow peers (bounded).",
        mesh("backlog"),
    );
    metric(
        "shardgate_mesh_refused_total",
        "counter",
        "Sends a peer's outbox refused, by sending shard (full or closed peer).",
        per.iter()
            .enumerate()
            .flat_map(|(i, v)| {
                [("full", "refusedFull"), ("closed", "refusedClosed")].map(|(r, k)| {
                    (
                        format!("{{shard=\"{i}\",reason=\"{r}\"}}"),
                        v["mesh"][k].as_u64().unwrap_or(0),
                    )
                })
            })
            .collect(),
    );
    let mut lost: BTreeMap<String, u64> = BTreeMap::new();
    for v in &per {
        for (k, x) in v["mesh"]["lost"].as_object().into_iter().flatten() {
            *lost.entry(k.clone()).or_insert(0) += x.as_u64().unwrap_or(0);
        }
        *lost.entry("lost_on_close".into()).or_insert(0) +=
            v["mesh"]["lostOnClose"].as_u64().unwrap_or(0);
    }
    metric(
        "shardgate_mesh_undelivered_total",
        "counter",
        "Mesh messages not delivered, by outcome (call_refused: answered SHARD_BUSY).",
        lost.into_iter()
            .map(|(r, v)| (format!("{{outcome=\"{r}\"}}"), v))
            .collect(),
    );
    let store = shard.shared().store_writer.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    metric(
        "shardgate_store_writes_total",
        "counter",
        "State files (paired devices, node approvals, setup codes) replaced by the store writer; changes made during a write share the next one.",
        vec![(String::new(), load(&store.writes))],
    );
    metric(
        "shardgate_store_write_errors_total",
        "counter",
        "Store writes that failed (their changes were undone and their waiters refused).",
        vec![(String::new(), load(&store.errors))],
    );
    metric(
        "shardgate_store_waits_total",
        "counter",
        "Changes whose caller waited for the store writer before answering.",
        vec![(String::new(), load(&store.waits))],
    );
    metric(
        "shardgate_store_waiting",
        "gauge",
        "Callers waiting for the store writer now.",
        vec![(String::new(), load(&store.waiting))],
    );
    metric(
        "shardgate_store_wait_writes_max",
        "gauge",
        "Most store writes one waiting caller saw complete before its change was on disk (at most 2: the write in progress, then its own).",
        vec![(String::new(), load(&store.max_writes_waited))],
    );
    metric(
        "shardgate_store_failing",
        "gauge",
        "State files whose last write failed.",
        vec![(String::new(), store.failing().len() as u64)],
    );
    metric(
        "shardgate_sessions",
        "gauge",
        "Sessions per owner shard.",
        per_shard("sessions"),
    );
    metric(
        "shardgate_runs_inflight",
        "gauge",
        "Runs queued or running per shard.",
        per_shard("inflight"),
    );
    metric(
        "shardgate_nodes",
        "gauge",
        "Connected nodes.",
        vec![(
            String::new(),
            per.first().and_then(|v| v["nodes"].as_u64()).unwrap_or(0),
        )],
    );
    for (key, name, help) in [
        (
            "accepted",
            "shardgate_queue_accepted_total",
            "Messages admitted to the queue.",
        ),
        (
            "completed",
            "shardgate_queue_completed_total",
            "Messages completed.",
        ),
        (
            "failedAttempts",
            "shardgate_queue_failed_attempts_total",
            "Failed dispatch attempts.",
        ),
        (
            "retries",
            "shardgate_queue_retries_total",
            "Retries scheduled.",
        ),
        (
            "deadLettered",
            "shardgate_queue_dead_lettered_total",
            "Messages moved to the dead letter store.",
        ),
        (
            "redriven",
            "shardgate_queue_redriven_total",
            "Dead letters re-queued.",
        ),
        (
            "rejectedFull",
            "shardgate_queue_rejected_full_total",
            "Messages refused with QUEUE_FULL.",
        ),
        (
            "dedupHits",
            "shardgate_dedup_hits_total",
            "Duplicates answered from the dedup ring.",
        ),
    ] {
        metric(
            name,
            "counter",
            help,
            vec![(String::new(), sum(&per, |v| v["queue"][key].as_u64()))],
        );
    }
    metric(
        "shardgate_queue_depth",
        "gauge",
        "Messages admitted and not finished.",
        vec![(String::new(), sum(&per, |v| v["queue"]["depth"].as_u64()))],
    );
    metric(
        "shardgate_dead_letters",
        "gauge",
        "Dead letters held.",
        vec![(
            String::new(),
            sum(&per, |v| v["queue"]["deadLetters"].as_u64()),
        )],
    );
    metric(
        "shardgate_dedup_entries",
        "gauge",
        "Entries in the dedup rings.",
        vec![(String::new(), sum(&per, |v| v["dedupEntries"].as_u64()))],
    );
    metric(
        "shardgate_dedup_evicted_total",
        "counter",
        "Dedup entries evicted by capacity inside their window.",
        vec![(String::new(), sum(&per, |v| v["dedupEvictedLive"].as_u64()))],
    );
    // The Redis queue backend's client (queue.backend "redis"), summed over the shards.
    if per.iter().any(|v| v["queue"]["redis"].is_object()) {
        for (key, name, help) in [
            ("commands", "shardgate_redis_commands_total", "Redis commands called."),
            ("errors", "shardgate_redis_errors_total", "Redis commands that failed (timeouts, disconnects, error replies)."),
            ("timeouts", "shardgate_redis_timeouts_total", "Redis commands without a reply within queue.redis.commandTimeout."),
            ("reconnects", "shardgate_redis_reconnects_total", "Connections to Redis re-established after a loss."),
            ("replies", "shardgate_redis_replies_total", "Redis replies received."),
            ("rttSumUs", "shardgate_redis_rtt_microseconds_total", "Sum of Redis round-trip times (divide by replies for the mean)."),
            ("appendFailed", "shardgate_redis_admissions_refused_total", "Admissions answered UNAVAILABLE because Redis could not take them."),
            ("writeFailed", "shardgate_redis_writes_lost_total", "Outcome writes lost while Redis was unreachable (the run may run again after a restart)."),
        ] {
            metric(
                name,
                "counter",
                help,
                vec![(String::new(), sum(&per, |v| v["queue"]["redis"][key].as_u64()))],
            );
        }
    }
    // Chat channels (`channels.<name>` of a platform kind), summed over the shards.
    let mut names: Vec<String> = shard
        .config()
        .channels
        .iter()
        .filter(|(_, c)| c.kind.is_platform())
        .map(|(n, _)| n.clone())
        .collect();
    names.sort();
    if !names.is_empty() {
        for (key, name, help) in [
            (
                "in",
                "shardgate_channel_messages_in_total",
                "Platform messages admitted to the queue, per channel.",
            ),
            (
                "out",
                "shardgate_channel_messages_out_total",
                "Replies the platform accepted, per channel.",
            ),
            (
                "errors",
                "shardgate_channel_errors_total",
                "Failed platform calls (polls, sends), per channel.",
            ),
            (
                "duplicates",
                "shardgate_channel_duplicates_total",
                "Platform deliveries of an update already taken, per channel.",
            ),
            (
                "filtered",
                "shardgate_channel_filtered_total",
                "Messages dropped by allowFrom (or from bots), per channel.",
            ),
            (
                "rateLimited",
                "shardgate_channel_rate_limited_total",
                "Sends that hit the platform's rate limit (429) and waited it out, per channel.",
            ),
            (
                "reconnects",
                "shardgate_channel_reconnects_total",
                "Platform connections re-opened after a drop (Discord Gateway), per channel.",
            ),
        ] {
            metric(
                name,
                "counter",
                help,
                names
                    .iter()
                    .map(|n| {
                        let v = sum(&per, |v| v["channels"][n.as_str()][key].as_u64());
                        (format!("{{channel=\"{n}\"}}"), v)
                    })
                    .collect(),
            );
        }
    }
    if let Some(c) = &shard.shared().cluster {
        out.push_str(&c.prometheus());
    }
    out
}
