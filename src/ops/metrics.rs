//! Metrics: per-shard counters, merged on read, rendered as Prometheus text at `GET /metrics`.
//!
//! Counting is a `Cell` increment on the owning shard (no atomics, no locks on the data path);
//! a scrape gathers every shard's snapshot over the mesh and sums them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::rc::Rc;

use serde_json::{json, Value};

use crate::shard::GatewayShard;

/// Pipeline stages with their own latency histogram (`stage:` prefix in `gateway.latency`):
/// time a message waited in its lane before dispatch, one dispatch attempt, and admission to
/// completion.
pub const STAGES: &[&str] = &["stage:queue_wait", "stage:dispatch", "stage:end_to_end"];

/// Per-shard counters.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Requests by method (after authorization), and how many were refused before dispatch.
    pub requests: RefCell<BTreeMap<&'static str, u64>>,
    /// Requests refused by authorization or validation before dispatch.
    pub refused: Cell<u64>,
    /// Connections accepted (TCP).
    pub accepted: Cell<u64>,
    /// Handshakes completed.
    pub hellos: Cell<u64>,
    /// Handshakes refused.
    pub handshake_failures: Cell<u64>,
    /// Security refusals by reason (`ip_not_allowed`, `origin`, `conn_per_ip`,
    /// `tls_required`, `tls_handshake`, `rate_limited`, `mfa`, `pairing_required`): a bounded
    /// label set.
    pub refusals: RefCell<BTreeMap<&'static str, u64>>,
    /// Events sent (queued to a connection).
    pub events: Cell<u64>,
    /// Request latency (receipt to first answer) by method, microseconds.
    pub latency: RefCell<Latencies>,
    /// Per-minute counters for the last 24 hours.
    pub minutes: RefCell<MinuteRing>,
    /// Mesh messages this shard could not hand to a peer, by what became of them
    /// (`call_refused`: answered SHARD_BUSY; `event_skipped`: a skippable event; `full`,
    /// `closed`: lost and logged).
    pub mesh_lost: RefCell<BTreeMap<&'static str, u64>>,
}

/// The largest latency a histogram holds, µs (10 minutes).
pub const LATENCY_MAX_US: u64 = 600_000_000;

/// A latency histogram (µs, 1 µs to [`LATENCY_MAX_US`]) at 2 significant figures: within 1%,
/// with a count array of 24 KB instead of 176 KB at 3. A shard records several per request
/// (method, queue wait, dispatch); at 3 figures their counts crowded the cache, 4.8% of the
/// shard's L2 misses under callgrind's cache simulation.
pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid histogram bounds")
}

