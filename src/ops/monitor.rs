//! Monitoring that acts: alert rules evaluated on shard 0 with firing/resolved notifications
//! to webhook sinks (generic JSON, Slack, PagerDuty Events v2), and load shedding under the
//! memory caps (`memory.limits.maxRss`).
//!
//! Alerts: each rule has a state (ok/firing); only transitions are sent (de-duplicated), each
//! delivery retried with exponential backoff. `gateway_down` cannot be raised by a dead
//! gateway about itself: `shardgate watch` (or a peer gateway) raises it by polling
//! `/health` from outside, using the same sink payloads.
//!
//! Shedding: the process RSS is sampled every second; above 90% of `maxRss` the gateway stops
//! admitting new connections (HTTP 503) and new runs (`UNAVAILABLE`, `details.code:
//! "OVERLOADED"`, retryable), logs it and exports `shardgate_shedding 1`; below 80% it resumes.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use super::exposition::{latency_snapshot, merge_latency};
use super::metrics::rss_bytes;
use crate::clock::now_ms;
use crate::config::{AlertRule, SinkConfig, SinkKind};
use crate::shard::GatewayShard;

/// Hysteresis of the shedding decision: start above 90% of the cap, stop below 80%.
pub fn should_shed(currently: bool, rss: u64, cap: u64) -> bool {
    if cap == 0 {
        return false;
    }
    if currently {
        rss * 10 >= cap * 8
    } else {
        rss * 10 >= cap * 9
    }
}

/// Samples RSS once a second and flips the shedding flag (run on shard 0).
pub async fn shed_loop(shard: Rc<GatewayShard>) {
    let cap = shard.config().memory.limits.max_rss.unwrap_or(0);
    if cap == 0 {
        return;
    }
    loop {
        let rss = rss_bytes();
        let now = shard.shared().shedding.load(Ordering::Relaxed);
        let next = should_shed(now, rss, cap);
        if next != now {
            shard.shared().shedding.store(next, Ordering::Relaxed);
            if next {
                tracing::warn!(
                    rss,
                    cap,
                    "memory cap: shedding load (new connections and runs refused)"
                );
            } else {
                tracing::info!(rss, cap, "memory back under the cap: accepting load again");
            }
        }
        glommio::timer::sleep(Duration::from_secs(1)).await;
    }
}

/// A rule's current value and whether it breaches.
async fn evaluate(shard: &Rc<GatewayShard>, rule: &AlertRule) -> Option<(f64, bool)> {
    match rule.name.as_str() {
        "high_latency" => {
            let per = shard.gather(|s| latency_snapshot(s)).await;
            let merged = merge_latency(&per);
            let mut all = crate::ops::metrics::latency_histogram();
            for h in merged.values() {
                let _ = all.add(h);
            }
            let p95_ms = all.value_at_quantile(0.95) as f64 / 1000.0;
            Some((
                p95_ms,
                !all.is_empty() && p95_ms > rule.threshold.unwrap_or(1000.0),
            ))
        }
        "connection_loss" => {
            let per = shard.gather(|s| json!(s.conn_counts().0)).await;
            let n: u64 = per.iter().filter_map(|v| v.as_u64()).sum();
            let t = rule.threshold.unwrap_or(1.0);
            Some((n as f64, (n as f64) < t * 0.5))
        }
        "queue_backlog" => {
            let per = shard.gather(|s| json!(s.queue().core.borrow().depth)).await;
            let depth = per.iter().filter_map(|v| v.as_u64()).sum::<u64>() as f64;
            Some((
                depth,
                depth
                    > rule
                        .threshold
                        .unwrap_or(shard.config().queue.max_size as f64 * 0.8),
            ))
        }
        "memory_pressure" => Some((
            rss_bytes() as f64,
            shard.shared().shedding.load(Ordering::Relaxed),
        )),
        _ => None,
    }
}

/// One alert transition, as the sinks are told about it.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    /// Rule name.
    pub alert: &'a str,
    /// Firing (true) or resolved.
    pub firing: bool,
    /// Rule severity.
    pub severity: &'a str,
    /// The value that was evaluated.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: Option<f64>,
    /// This gateway's host name.
    pub host: &'a str,
}

/// The body a sink of `sink.kind` receives for an alert transition.
pub fn payload(sink: &SinkConfig, n: &Notice<'_>) -> Value {
    let Notice {
        alert,
        firing,
        severity,
        value,
        threshold,
        host,
    } = n.clone();
    let status = if firing { "firing" } else { "resolved" };
    let summary = format!(
        "[{}] shardgate {alert} on {host}: value {value:.3}{}",
        status.to_uppercase(),
        threshold
            .map(|t| format!(" (threshold {t})"))
            .unwrap_or_default()
    );
    match sink.kind {
        SinkKind::Slack => json!({
            "text": summary,
            "attachments": [{"color": if firing { "danger" } else { "good" }, "fields": [
                {"title": "alert", "value": alert, "short": true},
                {"title": "severity", "value": severity, "short": true},
                {"title": "value", "value": format!("{value:.3}"), "short": true},
                {"title": "host", "value": host, "short": true}]}],
        }),
        SinkKind::Pagerduty => json!({
            "routing_key": sink.routing_key.clone().unwrap_or_default(),
            "event_action": if firing { "trigger" } else { "resolve" },
            "dedup_key": format!("shardgate-{host}-{alert}"),
            "payload": {"summary": summary, "source": host,
                        "severity": match severity { "critical" => "critical", "warning" => "warning", "info" => "info", _ => "error" },
                        "timestamp": chrono_like(now_ms()), "component": "shardgate", "class": alert,
                        "custom_details": {"value": value, "threshold": threshold}},
        }),
        SinkKind::Webhook => {
            json!({"alert": alert, "status": status, "severity": severity, "value": value,
                    "threshold": threshold, "gateway": host, "ts": now_ms(), "summary": summary})
        }
    }
}

