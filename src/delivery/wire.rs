//! The wire JSON of delivery's answers: a message's acknowledgement (`accepted`, `started`,
//! a `send`'s answer) and a completed run's final payload. Every request sends one of each,
//! so both are written by hand; the tests check them against their derived serde shape (same
//! keys, same order, same escaping).

use serde::Serialize;

use super::job::JobKind;
use crate::protocol::frame::{self, JsonText};
use crate::protocol::SessionKey;

/// The final answer of a completed run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FinalOk<'a> {
    run_id: &'a str,
    status: &'static str,
    summary: &'static str,
    session_key: &'a str,
    result: RunResult<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RunResult<'a> {
    payloads: [TextPart<'a>; 1],
    meta: RunMeta<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TextPart<'a> {
    text: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunMeta<'a> {
    duration_ms: i64,
    attempts: u32,
    agent_meta: AgentMeta<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AgentMeta<'a> {
    agent_id: &'a str,
    provider: &'static str,
    model: &'static str,
}

/// The final payload of a run that completed with `text`.
pub(crate) fn final_ok(
    run_id: &str,
    session_key: &str,
    agent_id: &str,
    text: &str,
    duration_ms: i64,
    attempts: u32,
) -> JsonText {
    FinalOk {
        run_id,
        status: "ok",
        summary: "completed",
        session_key,
        result: RunResult {
            payloads: [TextPart { text }],
            meta: RunMeta {
                duration_ms,
                attempts,
                agent_meta: AgentMeta {
                    agent_id,
                    provider: "shardgate",
                    model: "echo",
                },
            },
        },
    }
    .to_json()
}

impl FinalOk<'_> {
    /// The payload, written by hand (every completed run sends one; `tests` checks it against
    /// the derived shape).
    pub(crate) fn to_json(&self) -> JsonText {
        JsonText::with(|s| {
            s.push_str(r#"{"runId":"#);
            frame::push_json_str(s, self.run_id);
            s.push_str(r#","status":"#);
            frame::push_json_const(s, self.status);
            s.push_str(r#","summary":"#);
            frame::push_json_const(s, self.summary);
            s.push_str(r#","sessionKey":"#);
            frame::push_json_str(s, self.session_key);
            s.push_str(r#","result":{"payloads":[{"text":"#);
            frame::push_json_str(s, self.result.payloads[0].text);
            let meta = &self.result.meta;
            s.push_str(r#"}],"meta":{"durationMs":"#);
            frame::push_int(s, meta.duration_ms);
            s.push_str(r#","attempts":"#);
            frame::push_int(s, meta.attempts);
            s.push_str(r#","agentMeta":{"agentId":"#);
            frame::push_json_str(s, meta.agent_meta.agent_id);
            s.push_str(r#","provider":"#);
            frame::push_json_const(s, meta.agent_meta.provider);
            s.push_str(r#","model":"#);
            frame::push_json_const(s, meta.agent_meta.model);
            s.push_str("}}}}");
        })
    }
}

/// The acknowledgement of an admitted message: `accepted` (agent), `started` (chat), or a
/// `send`'s answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ack<'a> {
    run_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) duplicate: bool,
}

impl Ack<'_> {
    /// Written by hand, fields in the derived order (`tests` checks it against the derive).
    pub(crate) fn write_json(&self, s: &mut String) {
        let member = |s: &mut String, key: &str, v: Option<&str>| {
            if let Some(v) = v {
                s.push_str(key);
                frame::push_json_str(s, v);
            }
        };
        s.push_str(r#"{"runId":"#);
        frame::push_json_str(s, self.run_id);
        member(s, r#","sessionKey":"#, self.session_key);
        member(s, r#","agentId":"#, self.agent_id);
        if let Some(status) = self.status {
            s.push_str(r#","status":"#);
            frame::push_json_const(s, status);
        }
        if let Some(at) = self.accepted_at {
            s.push_str(r#","acceptedAt":"#);
            frame::push_int(s, at);
        }
        member(s, r#","messageId":"#, self.message_id);
        member(s, r#","channel":"#, self.channel);
        if self.duplicate {
            s.push_str(r#","duplicate":true"#);
        }
        s.push('}');
    }
}

pub(crate) fn ack_for<'a>(
    kind: &'a JobKind,
    idem: &'a str,
    key: &'a SessionKey,
    now: i64,
) -> Ack<'a> {
    let ack = Ack {
        run_id: idem,
        session_key: None,
        agent_id: None,
        status: None,
        accepted_at: None,
        message_id: None,
        channel: None,
        duplicate: false,
    };
    match kind {
        // OpenClaw's `accepted` names the session the run went to.
        JobKind::Agent => Ack {
            session_key: Some(key.as_str()),
            agent_id: Some(key.agent_id()),
            status: Some("accepted"),
            accepted_at: Some(now),
            ..ack
        },
        JobKind::Chat => Ack {
            status: Some("started"),
            ..ack
        },
        JobKind::Send { channel, .. } => Ack {
            message_id: Some(idem),
            channel: Some(channel),
            ..ack
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Text a model or a client could send: quotes, backslashes, controls, non-ASCII.
    const AWKWARD: &str = "say \"hi\"\\ \u{1}\ttab \u{2014} na\u{ef}ve \u{1f389}";

    #[test]
    fn hand_written_final_matches_its_serde_shape() {
        let done = FinalOk {
            run_id: "r-\"1",
            status: "ok",
            summary: "completed",
            session_key: "agent:main:k\u{e9}",
            result: RunResult {
                payloads: [TextPart { text: AWKWARD }],
                meta: RunMeta {
                    duration_ms: -3,
                    attempts: 2,
                    agent_meta: AgentMeta {
                        agent_id: "main",
                        provider: "shardgate",
                        model: "echo",
                    },
                },
            },
        };
        // The same text as serde's, keys in the same order.
        assert_eq!(done.to_json(), JsonText::of(&done));
    }

    #[test]
    fn hand_written_acks_match_their_serde_shape() {
        let key = SessionKey::parse("agent:ops:k", "main").unwrap();
        let kinds = [
            JobKind::Agent,
            JobKind::Chat,
            JobKind::Send {
                channel: "log\"".into(),
                to: "x".into(),
            },
        ];
        for kind in &kinds {
            for duplicate in [false, true] {
                let mut ack = ack_for(kind, AWKWARD, &key, 1_700_000_000_123);
                ack.duplicate = duplicate;
                let mut s = String::new();
                ack.write_json(&mut s);
                let hand: Value = serde_json::from_str(&s).unwrap();
                assert_eq!(hand, serde_json::to_value(&ack).unwrap(), "{kind:?}");
                // Same keys in the same order too: clients may compare the text.
                assert_eq!(s, serde_json::to_string(&ack).unwrap(), "{kind:?}");
            }
        }
    }
}
