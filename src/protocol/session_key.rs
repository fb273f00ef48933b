//! Session keys (PROTOCOL.md §10): normalisation decides the owning shard, so two spellings of
//! one session must normalise to the same string.

use std::fmt;

/// Longest key accepted, bytes.
pub const MAX_KEY_LEN: usize = 512;

/// A normalised session key `agent:<agentId>:<rest>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(String);

impl SessionKey {
    /// Normalises a request's key: lower-cased, `agent:` scoped (a bare key `k` becomes
    /// `agent:<default_agent>:k`, `main` the main session), legacy `:dm:` becomes `:direct:`.
    pub fn parse(raw: &str, default_agent: &str) -> Result<SessionKey, String> {
        // Every request's key comes through here: one pass over bytes and one allocation for
        // the usual ASCII key (`tests::matches_the_plain_definition` holds it to the plain
        // lower-case, check, prefix and rewrite steps).
        let t = raw.trim();
        if t.is_empty() {
            return Err("sessionKey must not be empty".into());
        }
        if t.len() > MAX_KEY_LEN {
            return Err(format!("sessionKey longer than {MAX_KEY_LEN} bytes"));
        }
        // For ASCII, control characters and whitespace are the bytes up to the space and DEL:
        // one pass over the bytes finds those or the first non-ASCII byte, and only text with
        // the latter is checked again char by char.
        let bad = match t.bytes().position(|b| b <= b' ' || b >= 0x7f) {
            None => false,
            Some(i) if t.as_bytes()[i] < 0x80 => true,
            Some(_) => t.chars().any(|c| c.is_control() || c.is_whitespace()),
        };
        if bad {
            return Err("sessionKey must not contain whitespace or control characters".into());
        }
        let scoped = t.len() >= 6 && t.as_bytes()[..6].eq_ignore_ascii_case(b"agent:");
        let full = if scoped {
            let k = t.to_ascii_lowercase();
            let rest = &k[6..];
            let (agent, tail) = rest.split_once(':').unwrap_or((rest, ""));
            if !valid_agent_id(agent) {
                return Err(format!("invalid agent id {agent:?} in sessionKey"));
            }
            match (rest.len() == agent.len(), tail.is_empty()) {
                // `agent:<id>`: its main session.
                (true, _) => format!("{k}:main"),
                (false, true) => return Err("sessionKey has an empty tail".into()),
                // Already whole: the lower-cased text is the key (no second copy).
                (false, false) => k,
            }
        } else {
            let mut full = String::with_capacity(7 + default_agent.len() + t.len());
            for part in ["agent:", default_agent, ":", t] {
                full.push_str(part);
            }
            let at = full.len() - t.len();
            full[at..].make_ascii_lowercase();
            full
        };
        // Only legacy keys pay for the rewrite.
        let full = if full.as_bytes().windows(4).any(|w| w == b":dm:") {
            rewrite_dm(&full)
        } else {
            full
        };
        if full.len() > MAX_KEY_LEN {
            return Err(format!("sessionKey longer than {MAX_KEY_LEN} bytes"));
        }
        Ok(SessionKey(full))
    }

