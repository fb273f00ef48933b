//! Delivery guarantees (issue 3): idempotency across connections and shards, per-session
//! order under concurrency, retry with backoff then dead letters and redrive, queue bounds,
//! backpressure without seq gaps, and the durable journal across a crash.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    keys_on_each_shard, operators_on_each_shard, Gateway, Launch, Started, ADMIN, WRITE,
};

fn final_text(res: &Value) -> String {
    res["payload"]["result"]["payloads"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no final text in {res}"))
        .to_string()
}

#[test]
fn duplicate_agent_on_other_shard_while_running_joins_and_replays() {
    let gw = Gateway::standard(Some("{agents: {echo: {deltaDelayMs: 40}}}"));
    let [mut a, mut b] = operators_on_each_shard(&gw, &[WRITE, ADMIN], 2).map(|mut v| v.remove(0));
    assert_ne!(a.shard(), b.shard());
    let params = json!({"message": "one two three four five", "idempotencyKey": "dup-1"});
    let id_a = a.call("agent", params.clone());
    let acc_a = a.wait_res(&id_a);
    assert_eq!(acc_a["payload"]["status"], "accepted");
    // The same call from a connection on the other shard while the first still runs.
    let id_b = b.call("agent", params.clone());
    let acc_b = b.wait_res(&id_b);
    assert_eq!(acc_b["payload"]["status"], "accepted", "{acc_b}");
    assert_eq!(acc_b["payload"]["duplicate"], true, "{acc_b}");
    let fin_a = a.wait_res(&id_a);
    let fin_b = b.wait_res(&id_b);
    assert_eq!(final_text(&fin_a), "one two three four five");
    assert_eq!(
        fin_a["payload"], fin_b["payload"],
        "joined call got another result"
    );
    // After it finished: a third retry replays the same final answer.
    let id_c = a.call("agent", params);
    assert_eq!(a.wait_res(&id_c)["payload"]["duplicate"], true);
    assert_eq!(a.wait_res(&id_c)["payload"], fin_a["payload"]);
    // It ran once: one user message in the session.
    let h = a.request_ok("chat.history", json!({"sessionKey": "agent:main:main"}));
    let users = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .count();
    assert_eq!(users, 1, "{h}");
}

#[test]
fn duplicate_chat_send_reports_in_flight_then_ok() {
    let gw = Gateway::standard(Some("{agents: {echo: {deltaDelayMs: 50}}}"));
    let mut c = gw.operator(&[WRITE]);
    let p = json!({"sessionKey": "dup-chat", "message": "a b c d e f", "idempotencyKey": "cs-1"});
    let first = c.request_ok("chat.send", p.clone());
    assert_eq!(first["status"], "started");
    let second = c.request_ok("chat.send", p.clone());
    assert_eq!(second["status"], "in_flight", "{second}");
    c.wait_event("chat final", |e| {
        e["event"] == "chat" && e["payload"]["state"] == "final"
    });
    let third = c.request_ok("chat.send", p);
    assert_eq!(third["runId"], "cs-1");
    assert_eq!(third["duplicate"], true, "{third}");
}

#[test]
fn duplicate_send_replays_the_same_message_id_across_shards() {
    let gw = Gateway::standard(None);
    let [mut a, mut b] = operators_on_each_shard(&gw, &[WRITE], 2).map(|mut v| v.remove(0));
    let p = json!({"to": "+15550001", "message": "hello", "idempotencyKey": "send-1"});
    let r1 = a.request_ok("send", p.clone());
    let r2 = b.request_ok("send", p);
    assert_eq!(r1["messageId"], "send-1");
    assert_eq!(r1["messageId"], r2["messageId"]);
    assert_eq!(r1["channel"], r2["channel"]);
    assert_eq!(r2["duplicate"], true);
    let h = a.request_ok(
        "chat.history",
        json!({"sessionKey": "agent:main:log:direct:+15550001"}),
    );
    let out: Vec<&Value> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "outbound")
        .collect();
    assert_eq!(out.len(), 1, "delivered more than once: {h}");
}

