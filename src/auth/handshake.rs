//! The `connect` handshake (PROTOCOL.md §3), sans-IO: params, the challenge nonce, `now` and the
//! peer's address class in; an [`Admission`] or a [`GatewayError`] out. Side effects are limited
//! to the pairing store (silent approval), the pending pairing requests and the TOTP replay
//! guard, all passed in by the caller (see `crate::auth::pairing` for the policy terms). The
//! request's wire shape is [`crate::protocol::connect`].
//!
//! Store changes are made in memory; the file writes are the store writer's
//! ([`crate::auth::store_writer`]). What the admission hands out that must survive a crash
//! (the device token of hello-ok, a spent setup code) comes with a [`Durable`] the caller
//! awaits before it answers.

use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::auth::device::{self, DeviceAuthError, DeviceProof};
use crate::auth::pairing::{self, PeerTerms};
use crate::auth::store::{ApproveRequest, PairingStore, TokenCheckError};
use crate::auth::store_writer::Ticket;
use crate::config::{AuthConfig, AuthMode};
use crate::protocol::connect::{negotiate, parse_params, ClientInfo, ConnectParams};
use crate::protocol::error::GatewayError;

/// Who a successful handshake admitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// The negotiated protocol version.
    pub protocol: i64,
    /// `operator` or `node`.
    pub role: String,
    /// Granted scopes (cleared to `[]` for a token-only operator without device).
    pub scopes: Vec<String>,
    /// The verified device, if any.
    pub device_id: Option<String>,
    /// The device token for this role, returned in `hello-ok.auth`.
    pub device_token: Option<(String, i64)>,
    /// The client block.
    pub client: ClientInfo,
    /// The full params (node caps, commands…).
    pub params: ConnectParams,
    /// `lenient` pairing: admitted with no scopes while this pairing request is pending.
    pub pairing_pending: Option<String>,
}

/// What the handshake needs to know about the world.
#[derive(Debug)]
pub struct HandshakeEnv<'a> {
    /// Shared auth settings.
    pub auth: &'a AuthConfig,
    /// The nonce sent in `connect.challenge`.
    pub nonce: &'a str,
    /// Wall clock, ms since epoch.
    pub now_ms: i64,
    /// The TCP peer is a loopback address and no proxy header claims otherwise
    /// (informational: the pairing decision follows `terms.net` and its policy).
    pub direct_loopback: bool,
    /// The paired-device store.
    pub store: &'a PairingStore,
    /// The pairing policy of the peer's network, MFA, mTLS (see `auth::pairing`).
    pub terms: PeerTerms<'a>,
    /// Setup codes' bootstrap tokens (`auth.bootstrapToken`); `None` accepts none.
    pub bootstrap: Option<&'a crate::auth::bootstrap::Bootstrap>,
}

/// What an admission changed that must be on disk before hello-ok is sent.
#[must_use = "hello-ok may be sent only once the admission's changes are on disk"]
#[derive(Debug, Default)]
pub struct Durable {
    /// The spent setup code: a crash before it is written would let it be used again.
    bootstrap: Option<Ticket>,
    /// The device token handed out (new, or approved by another connection a moment ago):
    /// a crash before it is written would leave the client with a token the gateway forgot.
    device: Option<Ticket>,
}

impl Durable {
    /// True when nothing is waiting for a write.
    pub fn is_ready(&self) -> bool {
        self.bootstrap.as_ref().is_none_or(Ticket::is_ready)
            && self.device.as_ref().is_none_or(Ticket::is_ready)
    }

    /// Waits for the writes (asynchronously: the shard goes on meanwhile).
    ///
    /// # Errors
    /// A failed write (the change was undone): the connect is refused as the synchronous
    /// write's failure was.
    pub async fn wait(self) -> Result<(), GatewayError> {
        if let Some(t) = self.bootstrap {
            t.wait().await.map_err(|e| {
                // Not consumed durably: refuse rather than risk a second use after a restart.
                tracing::error!(error = %e, "bootstrap token store");
                GatewayError::BootstrapTokenInvalid
            })?;
        }
        if let Some(t) = self.device {
            t.wait()
                .await
                .map_err(|e| GatewayError::InvalidConnect(format!("pairing store: {e}")))?;
        }
        Ok(())
    }
}

