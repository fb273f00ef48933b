//! `queue.backend: "redis"` against a real redis-server (the harness of `shardgate-redis`,
//! `appendfsync always`, a private port and directory per test): acknowledged messages
//! survive `kill -9` of the gateway and of Redis; while Redis is down, admissions answer
//! `UNAVAILABLE` retryable and local methods keep working.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shardgate_redis::test_server::RedisServer;

use crate::support::{http_get, Client, Gateway, Launch, Started, ADMIN, READ, WRITE};

fn launch(redis: &RedisServer, dir: &std::path::Path, delay_ms: u64) -> Gateway {
    let cfg = format!(
        "{{queue: {{backend: 'redis', redis: {{url: 'redis://{}', keyPrefix: 'sgt', slots: 8}}}}, agents: {{echo: {{deltaDelayMs: {delay_ms}}}}}}}",
        redis.addr()
    );
    launch_cfg(&cfg, dir)
}

fn launch_cfg(cfg: &str, dir: &std::path::Path) -> Gateway {
    match Gateway::launch(Launch {
        args: &["--token", crate::support::TOKEN, "--shards", "2"],
        config: Some(cfg),
        state_dir: Some(dir),
        ..Default::default()
    }) {
        Started::Ready(g) => g,
        Started::Exited { status, stderr } => panic!("exited {status}: {stderr}"),
    }
}

/// One command through `redis-cli` (raw output).
fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "--raw"])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Entries in all 8 work streams.
fn work_entries(redis: &RedisServer) -> u64 {
    stream_entries(redis, "q")
}

