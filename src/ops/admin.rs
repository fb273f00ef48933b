//! Operator methods of SPEC §6/§9: `gateway.stats`, `gateway.connections`, `gateway.latency`,
//! `gateway.diagnose`, `gateway.profile`. Each gathers per-shard state over the mesh and
//! merges it on the calling shard.

use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};

use super::exposition::{latency_snapshot, merge_latency};
use crate::clock::now_ms;
use crate::config::Millis;
use crate::protocol::error::GatewayError;
use crate::protocol::method::AdminMethod;
use crate::shard::GatewayShard;

/// Runs one of these methods.
pub async fn call(
    shard: &Rc<GatewayShard>,
    m: AdminMethod,
    p: &Value,
) -> Result<Value, GatewayError> {
    match m {
        AdminMethod::Stats => stats(shard, p).await,
        AdminMethod::Connections => Ok(connections(shard, p).await),
        AdminMethod::Latency => latency(shard, p).await,
        AdminMethod::Diagnose => Ok(diagnose(shard).await),
        AdminMethod::Profile => profile(shard, p).await,
    }
}

async fn stats(shard: &Rc<GatewayShard>, p: &Value) -> Result<Value, GatewayError> {
    let period = match p.get("period") {
        None => Millis(3_600_000),
        Some(Value::String(s)) => Millis::parse(s)
            .map_err(|e| GatewayError::InvalidParams(format!("invalid params: period: {e}")))?,
        Some(Value::Number(n)) => Millis(n.as_u64().unwrap_or(3_600_000)),
        Some(_) => {
            return Err(GatewayError::InvalidParams(
                "invalid params: period must be like \"1h\"".into(),
            ))
        }
    };
    let minutes = (period.0 / 60_000).clamp(1, 1440) as usize;
    let now = now_ms();
    let per = shard
        .gather(move |s| {
            let m = s.metrics().minutes.borrow();
            Value::Array(
                m.last(now, minutes)
                    .into_iter()
                    .map(|(t, c)| json!([t, c.requests, c.events, c.runs, c.errors]))
                    .collect(),
            )
        })
        .await;
    let mut series: Vec<[u64; 5]> = vec![[0; 5]; minutes];
    for shard_rows in &per {
        for (i, row) in shard_rows.as_array().into_iter().flatten().enumerate() {
            if let Some(slot) = series.get_mut(i) {
                slot[0] = row[0].as_u64().unwrap_or(0);
                for k in 1..5 {
                    slot[k] += row[k].as_u64().unwrap_or(0);
                }
            }
        }
    }
    let total = |k: usize| series.iter().map(|r| r[k]).sum::<u64>();
    let secs = (minutes * 60) as f64;
    let want: Vec<String> = match p.get("metrics") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        _ => vec![
            "messages".into(),
            "events".into(),
            "runs".into(),
            "errors".into(),
        ],
    };
    let mut totals = serde_json::Map::new();
    for w in &want {
        let k = match w.as_str() {
            "messages" | "requests" => 1,
            "events" => 2,
            "runs" => 3,
            "errors" => 4,
            other => {
                return Err(GatewayError::InvalidParams(format!(
                    "invalid params: unknown metric {other:?} (messages, events, runs, errors)"
                )))
            }
        };
        totals.insert(
            w.clone(),
            json!({"total": total(k), "perSecond": total(k) as f64 / secs}),
        );
    }
    Ok(json!({
        "period": period, "minutes": minutes, "metrics": totals,
        "series": series.iter().map(|r| json!({"ts": r[0], "messages": r[1], "events": r[2], "runs": r[3], "errors": r[4]})).collect::<Vec<_>>(),
    }))
}