    /// The main session of an agent.
    pub fn main(agent: &str) -> SessionKey {
        SessionKey(format!("agent:{agent}:main"))
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The agent id part.
    pub fn agent_id(&self) -> &str {
        // Agent ids are short ASCII: a byte scan beats the general `split` searcher.
        let rest = &self.0[6..];
        let end = rest.bytes().position(|b| b == b':').unwrap_or(rest.len());
        &rest[..end]
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `:dm:` → `:direct:` everywhere, adjacent ones too: `x:dm:dm:y` → `x:direct:direct:y`. A
/// plain `replace` leaves the second of two adjacent ones (they share a colon), so
/// normalising the result again would change it: two spellings of one session, two owners.
/// Found by the session-key fuzz target (fuzz/corpus/session_key holds the input).
fn rewrite_dm(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 8);
    let (mut i, mut from) = (0, 0);
    while i + 4 <= b.len() {
        if &b[i..i + 4] == b":dm:" {
            // Both ends are ASCII colons: char boundaries. The closing colon stays for
            // the next match.
            out.push_str(&s[from..i]);
            out.push_str(":direct");
            i += 3;
            from = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[from..]);
    out
}

/// `[a-z0-9][a-z0-9_-]{0,63}`
pub fn valid_agent_id(a: &str) -> bool {
    let b = a.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        SessionKey::parse(s, "main").unwrap().0
    }

    #[test]
    fn normalises() {
        assert_eq!(n("main"), "agent:main:main");
        assert_eq!(n("Agent:Main:Main"), "agent:main:main");
        assert_eq!(
            n("agent:main:whatsapp:dm:+1234567890"),
            "agent:main:whatsapp:direct:+1234567890"
        );
        assert_eq!(n("telegram:group:42"), "agent:main:telegram:group:42");
        assert_eq!(n("agent:ops"), "agent:ops:main");
        assert_eq!(n("  Agent:Ops:X\u{c9} "), "agent:ops:x\u{c9}");
        assert_eq!(n("agent:ops:a:b"), "agent:ops:a:b");
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for k in ["x:dm:dm:y", ":dm:dm:dm:", "agent:a:dm:dm:", "dm:dm:dm:dm"] {
            let once = n(k);
            assert!(!once.contains(":dm:"), "{k:?} → {once:?}");
            assert_eq!(n(&once), once, "{k:?}");
        }
        assert_eq!(n("x:dm:dm:y"), "agent:main:x:direct:direct:y");
    }

    #[test]
    fn refuses_bad_keys() {
        assert!(SessionKey::parse("", "main").is_err());
        assert!(SessionKey::parse("agent:-x:main", "main").is_err());
        assert!(SessionKey::parse("agent:ops:", "main").is_err());
        assert!(SessionKey::parse("agent:", "main").is_err());
        assert!(SessionKey::parse("a b", "main").is_err());
        assert!(SessionKey::parse(&"x".repeat(600), "main").is_err());
    }

    /// The definition, step by step (lower-case, check, scope, rewrite), as `parse` was
    /// written before it was made one pass.
    fn plain(raw: &str, default_agent: &str) -> Result<String, String> {
        let k = raw.trim().to_ascii_lowercase();
        if k.is_empty() || k.len() > MAX_KEY_LEN {
            return Err("size".into());
        }
        if k.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("chars".into());
        }
        let full = match k.strip_prefix("agent:") {
            Some(rest) => {
                let (agent, tail) = rest.split_once(':').unwrap_or((rest, ""));
                if !valid_agent_id(agent) {
                    return Err("agent".into());
                }
                match (rest.len() == agent.len(), tail.is_empty()) {
                    (true, _) => format!("{k}:main"),
                    (false, true) => return Err("tail".into()),
                    (false, false) => k,
                }
            }
            None => format!("agent:{default_agent}:{k}"),
        };
        let mut full = full;
        while full.contains(":dm:") {
            full = full.replace(":dm:", ":direct:");
        }
        if full.len() > MAX_KEY_LEN {
            return Err("size".into());
        }
        Ok(full)
    }

    #[test]
    fn matches_the_plain_definition() {
        let keys = [
            "main",
            "Main",
            "agent:main:main",
            "AGENT:Ops:X",
            "agent:ops",
            "AGENT:ops",
            "agent:",
            "agent:ops:",
            "agent::x",
            "agent:-x:y",
            "agenT:a_b-c:Q:DM:7",
            "x:Dm:y",
            "x:dm:dm:y",
            ":dm:dm:dm:",
            "agent:a:dm:DM:dm:",
            ":dm:",
            "a:dm",
            "dm:x",
            "telegram:group:42",
            "  padded  ",
            "\tx\t",
            "a b",
            "a\tb",
            "a\u{7f}b",
            "a\u{0}b",
            "a\u{a0}b",
            "a\u{2003}b",
            "a\u{85}b",
            "caf\u{c9}:\u{c9}t\u{e9}",
            "Agent:Ops:X\u{c9}",
            "\u{3000}k\u{3000}",
            "agent:ops:a:b",
            "AgEnT",
            "agent",
            "x",
            ":",
            "::",
        ];
        let long = [
            "y".repeat(MAX_KEY_LEN),
            "y".repeat(MAX_KEY_LEN - 11),
            "y".repeat(MAX_KEY_LEN - 10),
        ];
        for k in keys.iter().copied().chain(long.iter().map(String::as_str)) {
            for agent in ["main", "ops"] {
                let ours = SessionKey::parse(k, agent).map(|s| s.0);
                let theirs = plain(k, agent);
                assert_eq!(
                    ours.is_ok(),
                    theirs.is_ok(),
                    "{k:?}: {ours:?} vs {theirs:?}"
                );
                if let (Ok(a), Ok(b)) = (&ours, &theirs) {
                    assert_eq!(a, b, "{k:?}");
                }
            }
        }
    }

    #[test]
    fn agent_id_part() {
        assert_eq!(
            SessionKey::parse("agent:ops:x", "main").unwrap().agent_id(),
            "ops"
        );
    }
}
