//! Agent workers: compute hosts that run agent turns for the gateway.
//!
//! A worker connects as a node with `client.mode: "worker"` and `agents: [...]` in its connect
//! params (the agents it serves); it appears in the replicated node registry. An agent bound
//! to `kind: "worker"` (`agents.bindings.<id>.kind`) is dispatched to a live worker:
//!
//! 1. The session's owner shard S picks the least-loaded live worker of the agent (its own
//!    count of runs it handed out, round-robin on ties) and registers the run.
//! 2. The worker's shard W (maybe S) optionally tests it (`testOnBorrow`: `worker.ping` →
//!    `worker.pong` within `connectionTimeout`), then sends `worker.run.request`.
//! 3. The worker streams `worker.run.event {runId, delta}` and ends with
//!    `worker.run.result {runId, ok, text|error}`; W forwards both to S, which turns them into
//!    the run's `agent`/`chat` events and its outcome.
//! 4. A worker that disconnects, fails the ping, or errors fails the attempt; the queue's retry
//!    policy then sends the run to another worker.

use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use serde_json::{json, Value};

use super::worker_pool::{Assigned, RunHere};
use crate::addr::ConnRef;
use crate::agent::echo::Outcome;
use crate::clock::now_ms;
use crate::delivery::{Job, JobKind};
use crate::protocol::error::GatewayError;
use crate::protocol::params::required_str;
use crate::routing::watchers;
use crate::session::Session;
use crate::shard::GatewayShard;

/// Picks the least-loaded live worker serving `agent`.
fn pick(shard: &GatewayShard, agent: &str) -> Option<(String, ConnRef)> {
    let reg = shard.nodes().registry.borrow();
    let load = shard.workers().load.borrow();
    // The pool: at most `connections.pool.maxSize` workers of this agent (by id order).
    let max = shard.config().connections.pool.max_size.max(1);
    let mut cands: Vec<(usize, String, ConnRef)> = reg
        .values()
        .filter(|n| n.agents.iter().any(|a| a == agent || a == "*"))
        .take(max)
        .map(|n| {
            (
                load.get(&n.node_id).copied().unwrap_or(0),
                n.node_id.clone(),
                n.conn,
            )
        })
        .collect();
    if cands.is_empty() {
        return None;
    }
    cands.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let least = cands[0].0;
    let ties: Vec<_> = cands.into_iter().filter(|c| c.0 == least).collect();
    let i = shard.workers().rr.get();
    shard.workers().rr.set(i.wrapping_add(1));
    let (_, id, conn) = ties[i % ties.len()].clone();
    Some((id, conn))
}

