//! Chat channels end to end: a real gateway long-polls the stand-in Telegram Bot API
//! ([`FakeTelegram`]) over real sockets; messages reach the echo agent under their session
//! keys, replies come back through `sendMessage`, and operators see both in `chat.history`,
//! `channels.status`, `health` and `/metrics`. Faults: 429, a dropped long poll, duplicate
//! delivery, a restart of the API server, a full queue.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::telegram::{FakeTelegram, Fault, BOT_TOKEN};
use crate::support::{http_get, Client, Gateway, ADMIN, READ, WRITE};

const WAIT: Duration = Duration::from_secs(20);

/// A gateway with one Telegram channel named `telegram` on `tg`, plus `extra` config keys.
fn gateway(tg: &FakeTelegram, extra: &str) -> Gateway {
    let cfg = format!(
        "{{channels: {{telegram: {{kind: 'telegram', tokenEnv: 'SG_TEST_BOT_TOKEN', apiBase: '{}', \
         pollTimeout: '2s', reconnectInterval: '300ms'}}}}, {extra}}}",
        tg.base()
    );
    // The token comes from the environment, as an operator would give it.
    std::env::set_var("SG_TEST_BOT_TOKEN", BOT_TOKEN);
    Gateway::standard(Some(&cfg))
}

/// `channels.status`'s account of channel `name`.
fn account(op: &mut Client, name: &str) -> Value {
    let st = op.request_ok("channels.status", json!({}));
    st["channelAccounts"]["telegram"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["accountId"] == name).cloned())
        .unwrap_or_else(|| panic!("no account {name} in {st}"))
}

