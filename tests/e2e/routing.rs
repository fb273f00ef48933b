//! Sessions live on `owner(key)`, connections on the shard that accepted them: runs cross the
//! mesh and still answer, and one session's runs keep their order under concurrency.

use serde_json::{json, Value};

use crate::support::{keys_on_each_shard, operators_on_each_shard, Client, Gateway, READ, WRITE};

fn final_text(fin: &Value) -> &str {
    fin["payload"]["result"]["payloads"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("final without text: {fin}"))
}

#[test]
fn cross_shard_agent_runs_and_answers() {
    let gw = Gateway::standard(None);
    let keys = keys_on_each_shard("xs");
    let mut conns = operators_on_each_shard(&gw, &[READ, WRITE], 6);

    for (s, group) in conns.iter_mut().enumerate() {
        let c = &mut group[0];
        assert_eq!(c.shard(), s);
        for (k, key) in keys.iter().enumerate() {
            let message = format!("from shard {s} to session on shard {k}");
            let run = format!("xs-{s}-{k}");
            let (acc, fin) = c.run_agent(key, &message, &run);
            assert_eq!(acc["runId"], run.as_str());
            assert_eq!(fin["ok"], true, "{fin}");
            assert_eq!(fin["payload"]["status"], "ok");
            assert_eq!(fin["payload"]["runId"], run.as_str());
            assert_eq!(fin["payload"]["sessionKey"], key.as_str());
            assert_eq!(final_text(&fin), message);
            // The run's events reached the caller, wherever the session lives.
            let end = c
                .events
                .iter()
                .filter(|e| e["event"] == "agent" && e["payload"]["runId"] == run.as_str())
                .any(|e| e["payload"]["data"]["phase"] == "end");
            assert!(end, "lifecycle end of {run} delivered to shard {s}");
        }
    }

    // Events from both shards share one contiguous outer seq per connection.
    for group in &conns {
        let seqs = group[0].event_seqs();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    }

    // Each session has both runs, read from a connection on the other shard.
    for (k, key) in keys.iter().enumerate() {
        let c = &mut conns[1 - k][0];
        let h = c.request_ok("chat.history", json!({"sessionKey": key}));
        let msgs = h["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 4, "{h}");
    }

    // sessions.list gathers from every shard; health counts both shards.
    let c = &mut conns[0][0];
    let list = c.request_ok("sessions.list", json!({}));
    let listed: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    for key in &keys {
        assert!(listed.contains(&key.as_str()), "{key} in {listed:?}");
    }
    let h = c.request_ok("health", json!({}));
    assert_eq!(h["gateway"]["shards"], 2, "{h}");
    assert_eq!(
        h["gateway"]["perShard"].as_array().map(Vec::len),
        Some(2),
        "{h}"
    );

    // sessions.* from either shard reach the owner.
    for key in &keys {
        let r = conns[1][0].request_ok("sessions.create", json!({"key": key, "label": "xs"}));
        assert_eq!(r["created"], false, "{r}");
        let g = conns[0][0].request_ok("sessions.get", json!({"key": key}));
        assert_eq!(g["session"]["label"], "xs");
        assert_eq!(g["session"]["messageCount"], 4);
    }
}

#[test]
fn per_session_order_kept_under_concurrency() {
    let gw = Gateway::standard(Some("{agents:{echo:{deltaDelayMs:5}}}"));
    let keys = keys_on_each_shard("ord");
    let mut conns = operators_on_each_shard(&gw, &[READ, WRITE], 6);
    let [g0, g1] = &mut conns;
    let (a, b) = (&mut g0[0], &mut g1[0]);
    const N: usize = 5;

    // Both connections fire N runs at each session, back to back, interleaved.
    let mut sent: Vec<(usize, char, usize, String)> = Vec::new(); // (key, conn, i, req id)
    for i in 0..N {
        for (k, key) in keys.iter().enumerate() {
            for (who, c) in [('a', &mut *a), ('b', &mut *b)] {
                let id = c.call(
                    "agent",
                    json!({"sessionKey": key, "message": format!("{who} says {i} to {k} now"),
                           "idempotencyKey": format!("ord-{k}-{who}-{i}")}),
                );
                sent.push((k, who, i, id));
            }
        }
    }
    // Every call is accepted and then answered with its own text.
    for (k, who, i, id) in &sent {
        let c: &mut Client = if *who == 'a' { &mut *a } else { &mut *b };
        let acc = c.wait_res(id);
        assert_eq!(acc["payload"]["status"], "accepted", "{acc}");
        let fin = c.wait_res(id);
        assert_eq!(fin["ok"], true, "{fin}");
        assert_eq!(final_text(&fin), format!("{who} says {i} to {k} now"));
    }
    // On each connection, the finals of one session arrive in send order.
    for (who, c) in [('a', &*a), ('b', &*b)] {
        for k in 0..keys.len() {
            let finals: Vec<usize> = sent
                .iter()
                .filter(|(kk, w, _, _)| *kk == k && *w == who)
                .map(|(_, _, _, id)| c.log_positions_of_res(id)[1])
                .collect();
            assert!(
                finals.windows(2).all(|w| w[0] < w[1]),
                "conn {who} session {k}: finals out of send order: {finals:?}"
            );
        }
    }
    for c in [&*a, &*b] {
        let seqs = c.event_seqs();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "contiguous seq"
        );
    }
    // History: user/assistant pairs, each answer right after its question, each
    // connection's messages in its send order.
    for (k, key) in keys.iter().enumerate() {
        let h = a.request_ok("chat.history", json!({"sessionKey": key}));
        let msgs = h["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 4 * N, "{h}");
        let mut order: Vec<(char, usize)> = Vec::new();
        for pair in msgs.chunks(2) {
            let (u, r) = (&pair[0], &pair[1]);
            assert_eq!(u["role"], "user", "{h}");
            assert_eq!(r["role"], "assistant", "{h}");
            assert_eq!(u["content"][0]["text"], r["content"][0]["text"], "{h}");
            assert_eq!(u["runId"], r["runId"], "{h}");
            let text = u["content"][0]["text"].as_str().unwrap();
            let mut parts = text.split(' ');
            let who = parts.next().unwrap().chars().next().unwrap();
            let i: usize = parts.nth(1).unwrap().parse().unwrap();
            assert!(text.ends_with(&format!("to {k} now")), "{text}");
            order.push((who, i));
        }
        for who in ['a', 'b'] {
            let seq: Vec<usize> = order
                .iter()
                .filter(|(w, _)| *w == who)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(
                seq,
                (0..N).collect::<Vec<_>>(),
                "session {k}, conn {who}: {order:?}"
            );
        }
    }
}

#[test]
fn session_key_spellings_share_one_session() {
    // PROTOCOL.md §10: the normalised key decides the owner, so every spelling of one session
    // reaches the same history, from either shard.
    let gw = Gateway::standard(None);
    let mut conns = operators_on_each_shard(&gw, &[READ, WRITE], 2);
    let (_, fin) =
        conns[0][0].run_agent("Agent:Main:WhatsApp:DM:+15550001", "spelled once", "sp-1");
    assert_eq!(fin["ok"], true, "{fin}");
    assert_eq!(
        fin["payload"]["sessionKey"],
        "agent:main:whatsapp:direct:+15550001"
    );
    for (s, spelling) in [
        (0, "agent:main:whatsapp:direct:+15550001"),
        (1, "whatsapp:dm:+15550001"),
        (1, "AGENT:main:whatsapp:direct:+15550001"),
    ] {
        let h = conns[s][0].request_ok("chat.history", json!({"sessionKey": spelling}));
        assert_eq!(h["sessionKey"], "agent:main:whatsapp:direct:+15550001");
        assert_eq!(
            h["messages"].as_array().unwrap().len(),
            2,
            "{spelling}: {h}"
        );
    }
    // Over-long keys are refused.
    let e = conns[0][0].request_err(
        "chat.history",
        json!({"sessionKey": format!("agent:main:{}", "k".repeat(600))}),
    );
    assert_eq!(e["code"], "INVALID_REQUEST");
}
