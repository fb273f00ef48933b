//! `gateway.audit`: the weaknesses of the running configuration, each with a severity, the
//! config key to change, and what to do. Pure over the config and the state directory's file
//! modes, so it is the same on every shard and cheap enough to call on demand.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::config::{AuthMode, Config, PairingMode};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Hardening left on the table.
    Low,
    /// Exposes something under some conditions.
    Medium,
    /// Exposes the gateway now.
    High,
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// One weakness.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Stable id (`auth-none-exposed`, …).
    pub id: &'static str,
    /// How bad.
    pub severity: Severity,
    /// The config key (or file) at fault.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Audits `cfg` with the files under `state_dir`.
pub fn audit(cfg: &Config, state_dir: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |id, severity, key: &str, message: String| {
        out.push(Finding {
            id,
            severity,
            key: key.to_owned(),
            message,
        })
    };
    let g = &cfg.gateway;
    let exposed = g
        .host
        .parse::<std::net::IpAddr>()
        .map(|ip| !ip.is_loopback())
        .unwrap_or(true);
    let mode = g.auth.effective_mode();
    let tls = &cfg.security.transport.tls;

    if exposed && mode == AuthMode::None {
        add(
            "auth-none-exposed",
            Severity::High,
            "gateway.auth.mode",
            format!(
                "no shared secret while listening on {}: set gateway.auth.token (or --token)",
                g.host
            ),
        );
    }
    if exposed && !g.tls.enabled {
        add(
            "tls-off-exposed",
            Severity::High,
            "gateway.tls.enabled",
            format!(
                "plaintext ws:// on {}: tokens and messages cross the network in the clear; enable gateway.tls",
                g.host
            ),
        );
    }
    if g.tls.enabled && g.tls.allow_plaintext {
        add(
            "tls-plaintext-allowed",
            Severity::Medium,
            "gateway.tls.allowPlaintext",
            "TLS is on but plaintext is still accepted on the same port".into(),
        );
    }
    if !tls.min_version.contains("1.3") {
        add(
            "tls-below-1.3",
            if g.tls.enabled {
                Severity::Medium
            } else {
                Severity::Low
            },
            "security.transport.tls.minVersion",
            format!(
                "minimum TLS version is {}; TLS 1.3 is recommended",
                tls.min_version
            ),
        );
    }
    if g.tls.enabled && !tls.certificate_rotation.enabled {
        add(
            "tls-rotation-off",
            Severity::Low,
            "security.transport.tls.certificateRotation.enabled",
            "certificate files are not watched; a renewed certificate needs SIGHUP".into(),
        );
    }

    // Files that hold secrets must not be readable by others.
    let mode_of = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| m.permissions().mode() & 0o777)
    };
    for (p, what, sev) in [
        (state_dir.to_path_buf(), "state directory", Severity::Medium),
        (
            state_dir.join("devices"),
            "devices directory",
            Severity::Medium,
        ),
        (
            state_dir.join("devices").join("paired.json"),
            "paired-device store (device tokens, TOTP secrets)",
            Severity::High,
        ),
        (state_dir.join("journal.key"), "journal key", Severity::High),
    ] {
        if let Some(m) = mode_of(&p) {
            if m & 0o077 != 0 {
                add(
                    "state-file-readable",
                    sev,
                    &p.display().to_string(),
                    format!("{what} has mode {m:o}: readable by other users; chmod go-rwx"),
                );
            }
        }
    }
    if let Some(m) = g.tls.key.as_deref().and_then(mode_of) {
        if m & 0o077 != 0 {
            add(
                "tls-key-readable",
                Severity::High,
                "gateway.tls.key",
                format!("the TLS private key has mode {m:o}: readable by other users"),
            );
        }
    }

    let a = &cfg.access;
    if a.ip_whitelist
        .iter()
        .any(|e| matches!(e.trim(), "*" | "0.0.0.0/0" | "::/0"))
    {
        add(
            "allowlist-wildcard",
            Severity::Medium,
            "access.ipWhitelist",
            "the allowlist admits every address".into(),
        );
    } else if exposed && a.ip_whitelist.is_empty() {
        add(
            "allowlist-empty",
            Severity::Low,
            "access.ipWhitelist",
            "every address may connect; list the networks your clients use".into(),
        );
    }
    if a.allowed_origins
        .iter()
        .chain(&g.control_ui.allowed_origins)
        .any(|o| o.trim() == "*")
    {
        add(
            "origins-wildcard",
            Severity::Medium,
            "access.allowedOrigins",
            "any web page may open a WebSocket to the gateway from a browser".into(),
        );
    }
    let r = &a.rate_limiting;
    if r.global.is_none() && r.per_connection.is_none() && r.per_ip.is_none() {
        add(
            "rate-limits-off",
            if exposed {
                Severity::Medium
            } else {
                Severity::Low
            },
            "access.rateLimiting",
            "no request rate limit: one client can exhaust the gateway".into(),
        );
    }
    if exposed && a.max_connections_per_ip == 0 {
        add(
            "connections-per-ip-unlimited",
            Severity::Low,
            "access.maxConnectionsPerIp",
            "no cap on connections per address".into(),
        );
    }

    let p = &g.pairing;
    match p.mode {
        PairingMode::Disabled => add(
            "pairing-disabled",
            if exposed {
                Severity::High
            } else {
                Severity::Medium
            },
            "gateway.pairing.mode",
            "every device with a valid signature is approved without an operator".into(),
        ),
        PairingMode::Lenient => add(
            "pairing-lenient",
            Severity::Info,
            "gateway.pairing.mode",
            "unapproved devices are admitted (with no scopes) while they wait".into(),
        ),
        PairingMode::Strict => {}
    }
    for (net, pol) in [("lan", &p.policies.lan), ("wan", &p.policies.wan)] {
        if exposed && pol.auto_approve {
            add(
                "pairing-auto-approve",
                if net == "wan" {
                    Severity::High
                } else {
                    Severity::Medium
                },
                &format!("gateway.pairing.policies.{net}.autoApprove"),
                format!("new devices from {net} are approved without an operator"),
            );
        }
        if exposed && pol.token_lifetime.is_none() {
            add(
                "token-no-lifetime",
                Severity::Low,
                &format!("gateway.pairing.policies.{net}.tokenLifetime"),
                format!("device tokens issued to {net} devices never expire"),
            );
        }
        if exposed && !pol.require_token && mode == AuthMode::None {
            add(
                "token-not-required",
                Severity::Medium,
                &format!("gateway.pairing.policies.{net}.requireToken"),
                format!("{net} peers connect without any token"),
            );
        }
    }
    if exposed && !p.policies.wan.mfa && !a.authentication.mfa.enabled {
        add(
            "mfa-off-wan",
            Severity::Medium,
            "gateway.pairing.policies.wan.mfa",
            "admin and write scopes are granted to WAN peers without a second factor".into(),
        );
    }
    if p.policies.localhost.token_lifetime.is_none() {
        add(
            "token-no-lifetime",
            Severity::Info,
            "gateway.pairing.policies.localhost.tokenLifetime",
            "device tokens of loopback devices never expire".into(),
        );
    }
    if cfg.network.websocket.compression {
        add(
            "ws-compression-on",
            Severity::Low,
            "network.websocket.compression",
            "permessage-deflate is on: a frame that carries a secret next to text an attacker \
             influences leaks it through its compressed size (CRIME/BREACH); OpenClaw keeps it off"
                .into(),
        );
    }
    if g.dangerously_enable_ws_echo {
        add(
            "ws-echo-enabled",
            Severity::Medium,
            "gateway.dangerouslyEnableWsEcho",
            "an unauthenticated echo endpoint is served at /echo".into(),
        );
    }
    if g.dangerously_enable_test_hooks {
        add(
            "test-hooks-enabled",
            Severity::High,
            "gateway.dangerouslyEnableTestHooks",
            "anyone who reaches the port can stall the gateway's shards (/dangerously/)".into(),
        );
    }
    if cfg.storage.encryption.as_deref().unwrap_or("none") == "none"
        && cfg.queue.backend == "journal"
    {
        add(
            "journal-unencrypted",
            Severity::Low,
            "storage.encryption",
            "the durable queue journal is stored in the clear".into(),
        );
    }
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(b.id)));
    out
}

