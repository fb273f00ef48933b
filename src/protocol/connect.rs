//! The `connect` request (PROTOCOL.md §3) as it arrives on the wire, and what a connection is
//! once admitted ([`ConnAuth`]). The decision between the two is [`crate::auth::handshake`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::GatewayError;
use super::{MIN_PROBE_PROTOCOL, PROTOCOL_VERSION};

/// `connect.params.client`
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    /// `cli`, `gateway-client`, `openclaw-macos`, …
    pub id: Box<str>,
    /// Display name.
    pub display_name: Option<Box<str>>,
    /// Client version.
    pub version: Box<str>,
    /// `linux`, `darwin`, …
    pub platform: Box<str>,
    /// Device family.
    pub device_family: Option<Box<str>>,
    /// Model identifier.
    pub model_identifier: Option<Box<str>>,
    /// `cli, ui, webchat, backend, node, probe, test, worker`.
    pub mode: Box<str>,
    /// Instance id.
    pub instance_id: Option<Box<str>>,
}

/// `connect.params.auth`
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectAuth {
    /// Shared token.
    pub token: Option<String>,
    /// Shared password.
    pub password: Option<String>,
    /// Per-device token from an earlier `hello-ok`.
    pub device_token: Option<String>,
    /// Bootstrap token.
    pub bootstrap_token: Option<String>,
    /// TOTP code (RFC 6238, 6 digits), required for admin/write grants when MFA applies
    /// (`access.authentication.mfa`, `gateway.pairing.policies.*.mfa`). Ours.
    pub totp: Option<String>,
}

/// `connect.params.device`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceBlock {
    /// hex sha256 of the raw public key.
    pub id: String,
    /// base64url raw key (or PEM).
    pub public_key: String,
    /// base64url signature.
    pub signature: String,
    /// ms since epoch.
    pub signed_at: i64,
    /// The challenge nonce.
    pub nonce: String,
}

/// `connect.params`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectParams {
    /// Lowest protocol the client speaks.
    pub min_protocol: i64,
    /// Highest protocol the client speaks.
    pub max_protocol: i64,
    /// Who the client is.
    pub client: ClientInfo,
    /// `operator` (default) or `node`.
    #[serde(default)]
    pub role: Option<String>,
    /// Requested scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Node capabilities.
    #[serde(default)]
    pub caps: Vec<String>,
    /// Node commands.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Node permissions.
    #[serde(default)]
    pub permissions: Option<Value>,
    /// Shared or device auth.
    #[serde(default)]
    pub auth: Option<ConnectAuth>,
    /// Device identity proof.
    #[serde(default)]
    pub device: Option<DeviceBlock>,
    /// Locale.
    #[serde(default)]
    pub locale: Option<String>,
    /// User agent.
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// Parses `connect.params`.
pub fn parse_params(params: &Value) -> Result<ConnectParams, GatewayError> {
    let p: ConnectParams = serde_json::from_value(params.clone())
        .map_err(|e| GatewayError::InvalidConnect(e.to_string()))?;
    if p.client.id.is_empty() {
        return Err(GatewayError::InvalidConnect(
            "client.id must not be empty".into(),
        ));
    }
    if p.min_protocol > p.max_protocol {
        return Err(GatewayError::InvalidConnect(
            "minProtocol > maxProtocol".into(),
        ));
    }
    Ok(p)
}

/// Decides the protocol version.
pub fn negotiate(p: &ConnectParams, role: &str) -> Result<i64, GatewayError> {
    let probe_like = role == "node" || &*p.client.mode == "probe" || &*p.client.mode == "node";
    let floor = if probe_like {
        MIN_PROBE_PROTOCOL
    } else {
        PROTOCOL_VERSION
    };
    if p.max_protocol < floor || p.min_protocol > PROTOCOL_VERSION {
        return Err(GatewayError::ProtocolMismatch {
            min: p.min_protocol,
            max: p.max_protocol,
        });
    }
    Ok(p.max_protocol.min(PROTOCOL_VERSION))
}

/// What an authenticated connection is allowed and who it is (serialized when its request
/// is relayed to another gateway of a cluster).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnAuth {
    /// `operator` or `node`.
    pub role: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The client block of `connect`.
    pub client: ClientInfo,
    /// Verified device id.
    pub device_id: Option<String>,
    /// Speaks the seed article's dialect.
    pub seed: bool,
}

impl ConnAuth {
    /// Who is acting: the verified device id, else the client id.
    pub fn actor(&self) -> &str {
        self.device_id.as_deref().unwrap_or(&self.client.id)
    }
}
