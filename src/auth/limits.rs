//! Limits on clients that have not authenticated yet, shared by every shard.
//!
//! Touched once per connection (accept, hello, close) and once per failed auth, never per
//! frame, so a mutex is cheap here; it keeps the per-IP view exact across shards.

#![expect(
    clippy::disallowed_types,
    reason = "per-connection, not per-frame; exact across shards"
)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Per-IP counters: unauthenticated sockets and recent auth failures.
#[derive(Debug, Default)]
pub struct PeerLimits {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    unauth: HashMap<IpAddr, usize>,
    failures: HashMap<IpAddr, Vec<i64>>,
}

impl PeerLimits {
    /// Counts a new unauthenticated socket; false (and nothing counted) when `ip` already has
    /// `max` of them.
    pub fn enter_unauth(&self, ip: IpAddr, max: usize) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let n = g.unauth.entry(ip).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// The socket authenticated or closed.
    pub fn leave_unauth(&self, ip: IpAddr) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = g.unauth.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.unauth.remove(&ip);
            }
        }
    }

    /// Whether `ip` is locked out after `max` failures in the last minute; returns the wait.
    pub fn auth_blocked(&self, ip: IpAddr, max: u32, now_ms: i64) -> Option<u64> {
        if ip.is_loopback() || max == 0 {
            return None;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v = g.failures.get_mut(&ip)?;
        v.retain(|t| now_ms - *t < 60_000);
        if v.len() >= max as usize {
            let oldest = v.first().copied().unwrap_or(now_ms);
            Some((60_000 - (now_ms - oldest)).max(1) as u64)
        } else {
            None
        }
    }

    /// Records a failed shared-secret attempt.
    pub fn record_failure(&self, ip: IpAddr, now_ms: i64) {
        if ip.is_loopback() {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v = g.failures.entry(ip).or_default();
        v.retain(|t| now_ms - *t < 60_000);
        v.push(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauth_cap_per_ip() {
        let l = PeerLimits::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(l.enter_unauth(ip, 2));
        assert!(l.enter_unauth(ip, 2));
        assert!(!l.enter_unauth(ip, 2));
        l.leave_unauth(ip);
        assert!(l.enter_unauth(ip, 2));
    }

    #[test]
    fn failures_lock_out_then_expire() {
        let l = PeerLimits::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..3 {
            l.record_failure(ip, i);
        }
        assert!(l.auth_blocked(ip, 3, 10).is_some());
        assert!(l.auth_blocked(ip, 3, 70_000).is_none());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 0..10 {
            l.record_failure(lo, i);
        }
        assert!(l.auth_blocked(lo, 3, 10).is_none());
    }
}
