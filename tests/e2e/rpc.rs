//! Requests after the handshake (PROTOCOL.md §2, §4–§7, §9): framing errors, authorization,
//! agent / chat runs, idempotency, sessions, config, presence, the HTTP endpoints, the seed
//! dialect.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use shardgate::auth::device::DeviceIdentity;

use crate::support::{http_get, Client, ConnectOpts, Gateway, ADMIN, READ, TOKEN, WRITE};

/// The cumulative text of a `chat` event.
fn chat_text(e: &Value) -> &str {
    e["payload"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("chat event without text: {e}"))
}

/// Expected cumulative texts of an echo run of `message`: "a", "a b", "a b c", …
fn cumulative(message: &str) -> Vec<String> {
    let words: Vec<&str> = message.split_whitespace().collect();
    (1..=words.len()).map(|n| words[..n].join(" ")).collect()
}

#[test]
fn unknown_method_keeps_socket_open() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[ADMIN]);
    let res = c.request("nosuch.method", json!({}));
    assert_eq!(res["type"], "res");
    assert_eq!(res["ok"], false);
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert_eq!(res["error"]["message"], "unknown method: nosuch.method");
    let h = c.request_ok("health", json!({}));
    assert_eq!(h["ok"], true);
}

#[test]
fn malformed_json_gets_invalid_request_and_socket_stays_usable() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[READ]);
    c.send_text("not json");
    let res = c.wait_res("invalid");
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    let msg = res["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("invalid request frame: "), "{msg}");
    // A JSON value that is not an object.
    c.send_text("[1,2,3]");
    let res = c.wait_res("invalid");
    assert!(res["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid request frame: "));
    let h = c.request_ok("health", json!({}));
    assert_eq!(h["ok"], true);
}

#[test]
fn missing_id_and_missing_method_errors() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[READ]);

    c.send_json(&json!({"type": "req", "method": "health", "params": {}}));
    let res = c.wait_res("invalid");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert_eq!(res["error"]["message"], "invalid request frame: missing id");

    c.send_json(&json!({"type": "req", "id": "m1", "params": {}}));
    let res = c.wait_res("m1");
    assert_eq!(res["ok"], false);
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert_eq!(
        res["error"]["message"],
        "invalid request frame: missing method"
    );

    c.send_json(&json!({"type": "req", "id": "m2", "method": "", "params": {}}));
    let res = c.wait_res("m2");
    assert_eq!(
        res["error"]["message"],
        "invalid request frame: missing method"
    );

    c.send_json(&json!({"type": "req", "id": "m3", "method": "health", "params": 7}));
    let res = c.wait_res("m3");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert!(res["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid request frame: "));

    c.send_json(&json!({"id": "m4", "method": "health"}));
    let res = c.wait_res("m4");
    assert_eq!(
        res["error"]["message"],
        "invalid request frame: missing type"
    );

    // Usable afterwards.
    c.request_ok("health", json!({}));
}

#[test]
fn binary_frame_error() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[READ]);
    c.send_binary(br#"{"type":"req","id":"b1","method":"health"}"#);
    let res = c.wait_res("invalid");
    assert_eq!(res["ok"], false);
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    let msg = res["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("invalid request frame: "), "{msg}");
    assert!(msg.contains("binary"), "{msg}");
    c.request_ok("health", json!({}));
}

#[test]
fn missing_scope_error() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[READ]);
    let e = c.request_err(
        "agent",
        json!({"message": "hi", "idempotencyKey": "k", "sessionKey": "s"}),
    );
    assert_eq!(e["code"], "INVALID_REQUEST");
    assert_eq!(e["message"], "missing scope: operator.write");
    let e = c.request_err("system-event", json!({"text": "x"}));
    assert_eq!(e["message"], "missing scope: operator.admin");
    // Read methods still work.
    c.request_ok("status", json!({}));
    c.request_ok("chat.history", json!({"sessionKey": "s"}));
}

#[test]
fn repeated_unauthorized_calls_close_1008() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[READ]);
    let params = || json!({"message": "hi", "idempotencyKey": "k", "sessionKey": "s"});

    // 10 in a row, then an authorized call resets the streak.
    for _ in 0..10 {
        let e = c.request_err("agent", params());
        assert_eq!(e["message"], "missing scope: operator.write");
    }
    c.request_ok("health", json!({}));
    for _ in 0..10 {
        c.request_err("agent", params());
    }
    c.request_ok("health", json!({}));

    // 11 in a row close the connection.
    let mut ids = Vec::new();
    for _ in 0..11 {
        ids.push(c.call("agent", params()));
    }
    let (code, reason) = c.expect_close();
    assert_eq!(code, 1008);
    assert_eq!(reason, "repeated unauthorized calls");
    for id in &ids {
        let res = c.wait_res(id);
        assert_eq!(res["ok"], false, "{res}");
    }
}

