//! Errors are data: every refusal the gateway can give is a variant here, and
//! [`GatewayError::wire`] is the one exhaustive match that maps it to the wire (top-level code,
//! `details.code`, retryability, and the close code when the connection must end).

use serde_json::{json, Value};

/// Top-level error codes of the OpenClaw protocol (exactly these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `NOT_LINKED`
    NotLinked,
    /// `NOT_PAIRED`
    NotPaired,
    /// `AGENT_TIMEOUT`
    AgentTimeout,
    /// `INVALID_REQUEST`
    InvalidRequest,
    /// `APPROVAL_NOT_FOUND`
    ApprovalNotFound,
    /// `UNAVAILABLE`
    Unavailable,
}

impl ErrorCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotLinked => "NOT_LINKED",
            ErrorCode::NotPaired => "NOT_PAIRED",
            ErrorCode::AgentTimeout => "AGENT_TIMEOUT",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::ApprovalNotFound => "APPROVAL_NOT_FOUND",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }
}

/// Everything the gateway refuses, with what the client needs to act on it.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayError {
    /// The first frame was not `connect`.
    HandshakeNotConnect,
    /// A malformed `connect` request.
    InvalidConnect(String),
    /// No protocol version in common.
    ProtocolMismatch {
        /// What the client offered.
        min: i64,
        /// What the client offered.
        max: i64,
    },
    /// Shared token required but absent.
    AuthTokenMissing,
    /// Shared token wrong.
    AuthTokenMismatch,
    /// Shared password required but absent.
    AuthPasswordMissing,
    /// Shared password wrong.
    AuthPasswordMismatch,
    /// Too many failed attempts from this IP.
    AuthRateLimited {
        /// When to try again.
        retry_after_ms: u64,
    },
    /// A device token was presented but does not match.
    DeviceTokenMismatch,
    /// A device token was presented but was revoked.
    DeviceTokenRevoked,
    /// A device token was presented but expired.
    DeviceTokenExpired,
    /// A device block is required.
    DeviceIdentityRequired,
    /// Signature does not verify.
    DeviceSignatureInvalid,
    /// `device.nonce` is not the challenge nonce.
    DeviceNonceMismatch,
    /// `signedAt` too far from now.
    DeviceSignatureExpired,
    /// `device.id` is not sha256 of the key.
    DeviceIdMismatch,
    /// `device.publicKey` cannot be parsed.
    DevicePublicKeyInvalid,
    /// The device must be approved by an operator first.
    PairingRequired {
        /// The pending request id.
        request_id: String,
        /// Why pairing is needed.
        reason: String,
    },
    /// A frame that is not a valid request.
    InvalidFrame(String),
    /// Bad or missing parameters.
    InvalidParams(String),
    /// No such method.
    UnknownMethod(String),
    /// The caller lacks a scope.
    MissingScope(&'static str),
    /// The caller's role may not call this.
    UnauthorizedRole(String),
    /// Too many authorization failures in a row.
    RepeatedUnauthorized,
    /// A referenced object does not exist.
    NotFound(String),
    /// A run did not finish in time.
    AgentTimeout(String),
    /// The session's ordering lane is full.
    LaneFull {
        /// When to try again.
        retry_after_ms: u64,
    },
    /// The queue is full.
    QueueFull {
        /// When to try again.
        retry_after_ms: u64,
    },
    /// The shard that owns the session is not keeping up (its mesh outbox is full).
    ShardBusy {
        /// When to try again.
        retry_after_ms: u64,
    },
    /// The durable queue backend (Redis) cannot be reached: nothing was acknowledged.
    BackendUnavailable {
        /// When to try again.
        retry_after_ms: u64,
    },
    /// In a cluster, the session's owner is changing or cannot be reached (its slot has no
    /// live lease holder yet, or the relay to it failed): nothing was acknowledged.
    OwnerUnavailable {
        /// When to try again.
        retry_after_ms: u64,
    },
    /// The gateway is stopping.
    ShuttingDown,
    /// A run failed in the agent.
    AgentFailed(String),
    /// A node is not connected, disconnected, or failed the call.
    NodeUnavailable(String),
    /// Over the memory cap: new work is refused until it recovers.
    Overloaded,
    /// The gateway's log file could not be read (`logs.tail`).
    LogReadFailed(String),
    /// No provider of a capability answered.
    CapabilityUnavailable {
        /// The capability.
        capability: String,
        /// Whether it is marked required.
        required: bool,
        /// What was tried, in order.
        tried: Value,
    },
    /// A message after hello larger than the limit.
    FrameTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A pre-auth message larger than the limit.
    PreauthTooLarge,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// The client cannot keep up with its events.
    SlowConsumer,
    /// A request rate limit (`access.rateLimiting`) refused the request.
    RateLimited {
        /// Which limit: `global`, `perIp`, `perConnection`.
        limit: &'static str,
        /// When a token will be there.
        retry_after_ms: u64,
    },
    /// The grant needs a TOTP code (`connect.params.auth.totp`) and none was given.
    MfaRequired,
    /// The TOTP code is wrong (or outside the ±30 s window).
    MfaInvalid,
    /// The TOTP code was already used.
    MfaReplayed,
    /// The grant needs TOTP but the device (or operator) has no TOTP secret enrolled.
    MfaNotEnrolled,
    /// The client certificate is not the one bound to this device.
    DeviceCertMismatch,
    /// No pending pairing request has this id (unknown, resolved or expired).
    ApprovalNotFound(String),
    /// `node.invoke` of a node whose command surface was never approved (OpenClaw: no
    /// pairing generation to invoke under).
    NodePairingChanged,
    /// `node.invoke` of an approved node that is not connected.
    NodeNotConnected(String),
    /// `node.invoke` of a command outside the node's effective surface (declared and
    /// approved).
    /// Boxed: the error travels by value in every answer and delivery effect, and this
    /// variant's four fields would double the size of every other.
    NodeCommandNotAllowed(Box<CommandNotAllowed>),
    /// A bootstrap token (setup code) that is unknown, expired, already used, or not for
    /// this role.
    BootstrapTokenInvalid,
}