/// Asks `channels.status` until `pred` holds of the account.
fn wait_account(op: &mut Client, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let a = account(op, "telegram");
        if pred(&a) {
            return a;
        }
        assert!(Instant::now() < deadline, "channel never {what}: {a}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn texts(sent: &[Value]) -> Vec<String> {
    sent.iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_telegram_message_reaches_the_echo_agent_and_its_reply_goes_back() {
    let tg = FakeTelegram::start();
    let gw = gateway(&tg, "queue: {backend: 'journal'}");
    let id = tg.push_text(42, 42, "hello from telegram");
    tg.wait_for("the reply", WAIT, |sent, _| !sent.is_empty());
    let sent = tg.sent();
    assert_eq!(
        sent,
        [json!({"chat_id": "42", "text": "hello from telegram"})]
    );
    // Acknowledged (offset past it) once admitted.
    tg.wait_for("the acknowledgement", WAIT, |_, polls| {
        polls.iter().any(|p| p.offset == Some(id + 1))
    });

    let mut op = gw.operator(&[READ, WRITE, ADMIN]);
    let h = op.request_ok(
        "chat.history",
        json!({"sessionKey": "agent:main:telegram:dm:42"}),
    );
    let roles: Vec<(&str, &str)> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap(),
                m["content"][0]["text"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("user", "hello from telegram"),
            ("assistant", "hello from telegram")
        ],
        "{h}"
    );

    let a = wait_account(&mut op, "counting the reply", |a| a["messages"]["out"] == 1);
    assert_eq!(
        (&a["state"], &a["connected"], &a["running"], &a["mode"]),
        (
            &json!("connected"),
            &json!(true),
            &json!(true),
            &json!("polling")
        )
    );
    assert_eq!(a["messages"]["in"], 1, "{a}");
    assert_eq!(a["tokenSource"], "env");
    assert_eq!(a["offset"], id + 1);
    assert!(
        !a.to_string().contains(BOT_TOKEN),
        "no token in status: {a}"
    );
    let st = op.request_ok("channels.status", json!({}));
    assert_eq!(st["channelOrder"], json!(["telegram"]));
    assert_eq!(st["channelLabels"]["telegram"], "Telegram");
    assert_eq!(st["channelDefaultAccountId"]["telegram"], "telegram");

    let health = op.request_ok("health", json!({}));
    assert_eq!(
        health["channels"]["telegram"]["healthState"], "healthy",
        "{health}"
    );

    let (code, _, body) = http_get(gw.port, "/metrics");
    assert_eq!(code, 200);
    for line in [
        "shardgate_channel_messages_in_total{channel=\"telegram\"} 1",
        "shardgate_channel_messages_out_total{channel=\"telegram\"} 1",
    ] {
        assert!(body.contains(line), "{line} missing from /metrics");
    }
    assert!(!gw.stderr().contains(BOT_TOKEN), "the token was logged");
}

#[test]
fn flood_control_waits_retry_after_and_status_shows_reconnecting() {
    let tg = FakeTelegram::start();
    tg.fault_poll(Fault::TooMany(2));
    let gw = gateway(&tg, "");
    let mut op = gw.operator(&[READ]);
    let a = wait_account(&mut op, "reconnecting", |a| a["state"] == "reconnecting");
    assert!(
        a["lastError"].as_str().unwrap().contains("429"),
        "lastError names the 429: {a}"
    );
    let next = a["nextAttemptInMs"].as_i64().unwrap();
    assert!(
        next > 0 && next <= 2_000,
        "next attempt within retry_after: {a}"
    );
    let st = op.request_ok("channels.status", json!({}));
    assert_eq!(st["statusIssues"][0]["kind"], "runtime", "{st}");

    tg.wait_for("a poll after the 429", WAIT, |_, polls| polls.len() >= 2);
    let polls = tg.polls();
    assert_eq!(polls[0].answer, "429");
    let gap = polls[1].at.duration_since(polls[0].at);
    assert!(
        gap >= Duration::from_millis(1_900),
        "the next poll came {gap:?} after a 429 with retry_after 2"
    );
    tg.push_text(7, 7, "after the flood");
    tg.wait_for("the reply", WAIT, |sent, _| sent.len() == 1);
    wait_account(&mut op, "connected again", |a| a["state"] == "connected");
}

#[test]
fn duplicates_drops_and_a_restart_lose_and_double_nothing() {
    let mut tg = FakeTelegram::start();
    let gw = gateway(&tg, "");
    // An update delivered twice in one answer.
    tg.fault_poll(Fault::Duplicate);
    tg.push_text(1, 1, "one");
    tg.wait_for("reply one", WAIT, |sent, _| sent.len() == 1);
    // A long poll dropped when the update arrives: delivered again on the next poll.
    tg.fault_poll(Fault::Drop);
    tg.push_text(1, 1, "two");
    tg.wait_for("reply two", WAIT, |sent, _| sent.len() == 2);
    // The API server restarts mid long poll, with an update waiting.
    tg.push_text(2, 2, "three");
    tg.restart(Duration::from_millis(400));
    tg.push_text(2, 2, "four");
    tg.wait_for("replies three and four", WAIT, |sent, _| sent.len() >= 4);
    // Nothing more comes: the gateway has acknowledged all four and polls empty.
    let last = tg.polls().len();
    tg.wait_for("two more polls", WAIT, |_, polls| polls.len() >= last + 2);
    let mut got = texts(&tg.sent());
    got.sort();
    assert_eq!(got, ["four", "one", "three", "two"]);
    let polls = tg.polls();
    assert!(polls.iter().any(|p| p.answer == "ok duplicated"));
    assert!(polls.iter().any(|p| p.answer == "dropped"));

    let mut op = gw.operator(&[READ]);
    let a = wait_account(&mut op, "connected", |a| a["state"] == "connected");
    assert_eq!(a["messages"]["in"], 4, "{a}");
    assert!(a["messages"]["duplicates"].as_u64().unwrap() >= 1, "{a}");
    assert!(a["messages"]["errors"].as_u64().unwrap() >= 1, "{a}");
}

#[test]
fn an_update_is_acknowledged_only_once_queued() {
    let tg = FakeTelegram::start();
    // Both are there at the first poll; the queue takes one message at a time and the first
    // run takes a while, so the second is refused (QUEUE_FULL) when first offered.
    let first = tg.push_text(5, 5, "a b c d e f");
    let second = tg.push_text(6, 6, "second");
    let gw = gateway(
        &tg,
        "queue: {maxSize: 1}, agents: {echo: {deltaDelayMs: 200}}",
    );
    tg.wait_for("both replies", WAIT, |sent, _| sent.len() >= 2);
    let polls = tg.polls();
    // The first poll offered both; the refusal kept the offset below the second, which was
    // offered again (with the first acknowledged) until admitted.
    assert_eq!(polls[0].offset, None);
    assert!(
        polls
            .iter()
            .any(|p| p.offset == Some(second) && p.answer == "ok"),
        "the refused update was offered again: {:?}",
        polls.iter().map(|p| p.offset).collect::<Vec<_>>()
    );
    assert!(polls.iter().all(|p| p.offset.is_none_or(|o| o >= first)));
    tg.wait_for("the last acknowledgement", WAIT, |_, polls| {
        polls.iter().any(|p| p.offset == Some(second + 1))
    });
    assert_eq!(tg.confirmed(), second + 1);
    assert_eq!(texts(&tg.sent()), ["a b c d e f", "second"]);
    assert!(
        gw.stderr().contains("not admitted"),
        "the refusal is logged"
    );
}

#[test]
fn a_refused_token_stops_the_channel_with_its_reason() {
    let tg = FakeTelegram::start();
    let cfg = format!(
        "{{channels: {{telegram: {{kind: 'telegram', token: '999:wrong', apiBase: '{}', pollTimeout: '1s'}}}}}}",
        tg.base()
    );
    let gw = Gateway::standard(Some(&cfg));
    let mut op = gw.operator(&[READ]);
    let a = wait_account(&mut op, "stopped", |a| a["state"] == "stopped");
    assert_eq!(a["running"], false);
    assert!(
        a["stopReason"].as_str().unwrap().contains("401"),
        "the reason names the refusal: {a}"
    );
    assert!(!gw.stderr().contains("999:wrong"), "the token was logged");
}

#[test]
fn a_reply_waits_out_an_api_outage_then_dead_letters_after_the_retry_policy() {
    let tg = FakeTelegram::start();
    let gw = gateway(
        &tg,
        "queue: {retryPolicy: {maxAttempts: 3, backoff: 'fixed', initialDelay: '100ms'}}",
    );
    // Two failed attempts, then the API is back: the third attempt delivers.
    tg.fault_send(Fault::Status(502));
    tg.fault_send(Fault::Drop);
    tg.push_text(3, 3, "through the outage");
    tg.wait_for("the reply", WAIT, |sent, _| sent.len() == 1);
    assert_eq!(texts(&tg.sent()), ["through the outage"]);
    // Three failures exhaust the policy: the reply is a dead letter, not sent.
    for _ in 0..3 {
        tg.fault_send(Fault::Status(500));
    }
    tg.push_text(3, 3, "lost to the outage");
    let mut op = gw.operator(&[READ, WRITE, ADMIN]);
    let deadline = Instant::now() + WAIT;
    let dead = loop {
        let q = op.request_ok("queue.status", json!({}));
        if q["deadLetters"] == 1 {
            break q;
        }
        assert!(Instant::now() < deadline, "no dead letter: {q}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(dead["deadLetters"], 1);
    assert_eq!(tg.sent().len(), 1, "the dead-lettered reply was not sent");
    let a = account(&mut op, "telegram");
    assert_eq!(a["messages"]["errors"], 5, "{a}");
}