#[test]
fn agent_two_res_same_id() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[WRITE]);
    let message = "hello shard world";
    let id = c.call(
        "agent",
        json!({"message": message, "idempotencyKey": "k-two", "sessionKey": "e2e-agent"}),
    );
    let acc = c.wait_res(&id);
    assert_eq!(acc["ok"], true, "{acc}");
    let p = &acc["payload"];
    assert_eq!(p["runId"], "k-two");
    assert_eq!(p["status"], "accepted");
    assert_eq!(p["agentId"], "main");
    // OpenClaw names the (canonical) session the run went to.
    assert_eq!(p["sessionKey"], "agent:main:e2e-agent", "{p}");
    assert!(p["acceptedAt"].is_i64() || p["acceptedAt"].is_u64(), "{p}");

    let fin = c.wait_res(&id);
    assert_eq!(fin["ok"], true, "{fin}");
    let f = &fin["payload"];
    assert_eq!(f["runId"], "k-two");
    assert_eq!(f["status"], "ok");
    assert_eq!(f["summary"], "completed");
    assert_eq!(f["result"]["payloads"][0]["text"], message);

    let pos = c.log_positions_of_res(&id);
    assert_eq!(pos.len(), 2, "exactly two res frames for one agent call");
    let between: Vec<&Value> = c.log[pos[0] + 1..pos[1]]
        .iter()
        .filter(|v| v["type"] == "event" && v["event"] == "agent")
        .collect();
    let run: Vec<&Value> = between
        .iter()
        .copied()
        .filter(|e| e["payload"]["runId"] == "k-two")
        .collect();
    assert!(!run.is_empty(), "agent events between accepted and final");
    let first = &run[0]["payload"];
    assert_eq!(first["stream"], "lifecycle");
    assert_eq!(first["data"]["phase"], "start");
    let last = &run[run.len() - 1]["payload"];
    assert_eq!(last["stream"], "lifecycle");
    assert_eq!(last["data"]["phase"], "end");
    let texts: Vec<String> = run
        .iter()
        .filter(|e| e["payload"]["stream"] == "assistant")
        .map(|e| e["payload"]["data"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, cumulative(message));
    // Inner seq per run: 1, 2, 3, …
    let inner: Vec<u64> = run
        .iter()
        .map(|e| e["payload"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(inner, (1..=inner.len() as u64).collect::<Vec<_>>());
    for e in &run {
        assert_eq!(e["payload"]["sessionKey"], "agent:main:e2e-agent", "{e}");
    }
}

#[test]
fn chat_send_streams_contiguous_seq() {
    // Fast ticks so tick events interleave with the run's events.
    let gw = Gateway::standard(Some(
        "{gateway:{tickIntervalMs:100}, agents:{echo:{deltaDelayMs:20}}}",
    ));
    let ui = |id: &'static str| ConnectOpts {
        client_id: id,
        client_mode: "ui",
        scopes: crate::support::scopes(&[READ, WRITE]),
        ..Default::default()
    };
    let mut a = Client::connect_with_device(
        gw.port,
        &DeviceIdentity::generate(),
        &ui("openclaw-control-ui"),
    );
    // Another visible client: `a` gets presence events too.
    let _b = Client::connect_with_device(gw.port, &DeviceIdentity::generate(), &ui("webchat"));
    a.wait_event("presence listing 3 entries", |e| {
        e["event"] == "presence"
            && e["payload"]["presence"]
                .as_array()
                .is_some_and(|p| p.len() >= 3)
    });

    let message = "one two three four five six";
    let res = a.request(
        "chat.send",
        json!({"sessionKey": "chat-seq", "message": message, "idempotencyKey": "c-seq"}),
    );
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["runId"], "c-seq");
    assert_eq!(res["payload"]["status"], "started");

    let fin = a.wait_event("chat final", |e| {
        e["event"] == "chat" && e["payload"]["state"] == "final"
    });
    assert_eq!(fin["payload"]["runId"], "c-seq");
    assert_eq!(fin["payload"]["sessionKey"], "agent:main:chat-seq");
    assert_eq!(fin["payload"]["message"]["role"], "assistant");
    assert_eq!(chat_text(&fin), message);
    // And a tick after it, so ticks are surely part of the sequence checked.
    a.wait_event_named("tick");

    let deltas: Vec<String> = a
        .events
        .iter()
        .filter(|e| e["event"] == "chat" && e["payload"]["state"] == "delta")
        .map(|e| chat_text(e).to_string())
        .collect();
    assert_eq!(deltas, cumulative(message), "cumulative delta texts");
    let chat_seqs: Vec<u64> = a
        .events
        .iter()
        .filter(|e| e["event"] == "chat")
        .map(|e| e["payload"]["seq"].as_u64().unwrap())
        .collect();
    assert!(
        chat_seqs.windows(2).all(|w| w[0] < w[1]),
        "chat seq increasing: {chat_seqs:?}"
    );

    let names: HashSet<String> = a
        .events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    for n in ["tick", "presence", "chat", "agent"] {
        assert!(
            names.contains(n),
            "expected {n} events on the connection: {names:?}"
        );
    }
    let seqs = a.event_seqs();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, want, "outer seq contiguous from 1 across all events");
}

