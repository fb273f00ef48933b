//! Authorization (PROTOCOL.md §4): which scope or role each method needs.

use super::error::GatewayError;

/// Scopes of the operator role.
pub const READ: &str = "operator.read";
/// Write scope (also passes read methods).
pub const WRITE: &str = "operator.write";
/// Admin scope (passes everything).
pub const ADMIN: &str = "operator.admin";
/// Approvals scope.
pub const APPROVALS: &str = "operator.approvals";
/// Pairing scope.
pub const PAIRING: &str = "operator.pairing";
/// Questions scope (`question.*`).
pub const QUESTIONS: &str = "operator.questions";
/// Talk scope (`talk.*`).
pub const TALK: &str = "operator.talk";

/// What a method requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone connected.
    Open,
    /// A scope (admin passes all, write passes read).
    Scope(&'static str),
}

/// Methods a node may call.
const NODE_METHODS: &[&str] = &[
    "node.invoke.result",
    "node.event",
    "node.runnerInventory.update",
    "node.skills.update",
    "node.pluginTools.update",
    "node.pair.request",
    "node.pending.drain",
    "node.pending.pull",
    "node.pending.ack",
    "worker.run.event",
    "worker.run.result",
    "worker.pong",
    "health",
];

/// Every method this gateway implements, with its requirement. Listed in
/// `hello-ok.features.methods`.
pub const METHODS: &[(&str, Need)] = &[
    ("health", Need::Open),
    ("status", Need::Scope(READ)),
    ("system-presence", Need::Scope(READ)),
    ("last-heartbeat", Need::Scope(READ)),
    ("gateway.identity.get", Need::Scope(READ)),
    ("channels.status", Need::Scope(READ)),
    ("models.list", Need::Scope(READ)),
    ("config.get", Need::Scope(READ)),
    ("sessions.list", Need::Scope(READ)),
    ("sessions.get", Need::Scope(READ)),
    ("sessions.subscribe", Need::Scope(READ)),
    ("sessions.unsubscribe", Need::Scope(READ)),
    ("sessions.describe", Need::Scope(READ)),
    ("chat.history", Need::Scope(READ)),
    ("agent.wait", Need::Scope(WRITE)),
    ("agent", Need::Scope(WRITE)),
    ("chat.send", Need::Scope(WRITE)),
    ("chat.abort", Need::Scope(WRITE)),
    ("sessions.create", Need::Scope(WRITE)),
    ("sessions.send", Need::Scope(WRITE)),
    ("sessions.abort", Need::Scope(WRITE)),
    ("sessions.reset", Need::Scope(WRITE)),
    ("sessions.delete", Need::Scope(WRITE)),
    ("sessions.patch", Need::Scope(WRITE)),
    ("sessions.compact", Need::Scope(ADMIN)),
    ("send", Need::Scope(WRITE)),
    ("node.list", Need::Scope(READ)),
    ("node.describe", Need::Scope(READ)),
    ("node.invoke", Need::Scope(WRITE)),
    ("node.invoke.result", Need::Scope(ADMIN)),
    ("node.event", Need::Scope(ADMIN)),
    ("node.runnerInventory.update", Need::Scope(ADMIN)),
    ("node.skills.update", Need::Scope(ADMIN)),
    ("node.pluginTools.update", Need::Scope(ADMIN)),
    ("worker.run.event", Need::Scope(ADMIN)),
    ("worker.run.result", Need::Scope(ADMIN)),
    ("worker.pong", Need::Scope(ADMIN)),
    ("workers.status", Need::Scope(READ)),
    ("capabilities.status", Need::Scope(READ)),
    ("capability.invoke", Need::Scope(WRITE)),
    ("system-event", Need::Scope(ADMIN)),
    ("queue.status", Need::Scope(ADMIN)),
    ("queue.stats", Need::Scope(ADMIN)),
    ("queue.inspect", Need::Scope(ADMIN)),
    ("queue.redrive", Need::Scope(ADMIN)),
    ("gateway.trace", Need::Scope(ADMIN)),
    ("gateway.audit", Need::Scope(ADMIN)),
    ("device.pair.list", Need::Scope(PAIRING)),
    ("device.pair.approve", Need::Scope(PAIRING)),
    ("device.pair.reject", Need::Scope(PAIRING)),
    ("device.pair.remove", Need::Scope(PAIRING)),
    ("device.token.rotate", Need::Scope(PAIRING)),
    ("device.token.revoke", Need::Scope(PAIRING)),
    ("device.mfa.enroll", Need::Scope(PAIRING)),
    ("device.pair.setupCode", Need::Scope(ADMIN)),
    ("node.pair.request", Need::Scope(PAIRING)),
    ("node.pair.list", Need::Scope(PAIRING)),
    ("node.pair.approve", Need::Scope(PAIRING)),
    ("node.pair.reject", Need::Scope(PAIRING)),
    ("node.pair.verify", Need::Scope(PAIRING)),
    ("node.pair.remove", Need::Scope(PAIRING)),
    ("gateway.stats", Need::Scope(ADMIN)),
    ("gateway.connections", Need::Scope(ADMIN)),
    ("gateway.latency", Need::Scope(ADMIN)),
    ("gateway.diagnose", Need::Scope(ADMIN)),
    ("gateway.profile", Need::Scope(ADMIN)),
    // Operations and catalogs real OpenClaw clients call (src/ops/compat.rs); scopes as
    // OpenClaw's method table has them.
    ("logs.tail", Need::Scope(READ)),
    ("system.info", Need::Scope(READ)),
    ("diagnostics.stability", Need::Scope(READ)),
    ("doctor.memory.status", Need::Scope(READ)),
    ("wake", Need::Scope(WRITE)),
    ("set-heartbeats", Need::Scope(ADMIN)),
    ("cron.list", Need::Scope(READ)),
    ("cron.status", Need::Scope(READ)),
    ("exec.approvals.get", Need::Scope(ADMIN)),
    ("plugin.approval.list", Need::Scope(APPROVALS)),
    ("question.list", Need::Scope(QUESTIONS)),
    ("agents.list", Need::Scope(READ)),
    ("agent.identity.get", Need::Scope(READ)),
    ("commands.list", Need::Scope(READ)),
    ("tools.catalog", Need::Scope(READ)),
    ("skills.status", Need::Scope(READ)),
    ("hooks.status", Need::Scope(READ)),
    ("usage.status", Need::Scope(READ)),
    ("usage.cost", Need::Scope(READ)),
    ("tasks.list", Need::Scope(READ)),
    ("taskSuggestions.list", Need::Scope(READ)),
    ("talk.config", Need::Scope(TALK)),
    ("update.status", Need::Scope(ADMIN)),
    ("voicewake.get", Need::Scope(READ)),
];

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

