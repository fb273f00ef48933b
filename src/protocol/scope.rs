//! Operator scopes (PROTOCOL.md §4) and what a method requires. Kept apart from
//! [`super::authz`] (which checks them) and [`super::method`] (which assigns them) so that
//! neither imports the other.

/// Read scope.
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