#[test]
fn chat_history_returns_messages() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[WRITE]);
    let (_, fin) = c.run_agent("hist", "first message", "h1");
    assert_eq!(fin["ok"], true, "{fin}");
    let (_, fin) = c.run_agent("hist", "second one", "h2");
    assert_eq!(fin["ok"], true, "{fin}");

    let h = c.request_ok("chat.history", json!({"sessionKey": "hist"}));
    assert_eq!(h["sessionKey"], "agent:main:hist");
    let msgs = h["messages"].as_array().expect("messages");
    let pairs: Vec<(String, String)> = msgs
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"][0]["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("user", "first message"),
        ("assistant", "first message"),
        ("user", "second one"),
        ("assistant", "second one"),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(pairs, want);

    // limit keeps the newest.
    let h = c.request_ok("chat.history", json!({"sessionKey": "hist", "limit": 1}));
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["role"], "assistant");
    assert_eq!(msgs[0]["content"][0]["text"], "second one");

    // Same session spelled differently.
    let h = c.request_ok("chat.history", json!({"sessionKey": "Agent:Main:HIST"}));
    assert_eq!(h["messages"].as_array().unwrap().len(), 4);

    // Unknown session: empty.
    let h = c.request_ok("chat.history", json!({"sessionKey": "never-used"}));
    assert_eq!(h["messages"], json!([]));
}

#[test]
fn agent_wait_returns_ok() {
    let gw = Gateway::standard(Some("{agents:{echo:{deltaDelayMs:50}}}"));
    let mut c = gw.operator(&[WRITE]);
    // Finished run.
    let (_, fin) = c.run_agent("wait", "quick", "w1");
    assert_eq!(fin["ok"], true);
    let w = c.request_ok("agent.wait", json!({"runId": "w1"}));
    assert_eq!(w["runId"], "w1");
    assert_eq!(w["status"], "ok");
    let (s, e) = (
        w["startedAt"].as_i64().unwrap(),
        w["endedAt"].as_i64().unwrap(),
    );
    assert!(s <= e, "{w}");

    // Waiting on a running run.
    let id = c.call(
        "agent",
        json!({"message": "a b c d e f", "sessionKey": "wait", "idempotencyKey": "w2"}),
    );
    let acc = c.wait_res(&id);
    assert_eq!(acc["payload"]["status"], "accepted");
    let w = c.request_ok("agent.wait", json!({"runId": "w2", "timeoutMs": 20_000}));
    assert_eq!(w["status"], "ok", "{w}");
    let fin = c.wait_res(&id);
    assert_eq!(fin["payload"]["status"], "ok");

    // Unknown run: timeout.
    let w = c.request_ok("agent.wait", json!({"runId": "nope", "timeoutMs": 50}));
    assert_eq!(w["status"], "timeout", "{w}");
    // Missing runId.
    let e = c.request_err("agent.wait", json!({}));
    assert_eq!(e["code"], "INVALID_REQUEST");
}

#[test]
fn duplicate_agent_idempotency_replays() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[WRITE]);
    let (acc1, fin1) = c.run_agent("dup", "alpha beta", "dup-1");
    assert_eq!(fin1["ok"], true, "{fin1}");
    let (acc2, fin2) = c.run_agent("dup", "alpha beta", "dup-1");
    assert_eq!(acc2["status"], "accepted");
    assert_eq!(acc2["runId"], acc1["runId"]);
    assert_eq!(fin2["ok"], true, "{fin2}");
    assert_eq!(
        fin2["payload"], fin1["payload"],
        "the cached final is replayed"
    );

    // From another connection too.
    let mut d = gw.operator(&[WRITE]);
    let (_, fin3) = d.run_agent("dup", "alpha beta", "dup-1");
    assert_eq!(fin3["payload"], fin1["payload"]);

    let h = c.request_ok("chat.history", json!({"sessionKey": "dup"}));
    let users = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .count();
    assert_eq!(users, 1, "one run only: {h}");
}

