//! [`Options`]: where Redis is and how a link to it behaves. Every knob states its default,
//! its unit and when to change it.

use std::fmt;
use std::time::Duration;

/// How to reach one Redis server and what to do when it is slow or gone.
#[derive(Clone)]
pub struct Options {
    /// `host:port` of the server. Default `127.0.0.1:6379`.
    pub addr: String,
    /// ACL user for `HELLO 3 AUTH`; `None` with a password means the `default` user.
    pub username: Option<String>,
    /// Password for `HELLO 3 AUTH`; `None`: no authentication. Never logged (`Debug` redacts).
    pub password: Option<String>,
    /// Connection name (`HELLO … SETNAME`), shown by `CLIENT LIST`; name the gateway and shard
    /// so an operator can tell connections apart. Default none. No spaces (Redis refuses them).
    pub client_name: Option<String>,
    /// Deadline for TCP connect plus the `HELLO` handshake. Default 2 s.
    pub connect_timeout: Duration,
    /// Deadline for one command, from the call to its reply, including the wait for a
    /// reconnect. Default 2 s. Raise it for slow scripts; lower it to fail over faster.
    pub command_timeout: Duration,
    /// First reconnect delay. Default 50 ms. Each failed attempt doubles it, up to
    /// `reconnect_max`; each delay is jittered into [d/2, d] so shards and gateways that lost
    /// the same server do not reconnect in lock-step.
    pub reconnect_min: Duration,
    /// Cap of the reconnect delay. Default 2 s: the longest a recovered server waits for us.
    pub reconnect_max: Duration,
    /// While disconnected, fail a new command at once with `Disconnected` (true) or let it
    /// wait for the reconnect up to its `command_timeout` (false, the default). Fail fast when
    /// the caller has a better fallback than waiting (answer `UNAVAILABLE` now).
    pub fail_fast: bool,
    /// Capacity of the push channel (pub/sub messages, invalidations) before pushes are dropped
    /// and counted in `Stats::pushes_dropped`. Default 1024. The reader never waits for a slow
    /// consumer, so replies on the same connection are never held up by one.
    pub push_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addr: "127.0.0.1:6379".to_string(),
            username: None,
            password: None,
            client_name: None,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            fail_fast: false,
            push_capacity: 1024,
        }
    }
}

impl Options {
    /// Defaults, for the server at `addr`.
    pub fn new(addr: impl Into<String>) -> Options {
        Options {
            addr: addr.into(),
            ..Options::default()
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("client_name", &self.client_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("fail_fast", &self.fail_fast)
            .field("push_capacity", &self.push_capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let o = Options {
            password: Some("hunter2".into()),
            ..Options::new("10.0.0.1:6380")
        };
        let shown = format!("{o:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("10.0.0.1:6380"));
    }
}
