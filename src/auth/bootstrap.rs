//! Setup codes (OpenClaw's `device.pair.setupCode`, `openclaw devices join-code`,
//! `openclaw connect`): an operator mints a short-lived, single-use *bootstrap token* for a new
//! machine; the machine presents it as `auth.bootstrapToken` in its `connect` and is paired as
//! a node (device and command surface) without waiting for an operator.
//!
//! Two things are handed out:
//! - the **setup code**: base64url (no padding) of the JSON `{url, bootstrapToken,
//!   expiresAtMs}` (OpenClaw's `encodePairingSetupCode`), optionally as `oc-pair://<code>`;
//! - a **join URL** `http(s)://<gateway>/j/<shortcode>`: a 128-bit random shortcode (22
//!   base64url characters) under which `GET /j/<shortcode>` answers that JSON payload once,
//!   then forgets it (404 `{"error":"not_found"}` for a used, expired or unknown code).
//!
//! Invariants a reader must keep:
//! - Tokens are stored only as SHA-256 hashes, in memory and in
//!   `<state_dir>/devices/bootstrap.json` (`0600`, written atomically by the store writer,
//!   [`super::store_writer`]); a presented token is hashed and compared with every live
//!   record in constant time ([`subtle`]). A minted code is handed out, and a redeemed one
//!   admits its device, only once the change is on disk (the caller awaits its ticket).
//! - A token expires `gateway.pairing.setupCodeTtl` (10 min) after it was minted and is
//!   consumed by the first successful connect that presents it: expired, used and unknown
//!   tokens are one refusal (`AUTH_BOOTSTRAP_TOKEN_INVALID`), so a caller learns nothing.
//! - A join code outlives a restart, as OpenClaw's do (they are rows of its state database),
//!   until it expires or its first `GET` burns it. Its payload holds the raw token, so it is
//!   kept (in memory and in `<state_dir>/devices/join-codes.json`, `0600`, by the store
//!   writer) only sealed with AES-256-GCM under a key derived from the code itself, and looked
//!   up by the code's SHA-256: without the 128-bit code, neither the code nor the token can be
//!   read back. A join URL is handed out, and a burned code's payload served, only once the
//!   change is on disk.
//! - The tables are process-wide (any shard mints, any shard redeems), touched only when
//!   codes are minted or redeemed, never per frame; no lock is held across a file write.
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::state_file;
use super::store_writer::{Doc, Encode, StoreWriter, Ticket};
use crate::clock::now_ms;
use crate::config::Config;
use crate::protocol::error::GatewayError;

/// The only profile minted here: a node (role `node`, no operator scopes).
pub const NODE_PROFILE: &str = "node";

/// A minted token, as persisted (no token, only its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    /// Hex SHA-256 of the token.
    token_sha256: String,
    /// Correlates the code with its outcome (`device.pair.setupStatus` in OpenClaw).
    setup_id: String,
    /// What the token admits: [`NODE_PROFILE`].
    profile: String,
    issued_at_ms: i64,
    expires_at_ms: i64,
}

/// A freshly minted token: the only time the raw token exists on the gateway.
#[derive(Clone, PartialEq)]
pub struct Issued {
    /// The bearer token (43 base64url characters, 256 bits).
    pub token: String,
    /// Its setup id.
    pub setup_id: String,
    /// When it stops being accepted, ms since the epoch.
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("token", &"<redacted>")
            .field("setup_id", &self.setup_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// What a join code serves until its first `GET`, as stored (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinRecord {
    /// Hex SHA-256 of the code: how a `GET` finds it.
    code_sha256: String,
    /// base64url(nonce ‖ AES-256-GCM(payload)) under [`join_key`] of the code.
    sealed: String,
    expires_at_ms: i64,
}

type Records = Vec<Record>;

fn prune(tokens: &mut Records, now_ms: i64) -> bool {
    let before = tokens.len();
    tokens.retain(|r| r.expires_at_ms > now_ms);
    tokens.len() != before
}

/// Process-wide setup codes.
pub struct Bootstrap {
    /// Minted tokens (hashes), written to `<state_dir>/devices/bootstrap.json` (memory only
    /// in tests); keyed `""` for the tickets (one table).
    tokens: Doc<Records>,
    /// Join codes, sealed (see the module doc), written to `<state_dir>/devices/join-codes.json`.
    join: Doc<Vec<JoinRecord>>,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap").finish_non_exhaustive()
    }
}