#[test]
fn agent_requires_idempotency_key_and_message() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[WRITE]);
    let e = c.request_err("agent", json!({"message": "hi", "sessionKey": "s"}));
    assert_eq!(e["code"], "INVALID_REQUEST");
    assert!(
        e["message"].as_str().unwrap().contains("idempotencyKey"),
        "{e}"
    );
    let e = c.request_err("agent", json!({"idempotencyKey": "x", "sessionKey": "s"}));
    assert!(e["message"].as_str().unwrap().contains("message"), "{e}");
    let e = c.request_err("chat.send", json!({"message": "hi", "sessionKey": "s"}));
    assert!(
        e["message"].as_str().unwrap().contains("idempotencyKey"),
        "{e}"
    );
    let e = c.request_err(
        "agent",
        json!({"message": "hi", "idempotencyKey": "x", "sessionKey": "agent:-bad:x"}),
    );
    assert_eq!(e["code"], "INVALID_REQUEST");
}

#[test]
fn chat_send_duplicate_in_flight() {
    let gw = Gateway::standard(Some("{agents:{echo:{deltaDelayMs:200}}}"));
    let mut c = gw.operator(&[WRITE]);
    let params = json!({"sessionKey": "inflight", "message": "w1 w2 w3 w4 w5 w6 w7 w8", "idempotencyKey": "cd-1"});
    let first = c.request_ok("chat.send", params.clone());
    assert_eq!(first["status"], "started");
    let second = c.request_ok("chat.send", params.clone());
    assert_eq!(second["runId"], "cd-1");
    assert_eq!(second["status"], "in_flight", "{second}");

    let fin = c.wait_event("chat final", |e| {
        e["event"] == "chat" && e["payload"]["state"] == "final"
    });
    assert_eq!(chat_text(&fin), "w1 w2 w3 w4 w5 w6 w7 w8");
    // Only one run: one final event, and one user message in history.
    let finals = c
        .events
        .iter()
        .filter(|e| e["event"] == "chat" && e["payload"]["state"] == "final")
        .count();
    assert_eq!(finals, 1);
    let h = c.request_ok("chat.history", json!({"sessionKey": "inflight"}));
    assert_eq!(h["messages"].as_array().unwrap().len(), 2, "{h}");
}

#[test]
fn chat_abort_stops_run() {
    let gw = Gateway::standard(Some("{agents:{echo:{deltaDelayMs:100}}}"));
    let mut c = gw.operator(&[WRITE]);
    let words: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
    let message = words.join(" ");
    let r = c.request_ok(
        "chat.send",
        json!({"sessionKey": "abort-me", "message": message, "idempotencyKey": "ab-1"}),
    );
    assert_eq!(r["status"], "started");
    c.wait_event("first chat delta", |e| {
        e["event"] == "chat" && e["payload"]["state"] == "delta"
    });

    let a = c.request_ok(
        "chat.abort",
        json!({"sessionKey": "abort-me", "runId": "ab-1"}),
    );
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["aborted"], true, "{a}");
    assert_eq!(a["runIds"], json!(["ab-1"]));

    let ev = c.wait_event("chat aborted/final", |e| {
        e["event"] == "chat" && matches!(e["payload"]["state"].as_str(), Some("aborted" | "final"))
    });
    assert_eq!(ev["payload"]["state"], "aborted", "{ev}");
    assert_eq!(ev["payload"]["runId"], "ab-1");
    let partial = chat_text(&ev);
    assert!(
        message.starts_with(partial) && partial.len() < message.len(),
        "{partial:?}"
    );

    // Nothing to abort any more.
    let a = c.request_ok("chat.abort", json!({"sessionKey": "abort-me"}));
    assert_eq!(a["aborted"], false, "{a}");
}