async fn connections(shard: &Rc<GatewayShard>, p: &Value) -> Value {
    let rows = shard
        .gather(|s| {
            let now = now_ms();
            Value::Array(
                s.all_conns()
                    .iter()
                    .map(|c| {
                        let a = c.auth.borrow();
                        json!({"connId": c.conn_uuid.to_string(), "shard": s.id().0, "peer": c.peer.to_string(),
                               "role": a.as_ref().map(|a| a.role.clone()),
                               "clientId": a.as_ref().map(|a| a.client.id.clone()),
                               "mode": a.as_ref().map(|a| a.client.mode.clone()),
                               "deviceId": a.as_ref().and_then(|a| a.device_id.clone()),
                               "authenticated": a.is_some(), "bufferedBytes": c.buffered(),
                               "droppedEvents": c.dropped.get(), "ageMs": now - c.opened_at})
                    })
                    .collect(),
            )
        })
        .await;
    let all: Vec<Value> = rows
        .into_iter()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        .collect();
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for c in &all {
        let k = c["mode"].as_str().unwrap_or("unauthenticated").to_string();
        *by.entry(k).or_insert(0) += 1;
    }
    let mut out = json!({"total": all.len(), "byChannel": by});
    if p.get("all").and_then(|v| v.as_bool()).unwrap_or(false) {
        out["connections"] = Value::Array(all);
    }
    out
}

fn parse_percentiles(p: &Value) -> Result<Vec<f64>, GatewayError> {
    let raw: Vec<String> = match p.get("percentiles") {
        None => return Ok(vec![50.0, 95.0, 99.0]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.to_string().trim_matches('"').to_string())
            .collect(),
        Some(Value::String(s)) => s.split(',').map(|x| x.trim().to_string()).collect(),
        Some(_) => {
            return Err(GatewayError::InvalidParams(
                "invalid params: percentiles like [50,95,99]".into(),
            ))
        }
    };
    raw.iter()
        .map(|x| {
            x.parse::<f64>()
                .ok()
                .filter(|v| (0.0..=100.0).contains(v))
                .ok_or_else(|| {
                    GatewayError::InvalidParams(format!(
                        "invalid params: percentile {x:?} must be 0..100"
                    ))
                })
        })
        .collect()
}

async fn latency(shard: &Rc<GatewayShard>, p: &Value) -> Result<Value, GatewayError> {
    let pcts = parse_percentiles(p)?;
    let per = shard.gather(|s| latency_snapshot(s)).await;
    let merged = merge_latency(&per);
    let mut all = crate::ops::metrics::latency_histogram();
    let mut methods = serde_json::Map::new();
    for (m, h) in &merged {
        let _ = all.add(h);
        methods.insert(m.clone(), summarize(h, &pcts));
    }
    Ok(json!({"unit": "ms", "overall": summarize(&all, &pcts), "methods": methods}))
}

fn summarize(h: &hdrhistogram::Histogram<u64>, pcts: &[f64]) -> Value {
    let mut m = serde_json::Map::new();
    for p in pcts {
        m.insert(
            format!("p{p}"),
            json!(h.value_at_quantile(p / 100.0) as f64 / 1000.0),
        );
    }
    json!({"count": h.len(), "percentiles": m, "max": h.max() as f64 / 1000.0, "mean": h.mean() / 1000.0})
}

async fn diagnose(shard: &Rc<GatewayShard>) -> Value {
    let cfg = shard.config();
    let per = shard.gather(|s| super::exposition::snapshot(s)).await;
    let mut checks = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        checks.push(
            json!({"check": name, "status": if ok { "ok" } else { "warn" }, "detail": detail}),
        );
    };
    check(
        "shards",
        per.len() == shard.shards(),
        format!("{} of {} shards answered", per.len(), shard.shards()),
    );
    let depth: u64 = per
        .iter()
        .filter_map(|v| v["queue"]["depth"].as_u64())
        .sum();
    check(
        "queue depth",
        (depth as usize) < cfg.queue.max_size * 8 / 10,
        format!(
            "{depth} of {} ({}%)",
            cfg.queue.max_size,
            depth * 100 / cfg.queue.max_size.max(1) as u64
        ),
    );
    let dead: u64 = per
        .iter()
        .filter_map(|v| v["queue"]["deadLetters"].as_u64())
        .sum();
    check(
        "dead letters",
        dead == 0,
        format!("{dead} held (queue.inspect deadLetter:true)"),
    );
    let evicted: u64 = per
        .iter()
        .filter_map(|v| v["dedupEvictedLive"].as_u64())
        .sum();
    check(
        "dedup capacity",
        evicted == 0,
        format!("{evicted} entries evicted inside the window (raise deduplication.capacity)"),
    );
    let plan = shards::memlock::plan(shards::memlock::memlock_limit(), shard.shards());
    check(
        "io_uring registered buffers",
        plan.registered,
        format!(
            "memlock {} KiB, {} KiB per shard",
            plan.memlock_limit.min(u64::MAX / 2) / 1024,
            plan.io_memory / 1024
        ),
    );
    let workers = crate::node::worker::status(shard);
    let below = workers["belowMinSize"].as_bool().unwrap_or(false);
    check(
        "worker pool",
        !below,
        format!(
            "{} workers, minSize {}",
            workers["count"], cfg.connections.pool.min_size
        ),
    );
    let journal = per.iter().any(|v| !v["queue"]["journal"].is_null());
    check(
        "durability",
        cfg.queue.backend != "memory",
        if journal {
            "journal backend: acknowledged messages survive restarts".into()
        } else if cfg.queue.backend == "redis" {
            "redis backend: acknowledged messages survive restarts unless Redis loses its disk"
                .into()
        } else {
            "memory backend: queued messages are lost on restart".into()
        },
    );
    let ok = checks.iter().all(|c| c["status"] == "ok");
    json!({"ok": ok, "checks": checks, "perShard": per})
}

