//! [`Script`]: a Lua script run by its sha1 (`EVALSHA`), loaded on demand.
//!
//! The server forgets scripts on restart and on `SCRIPT FLUSH`, and answers `EVALSHA` with
//! `NOSCRIPT` then. [`Client::eval`] answers that by `SCRIPT LOAD`ing the source and running
//! `EVALSHA` once more, so callers never send the source on the hot path and never see
//! `NOSCRIPT`. The sha1 is computed here (as Redis does) so a script needs no round trip to
//! be named, and `SCRIPT LOAD`'s answer is checked against it.

use std::rc::Rc;

use sha1::{Digest, Sha1};

use crate::client::Client;
use crate::error::{Error, ErrorCode};
use crate::value::Value;

/// A Lua script and the sha1 Redis names it by. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    source: Rc<str>,
    sha1: Rc<str>,
}

impl Script {
    /// Names `source` by its sha1 (lowercase hex, as `SCRIPT LOAD` answers).
    pub fn new(source: &str) -> Script {
        let digest = Sha1::digest(source.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Script {
            source: source.into(),
            sha1: hex.into(),
        }
    }

    /// The Lua source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The sha1, 40 lowercase hex digits.
    pub fn sha1(&self) -> &str {
        &self.sha1
    }
}

impl Client {
    /// Runs `script` with `keys` (`KEYS[i]`) and `args` (`ARGV[i]`): `EVALSHA`, and on
    /// `NOSCRIPT`, `SCRIPT LOAD` then `EVALSHA` again. Each of the (up to three) commands has
    /// the client's command timeout.
    pub async fn eval(
        &self,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Value, Error> {
        let nkeys = keys.len().to_string();
        let mut cmd: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + args.len());
        cmd.extend([
            b"EVALSHA".as_slice(),
            script.sha1.as_bytes(),
            nkeys.as_bytes(),
        ]);
        cmd.extend_from_slice(keys);
        cmd.extend_from_slice(args);
        match self.call(&cmd).await {
            Err(Error::Server(e)) if e.code == ErrorCode::NoScript => {}
            other => return other,
        }
        let loaded = self
            .call(&[b"SCRIPT", b"LOAD", script.source.as_bytes()])
            .await?;
        if loaded.as_str() != Some(script.sha1()) {
            return Err(Error::UnexpectedReply(format!(
                "SCRIPT LOAD answered {loaded:?}, expected {}",
                script.sha1
            )));
        }
        self.call(&cmd).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_the_sha1_redis_computes() {
        // `redis-cli SCRIPT LOAD "return 1"` answers this.
        let s = Script::new("return 1");
        assert_eq!(s.sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        assert_eq!(s.source(), "return 1");
    }
}