#[test]
fn sessions_crud() {
    let gw = Gateway::standard(None);
    let mut watcher = gw.operator(&[READ]);
    let s = watcher.request_ok("sessions.subscribe", json!({}));
    assert_eq!(s["subscribed"], true, "{s}");
    let mut c = gw.operator(&[READ, WRITE]);

    let created = c.request_ok("sessions.create", json!({"key": "crud-1", "label": "L"}));
    assert_eq!(created["ok"], true);
    assert_eq!(created["key"], "agent:main:crud-1");
    assert_eq!(created["created"], true);
    let sid = created["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_string();
    let ev = watcher.wait_event("sessions.changed created", |e| {
        e["event"] == "sessions.changed"
    });
    assert_eq!(ev["payload"]["sessionKey"], "agent:main:crud-1");
    assert_eq!(ev["payload"]["reason"], "created");

    let again = c.request_ok("sessions.create", json!({"key": "crud-1"}));
    assert_eq!(again["created"], false);
    assert_eq!(again["sessionId"], sid.as_str());

    let got = c.request_ok("sessions.get", json!({"key": "crud-1"}));
    assert_eq!(got["session"]["key"], "agent:main:crud-1");
    assert_eq!(got["session"]["label"], "L");
    assert_eq!(got["session"]["sessionId"], sid.as_str());

    let list = c.request_ok("sessions.list", json!({}));
    let keys: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"agent:main:crud-1"), "{list}");
    assert_eq!(list["count"], keys.len());

    let (_, fin) = c.run_agent("crud-1", "fill history", "crud-run");
    assert_eq!(fin["ok"], true);
    let reset = c.request_ok("sessions.reset", json!({"key": "crud-1"}));
    assert_eq!(reset["ok"], true);
    assert_ne!(
        reset["sessionId"],
        sid.as_str(),
        "reset gives a new session id"
    );
    let ev = watcher.wait_event("sessions.changed reset", |e| {
        e["event"] == "sessions.changed" && e["payload"]["reason"] == "reset"
    });
    assert_eq!(ev["payload"]["sessionKey"], "agent:main:crud-1");
    let h = c.request_ok("chat.history", json!({"sessionKey": "crud-1"}));
    assert_eq!(h["messages"], json!([]));

    let del = c.request_ok("sessions.delete", json!({"key": "crud-1"}));
    assert_eq!(del["deleted"], true);
    watcher.wait_event("sessions.changed deleted", |e| {
        e["event"] == "sessions.changed" && e["payload"]["reason"] == "deleted"
    });
    let e = c.request_err("sessions.get", json!({"key": "crud-1"}));
    assert_eq!(e["code"], "INVALID_REQUEST");
    assert_eq!(e["details"]["code"], "NOT_FOUND");
    let del = c.request_ok("sessions.delete", json!({"key": "crud-1"}));
    assert_eq!(del["deleted"], false);

    // After unsubscribe no more sessions.changed reach the watcher.
    watcher.request_ok("sessions.unsubscribe", json!({}));
    c.request_ok("sessions.create", json!({"key": "crud-2"}));
    // A round trip on the watcher's own connection after the create was answered.
    watcher.request_ok("sessions.get", json!({"key": "crud-2"}));
    let late = watcher
        .events
        .iter()
        .filter(|e| {
            e["event"] == "sessions.changed" && e["payload"]["sessionKey"] == "agent:main:crud-2"
        })
        .count();
    assert_eq!(late, 0);
}

#[test]
fn config_get_redacts_token() {
    let secret = "e2e-secret-token-5a1f9c";
    let gw = Gateway::start(&["--token", secret, "--shards", "2"], None);
    let mut c = Client::connect_operator(gw.port, Some(secret), &[READ]);
    let res = c.request("config.get", json!({}));
    assert_eq!(res["ok"], true, "{res}");
    let text = res.to_string();
    assert!(!text.contains(secret), "token leaked: {text}");
    assert!(text.contains("__REDACTED__"), "{text}");
    assert_eq!(
        res["payload"]["config"]["gateway"]["auth"]["token"],
        "__REDACTED__"
    );
}

#[test]
fn system_presence_is_array() {
    let gw = Gateway::standard(None);
    let ui = ConnectOpts {
        client_id: "openclaw-macos",
        client_mode: "ui",
        scopes: crate::support::scopes(&[READ]),
        ..Default::default()
    };
    let mut a = Client::connect_with_device(gw.port, &DeviceIdentity::generate(), &ui);
    let p = a.request_ok("system-presence", json!({}));
    let arr = p
        .as_array()
        .expect("system-presence payload is a bare array");
    assert_eq!(arr[0]["mode"], "gateway");
    assert_eq!(arr[0]["reason"], "self");
    // The CLI prints the self entry's version as "app VERSION" and compares it with its own:
    // the OpenClaw version we are compatible with; ours is beside it.
    assert_eq!(arr[0]["version"], "2026.9.6", "{}", arr[0]);
    assert_eq!(arr[0]["shardgateVersion"], env!("CARGO_PKG_VERSION"));
    assert!(
        arr[0]["text"]
            .as_str()
            .unwrap_or("")
            .contains(" · app 2026.9.6 · "),
        "{}",
        arr[0]
    );
    for k in [
        "host",
        "ip",
        "version",
        "platform",
        "deviceFamily",
        "text",
        "ts",
    ] {
        assert!(
            arr[0].get(k).is_some(),
            "self presence lacks {k}: {}",
            arr[0]
        );
    }

    // A second visible client shows up once presence reached a's shard.
    let b = Client::connect_with_device(
        gw.port,
        &DeviceIdentity::generate(),
        &ConnectOpts {
            client_id: "webchat",
            client_mode: "webchat",
            ..ui.clone()
        },
    );
    a.wait_event("presence with webchat", |e| {
        e["event"] == "presence"
            && e["payload"]["presence"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x["mode"] == "webchat"))
    });
    let p = a.request_ok("system-presence", json!({}));
    assert!(
        p.as_array().unwrap().iter().any(|x| x["mode"] == "webchat"),
        "{p}"
    );
    // cli clients are not listed.
    let _cli = gw.operator(&[READ]);
    let p = a.request_ok("system-presence", json!({}));
    assert!(
        !p.as_array().unwrap().iter().any(|x| x["mode"] == "cli"),
        "{p}"
    );

    // A client that leaves is removed.
    drop(b);
    a.wait_event("presence without webchat", |e| {
        e["event"] == "presence"
            && e["payload"]["presence"]
                .as_array()
                .is_some_and(|p| !p.iter().any(|x| x["mode"] == "webchat"))
    });
    let p = a.request_ok("system-presence", json!({}));
    assert!(
        !p.as_array().unwrap().iter().any(|x| x["mode"] == "webchat"),
        "{p}"
    );
}

