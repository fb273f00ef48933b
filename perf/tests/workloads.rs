//! The load generator's workloads against a real gateway (in this process, one shard, over
//! loopback): each run must complete requests with no error, no gap in `seq`, nothing left
//! unanswered, and — for the workloads that stream or fan out — deliver events.

use std::process::Command;

use shardgate_bench::{InProcessGateway, BENCH_TOKEN};

fn run(gw: &InProcessGateway, workload: &str, connections: usize) -> serde_json::Value {
    run_with(gw, workload, connections, &[])
}

fn run_with(
    gw: &InProcessGateway,
    workload: &str,
    connections: usize,
    extra: &[&str],
) -> serde_json::Value {
    let connections = connections.to_string();
    let mut args = vec!["--workload", workload, "--connections", &connections];
    args.extend(["--warmup", "200ms", "--duration", "1s", "--drain", "3s"]);
    args.extend(extra);
    load(gw, workload, &args)
}

/// One `shardgate-load --json` run against `gw` with `args`; its report.
fn load(gw: &InProcessGateway, what: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate-load"))
        .args(["--url", &gw.url(), "--token", BENCH_TOKEN, "--json"])
        .args(args)
        .output()
        .expect("run shardgate-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"))
}

fn assert_clean(workload: &str, r: &serde_json::Value) {
    for k in [
        "errors",
        "incomplete",
        "seq_gaps",
        "bad_frames",
        "closed_early",
    ] {
        assert_eq!(r[k], 0, "{workload}: {k} in {r}");
    }
    assert!(r["requests"].as_u64().unwrap() > 0, "{workload}: {r}");
}

#[test]
fn every_workload_runs_clean_against_the_gateway() {
    let gw = InProcessGateway::start();
    for w in ["health", "agent", "chat"] {
        let r = run(&gw, w, 4);
        assert_clean(w, &r);
        if w != "health" {
            assert!(r["events_per_s"].as_f64().unwrap() > 0.0, "{w}: {r}");
        }
    }
    // Fan-out: every reset reaches all 5 subscribed connections.
    let r = run(&gw, "fanout", 5);
    assert_clean("fanout", &r);
    let per_request = r["events_per_s"].as_f64().unwrap() / r["requests_per_s"].as_f64().unwrap();
    assert!(
        per_request > 4.0,
        "fanout: {per_request} events per request: {r}"
    );
    // node.invoke through built-in node clients.
    let r = run(&gw, "invoke", 3);
    assert_clean("invoke", &r);
    // Open loop: the pacer sends on the planned schedule, 5 connections at 500/s in all.
    let r = run_with(&gw, "agent", 5, &["--mode", "open", "--rate", "500"]);
    assert_clean("open agent", &r);
    let offered = r["offered_per_s"].as_f64().unwrap();
    assert!(
        (offered - 500.0).abs() < 25.0,
        "open agent: offered {offered}/s: {r}"
    );
    let done = r["requests_per_s"].as_f64().unwrap();
    assert!(
        (done - 500.0).abs() < 25.0,
        "open agent: completed {done}/s: {r}"
    );
}

/// More connections than one process may open: the run is spread over several processes
/// (here with a cap of 3 per process instead of 19 000) and reported as one.
#[test]
fn a_run_above_the_per_process_cap_is_spread_over_processes() {
    let gw = InProcessGateway::start();
    let r = run_with(&gw, "agent", 9, &["--max-per-process", "3"]);
    assert_clean("agent over 3 processes", &r);
    assert_eq!(r["processes"], 3, "{r}");
    assert_eq!(r["connections"], 9, "{r}");
    // The children's latency histograms reach the report (requests sent in the window; the
    // completions counted include some sent before it, so the two need not be equal).
    assert!(r["latency_samples"].as_u64().unwrap() > 0, "{r}");
    assert!(r["p99_us"].as_f64().unwrap() > 0.0, "{r}");
    // Open loop: the rate is split between the processes and adds up.
    let r = run_with(
        &gw,
        "agent",
        6,
        &["--max-per-process", "2", "--mode", "open", "--rate", "300"],
    );
    assert_clean("open agent over 3 processes", &r);
    assert_eq!(r["processes"], 3, "{r}");
    let offered = r["offered_per_s"].as_f64().unwrap();
    assert!((offered - 300.0).abs() < 20.0, "offered {offered}/s: {r}");
    // Idle connections too: all of them open at once.
    let idle = ["--idle", "6", "--max-per-process", "2", "--settle", "100ms"];
    let r = load(&gw, "idle", &idle);
    assert_eq!(r["processes"], 3, "{r}");
    assert_eq!(r["connections"], 6, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["closed_by_server"], 0, "{r}");
}

/// `shardgate gateway stress -- ARGS` runs this load generator with the command's URL and
/// token. The `shardgate` binary is the workspace's, built next to `shardgate-load`.
#[test]
fn gateway_stress_runs_the_load_generator() {
    let gw = InProcessGateway::start();
    let shardgate =
        std::path::Path::new(env!("CARGO_BIN_EXE_shardgate-load")).with_file_name("shardgate");
    assert!(
        shardgate.is_file(),
        "{} missing: `cargo test --workspace` builds it",
        shardgate.display()
    );
    let url = gw.url();
    let out = Command::new(&shardgate)
        .args(["gateway", "stress", "--url", url.trim_end_matches('/')])
        .args(["--token", BENCH_TOKEN, "--json", "--"])
        .args(["--workload", "agent", "--connections", "3"])
        .args(["--warmup", "100ms", "--duration", "500ms"])
        .output()
        .expect("run shardgate gateway stress");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n(the shardgate binary next to shardgate-load must be current: \
         `cargo test --workspace` builds both)",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("load JSON");
    assert_clean("gateway stress", &r);
    assert_eq!(r["workload"], "agent", "{r}");
    assert_eq!(r["connections"], 3, "{r}");
}
