//! Start and stop: graceful shutdown (shutdown event, drain, close 1012, exit 0), the
//! singleton rules, config refusal and warnings.

use std::time::Duration;

use serde_json::json;

use crate::support::{expect_start_failure, Gateway, Launch, Started, READ, TOKEN, WRITE};

const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn graceful_shutdown_sends_shutdown_event_then_1012() {
    let mut gw = Gateway::standard(None);
    let mut c = gw.operator(&[READ]);
    c.request_ok("health", json!({}));
    gw.terminate();
    let ev = c.wait_event_named("shutdown");
    assert!(ev["payload"]["reason"].is_string(), "{ev}");
    assert!(ev["seq"].is_u64(), "shutdown carries the outer seq: {ev}");
    let (code, reason) = c.expect_close();
    assert_eq!(code, 1012);
    assert_eq!(reason, "service restart");
    let status = gw
        .wait_exit(EXIT_TIMEOUT)
        .expect("gateway exits after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        gw.stderr()
    );
}

#[test]
fn shutdown_drains_inflight_run() {
    let mut gw = Gateway::standard(Some("{agents:{echo:{deltaDelayMs:100}}}"));
    let mut c = gw.operator(&[WRITE]);
    c.timeout = Duration::from_secs(15);
    let message = "one two three four five six seven eight nine ten";
    let id = c.call(
        "agent",
        json!({"message": message, "sessionKey": "drain", "idempotencyKey": "drain-1"}),
    );
    let acc = c.wait_res(&id);
    assert_eq!(acc["payload"]["status"], "accepted", "{acc}");
    gw.terminate();
    c.wait_event_named("shutdown");

    // New runs are refused while draining.
    let e = c.request_err(
        "chat.send",
        json!({"sessionKey": "drain-2", "message": "late", "idempotencyKey": "late-1"}),
    );
    assert_eq!(e["code"], "UNAVAILABLE", "{e}");
    assert_eq!(e["retryable"], true, "{e}");

    let fin = c.wait_res(&id);
    assert_eq!(fin["ok"], true, "{fin}");
    assert_eq!(fin["payload"]["status"], "ok");
    assert_eq!(fin["payload"]["result"]["payloads"][0]["text"], message);
    let (code, _) = c.expect_close();
    assert_eq!(code, 1012);
    let status = gw
        .wait_exit(EXIT_TIMEOUT)
        .expect("gateway exits after drain");
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        gw.stderr()
    );
}

#[test]
fn singleton_refuses_second_instance_same_state_dir() {
    let first = Gateway::standard(None);
    let (status, stderr) = expect_start_failure(Launch {
        args: &["--token", TOKEN, "--shards", "1"],
        state_dir: Some(&first.state_dir),
        ..Default::default()
    });
    assert!(!status.success(), "{status}");
    assert!(
        stderr.contains(&format!("pid {}", first.pid)),
        "stderr names the running pid {}: {stderr}",
        first.pid
    );
    // The first one is unharmed.
    let mut c = first.operator(&[READ]);
    c.request_ok("health", json!({}));
}

#[test]
fn singleton_refuses_same_port() {
    let first = Gateway::standard(None);
    let (status, stderr) = expect_start_failure(Launch {
        args: &["--token", TOKEN, "--shards", "1"],
        port: Some(first.port),
        ..Default::default()
    });
    assert!(!status.success(), "{status}");
    assert!(
        stderr.contains(&first.port.to_string()),
        "stderr mentions port {}: {stderr}",
        first.port
    );
    let mut c = first.operator(&[READ]);
    c.request_ok("health", json!({}));
}

#[test]
fn bad_config_refused_with_key_path() {
    let (status, stderr) = expect_start_failure(Launch {
        args: &["--token", TOKEN, "--shards", "1"],
        config: Some(r#"{gateway:{port:"x"}}"#),
        ..Default::default()
    });
    assert!(!status.success(), "{status}");
    assert!(stderr.contains("gateway.port"), "{stderr}");

    let (status, stderr) = expect_start_failure(Launch {
        args: &["--token", TOKEN, "--shards", "1"],
        config: Some("{gateway:{tickIntervalMs:5}}"),
        ..Default::default()
    });
    assert!(!status.success(), "{status}");
    assert!(stderr.contains("gateway.tickIntervalMs"), "{stderr}");
}

#[test]
fn unknown_config_key_warns() {
    let gw = match Gateway::launch(Launch {
        args: &["--token", TOKEN, "--shards", "1"],
        config: Some("{gateway:{bogusKey:true}, agents:{echo:{deltaDelayMs:1, nope:2}}}"),
        ..Default::default()
    }) {
        Started::Ready(g) => g,
        Started::Exited { status, stderr } => {
            panic!("unknown keys must not refuse the start ({status}): {stderr}")
        }
    };
    assert!(
        gw.wait_stderr_contains("gateway.bogusKey", Duration::from_secs(5)),
        "stderr: {}",
        gw.stderr()
    );
    assert!(
        gw.wait_stderr_contains("agents.echo.nope", Duration::from_secs(5)),
        "stderr: {}",
        gw.stderr()
    );
    let mut c = gw.operator(&[READ]);
    c.request_ok("health", json!({}));
}

/// glommio's floor is 512 KiB of locked memory; at that limit registered buffers cannot fit
/// and the gateway must still start, serve, and say so in its log.
#[test]
fn starts_with_unregistered_buffers_under_ulimit_l_512() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -l 512 && exec {} serve --port 0 --shards 2 --token T --state-dir {}",
            env!("CARGO_BIN_EXE_shardgate"),
            dir.path().join("state").display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _guard = scopeguard(child.id());
    assert!(line.starts_with("shardgate ready"), "not ready: {line:?}");
    let port: u16 = line
        .split("listen=127.0.0.1:")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut c = crate::support::Client::connect_operator(port, Some("T"), &[READ]);
    assert_eq!(c.request_ok("health", serde_json::json!({}))["ok"], true);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unregistered buffers"),
        "no fallback log line:\n{stderr}"
    );
}

/// Kills the process on drop (a failed assertion must not leak a gateway).
fn scopeguard(pid: u32) -> impl Drop {
    struct G(u32);
    impl Drop for G {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(self.0.to_string())
                .status();
        }
    }
    G(pid)
}