#[test]
fn http_health_and_ready_endpoints() {
    let gw = Gateway::standard(None);
    for path in ["/health", "/healthz"] {
        let (code, _, body) = http_get(gw.port, path);
        assert_eq!(code, 200, "{path}");
        assert_eq!(body, r#"{"ok":true,"status":"live"}"#, "{path}");
    }
    for path in ["/ready", "/readyz"] {
        let (code, _, body) = http_get(gw.port, path);
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, _, _) = http_get(gw.port, "/nope");
    assert_eq!(code, 404);
    let (code, _, _) = http_get(gw.port, "/health?x=1");
    assert_eq!(code, 200);
}

#[test]
fn http_metrics_endpoint_serves_prometheus_text() {
    // PROTOCOL.md §1: `GET /metrics` (Prometheus text).
    let gw = Gateway::standard(None);
    let (code, status, body) = http_get(gw.port, "/metrics");
    assert_eq!(code, 200, "{status}: {body}");
    assert!(
        body.lines()
            .any(|l| l.starts_with("# TYPE ") || l.starts_with("# HELP ")),
        "{body}"
    );
}

#[test]
fn second_connect_after_hello_is_refused_but_socket_stays() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[READ]);
    let res = c.request("connect", ConnectOpts::default().params());
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    c.request_ok("health", json!({}));
}

#[test]
fn oversize_frame_after_hello_closes_1009() {
    let gw = Gateway::standard(Some(
        "{gateway:{maxPayload:8192, preauthMaxPayload:4096, maxBufferedBytes:1048576}}",
    ));
    let mut c = gw.operator(&[READ]);
    assert_eq!(c.hello["policy"]["maxPayload"], 8192);
    // Under the limit: fine.
    let ok = c.request("health", json!({"pad": "y".repeat(4000)}));
    assert_eq!(ok["ok"], true);
    let big = json!({"type": "req", "id": "big", "method": "health", "params": {"pad": "x".repeat(20_000)}});
    let _ = c.try_send_text(&big.to_string());
    let (code, _) = c.expect_close();
    assert_eq!(code, 1009);
}

#[test]
fn seed_dialect_connect_and_agent() {
    let gw = Gateway::standard(None);
    let mut c = gw.raw();
    let nonce = c.nonce.clone();
    c.send_json(&json!({"type": "connect", "params": {"deviceId": "d1", "auth": {"token": TOKEN}, "challenge": nonce, "capabilities": []}}));
    let res = c.recv_json();
    assert_eq!(res["type"], "res", "{res}");
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["status"], "hello-ok");
    assert_eq!(res["payload"]["health"]["gateway"], "running");

    let message = "seed says hello";
    c.send_json(&json!({"type": "req", "id": "s1", "method": "agent", "params": {"message": message, "sessionKey": "seed-s"}}));
    let fin = c.wait_res("s1");
    assert_eq!(fin["ok"], true, "{fin}");
    assert_eq!(fin["payload"]["message"], message);
    assert_eq!(fin["payload"]["sessionKey"], "agent:main:seed-s");
    // Exactly one res for the seed agent call (the accepted one is not sent).
    assert_eq!(c.log_positions_of_res("s1").len(), 1);
    let kinds: Vec<&str> = c
        .events
        .iter()
        .filter(|e| e["event"] == "agent")
        .map(|e| e["payload"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"thinking"), "{kinds:?}");
    assert!(kinds.contains(&"text"), "{kinds:?}");
    let text: Vec<&str> = c
        .events
        .iter()
        .filter(|e| e["event"] == "agent" && e["payload"]["type"] == "text")
        .map(|e| e["payload"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, vec!["seed", "says", "hello"]);

    // A wrong token in the seed dialect is refused and closed.
    let mut bad = gw.raw();
    bad.send_json(&json!({"type": "connect", "params": {"deviceId": "d2", "auth": {"token": "nope"}, "challenge": bad.nonce.clone(), "capabilities": []}}));
    let res = bad.recv_json();
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["details"]["code"], "AUTH_TOKEN_MISMATCH");
    let (code, _) = bad.expect_close();
    assert_eq!(code, 1008);
}

