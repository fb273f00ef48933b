//! Fixtures shared by the criterion benches in `benches/` (one `[[bench]]` per file).
//!
//! Run them all quickly with
//! `cargo bench -p shardgate-bench -- --warm-up-time 1 --measurement-time 2`.
//! Each fixture is what the gateway sees on its hot path: typical inbound request frames,
//! outbound payloads, session keys in their different spellings, and a signed device proof.

use shardgate::auth::device::{DeviceIdentity, DeviceProof};

/// A `health` request as the CLI sends it.
pub const HEALTH_REQ: &str = r#"{"type":"req","id":"42","method":"health","params":{}}"#;

/// An `agent` request as the load generator sends it.
pub const AGENT_REQ: &str = r#"{"type":"req","id":"17","method":"agent","params":{"message":"hello there","idempotencyKey":"p123x9f-7-17","sessionKey":"perf-7"}}"#;

/// A `chat.send` request with a message of `words` words.
pub fn chat_send_req(words: usize) -> String {
    let msg = (1..=words)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        r#"{{"type":"req","id":"9","method":"chat.send","params":{{"sessionKey":"agent:main:telegram:direct:12345","message":"{msg}","idempotencyKey":"run-0001-9"}}}}"#
    )
}

/// The payload of a `chat` delta event (as the echo agent streams it), serialised.
pub fn chat_delta_payload(words: usize) -> String {
    let text = (1..=words)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    serde_json::json!({
        "runId": "run-0001-9", "sessionKey": "agent:main:main", "seq": words, "state": "delta",
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}],
                    "timestamp": 1_760_000_000_000_i64}
    })
    .to_string()
}

/// The final payload of an `agent` call.
pub fn agent_final_payload() -> serde_json::Value {
    serde_json::json!({"runId": "p123x9f-7-17", "status": "ok", "summary": "completed",
                       "result": {"text": "hello there"}})
}

/// Session keys in the spellings clients send.
pub const SESSION_KEYS: &[(&str, &str)] = &[
    ("bare", "main"),
    ("scoped", "agent:main:main"),
    ("direct", "agent:main:telegram:direct:123456789"),
    ("legacy_dm_upper", "Agent:Ops:Slack:DM:U024BE7LH"),
    ("thread", "agent:main:discord:group:9876543210:thread:1234"),
];

/// A connect's device proof, signed once, verified many times.
#[derive(Debug)]
pub struct SignedConnect {
    /// The client's identity.
    pub identity: DeviceIdentity,
    /// `device.id`.
    pub device_id: String,
    /// `device.publicKey`.
    pub public_key: String,
    /// `device.signature` (v3 payload).
    pub signature: String,
    /// `device.signedAt`.
    pub signed_at_ms: i64,
    /// The challenge nonce.
    pub nonce: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Shared token presented.
    pub token: String,
}

impl SignedConnect {
    /// A fixed identity signing the v3 payload of a typical operator connect.
    pub fn new() -> Self {
        let identity = DeviceIdentity::from_secret([7u8; 32]);
        let nonce = "0b6f3c2e-6a3d-4a4e-9b1e-2f7f1f0c9d11".to_string();
        let scopes = vec!["operator.admin".to_string()];
        let token = "T".to_string();
        let signed_at_ms = 1_760_000_000_000;
        let dev = identity.sign_connect(
            &nonce,
            signed_at_ms,
            "cli",
            "cli",
            "operator",
            &scopes,
            &token,
            Some("linux"),
            None,
        );
        let field = |k: &str| dev[k].as_str().expect("device field").to_string();
        SignedConnect {
            device_id: field("id"),
            public_key: field("publicKey"),
            signature: field("signature"),
            identity,
            signed_at_ms,
            nonce,
            scopes,
            token,
        }
    }

    /// The proof as the handshake hands it to `auth::device::verify`.
    pub fn proof(&self) -> DeviceProof<'_> {
        DeviceProof {
            device_id: &self.device_id,
            public_key: &self.public_key,
            signature: &self.signature,
            signed_at_ms: self.signed_at_ms,
            nonce: &self.nonce,
            client_id: "cli",
            client_mode: "cli",
            role: "operator",
            scopes: &self.scopes,
            token: &self.token,
            platform: Some("linux"),
            device_family: None,
        }
    }
}

impl Default for SignedConnect {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_valid() {
        use shardgate::protocol::frame::{parse, Inbound};
        assert!(matches!(parse(HEALTH_REQ), Inbound::Request(_)));
        assert!(matches!(parse(AGENT_REQ), Inbound::Request(_)));
        assert!(matches!(parse(&chat_send_req(20)), Inbound::Request(_)));
        let s = SignedConnect::new();
        let v = shardgate::auth::device::verify(&s.proof(), &s.nonce, s.signed_at_ms)
            .expect("fixture proof verifies");
        assert_eq!(v.payload_version, 3);
        for (_, k) in SESSION_KEYS {
            shardgate::protocol::SessionKey::parse(k, "main").expect("fixture key parses");
        }
    }
}