/// Outcome of the shared-secret check, so the caller can count failures per IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedAuth {
    /// Passed with the shared secret.
    Secret,
    /// Passed with a valid device token.
    DeviceToken,
    /// Auth mode none.
    Open,
    /// A client certificate verified by the gateway's client CA (`certificate` method).
    Certificate,
    /// A setup code's bootstrap token (consumed): pairs the device as a node.
    Bootstrap,
}

/// Compares two secrets in constant time (length leaks, content does not).
pub(crate) fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What the pairing store records for verified device `device_id` asking for `role`: its key,
/// the client's self-description and the scopes asked for.
fn approve_request(p: &ConnectParams, device_id: &str, role: &str) -> ApproveRequest {
    let d = p.device.as_ref().expect("verified implies device");
    ApproveRequest {
        device_id: device_id.to_string(),
        public_key: d.public_key.clone(),
        display_name: p.client.display_name.as_deref().map(str::to_string),
        platform: Some(p.client.platform.to_string()),
        client_id: Some(p.client.id.to_string()),
        client_mode: Some(p.client.mode.to_string()),
        role: role.to_string(),
        scopes: p.scopes.clone(),
    }
}

/// Runs the whole admission of PROTOCOL.md §3 steps 3–9. The caller awaits the
/// [`Durable`] before it sends hello-ok.
pub fn admit(
    params: &Value,
    env: &HandshakeEnv<'_>,
) -> Result<(Admission, SharedAuth, Durable), GatewayError> {
    let p = parse_params(params)?;
    let role = p.role.clone().unwrap_or_else(|| "operator".into());
    if role != "operator" && role != "node" {
        return Err(GatewayError::InvalidConnect(format!(
            "unknown role {role:?}"
        )));
    }
    let protocol = negotiate(&p, &role)?;
    let auth = p.auth.clone().unwrap_or_default();
    let mut durable = Durable::default();

    // Device identity first: a device token is only meaningful for a verified device.
    let verified = match &p.device {
        Some(d) => {
            let token_for_sig = auth
                .token
                .as_deref()
                .or(auth.device_token.as_deref())
                .or(auth.bootstrap_token.as_deref())
                .unwrap_or("");
            let proof = DeviceProof {
                device_id: &d.id,
                public_key: &d.public_key,
                signature: &d.signature,
                signed_at_ms: d.signed_at,
                nonce: &d.nonce,
                client_id: &p.client.id,
                client_mode: &p.client.mode,
                role: &role,
                scopes: &p.scopes,
                token: token_for_sig,
                platform: Some(&p.client.platform),
                device_family: p.client.device_family.as_deref(),
            };
            Some(
                device::verify(&proof, env.nonce, env.now_ms).map_err(|e| match e {
                    DeviceAuthError::IdMismatch => GatewayError::DeviceIdMismatch,
                    DeviceAuthError::PublicKeyInvalid => GatewayError::DevicePublicKeyInvalid,
                    DeviceAuthError::SignatureInvalid => GatewayError::DeviceSignatureInvalid,
                    DeviceAuthError::SignatureExpired => GatewayError::DeviceSignatureExpired,
                    DeviceAuthError::NonceMismatch => GatewayError::DeviceNonceMismatch,
                })?,
            )
        }
        None => None,
    };

    // Shared secret, or a device token standing in for it, or a setup code's bootstrap token
    // (alone: a client holding the secret or a device token does not spend a code).
    let mode = env.auth.effective_mode();
    let bootstrap_only = auth.token.is_none()
        && auth.password.is_none()
        && auth.device_token.is_none()
        && auth.bootstrap_token.is_some();
    let shared = if bootstrap_only {
        let Some(v) = &verified else {
            return Err(GatewayError::DeviceIdentityRequired);
        };
        let token = auth.bootstrap_token.as_deref().unwrap_or_default();
        // Scopes are refused before the token is spent: a connect that cannot succeed must
        // not burn the code.
        durable.bootstrap = p
            .scopes
            .is_empty()
            .then(|| env.bootstrap?.consume(token, &role, env.now_ms))
            .flatten();
        if durable.bootstrap.is_none() {
            return Err(GatewayError::BootstrapTokenInvalid);
        }
        tracing::info!(device = %v.device_id, role = %role, "setup code redeemed");
        SharedAuth::Bootstrap
    } else {
        match mode {
            AuthMode::None if env.terms.policy.require_token => {
                // `requireToken`: auth mode none does not apply to peers from this network.
                match (&auth.device_token, &verified) {
                    (Some(dt), Some(v)) => {
                        check_device_token(env.store, &v.device_id, &role, dt, env.now_ms)?;
                        SharedAuth::DeviceToken
                    }
                    _ if env.terms.cert_authenticated() => SharedAuth::Certificate,
                    (Some(_), None) => return Err(GatewayError::DeviceIdentityRequired),
                    (None, _) => return Err(GatewayError::AuthTokenMissing),
                }
            }
            AuthMode::None => SharedAuth::Open,
            AuthMode::Token | AuthMode::Password => {
                let (given, expected, missing, mismatch) = if mode == AuthMode::Token {
                    (
                        auth.token.as_deref(),
                        env.auth.token.as_deref().unwrap_or(""),
                        GatewayError::AuthTokenMissing,
                        GatewayError::AuthTokenMismatch,
                    )
                } else {
                    (
                        auth.password.as_deref(),
                        env.auth.password.as_deref().unwrap_or(""),
                        GatewayError::AuthPasswordMissing,
                        GatewayError::AuthPasswordMismatch,
                    )
                };
                match (given, &auth.device_token, &verified) {
                    (Some(g), _, _) if ct_eq(g, expected) => SharedAuth::Secret,
                    (Some(_), _, _) => return Err(mismatch),
                    (None, Some(dt), Some(v)) => {
                        check_device_token(env.store, &v.device_id, &role, dt, env.now_ms)?;
                        SharedAuth::DeviceToken
                    }
                    (None, Some(_), None) => return Err(GatewayError::DeviceIdentityRequired),
                    (None, None, _) if env.terms.cert_authenticated() => SharedAuth::Certificate,
                    (None, None, _) => return Err(missing),
                }
            }
        }
    };

    let Some(v) = verified else {
        // No device: a shared-secret operator gets in with no scopes; others need identity.
        if role == "operator" && shared != SharedAuth::DeviceToken {
            return Ok((
                Admission {
                    protocol,
                    role,
                    scopes: Vec::new(),
                    device_id: None,
                    device_token: None,
                    client: p.client.clone(),
                    params: p,
                    pairing_pending: None,
                },
                shared,
                durable,
            ));
        }
        return Err(GatewayError::DeviceIdentityRequired);
    };

    // A device bound to a client certificate must present that certificate.
    let stored = env.store.get(&v.device_id);
    if let Some(bound) = stored.as_ref().and_then(|d| d.cert_sha256.as_deref()) {
        if env.terms.client_cert != Some(bound) {
            return Err(GatewayError::DeviceCertMismatch);
        }
    }

    // Pairing: a known device within its approved role and scopes passes; a new one (or one
    // asking for more) is approved silently when its network's policy says so (loopback by
    // default); others wait for an operator (a pending request, see `auth::pairing`).
    let covered = env.store.covers(&v.device_id, &role, &p.scopes);
    // A redeemed setup code is the operator's approval, given in advance.
    if !covered && !env.terms.auto_approve() && shared != SharedAuth::Bootstrap {
        let is_repair = stored.is_some();
        let request_id = env.terms.pairing.file(
            approve_request(&p, &v.device_id, &role),
            env.terms.peer_ip,
            env.terms.net,
            is_repair,
            env.terms.bound_cert(),
            env.now_ms,
        );
        if env.terms.mode == crate::config::PairingMode::Lenient {
            return Ok((
                Admission {
                    protocol,
                    role,
                    scopes: Vec::new(),
                    device_id: Some(v.device_id),
                    device_token: None,
                    client: p.client.clone(),
                    params: p,
                    pairing_pending: Some(request_id),
                },
                shared,
                durable,
            ));
        }
        return Err(GatewayError::PairingRequired {
            request_id,
            reason: if is_repair {
                "scope-upgrade".into()
            } else {
                "not-paired".into()
            },
        });
    }
    // MFA before anything is granted or issued.
    env.terms.check_mfa(
        &pairing::device_subject(&v.device_id),
        stored.as_ref().and_then(|d| d.totp_secret.as_deref()),
        auth.totp.as_deref(),
        &p.scopes,
        env.now_ms,
    )?;
    // A paired device within its scopes keeps its live token (no store write per connect;
    // a wait only if another connection approved it a moment ago and that is not on disk).
    let existing = covered
        .then(|| {
            env.store
                .live_token(&v.device_id, &role, &p.scopes, env.now_ms)
        })
        .flatten();
    let (token, ticket) = match existing {
        Some(t) => t,
        None => env
            .store
            .approve_with(
                approve_request(&p, &v.device_id, &role),
                &env.terms.approve_terms(),
                env.now_ms,
            )
            .map_err(|e| GatewayError::InvalidConnect(format!("pairing store: {e}")))?,
    };
    durable.device = Some(ticket);
    Ok((
        Admission {
            protocol,
            role,
            scopes: p.scopes.clone(),
            device_id: Some(v.device_id),
            device_token: Some((token.token.clone(), token.created_at_ms)),
            client: p.client.clone(),
            params: p,
            pairing_pending: None,
        },
        shared,
        durable,
    ))
}