const FILE: &str = "bootstrap.json";
const JOIN_FILE: &str = "join-codes.json";

/// The AES-256 key a join code's payload is sealed under: derived from the code (128 random
/// bits), domain-separated from the code's lookup hash.
fn join_key(code: &str) -> aes_gcm::Aes256Gcm {
    use aes_gcm::KeyInit as _;
    let key = Sha256::new()
        .chain_update(b"shardgate join code payload v1\0")
        .chain_update(code.as_bytes())
        .finalize();
    aes_gcm::Aes256Gcm::new(&key)
}

/// Seals `payload` under `code`'s key: base64url(nonce ‖ ciphertext).
fn seal_join(code: &str, payload: &str) -> String {
    use aes_gcm::aead::Aead as _;
    let nonce: [u8; 12] = rand::random();
    let ct = join_key(code)
        .encrypt(aes_gcm::Nonce::from_slice(&nonce), payload.as_bytes())
        .unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
}

/// The payload sealed by [`seal_join`], `None` when it does not open under `code`'s key.
fn open_join(code: &str, sealed: &str) -> Option<String> {
    use aes_gcm::aead::Aead as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sealed)
        .ok()?;
    if raw.len() < 12 + 16 {
        return None;
    }
    let (nonce, ct) = raw.split_at(12);
    let plain = join_key(code)
        .decrypt(aes_gcm::Nonce::from_slice(nonce), ct)
        .ok()?;
    String::from_utf8(plain).ok()
}

