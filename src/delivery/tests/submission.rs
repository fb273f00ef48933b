//! Submissions: duplicates joined or replayed inside the dedup window, refusals when full.

use super::*;

#[test]
fn a_new_message_is_admitted_and_remembered_in_flight() {
    let mut d = Delivery::new(&cfg());
    let job = admit(&mut d, JobKind::Agent, "run-1", T0);
    assert_eq!(job.run_id, "run-1");
    assert_eq!(job.dedup_key, "agent:run-1");
    assert_eq!(job.accepted_at, T0);
    assert_eq!(job.reply.as_ref().map(|r| r.req_id.as_str()), Some("req-1"));
    assert!(job.watcher.is_some());
    assert_eq!((d.depth, d.stats.accepted), (1, 1));
    assert!(matches!(
        d.dedup.get("agent:run-1", T0),
        Some(Cached::InFlight { .. })
    ));
    assert!(d.pending.is_empty(), "the memory queue keeps no copies");
}

#[test]
fn a_duplicate_of_a_running_agent_call_joins_it_and_gets_its_final_answer() {
    let mut d = Delivery::new(&cfg());
    let mut job = admit(&mut d, JobKind::Agent, "run-1", T0);
    let k = key();
    let out = answered(d.submit(sub(&k, JobKind::Agent, "run-1", "req-2"), T0 + 5));
    assert_eq!(steps(&out), vec![Step::Deduped]);
    let r = replies(&out);
    assert_eq!(r.len(), 1);
    let ack = ok_json(&r[0].1);
    assert_eq!(
        (ack["status"].as_str(), ack["duplicate"].as_bool()),
        (Some("accepted"), Some(true))
    );
    assert_eq!((d.depth, d.stats.dedup_hits), (1, 1), "not admitted twice");
    let out = finish_ok(&mut d, &mut job, T0 + 10, T0 + 20);
    let finals: Vec<_> = replies(&out)
        .into_iter()
        .map(|(req, a)| match a {
            Answer::Final {
                payload,
                error: None,
            } => (req, payload.unwrap().to_value()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(finals.len(), 2, "the caller and the duplicate");
    assert_eq!(finals[0].0, "req-1");
    assert_eq!(finals[1].0, "req-2");
    assert_eq!(finals[0].1, finals[1].1);
    assert_eq!(finals[0].1["result"]["payloads"][0]["text"], "hello world");
    assert_eq!(finals[0].1["result"]["meta"]["durationMs"], 10);
}

#[test]
fn a_duplicate_after_completion_replays_the_answer() {
    let mut d = Delivery::new(&cfg());
    let mut job = admit(&mut d, JobKind::Agent, "run-1", T0);
    let first = finish_ok(&mut d, &mut job, T0, T0 + 3);
    let k = key();
    let out = answered(d.submit(sub(&k, JobKind::Agent, "run-1", "req-9"), T0 + 1000));
    let r = replies(&out);
    assert_eq!(r.len(), 2, "duplicate ack, then the final answer");
    assert_eq!(ok_json(&r[0].1)["duplicate"], true);
    assert_eq!(r[1].1, replies(&first)[0].1, "the same final payload");
    assert_eq!(d.depth, 0);
}

#[test]
fn a_duplicate_of_a_failed_run_replays_the_failure() {
    let mut d = Delivery::new(&cfg());
    let mut job = admit(&mut d, JobKind::Agent, "run-1", T0);
    fail_all(&mut d, &mut job, T0 + 1);
    let k = key();
    let out = answered(d.submit(sub(&k, JobKind::Agent, "run-1", "req-2"), T0 + 50));
    match &replies(&out)[1].1 {
        Answer::Final {
            error: Some(e),
            payload,
        } => {
            assert_eq!(e["details"]["code"], "DEAD_LETTERED");
            assert_eq!(e["retryable"], false);
            assert!(e["message"].as_str().unwrap().contains("boom 3"));
            assert_eq!(payload.as_ref().unwrap().to_value()["status"], "error");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_chat_duplicate_says_in_flight_then_replays_done_with_status_ok() {
    let mut d = Delivery::new(&cfg());
    let mut job = admit(&mut d, JobKind::Chat, "c-1", T0);
    let k = key();
    let out = answered(d.submit(sub(&k, JobKind::Chat, "c-1", "req-2"), T0 + 1));
    let a = ok_json(&replies(&out)[0].1);
    assert_eq!(
        (a["runId"].as_str(), a["status"].as_str()),
        (Some("c-1"), Some("in_flight"))
    );
    let out = finish_ok(&mut d, &mut job, T0, T0 + 2);
    assert!(
        replies(&out).is_empty(),
        "a chat run's answer is its events"
    );
    let out = answered(d.submit(sub(&k, JobKind::Chat, "c-1", "req-3"), T0 + 3));
    let r = replies(&out);
    assert_eq!(r.len(), 1);
    let a = ok_json(&r[0].1);
    assert_eq!(
        (a["status"].as_str(), a["duplicate"].as_bool()),
        (Some("ok"), Some(true))
    );
}

#[test]
fn a_send_is_done_at_admission_so_its_duplicate_gets_the_same_ack() {
    let mut d = Delivery::new(&cfg());
    let kind = JobKind::Send {
        channel: "log".into(),
        to: "bob".into(),
    };
    admit(&mut d, kind.clone(), "s-1", T0);
    let k = key();
    let out = answered(d.submit(sub(&k, kind, "s-1", "req-2"), T0 + 1));
    let a = ok_json(&replies(&out)[0].1);
    assert_eq!(a["messageId"], "s-1");
    assert_eq!(a["channel"], "log");
    assert_eq!(a["duplicate"], true);
    assert!(a.get("status").is_none(), "a send's answer has no status");
}

#[test]
fn the_dedup_window_ends_exactly_at_its_length() {
    let c = cfg();
    let window = c.deduplication.window.0 as i64;
    let mut d = Delivery::new(&c);
    let mut job = admit(&mut d, JobKind::Agent, "run-1", T0);
    finish_ok(&mut d, &mut job, T0, T0);
    let k = key();
    // One ms before the window closes: still a duplicate.
    let out = answered(d.submit(sub(&k, JobKind::Agent, "run-1", "r"), T0 + window - 1));
    assert_eq!(steps(&out), vec![Step::Deduped]);
    // At the window: a new message with the same key.
    let job = admit(&mut d, JobKind::Agent, "run-1", T0 + window);
    assert_eq!(job.accepted_at, T0 + window);
    assert_eq!(d.stats.accepted, 2);
}

#[test]
fn a_full_queue_refuses_with_queue_full_and_retry_after() {
    let c = cfg();
    let mut d = Delivery::new(&c);
    let k = key();
    let mut s = sub(&k, JobKind::Agent, "run-1", "req-1");
    s.load.queue_full = true;
    let out = answered(d.submit(s, T0));
    assert_eq!(steps(&out), vec![Step::Rejected]);
    match &replies(&out)[0].1 {
        Answer::Err(e) => {
            let w = e.wire().to_json();
            assert_eq!(w["code"], "UNAVAILABLE");
            assert_eq!(w["details"]["code"], "QUEUE_FULL");
            assert_eq!(w["retryAfterMs"], 1000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((d.depth, d.stats.rejected_full), (0, 1));
    // Nothing was remembered: the retry is admitted, not answered as a duplicate.
    admit(&mut d, JobKind::Agent, "run-1", T0 + 1000);
}

#[test]
fn a_full_lane_refuses_with_its_own_retry_after() {
    let c = cfg();
    let mut d = Delivery::new(&c);
    let k = key();
    let mut s = sub(&k, JobKind::Chat, "c-1", "req-1");
    s.load.lane = c.ordering.buffer_size;
    let out = answered(d.submit(s, T0));
    match &replies(&out)[0].1 {
        Answer::Err(e) => assert_eq!(
            *e,
            GatewayError::LaneFull {
                retry_after_ms: 500
            }
        ),
        other => panic!("{other:?}"),
    }
}
