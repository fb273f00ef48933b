//! A message after admission: attempts and backoff, completion, timeouts, dead letters and
//! redrive, and what a durable backend is told.

use super::*;

#[test]
fn failed_attempts_retry_with_jittered_backoff_then_give_up() {
    let mut d = Delivery::new(&cfg());
    let mut job = admit(&mut d, JobKind::Agent, "run-1", T0);
    let mut delays = Vec::new();
    for (attempt, r) in [(1, 0.0), (2, 1.0), (3, 0.5)] {
        job.attempts = attempt;
        let out = d.attempt_failed(
            &mut job,
            format!("e{attempt}"),
            false,
            r,
            T0 + attempt as i64,
        );
        delays.push(effects::retry_delay(&out));
    }
    // Default policy: 3 attempts, 1 s doubling, jitter in the upper half of each step.
    assert_eq!(delays, vec![Some(500), Some(2000), None]);
    assert_eq!(job.errors.len(), 3);
    assert_eq!(job.errors[2]["error"], "e3");
    assert_eq!(job.errors[2]["at"], T0 + 3);
    assert_eq!((d.stats.failed_attempts, d.stats.retries), (3, 2));
}

#[test]
fn every_jitter_draw_stays_within_its_step() {
    let mut d = Delivery::new(&cfg());
    let mut job = admit(&mut d, JobKind::Agent, "run-1", T0);
    for i in 0..=20 {
        job.attempts = 2;
        let out = d.attempt_failed(&mut job, "e".into(), false, i as f64 / 20.0, T0);
        let delay = effects::retry_delay(&out).unwrap();
        assert!((1000..=2000).contains(&delay), "{delay}");
    }
}

#[test]
fn an_aborted_run_is_not_retried() {
    let mut d = Delivery::new(&cfg());
    let mut job = admit(&mut d, JobKind::Chat, "c-1", T0);
    job.attempts = 1;
    let out = d.attempt_failed(&mut job, "e".into(), true, 0.5, T0);
    assert_eq!(effects::retry_delay(&out), None);
    assert_eq!(steps(&out), vec![Step::AttemptFailed]);
}

