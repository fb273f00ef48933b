//! `queue.redis`: where the Redis queue backend connects and how it names its keys, and the
//! pure parser of its `redis://` URL (checked at load, so a bad URL refuses the start with
//! the key's name instead of failing on the first admission).

use serde::{Deserialize, Serialize};

use super::duration::Millis;

/// `queue.redis` (used when `queue.backend` is `"redis"`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RedisQueueConfig {
    /// `redis://[user:pass@]host:port`. Required with the redis backend. Holds a password:
    /// never logged (`Debug` redacts it).
    pub url: Option<String>,
    /// Prefix of every key the gateway writes. Default `"shardgate"`; give gateways that share
    /// one Redis for different purposes different prefixes.
    pub key_prefix: String,
    /// Slots session keys hash into (a stream each). Default 64. Fixed for the life of the
    /// data: changing it moves sessions to other streams (pending work of the old layout is
    /// not read back).
    pub slots: u32,
    /// Deadline of one Redis command, from the call to its reply. Default "2s".
    pub command_timeout: Millis,
}

impl Default for RedisQueueConfig {
    fn default() -> Self {
        RedisQueueConfig {
            url: None,
            key_prefix: "shardgate".into(),
            slots: 64,
            command_timeout: Millis(2_000),
        }
    }
}

impl std::fmt::Debug for RedisQueueConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueueConfig")
            .field(
                "url",
                &self
                    .url
                    .as_deref()
                    .map(|u| parse_url(u).map(|t| t.addr).unwrap_or_default()),
            )
            .field("key_prefix", &self.key_prefix)
            .field("slots", &self.slots)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// A parsed `redis://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `host:port`.
    pub addr: String,
    /// ACL user, if given.
    pub username: Option<String>,
    /// Password, if given.
    pub password: Option<String>,
}

/// Parses `redis://[user:pass@]host:port` (also `redis://:pass@host:port`). The port is
/// required: a gateway pointed at the wrong Redis by a default would be worse than an error.
pub fn parse_url(url: &str) -> Result<RedisTarget, String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| "must start with redis:// (rediss:// TLS is not supported)".to_string())?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') {
        return Err("database numbers and options are not supported: use redis://host:port".into());
    }
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let (h, port) = host
        .rsplit_once(':')
        .ok_or_else(|| "needs a port (redis://host:port)".to_string())?;
    if h.is_empty() {
        return Err("needs a host (redis://host:port)".into());
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("port {port:?} is not a port number"));
    }
    let (username, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some(("", p)) => (None, Some(p.to_string())),
            Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
            None => (Some(a.to_string()), None),
        },
    };
    Ok(RedisTarget {
        addr: host.to_string(),
        username,
        password,
    })
}

impl RedisQueueConfig {
    /// Checks the keys (the caller names `queue.redis.<key>` in its error).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let Some(url) = self.url.as_deref() else {
            return Err(("url", "is required with queue.backend \"redis\"".into()));
        };
        parse_url(url).map_err(|e| ("url", e))?;
        if self.key_prefix.is_empty()
            || self
                .key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(("keyPrefix", "must be non-empty, without spaces".into()));
        }
        if !(1..=16_384).contains(&self.slots) {
            return Err(("slots", "must be between 1 and 16384".into()));
        }
        if self.command_timeout.0 == 0 {
            return Err(("commandTimeout", "must be more than 0".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_and_without_credentials() {
        let t = parse_url("redis://127.0.0.1:6380").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.username, t.password),
            ("127.0.0.1:6380", None, None)
        );
        let t = parse_url("redis://gw:s3cret@redis.internal:6379/").unwrap();
        assert_eq!(t.addr, "redis.internal:6379");
        assert_eq!(t.username.as_deref(), Some("gw"));
        assert_eq!(t.password.as_deref(), Some("s3cret"));
        let t = parse_url("redis://:pw@h:1").unwrap();
        assert_eq!((t.username, t.password.as_deref()), (None, Some("pw")));
        for bad in [
            "http://h:1",
            "redis://h",
            "redis://h:0",
            "redis://:1",
            "redis://h:1/2",
            "rediss://h:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn check_names_the_key_and_debug_hides_the_password() {
        let mut c = RedisQueueConfig::default();
        assert_eq!(c.check().unwrap_err().0, "url");
        c.url = Some("redis://u:hunter2@h:1".into());
        assert!(c.check().is_ok());
        assert!(!format!("{c:?}").contains("hunter2"));
        c.slots = 0;
        assert_eq!(c.check().unwrap_err().0, "slots");
        c.slots = 8;
        c.key_prefix = "a b".into();
        assert_eq!(c.check().unwrap_err().0, "keyPrefix");
    }
}