#[test]
fn tick_events_arrive_at_the_configured_interval() {
    let gw = Gateway::standard(Some("{gateway:{tickIntervalMs:200}}"));
    let mut c = gw.operator(&[READ]);
    assert_eq!(c.hello["policy"]["tickIntervalMs"], 200);
    c.timeout = Duration::from_secs(5);
    let t1 = c.wait_event_named("tick");
    let t2 = c.wait_event_named("tick");
    assert!(
        t1["payload"]["ts"].is_i64() || t1["payload"]["ts"].is_u64(),
        "{t1}"
    );
    assert!(t2["seq"].as_u64() > t1["seq"].as_u64());
}

#[test]
fn agent_duplicate_joins_in_flight_run() {
    let gw = Gateway::standard(Some("{agents:{echo:{deltaDelayMs:50}}}"));
    let mut c = gw.operator(&[WRITE]);
    let params =
        json!({"message": "a b c d e f", "sessionKey": "join", "idempotencyKey": "join-1"});
    let id1 = c.call("agent", params.clone());
    let acc1 = c.wait_res(&id1);
    assert_eq!(acc1["payload"]["status"], "accepted");
    let id2 = c.call("agent", params);
    let acc2 = c.wait_res(&id2);
    assert_eq!(acc2["ok"], true, "{acc2}");
    assert_eq!(acc2["payload"]["status"], "accepted");
    assert_eq!(acc2["payload"]["runId"], "join-1");
    let fin1 = c.wait_res(&id1);
    let fin2 = c.wait_res(&id2);
    assert_eq!(fin1["ok"], true, "{fin1}");
    assert_eq!(
        fin2["payload"], fin1["payload"],
        "the duplicate gets the same final"
    );
    let h = c.request_ok("chat.history", json!({"sessionKey": "join"}));
    assert_eq!(h["messages"].as_array().unwrap().len(), 2, "one run: {h}");
}

