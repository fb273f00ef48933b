//! The Discord channel end to end: a real gateway holds a Gateway WebSocket to the stand-in
//! Discord ([`FakeDiscord`]) and posts replies to its REST API, over real sockets. Messages
//! reach the echo agent under their session keys, replies come back as `Create Message`
//! posts, operators see both in `chat.history`, `channels.status`, `health` and `/metrics`.
//! Faults, each with its counts: a dropped connection (Resume with the last sequence, the
//! missed event replayed), a withheld heartbeat ACK (a zombie: closed, resumed), op 7, op 9,
//! close 4004 (stopped, no reconnect), a 429 on REST, a duplicate MESSAGE_CREATE.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::discord::{FakeDiscord, GwFault, DISCORD_TOKEN};
use crate::support::{http_get, Client, Gateway, ADMIN, READ, WRITE};

const WAIT: Duration = Duration::from_secs(20);

/// A gateway with one Discord channel named `discord` on `dc`.
fn gateway(dc: &FakeDiscord) -> Gateway {
    let cfg = format!(
        "{{channels: {{discord: {{kind: 'discord', tokenEnv: 'SG_TEST_DISCORD_TOKEN', \
         gatewayUrl: '{}', apiBase: '{}', reconnectInterval: '200ms'}}}}}}",
        dc.gateway_url(),
        dc.api_base()
    );
    // The token comes from the environment, as an operator would give it.
    std::env::set_var("SG_TEST_DISCORD_TOKEN", DISCORD_TOKEN);
    Gateway::standard(Some(&cfg))
}

/// `channels.status`'s account of the `discord` channel.
fn account(op: &mut Client) -> Value {
    let st = op.request_ok("channels.status", json!({}));
    st["channelAccounts"]["discord"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["accountId"] == "discord").cloned())
        .unwrap_or_else(|| panic!("no discord account in {st}"))
}

