//! Session keys ([`shardgate::protocol::session_key::SessionKey::parse`]): normalisation
//! decides the owning shard, so it must be a function of the session, not of its spelling.
//!
//! Input: `[agent, key…]`; `agent` picks the default agent id.
//!
//! Invariants: never a panic; a key is `agent:<valid id>:<non-empty rest>`, at most
//! `MAX_KEY_LEN` bytes, with no legacy `:dm:` left; normalising it again changes nothing
//! (whatever the default agent); ASCII case does not matter.

use shardgate::protocol::session_key::{valid_agent_id, SessionKey, MAX_KEY_LEN};

const AGENTS: [&str; 3] = ["main", "ops", "a-1_b"];

/// The target.
pub fn run(data: &[u8]) {
    let [agent, key @ ..] = data else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(key) else {
        return;
    };
    let agent = AGENTS[usize::from(*agent) % AGENTS.len()];
    let Ok(k) = SessionKey::parse(raw, agent) else {
        return;
    };
    let s = k.as_str();
    assert!(s.len() <= MAX_KEY_LEN, "{s:?}");
    assert!(s.starts_with("agent:"), "{s:?}");
    assert!(valid_agent_id(k.agent_id()), "{s:?}");
    assert!(s.len() > 7 + k.agent_id().len(), "empty rest: {s:?}");
    assert!(!s.contains(":dm:"), "{raw:?} → {s:?}");
    for other in AGENTS {
        assert_eq!(
            SessionKey::parse(s, other).as_ref(),
            Ok(&k),
            "{raw:?} → {s:?}"
        );
    }
    let upper = SessionKey::parse(&raw.to_ascii_uppercase(), agent);
    assert_eq!(upper.as_ref(), Ok(&k), "{raw:?} upper-cased");
}