#[test]
fn out_of_attempts_becomes_a_dead_letter_with_its_history() {
    let mut d = Delivery::new(&cfg());
    let mut job = admit(&mut d, JobKind::Agent, "run-1", T0);
    let out = fail_all(&mut d, &mut job, T0 + 7);
    assert!(steps(&out).contains(&Step::DeadLettered));
    assert_eq!((d.depth, d.stats.dead_lettered, d.dead.len()), (0, 1, 1));
    let dl = d.dead.iter().next().unwrap();
    let row = dl.row(0);
    assert_eq!(row["messageId"], "run-1");
    assert_eq!(row["attempts"], 3);
    assert_eq!(row["errors"].as_array().unwrap().len(), 3);
    assert_eq!(row["deadLetteredAt"], T0 + 7);
    match out.iter().find_map(|e| match e {
        Effect::RunStatus { status, error, .. } => Some((*status, error.clone())),
        _ => None,
    }) {
        Some(("error", Some(msg))) => assert!(msg.contains("after 3 attempts")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_dead_letters_a_failure_is_only_answered() {
    let mut c = cfg();
    c.queue.dead_letter.enabled = false;
    let mut d = Delivery::new(&c);
    let mut job = admit(&mut d, JobKind::Agent, "run-1", T0);
    let out = fail_all(&mut d, &mut job, T0);
    assert!(steps(&out).contains(&Step::Failed));
    assert!(d.dead.is_empty());
    assert!(matches!(
        &replies(&out)[0].1,
        Answer::Final { error: Some(_), .. }
    ));
}

#[test]
fn a_chat_failure_tells_its_watcher() {
    let mut d = Delivery::new(&cfg());
    let mut job = admit(&mut d, JobKind::Chat, "c-1", T0);
    let out = fail_all(&mut d, &mut job, T0);
    let ev: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Event { name, payload, .. } => Some((*name, payload["state"].clone())),
            _ => None,
        })
        .collect();
    assert_eq!(ev, vec![("chat", Value::from("error"))]);
}

#[test]
fn redrive_takes_a_dead_letter_back_to_a_fresh_start() {
    let mut d = Delivery::new(&cfg());
    let mut job = admit(&mut d, JobKind::Agent, "run-1", T0);
    fail_all(&mut d, &mut job, T0);
    assert_eq!(d.redrive(Some("no-such-id"), T0).0, 0);
    let (n, out) = d.redrive(Some("run-1"), T0 + 10);
    assert_eq!(n, 1);
    assert_eq!(steps(&out), vec![Step::Redriven]);
    let job = match out.into_iter().last() {
        Some(Effect::Enqueue(job)) => *job,
        other => panic!("{other:?}"),
    };
    assert_eq!((job.attempts, job.errors.len()), (0, 0));
    assert!(job.reply.is_none() && job.watcher.is_none());
    assert!(d.dead.is_empty());
    assert_eq!((d.depth, d.stats.redriven), (1, 1));
    assert!(matches!(
        d.dedup.get("agent:run-1", T0 + 10),
        Some(Cached::InFlight { .. })
    ));
}

#[test]
fn redrive_by_dead_letter_id_or_all() {
    let mut d = Delivery::new(&cfg());
    for id in ["a", "b", "c"] {
        let mut job = admit(&mut d, JobKind::Chat, id, T0);
        fail_all(&mut d, &mut job, T0);
    }
    let dl = d.dead.iter().nth(1).unwrap().id.clone();
    assert_eq!(d.redrive(Some(&dl), T0).0, 1);
    assert_eq!(d.dead.len(), 2);
    assert_eq!(d.redrive(None, T0).0, 2);
    assert!(d.dead.is_empty());
}

#[test]
fn dead_letters_are_purged_at_their_max_age() {
    let c = cfg();
    let max_age = c.queue.dead_letter.max_age.0 as i64;
    let mut d = Delivery::new(&c);
    let mut job = admit(&mut d, JobKind::Agent, "run-1", T0);
    fail_all(&mut d, &mut job, T0);
    assert_eq!(d.purge(T0 + max_age - 1).0, 0);
    let (n, out) = d.purge(T0 + max_age);
    assert_eq!((n, d.dead.len(), d.stats.purged), (1, 0, 1));
    assert!(out.is_empty(), "nothing to write without a durable backend");
}

#[test]
fn a_timed_out_run_ends_its_events_and_answers_timeout() {
    let mut d = Delivery::new(&cfg());
    let mut job = admit(&mut d, JobKind::Chat, "c-1", T0);
    job.attempts = 1;
    let info = RunInfo {
        agent_id: "main",
        started: T0 + 1,
    };
    let out = d.finish(&mut job, Ran::TimedOut, info, T0 + 60_001);
    assert_eq!(steps(&out), vec![Step::TimedOut]);
    let ev: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Event { name, payload, .. } => Some((*name, payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].0, "agent");
    assert_eq!(ev[0].1["data"]["stopReason"], "timeout");
    assert_eq!(ev[0].1["data"]["endedAt"], T0 + 60_001);
    assert_eq!(
        (ev[1].0, ev[1].1["state"].as_str()),
        ("chat", Some("aborted"))
    );
    assert_eq!(d.stats.completed, 1);
    match d.dedup.get("chat.send:c-1", T0 + 60_001) {
        Some(Cached::Done {
            payload: Some(p), ..
        }) => {
            assert_eq!(p.to_value()["stopReason"], "timeout")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_durable_core_writes_each_outcome_and_keeps_pending_copies() {
    let mut d = Delivery::new(&cfg());
    d.durable = true;
    let mut ok = admit(&mut d, JobKind::Agent, "ok-1", T0);
    let mut bad = admit(&mut d, JobKind::Agent, "bad-1", T0);
    assert_eq!(d.pending.len(), 2);
    let journaled = |out: &Effects| -> Vec<Record> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Journal(r) => Some((**r).clone()),
                _ => None,
            })
            .collect()
    };
    let out = finish_ok(&mut d, &mut ok, T0, T0 + 1);
    assert!(matches!(&journaled(&out)[..], [Record::Done { id, .. }] if id == "ok-1"));
    let out = fail_all(&mut d, &mut bad, T0 + 2);
    assert!(
        matches!(&journaled(&out)[..], [Record::Dead { id, attempts: 3, .. }] if id == "bad-1")
    );
    assert!(d.pending.is_empty());
    let (_, out) = d.purge(i64::MAX);
    assert!(matches!(&journaled(&out)[..], [Record::Purge { id }] if id == "bad-1"));
}

#[test]
fn a_failed_admission_write_is_undone_and_answered_to_duplicates_too() {
    let mut d = Delivery::new(&cfg());
    d.durable = true;
    let job = admit(&mut d, JobKind::Agent, "run-1", T0);
    let out = d.journal_failed(&job, reply("req-1"), "disk full", T0);
    assert!(
        matches!(&replies(&out)[0].1, Answer::Err(GatewayError::AgentFailed(m)) if m.contains("disk full"))
    );
    assert_eq!((d.depth, d.pending.len()), (0, 0));
    let k = key();
    let out = answered(d.submit(sub(&k, JobKind::Agent, "run-1", "req-2"), T0 + 1));
    match &replies(&out)[1].1 {
        Answer::Final {
            payload: None,
            error: Some(e),
        } => assert!(e["message"]
            .as_str()
            .unwrap()
            .contains("journal write failed")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_snapshot_restores_into_a_fresh_core() {
    let c = cfg();
    let mut d = Delivery::new(&c);
    d.durable = true;
    let _pending = admit(&mut d, JobKind::Chat, "p-1", T0);
    let mut done = admit(&mut d, JobKind::Agent, "d-1", T0);
    finish_ok(&mut d, &mut done, T0, T0 + 1);
    let mut dead = admit(&mut d, JobKind::Agent, "x-1", T0);
    fail_all(&mut d, &mut dead, T0 + 2);
    let mut fold = record::Fold::default();
    for r in d.snapshot(T0 + 3) {
        fold.apply(r);
    }
    let mut e = Delivery::new(&c);
    let r = e.restore(&fold, T0 + 4);
    assert_eq!(
        r.pending
            .iter()
            .map(|j| j.run_id.as_str())
            .collect::<Vec<_>>(),
        vec!["p-1"]
    );
    assert_eq!((r.done, r.dead), (1, 1));
    assert!(matches!(
        e.dedup.get("agent:d-1", T0 + 4),
        Some(Cached::Done { error: None, .. })
    ));
    assert_eq!(e.dead.iter().next().unwrap().job.attempts, 3);
    // Past the window, a finished answer is not restored.
    let mut f = Delivery::new(&c);
    let late = T0 + 1 + c.deduplication.window.0 as i64;
    assert_eq!(f.restore(&fold, late).done, 0);
}

#[test]
fn a_readmitted_job_runs_again_without_an_answer() {
    let mut d = Delivery::new(&cfg());
    let job = admit(&mut d, JobKind::Agent, "run-1", T0);
    let mut e = Delivery::new(&cfg());
    let out = e.readmit(job.detached(), T0 + 5);
    assert_eq!(steps(&out), vec![Step::Replayed]);
    assert!(matches!(out.last(), Some(Effect::Enqueue(j)) if j.reply.is_none()));
    assert_eq!(e.depth, 1);
    assert!(matches!(
        e.dedup.get("agent:run-1", T0 + 5),
        Some(Cached::InFlight { .. })
    ));
}