#[test]
fn per_session_order_kept_under_50_concurrent_senders_on_2_shards() {
    let gw = Gateway::standard(Some("{agents: {echo: {deltaDelayMs: 1}}}"));
    let [key0, key1] = keys_on_each_shard("order");
    let by = operators_on_each_shard(&gw, &[WRITE, ADMIN], 10);
    let mut clients: Vec<_> = by.into_iter().flatten().collect();
    // 50 senders: each client sends 5 messages per session, numbered per sender, back to back.
    let senders = 50;
    let mut sent: Vec<(usize, String, String)> = Vec::new(); // (client, req id, session)
    for s in 0..senders {
        let ci = s % clients.len();
        for (k, key) in [&key0, &key1].iter().enumerate() {
            let id = clients[ci].call(
                "chat.send",
                json!({"sessionKey": key, "message": format!("s{s} k{k}"), "idempotencyKey": format!("o-{s}-{k}")}),
            );
            sent.push((ci, id, key.to_string()));
        }
    }
    for (ci, id, _) in &sent {
        let r = clients[*ci].wait_res(id);
        assert_eq!(r["ok"], true, "{r}");
    }
    // Wait until both sessions have every run finished.
    let n_clients = clients.len();
    let admin = &mut clients[0];
    for s in 0..senders {
        for k in 0..2 {
            let w = admin.request_ok(
                "agent.wait",
                json!({"runId": format!("o-{s}-{k}"), "timeoutMs": 30000}),
            );
            assert_eq!(w["status"], "ok", "{w}");
        }
    }
    for key in [&key0, &key1] {
        let h = admin.request_ok("chat.history", json!({"sessionKey": key, "limit": 1000}));
        assert_eq!(h["messages"].as_array().unwrap().len(), 2 * senders, "{h}");
        // Strict alternation: each run completes before the next starts, and every reply
        // answers the message just before it.
        let msgs = h["messages"].as_array().unwrap();
        for pair in msgs.chunks(2) {
            assert_eq!(pair[0]["role"], "user");
            assert_eq!(pair[1]["role"], "assistant");
            assert_eq!(pair[0]["content"][0]["text"], pair[1]["content"][0]["text"]);
        }
        // Messages from one connection keep their send order within the session.
        for ci in 0..n_clients {
            let mine: Vec<usize> = (0..senders).filter(|s| s % n_clients == ci).collect();
            let pos: Vec<usize> = mine
                .iter()
                .map(|s| {
                    let k = if key == &key0 { 0 } else { 1 };
                    let text = format!("s{s} k{k}");
                    msgs.iter()
                        .position(|m| {
                            m["role"] == "user" && m["content"][0]["text"] == text.as_str()
                        })
                        .unwrap()
                })
                .collect();
            assert!(
                pos.windows(2).all(|w| w[0] < w[1]),
                "connection {ci} reordered: {pos:?}"
            );
        }
    }
}

const FLAKY: &str =
    "{agents: {bindings: {flaky: {dangerouslyFailFirstAttempts: 2}, broken: {dangerouslyFailFirstAttempts: 99}}},
  queue: {retryPolicy: {maxAttempts: 3, initialDelay: '20ms', maxDelay: '200ms'}}}";

#[test]
fn failing_agent_is_retried_with_backoff_then_succeeds() {
    let gw = Gateway::standard(Some(FLAKY));
    let mut c = gw.operator(&[WRITE, ADMIN]);
    let (_, fin) = c.run_agent("agent:flaky:main", "third time lucky", "flaky-1");
    assert_eq!(fin["ok"], true, "{fin}");
    assert_eq!(fin["payload"]["result"]["meta"]["attempts"], 3);
    let t = c.request_ok("gateway.trace", json!({"messageId": "flaky-1"}));
    let stages: Vec<&str> = t["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "received",
            "queued",
            "dispatched",
            "attempt_failed",
            "retry_scheduled",
            "dispatched",
            "attempt_failed",
            "retry_scheduled",
            "dispatched",
            "completed"
        ],
        "{t}"
    );
    let delays: Vec<u64> = t["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == "retry_scheduled")
        .map(|s| s["detail"]["delayMs"].as_u64().unwrap())
        .collect();
    // exponential with jitter in the upper half: [10,20] then [20,40]
    assert!(
        (10..=20).contains(&delays[0]) && (20..=40).contains(&delays[1]),
        "{delays:?}"
    );
}