fn random_b64url(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// OpenClaw's shortcode shape: 22 base64url characters.
pub fn is_join_code(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The setup code of a payload: base64url of its JSON, no padding.
pub fn encode_setup_code(payload: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string())
}

impl Bootstrap {
    /// Loads the live token hashes of `<state_dir>/devices/bootstrap.json`; `writer` writes
    /// every change.
    pub fn open(state_dir: &Path, writer: &StoreWriter) -> io::Result<Bootstrap> {
        let dir = state_dir.join("devices");
        state_file::create_private_dir(&dir)?;
        let path = dir.join(FILE);
        let tokens = state_file::read_json_or_default(&path)?;
        let join_path = dir.join(JOIN_FILE);
        let join = state_file::read_json_or_default(&join_path)?;
        Ok(Bootstrap {
            tokens: Doc::file(tokens, path, pretty_json(), writer),
            join: Doc::file(join, join_path, pretty_json(), writer),
        })
    }

    /// In memory only (tests).
    pub fn in_memory() -> Bootstrap {
        Bootstrap {
            tokens: Doc::memory(Records::new()),
            join: Doc::memory(Vec::new()),
        }
    }

    /// Mints a token for `profile`, valid `ttl_ms`; hand it out once the ticket resolved
    /// (a code given to an operator must survive a restart).
    pub fn issue(&self, profile: &str, ttl_ms: i64, now_ms: i64) -> (Issued, Ticket) {
        let issued = Issued {
            token: random_b64url(32),
            setup_id: uuid::Uuid::new_v4().to_string(),
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        };
        let record = Record {
            token_sha256: sha256_hex(&issued.token),
            setup_id: issued.setup_id.clone(),
            profile: profile.to_owned(),
            issued_at_ms: now_ms,
            expires_at_ms: issued.expires_at_ms,
        };
        let ((), ticket) = match self.tokens.change("", |t| {
            prune(t, now_ms);
            t.push(record);
            Ok::<_, std::convert::Infallible>(((), true))
        }) {
            Ok(r) => r,
            Err(e) => match e {},
        };
        (issued, ticket)
    }

    /// Consumes `token` if it is live and admits `role`: a ticket once (admit the device when
    /// it resolved: a failed write undoes the consumption, so the code cannot be used twice
    /// across a restart), `None` ever after (and for an expired, unknown or wrong-role
    /// token). Every live record is compared, in constant time, so the answer's timing does
    /// not depend on which one matched.
    pub fn consume(&self, token: &str, role: &str, now_ms: i64) -> Option<Ticket> {
        // Compared in the stored (hex) form: one encoding per attempt, not a decode (and an
        // allocation) per live record under the lock.
        let presented = sha256_hex(token.trim());
        self.tokens
            .change("", |t| {
                let pruned = prune(t, now_ms);
                let mut hit = None;
                for (i, r) in t.iter().enumerate() {
                    if bool::from(r.token_sha256.as_bytes().ct_eq(presented.as_bytes())) {
                        hit = Some(i);
                    }
                }
                // A node profile admits only the node role.
                let usable = hit.filter(|&i| t[i].profile != NODE_PROFILE || role == "node");
                if let Some(i) = usable {
                    t.remove(i);
                }
                Ok::<_, std::convert::Infallible>((usable.is_some(), pruned || usable.is_some()))
            })
            .map_or_else(|e| match e {}, |(hit, ticket)| hit.then_some(ticket))
    }

    /// Registers `payload` under a new join code valid until `expires_at_ms`, sealed; hand
    /// the code out once the ticket resolved.
    pub fn register_join(
        &self,
        payload: &Value,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> (String, Ticket) {
        let code = random_b64url(16);
        let record = JoinRecord {
            code_sha256: sha256_hex(&code),
            sealed: seal_join(&code, &payload.to_string()),
            expires_at_ms,
        };
        let ((), ticket) = self
            .join
            .change("", |j| {
                j.retain(|r| r.expires_at_ms > now_ms);
                j.push(record);
                Ok::<_, std::convert::Infallible>(((), true))
            })
            .unwrap_or_else(|e| match e {});
        (code, ticket)
    }

    /// Burns a join code: its payload the first time (serve it once the ticket resolved: a
    /// code forgotten only in memory could be served again after a restart), `None` after (or
    /// when expired, malformed or unknown).
    pub fn redeem_join(&self, code: &str, now_ms: i64) -> Option<(String, Ticket)> {
        if !is_join_code(code) {
            return None;
        }
        let wanted = sha256_hex(code);
        let (record, ticket) = self
            .join
            .change("", |j| {
                let before = j.len();
                j.retain(|r| r.expires_at_ms > now_ms);
                let hit = j
                    .iter()
                    .position(|r| r.code_sha256 == wanted)
                    .map(|i| j.remove(i));
                let changed = j.len() != before;
                Ok::<_, std::convert::Infallible>((hit, changed))
            })
            .unwrap_or_else(|e| match e {});
        let payload = open_join(code, &record?.sealed)?;
        Some((payload, ticket))
    }
}

/// The encoding of a state file: pretty JSON and a newline.
fn pretty_json<T: Serialize>() -> Encode<T> {
    Box::new(|t| {
        let mut bytes = serde_json::to_vec_pretty(t).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        Ok(bytes)
    })
}

/// The payload of a setup code.
pub fn payload(url: &str, issued: &Issued) -> Value {
    json!({"url": url, "bootstrapToken": issued.token, "expiresAtMs": issued.expires_at_ms})
}

// ---------------------------------------------------------------------------------------------
// device.pair.setupCode and GET /j/<code>
// ---------------------------------------------------------------------------------------------

fn invalid(msg: &str) -> GatewayError {
    GatewayError::InvalidParams(msg.to_owned())
}

/// `http(s)://` → `ws(s)://`; a bare host gets `scheme`. `None` when it is no gateway URL.
fn normalize_url(raw: &str, scheme: &str) -> Option<String> {
    let raw = raw.trim().trim_end_matches('/');
    let (s, rest) = match raw.split_once("://") {
        Some(("ws" | "http", r)) => ("ws", r),
        Some(("wss" | "https", r)) => ("wss", r),
        Some(_) => return None,
        None => (scheme, raw),
    };
    (!rest.is_empty() && !rest.contains(char::is_whitespace)).then(|| format!("{s}://{rest}"))
}

/// The gateway URL a setup code carries, and where it came from.
fn gateway_url(
    cfg: &Config,
    listen: SocketAddr,
    p: &Value,
) -> Result<(String, &'static str), GatewayError> {
    let scheme = if cfg.gateway.tls.enabled { "wss" } else { "ws" };
    let requested = p.get("publicUrl").and_then(Value::as_str);
    let (raw, source) = match (requested, &cfg.gateway.pairing.public_url) {
        (Some(u), _) => (u.to_owned(), "request.publicUrl"),
        (None, Some(u)) => (u.clone(), "gateway.pairing.publicUrl"),
        (None, None) => {
            let ip = listen.ip();
            if ip.is_loopback() || ip.is_unspecified() {
                return Err(invalid(
                    "Gateway is only bound to loopback. Set gateway.pairing.publicUrl (OpenClaw: plugins.entries.device-pair.config.publicUrl) to the URL other machines reach it at.",
                ));
            }
            (format!("{scheme}://{listen}"), "gateway.host")
        }
    };
    normalize_url(&raw, scheme)
        .map(|u| (u, source))
        .ok_or_else(|| invalid("Configured publicUrl is invalid."))
}

/// The join URL base of a gateway URL: `wss` → `https`, loopback `ws` → `http`.
fn join_base(url: &str) -> Result<String, GatewayError> {
    if let Some(rest) = url.strip_prefix("wss://") {
        return Ok(format!("https://{rest}"));
    }
    let rest = url.strip_prefix("ws://").unwrap_or(url);
    let host = rest
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(rest, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(format!("http://{rest}"))
    } else {
        Err(invalid("Join URLs require a TLS gateway endpoint, except for loopback. Use the setup code directly for plaintext LAN pairing."))
    }
}

/// `device.pair.setupCode {bootstrapProfile?, joinUrl?, includeQr?, publicUrl?}` (admin):
/// mints a bootstrap token for a new node, with its setup code and, with `joinUrl: true`,
/// a single-use join URL. Only the `node` profile is minted here.
pub async fn setup_code(
    codes: &Bootstrap,
    cfg: &Config,
    listen: SocketAddr,
    p: &Value,
) -> Result<Value, GatewayError> {
    let join = p.get("joinUrl").and_then(Value::as_bool) == Some(true);
    match p.get("bootstrapProfile").and_then(Value::as_str) {
        None | Some(NODE_PROFILE) => {}
        Some(_) if join => return Err(invalid("Join URLs require bootstrapProfile=node.")),
        Some(other) => {
            return Err(invalid(&format!(
                "bootstrapProfile {other:?} is not supported here (only \"node\")"
            )))
        }
    }
    let auth = match cfg.gateway.auth.effective_mode() {
        crate::config::AuthMode::Token => "token",
        crate::config::AuthMode::Password => "password",
        other => {
            return Err(invalid(&format!(
                "Pairing setup requires gateway.auth.mode \"token\" or \"password\"; current mode is \"{}\".",
                other.as_str()
            )))
        }
    };
    let (url, source) = gateway_url(cfg, listen, p)?;
    let join_base = if join { Some(join_base(&url)?) } else { None };
    let now = now_ms();
    let (issued, durable) = codes.issue(
        NODE_PROFILE,
        cfg.gateway.pairing.setup_code_ttl.0 as i64,
        now,
    );
    // The operator hands the code to another machine: it must still work after a restart.
    durable.wait().await.map_err(|e| {
        tracing::error!(error = %e, "setup code store");
        GatewayError::AgentFailed(format!("setup code store: {e}"))
    })?;
    let body = payload(&url, &issued);
    let mut out = json!({
        "setupId": issued.setup_id,
        "expiresAtMs": issued.expires_at_ms,
        "setupCode": encode_setup_code(&body),
        "gatewayUrl": url,
        "auth": auth,
        "urlSource": source,
        "access": NODE_PROFILE,
    });
    if let Some(base) = join_base {
        let (code, durable) = codes.register_join(&body, issued.expires_at_ms, now);
        durable.wait().await.map_err(|e| {
            tracing::error!(error = %e, "join code store");
            GatewayError::AgentFailed(format!("join code store: {e}"))
        })?;
        out["joinUrl"] = json!(format!("{base}/j/{code}"));
    }
    tracing::info!(setup = %issued.setup_id, join, "setup code minted");
    Ok(out)
}

/// `GET /j/<code>`: the setup payload of a live join code, once. `None` (404) for anything
/// else: another method, a query string, a malformed, unknown, used or expired code.
pub async fn join(
    codes: &Bootstrap,
    method: &str,
    path: &str,
    has_query: bool,
    now_ms: i64,
) -> Option<String> {
    let code = path.strip_prefix("/j/")?;
    if method != "GET" || has_query {
        return None;
    }
    let (payload, burned) = codes.redeem_join(code, now_ms)?;
    match burned.wait().await {
        Ok(()) => Some(payload),
        Err(e) => {
            // Not burned durably: refuse rather than risk serving it again after a restart.
            tracing::error!(error = %e, "join code store");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    /// A node token, once on disk.
    fn issue(b: &Bootstrap, ttl_ms: i64, now_ms: i64) -> Issued {
        let (t, durable) = b.issue(NODE_PROFILE, ttl_ms, now_ms);
        block_on(durable.wait()).unwrap();
        t
    }

    /// Whether the token was consumed (and that consumption is on disk).
    trait Consumed {
        fn consume_now(&self, token: &str, role: &str, now_ms: i64) -> bool;
    }
    impl Consumed for Bootstrap {
        fn consume_now(&self, token: &str, role: &str, now_ms: i64) -> bool {
            self.consume(token, role, now_ms)
                .is_some_and(|t| block_on(t.wait()).is_ok())
        }
    }

    #[test]
    fn token_is_single_use_expiring_and_role_bound() {
        let dir = tempfile::tempdir().unwrap();
        let writer = StoreWriter::start().unwrap();
        let b = Bootstrap::open(dir.path(), &writer).unwrap();
        let t = issue(&b, 1_000, 10_000);
        assert_eq!(t.token.len(), 43);
        let on_disk = std::fs::read_to_string(dir.path().join("devices").join(FILE)).unwrap();
        assert!(!on_disk.contains(&t.token), "raw token at rest");
        assert!(on_disk.contains(&sha256_hex(&t.token)));
        assert!(
            !b.consume_now(&t.token, "operator", 10_001),
            "node token as operator"
        );
        assert!(!b.consume_now("nope", "node", 10_001));
        // Survives a restart (hash only), then is consumed once.
        let b = Bootstrap::open(dir.path(), &writer).unwrap();
        assert!(b.consume_now(&t.token, "node", 10_500));
        assert!(!b.consume_now(&t.token, "node", 10_501), "reused");
        let late = issue(&b, 1_000, 20_000);
        assert!(
            !b.consume_now(&late.token, "node", 21_000),
            "expired at its deadline"
        );
    }

    /// A join code registered and on disk.
    fn register(b: &Bootstrap, payload: &Value, expires_at_ms: i64, now_ms: i64) -> String {
        let (code, durable) = b.register_join(payload, expires_at_ms, now_ms);
        block_on(durable.wait()).unwrap();
        code
    }

    /// The payload of a burned join code, once the burn is on disk.
    fn redeem(b: &Bootstrap, code: &str, now_ms: i64) -> Option<String> {
        let (payload, durable) = b.redeem_join(code, now_ms)?;
        block_on(durable.wait()).unwrap();
        Some(payload)
    }

    #[test]
    fn join_code_is_burned_by_its_first_get() {
        let b = Bootstrap::in_memory();
        let code = register(&b, &json!({"url": "ws://h:1"}), 5_000, 0);
        assert!(is_join_code(&code), "{code}");
        assert!(redeem(&b, "short", 1).is_none());
        assert_eq!(
            redeem(&b, &code, 1).as_deref(),
            Some(r#"{"url":"ws://h:1"}"#)
        );
        assert!(redeem(&b, &code, 2).is_none());
        let old = register(&b, &json!({}), 5_000, 0);
        assert!(redeem(&b, &old, 5_000).is_none(), "expired");
    }

    #[test]
    fn join_code_survives_a_restart_sealed_and_burns_once() {
        let dir = tempfile::tempdir().unwrap();
        let writer = StoreWriter::start().unwrap();
        let b = Bootstrap::open(dir.path(), &writer).unwrap();
        let body = json!({"url": "ws://h:1", "bootstrapToken": "raw-secret-token"});
        let code = register(&b, &body, 5_000, 0);
        let short = register(&b, &body, 100, 0);
        let path = dir.path().join("devices").join(JOIN_FILE);
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(!on_disk.contains("raw-secret-token"), "raw token at rest");
        assert!(!on_disk.contains(&code), "code at rest");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Restarted: served once, with its expiry kept.
        let b = Bootstrap::open(dir.path(), &writer).unwrap();
        assert!(redeem(&b, &short, 100).is_none(), "expired after restart");
        assert_eq!(redeem(&b, &code, 10).as_deref(), Some(&*body.to_string()));
        let b = Bootstrap::open(dir.path(), &writer).unwrap();
        assert!(redeem(&b, &code, 11).is_none(), "burned before the restart");
        // A record does not open under another code's key.
        assert!(open_join(&random_b64url(16), &seal_join(&code, "x")).is_none());
    }

    #[test]
    fn setup_code_is_unpadded_base64url_json() {
        let code = encode_setup_code(&json!({"url": "ws://a", "bootstrapToken": "t"}));
        assert!(!code.contains('=') && !code.contains('+') && !code.contains('/'));
        let back = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(code)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&back).unwrap()["bootstrapToken"],
            "t"
        );
    }
}
