//! Pairing (SPEC §3, PROTOCOL §3.8 and §5): the per-network policies applied at connect and
//! the pending requests an operator approves or rejects (the methods that act on them are
//! [`super::device_methods`]).
//!
//! Invariants a reader must keep:
//! - Pending requests are process-wide ([`Pairing`] in [`crate::shard::Shared`]): a device
//!   that asked on shard 0 is approved by an operator whose connection lives on shard 1. The
//!   table is behind a mutex touched only at connect and by the pairing methods, never per
//!   frame. A request expires `gateway.pairing.pendingTtl` (5 min) after it was filed.
//! - One pending request per (device, role, scopes): asking again returns the same id.
//! - An approval applies the terms of the network the request came from (token lifetime),
//!   not those of the approving operator.
//! - A device token is a credential, not the pairing: revoking or expiring it stops that
//!   token, and a paired device that proves its key *and* the shared secret gets a fresh one
//!   (as in OpenClaw). To shut a device out, `device.pair.remove` it (its live connections
//!   are closed).
#![expect(
    clippy::disallowed_types,
    reason = "pending requests are shared by all shards and touched at connect/pairing only"
)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::net::NetClass;
use super::store::{ApproveRequest, ApproveTerms};
use super::totp::{ReplayGuard, TotpError};
use crate::config::{Config, MfaConfig, NetPolicy, PairingMode};
use crate::protocol::error::GatewayError;

/// A device waiting for an operator.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRequest {
    /// The id an operator approves (`details.requestId` of `PAIRING_REQUIRED`).
    pub request_id: String,
    /// What would be approved.
    pub approve: ApproveRequest,
    /// The peer's address when it asked.
    pub remote_ip: IpAddr,
    /// Its network class, whose policy applies on approval.
    pub network: NetClass,
    /// The device is paired already and asks for more role or scopes.
    pub is_repair: bool,
    /// The verified client certificate of the asking connection (bound on approval).
    pub cert_sha256: Option<String>,
    /// When it asked, ms since the epoch.
    pub created_at_ms: i64,
}

impl PendingRequest {
    /// The wire shape (`device.pair.list`, `device.pair.requested`).
    pub fn to_json(&self) -> Value {
        let a = &self.approve;
        json!({
            "requestId": self.request_id, "deviceId": a.device_id, "publicKey": a.public_key,
            "displayName": a.display_name, "platform": a.platform, "clientId": a.client_id,
            "clientMode": a.client_mode, "role": a.role, "roles": [a.role], "scopes": a.scopes,
            "remoteIp": self.remote_ip.to_string(), "network": self.network.as_str(),
            "isRepair": self.is_repair, "ts": self.created_at_ms,
        })
    }
}

/// The process-wide pairing state: pending requests and the TOTP replay guard.
#[derive(Debug)]
pub struct Pairing {
    pending: Mutex<Pending>,
    ttl_ms: i64,
    /// Used TOTP steps per subject.
    pub totp: ReplayGuard,
}

#[derive(Debug, Default)]
struct Pending {
    by_id: BTreeMap<String, PendingRequest>,
    /// Filed but not yet announced with `device.pair.requested`.
    unannounced: Vec<String>,
}

impl Pairing {
    /// Empty, with the configured expiry.
    pub fn new(cfg: &Config) -> Pairing {
        Pairing {
            pending: Mutex::new(Pending::default()),
            ttl_ms: cfg.gateway.pairing.pending_ttl.0 as i64,
            totp: ReplayGuard::default(),
        }
    }