/// The table entry of `method`: its interned name and requirement. One hash lookup (the
/// request path does this for authorization and for every metric it records).
pub fn lookup(method: &str) -> Option<(&'static str, Need)> {
    // aHash with fixed keys: the table is read-only, so keys a client picks cannot slow it
    // (no inserts to collide), and this is several times cheaper than SipHash.
    type Index = std::collections::HashMap<&'static str, Need, ahash::RandomState>;
    static INDEX: std::sync::OnceLock<Index> = std::sync::OnceLock::new();
    INDEX
        .get_or_init(|| {
            let mut m = Index::with_capacity_and_hasher(
                METHODS.len(),
                ahash::RandomState::with_seeds(1, 2, 3, 4),
            );
            m.extend(METHODS.iter().copied());
            m
        })
        .get_key_value(method)
        .map(|(m, n)| (*m, *n))
}

/// Checks that a caller with `role` and `scopes` may call `method`.
pub fn authorize(method: &str, role: &str, scopes: &[String]) -> Result<(), GatewayError> {
    let need = lookup(method)
        .map(|(_, n)| n)
        .ok_or_else(|| GatewayError::UnknownMethod(method.to_string()))?;
    if role == "node" {
        return if NODE_METHODS.contains(&method) {
            Ok(())
        } else {
            Err(GatewayError::UnauthorizedRole("node".into()))
        };
    }
    match need {
        Need::Open => Ok(()),
        Need::Scope(s) => {
            let has = |x: &str| scopes.iter().any(|g| g == x);
            if has(ADMIN) || has(s) || (s == READ && has(WRITE)) {
                Ok(())
            } else {
                Err(GatewayError::MissingScope(s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