#[test]
fn exhausted_retries_dead_letter_then_redrive() {
    let gw = Gateway::standard(Some(FLAKY));
    let mut c = gw.operator(&[WRITE, ADMIN]);
    let (_, fin) = c.run_agent("agent:broken:main", "never", "broken-1");
    assert_eq!(fin["ok"], false, "{fin}");
    assert_eq!(fin["error"]["code"], "UNAVAILABLE");
    assert_eq!(fin["error"]["details"]["code"], "DEAD_LETTERED");
    assert_eq!(fin["error"]["details"]["attempts"], 3);
    let dl = c.request_ok("queue.inspect", json!({"deadLetter": true, "limit": 10}));
    assert_eq!(dl["count"], 1, "{dl}");
    let item = &dl["items"][0];
    assert_eq!(item["messageId"], "broken-1");
    assert_eq!(
        item["errors"].as_array().unwrap().len(),
        3,
        "error history kept: {item}"
    );
    // A retry of the same call within the window replays the failure.
    let (_, again) = c.run_agent("agent:broken:main", "never", "broken-1");
    assert_eq!(again["error"]["details"]["code"], "DEAD_LETTERED");
    let status = c.request_ok("queue.status", json!({}));
    assert_eq!(status["deadLetters"], 1);
    // Redrive: it runs again (and dies again, since the agent still fails).
    let r = c.request_ok("queue.redrive", json!({"id": item["id"]}));
    assert_eq!(r["redriven"], 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = c.request_ok("gateway.trace", json!({"messageId": "broken-1"}));
        let stages: Vec<&str> = t["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        if stages.iter().filter(|s| **s == "dead_lettered").count() == 2 {
            assert!(stages.contains(&"redriven"), "{stages:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redriven run did not finish: {stages:?}"
        );
        c.request_ok("health", json!({}));
    }
    let stats = c.request_ok("queue.stats", json!({}));
    assert_eq!(stats["total"]["redriven"], 1, "{stats}");
    assert_eq!(stats["total"]["deadLettered"], 2, "{stats}");
    assert!(
        c.request_err("queue.redrive", json!({"id": "nope"}))["message"]
            .as_str()
            .unwrap()
            .contains("not found")
    );
}

#[test]
fn full_queue_answers_queue_full_and_loses_nothing() {
    let gw = Gateway::standard(Some(
        "{queue: {maxSize: 3}, agents: {echo: {deltaDelayMs: 100}}}",
    ));
    let mut c = gw.operator(&[WRITE, ADMIN]);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..8 {
        let id = c.call("chat.send", json!({"sessionKey": format!("qf-{i}"), "message": "x y", "idempotencyKey": format!("qf-{i}")}));
        let r = c.wait_res(&id);
        if r["ok"] == true {
            accepted.push(i);
        } else {
            assert_eq!(r["error"]["code"], "UNAVAILABLE", "{r}");
            assert_eq!(r["error"]["details"]["code"], "QUEUE_FULL", "{r}");
            assert_eq!(r["error"]["retryable"], true);
            assert!(r["error"]["retryAfterMs"].as_u64().unwrap() > 0);
            refused += 1;
        }
    }
    assert_eq!(accepted.len(), 3, "maxSize 3 admits 3");
    assert_eq!(refused, 5);
    // Every accepted one completes.
    let mut finals = 0;
    while finals < accepted.len() {
        c.wait_event("chat final", |e| {
            e["event"] == "chat" && e["payload"]["state"] == "final"
        });
        finals += 1;
    }
    // Then there is room again.
    let ok = c.request_ok(
        "chat.send",
        json!({"sessionKey": "qf-late", "message": "x", "idempotencyKey": "qf-late"}),
    );
    assert_eq!(ok["status"], "started");
}

#[test]
fn slow_consumer_drops_droppables_without_seq_gaps_then_closes_1008() {
    let gw = Gateway::standard(Some(
        "{gateway: {maxBufferedBytes: 1048576, maxPayload: 1048576}}",
    ));
    let mut slow = gw.operator(&[WRITE]);
    let mut watcher = gw.operator(&[WRITE]);
    // Each delta repeats the text so far: 60 words of 8 KB stream about 30 MB of events, far
    // more than the 1 MiB send buffer plus what the kernel buffers for a reader that stops.
    let word = "w".repeat(8000);
    let msg = vec![word.as_str(); 60].join(" ");
    slow.request_ok(
        "chat.send",
        json!({"sessionKey": "slow", "message": msg, "idempotencyKey": "slow-1"}),
    );
    // `slow` reads nothing more until the run is over (the condition comes from another
    // connection), so its buffer overflows while the run streams.
    let w = watcher.request_ok("agent.wait", json!({"runId": "slow-1", "timeoutMs": 30000}));
    assert_eq!(w["status"], "ok", "{w}");
    let (code, reason) = slow.expect_close();
    assert_eq!((code, reason.as_str()), (1008, "slow consumer"));
    let seqs = slow.event_seqs();
    assert!(!seqs.is_empty());
    assert_eq!(seqs[0], 1);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq gap: {seqs:?}"
    );
}

