//! The built-in `echo` agent: answers a message with the message itself, streamed word by
//! word as `agent` and `chat` events, like a model would stream tokens. An optional delay per
//! word (`agents.echo.deltaDelayMs`) makes runs last long enough to test ordering and aborts.

use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;

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

/// An `agent` event payload; `data` depends on the stream.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentEvent<'a> {
    run_id: &'a str,
    seq: u64,
    stream: &'static str,
    ts: i64,
    data: Data<'a>,
    session_key: &'a str,
    agent_id: &'a str,
}

/// `data` of an `agent` event.
#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Lifecycle(Lifecycle),
    Assistant(Assistant<'a>),
}

/// `data` of the `lifecycle` stream.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Lifecycle {
    phase: &'static str,
    started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<i64>,
}

/// `data` of the `assistant` stream: the text so far and this delta.
#[derive(Serialize)]
struct Assistant<'a> {
    text: &'a str,
    delta: &'a str,
}

/// A `chat` event payload.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatEvent<'a> {
    run_id: &'a str,
    session_key: &'a str,
    seq: u64,
    state: &'static str,
    message: ChatMessage<'a>,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: [Content<'a>; 1],
    timestamp: i64,
}

#[derive(Serialize)]
struct Content<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

fn chat_message(text: &str, ts: i64) -> ChatMessage<'_> {
    ChatMessage {
        role: "assistant",
        content: [Content { kind: "text", text }],
        timestamp: ts,
    }
}

/// Runs `job` on `session`, streaming events to the job's watcher.
pub async fn run(
    shard: &Rc<GatewayShard>,
    session: &Rc<Session>,
    job: &Job,
    ctl: &Rc<RunCtl>,
) -> Outcome {
    let key = session.key.as_str();
    let delay = shard.config().agents.echo.delta_delay_ms;
    let mut seq = 0u64;
    let mut chat_seq = 0u64;
    // The run's `agent` events carry their own `seq` (per run, from 1).
    let mut agent_event = |stream: &'static str, data: Data<'_>| {
        seq += 1;
        if let Some(w) = job.watcher {
            let p = AgentEvent {
                run_id: &job.run_id,
                seq,
                stream,
                ts: now_ms(),
                data,
                session_key: key,
                agent_id: session.key.agent_id(),
            };
            shard.event_to(w, "agent", &p, false);
        }
    };
    let started = now_ms();
    agent_event(
        "lifecycle",
        Data::Lifecycle(Lifecycle {
            phase: "start",
            started_at: started,
            ended_at: None,
        }),
    );
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
        agent_event(
            "assistant",
            Data::Assistant(Assistant {
                text: &text,
                delta: word,
            }),
        );
        if job.kind == JobKind::Chat {
            chat_seq += 1;
            if let Some(w) = job.watcher {
                let p = ChatEvent {
                    run_id: &job.run_id,
                    session_key: key,
                    seq: chat_seq,
                    state: "delta",
                    message: chat_message(&text, now_ms()),
                };
                shard.event_to(w, "chat", &p, true);
            }
        }
    }
    let ended = now_ms();
    agent_event(
        "lifecycle",
        Data::Lifecycle(Lifecycle {
            phase: if aborted { "aborted" } else { "end" },
            started_at: started,
            ended_at: Some(ended),
        }),
    );
    if job.kind == JobKind::Chat {
        chat_seq += 1;
        if let Some(w) = job.watcher {
            let p = ChatEvent {
                run_id: &job.run_id,
                session_key: key,
                seq: chat_seq,
                state: if aborted { "aborted" } else { "final" },
                message: chat_message(&text, ended),
            };
            shard.event_to(w, "chat", &p, false);
        }
    }
    if aborted {
        Outcome::Aborted(text)
    } else {
        Outcome::Ok(text)
    }
}