    fn lock(&self, now_ms: i64) -> std::sync::MutexGuard<'_, Pending> {
        let mut g = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl_ms;
        g.by_id.retain(|_, r| now_ms - r.created_at_ms < ttl);
        g
    }

    /// Files a request (or returns the pending one for the same device, role and scopes).
    pub fn file(
        &self,
        approve: ApproveRequest,
        remote_ip: IpAddr,
        network: NetClass,
        is_repair: bool,
        cert_sha256: Option<String>,
        now_ms: i64,
    ) -> String {
        let mut g = self.lock(now_ms);
        if let Some(r) = g.by_id.values().find(|r| {
            r.approve.device_id == approve.device_id
                && r.approve.role == approve.role
                && r.approve.scopes == approve.scopes
        }) {
            return r.request_id.clone();
        }
        let id = uuid::Uuid::new_v4().to_string();
        g.by_id.insert(
            id.clone(),
            PendingRequest {
                request_id: id.clone(),
                approve,
                remote_ip,
                network,
                is_repair,
                cert_sha256,
                created_at_ms: now_ms,
            },
        );
        g.unannounced.push(id.clone());
        id
    }

    /// Pending requests, oldest first.
    pub fn list(&self, now_ms: i64) -> Vec<PendingRequest> {
        let mut v: Vec<_> = self.lock(now_ms).by_id.values().cloned().collect();
        v.sort_by_key(|r| r.created_at_ms);
        v
    }

    /// Removes and returns a pending request.
    pub fn take(&self, request_id: &str, now_ms: i64) -> Option<PendingRequest> {
        self.lock(now_ms).by_id.remove(request_id)
    }

    /// Puts a request back (its approval failed to persist).
    pub(crate) fn restore(&self, r: PendingRequest) {
        let mut g = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        g.by_id.insert(r.request_id.clone(), r);
    }

    /// Requests filed since the last call, still pending.
    pub(crate) fn take_unannounced(&self, now_ms: i64) -> Vec<PendingRequest> {
        let mut g = self.lock(now_ms);
        let ids = std::mem::take(&mut g.unannounced);
        ids.iter()
            .filter_map(|id| g.by_id.get(id).cloned())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// At connect
// ---------------------------------------------------------------------------------------------

/// What the handshake needs to apply the pairing policy of the peer's network.
#[derive(Debug, Clone, Copy)]
pub struct PeerTerms<'a> {
    /// `gateway.pairing.mode`.
    pub mode: PairingMode,
    /// Where the peer is.
    pub net: NetClass,
    /// That network's policy.
    pub policy: &'a NetPolicy,
    /// `access.authentication.mfa`.
    pub mfa: &'a MfaConfig,
    /// Pending requests and the TOTP replay guard.
    pub pairing: &'a Pairing,
    /// The peer's address.
    pub peer_ip: IpAddr,
    /// Hex SHA-256 of the verified TLS client certificate, if any.
    pub client_cert: Option<&'a str>,
    /// `access.authentication.methods` includes `certificate`.
    pub cert_auth: bool,
}

impl PeerTerms<'_> {
    /// A new (or widening) device is approved without an operator.
    pub fn auto_approve(&self) -> bool {
        self.mode == PairingMode::Disabled || self.policy.auto_approve
    }

    /// Terms of a silent approval at connect.
    pub fn approve_terms(&self) -> ApproveTerms {
        ApproveTerms {
            token_lifetime_ms: self.policy.token_lifetime.map(|m| m.0 as i64),
            cert_sha256: self.bound_cert(),
        }
    }

    /// The certificate to bind a device to: only with `certificate` auth on.
    pub fn bound_cert(&self) -> Option<String> {
        self.cert_auth
            .then(|| self.client_cert.map(str::to_owned))
            .flatten()
    }

    /// A verified client certificate stands in for the shared secret.
    pub fn cert_authenticated(&self) -> bool {
        self.cert_auth && self.client_cert.is_some()
    }

    /// Whether granting `scopes` from this network needs a TOTP code.
    pub fn mfa_needed(&self, scopes: &[String]) -> bool {
        if !(self.mfa.enabled || self.policy.mfa) {
            return false;
        }
        let wants = |s: &str| scopes.iter().any(|g| g == s);
        self.mfa.required_for.iter().any(|r| match r.as_str() {
            "admin" => wants(crate::protocol::authz::ADMIN),
            "write" => wants(crate::protocol::authz::WRITE) || wants(crate::protocol::authz::ADMIN),
            other => wants(other),
        })
    }

    /// Checks the TOTP code of `subject` when granting `scopes` needs one.
    pub fn check_mfa(
        &self,
        subject: &str,
        secret: Option<&str>,
        code: Option<&str>,
        scopes: &[String],
        now_ms: i64,
    ) -> Result<(), GatewayError> {
        if !self.mfa_needed(scopes) {
            return Ok(());
        }
        let secret = secret.ok_or(GatewayError::MfaNotEnrolled)?;
        let code = code
            .filter(|c| !c.is_empty())
            .ok_or(GatewayError::MfaRequired)?;
        self.pairing
            .totp
            .verify(subject, secret, code, now_ms)
            .map_err(|e| match e {
                TotpError::Invalid => GatewayError::MfaInvalid,
                TotpError::Replayed => GatewayError::MfaReplayed,
            })
    }
}

