//! Agent workers (issue 5): runs spread over live workers; a worker killed mid-run sends the
//! run back through the retry policy to another worker. The workers are real `shardgate
//! worker` processes speaking the protocol.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::support::{Gateway, ADMIN, READ, TOKEN, WRITE};

struct Worker {
    child: Child,
    id: String,
    _dir: tempfile::TempDir,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn worker(gw: &Gateway, name: &str, delay_ms: u64) -> Worker {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args([
            "worker",
            "--url",
            &format!("ws://127.0.0.1:{}", gw.port),
            "--token",
            TOKEN,
        ])
        .args([
            "--agent",
            "main",
            "--name",
            name,
            "--delay-ms",
            &delay_ms.to_string(),
        ])
        .arg("--state-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("ready"), "worker not ready: {line:?}");
    let id = line.split_whitespace().nth(2).unwrap().to_string();
    Worker {
        child,
        id,
        _dir: dir,
    }
}

const POOL: &str = "{agents: {bindings: {main: {kind: 'worker'}}},
  queue: {retryPolicy: {maxAttempts: 3, initialDelay: '20ms', maxDelay: '100ms'}},
  connections: {pool: {connectionTimeout: '2s', testOnBorrow: true}}}";

fn wait_workers(c: &mut crate::support::Client, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = c.request_ok("workers.status", json!({}));
        if s["count"].as_u64() == Some(n as u64) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workers not registered: {s}"
        );
        c.request_ok("health", json!({}));
    }
}

#[test]
fn runs_spread_across_three_workers() {
    let gw = Gateway::standard(Some(POOL));
    let ws: Vec<Worker> = (0..3).map(|i| worker(&gw, &format!("w{i}"), 0)).collect();
    let mut c = gw.operator(&[READ, WRITE, ADMIN]);
    wait_workers(&mut c, 3);
    for i in 0..6 {
        let (_, fin) = c.run_agent(
            &format!("agent:main:spread-{i}"),
            &format!("run number {i}"),
            &format!("sp-{i}"),
        );
        assert_eq!(fin["ok"], true, "{fin}");
        assert_eq!(
            fin["payload"]["result"]["payloads"][0]["text"],
            format!("run number {i}")
        );
    }
    // Every worker served at least one run: each run's trace names its worker via the
    // lifecycle start event, which the operator received.
    let served: std::collections::BTreeSet<String> = c
        .events_named("agent")
        .iter()
        .filter(|e| e["payload"]["data"]["phase"] == "start")
        .filter_map(|e| e["payload"]["data"]["worker"].as_str().map(str::to_string))
        .collect();
    for w in &ws {
        assert!(
            served.contains(&w.id),
            "worker {} got no run; served {served:?}",
            w.id
        );
    }
}

#[test]
fn run_moves_to_another_worker_when_its_worker_is_killed() {
    let gw = Gateway::standard(Some(POOL));
    let mut first = worker(&gw, "slow", 300);
    let mut c = gw.operator(&[READ, WRITE, ADMIN]);
    wait_workers(&mut c, 1);
    let id = c.call("agent", json!({"message": "one two three four five six", "sessionKey": "agent:main:move", "idempotencyKey": "mv-1"}));
    assert_eq!(c.wait_res(&id)["payload"]["status"], "accepted");
    // The run is on the slow worker once its first word streams back.
    c.wait_event("first delta", |e| {
        e["event"] == "agent" && e["payload"]["stream"] == "assistant"
    });
    let _second = worker(&gw, "fast", 0);
    wait_workers(&mut c, 2);
    first.child.kill().unwrap();
    let _ = first.child.wait();
    let fin = c.wait_res(&id);
    assert_eq!(fin["ok"], true, "{fin}");
    assert_eq!(
        fin["payload"]["result"]["payloads"][0]["text"],
        "one two three four five six"
    );
    assert_eq!(fin["payload"]["result"]["meta"]["attempts"], 2);
    let t = c.request_ok("gateway.trace", json!({"messageId": "mv-1"}));
    let failed = t["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "attempt_failed")
        .cloned();
    assert!(
        failed.as_ref().is_some_and(|f| f["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("worker disconnected")),
        "{t}"
    );
}

#[test]
fn no_worker_fails_after_connection_timeout_and_dead_letters() {
    let gw = Gateway::standard(Some(
        "{agents: {bindings: {main: {kind: 'worker'}}}, queue: {retryPolicy: {maxAttempts: 2, initialDelay: '10ms'}},
          connections: {pool: {connectionTimeout: '100ms'}}}",
    ));
    let mut c = gw.operator(&[READ, WRITE, ADMIN]);
    let (_, fin) = c.run_agent("agent:main:none", "anyone?", "nw-1");
    assert_eq!(fin["ok"], false);
    assert_eq!(fin["error"]["details"]["code"], "DEAD_LETTERED");
    assert!(
        fin["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no live worker"),
        "{fin}"
    );
}
