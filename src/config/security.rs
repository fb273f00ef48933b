//! Security knobs: pairing policies (`gateway.pairing`), TLS (`gateway.tls`,
//! `security.transport.tls`), browser origins (`gateway.controlUi`), and access limits
//! (`access`: IP allowlist, rate limits, authentication methods, MFA).
//!
//! Every default here is the conservative one that keeps a loopback-only gateway working
//! without configuration; `gateway.audit` lists what a wider deployment should change.

use serde::{Deserialize, Serialize};

use super::duration::Millis;

// ---------------------------------------------------------------------------------------------
// gateway.pairing
// ---------------------------------------------------------------------------------------------

/// `gateway.pairing`: who may pair a new device, and on what terms, by where the peer is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PairingConfig {
    /// `strict` (default): a device its network's policy does not auto-approve is refused
    /// with `PAIRING_REQUIRED` until an operator approves it. `lenient`: such a device is
    /// admitted with no scopes (only `health`) while its request is pending. `disabled`: no
    /// pairing gate at all, every verified device is approved silently from anywhere
    /// (dangerous off loopback; `gateway.audit` says so).
    pub mode: PairingMode,
    /// Policies by where the peer is.
    pub policies: PairingPolicies,
    /// Address ranges (CIDR) that count as `lan`; loopback is `localhost`, everything else
    /// `wan`. Default: the private and link-local ranges (RFC 1918, RFC 6598, RFC 4193,
    /// 169.254/16, fe80::/10).
    pub lan_ranges: Vec<String>,
    /// How long a pairing request waits for an operator before it is forgotten. Default "5m".
    pub pending_ttl: Millis,
    /// How long a setup code (`device.pair.setupCode`, `openclaw devices join-code`) and its
    /// bootstrap token stay redeemable. Default "10m" (OpenClaw's). Each is single-use
    /// either way; a longer life leaves a bearer credential valid for longer.
    pub setup_code_ttl: Millis,
    /// The gateway URL written into setup codes (`ws://…` or `wss://…`; OpenClaw's
    /// `plugins.entries.device-pair.config.publicUrl`). Default null: the bound address when
    /// the gateway listens beyond loopback; a loopback-only gateway refuses to mint codes
    /// (a code naming 127.0.0.1 is of no use to another machine), as OpenClaw does.
    pub public_url: Option<String>,
}

impl Default for PairingConfig {
    fn default() -> Self {
        PairingConfig {
            mode: PairingMode::Strict,
            policies: PairingPolicies::default(),
            lan_ranges: DEFAULT_LAN_RANGES.iter().map(|s| s.to_string()).collect(),
            pending_ttl: Millis(300_000),
            setup_code_ttl: Millis(600_000),
            public_url: None,
        }
    }
}

/// The private and link-local ranges that count as `lan` by default.
pub const DEFAULT_LAN_RANGES: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

/// `gateway.pairing.mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PairingMode {
    /// Refuse until approved.
    Strict,
    /// Admit with no scopes until approved.
    Lenient,
    /// Approve every verified device silently.
    Disabled,
}

impl PairingMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PairingMode::Strict => "strict",
            PairingMode::Lenient => "lenient",
            PairingMode::Disabled => "disabled",
        }
    }
}

/// `gateway.pairing.policies`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PairingPolicies {
    /// Direct loopback peers. Default: auto-approve, no token required, tokens do not expire.
    pub localhost: NetPolicy,
    /// Peers in `gateway.pairing.lanRanges`. Default: operator approval, token required,
    /// tokens live "30d".
    pub lan: NetPolicy,
    /// Everyone else. Default: operator approval, token required, TOTP for admin/write
    /// scopes, tokens live "7d".
    pub wan: NetPolicy,
}

impl Default for PairingPolicies {
    fn default() -> Self {
        PairingPolicies {
            localhost: NetPolicy {
                auto_approve: true,
                require_token: false,
                token_lifetime: None,
                mfa: false,
            },
            lan: NetPolicy::default(),
            wan: NetPolicy {
                auto_approve: false,
                require_token: true,
                token_lifetime: Some(Millis(7 * 86_400_000)),
                mfa: true,
            },
        }
    }
}

