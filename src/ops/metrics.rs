//! Metrics: per-shard counters, merged on read, rendered as Prometheus text at `GET /metrics`.
//!
//! Counting is a `Cell` increment on the owning shard (no atomics, no locks on the data path);
//! a scrape gathers every shard's snapshot over the mesh and sums them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

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
            .at(crate::clock::now_ms_coarse())
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
            .at(crate::clock::now_ms_coarse())
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
        let c = m.at(crate::clock::now_ms_coarse());
        c.runs += 1;
        if failed {
            c.errors += 1;
        }
    }
}

/// The process's resident set size, bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
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
