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

/// The shared token of the in-process gateway that `e2e_request` and `alloc_per_request` start.
pub const BENCH_TOKEN: &str = "bench-token";

/// A real gateway (`shardgate::app::serve`) running in this process on a background thread:
/// one shard, token auth ([`BENCH_TOKEN`]), loopback, a fresh state dir, in-memory queue.
///
/// `serve` blocks until SIGTERM and reports its port only on stdout, so the port is chosen
/// here first (bind `127.0.0.1:0`, read it, drop it) and passed in the config. Readiness is a
/// completed handshake: until the shard listens, connects reach `serve`'s probe socket, which
/// never answers, and are retried. The gateway is never stopped; it ends with the process.
#[derive(Debug)]
pub struct InProcessGateway {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    state_dir: std::path::PathBuf,
}

impl InProcessGateway {
    /// Starts the gateway and waits (at most 30 s) until a client completes the handshake.
    pub fn start() -> InProcessGateway {
        use shardgate::config::{Config, Shards};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let state_dir =
            std::env::temp_dir().join(format!("shardgate-bench-{}-{port}", std::process::id()));
        let mut config = Config {
            shards: Shards::Count(1),
            state_dir: Some(state_dir.clone()),
            ..Config::default()
        };
        config.gateway.host = "127.0.0.1".into();
        config.gateway.port = port;
        config.gateway.auth.token = Some(BENCH_TOKEN.into());
        config.validate().expect("bench gateway config is valid");
        std::thread::Builder::new()
            .name("gateway-main".into())
            .spawn(move || {
                if let Err(e) = shardgate::app::serve(config) {
                    eprintln!("in-process gateway failed: {e:#}");
                    std::process::exit(1);
                }
            })
            .expect("spawn the gateway thread");
        let g = InProcessGateway { port, state_dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match g.try_client(std::time::Duration::from_millis(500)) {
                Ok(c) => {
                    c.close();
                    return g;
                }
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("in-process gateway not ready within 30 s: {e}")
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }

    /// `ws://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn try_client(
        &self,
        timeout: std::time::Duration,
    ) -> Result<shardgate::client::Client, shardgate::client::CallError> {
        shardgate::client::Client::connect(
            &self.url(),
            Some(BENCH_TOKEN),
            &["operator.admin"],
            timeout,
        )
    }

    /// A connected operator client (`shardgate::client::Client`: real WebSocket handshake,
    /// `connect.challenge`, `connect` with `auth.token`, protocol 4, an operator `client`
    /// block), with a 10 s answer timeout.
    pub fn client(&self) -> shardgate::client::Client {
        self.try_client(std::time::Duration::from_secs(10))
            .expect("bench client connects")
    }
}

impl Drop for InProcessGateway {
    fn drop(&mut self) {
        // The gateway keeps running (it ends with the process); its files are no longer needed.
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// `agent` params as the end-to-end benches send them: a one-word message, a unique
/// idempotency key per request, one session.
pub fn agent_params(n: u64) -> serde_json::Value {
    serde_json::json!({"message": "hi", "idempotencyKey": format!("bench-{n}"),
                       "sessionKey": "bench-1"})
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