/// One network class's pairing terms. A policy written in the config file starts from
/// `{autoApprove: false, requireToken: true, tokenLifetime: "30d", mfa: false}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NetPolicy {
    /// A new device (or one asking for more scopes) is approved without an operator.
    pub auto_approve: bool,
    /// The connect must carry a token (the shared token/password or a device token) even
    /// when `gateway.auth.mode` is `none`.
    pub require_token: bool,
    /// Lifetime of device tokens issued to devices paired from here; `null` = no expiry.
    pub token_lifetime: Option<Millis>,
    /// TOTP (`connect.params.auth.totp`) is required before the scopes named in
    /// `access.authentication.mfa.requiredFor` are granted to peers from here.
    pub mfa: bool,
}

impl Default for NetPolicy {
    fn default() -> Self {
        NetPolicy {
            auto_approve: false,
            require_token: true,
            token_lifetime: Some(Millis(30 * 86_400_000)),
            mfa: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// gateway.tls, security.transport.tls
// ---------------------------------------------------------------------------------------------

/// `gateway.tls`: TLS (`wss://`) on the gateway's port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct TlsConfig {
    /// Serve TLS. Default false.
    pub enabled: bool,
    /// PEM certificate chain file (leaf first).
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key file (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<std::path::PathBuf>,
    /// PEM file of CAs whose client certificates are accepted (mTLS). Default none.
    pub client_ca: Option<std::path::PathBuf>,
    /// With `clientCa`: refuse TLS clients without a valid client certificate. Default false
    /// (a certificate is verified when presented, and optional otherwise).
    pub require_client_cert: bool,
    /// With TLS on, still accept plain `ws://`/HTTP on the same port. Default false: a
    /// plaintext request gets HTTP 400 "TLS required".
    pub allow_plaintext: bool,
}

/// `security`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct SecurityConfig {
    /// `security.transport`
    pub transport: TransportSecurity,
}

/// `security.transport`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct TransportSecurity {
    /// `security.transport.tls`
    pub tls: TlsPolicy,
}

/// `security.transport.tls`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TlsPolicy {
    /// Lowest protocol version: `"TLSv1.3"` (default) or `"TLSv1.2"` (also `"1.3"`, `"1.2"`).
    pub min_version: String,
    /// Cipher suites to offer, IANA names (`TLS_AES_256_GCM_SHA384`,
    /// `TLS_CHACHA20_POLY1305_SHA256`, `TLS_AES_128_GCM_SHA256`, and the TLS 1.2
    /// `TLS_ECDHE_*` suites). Empty (default) = every suite of the allowed versions.
    pub ciphers: Vec<String>,
    /// Picking up new certificate files without a restart.
    pub certificate_rotation: CertRotation,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        TlsPolicy {
            min_version: "TLSv1.3".into(),
            ciphers: Vec::new(),
            certificate_rotation: CertRotation::default(),
        }
    }
}

/// `security.transport.tls.certificateRotation`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CertRotation {
    /// Reload the cert/key when their files change (checked every `checkInterval`). SIGHUP
    /// reloads at once either way. Default true.
    pub enabled: bool,
    /// How often the files' modification times are checked. Default "2s".
    pub check_interval: Millis,
}

impl Default for CertRotation {
    fn default() -> Self {
        CertRotation {
            enabled: true,
            check_interval: Millis(2_000),
        }
    }
}

/// `gateway.controlUi`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ControlUiConfig {
    /// Browser origins allowed to open the WebSocket (OpenClaw's key; merged with
    /// `access.allowedOrigins`).
    pub allowed_origins: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// access
// ---------------------------------------------------------------------------------------------

/// `access`: who may connect, and how much they may ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AccessConfig {
    /// CIDR ranges (`192.168.1.0/24`), single addresses and host names (`vpn.company.com`,
    /// resolved and cached for `hostResolveTtl`). Empty (default) = every address. Loopback
    /// is always allowed (the local CLI must reach its gateway). Refusal: HTTP 403.
    pub ip_whitelist: Vec<String>,
    /// How long a host name's addresses are trusted before they are resolved again.
    /// Default "5m".
    pub host_resolve_ttl: Millis,
    /// Browser origins (`https://ui.example.com`) allowed to open the WebSocket; a request
    /// with an `Origin` header that is neither listed nor the gateway's own origin gets HTTP
    /// 403. Requests without `Origin` (non-browser clients) are not affected. `"*"` allows
    /// any (audit warns).
    pub allowed_origins: Vec<String>,
    /// WebSocket connections at once from one IP address (all shards, authenticated or not);
    /// 0 (default) = no cap. Over it: HTTP 429.
    pub max_connections_per_ip: usize,
    /// Requests per minute.
    pub rate_limiting: RateLimiting,
    /// Authentication methods and MFA.
    pub authentication: Authentication,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            ip_whitelist: Vec::new(),
            host_resolve_ttl: Millis(300_000),
            allowed_origins: Vec::new(),
            max_connections_per_ip: 0,
            rate_limiting: RateLimiting::default(),
            authentication: Authentication::default(),
        }
    }
}