/// Whether a device-less operator that proved the shared secret from a loopback peer keeps
/// the scopes it asked for. OpenClaw keeps them only for its own CLI (`cli`/`cli`: `openclaw
/// gateway call` and friends) and the local backend client (`gateway-client`/`backend`), and
/// never for a browser (an `Origin` header); every other device-less client — the `gateway
/// probe` connection (`cli`/`probe`), a UI, a webchat — gets no scopes, so `openclaw gateway
/// probe` reports "connect-only" as it does against OpenClaw.
pub fn loopback_secret_keeps_scopes(client: &ClientInfo, browser_origin: bool) -> bool {
    !browser_origin
        && matches!(
            (&*client.id, &*client.mode),
            ("cli", "cli") | ("gateway-client", "backend")
        )
}

fn check_device_token(
    store: &PairingStore,
    device_id: &str,
    role: &str,
    token: &str,
    now_ms: i64,
) -> Result<(), GatewayError> {
    store
        .verify_token(device_id, role, token, now_ms)
        .map(|_| ())
        .map_err(|e| match e {
            TokenCheckError::Revoked => GatewayError::DeviceTokenRevoked,
            TokenCheckError::Expired => GatewayError::DeviceTokenExpired,
            _ => GatewayError::DeviceTokenMismatch,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, mode: &str) -> ClientInfo {
        parse_params(&serde_json::json!({"minProtocol": 4, "maxProtocol": 4,
            "client": {"id": id, "version": "1", "platform": "linux", "mode": mode}}))
        .unwrap()
        .client
    }

    #[test]
    fn only_the_cli_and_the_local_backend_keep_loopback_secret_scopes() {
        assert!(loopback_secret_keeps_scopes(&client("cli", "cli"), false));
        assert!(loopback_secret_keeps_scopes(
            &client("gateway-client", "backend"),
            false
        ));
        // `openclaw gateway probe`, UIs and webchats do not; a browser never does.
        assert!(!loopback_secret_keeps_scopes(
            &client("cli", "probe"),
            false
        ));
        assert!(!loopback_secret_keeps_scopes(
            &client("openclaw-tui", "ui"),
            false
        ));
        assert!(!loopback_secret_keeps_scopes(
            &client("webchat", "webchat"),
            false
        ));
        assert!(!loopback_secret_keeps_scopes(&client("cli", "cli"), true));
    }
}
