//! The built-in `echo` agent: answers a message with the message itself, streamed word by
//! word as `agent` and `chat` events, like a model would stream tokens. An optional delay per
//! word (`agents.echo.deltaDelayMs`) makes runs last long enough to test ordering and aborts.

use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::queue::{Job, JobKind};
use crate::session::{RunCtl, Session};
use crate::shard::{now_ms, GatewayShard};

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Completed with this text.
    Ok(String),
    /// Aborted by `chat.abort`; the text so far.
    Aborted(String),
    /// Stopped by `agents.runTimeoutMs`.
    TimedOut,
}

fn chat_message(text: &str, ts: i64) -> Value {
    json!({"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": ts})
}

/// Runs `job` on `session`, streaming events to the job's watcher.
pub async fn run(
    shard: &Rc<GatewayShard>,
    session: &Rc<Session>,
    job: &Job,
    ctl: &Rc<RunCtl>,
) -> Outcome {
    let key = session.key.as_str().to_string();
    let delay = shard.config().agents.echo.delta_delay_ms;
    let mut seq = 0u64;
    let mut chat_seq = 0u64;
    let mut agent_event = |stream: &str, data: Value| {
        seq += 1;
        let p = json!({"runId": job.run_id, "seq": seq, "stream": stream, "ts": now_ms(),
                       "data": data, "sessionKey": key, "agentId": session.key.agent_id()});
        if let Some(w) = job.watcher {
            shard.event_to(w, "agent", &p, false);
        }
    };
    let started = now_ms();
    agent_event("lifecycle", json!({"phase": "start", "startedAt": started}));
    let mut text = String::new();
    let mut aborted = false;
    for word in job.message.split_whitespace() {
        if delay > 0 {
            glommio::timer::sleep(Duration::from_millis(delay)).await;
        }
        if ctl.aborted.get() {
            aborted = true;
            break;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(word);
        agent_event("assistant", json!({"text": text, "delta": word}));
        if job.kind == JobKind::Chat {
            chat_seq += 1;
            let p = json!({"runId": job.run_id, "sessionKey": session.key.as_str(), "seq": chat_seq,
                           "state": "delta", "message": chat_message(&text, now_ms())});
            if let Some(w) = job.watcher {
                shard.event_to(w, "chat", &p, true);
            }
        }
    }
    let ended = now_ms();
    agent_event(
        "lifecycle",
        json!({"phase": if aborted { "aborted" } else { "end" }, "startedAt": started, "endedAt": ended}),
    );
    if job.kind == JobKind::Chat {
        chat_seq += 1;
        let state = if aborted { "aborted" } else { "final" };
        let p = json!({"runId": job.run_id, "sessionKey": session.key.as_str(), "seq": chat_seq,
                       "state": state, "message": chat_message(&text, ended)});
        if let Some(w) = job.watcher {
            shard.event_to(w, "chat", &p, false);
        }
    }
    if aborted {
        Outcome::Aborted(text)
    } else {
        Outcome::Ok(text)
    }
}