/// `access.rateLimiting`: token buckets on the request path, per shard, lock-free. Each rate
/// is `"1000rpm"`, `"20rps"` or a number (per minute); `null` = no limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RateLimiting {
    /// All requests of the gateway. Split evenly over shards (each shard gets rate/N).
    pub global: Option<PerMinute>,
    /// Requests of one connection (exact: a connection lives on one shard).
    pub per_connection: Option<PerMinute>,
    /// Requests of one client IP. Split evenly over shards like `global`, so the total
    /// never exceeds it.
    pub per_ip: Option<PerMinute>,
    /// Bucket depth as time at the full rate: a client idle for this long may send this
    /// much at once. Default "10s".
    pub burst: Millis,
}

impl Default for RateLimiting {
    fn default() -> Self {
        RateLimiting {
            global: None,
            per_connection: None,
            per_ip: None,
            burst: Millis(10_000),
        }
    }
}

/// A rate in requests per minute; reads `"1000rpm"`, `"20rps"`, `"100/min"` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PerMinute(pub u64);

impl PerMinute {
    /// Parses a rate.
    pub fn parse(s: &str) -> Result<PerMinute, String> {
        let t = s.trim().to_ascii_lowercase();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("expected a rate like \"100rpm\", got {s:?}"))?;
        let mult = match unit.trim() {
            "" | "rpm" | "/min" | "/m" => 1,
            "rps" | "/s" | "/sec" => 60,
            u => return Err(format!("unknown rate unit {u:?} in {s:?} (rpm, rps)")),
        };
        Ok(PerMinute(n.saturating_mul(mult)))
    }
}

impl Serialize for PerMinute {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}rpm", self.0))
    }
}

impl<'de> Deserialize<'de> for PerMinute {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(PerMinute(n)),
            Raw::S(s) => PerMinute::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// `access.authentication`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Authentication {
    /// `token` (shared token/password and device tokens) and/or `certificate` (a client
    /// certificate verified against `gateway.tls.clientCa` stands in for the shared secret,
    /// and is bound to the device it first paired). `oauth` is not available. Default
    /// `["token"]`.
    pub methods: Vec<String>,
    /// TOTP second factor.
    pub mfa: MfaConfig,
}

impl Default for Authentication {
    fn default() -> Self {
        Authentication {
            methods: vec!["token".into()],
            mfa: MfaConfig::default(),
        }
    }
}

/// `access.authentication.mfa`: TOTP (RFC 6238, SHA-1, 6 digits, 30 s) at connect, in
/// `connect.params.auth.totp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MfaConfig {
    /// Require TOTP from every network (not only those whose pairing policy says `mfa`).
    /// Default false.
    pub enabled: bool,
    /// Which grants need the code: `admin` (operator.admin), `write` (operator.write, and
    /// admin which includes it). Default both.
    pub required_for: Vec<String>,
    /// Base32 TOTP secret of the device-less operator (shared token/password). Secret:
    /// redacted. Devices enrol with `device.mfa.enroll`.
    pub operator_secret: Option<String>,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig {
            enabled: false,
            required_for: vec!["admin".into(), "write".into()],
            operator_secret: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(PerMinute::parse("1000rpm").unwrap(), PerMinute(1000));
        assert_eq!(PerMinute::parse("2rps").unwrap(), PerMinute(120));
        assert_eq!(PerMinute::parse("60").unwrap(), PerMinute(60));
        assert!(PerMinute::parse("fast").is_err());
        let v: PerMinute = serde_json::from_value(serde_json::json!(30)).unwrap();
        assert_eq!(v, PerMinute(30));
    }
}
