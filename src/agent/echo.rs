//! The built-in `echo` agent: answers a message with the message itself, streamed word by
//! word as `agent` and `chat` events, like a model would stream tokens. An optional delay per
//! word (`agents.echo.deltaDelayMs`) makes runs last long enough to test ordering and aborts.

use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::now_ms;
use crate::delivery::{Job, JobKind};
use crate::protocol::frame;
use crate::routing::watchers;
use crate::session::{RunCtl, Session};
use crate::shard::GatewayShard;

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

/// The parts of a run's event payloads that every event repeats, escaped once per run (one
/// buffer): an `agent` event's `{"runId":…,"seq":` and `,"sessionKey":…,"agentId":…}`, and a
/// `chat` delta's `{"runId":…,"sessionKey":…,"seq":`.
struct RunJson {
    text: String,
    agent_head: usize,
    agent_tail: usize,
}

impl RunJson {
    fn new(run_id: &str, key: &str, agent_id: &str) -> RunJson {
        let mut s = String::with_capacity(96 + 2 * run_id.len() + 2 * key.len() + agent_id.len());
        s.push_str(r#"{"runId":"#);
        frame::push_json_str(&mut s, run_id);
        s.push_str(r#","seq":"#);
        let agent_head = s.len();
        s.push_str(r#"},"sessionKey":"#);
        frame::push_json_str(&mut s, key);
        s.push_str(r#","agentId":"#);
        frame::push_json_str(&mut s, agent_id);
        s.push('}');
        let agent_tail = s.len();
        s.push_str(r#"{"runId":"#);
        frame::push_json_str(&mut s, run_id);
        s.push_str(r#","sessionKey":"#);
        frame::push_json_str(&mut s, key);
        s.push_str(r#","seq":"#);
        RunJson {
            text: s,
            agent_head,
            agent_tail,
        }
    }
}

/// An `agent` event payload, `{"runId","seq","stream","ts","data":{…},"sessionKey","agentId"}`,
/// written by hand (literal keys, the run's own strings escaped once: [`RunJson`]); `data`
/// writes the members of `data`. The two frames of every streamed word are most of what a
/// run sends. `stream` is one of ours, a name that needs no escaping.
fn agent_event(
    s: &mut String,
    run: &RunJson,
    seq: u64,
    stream: &'static str,
    ts: i64,
    data: impl FnOnce(&mut String),
) {
    s.push_str(&run.text[..run.agent_head]);
    frame::push_int(s, seq);
    s.push_str(r#","stream":""#);
    s.push_str(stream);
    s.push_str(r#"","ts":"#);
    frame::push_int(s, ts);
    s.push_str(r#","data":{"#);
    data(s);
    s.push_str(&run.text[run.agent_head..run.agent_tail]);
}

/// The `assistant` stream: `data` is `{"text","delta"}`. `text_json` is the text so far,
/// already escaped ([`frame::push_escaped`], a word at a time as it grew).
fn assistant_event(s: &mut String, run: &RunJson, seq: u64, ts: i64, text_json: &str, delta: &str) {
    agent_event(s, run, seq, "assistant", ts, |s| {
        s.push_str(r#""text":""#);
        s.push_str(text_json);
        s.push_str(r#"","delta":"#);
        frame::push_json_str(s, delta);
    });
}

/// The `lifecycle` stream, a run's start or end: `data` is `{"phase","startedAt","endedAt"?}`.
fn lifecycle_event(s: &mut String, run: &RunJson, seq: u64, ts: i64, data: &Lifecycle) {
    agent_event(s, run, seq, "lifecycle", ts, |s| {
        // Phases are ours too (start, end, aborted): no escaping.
        s.push_str(r#""phase":""#);
        s.push_str(data.phase);
        s.push_str(r#"","startedAt":"#);
        frame::push_int(s, data.started_at);
        if let Some(e) = data.ended_at {
            s.push_str(r#","endedAt":"#);
            frame::push_int(s, e);
        }
    });
}

/// A `chat` delta, written by hand: the object [`ChatEvent`] serializes with `state: "delta"`.
/// `text_json` is escaped already, as for [`assistant_event`].
fn chat_delta(s: &mut String, run: &RunJson, seq: u64, text_json: &str, ts: i64) {
    s.push_str(&run.text[run.agent_tail..]);
    frame::push_int(s, seq);
    s.push_str(
        r#","state":"delta","message":{"role":"assistant","content":[{"type":"text","text":""#,
    );
    s.push_str(text_json);
    s.push_str(r#""}],"timestamp":"#);
    frame::push_int(s, ts);
    s.push_str("}}");
}

/// `data` of the `lifecycle` stream (its JSON: [`lifecycle_event`]; the derive is the shape
/// the hand-written form is tested against).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Lifecycle {
    phase: &'static str,
    started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<i64>,
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

/// Runs `job` on `session`, streaming events to the job's watcher. `started` (ms) is when the
/// attempt began (the caller has just read the clock).
pub async fn run(
    shard: &Rc<GatewayShard>,
    session: &Rc<Session>,
    job: &Job,
    ctl: &Rc<RunCtl>,
    started: i64,
) -> Outcome {
    let key = session.key.as_str();
    let agent_id = session.key.agent_id();
    let delay = shard.config().agents.echo.delta_delay_ms;
    // The run's `agent` events carry their own `seq` (per run, from 1); `chat` events too.
    let mut seq = 0u64;
    let mut chat_seq = 0u64;
    // Room for an event's fixed part (keys, numbers, the frame around it) and its strings;
    // the streamed text is added per event.
    let run = RunJson::new(&job.run_id, key, agent_id);
    let room = 192 + run.text.len();
    let targets = watchers::RunTargets::default();
    // `ts` of a lifecycle event is the time it reports (its start or its end).
    let lifecycle = |seq: u64, ts: i64, data: Lifecycle| {
        if targets.any(shard, key, job.watcher) {
            let ev =
                frame::open_event_with(room, "agent", |s| lifecycle_event(s, &run, seq, ts, &data));
            targets.send_open(shard, key, job.watcher, ev, false);
        }
    };
    seq += 1;
    lifecycle(
        seq,
        started,
        Lifecycle {
            phase: "start",
            started_at: started,
            ended_at: None,
        },
    );
    // Sized for the whole answer up front: grown word by word they would reallocate (and
    // copy) several times per streamed run.
    let mut text = String::with_capacity(job.message.len());
    // The same text escaped for JSON, grown a word at a time: every event repeats it whole.
    let mut text_json = String::with_capacity(job.message.len() + 16);
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
            text_json.push(' ');
        }
        text.push_str(word);
        frame::push_escaped(&mut text_json, word);
        // The two frames per word are most of what a streaming run sends: written by hand.
        seq += 1;
        let chat = job.kind == JobKind::Chat;
        chat_seq += u64::from(chat);
        if targets.any(shard, key, job.watcher) {
            let ts = now_ms();
            let room = room + text_json.len() + word.len();
            let ev = frame::open_event_with(room, "agent", |s| {
                assistant_event(s, &run, seq, ts, &text_json, word)
            });
            targets.send_open(shard, key, job.watcher, ev, false);
            if chat {
                let ev = frame::open_event_with(room, "chat", |s| {
                    chat_delta(s, &run, chat_seq, &text_json, ts)
                });
                targets.send_open(shard, key, job.watcher, ev, true);
            }
        }
    }
    let ended = now_ms();
    seq += 1;
    lifecycle(
        seq,
        ended,
        Lifecycle {
            phase: if aborted { "aborted" } else { "end" },
            started_at: started,
            ended_at: Some(ended),
        },
    );
    if job.kind == JobKind::Chat {
        chat_seq += 1;
        let p = ChatEvent {
            run_id: &job.run_id,
            session_key: key,
            seq: chat_seq,
            state: if aborted { "aborted" } else { "final" },
            message: chat_message(&text, ended),
        };
        if targets.any(shard, key, job.watcher) {
            let ev = frame::open_event("chat", &p);
            targets.send_open(shard, key, job.watcher, ev, false);
        }
    }
    if aborted {
        Outcome::Aborted(text)
    } else {
        Outcome::Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// An `agent` event payload of the `lifecycle` stream, as serde would write it.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct AgentEvent<'a> {
        run_id: &'a str,
        seq: u64,
        stream: &'static str,
        ts: i64,
        data: Lifecycle,
        session_key: &'a str,
        agent_id: &'a str,
    }

    fn parsed(write: impl FnOnce(&mut String)) -> Value {
        let mut s = String::new();
        write(&mut s);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("invalid JSON {s}: {e}"))
    }

    #[test]
    fn hand_written_events_match_their_serde_shape() {
        // Text a model could stream: quotes, backslashes, control characters, non-ASCII.
        let text = "say \"hi\"\\ \u{1}\ttab — naïve 🎉";
        // As a run streams it: escaped a word at a time.
        let mut text_json = String::new();
        for (i, word) in text.split(' ').enumerate() {
            if i > 0 {
                text_json.push(' ');
            }
            frame::push_escaped(&mut text_json, word);
        }
        let a = parsed(|s| {
            let run = RunJson::new("r-1", "agent:main:k", "main");
            assistant_event(s, &run, 3, 1700, &text_json, "🎉")
        });
        assert_eq!(
            a,
            json!({"runId": "r-1", "seq": 3, "stream": "assistant", "ts": 1700,
                   "data": {"text": text, "delta": "🎉"}, "sessionKey": "agent:main:k", "agentId": "main"})
        );
        for ended_at in [None, Some(1800)] {
            let data = Lifecycle {
                phase: "end",
                started_at: 1700,
                ended_at,
            };
            let run = RunJson::new("r-\"1", text, "main");
            let l = parsed(|s| lifecycle_event(s, &run, 4, 1800, &data));
            let via_serde = serde_json::to_value(AgentEvent {
                run_id: "r-\"1",
                seq: 4,
                stream: "lifecycle",
                ts: 1800,
                data,
                session_key: text,
                agent_id: "main",
            })
            .unwrap();
            assert_eq!(l, via_serde);
        }
        let run = RunJson::new("r-1", "agent:main:k", "main");
        let c = parsed(|s| chat_delta(s, &run, 2, &text_json, 1700));
        let via_serde = serde_json::to_value(ChatEvent {
            run_id: "r-1",
            session_key: "agent:main:k",
            seq: 2,
            state: "delta",
            message: chat_message(text, 1700),
        })
        .unwrap();
        assert_eq!(c, via_serde);
    }
}
