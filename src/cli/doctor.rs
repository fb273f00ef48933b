//! `shardgate doctor`: checks that need no running gateway (config, state dir, port, kernel
//! and io_uring, locked-memory and fd limits, clock, Redis when the queue is on it) plus, when
//! one runs, its health.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{json, Value};

use crate::config::{Config, Overrides};

fn limit(resource: &str) -> Option<u64> {
    // /proc/self/limits: "Max locked memory  8388608  8388608  bytes"
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with(resource))?;
    let soft = line[resource.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

fn kernel_version() -> Option<(u32, u32)> {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut it = r.trim().split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Runs the checks; returns (ok, report).
pub(super) fn check(config: Option<&Path>, ov: &Overrides) -> (bool, Value) {
    let mut checks: Vec<Value> = Vec::new();
    let mut add = |name: &str, status: &str, detail: String| {
        checks.push(json!({"check": name, "status": status, "detail": detail}));
    };
    let cfg = match Config::load(config, ov) {
        Ok(l) => {
            let warn = l.warnings.join("; ");
            add(
                "config",
                if warn.is_empty() { "ok" } else { "warn" },
                if warn.is_empty() {
                    "valid".into()
                } else {
                    warn
                },
            );
            l.config
        }
        Err(e) => {
            add("config", "fail", e.to_string());
            Config::default()
        }
    };
    let sd = cfg.state_dir();
    match std::fs::metadata(&sd) {
        Ok(m) if m.is_dir() => {
            let mode = m.permissions().mode() & 0o777;
            add(
                "state dir",
                if mode & 0o077 == 0 { "ok" } else { "warn" },
                format!(
                    "{} (mode {mode:o}{})",
                    sd.display(),
                    if mode & 0o077 == 0 {
                        ""
                    } else {
                        ": readable by others, chmod 700"
                    }
                ),
            );
            let paired = sd.join("devices").join("paired.json");
            if let Ok(pm) = std::fs::metadata(&paired) {
                let pmode = pm.permissions().mode() & 0o777;
                add(
                    "paired devices file",
                    if pmode & 0o077 == 0 { "ok" } else { "fail" },
                    format!("{} mode {pmode:o}", paired.display()),
                );
            }
        }
        Ok(_) => add(
            "state dir",
            "fail",
            format!("{} is not a directory", sd.display()),
        ),
        Err(_) => add(
            "state dir",
            "ok",
            format!("{} will be created on first start", sd.display()),
        ),
    }
    let addr = format!("{}:{}", cfg.gateway.host, cfg.gateway.port);
    let lock = std::fs::read_to_string(sd.join("gateway.lock")).unwrap_or_default();
    let url = format!("ws://{addr}");
    match std::net::TcpListener::bind(&addr) {
        Ok(_) => add("port", "ok", format!("{addr} is free")),
        Err(_) => match crate::client::Client::connect(
            &url,
            cfg.gateway.auth.token.as_deref(),
            &["operator.read"],
            std::time::Duration::from_secs(3),
        ) {
            Ok(mut c) => {
                let h = c.request("health", json!({}), false, |_| {});
                c.close();
                add(
                    "port",
                    if h.is_ok() { "ok" } else { "warn" },
                    format!(
                        "{addr} is served by a running shardgate ({})",
                        if lock.is_empty() {
                            "pid unknown".into()
                        } else {
                            lock.trim().to_string()
                        }
                    ),
                );
            }
            Err(e) => add(
                "port",
                "fail",
                format!("{addr} is in use by another program ({e})"),
            ),
        },
    }
    match kernel_version() {
        Some((maj, min)) if (maj, min) >= (5, 8) => add(
            "kernel",
            "ok",
            format!("{maj}.{min} (io_uring for glommio needs 5.8+)"),
        ),
        Some((maj, min)) => add(
            "kernel",
            "fail",
            format!("{maj}.{min}: glommio needs Linux 5.8 or newer"),
        ),
        None => add(
            "kernel",
            "warn",
            "cannot read /proc/sys/kernel/osrelease".into(),
        ),
    }
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
    {
        Ok(v) if v == "0" => add("io_uring", "ok", "enabled".into()),
        Ok(v) => add(
            "io_uring",
            "fail",
            format!("kernel.io_uring_disabled = {v}: set it to 0"),
        ),
        Err(_) => add(
            "io_uring",
            "ok",
            "no io_uring_disabled knob (enabled)".into(),
        ),
    }
    let shards = cfg.shards.resolve();
    match limit("Max locked memory") {
        Some(l) => {
            let plan = shards::memlock::plan(l, shards);
            let st = if l < shards::memlock::GLOMMIO_MIN_MEMLOCK {
                "fail"
            } else if plan.registered {
                "ok"
            } else {
                "warn"
            };
            add(
                "ulimit -l",
                st,
                format!(
                    "{} KiB for {shards} shards: {} KiB registered per shard{}",
                    if l == u64::MAX {
                        "unlimited".into()
                    } else {
                        (l / 1024).to_string()
                    },
                    plan.io_memory / 1024,
                    if plan.registered {
                        ""
                    } else {
                        " (unregistered fallback)"
                    }
                ),
            );
        }
        None => add("ulimit -l", "warn", "cannot read /proc/self/limits".into()),
    }
    match limit("Max open files") {
        Some(n) if n >= 20_000 => add("ulimit -n", "ok", format!("{n} file descriptors")),
        Some(n) => add(
            "ulimit -n",
            "warn",
            format!(
                "{n} file descriptors: at most ~{} connections",
                n.saturating_sub(64)
            ),
        ),
        None => add("ulimit -n", "warn", "cannot read /proc/self/limits".into()),
    }
    let now = crate::clock::now_ms();
    // 2024-01-01 .. 2100-01-01
    if (1_704_067_200_000..4_102_444_800_000).contains(&now) {
        add(
            "clock",
            "ok",
            format!("wall clock {now} ms (device signatures allow ±2 min of skew)"),
        );
    } else {
        add(
            "clock",
            "fail",
            format!("wall clock {now} ms looks wrong: device signatures will fail"),
        );
    }
    checks.extend(super::doctor_redis::checks(&cfg));
    let ok = checks.iter().all(|c| c["status"] != "fail");
    (ok, json!({"ok": ok, "checks": checks}))
}
