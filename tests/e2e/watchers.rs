//! Run events reach the session's other watchers (issue 20): OpenClaw sends a run's `agent`
//! and `chat` events to other operator clients too, so a second TUI on a session sees the
//! first one's runs. shardgate sends them to the connections that opened the session's history
//! or sent to it, on whichever shard they live, and to no one else.

use serde_json::{json, Value};

use crate::support::{operators_on_each_shard, Client, Gateway, READ, WRITE};

/// The `agent`/`chat` events `c` got for run `run_id`, in arrival order.
fn run_events(c: &Client, run_id: &str) -> Vec<Value> {
    let mut v: Vec<Value> = ["agent", "chat"]
        .iter()
        .flat_map(|n| c.events_named(n))
        .filter(|e| e["payload"]["runId"] == run_id)
        .collect();
    v.sort_by_key(|e| e["seq"].as_u64());
    v
}

/// Sends `message` to `key` as a TUI does and waits for its final `chat` on the sender.
fn chat(c: &mut Client, key: &str, message: &str, idem: &str) -> Value {
    let res = c.request_ok(
        "chat.send",
        json!({"sessionKey": key, "message": message, "idempotencyKey": idem}),
    );
    assert_eq!(res["runId"], idem, "{res}");
    let id = idem.to_string();
    c.wait_event("the sender's final chat", move |e| {
        e["event"] == "chat"
            && e["payload"]["runId"] == id.as_str()
            && e["payload"]["state"] == "final"
    })
}

#[test]
fn a_second_client_on_the_session_sees_the_runs_of_the_first() {
    let gw = Gateway::standard(None);
    // Watchers on both shards, whichever owns the session.
    let [mut s0, mut s1] = operators_on_each_shard(&gw, &[READ, WRITE], 3);
    let mut a = s0.remove(0);
    let mut b = s1.remove(0);
    let mut stranger = s0.pop().or_else(|| s1.pop()).unwrap();
    for c in [&mut a, &mut b] {
        c.request_ok("chat.history", json!({"sessionKey": "watched"}));
    }
    let fin = chat(&mut a, "watched", "hello from a", "w-1");
    assert_eq!(
        fin["payload"]["message"]["content"][0]["text"],
        "hello from a"
    );
    // b sees the same run: lifecycle start, the streamed words, the end and the final chat.
    let fb = b.wait_event("a's final chat on b", |e| {
        e["event"] == "chat" && e["payload"]["runId"] == "w-1" && e["payload"]["state"] == "final"
    });
    assert_eq!(fb["payload"], fin["payload"], "same final payload");
    let (ea, eb) = (run_events(&a, "w-1"), run_events(&b, "w-1"));
    let payloads = |v: &[Value]| v.iter().map(|e| e["payload"].clone()).collect::<Vec<_>>();
    assert_eq!(
        payloads(&eb),
        payloads(&ea),
        "b got every event a got, in order"
    );
    assert!(
        eb.iter()
            .any(|e| e["event"] == "agent" && e["payload"]["data"]["phase"] == "start"),
        "{eb:?}"
    );
    // A connection that never touched the session gets none of it.
    stranger.request_ok("health", json!({}));
    assert!(run_events(&stranger, "w-1").is_empty());

    // The other way round, and after a watcher left: nothing breaks, the rest still see it.
    drop(stranger);
    let fin = chat(&mut b, "watched", "and from b", "w-2");
    let fa = a.wait_event("b's final chat on a", |e| {
        e["event"] == "chat" && e["payload"]["runId"] == "w-2" && e["payload"]["state"] == "final"
    });
    assert_eq!(fa["payload"], fin["payload"]);
    drop(b);
    chat(&mut a, "watched", "alone now", "w-3");
}

#[test]
fn other_sessions_runs_stay_with_their_watchers() {
    let gw = Gateway::standard(None);
    let mut a = gw.operator(&[READ, WRITE]);
    let mut b = gw.operator(&[READ, WRITE]);
    a.request_ok("chat.history", json!({"sessionKey": "mine"}));
    b.request_ok("chat.history", json!({"sessionKey": "theirs"}));
    chat(&mut a, "mine", "private", "o-1");
    chat(&mut b, "theirs", "elsewhere", "o-2");
    // Each saw its own run only (b's run ended after a's, on a round trip of its own).
    a.request_ok("health", json!({}));
    assert!(run_events(&a, "o-2").is_empty());
    assert!(run_events(&b, "o-1").is_empty());
}