#[test]
fn journal_keeps_acknowledged_messages_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "{queue: {backend: 'journal'}, storage: {encryption: 'aes-256-gcm'}, agents: {echo: {deltaDelayMs: 200}}}";
    let launch = || match Gateway::launch(Launch {
        args: &["--token", crate::support::TOKEN, "--shards", "2"],
        config: Some(cfg),
        state_dir: Some(dir.path()),
        ..Default::default()
    }) {
        Started::Ready(g) => g,
        Started::Exited { status, stderr } => panic!("exited {status}: {stderr}"),
    };
    let gw = launch();
    let mut c = gw.operator(&[WRITE, ADMIN]);
    let (_, fin) = c.run_agent("agent:main:j1", "finished before", "j-done");
    assert_eq!(final_text(&fin), "finished before");
    // Accepted (durable) but not finished when the process dies.
    let id = c.call("agent", json!({"message": "a b c d e f g h i j", "sessionKey": "agent:main:j2", "idempotencyKey": "j-pending"}));
    assert_eq!(c.wait_res(&id)["payload"]["status"], "accepted");
    drop(c);
    drop(gw); // SIGKILL
    let gw = launch();
    let mut c = gw.operator(&[WRITE, ADMIN]);
    // The unfinished run is replayed and completes.
    let w = c.request_ok(
        "agent.wait",
        json!({"runId": "j-pending", "timeoutMs": 20000}),
    );
    assert_eq!(w["status"], "ok", "{w}");
    let t = c.request_ok("gateway.trace", json!({"messageId": "j-pending"}));
    assert!(
        t["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == "replayed"),
        "{t}"
    );
    // The finished one is not run again: a retry replays its result from the journal.
    let (acc, fin) = c.run_agent("agent:main:j1", "finished before", "j-done");
    assert_eq!(acc["duplicate"], true);
    assert_eq!(final_text(&fin), "finished before");
    let h = c.request_ok("chat.history", json!({"sessionKey": "agent:main:j1"}));
    assert_eq!(
        h["messages"].as_array().unwrap().len(),
        0,
        "j-done must not run again: {h}"
    );
    // Journal files are sealed: the message text is not on disk in clear.
    for e in walk(dir.path().join("journal").as_path()) {
        let bytes = std::fs::read(&e).unwrap();
        assert!(
            !bytes.windows(5).any(|w| w == b"a b c"),
            "clear text in {}",
            e.display()
        );
    }
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn session_seq_reorders_and_skips_a_gap_after_the_ordering_timeout() {
    let gw = Gateway::standard(Some("{ordering: {timeout: '300ms'}}"));
    let mut c = gw.operator(&[WRITE, ADMIN]);
    let send = |c: &mut crate::support::Client, seq: u64, text: &str| {
        let r = c.request_ok(
            "chat.send",
            json!({"sessionKey": "seq", "message": text, "idempotencyKey": format!("seq-{seq}"), "sessionSeq": seq}),
        );
        assert_eq!(r["status"], "started");
    };
    send(&mut c, 1, "first");
    c.wait_event("final 1", |e| {
        e["event"] == "chat" && e["payload"]["state"] == "final" && e["payload"]["runId"] == "seq-1"
    });
    // 3 arrives before 2: it waits for 2.
    send(&mut c, 3, "third");
    send(&mut c, 2, "second");
    c.wait_event("final 3", |e| {
        e["event"] == "chat" && e["payload"]["state"] == "final" && e["payload"]["runId"] == "seq-3"
    });
    // 5 arrives but 4 never does: it runs after the ordering timeout.
    send(&mut c, 5, "fifth");
    c.wait_event("final 5", |e| {
        e["event"] == "chat" && e["payload"]["state"] == "final" && e["payload"]["runId"] == "seq-5"
    });
    let h = c.request_ok("chat.history", json!({"sessionKey": "seq"}));
    let users: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["first", "second", "third", "fifth"]);
    let t = c.request_ok("gateway.trace", json!({"messageId": "seq-3"}));
    assert!(
        t["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == "held"),
        "{t}"
    );
}

#[test]
fn sessions_describe_patch_archive_and_compact_as_openclaw() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[ADMIN]);
    // Two sessions, so that both shards are likely to own one.
    for key in ["life-a", "life-b"] {
        for i in 0..3 {
            c.request_ok(
                "chat.send",
                json!({"sessionKey": key, "message": format!("m{i}"), "idempotencyKey": format!("{key}-{i}")}),
            );
            c.wait_event("chat final", |e| {
                e["event"] == "chat"
                    && e["payload"]["state"] == "final"
                    && e["payload"]["runId"] == format!("{key}-{i}").as_str()
            });
        }
        let full = format!("agent:main:{key}");
        let d = c.request_ok("sessions.describe", json!({"key": key}));
        let s = &d["session"];
        assert_eq!(s["key"], full.as_str(), "{d}");
        assert_eq!(
            (s["archived"].clone(), s["isMain"].clone()),
            (json!(false), json!(false))
        );
        let sid = s["sessionId"].as_str().expect("sessionId").to_string();

        // Archiving wants the incarnation the caller saw.
        let e = c.request_err("sessions.patch", json!({"key": key, "archived": true}));
        assert!(
            e["message"].as_str().unwrap().contains("expectedSessionId"),
            "{e}"
        );
        let p = c.request_ok(
            "sessions.patch",
            json!({"key": key, "archived": true, "expectedSessionId": sid}),
        );
        assert_eq!(p["ok"], true);
        assert!(p["entry"]["archivedAt"].is_i64(), "{p}");
        let listed = |c: &mut crate::support::Client, archived: Value| {
            let l = c.request_ok("sessions.list", json!({"archived": archived}));
            l["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["key"] == full.as_str())
        };
        assert!(
            !listed(&mut c, Value::Null),
            "archived rows are not listed by default"
        );
        assert!(listed(&mut c, json!("all")));

        // 6 messages (3 user, 3 echo): keep the newest 2.
        let k = c.request_ok("sessions.compact", json!({"key": key, "maxLines": 2}));
        assert_eq!(
            (k["compacted"].clone(), k["kept"].clone()),
            (json!(true), json!(2)),
            "{k}"
        );
        let h = c.request_ok("chat.history", json!({"sessionKey": key}));
        let texts: Vec<&str> = h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"][0]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["m2", "m2"], "{h}");
        let k = c.request_ok("sessions.compact", json!({"key": key, "maxLines": 2}));
        assert_eq!(k["compacted"], false, "{k}");
    }
    let none = c.request_ok(
        "sessions.describe",
        json!({"key": "agent:main:nothing-here"}),
    );
    assert_eq!(none, json!({"session": null}));
}
