//! Authorization (PROTOCOL.md §4): whether a caller's role and scopes pass what a method
//! needs (the needs are in the method table, [`super::method::Method::need`]).

use super::error::GatewayError;
use super::method::{Called, Method};
pub use super::scope::{Need, ADMIN, APPROVALS, PAIRING, QUESTIONS, READ, TALK, WRITE};

/// Server capabilities this gateway really serves. Listed in `hello-ok.features.capabilities`;
/// a client checks them before calling (`openclaw models list` needs
/// `published-model-catalog`: `models.list` answers the models runs use, with details).
pub const CAPABILITIES: &[&str] = &["published-model-catalog"];

/// Events this gateway emits. Listed in `hello-ok.features.events`.
pub const EVENTS: &[&str] = &[
    "connect.challenge",
    "tick",
    "presence",
    "health",
    "shutdown",
    "agent",
    "chat",
    "sessions.changed",
    "node.invoke.request",
    "node.event",
    "device.pair.requested",
    "device.pair.resolved",
    "node.pair.requested",
    "node.pair.resolved",
    "worker.run.request",
    "worker.ping",
];

/// Checks that a caller with `role` and `scopes` may call `method`: a method of the table
/// ([`super::method::Method`]), that a node may call when the role is `node`, else one whose
/// scope the caller holds. Answers the method to run.
pub fn authorize(method: &Called, role: &str, scopes: &[String]) -> Result<Method, GatewayError> {
    let method = match method {
        Called::Known(m) => *m,
        Called::Unknown(name) => return Err(GatewayError::UnknownMethod(name.clone())),
    };
    if role == "node" {
        return if method.node_may_call() {
            Ok(method)
        } else {
            Err(GatewayError::UnauthorizedRole("node".into()))
        };
    }
    match method.need() {
        Need::Open => Ok(method),
        Need::Scope(s) => {
            let has = |x: &str| scopes.iter().any(|g| g == x);
            if has(ADMIN) || has(s) || (s == READ && has(WRITE)) {
                Ok(method)
            } else {
                Err(GatewayError::MissingScope(s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By name, as a request names it.
    fn authorize(method: &str, role: &str, scopes: &[String]) -> Result<Method, GatewayError> {
        super::authorize(&Called::from(method), role, scopes)
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn rules() {
        assert!(authorize("health", "operator", &[]).is_ok());
        assert_eq!(
            authorize("status", "operator", &[]),
            Err(GatewayError::MissingScope(READ))
        );
        assert!(authorize("status", "operator", &s(&[WRITE])).is_ok());
        assert!(authorize("agent", "operator", &s(&[READ])).is_err());
        assert!(authorize("system-event", "operator", &s(&[ADMIN])).is_ok());
        assert!(authorize("system-event", "operator", &s(&[WRITE])).is_err());
        assert_eq!(
            authorize("status", "node", &[]),
            Err(GatewayError::UnauthorizedRole("node".into()))
        );
        assert!(authorize("health", "node", &[]).is_ok());
        assert_eq!(
            authorize("nope", "operator", &s(&[ADMIN])),
            Err(GatewayError::UnknownMethod("nope".into()))
        );
    }
}
