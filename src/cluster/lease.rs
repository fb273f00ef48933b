//! The cluster's Redis keys and the calls on them: heartbeat (with the live members), the
//! lease holders of every slot, acquire, renew, release, leave. Each change is one Lua script
//! (`*.lua` next to this file), so it is atomic: two members can never both win a lease, and
//! a lease is renewed or deleted only by the member it names.
//!
//! Keys (under the queue's `keyPrefix`, so one Redis can host several clusters):
//! - `{p}:member:{id}` heartbeat, JSON, `PX` = electionTimeout;
//! - `{p}:members` the set of member ids (reconciled by each heartbeat);
//! - `{p}:lease:{slot}` the holder's member id, `PX` = electionTimeout;
//! - `{p}:epoch:{slot}` the fencing epoch, shared with the queue's scripts
//!   ([`crate::queue::redis::keys::Keys::epoch`]), raised by every acquisition, never expires.

use shardgate_redis::{Client, Error, Script, Value};

use crate::queue::redis::keys::Keys;

/// The cluster's key names.
#[derive(Debug, Clone)]
pub struct ClusterKeys {
    prefix: String,
    queue: Keys,
}

impl ClusterKeys {
    /// Keys under `prefix` for `slots` slots.
    pub fn new(prefix: &str, slots: u32) -> ClusterKeys {
        ClusterKeys {
            prefix: prefix.to_string(),
            queue: Keys::new(prefix, slots),
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> u32 {
        self.queue.slots
    }

    /// A member's heartbeat key.
    pub fn member(&self, id: &str) -> String {
        format!("{}{id}", self.member_prefix())
    }

    /// What every heartbeat key starts with.
    pub fn member_prefix(&self) -> String {
        format!("{}:member:", self.prefix)
    }

    /// The members set.
    pub fn members(&self) -> String {
        format!("{}:members", self.prefix)
    }

    /// A slot's lease.
    pub fn lease(&self, slot: u32) -> String {
        format!("{}:lease:{slot}", self.prefix)
    }

    /// A slot's fencing epoch (the queue's key).
    pub fn epoch(&self, slot: u32) -> String {
        self.queue.epoch(slot)
    }
}

/// The scripts, loaded on first use per connection.
#[derive(Debug)]
pub struct Scripts {
    heartbeat: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    leave: Script,
    pttl: Script,
}

impl Scripts {
    /// The scripts of this module.
    pub fn new() -> Scripts {
        Scripts {
            heartbeat: Script::new(include_str!("heartbeat.lua")),
            acquire: Script::new(include_str!("acquire.lua")),
            renew: Script::new(include_str!("renew.lua")),
            release: Script::new(include_str!("release.lua")),
            leave: Script::new(include_str!("leave.lua")),
            pttl: Script::new(include_str!("pttl.lua")),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}

/// The Redis calls of one member.
#[derive(Debug)]
pub struct Leases {
    /// The connection (the driver's own).
    pub client: Client,
    /// Key names.
    pub keys: ClusterKeys,
    scripts: Scripts,
    me: String,
    ttl_ms: String,
}

fn bytes(v: &[String]) -> Vec<&[u8]> {
    v.iter().map(|s| s.as_bytes()).collect()
}

fn unexpected(what: &str, v: &Value) -> Error {
    Error::UnexpectedReply(format!("{what} answered {v:?}"))
}

impl Leases {
    /// Calls for member `me` with leases of `ttl_ms`.
    pub fn new(client: Client, keys: ClusterKeys, me: &str, ttl_ms: u64) -> Leases {
        Leases {
            client,
            keys,
            scripts: Scripts::new(),
            me: me.to_string(),
            ttl_ms: ttl_ms.to_string(),
        }
    }

    /// Writes this member's heartbeat (`value`, JSON) and returns the live members, sorted,
    /// each with the ms left on its heartbeat (`None` without a TTL).
    pub async fn heartbeat(&self, value: &str) -> Result<Vec<(String, Option<u64>)>, Error> {
        let keys = [self.keys.member(&self.me), self.keys.members()];
        let prefix = self.keys.member_prefix();
        let v = self
            .client
            .eval(
                &self.scripts.heartbeat,
                &bytes(&keys),
                &[
                    self.me.as_bytes(),
                    value.as_bytes(),
                    self.ttl_ms.as_bytes(),
                    prefix.as_bytes(),
                ],
            )
            .await?;
        let flat = v.as_array().ok_or_else(|| unexpected("heartbeat", &v))?;
        let mut live: Vec<(String, Option<u64>)> = flat
            .chunks_exact(2)
            .filter_map(|p| {
                let left = p[1].as_int().filter(|&t| t >= 0).map(|t| t as u64);
                p[0].as_str().map(|m| (m.to_string(), left))
            })
            .collect();
        live.sort();
        Ok(live)
    }

    /// The live members without writing a heartbeat (a leaving member): the members set
    /// filtered by existing heartbeat keys.
    pub async fn members(&self) -> Result<Vec<String>, Error> {
        let v = self
            .client
            .call(&[b"SMEMBERS", self.keys.members().as_bytes()])
            .await?;
        let ids: Vec<String> = v
            .as_array()
            .ok_or_else(|| unexpected("SMEMBERS", &v))?
            .iter()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        if ids.is_empty() {
            return Ok(ids);
        }
        let hb: Vec<String> = ids.iter().map(|m| self.keys.member(m)).collect();
        let mut cmd: Vec<&[u8]> = vec![b"MGET"];
        cmd.extend(bytes(&hb));
        let v = self.client.call(&cmd).await?;
        let alive = v.as_array().ok_or_else(|| unexpected("MGET", &v))?;
        let mut live: Vec<String> = ids
            .into_iter()
            .zip(alive)
            .filter(|(_, a)| !a.is_nil())
            .map(|(m, _)| m)
            .collect();
        live.sort();
        Ok(live)
    }

    /// The holder of every slot's lease (one `MGET`).
    pub async fn holders(&self) -> Result<Vec<Option<String>>, Error> {
        let keys: Vec<String> = (0..self.keys.slots()).map(|s| self.keys.lease(s)).collect();
        let mut cmd: Vec<&[u8]> = vec![b"MGET"];
        cmd.extend(bytes(&keys));
        let v = self.client.call(&cmd).await?;
        let a = v.as_array().ok_or_else(|| unexpected("MGET", &v))?;
        if a.len() != keys.len() {
            return Err(unexpected("MGET", &v));
        }
        Ok(a.iter().map(|h| h.as_str().map(str::to_string)).collect())
    }

    /// Tries to acquire `slots`; returns `(slot, epoch)` for those taken.
    pub async fn acquire(&self, slots: &[u32]) -> Result<Vec<(u32, u64)>, Error> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = slots
            .iter()
            .flat_map(|&s| [self.keys.lease(s), self.keys.epoch(s)])
            .collect();
        let v = self
            .client
            .eval(
                &self.scripts.acquire,
                &bytes(&keys),
                &[self.me.as_bytes(), self.ttl_ms.as_bytes()],
            )
            .await?;
        let a = v.as_array().ok_or_else(|| unexpected("acquire", &v))?;
        if a.len() != slots.len() {
            return Err(unexpected("acquire", &v));
        }
        Ok(slots
            .iter()
            .zip(a)
            .filter_map(|(&s, e)| match e.as_int() {
                Some(e) if e > 0 => Some((s, e as u64)),
                _ => None,
            })
            .collect())
    }

    /// Renews the leases of `slots`; returns, per slot, whether it is still this member's.
    pub async fn renew(&self, slots: &[u32]) -> Result<Vec<bool>, Error> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = slots.iter().map(|&s| self.keys.lease(s)).collect();
        let v = self
            .client
            .eval(
                &self.scripts.renew,
                &bytes(&keys),
                &[self.me.as_bytes(), self.ttl_ms.as_bytes()],
            )
            .await?;
        let a = v.as_array().ok_or_else(|| unexpected("renew", &v))?;
        if a.len() != slots.len() {
            return Err(unexpected("renew", &v));
        }
        Ok(a.iter().map(|x| x.as_int() == Some(1)).collect())
    }

    /// Deletes the leases of `slots` that still name this member; returns how many.
    pub async fn release(&self, slots: &[u32]) -> Result<u64, Error> {
        if slots.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = slots.iter().map(|&s| self.keys.lease(s)).collect();
        let v = self
            .client
            .eval(&self.scripts.release, &bytes(&keys), &[self.me.as_bytes()])
            .await?;
        v.as_int()
            .map(|n| n.max(0) as u64)
            .ok_or_else(|| unexpected("release", &v))
    }

    /// Milliseconds left on the leases of `slots` (`None` when gone or without a TTL).
    pub async fn pttl(&self, slots: &[u32]) -> Result<Vec<Option<u64>>, Error> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = slots.iter().map(|&s| self.keys.lease(s)).collect();
        let v = self
            .client
            .eval(&self.scripts.pttl, &bytes(&keys), &[])
            .await?;
        let a = v.as_array().ok_or_else(|| unexpected("pttl", &v))?;
        Ok(a.iter()
            .map(|x| x.as_int().filter(|&t| t >= 0).map(|t| t as u64))
            .collect())
    }

    /// Removes this member's heartbeat and its entry in the members set.
    pub async fn leave(&self) -> Result<(), Error> {
        let keys = [self.keys.member(&self.me), self.keys.members()];
        self.client
            .eval(&self.scripts.leave, &bytes(&keys), &[self.me.as_bytes()])
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_queue_prefix_and_epoch() {
        let k = ClusterKeys::new("sg", 8);
        assert_eq!(k.lease(3), "sg:lease:3");
        assert_eq!(k.epoch(3), Keys::new("sg", 8).epoch(3));
        assert_eq!(k.member("h:1"), "sg:member:h:1");
        assert_eq!(k.members(), "sg:members");
        assert_eq!(k.slots(), 8);
    }
}
