//! Alerts into a local HTTP receiver (generic webhook, Slack and PagerDuty Events v2 bodies),
//! firing then resolving, retried on failure; load shedding at a deliberately small maxRss.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{http_get, raw_upgrade, Gateway, READ, WRITE};

/// Bodies received, by request path, and a condition to wait on them.
type Received = Arc<(Mutex<Vec<(String, Value)>>, Condvar)>;

/// A local HTTP server that records JSON bodies by path; the first `fail_first` requests get
/// HTTP 500.
struct Receiver {
    port: u16,
    got: Received,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got: Received = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            let mut seen = 0;
            for s in l.incoming().flatten() {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                // The gateway's dependency checks connect without sending a request.
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                seen += 1;
                let mut s = s;
                if seen <= fail_first {
                    let _ = s.write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                    );
                    continue;
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                let (m, c) = &*g;
                m.lock()
                    .unwrap()
                    .push((path, serde_json::from_slice(&body).unwrap()));
                c.notify_all();
            }
        });
        Receiver { port, got }
    }

    /// Waits until `pred` holds for the recorded bodies.
    fn wait(&self, what: &str, pred: impl Fn(&[(String, Value)]) -> bool) -> Vec<(String, Value)> {
        let (m, c) = &*self.got;
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut g = m.lock().unwrap();
        while !pred(&g) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{what}: got {:?}", *g);
            g = c.wait_timeout(g, left).unwrap().0;
        }
        g.clone()
    }
}

#[test]
fn connection_loss_fires_then_resolves_to_every_sink_kind() {
    let rx = Receiver::start(0);
    let cfg = format!(
        "{{monitoring: {{evaluationInterval: '100ms',
            alerts: [{{name: 'connection_loss', threshold: 4, severity: 'warning', channels: ['hook', 'slack', 'pd']}}],
            sinks: {{hook: {{kind: 'webhook', url: 'http://127.0.0.1:{p}/hook'}},
                     slack: {{kind: 'slack', url: 'http://127.0.0.1:{p}/slack'}},
                     pd: {{kind: 'pagerduty', url: 'http://127.0.0.1:{p}/pd', routingKey: 'rk-1'}}}}}}}}",
        p = rx.port
    );
    let gw = Gateway::standard(Some(&cfg));
    // No connections: 0 < 4 × 0.5, the alert fires once per sink.
    assert!(
        gw.wait_stderr_contains("alert firing", Duration::from_secs(30)),
        "{}",
        gw.stderr()
    );
    let got = rx.wait("firing", |g| g.len() >= 3);
    let by = |path: &str| {
        got.iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(by("/hook")["status"], "firing");
    assert_eq!(by("/hook")["alert"], "connection_loss");
    assert!(by("/slack")["text"].as_str().unwrap().contains("FIRING"));
    assert_eq!(by("/pd")["event_action"], "trigger");
    assert_eq!(by("/pd")["routing_key"], "rk-1");
    // Two connections: not below the threshold any more: resolved, once.
    let _a = gw.operator(&[READ]);
    let _b = gw.operator(&[READ]);
    let got = rx.wait("resolved", |g| g.len() >= 6);
    let resolved: Vec<&(String, Value)> = got[3..].iter().collect();
    assert!(resolved
        .iter()
        .any(|(p, v)| p == "/hook" && v["status"] == "resolved"));
    assert!(resolved
        .iter()
        .any(|(p, v)| p == "/pd" && v["event_action"] == "resolve"));
    // De-duplicated: no repeats while the state holds.
    let _c = gw.operator(&[READ]);
    let n = rx.got.0.lock().unwrap().len();
    assert_eq!(n, 6);
}

#[test]
fn high_latency_alert_is_retried_until_delivered() {
    let rx = Receiver::start(2);
    let cfg = format!(
        "{{monitoring: {{evaluationInterval: '100ms',
            alerts: [{{name: 'high_latency', threshold: 0, severity: 'critical', channels: ['hook']}}],
            sinks: {{hook: {{kind: 'webhook', url: 'http://127.0.0.1:{}/hook'}}}}}}}}",
        rx.port
    );
    let gw = Gateway::standard(Some(&cfg));
    let mut c = gw.operator(&[READ, WRITE]);
    c.request_ok("status", serde_json::json!({}));
    // The first two deliveries get HTTP 500; the retry lands.
    let got = rx.wait("delivered after retries", |g| !g.is_empty());
    assert_eq!(got[0].1["alert"], "high_latency");
    assert_eq!(got[0].1["severity"], "critical");
    assert_eq!(got[0].1["status"], "firing");
}

