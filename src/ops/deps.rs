//! Health checks of what the gateway depends on (`gateway.health`: `checkInterval`,
//! `failureThreshold`, `successThreshold`): webhook channels and alert sinks (TCP reachability),
//! the agent worker pool (`connections.pool.minSize`), the journal directory (writable), and
//! the state files (`store`: whether the store writer's last write of each succeeded; listed
//! from the first failed write on).
//! A dependency turns unhealthy after `failureThreshold` consecutive failed checks and healthy
//! again after `successThreshold` passing ones, so one blip does not flap the state. Results
//! show in `health.dependencies`, `gateway diagnose` and `shardgate_dependency_up`.
//!
//! Also the cache limits of `memory.caching`: idle sessions (and their history) expire after
//! `session.ttl` and the oldest idle ones are dropped past `session.maxSize` (split over
//! shards); `message.maxSize`/`message.ttl` bound each session's history.

use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};

use super::dep_state::{apply, DepState};
use crate::clock::now_ms;
use crate::shard::GatewayShard;

async fn tcp_check(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// url")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    match glommio::timer::timeout(Duration::from_secs(3), async {
        Ok(glommio::net::TcpStream::connect(hostport)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()))
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err("connect timeout".into()),
    }
}

/// The checks to run now: (name, ok, detail).
async fn run_checks(shard: &Rc<GatewayShard>) -> Vec<(String, bool, String)> {
    let cfg = shard.config();
    let mut out = Vec::new();
    for (name, c) in &cfg.channels {
        if let Some(url) = c
            .url
            .as_deref()
            .filter(|_| c.kind == crate::config::ChannelKind::Webhook)
        {
            let r = tcp_check(url).await;
            out.push((
                format!("channel:{name}"),
                r.is_ok(),
                r.err().unwrap_or_else(|| format!("{url} reachable")),
            ));
        }
    }
    for (name, s) in &cfg.monitoring.sinks {
        let r = tcp_check(&s.url).await;
        out.push((
            format!("sink:{name}"),
            r.is_ok(),
            r.err().unwrap_or_else(|| format!("{} reachable", s.url)),
        ));
    }
    let min = cfg.connections.pool.min_size;
    if min > 0
        || cfg
            .agents
            .bindings
            .values()
            .any(|b| b.kind == Some(crate::config::AgentKind::Worker))
    {
        let n = crate::node::worker::status(shard)["count"]
            .as_u64()
            .unwrap_or(0) as usize;
        out.push((
            "workers".into(),
            n >= min.max(1),
            format!("{n} workers connected (minSize {min})"),
        ));
    }
    let store = shard.shared().store_writer.stats();
    if store.errors.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        // The writer's own record (no I/O here): the files whose last write failed.
        let failing = store.failing();
        let detail = if failing.is_empty() {
            "state files written".to_owned()
        } else {
            failing
                .iter()
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        out.push(("store".into(), failing.is_empty(), detail));
    }
    if cfg.queue.backend == "journal" {
        let dir = cfg.state_dir().join("journal");
        let probe = dir.join(".health");
        let ok = std::fs::write(&probe, b"ok").is_ok();
        let _ = std::fs::remove_file(&probe);
        out.push((
            "journal".into(),
            ok,
            format!(
                "{} {}",
                dir.display(),
                if ok { "writable" } else { "NOT writable" }
            ),
        ));
    }
    out
}

/// Runs the checks every `checkInterval` (shard 0).
pub async fn check_loop(shard: Rc<GatewayShard>) {
    let h = shard.config().gateway.health.clone();
    loop {
        let results = run_checks(&shard).await;
        let now = now_ms();
        {
            let mut states = shard.deps().states.borrow_mut();
            for (name, ok, detail) in results {
                let st = states.entry(name.clone()).or_insert_with(|| DepState {
                    healthy: true,
                    ..Default::default()
                });
                let was = st.healthy;
                apply(
                    st,
                    ok,
                    detail,
                    h.failure_threshold,
                    h.success_threshold,
                    now,
                );
                if was != st.healthy {
                    tracing::warn!(dependency = %name, healthy = st.healthy, detail = %st.detail, "dependency health changed");
                }
            }
        }
        // The rows are part of hello-ok's cached health.
        shard.health_parts().mark_changed();
        glommio::timer::sleep(h.check_interval.duration()).await;
    }
}

/// Dependency states as JSON rows (from whichever shard holds them).
pub fn rows(shard: &GatewayShard) -> Value {
    Value::Array(
        shard
            .deps()
            .states
            .borrow()
            .iter()
            .map(|(n, s)| json!({"name": n, "healthy": s.healthy, "consecutiveFailures": s.fails, "detail": s.detail, "checkedAt": s.checked_at}))
            .collect(),
    )
}

/// Applies `memory.caching` to this shard's sessions.
pub fn trim_caches(shard: &GatewayShard, now: i64) {
    let c = &shard.config().memory.caching;
    let idle = |s: &crate::session::Session| {
        !s.running.get()
            && s.lane.borrow().is_empty()
            && s.held.borrow().is_empty()
            && s.current.borrow().is_none()
    };
    let mut map = shard.sessions().map.borrow_mut();
    if let Some(ttl) = c.session.ttl {
        let before = map.len();
        map.retain(|_, s| !(idle(s) && now - s.updated_at.get() >= ttl.0 as i64));
        let n = before - map.len();
        if n > 0 {
            tracing::debug!(shard = %shard.id(), evicted = n, "idle sessions expired (memory.caching.session.ttl)");
        }
    }
    if let Some(max) = c.session.max_size {
        let cap = max.div_ceil(shard.shards()).max(1);
        if map.len() > cap {
            let mut idle_keys: Vec<(i64, String)> = map
                .iter()
                .filter(|(_, s)| idle(s))
                .map(|(k, s)| (s.updated_at.get(), k.clone()))
                .collect();
            idle_keys.sort();
            for (_, k) in idle_keys.into_iter().take(map.len() - cap) {
                map.remove(&k);
            }
        }
    }
    if let Some(ttl) = c.message.ttl {
        for s in map.values() {
            s.history.borrow_mut().retain(|ts| now - ts < ttl.0 as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_damp_flapping() {
        let mut s = DepState {
            healthy: true,
            ..Default::default()
        };
        apply(&mut s, false, "x".into(), 3, 2, 0);
        apply(&mut s, false, "x".into(), 3, 2, 0);
        assert!(s.healthy, "two failures < failureThreshold 3");
        apply(&mut s, false, "x".into(), 3, 2, 0);
        assert!(!s.healthy);
        apply(&mut s, true, "ok".into(), 3, 2, 0);
        assert!(!s.healthy, "one success < successThreshold 2");
        apply(&mut s, true, "ok".into(), 3, 2, 0);
        assert!(s.healthy);
    }
}