/// How an error appears on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    /// Top-level code.
    pub code: ErrorCode,
    /// Human message.
    pub message: String,
    /// `details` (with `details.code`).
    pub details: Option<Value>,
    /// Whether retrying may succeed.
    pub retryable: bool,
    /// Suggested wait.
    pub retry_after_ms: Option<u64>,
    /// Close the connection with this code and reason after sending.
    pub close: Option<(u16, &'static str)>,
}

impl WireError {
    /// The `error` object of a `res` frame.
    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(d) = &self.details {
            e["details"] = d.clone();
        }
        if self.retryable {
            e["retryable"] = Value::Bool(true);
        }
        if let Some(ms) = self.retry_after_ms {
            e["retryAfterMs"] = json!(ms);
        }
        e
    }
}

/// OpenClaw's words for a refused setup code (also the close reason, < 123 bytes).
const BOOTSTRAP_INVALID: &str = "unauthorized: setup code invalid, expired, revoked, or already used (create a new code; review `openclaw devices list`)";

fn detail(code: &str) -> Option<Value> {
    Some(json!({ "code": code }))
}

/// What [`GatewayError::NodeCommandNotAllowed`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandNotAllowed {
    /// OpenClaw's hint for the reason.
    pub message: String,
    /// `command not declared by node` or `node did not declare commands`.
    pub reason: &'static str,
    /// The refused command.
    pub command: String,
    /// The pending request that would approve it, if any.
    pub request_id: Option<String>,
}