#[test]
fn small_max_rss_sheds_new_connections_and_says_so() {
    let gw = Gateway::standard(Some("{memory: {limits: {maxRss: '1mb'}}}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let head = raw_upgrade(gw.port);
        if head.starts_with("HTTP/1.1 503") {
            assert!(head.contains("overloaded"), "{head}");
            break;
        }
        assert!(Instant::now() < deadline, "never shed: {head}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, _, metrics) = http_get(gw.port, "/metrics");
    assert!(
        metrics.lines().any(|l| l == "shardgate_shedding 1"),
        "{metrics}"
    );
    assert!(gw.wait_stderr_contains("shedding load", Duration::from_secs(5)));
    // Health stays reachable for the operator's probes.
    assert_eq!(http_get(gw.port, "/healthz").0, 200);
}

#[test]
fn watch_raises_gateway_down_from_outside() {
    let rx = Receiver::start(0);
    let gw = Gateway::standard(None);
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(["watch", "--addr", &format!("127.0.0.1:{}", gw.port)])
        .args(["--sink", &format!("http://127.0.0.1:{}/down", rx.port)])
        .args([
            "--interval",
            "100ms",
            "--failure-threshold",
            "2",
            "--success-threshold",
            "1",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // While the gateway answers, nothing is sent; once it is gone, gateway_down fires.
    drop(gw);
    let got = rx.wait("gateway_down", |g| !g.is_empty());
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(got[0].0, "/down");
    assert_eq!(got[0].1["alert"], "gateway_down");
    assert_eq!(got[0].1["status"], "firing");
    assert_eq!(got[0].1["severity"], "critical");
}

#[test]
fn dependency_checks_use_the_thresholds() {
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = format!(
        "{{gateway: {{health: {{checkInterval: '100ms', failureThreshold: 2, successThreshold: 1}}}},
          channels: {{down: {{kind: 'webhook', url: 'http://127.0.0.1:1/x'}},
                      up: {{kind: 'webhook', url: 'http://127.0.0.1:{}/x'}}}}}}",
        up.local_addr().unwrap().port()
    );
    let gw = Gateway::standard(Some(&cfg));
    let mut c = gw.operator(&[READ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = c.request_ok("health", serde_json::json!({}));
        let deps = h["dependencies"].as_array().unwrap().clone();
        let get = |n: &str| deps.iter().find(|d| d["name"] == n).cloned();
        if let (Some(down), Some(upd)) = (get("channel:down"), get("channel:up")) {
            if down["healthy"] == false {
                assert!(down["consecutiveFailures"].as_u64().unwrap() >= 2, "{down}");
                assert_eq!(upd["healthy"], true, "{upd}");
                assert_eq!(h["dependenciesHealthy"], false);
                break;
            }
        }
        assert!(Instant::now() < deadline, "no unhealthy dependency: {h}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn session_and_message_caches_are_bounded() {
    let gw = Gateway::standard(Some(
        "{memory: {caching: {session: {ttl: '300ms'}, message: {maxSize: 2}}}}",
    ));
    let mut c = gw.operator(&[READ, WRITE]);
    for i in 0..3 {
        c.run_agent("agent:main:cached", &format!("m{i}"), &format!("cache-{i}"));
    }
    let h = c.request_ok(
        "chat.history",
        serde_json::json!({"sessionKey": "agent:main:cached"}),
    );
    assert_eq!(
        h["messages"].as_array().unwrap().len(),
        2,
        "message.maxSize: {h}"
    );
    // Idle past session.ttl: the session goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = c.request_ok("sessions.list", serde_json::json!({}));
        if !l["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["key"] == "agent:main:cached")
        {
            break;
        }
        assert!(Instant::now() < deadline, "idle session never expired: {l}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