/// The `gateway.audit` payload.
pub fn report(cfg: &Config) -> Value {
    let findings = audit(cfg, &cfg.state_dir());
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    json!({
        "ok": findings.iter().all(|f| f.severity < Severity::High),
        "counts": {"high": count(Severity::High), "medium": count(Severity::Medium),
                   "low": count(Severity::Low), "info": count(Severity::Info)},
        "findings": findings.iter().map(|f| json!({"id": f.id, "severity": f.severity.as_str(),
            "key": f.key, "message": f.message})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.id).collect()
    }

    #[test]
    fn loopback_defaults_have_no_high_findings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let f = audit(&Config::default(), dir.path());
        assert!(f.iter().all(|f| f.severity < Severity::High), "{f:?}");
        assert!(ids(&f).contains(&"rate-limits-off"));
        assert!(!ids(&f).contains(&"ws-compression-on"), "off by default");
    }

    #[test]
    fn exposed_without_auth_or_tls_is_high() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("devices")).unwrap();
        let paired = dir.path().join("devices").join("paired.json");
        std::fs::write(&paired, "{}").unwrap();
        std::fs::set_permissions(&paired, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = Config::default();
        c.gateway.host = "0.0.0.0".into();
        c.gateway.pairing.mode = PairingMode::Disabled;
        c.security.transport.tls.min_version = "TLSv1.2".into();
        c.access.ip_whitelist = vec!["0.0.0.0/0".into()];
        c.network.websocket.compression = true;
        let f = audit(&c, dir.path());
        let got = ids(&f);
        for want in [
            "auth-none-exposed",
            "tls-off-exposed",
            "pairing-disabled",
            "state-file-readable",
            "allowlist-wildcard",
            "tls-below-1.3",
            "rate-limits-off",
            "ws-compression-on",
        ] {
            assert!(got.contains(&want), "{want} missing from {got:?}");
        }
        assert_eq!(f[0].severity, Severity::High, "sorted by severity");
    }
}