/// Runs `job` on a worker; Ok(text) or the attempt's error.
pub async fn dispatch(
    shard: &Rc<GatewayShard>,
    session: &Rc<Session>,
    job: &Job,
) -> Result<Outcome, String> {
    let cfg = shard.config();
    let pool = &cfg.connections.pool;
    let agent = session.key.agent_id().to_string();
    // Wait up to connectionTimeout for a worker to be available.
    let deadline = std::time::Instant::now() + pool.connection_timeout.duration();
    let (worker, conn) = loop {
        if let Some(w) = pick(shard, &agent) {
            break w;
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "no live worker for agent {agent} within {} ms",
                pool.connection_timeout.0
            ));
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    };
    let (tx, rx) = oneshot::channel();
    shard.workers().runs.borrow_mut().insert(
        job.run_id.clone(),
        RunHere {
            watcher: job.watcher,
            kind: job.kind.clone(),
            session_key: job.session_key.clone(),
            agent_id: agent.clone(),
            text: String::new(),
            seq: 0,
            chat_seq: 0,
            done: Some(tx),
        },
    );
    *shard
        .workers()
        .load
        .borrow_mut()
        .entry(worker.clone())
        .or_insert(0) += 1;
    emit_agent(
        shard,
        &job.run_id,
        "lifecycle",
        json!({"phase": "start", "startedAt": now_ms(), "worker": worker}),
    );
    let request = json!({"runId": job.run_id, "agentId": agent, "sessionKey": job.session_key,
                         "message": job.message, "kind": job.kind.method(), "attempt": job.attempts});
    let (origin, run_id, test) = (shard.id(), job.run_id.clone(), pool.test_on_borrow);
    let ping_timeout = pool.connection_timeout.duration();
    shard.on_shard(conn.shard, move |w| {
        w.workers().assigned.borrow_mut().insert(run_id.clone(), Assigned { session_shard: origin, worker_conn: conn });
        let w = w.clone();
        glommio::spawn_local(async move {
            if test && !ping(&w, conn, ping_timeout).await {
                tracing::warn!(shard = %w.id(), run = %run_id, "worker failed the liveness check; closing it");
                if let Some(c) = w.conn(conn.id) {
                    c.close(1011, "worker failed liveness check");
                }
                finish_from_worker(&w, &run_id, Err("worker failed the liveness check".into()));
                return;
            }
            w.event_to(conn, "worker.run.request", &request, false);
        })
        .detach();
    });
    let r = rx
        .await
        .unwrap_or_else(|_| Err("worker run cancelled".into()));
    let run = shard.workers().runs.borrow_mut().remove(&job.run_id);
    if let Some(n) = shard.workers().load.borrow_mut().get_mut(&worker) {
        *n = n.saturating_sub(1);
    }
    match r {
        Ok(text) => {
            let text = if text.is_empty() {
                run.map(|r| r.text).unwrap_or_default()
            } else {
                text
            };
            emit_agent(
                shard,
                &job.run_id,
                "lifecycle",
                json!({"phase": "end", "endedAt": now_ms()}),
            );
            if job.kind == JobKind::Chat {
                let p = json!({"runId": job.run_id, "sessionKey": job.session_key, "seq": 1_000_000,
                               "state": "final", "message": chat_message(&text)});
                watchers::send(shard, &job.session_key, job.watcher, "chat", &p, false);
            }
            Ok(Outcome::Ok(text))
        }
        Err(e) => Err(e),
    }
}

fn chat_message(text: &str) -> Value {
    json!({"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": now_ms()})
}

/// Emits an `agent` event of a worker run to its watcher (on the session's shard).
fn emit_agent(shard: &GatewayShard, run_id: &str, stream: &str, data: Value) {
    let mut runs = shard.workers().runs.borrow_mut();
    let Some(r) = runs.get_mut(run_id) else {
        return;
    };
    r.seq += 1;
    let to = watchers::targets(shard, &r.session_key, r.watcher);
    if !to.is_empty() {
        let p = json!({"runId": run_id, "seq": r.seq, "stream": stream, "ts": now_ms(), "data": data,
                       "sessionKey": r.session_key, "agentId": r.agent_id});
        drop(runs);
        watchers::send_open(
            shard,
            &to,
            crate::protocol::frame::open_event("agent", &p),
            false,
        );
    }
}

async fn ping(w: &Rc<GatewayShard>, conn: ConnRef, timeout: Duration) -> bool {
    let id = uuid::Uuid::new_v4().to_string();
    let (tx, rx) = oneshot::channel();
    w.workers().pings.borrow_mut().insert(id.clone(), tx);
    w.event_to(conn, "worker.ping", &json!({"id": id}), false);
    let ok = glommio::timer::timeout(timeout, async {
        let _ = rx.await;
        Ok(())
    })
    .await
    .is_ok();
    w.workers().pings.borrow_mut().remove(&id);
    ok
}

/// On the worker's shard: forward a run's end to its session's shard.
fn finish_from_worker(w: &Rc<GatewayShard>, run_id: &str, r: Result<String, String>) {
    let Some(a) = w.workers().assigned.borrow_mut().remove(run_id) else {
        return;
    };
    let id = run_id.to_string();
    w.on_shard(a.session_shard, move |s| {
        let tx = s
            .workers()
            .runs
            .borrow_mut()
            .get_mut(&id)
            .and_then(|run| run.done.take());
        if let Some(tx) = tx {
            let _ = tx.send(r);
        }
    });
}