/// CPU time of this process's threads named `shard-*`, in clock ticks, by thread name.
fn shard_cpu_ticks() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(e.path().join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        // Executor threads are `shard-<n>` (glommio's helper threads share the name).
        let is_shard = comm
            .strip_prefix("shard-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_shard {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Fields after the ")" of comm: state is field 3; utime 14, stime 15 (1-based).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        match out.iter_mut().find(|(n, _)| *n == comm) {
            Some((_, t)) => *t += ticks,
            None => out.push((comm, ticks)),
        }
    }
    out.sort();
    out
}

fn rss_kib() -> u64 {
    super::metrics::rss_bytes() / 1024
}

async fn profile(shard: &Rc<GatewayShard>, p: &Value) -> Result<Value, GatewayError> {
    let dur = match p.get("duration") {
        None => Millis(1_000),
        Some(Value::String(s)) => Millis::parse(s)
            .map_err(|e| GatewayError::InvalidParams(format!("invalid params: duration: {e}")))?,
        Some(v) => Millis(v.as_u64().unwrap_or(5_000)),
    };
    let dur = Millis(dur.0.clamp(100, 300_000));
    let before = shard_cpu_ticks();
    let rss0 = rss_kib();
    let lat0 = merge_latency(&shard.gather(|s| latency_snapshot(s)).await);
    glommio::timer::sleep(Duration::from_millis(dur.0)).await;
    let after = shard_cpu_ticks();
    let rss1 = rss_kib();
    let lat1 = merge_latency(&shard.gather(|s| latency_snapshot(s)).await);
    let hz = 100.0; // USER_HZ on Linux
    let cpu: Vec<Value> = after
        .iter()
        .map(|(name, t)| {
            let t0 = before
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| *t)
                .unwrap_or(0);
            let secs = (t - t0) as f64 / hz;
            json!({"thread": name, "cpuSeconds": secs, "busyRatio": secs / (dur.0 as f64 / 1000.0)})
        })
        .collect();
    let mut top: Vec<(String, u64, f64)> = lat1
        .iter()
        .map(|(m, h)| {
            let n0 = lat0.get(m).map(|h| h.len()).unwrap_or(0);
            let sum0 = lat0
                .get(m)
                .map(|h| h.mean() * h.len() as f64)
                .unwrap_or(0.0);
            let n = h.len().saturating_sub(n0);
            let total_ms = (h.mean() * h.len() as f64 - sum0) / 1000.0;
            (m.clone(), n, total_ms)
        })
        .filter(|(_, n, _)| *n > 0)
        .collect();
    top.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal));
    Ok(json!({
        "durationMs": dur.0, "cpu": cpu,
        "memory": {"rssKiBStart": rss0, "rssKiBEnd": rss1},
        "topMethods": top.iter().take(10).map(|(m, n, t)| json!({"method": m, "calls": n, "totalMs": t})).collect::<Vec<_>>(),
    }))
}