impl GatewayError {
    /// The single mapping of every variant to the wire.
    #[expect(
        clippy::type_complexity,
        reason = "one tuple per arm keeps the table readable"
    )]
    pub fn wire(&self) -> WireError {
        use ErrorCode::*;
        use GatewayError as E;
        let (code, message, details, retryable, retry_after_ms, close): (
            ErrorCode,
            String,
            Option<Value>,
            bool,
            Option<u64>,
            Option<(u16, &'static str)>,
        ) = match self {
            E::HandshakeNotConnect => (
                InvalidRequest,
                "invalid handshake: first request must be connect".into(),
                None,
                false,
                None,
                Some((1008, "invalid handshake")),
            ),
            E::InvalidConnect(why) => (
                InvalidRequest,
                format!("invalid connect params: {why}"),
                None,
                false,
                None,
                Some((1008, "invalid connect params")),
            ),
            E::ProtocolMismatch { min, max } => (
                InvalidRequest,
                "protocol mismatch".into(),
                Some(json!({"code": "PROTOCOL_MISMATCH", "expectedProtocol": 4,
                    "clientMinProtocol": min, "clientMaxProtocol": max, "minimumProbeProtocol": 3})),
                false,
                None,
                Some((1002, "protocol mismatch")),
            ),
            E::AuthTokenMissing => (
                InvalidRequest,
                "unauthorized: gateway token missing (set auth.token in connect params)".into(),
                detail("AUTH_TOKEN_MISSING"),
                false,
                None,
                Some((1008, "unauthorized")),
            ),
            E::AuthTokenMismatch => (
                InvalidRequest,
                "unauthorized: gateway token mismatch".into(),
                detail("AUTH_TOKEN_MISMATCH"),
                false,
                None,
                Some((1008, "unauthorized")),
            ),
            E::AuthPasswordMissing => (
                InvalidRequest,
                "unauthorized: gateway password missing".into(),
                detail("AUTH_PASSWORD_MISSING"),
                false,
                None,
                Some((1008, "unauthorized")),
            ),
            E::AuthPasswordMismatch => (
                InvalidRequest,
                "unauthorized: gateway password mismatch".into(),
                detail("AUTH_PASSWORD_MISMATCH"),
                false,
                None,
                Some((1008, "unauthorized")),
            ),
            E::AuthRateLimited { retry_after_ms } => (
                InvalidRequest,
                "unauthorized: too many failed authentication attempts".into(),
                detail("AUTH_RATE_LIMITED"),
                true,
                Some(*retry_after_ms),
                Some((1008, "unauthorized")),
            ),
            E::DeviceTokenMismatch => (
                InvalidRequest,
                "unauthorized: device token mismatch".into(),
                detail("AUTH_DEVICE_TOKEN_MISMATCH"),
                false,
                None,
                Some((1008, "unauthorized")),
            ),
            E::DeviceTokenRevoked => (
                InvalidRequest,
                "unauthorized: device token revoked".into(),
                detail("AUTH_DEVICE_TOKEN_REVOKED"),
                false,
                None,
                Some((1008, "unauthorized")),
            ),
            E::DeviceTokenExpired => (
                InvalidRequest,
                "unauthorized: device token expired".into(),
                detail("AUTH_DEVICE_TOKEN_EXPIRED"),
                false,
                None,
                Some((1008, "unauthorized")),
            ),
            E::DeviceIdentityRequired => (
                NotPaired,
                "device identity required".into(),
                detail("DEVICE_IDENTITY_REQUIRED"),
                false,
                None,
                Some((1008, "device identity required")),
            ),
            E::DeviceSignatureInvalid => (
                InvalidRequest,
                "device signature invalid".into(),
                detail("DEVICE_AUTH_SIGNATURE_INVALID"),
                false,
                None,
                Some((1008, "device signature invalid")),
            ),
            E::DeviceNonceMismatch => (
                InvalidRequest,
                "device nonce mismatch".into(),
                detail("DEVICE_AUTH_NONCE_MISMATCH"),
                false,
                None,
                Some((1008, "device nonce mismatch")),
            ),
            E::DeviceSignatureExpired => (
                InvalidRequest,
                "device signature expired".into(),
                detail("DEVICE_AUTH_SIGNATURE_EXPIRED"),
                false,
                None,
                Some((1008, "device signature expired")),
            ),
            E::DeviceIdMismatch => (
                InvalidRequest,
                "device identity mismatch".into(),
                detail("DEVICE_AUTH_DEVICE_ID_MISMATCH"),
                false,
                None,
                Some((1008, "device identity mismatch")),
            ),
            E::DevicePublicKeyInvalid => (
                InvalidRequest,
                "device public key invalid".into(),
                detail("DEVICE_AUTH_PUBLIC_KEY_INVALID"),
                false,
                None,
                Some((1008, "device public key invalid")),
            ),
            E::PairingRequired { request_id, reason } => (
                NotPaired,
                "pairing required".into(),
                Some(
                    json!({"code": "PAIRING_REQUIRED", "requestId": request_id, "reason": reason}),
                ),
                false,
                None,
                Some((1008, "pairing required")),
            ),
            E::InvalidFrame(why) => (
                InvalidRequest,
                format!("invalid request frame: {why}"),
                None,
                false,
                None,
                None,
            ),
            E::InvalidParams(why) => (InvalidRequest, why.clone(), None, false, None, None),
            E::UnknownMethod(m) => (
                InvalidRequest,
                format!("unknown method: {m}"),
                None,
                false,
                None,
                None,
            ),
            E::MissingScope(s) => (
                InvalidRequest,
                format!("missing scope: {s}"),
                None,
                false,
                None,
                None,
            ),
            E::UnauthorizedRole(r) => (
                InvalidRequest,
                format!("unauthorized role: {r}"),
                None,
                false,
                None,
                None,
            ),
            E::RepeatedUnauthorized => (
                InvalidRequest,
                "repeated unauthorized calls".into(),
                None,
                false,
                None,
                Some((1008, "repeated unauthorized calls")),
            ),
            E::NotFound(what) => (
                InvalidRequest,
                what.clone(),
                detail("NOT_FOUND"),
                false,
                None,
                None,
            ),
            E::AgentTimeout(why) => (
                AgentTimeout,
                why.clone(),
                detail("TIMEOUT"),
                true,
                None,
                None,
            ),
            E::LaneFull { retry_after_ms } => (
                Unavailable,
                "session queue is full".into(),
                detail("QUEUE_FULL"),
                true,
                Some(*retry_after_ms),
                None,
            ),
            E::QueueFull { retry_after_ms } => (
                Unavailable,
                "queue is full".into(),
                detail("QUEUE_FULL"),
                true,
                Some(*retry_after_ms),
                None,
            ),
            E::ShardBusy { retry_after_ms } => (
                Unavailable,
                "the session's shard is busy".into(),
                detail("SHARD_BUSY"),
                true,
                Some(*retry_after_ms),
                None,
            ),
            E::OwnerUnavailable { retry_after_ms } => (
                Unavailable,
                "the session's gateway is changing or unreachable: try again shortly".into(),
                detail("OWNER_UNAVAILABLE"),
                true,
                Some(*retry_after_ms),
                None,
            ),
            E::BackendUnavailable { retry_after_ms } => (
                Unavailable,
                "the queue backend is unavailable: try again shortly".into(),
                detail("BACKEND_UNAVAILABLE"),
                true,
                Some(*retry_after_ms),
                None,
            ),
            E::ShuttingDown => (
                Unavailable,
                "gateway is shutting down".into(),
                detail("SHUTTING_DOWN"),
                true,
                Some(1000),
                None,
            ),
            E::AgentFailed(why) => (
                Unavailable,
                why.clone(),
                detail("AGENT_FAILED"),
                true,
                None,
                None,
            ),
            E::CapabilityUnavailable {
                capability,
                required,
                tried,
            } => (
                Unavailable,
                format!(
                    "{} capability {capability} has no live provider",
                    if *required { "required" } else { "optional" }
                ),
                Some(
                    json!({"code": "CAPABILITY_UNAVAILABLE", "capability": capability, "required": required, "tried": tried}),
                ),
                true,
                Some(1000),
                None,
            ),
            E::Overloaded => (
                Unavailable,
                "gateway overloaded (memory cap): try again shortly".into(),
                detail("OVERLOADED"),
                true,
                Some(1000),
                None,
            ),
            // OpenClaw: UNAVAILABLE "log read failed: …", no details code.
            E::LogReadFailed(why) => (
                Unavailable,
                format!("log read failed: {why}"),
                None,
                false,
                None,
                None,
            ),
            E::NodeUnavailable(why) => (
                Unavailable,
                why.clone(),
                detail("NODE_UNAVAILABLE"),
                true,
                None,
                None,
            ),
            E::FrameTooLarge { limit } => (
                InvalidRequest,
                format!("frame too large (limit {limit} bytes)"),
                detail("FRAME_TOO_LARGE"),
                false,
                None,
                Some((1009, "frame too large")),
            ),
            E::PreauthTooLarge => (
                InvalidRequest,
                "preauth payload too large".into(),
                detail("FRAME_TOO_LARGE"),
                false,
                None,
                Some((1009, "preauth payload too large")),
            ),
            E::HandshakeTimeout => (
                InvalidRequest,
                "handshake timeout".into(),
                detail("HANDSHAKE_TIMEOUT"),
                false,
                None,
                Some((1008, "handshake timeout")),
            ),
            E::SlowConsumer => (
                Unavailable,
                "slow consumer".into(),
                detail("SLOW_CONSUMER"),
                false,
                None,
                Some((1008, "slow consumer")),
            ),
            E::RateLimited {
                limit,
                retry_after_ms,
            } => (
                Unavailable,
                format!("rate limited ({limit})"),
                Some(json!({"code": "RATE_LIMITED", "limit": limit})),
                true,
                Some(*retry_after_ms),
                None,
            ),
            E::MfaRequired => (
                InvalidRequest,
                "unauthorized: TOTP code required (connect.params.auth.totp)".into(),
                detail("MFA_REQUIRED"),
                false,
                None,
                Some((1008, "mfa required")),
            ),
            E::MfaInvalid => (
                InvalidRequest,
                "unauthorized: TOTP code invalid".into(),
                detail("MFA_INVALID"),
                false,
                None,
                Some((1008, "mfa invalid")),
            ),
            E::MfaReplayed => (
                InvalidRequest,
                "unauthorized: TOTP code already used".into(),
                detail("MFA_REPLAYED"),
                false,
                None,
                Some((1008, "mfa replayed")),
            ),
            E::MfaNotEnrolled => (
                InvalidRequest,
                "unauthorized: TOTP required but not enrolled (device.mfa.enroll)".into(),
                detail("MFA_NOT_ENROLLED"),
                false,
                None,
                Some((1008, "mfa not enrolled")),
            ),
            E::DeviceCertMismatch => (
                InvalidRequest,
                "unauthorized: client certificate is not the one bound to this device".into(),
                detail("DEVICE_CERT_MISMATCH"),
                false,
                None,
                Some((1008, "unauthorized")),
            ),
            // OpenClaw's words and code: the CLI recognises an unknown request by them
            // (`devices approve` then says "No pending device request matches …").
            E::ApprovalNotFound(id) => (
                InvalidRequest,
                "unknown requestId".into(),
                Some(json!({"code": "APPROVAL_NOT_FOUND", "requestId": id})),
                false,
                None,
                None,
            ),
            E::NodePairingChanged => (
                Unavailable,
                "node pairing changed while invocation was active".into(),
                detail("PAIRING_CHANGED"),
                true,
                None,
                None,
            ),
            E::NodeNotConnected(_) => (
                Unavailable,
                "node not connected".into(),
                Some(json!({"code": "NOT_CONNECTED",
                            "nodeError": {"code": "NOT_CONNECTED", "message": "node not connected"},
                            "nodeCommandDispatched": false})),
                false,
                None,
                None,
            ),
            E::NodeCommandNotAllowed(n) => (
                InvalidRequest,
                n.message.clone(),
                Some(json!({"reason": n.reason, "command": n.command, "requestId": n.request_id})),
                false,
                None,
                None,
            ),
            E::BootstrapTokenInvalid => (
                InvalidRequest,
                BOOTSTRAP_INVALID.into(),
                Some(json!({"code": "AUTH_BOOTSTRAP_TOKEN_INVALID",
                            "authReason": "bootstrap_token_invalid",
                            "canRetryWithDeviceToken": false,
                            "recommendedNextStep": "review_auth_configuration"})),
                false,
                None,
                Some((1008, BOOTSTRAP_INVALID)),
            ),
        };
        WireError {
            code,
            message,
            details,
            retryable,
            retry_after_ms,
            close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_code_is_a_protocol_one() {
        let all = [
            GatewayError::HandshakeNotConnect,
            GatewayError::ProtocolMismatch { min: 1, max: 2 },
            GatewayError::AuthTokenMismatch,
            GatewayError::PairingRequired {
                request_id: "r".into(),
                reason: "new".into(),
            },
            GatewayError::PreauthTooLarge,
            GatewayError::SlowConsumer,
            GatewayError::RepeatedUnauthorized,
            GatewayError::BootstrapTokenInvalid,
        ];
        for e in all {
            let w = e.wire();
            let (code, _) = w.close.expect("closes");
            assert!([1002, 1008, 1009].contains(&code), "{e:?}");
        }
    }

    #[test]
    fn protocol_mismatch_details() {
        let w = GatewayError::ProtocolMismatch { min: 1, max: 2 }.wire();
        let j = w.to_json();
        assert_eq!(j["code"], "INVALID_REQUEST");
        assert_eq!(j["details"]["code"], "PROTOCOL_MISMATCH");
        assert_eq!(j["details"]["expectedProtocol"], 4);
        assert_eq!(w.close.unwrap().0, 1002);
    }

    #[test]
    fn queue_full_is_retryable_with_delay() {
        let j = GatewayError::QueueFull {
            retry_after_ms: 500,
        }
        .wire()
        .to_json();
        assert_eq!(j["code"], "UNAVAILABLE");
        assert_eq!(j["details"]["code"], "QUEUE_FULL");
        assert_eq!(j["retryable"], true);
        assert_eq!(j["retryAfterMs"], 500);
    }
}