/// `worker.run.event {runId, stream?, delta}` from a worker on this shard.
pub fn run_event(w: &Rc<GatewayShard>, caller: ConnRef, p: &Value) -> Result<Value, GatewayError> {
    let run_id = required_str(p, "runId")?.to_string();
    let target = match w.workers().assigned.borrow().get(&run_id) {
        Some(a) if a.worker_conn == caller => a.session_shard,
        _ => return Ok(json!({"ok": true, "ignored": true})),
    };
    let delta = p
        .get("delta")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    w.on_shard(target, move |s| {
        let (chat, watcher, text, key) = {
            let mut runs = s.workers().runs.borrow_mut();
            let Some(r) = runs.get_mut(&run_id) else { return };
            if !r.text.is_empty() && !delta.is_empty() {
                r.text.push(' ');
            }
            r.text.push_str(&delta);
            r.chat_seq += 1;
            (r.kind == JobKind::Chat, r.watcher, r.text.clone(), r.session_key.clone())
        };
        emit_agent(s, &run_id, "assistant", json!({"text": text, "delta": delta}));
        if chat {
            let seq = s.workers().runs.borrow().get(&run_id).map(|r| r.chat_seq).unwrap_or(0);
            let p = json!({"runId": run_id, "sessionKey": key, "seq": seq, "state": "delta", "message": chat_message(&text)});
            watchers::send(s, &key, watcher, "chat", &p, true);
        }
    });
    Ok(json!({"ok": true}))
}

/// `worker.run.result {runId, ok, text?, error?}` from a worker on this shard.
pub fn run_result(w: &Rc<GatewayShard>, caller: ConnRef, p: &Value) -> Result<Value, GatewayError> {
    let run_id = required_str(p, "runId")?;
    let mine = w
        .workers()
        .assigned
        .borrow()
        .get(run_id)
        .is_some_and(|a| a.worker_conn == caller);
    if !mine {
        return Ok(json!({"ok": true, "ignored": true}));
    }
    let ok = p.get("ok").and_then(|v| v.as_bool()).unwrap_or(true);
    let r = if ok {
        Ok(p.get("text")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string())
    } else {
        Err(format!(
            "worker error: {}",
            p.pointer("/error/message")
                .and_then(|v| v.as_str())
                .or(p.get("error").and_then(|v| v.as_str()))
                .unwrap_or("unknown")
        ))
    };
    finish_from_worker(w, run_id, r);
    Ok(json!({"ok": true}))
}

/// `worker.pong {id}`
pub fn pong(w: &GatewayShard, p: &Value) -> Result<Value, GatewayError> {
    let id = required_str(p, "id")?;
    if let Some(tx) = w.workers().pings.borrow_mut().remove(id) {
        let _ = tx.send(());
    }
    Ok(json!({"ok": true}))
}

/// The worker on `conn` disconnected: fail its runs (the retry policy moves them).
pub fn worker_down(w: &Rc<GatewayShard>, conn: ConnRef) {
    let runs: Vec<String> = w
        .workers()
        .assigned
        .borrow()
        .iter()
        .filter(|(_, a)| a.worker_conn == conn)
        .map(|(k, _)| k.clone())
        .collect();
    for r in runs {
        finish_from_worker(w, &r, Err("worker disconnected".into()));
    }
}

/// `workers.status`-style rows: who serves which agents, with this shard's load view.
pub fn status(shard: &GatewayShard) -> Value {
    let min = shard.config().connections.pool.min_size;
    let load = shard.workers().load.borrow();
    let rows: Vec<Value> = shard
        .nodes()
        .registry
        .borrow()
        .values()
        .filter(|n| !n.agents.is_empty())
        .map(|n| {
            json!({"workerId": n.node_id, "agents": n.agents, "shard": n.conn.shard.0,
                        "activeRuns": load.get(&n.node_id).copied().unwrap_or(0)})
        })
        .collect();
    json!({"count": rows.len(), "workers": rows, "minSize": min, "belowMinSize": rows.len() < min})
}
