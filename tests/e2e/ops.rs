//! Operations (issue 6): every operator CLI command against a real gateway (tables and
//! `--json`), `/metrics` parsed by a Prometheus text parser, and `doctor` finding a planted
//! problem.

use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::support::{http_get, Gateway, ADMIN, TOKEN, WRITE};

fn cli(gw: &Gateway, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(args)
        .args([
            "--url",
            &format!("ws://127.0.0.1:{}", gw.port),
            "--token",
            TOKEN,
        ])
        .output()
        .unwrap()
}

fn cli_json(gw: &Gateway, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = cli(gw, &a);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn cli_text(gw: &Gateway, args: &[&str]) -> String {
    let out = cli(gw, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A gateway with some traffic: two agent runs and one dead letter.
fn busy_gateway() -> Gateway {
    let gw = Gateway::standard(Some(
        "{agents: {bindings: {broken: {dangerouslyFailFirstAttempts: 9}}}, queue: {retryPolicy: {maxAttempts: 2, initialDelay: '10ms'}}}",
    ));
    let mut c = gw.operator(&[WRITE, ADMIN]);
    c.run_agent("agent:main:ops", "hello ops", "ops-1");
    c.run_agent("agent:main:ops", "again", "ops-2");
    c.run_agent("agent:broken:main", "fails", "ops-dead");
    gw
}

#[test]
fn gateway_status_health_connections_in_json_and_tables() {
    let gw = busy_gateway();
    let _keep = gw.operator(&[WRITE]);
    let s = cli_json(&gw, &["gateway", "status", "--verbose"]);
    assert_eq!(s["gateway"]["shards"], 2);
    assert!(s["sessions"]["count"].as_u64().unwrap() >= 2, "{s}");
    let t = cli_text(&gw, &["gateway", "status", "--verbose"]);
    assert!(t.contains("shards") && t.contains("inflight"), "{t}");
    let h = cli_json(&gw, &["gateway", "health", "--detailed"]);
    assert_eq!(h["ok"], true);
    assert!(cli_text(&gw, &["gateway", "health", "--detailed"]).contains("queue depth"));
    let c = cli_json(&gw, &["gateway", "connections", "--by-channel"]);
    assert!(c["byChannel"]["cli"].as_u64().unwrap() >= 1, "{c}");
    let all = cli_json(&gw, &["gateway", "connections", "--all"]);
    assert!(
        all["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["role"] == "operator"),
        "{all}"
    );
}

#[test]
fn gateway_stats_latency_trace_ping_diagnose_profile() {
    let gw = busy_gateway();
    let st = cli_json(
        &gw,
        &[
            "gateway",
            "stats",
            "--period",
            "1h",
            "--metrics",
            "messages,runs",
        ],
    );
    assert!(
        st["metrics"]["messages"]["total"].as_u64().unwrap() >= 3,
        "{st}"
    );
    assert!(
        st["metrics"]["runs"]["total"].as_u64().unwrap() >= 3,
        "{st}"
    );
    assert_eq!(st["minutes"], 60);
    let lat = cli_json(&gw, &["gateway", "latency", "--percentiles", "50,95,99"]);
    assert!(
        lat["methods"]["agent"]["count"].as_u64().unwrap() >= 3,
        "{lat}"
    );
    let p = &lat["methods"]["agent"]["percentiles"];
    assert!(p["p50"].as_f64().unwrap() <= p["p99"].as_f64().unwrap());
    assert!(cli_text(&gw, &["gateway", "latency"]).contains("p95 ms"));
    for stage in ["stage:queue_wait", "stage:dispatch", "stage:end_to_end"] {
        assert!(
            lat["methods"][stage]["count"].as_u64().unwrap() >= 3,
            "{stage}: {lat}"
        );
    }
    let tr = cli_json(&gw, &["gateway", "trace", "--message-id", "ops-1"]);
    let stages: Vec<&str> = tr["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages.first(), Some(&"received"));
    assert_eq!(stages.last(), Some(&"completed"));
    assert!(cli_text(&gw, &["gateway", "trace", "--message-id", "ops-1"]).contains("dispatched"));
    let unknown = cli(&gw, &["gateway", "trace", "--message-id", "nope"]);
    assert!(!unknown.status.success());
    let ping = cli_json(&gw, &["gateway", "ping", "--count", "3"]);
    assert_eq!(ping["rttMs"].as_array().unwrap().len(), 3);
    let d = cli_json(&gw, &["gateway", "diagnose", "--full"]);
    let dl = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "dead letters")
        .unwrap()
        .clone();
    assert_eq!(
        dl["status"], "warn",
        "the planted dead letter is reported: {d}"
    );
    let prof = cli_json(
        &gw,
        &[
            "gateway",
            "profile",
            "--cpu",
            "--memory",
            "--duration",
            "300ms",
        ],
    );
    assert_eq!(
        prof["cpu"].as_array().unwrap().len(),
        2,
        "one row per shard: {prof}"
    );
    assert!(prof["memory"]["rssKiBEnd"].as_u64().unwrap() > 0);
}

#[test]
fn gateway_stress_drives_load_and_reports() {
    let gw = Gateway::standard(None);
    let r = cli_json(
        &gw,
        &[
            "gateway",
            "stress",
            "--messages",
            "60",
            "--concurrency",
            "3",
        ],
    );
    assert_eq!(r["messages"], 60);
    assert_eq!(r["failed"], 0);
    assert!(r["perSecond"].as_f64().unwrap() > 0.0);
    let mut c = gw.operator(&[ADMIN]);
    let lat = c.request_ok("gateway.latency", json!({}));
    assert!(
        lat["methods"]["agent"]["count"].as_u64().unwrap() >= 60,
        "the runs were real: {lat}"
    );
}

#[test]
fn queue_commands_show_and_redrive_dead_letters() {
    let gw = busy_gateway();
    let s = cli_json(&gw, &["queue", "status", "--dead-letter"]);
    assert_eq!(s["deadLetters"], 1);
    let stats = cli_json(&gw, &["queue", "stats", "--detailed"]);
    assert!(
        stats["total"]["completed"].as_u64().unwrap() >= 2,
        "{stats}"
    );
    assert_eq!(stats["total"]["deadLettered"], 1);
    let i = cli_json(&gw, &["queue", "inspect", "--limit", "10", "--dead-letter"]);
    assert_eq!(i["items"][0]["messageId"], "ops-dead");
    let text = cli_text(&gw, &["queue", "inspect", "--dead-letter"]);
    assert!(
        text.contains("ops-dead") && text.contains("attempts"),
        "{text}"
    );
    let r = cli_json(&gw, &["queue", "redrive", "--id", "ops-dead"]);
    assert_eq!(r["redriven"], 1);
    let bad = cli(&gw, &["queue", "redrive"]);
    assert!(!bad.status.success());
}

#[test]
fn commands_fail_clearly_when_no_gateway_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(["gateway", "status", "--url", "ws://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is the gateway running?"), "{err}");
}

#[test]
fn logs_grep_reads_the_rotating_log_file() {
    let gw = busy_gateway();
    assert!(gw.wait_stderr_contains("hello-ok", std::time::Duration::from_secs(5)));
    // The file writer is asynchronous: wait for the line to reach the file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args(["logs", "--grep", "hello-ok", "--state-dir"])
            .arg(&gw.state_dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && text.contains("hello-ok") {
            assert!(text.lines().all(|l| l.contains("hello-ok")), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no log lines: {text}");
        std::thread::yield_now();
    }
}

#[test]
fn metrics_endpoint_parses_as_prometheus_text() {
    let gw = busy_gateway();
    let (code, _, body) = http_get(gw.port, "/metrics");
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let get = |name: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(get("shardgate_up"), 1.0);
    assert_eq!(get("shardgate_shards"), 2.0);
    assert!(get("shardgate_queue_accepted_total") >= 3.0);
    assert_eq!(get("shardgate_queue_dead_lettered_total"), 1.0);
    assert!(get("shardgate_requests_total") >= 3.0);
    assert!(scrape.docs.contains_key("shardgate_connections"));
    // Counters move with traffic.
    let before = get("shardgate_handshakes_total");
    let _c = gw.operator(&[WRITE]);
    let (_, _, body) = http_get(gw.port, "/metrics");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let after: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "shardgate_handshakes_total")
        .map(|s| {
            if let prometheus_parse::Value::Counter(v) = s.value {
                v
            } else {
                0.0
            }
        })
        .sum();
    assert!(after > before, "{before} -> {after}");
}

#[test]
fn doctor_passes_then_finds_a_planted_problem() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args(["doctor", "--json", "--port", "0", "--state-dir"])
            .arg(&state)
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = run(&[]);
    let v: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(ok.status.success(), "{v}");
    for name in [
        "config",
        "state dir",
        "kernel",
        "io_uring",
        "ulimit -l",
        "ulimit -n",
        "clock",
    ] {
        assert!(
            v["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["check"] == name),
            "missing {name}: {v}"
        );
    }
    // Planted: a config with a bad value.
    let cfg = dir.path().join("bad.json5");
    std::fs::write(&cfg, "{gateway: {tickIntervalMs: 5}}").unwrap();
    let bad = run(&["--config", cfg.to_str().unwrap()]);
    assert!(!bad.status.success());
    let v: Value = serde_json::from_slice(&bad.stdout).unwrap();
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "config")
        .unwrap()
        .clone();
    assert_eq!(c["status"], "fail");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("gateway.tickIntervalMs"),
        "{c}"
    );
    // Planted: a world-readable state dir.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let v: Value = serde_json::from_slice(&run(&[]).stdout).unwrap();
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "state dir")
        .unwrap()
        .clone();
    assert_eq!(c["status"], "warn", "{c}");
}

#[test]
fn gateway_audit_security_lists_findings() {
    let gw = Gateway::standard(None);
    let v = cli_json(&gw, &["gateway", "audit", "--security"]);
    let findings = v["findings"].as_array().expect("findings");
    for f in findings {
        assert!(f["severity"].is_string() && f["id"].is_string(), "{f}");
    }
    let t = cli_text(&gw, &["gateway", "audit", "--security"]);
    assert!(t.contains("severity") || t.contains("no findings"), "{t}");
}