#[test]
fn agent_run_timeout_final_shape() {
    // FRAMES.md §4b: a run that times out ends with `ok:true`, `status:"timeout"`,
    // `summary:"aborted"` (the CLI exits 0); agent.wait reports "timeout".
    let gw = Gateway::standard(Some("{agents:{runTimeoutMs:300, echo:{deltaDelayMs:100}}}"));
    let mut c = gw.operator(&[WRITE]);
    let words: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let (_, fin) = c.run_agent("slow", &words.join(" "), "to-1");
    assert_eq!(fin["payload"]["runId"], "to-1", "{fin}");
    assert_eq!(fin["ok"], true, "{fin}");
    assert_eq!(fin["payload"]["status"], "timeout", "{fin}");
    assert_eq!(fin["payload"]["summary"], "aborted", "{fin}");
    let w = c.request_ok("agent.wait", json!({"runId": "to-1"}));
    assert_eq!(w["status"], "timeout", "{w}");
    // Every lifecycle start is closed by a terminal lifecycle event.
    let phases: Vec<String> = c
        .events
        .iter()
        .filter(|e| e["event"] == "agent" && e["payload"]["stream"] == "lifecycle")
        .map(|e| {
            e["payload"]["data"]["phase"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let starts = phases.iter().filter(|p| *p == "start").count();
    let ends = phases.len() - starts;
    assert_eq!(starts, ends, "lifecycle phases {phases:?}");
    // One request, one user message, however the run ended.
    let h = c.request_ok("chat.history", json!({"sessionKey": "slow"}));
    let users = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .count();
    assert_eq!(users, 1, "{h}");
}

#[test]
fn requests_run_concurrently_on_one_connection() {
    let gw = Gateway::standard(Some("{agents:{echo:{deltaDelayMs:100}}}"));
    let mut c = gw.operator(&[READ, WRITE]);
    let words: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
    let id = c.call(
        "agent",
        json!({"message": words.join(" "), "sessionKey": "conc", "idempotencyKey": "conc-1"}),
    );
    let acc = c.wait_res(&id);
    assert_eq!(acc["payload"]["status"], "accepted");
    // Answered while the run is still going.
    let h = c.request("status", json!({}));
    assert_eq!(h["ok"], true);
    let h_pos = c.log.len() - 1;
    let fin = c.wait_res(&id);
    assert_eq!(fin["ok"], true);
    let fin_pos = c.log_positions_of_res(&id)[1];
    assert!(
        h_pos < fin_pos,
        "status was answered before the 3 s run ended"
    );
    let w = c.request_ok("agent.wait", json!({"runId": "conc-1"}));
    assert_eq!(w["status"], "ok");
}

#[test]
fn client_disconnect_mid_run_does_not_break_gateway() {
    let gw = Gateway::standard(Some("{agents:{echo:{deltaDelayMs:50}}}"));
    let mut c = gw.operator(&[WRITE]);
    let id = c.call(
        "agent",
        json!({"message": "a b c d e f g h", "sessionKey": "gone", "idempotencyKey": "gone-1"}),
    );
    c.wait_res(&id);
    c.wait_event("first assistant event", |e| {
        e["event"] == "agent" && e["payload"]["stream"] == "assistant"
    });
    drop(c);
    // The run completes without its caller; the gateway keeps serving.
    let mut d = gw.operator(&[READ, WRITE]);
    let w = d.request_ok(
        "agent.wait",
        json!({"runId": "gone-1", "timeoutMs": 20_000}),
    );
    assert_eq!(w["status"], "ok", "{w}");
    let h = d.request_ok("chat.history", json!({"sessionKey": "gone"}));
    assert_eq!(h["messages"].as_array().unwrap().len(), 2, "{h}");
    let (_, fin) = d.run_agent("gone", "still here", "gone-2");
    assert_eq!(fin["ok"], true);
}

#[test]
fn a_peer_that_stops_reading_is_dropped_after_the_write_timeout() {
    let gw = Gateway::standard(Some("{gateway:{writeTimeoutMs:300}}"));
    let mut other = gw.operator(&[READ, WRITE]);
    let connections = |c: &mut Client| {
        c.request_ok("health", json!({}))["gateway"]["connections"]
            .as_u64()
            .unwrap()
    };
    let mut stuck = gw.operator(&[WRITE]);
    assert_eq!(connections(&mut other), 2);
    // ~40 MB of events, under maxBufferedBytes (50 MB) but far above the socket buffers.
    let words: Vec<String> = (0..200)
        .map(|i| format!("{i:04}{}", "w".repeat(996)))
        .collect();
    let r = stuck.request_ok(
        "chat.send",
        json!({"sessionKey": "stuck", "message": words.join(" "), "idempotencyKey": "stuck-1"}),
    );
    assert_eq!(r["status"], "started");
    // `stuck` never reads again: once its socket is full for 300 ms, the gateway drops it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while connections(&mut other) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck connection is still there"
        );
    }
    // The drop is logged (the log reader runs on its own thread: wait for the line).
    while !gw.stderr().contains("peer stopped reading") {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line:\n{}",
            gw.stderr()
        );
        std::thread::yield_now();
    }
    drop(stuck);
}

#[test]
fn slow_consumer_closes_1008_without_seq_gaps() {
    let gw = Gateway::standard(Some("{gateway:{maxBufferedBytes:1048576}}"));
    let mut slow = gw.operator(&[WRITE]);
    // 200 words of 1000 bytes, each event repeating the text so far: ~40 MB of events in
    // ~400 frames, far above buffer + socket buffers, yet cheap to produce.
    let words: Vec<String> = (0..200)
        .map(|i| format!("{i:04}{}", "w".repeat(996)))
        .collect();
    let r = slow.request_ok(
        "chat.send",
        json!({"sessionKey": "flood", "message": words.join(" "), "idempotencyKey": "flood-1"}),
    );
    assert_eq!(r["status"], "started");
    // Do not read from `slow` until the run is over.
    let mut other = gw.operator(&[WRITE]);
    other.timeout = Duration::from_secs(60);
    let w = other.request_ok(
        "agent.wait",
        json!({"runId": "flood-1", "timeoutMs": 60_000}),
    );
    assert_eq!(w["status"], "ok", "{w}");
    slow.timeout = Duration::from_secs(30);
    let (code, reason) = slow.expect_close();
    assert_eq!(code, 1008);
    assert_eq!(reason, "slow consumer");
    let seqs = slow.event_seqs();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no seq gaps"
    );
    // The gateway is fine.
    other.request_ok("health", json!({}));
}