/// The TOTP subject of a device.
pub fn device_subject(device_id: &str) -> String {
    format!("device:{device_id}")
}

/// Whether a caller may act on pairing requests (devices and nodes), and so sees them and
/// their events: an operator with `operator.pairing` or `operator.admin`.
pub fn may_pair(auth: &crate::protocol::connect::ConnAuth) -> bool {
    use crate::protocol::authz::{ADMIN, PAIRING};
    auth.role == "operator" && auth.scopes.iter().any(|s| s == PAIRING || s == ADMIN)
}

/// The policy of a network class.
pub fn policy_for(cfg: &Config, net: NetClass) -> &NetPolicy {
    let p = &cfg.gateway.pairing.policies;
    match net {
        NetClass::Localhost => &p.localhost,
        NetClass::Lan => &p.lan,
        NetClass::Wan => &p.wan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::totp;

    fn req(dev: &str, scopes: &[&str]) -> ApproveRequest {
        ApproveRequest {
            device_id: dev.into(),
            role: "operator".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn one_request_per_device_role_scopes_and_expiry() {
        let p = Pairing::new(&Config::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = p.file(
            req("d1", &["operator.read"]),
            ip,
            NetClass::Lan,
            false,
            None,
            0,
        );
        let b = p.file(
            req("d1", &["operator.read"]),
            ip,
            NetClass::Lan,
            false,
            None,
            10,
        );
        assert_eq!(a, b);
        let c = p.file(
            req("d1", &["operator.admin"]),
            ip,
            NetClass::Lan,
            true,
            None,
            10,
        );
        assert_ne!(a, c);
        assert_eq!(p.take_unannounced(10).len(), 2);
        assert!(p.take_unannounced(10).is_empty());
        assert_eq!(
            p.list(300_005).len(),
            1,
            "the first expired after 5 minutes"
        );
        assert!(p.take(&a, 300_005).is_none());
        assert!(p.take(&c, 300_005).is_some());
        assert!(p.list(0).is_empty());
    }

    #[test]
    fn mfa_needed_by_scope_and_policy() {
        let cfg = Config::default();
        let pairing = Pairing::new(&cfg);
        let t = PeerTerms {
            mode: PairingMode::Strict,
            net: NetClass::Wan,
            policy: &cfg.gateway.pairing.policies.wan,
            mfa: &cfg.access.authentication.mfa,
            pairing: &pairing,
            peer_ip: "192.0.2.1".parse().unwrap(),
            client_cert: None,
            cert_auth: false,
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(!t.mfa_needed(&s(&["operator.read"])));
        assert!(t.mfa_needed(&s(&["operator.write"])));
        assert!(t.mfa_needed(&s(&["operator.admin"])));
        let lan = PeerTerms {
            policy: &cfg.gateway.pairing.policies.lan,
            ..t
        };
        assert!(!lan.mfa_needed(&s(&["operator.admin"])));
        assert_eq!(
            t.check_mfa("x", None, None, &s(&["operator.admin"]), 0),
            Err(GatewayError::MfaNotEnrolled)
        );
        let secret = totp::generate_secret();
        assert_eq!(
            t.check_mfa("x", Some(&secret), None, &s(&["operator.admin"]), 0),
            Err(GatewayError::MfaRequired)
        );
        let now = 1_700_000_000_000;
        let code = totp::code_now(&secret, now).unwrap();
        assert!(t
            .check_mfa(
                "x",
                Some(&secret),
                Some(&code),
                &s(&["operator.admin"]),
                now
            )
            .is_ok());
        assert_eq!(
            t.check_mfa(
                "x",
                Some(&secret),
                Some(&code),
                &s(&["operator.admin"]),
                now
            ),
            Err(GatewayError::MfaReplayed)
        );
    }
}