/// RFC 3339 UTC from ms since the epoch (no calendar crate needed for this one use).
fn chrono_like(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil-from-days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Posts `body` to a sink, retrying with exponential backoff (up to 5 attempts).
pub async fn deliver(url: &str, body: &Value) -> Result<(), String> {
    let mut delay = 200u64;
    let mut last = String::new();
    for attempt in 1..=5 {
        match glommio::timer::timeout(Duration::from_secs(5), async {
            Ok(crate::queue::channel::post_json(url, &body.to_string()).await)
        })
        .await
        {
            Ok(Ok(code)) if (200..300).contains(&code) => return Ok(()),
            Ok(Ok(code)) => last = format!("HTTP {code}"),
            Ok(Err(e)) => last = e,
            Err(_) => last = "timeout".into(),
        }
        tracing::warn!(url, attempt, error = %last, "alert delivery failed; retrying");
        glommio::timer::sleep(Duration::from_millis(delay)).await;
        delay = (delay * 2).min(10_000);
    }
    Err(last)
}

/// Evaluates every rule each `evaluationInterval` and notifies sinks on transitions (shard 0).
pub async fn alert_loop(shard: Rc<GatewayShard>) {
    let m = shard.config().monitoring.clone();
    if m.alerts.is_empty() {
        return;
    }
    let mut firing = vec![false; m.alerts.len()];
    loop {
        glommio::timer::sleep(m.evaluation_interval.duration()).await;
        for (i, rule) in m.alerts.iter().enumerate() {
            let Some((value, breach)) = evaluate(&shard, rule).await else {
                continue;
            };
            if breach == firing[i] {
                continue;
            }
            firing[i] = breach;
            *shard.alert_state().borrow_mut() = firing
                .iter()
                .zip(&m.alerts)
                .map(|(f, r)| (r.name.clone(), *f))
                .collect();
            tracing::warn!(alert = %rule.name, firing = breach, value, "alert {}", if breach { "firing" } else { "resolved" });
            for name in &rule.channels {
                let Some(sink) = m.sinks.get(name).cloned() else {
                    tracing::warn!(alert = %rule.name, sink = %name, "unknown alert sink");
                    continue;
                };
                let body = payload(
                    &sink,
                    &Notice {
                        alert: &rule.name,
                        firing: breach,
                        severity: &rule.severity,
                        value,
                        threshold: rule.threshold,
                        host: &shard.shared().host,
                    },
                );
                let url = sink.url.clone();
                glommio::spawn_local(async move {
                    if let Err(e) = deliver(&url, &body).await {
                        tracing::error!(url, "alert not delivered after retries: {e}");
                    }
                })
                .detach();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shedding_has_hysteresis() {
        assert!(!should_shed(false, 85, 100));
        assert!(should_shed(false, 90, 100));
        assert!(should_shed(true, 85, 100));
        assert!(!should_shed(true, 79, 100));
        assert!(!should_shed(false, 1 << 40, 0));
    }

    #[test]
    fn rfc3339() {
        assert_eq!(chrono_like(0), "1970-01-01T00:00:00Z");
        assert_eq!(chrono_like(1_795_639_379_496), "2026-11-25T20:42:59Z");
    }

    #[test]
    fn sink_payload_shapes() {
        let mut sink = SinkConfig {
            kind: SinkKind::Pagerduty,
            url: "http://x".into(),
            routing_key: Some("rk".into()),
        };
        let n = |alert, firing, severity, value, threshold| Notice {
            alert,
            firing,
            severity,
            value,
            threshold: Some(threshold),
            host: "h",
        };
        let pd = payload(&sink, &n("high_latency", true, "critical", 1500.0, 1000.0));
        assert_eq!(pd["event_action"], "trigger");
        assert_eq!(pd["routing_key"], "rk");
        assert_eq!(pd["payload"]["severity"], "critical");
        let pd = payload(&sink, &n("high_latency", false, "critical", 10.0, 1000.0));
        assert_eq!(pd["event_action"], "resolve");
        assert_eq!(pd["dedup_key"], "shardgate-h-high_latency");
        sink.kind = SinkKind::Slack;
        let sl = payload(&sink, &n("connection_loss", true, "warning", 0.0, 4.0));
        assert!(sl["text"].as_str().unwrap().contains("FIRING"));
        sink.kind = SinkKind::Webhook;
        let gen = payload(&sink, &n("connection_loss", false, "warning", 3.0, 4.0));
        assert_eq!(gen["status"], "resolved");
    }
}