/// Entries in all 8 streams of one kind (`q` work, `dead` dead letters).
fn stream_entries(redis: &RedisServer, kind: &str) -> u64 {
    (0..8)
        .map(|s| {
            redis_cli(redis, &["XLEN", &format!("sgt:{kind}:{s}")])
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum()
}

/// Entry ids of all 8 dead-letter streams.
fn dead_entry_ids(redis: &RedisServer) -> Vec<String> {
    (0..8)
        .flat_map(|s| {
            let out = redis_cli(redis, &["XRANGE", &format!("sgt:dead:{s}"), "-", "+"]);
            out.lines()
                .filter(|l| {
                    l.split_once('-').is_some_and(|(a, b)| {
                        !a.is_empty()
                            && a.bytes().all(|c| c.is_ascii_digit())
                            && b.bytes().all(|c| c.is_ascii_digit())
                    })
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Submits until the answer is not "unavailable" (the backend reading back after a start):
/// the gateway says when to retry.
fn accepted(c: &mut Client, method: &str, params: Value) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let res = c.request(method, params.clone());
        if res["ok"] == true {
            return res["payload"].clone();
        }
        assert_eq!(res["error"]["code"], "UNAVAILABLE", "{res}");
        assert!(Instant::now() < end, "never accepted: {res}");
        let ms = res["error"]["retryAfterMs"].as_u64().unwrap_or(100);
        std::thread::sleep(Duration::from_millis(ms.min(200)));
    }
}

fn wait_ok(c: &mut Client, run: &str) {
    // `agent.wait` of a run not yet read back answers at once: ask until it is known.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let w = c.request_ok("agent.wait", json!({"runId": run, "timeoutMs": 20000}));
        if w["status"] == "ok" {
            return;
        }
        assert!(Instant::now() < end, "{run} never finished: {w}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn user_messages(c: &mut Client, key: &str) -> usize {
    let h = c.request_ok("chat.history", json!({"sessionKey": key}));
    h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .count()
}

#[test]
fn redis_keeps_acknowledged_messages_across_gateway_kill_9() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let gw = launch(&redis, dir.path(), 200);
    let mut c = gw.operator(&[READ, WRITE, ADMIN]);
    // One finished before the crash.
    let p = json!({"message": "finished before", "sessionKey": "agent:main:r1", "idempotencyKey": "r-done"});
    accepted(&mut c, "agent", p.clone());
    wait_ok(&mut c, "r-done");
    // Acknowledged (in Redis) but not finished when the process dies.
    let a = accepted(
        &mut c,
        "agent",
        json!({"message": "a b c d e f g h i j", "sessionKey": "agent:main:r2", "idempotencyKey": "r-agent"}),
    );
    assert_eq!(a["status"], "accepted");
    let s = accepted(
        &mut c,
        "chat.send",
        json!({"message": "k l m n o p q r", "sessionKey": "agent:main:r3", "idempotencyKey": "r-chat"}),
    );
    assert_eq!(s["status"], "started");
    // The two unfinished admissions are in Redis (the finished one's completion, written
    // without waiting, leaves the stream).
    wait_until(
        "2 unfinished admissions in redis",
        Duration::from_secs(10),
        || work_entries(&redis) == 2,
    );
    drop(c);
    drop(gw); // SIGKILL

    let gw = launch(&redis, dir.path(), 20);
    let mut c = gw.operator(&[READ, WRITE, ADMIN]);
    wait_ok(&mut c, "r-agent");
    wait_ok(&mut c, "r-chat");
    // Each ran once after the restart (history is in memory: the replay's run only).
    assert_eq!(user_messages(&mut c, "agent:main:r2"), 1);
    assert_eq!(user_messages(&mut c, "agent:main:r3"), 1);
    // The finished one is not run again: the same key answers the same run from Redis.
    let dup = c.request_ok("agent", p);
    assert_eq!(dup["duplicate"], true, "{dup}");
    assert_eq!(dup["runId"], "r-done");
    assert_eq!(user_messages(&mut c, "agent:main:r1"), 0);
    // A resend of a replayed run joins it rather than running it again.
    let again = c.request_ok(
        "chat.send",
        json!({"message": "k l m n o p q r", "sessionKey": "agent:main:r3", "idempotencyKey": "r-chat"}),
    );
    assert_eq!(again["runId"], "r-chat");
    assert_eq!(user_messages(&mut c, "agent:main:r3"), 1);
    // Completed entries leave the work streams.
    wait_until("work streams to empty", Duration::from_secs(10), || {
        work_entries(&redis) == 0
    });
    let st = c.request_ok("queue.stats", json!({}));
    assert!(st.to_string().contains("\"readBack\""), "{st}");
}

#[test]
fn redis_kill_9_and_restart_keeps_every_acknowledged_entry() {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that nothing finishes before both crashes.
    let gw = launch(&redis, dir.path(), 2000);
    let mut c = gw.operator(&[READ, WRITE, ADMIN]);
    let runs: Vec<String> = (0..5).map(|i| format!("k9-{i}")).collect();
    for (i, r) in runs.iter().enumerate() {
        let p = json!({"message": "one two three", "sessionKey": format!("agent:main:k9-{i}"), "idempotencyKey": r});
        accepted(&mut c, "agent", p);
    }
    assert_eq!(work_entries(&redis), 5);
    redis.kill9();
    redis.restart().expect("redis restarts on its directory");
    // appendfsync always: every acknowledged admission came back from the AOF.
    assert_eq!(
        work_entries(&redis),
        5,
        "acked entries lost by kill -9 of redis"
    );
    drop(c);
    drop(gw);
    // A new gateway on the restarted Redis runs all of them.
    let gw = launch(&redis, dir.path(), 0);
    let mut c = gw.operator(&[READ, WRITE, ADMIN]);
    for r in &runs {
        wait_ok(&mut c, r);
    }
    wait_until("work streams to empty", Duration::from_secs(10), || {
        work_entries(&redis) == 0
    });
}

#[test]
fn redis_down_answers_unavailable_and_recovers_by_itself() {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let gw = launch(&redis, dir.path(), 0);
    let mut c = gw.operator(&[READ, WRITE, ADMIN]);
    accepted(
        &mut c,
        "chat.send",
        json!({"message": "before", "sessionKey": "agent:main:d", "idempotencyKey": "d-0"}),
    );
    wait_ok(&mut c, "d-0");
    wait_until(
        "d-0 to leave the work stream",
        Duration::from_secs(10),
        || work_entries(&redis) == 0,
    );
    redis.kill9();
    let p = json!({"message": "while down", "sessionKey": "agent:main:d", "idempotencyKey": "d-1"});
    let e = c.request_err("chat.send", p.clone());
    assert_eq!(e["code"], "UNAVAILABLE", "{e}");
    assert_eq!(e["retryable"], true, "{e}");
    assert!(e["retryAfterMs"].as_u64().is_some_and(|ms| ms > 0), "{e}");
    assert_eq!(e["details"]["code"], "BACKEND_UNAVAILABLE", "{e}");
    // Local methods keep working.
    let h = c.request_ok("health", json!({}));
    assert_eq!(h["ok"], true, "{h}");
    // Nothing was acknowledged, so nothing of it is in Redis once it is back.
    redis.restart().expect("redis restarts");
    assert_eq!(work_entries(&redis), 0);
    // The client reconnects by itself: the same key is accepted (not a cached failure).
    let ok = accepted(&mut c, "chat.send", p);
    assert_eq!(ok["runId"], "d-1");
    assert_ne!(ok["duplicate"], true, "{ok}");
    wait_ok(&mut c, "d-1");
    let st = c.request_ok("queue.stats", json!({}));
    let text = st.to_string();
    assert!(text.contains("\"reconnects\""), "{st}");
    // /metrics: the client's round trips and the failures while Redis was down.
    let (_, _, body) = http_get(gw.port, "/metrics");
    let counter = |name: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    assert!(counter("shardgate_redis_commands_total") > 0);
    assert!(counter("shardgate_redis_errors_total") > 0);
    assert!(counter("shardgate_redis_reconnects_total") > 0);
    assert!(counter("shardgate_redis_admissions_refused_total") > 0);
}

#[test]
fn doctor_checks_redis_reachability_and_persistence() {
    let mut redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.json5");
    std::fs::write(
        &cfg,
        format!(
            "{{queue: {{backend: 'redis', redis: {{url: 'redis://{}'}}}}}}",
            redis.addr()
        ),
    )
    .unwrap();
    let doctor = || -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args(["doctor", "--json", "--port", "0", "--state-dir"])
            .arg(dir.path().join("state"))
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let find = |v: &Value, name: &str| -> Value {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check: {v}"))
    };
    let v = doctor();
    assert_eq!(find(&v, "redis")["status"], "ok", "{v}");
    let p = find(&v, "redis persistence");
    assert_eq!(p["status"], "ok", "{v}");
    assert!(
        p["detail"].as_str().unwrap().contains("appendfsync always"),
        "{p}"
    );
    // Persistence weakened at runtime: a warning that says what to set.
    redis_cli(&redis, &["CONFIG", "SET", "appendfsync", "everysec"]);
    let p = find(&doctor(), "redis persistence");
    assert_eq!(p["status"], "warn", "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("appendfsync always"),
        "{p}"
    );
    redis.kill9();
    let v = doctor();
    assert_eq!(find(&v, "redis")["status"], "fail", "{v}");
    assert_eq!(v["ok"], false, "{v}");
}

#[test]
fn redis_dead_letters_survive_a_restart_and_redrive() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{{queue: {{backend: 'redis', redis: {{url: 'redis://{}', keyPrefix: 'sgt', slots: 8}}, retryPolicy: {{maxAttempts: 2, initialDelay: '20ms', maxDelay: '50ms'}}}}, agents: {{bindings: {{broken: {{dangerouslyFailFirstAttempts: 99}}}}}}}}",
        redis.addr()
    );
    let gw = launch_cfg(&cfg, dir.path());
    let mut c = gw.operator(&[READ, WRITE, ADMIN]);
    let id = c.call(
        "agent",
        json!({"message": "never", "sessionKey": "agent:broken:main", "idempotencyKey": "dl-1"}),
    );
    // The first answer may be UNAVAILABLE while the shard reads Redis back: send again.
    let mut first = c.wait_res(&id);
    while first["ok"] == false {
        std::thread::sleep(Duration::from_millis(50));
        let id2 = c.call(
            "agent",
            json!({"message": "never", "sessionKey": "agent:broken:main", "idempotencyKey": "dl-1"}),
        );
        first = c.wait_res(&id2);
        if first["ok"] == true {
            let fin = c.wait_res(&id2);
            assert_eq!(fin["error"]["details"]["code"], "DEAD_LETTERED", "{fin}");
        }
    }
    wait_until(
        "the dead letter to be in redis",
        Duration::from_secs(10),
        || stream_entries(&redis, "dead") == 1 && work_entries(&redis) == 0,
    );
    drop(c);
    drop(gw);
    // Restored on start: inspectable, and a retry of the key replays the failure.
    let gw = launch_cfg(&cfg, dir.path());
    let mut c = gw.operator(&[READ, WRITE, ADMIN]);
    let end = Instant::now() + Duration::from_secs(20);
    let item = loop {
        let dl = c.request_ok("queue.inspect", json!({"deadLetter": true, "limit": 10}));
        if dl["count"] == 1 {
            break dl["items"][0].clone();
        }
        assert!(Instant::now() < end, "dead letter not restored: {dl}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(item["messageId"], "dl-1");
    assert_eq!(item["errors"].as_array().unwrap().len(), 2, "{item}");
    // Redrive: back in the work stream, runs, dies again, back in the dead-letter stream
    // (a new entry there; the old one is gone).
    let before = dead_entry_ids(&redis);
    assert_eq!(before.len(), 1);
    let r = c.request_ok("queue.redrive", json!({"id": item["id"]}));
    assert_eq!(r["redriven"], 1);
    wait_until(
        "the redriven run to die again",
        Duration::from_secs(10),
        || {
            let st = c.request_ok("queue.status", json!({}));
            let now = dead_entry_ids(&redis);
            st["deadLetters"] == 1 && now.len() == 1 && now != before && work_entries(&redis) == 0
        },
    );
    let st = c.request_ok("queue.stats", json!({}));
    assert_eq!(st["total"]["redriven"], 1, "{st}");
}