/// Asks `channels.status` until `pred` holds of the account.
fn wait_account(op: &mut Client, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let a = account(op);
        if pred(&a) {
            return a;
        }
        assert!(Instant::now() < deadline, "channel never {what}: {a}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A session's history as (role, text) pairs.
fn history(op: &mut Client, key: &str) -> Vec<(String, String)> {
    let h = op.request_ok("chat.history", json!({"sessionKey": key}));
    h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"][0]["text"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pair(user: &str) -> Vec<(String, String)> {
    vec![
        ("user".to_string(), user.to_string()),
        ("assistant".to_string(), user.to_string()),
    ]
}

/// Waits until the session is live (READY or RESUMED seen by the gateway).
fn wait_connected(op: &mut Client) -> Value {
    wait_account(op, "connected", |a| a["state"] == "connected")
}

#[test]
fn a_discord_message_reaches_the_echo_agent_and_its_reply_goes_back() {
    let dc = FakeDiscord::start();
    let gw = gateway(&dc);
    dc.push_message("700000000000000001", true, "42", "hello from a guild");
    dc.push_message("700000000000000002", false, "43", "hello from a dm");
    dc.wait_for("both replies", WAIT, |s| s.contents().len() == 2);
    let (posts, identify, path) = dc.with(|s| {
        (
            s.posts
                .iter()
                .map(|p| (p.channel.clone(), p.body.clone()))
                .collect::<Vec<_>>(),
            s.identifies.clone(),
            s.connections[0].path.clone(),
        )
    });
    assert_eq!(
        posts,
        [
            (
                "700000000000000001".to_string(),
                json!({"content": "hello from a guild"})
            ),
            (
                "700000000000000002".to_string(),
                json!({"content": "hello from a dm"})
            )
        ]
    );
    assert_eq!(path, "/?v=10&encoding=json");
    assert_eq!(identify.len(), 1);
    // GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
    assert_eq!(identify[0]["intents"], 37376);
    assert_eq!(identify[0]["token"], DISCORD_TOKEN);

    let mut op = gw.operator(&[READ, WRITE, ADMIN]);
    assert_eq!(
        history(&mut op, "agent:main:discord:channel:700000000000000001"),
        pair("hello from a guild")
    );
    assert_eq!(
        history(&mut op, "agent:main:discord:dm:700000000000000002"),
        pair("hello from a dm")
    );

    let a = wait_account(&mut op, "counting both replies", |a| {
        a["messages"]["out"] == 2
    });
    assert_eq!(
        (&a["state"], &a["connected"], &a["running"]),
        (&json!("connected"), &json!(true), &json!(true)),
        "{a}"
    );
    assert_eq!(a["messages"]["in"], 2, "{a}");
    assert_eq!(a["tokenSource"], "env");
    assert_eq!(a["gatewayUrl"], dc.gateway_url());
    assert_eq!(a["baseUrl"], dc.api_base());
    assert!(
        a["sequence"].as_u64().unwrap() >= 3,
        "READY and two messages: {a}"
    );
    assert!(
        !a.to_string().contains(DISCORD_TOKEN),
        "no token in status: {a}"
    );
    let st = op.request_ok("channels.status", json!({}));
    assert_eq!(st["channelOrder"], json!(["discord"]));
    assert_eq!(st["channelLabels"]["discord"], "Discord");
    assert_eq!(st["channelDefaultAccountId"]["discord"], "discord");
    assert_eq!(st["statusIssues"], json!([]));

    let health = op.request_ok("health", json!({}));
    assert_eq!(
        health["channels"]["discord"]["healthState"], "healthy",
        "{health}"
    );
    let (code, _, body) = http_get(gw.port, "/metrics");
    assert_eq!(code, 200);
    for line in [
        "shardgate_channel_messages_in_total{channel=\"discord\"} 2",
        "shardgate_channel_messages_out_total{channel=\"discord\"} 2",
        "shardgate_channel_reconnects_total{channel=\"discord\"} 0",
    ] {
        assert!(body.contains(line), "{line} missing from /metrics");
    }
    assert!(!gw.stderr().contains(DISCORD_TOKEN), "the token was logged");
}

#[test]
fn a_dropped_connection_resumes_with_the_last_sequence_and_gets_the_missed_event() {
    let dc = FakeDiscord::start();
    let gw = gateway(&dc);
    dc.push_message("700000000000000001", true, "42", "before the drop");
    dc.wait_for("the first reply", WAIT, |s| s.contents().len() == 1);
    let mut op = gw.operator(&[READ]);
    // The gateway has read everything sent so far (READY = 1, the message = 2).
    wait_account(&mut op, "at sequence 2", |a| a["sequence"] == 2);
    // The next message takes sequence 3 but the connection drops before it is sent.
    dc.fault(GwFault::DropBeforeNext);
    dc.push_message("700000000000000001", true, "42", "during the drop");
    dc.wait_for("the replayed message's reply", WAIT, |s| {
        s.contents().len() == 2
    });
    dc.with(|s| {
        assert_eq!(s.identifies.len(), 1, "resumed, not identified again");
        assert_eq!(
            s.resumes,
            [json!({"token": DISCORD_TOKEN, "session_id": "session-1", "seq": 2})]
        );
        assert_eq!(s.connections.len(), 2);
        assert_eq!(s.connections[1].path, "/resume?v=10&encoding=json");
        assert_eq!(s.contents(), ["before the drop", "during the drop"]);
    });
    let a = wait_account(&mut op, "resumed", |a| {
        a["state"] == "connected" && a["resumes"] == 1
    });
    assert_eq!(a["messages"]["reconnects"], 1, "{a}");
    assert_eq!(a["messages"]["in"], 2, "{a}");
    assert!(
        a["lastError"].as_str().unwrap().contains("connection lost"),
        "{a}"
    );
}

#[test]
fn a_withheld_heartbeat_ack_is_a_zombie_closed_and_resumed() {
    let dc = FakeDiscord::start();
    let gw = gateway(&dc);
    let mut op = gw.operator(&[READ]);
    wait_connected(&mut op);
    dc.wait_for("an acknowledged heartbeat", WAIT, |s| {
        !s.heartbeats.is_empty()
    });
    dc.fault(GwFault::WithholdAck);
    // One heartbeat unanswered, the next due: the gateway closes (not 1000) and resumes.
    dc.wait_for("the zombie's close and a resume", WAIT, |s| {
        !s.client_closes.is_empty() && !s.resumes.is_empty()
    });
    dc.with(|s| {
        assert_eq!(s.client_closes[0], Some(4000), "a resumable close code");
        assert_eq!(s.identifies.len(), 1);
        assert_eq!(s.resumes[0]["session_id"], "session-1");
        assert!(s.connections[1].path.starts_with("/resume"));
    });
    let a = wait_account(&mut op, "resumed", |a| {
        a["state"] == "connected" && a["resumes"] == 1
    });
    assert!(
        a["lastError"].as_str().unwrap().contains("heartbeat"),
        "{a}"
    );
    // The resumed session carries messages.
    dc.push_message("700000000000000003", true, "42", "after the zombie");
    dc.wait_for("the reply", WAIT, |s| s.contents() == ["after the zombie"]);
}

#[test]
fn op7_and_op9_reconnect_resume_or_identify_again() {
    let dc = FakeDiscord::start();
    let gw = gateway(&dc);
    let mut op = gw.operator(&[READ]);
    wait_connected(&mut op);
    dc.fault(GwFault::Reconnect);
    dc.wait_for("a resume after op 7", WAIT, |s| s.resumes.len() == 1);
    wait_account(&mut op, "resumed once", |a| {
        a["state"] == "connected" && a["resumes"] == 1
    });
    dc.fault(GwFault::InvalidSession(true));
    dc.wait_for("a resume after op 9 true", WAIT, |s| s.resumes.len() == 2);
    wait_account(&mut op, "resumed twice", |a| {
        a["state"] == "connected" && a["resumes"] == 2
    });
    let before = Instant::now();
    dc.fault(GwFault::InvalidSession(false));
    dc.wait_for("a new identify after op 9 false", WAIT, |s| {
        s.identifies.len() == 2
    });
    dc.with(|s| {
        let waited = s.connections[3].at.duration_since(before);
        assert!(
            waited >= Duration::from_millis(950),
            "reconnected {waited:?} after op 9 false; Discord asks for 1-5 s"
        );
        assert_eq!(s.resumes.len(), 2, "no resume of an invalid session");
        assert_eq!(s.connections.len(), 4);
        assert_eq!(s.connections[3].path, "/?v=10&encoding=json");
        // op 7 and op 9 true closed resumably, op 9 false with 1000.
        assert_eq!(s.client_closes, [Some(4000), Some(4000), Some(1000)]);
    });
    wait_connected(&mut op);
    dc.push_message("700000000000000004", false, "5", "in the new session");
    dc.wait_for("the reply", WAIT, |s| {
        s.contents() == ["in the new session"]
    });
}

#[test]
fn close_4004_stops_the_channel_without_reconnecting() {
    let dc = FakeDiscord::start();
    let gw = gateway(&dc);
    let mut op = gw.operator(&[READ]);
    wait_connected(&mut op);
    dc.fault(GwFault::Close(4004));
    let a = wait_account(&mut op, "stopped", |a| a["state"] == "stopped");
    assert_eq!(
        (&a["running"], &a["connected"]),
        (&json!(false), &json!(false))
    );
    assert!(a["stopReason"].as_str().unwrap().contains("4004"), "{a}");
    let st = op.request_ok("channels.status", json!({}));
    assert!(
        st["statusIssues"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("stopped: authentication failed (4004)"),
        "{st}"
    );
    let health = op.request_ok("health", json!({}));
    assert_eq!(health["channels"]["discord"]["healthState"], "stopped");
    // Five reconnect intervals later there is still one connection. (An absence is only seen
    // by waiting; the interval is 200 ms.)
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(dc.with(|s| s.connections.len()), 1);
}

#[test]
fn a_429_waits_retry_after_and_a_duplicate_is_taken_once() {
    let dc = FakeDiscord::start();
    let gw = gateway(&dc);
    let mut op = gw.operator(&[READ, WRITE]);
    wait_connected(&mut op);
    dc.fault_rest(0.5, false);
    dc.fault(GwFault::DuplicateNext);
    dc.push_message("700000000000000005", true, "42", "said twice");
    dc.wait_for("the reply after the 429", WAIT, |s| s.contents().len() == 1);
    let posts = dc.with(|s| s.posts.clone());
    assert_eq!(
        posts.iter().map(|p| p.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let gap = posts[1].at.duration_since(posts[0].at);
    assert!(
        gap >= Duration::from_millis(480),
        "retried {gap:?} after a 429 with retry_after 0.5"
    );
    let a = wait_account(&mut op, "counting", |a| a["messages"]["out"] == 1);
    assert_eq!(a["messages"]["in"], 1, "{a}");
    assert_eq!(a["messages"]["duplicates"], 1, "{a}");
    assert_eq!(a["messages"]["rateLimited"], 1, "{a}");
    assert_eq!(
        history(&mut op, "agent:main:discord:channel:700000000000000005"),
        pair("said twice")
    );
    // Nothing else is posted: the duplicate did not run again.
    dc.push_message("700000000000000005", true, "42", "a marker");
    dc.wait_for("the marker's reply", WAIT, |s| s.contents().len() == 2);
    assert_eq!(dc.with(|s| s.contents()), ["said twice", "a marker"]);
}