/// Latency histograms by name (a method or a stage): a few dozen at most, looked up several
/// times per request. The names are the gateway's own `&'static str`s, so a name is found by
/// its address (the same literal, or the interned method name) before its text is compared.
#[derive(Debug, Default)]
pub struct Latencies(Vec<(&'static str, hdrhistogram::Histogram<u64>)>);

impl Latencies {
    /// The histogram of `name`, created empty on first use.
    fn histogram(&mut self, name: &'static str) -> &mut hdrhistogram::Histogram<u64> {
        let found = self
            .0
            .iter()
            .position(|(n, _)| std::ptr::eq(*n, name))
            .or_else(|| self.0.iter().position(|(n, _)| *n == name));
        let i = found.unwrap_or_else(|| {
            self.0.push((name, latency_histogram()));
            self.0.len() - 1
        });
        &mut self.0[i].1
    }

    /// Every histogram with its name (in no particular order).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &hdrhistogram::Histogram<u64>)> {
        self.0.iter().map(|(n, h)| (*n, h))
    }
}

/// Counters kept per minute.
#[derive(Debug, Clone, Copy, Default)]
pub struct MinuteCounts {
    /// Requests received.
    pub requests: u64,
    /// Events queued to connections.
    pub events: u64,
    /// Runs completed (agent, chat, send).
    pub runs: u64,
    /// Error answers.
    pub errors: u64,
}

/// A ring of per-minute counters (1440 minutes).
#[derive(Debug)]
pub struct MinuteRing {
    slots: Vec<(i64, MinuteCounts)>,
}

impl Default for MinuteRing {
    fn default() -> Self {
        MinuteRing {
            slots: vec![(-1, MinuteCounts::default()); 1440],
        }
    }
}

impl MinuteRing {
    /// The counters of the minute containing `now_ms`.
    pub fn at(&mut self, now_ms: i64) -> &mut MinuteCounts {
        let minute = now_ms.div_euclid(60_000);
        let slot = &mut self.slots[minute.rem_euclid(1440) as usize];
        if slot.0 != minute {
            *slot = (minute, MinuteCounts::default());
        }
        &mut slot.1
    }

    /// `(minute start ms, counts)` of the last `n` minutes up to `now_ms`, oldest first.
    pub fn last(&self, now_ms: i64, n: usize) -> Vec<(i64, MinuteCounts)> {
        let cur = now_ms.div_euclid(60_000);
        (0..n.min(1440) as i64)
            .rev()
            .map(|back| {
                let m = cur - back;
                let s = &self.slots[m.rem_euclid(1440) as usize];
                (
                    m * 60_000,
                    if s.0 == m {
                        s.1
                    } else {
                        MinuteCounts::default()
                    },
                )
            })
            .collect()
    }
}

impl ShardMetrics {
    /// Counts one request for `method` (the label set is the method table's names).
    pub fn request(&self, method: crate::protocol::method::Method) {
        *self.requests.borrow_mut().entry(method.name()).or_insert(0) += 1;
        self.minutes
            .borrow_mut()
            .at(crate::shard::now_ms_coarse())
            .requests += 1;
    }

    /// Records the latency of one request of `method`.
    pub fn latency(&self, method: crate::protocol::method::Method, micros: u64) {
        self.record_latency(method.name(), micros);
    }

    /// Records a latency under `name`, a method or one of [`STAGES`] named by the gateway
    /// itself (no lookup: the request path records three stages per message).
    pub fn record_latency(&self, name: &'static str, micros: u64) {
        let mut l = self.latency.borrow_mut();
        let _ = l.histogram(name).record(micros.clamp(1, LATENCY_MAX_US));
    }

    /// Counts events queued to a connection.
    pub fn events_sent(&self, n: u64) {
        self.events.set(self.events.get() + n);
        self.minutes
            .borrow_mut()
            .at(crate::shard::now_ms_coarse())
            .events += n;
    }

    /// Counts a mesh message not handed to its peer (see [`ShardMetrics::mesh_lost`]).
    pub fn mesh_lost(&self, what: &'static str) {
        *self.mesh_lost.borrow_mut().entry(what).or_insert(0) += 1;
    }

    /// Counts a security refusal (see [`ShardMetrics::refusals`]).
    pub fn refusal(&self, reason: &'static str) {
        *self.refusals.borrow_mut().entry(reason).or_insert(0) += 1;
    }

    /// Counts a finished run.
    pub fn run_done(&self, failed: bool) {
        let mut m = self.minutes.borrow_mut();
        let c = m.at(crate::shard::now_ms_coarse());
        c.runs += 1;
        if failed {
            c.errors += 1;
        }
    }
}

/// Latency histograms of one shard as `{method: [[value, count], …]}` (merged on read).
pub fn latency_snapshot(s: &GatewayShard) -> Value {
    let l = s.metrics.latency.borrow();
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
    let m = &s.metrics;
    let (authed, sockets) = s.conn_counts();
    let mut by_role: BTreeMap<String, u64> = BTreeMap::new();
    for c in s.all_conns() {
        if let Some(a) = c.auth.borrow().as_ref() {
            *by_role.entry(a.role.clone()).or_insert(0) += 1;
        }
    }
    let core = s.queue.core.borrow();
    let d = &core.dedup;
    json!({
        "requests": m.requests.borrow().iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "refused": m.refused.get(), "accepted": m.accepted.get(), "hellos": m.hellos.get(),
        "handshakeFailures": m.handshake_failures.get(),
        "refusals": m.refusals.borrow().iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "connections": authed, "sockets": sockets, "byRole": by_role,
        "sessions": s.sessions.map.borrow().len(), "inflight": s.inflight.get(),
        "queue": s.queue.stats_json(),
        "dedupEntries": d.len(), "dedupEvictedLive": d.evicted_live,
        "nodes": s.nodes.registry.borrow().len(),
        "mesh": mesh_json(s),
    })
}

/// A shard's mesh counters: sends, outbox backlog, refusals and what became of them.
fn mesh_json(s: &GatewayShard) -> Value {
    let st = s.mesh_stats();
    json!({
        "sent": st.sent, "backlog": st.backlog, "refusedFull": st.refused_full,
        "refusedClosed": st.refused_closed, "lostOnClose": st.lost_on_close,
        "lost": s.metrics.mesh_lost.borrow().iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
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
        vec![(String::new(), shard.shared.uptime_ms() / 1000)],
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
                    .shared
                    .shedding
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        )],
    );
    metric(
        "shardgate_resident_memory_bytes",
        "gauge",
        "Resident set size of the process.",
        vec![(String::new(), crate::ops::monitor::rss_bytes())],
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name is one histogram whether it is found by address or, from another copy of the
    /// same text, by comparison.
    #[test]
    fn a_latency_name_is_one_histogram_wherever_its_text_lives() {
        let m = ShardMetrics::default();
        let copy: &'static str = Box::leak(String::from("stage:dispatch").into_boxed_str());
        m.record_latency("stage:dispatch", 10);
        m.record_latency(copy, 20);
        m.record_latency("agent", 30);
        let l = m.latency.borrow();
        let counts: Vec<(&str, u64)> = l.iter().map(|(n, h)| (n, h.len())).collect();
        assert_eq!(counts, [("stage:dispatch", 2), ("agent", 1)]);
    }

    #[test]
    fn latency_histograms_stay_small_and_within_one_percent() {
        let mut h = latency_histogram();
        // The count array (8 bytes per count) this histogram touches.
        assert!(
            h.distinct_values() * 8 <= 24 * 1024,
            "{}",
            h.distinct_values()
        );
        for v in [1u64, 57, 999, 12_345, 1_234_567, LATENCY_MAX_US] {
            h.reset();
            h.record(v).unwrap();
            let q = h.value_at_quantile(0.5) as f64;
            assert!(
                (q - v as f64).abs() <= v as f64 * 0.01,
                "{v} read back as {q}"
            );
        }
    }
}
