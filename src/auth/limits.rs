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

/// A peer as the failed-auth limiter sees it: its address, and whether it is a local program
/// the limiter spares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The address failures are counted under.
    pub ip: IpAddr,
    /// Not limited: a loopback peer with neither an `Origin` (a browser page can reach
    /// 127.0.0.1: cross-site WebSocket hijacking would guess the token unchecked) nor a
    /// forwarding header (a reverse proxy on loopback speaks for remote clients). OpenClaw
    /// issues #14137 and #59292.
    pub spared: bool,
}

impl Peer {
    /// The peer at `ip`, whose upgrade request carried an `Origin` (`browser`) or a
    /// forwarding header (`proxied`).
    pub fn new(ip: IpAddr, browser: bool, proxied: bool) -> Peer {
        Peer {
            ip,
            spared: ip.is_loopback() && !browser && !proxied,
        }
    }
}

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
    pub fn auth_blocked(&self, peer: Peer, max: u32, now_ms: i64) -> Option<u64> {
        if peer.spared || max == 0 {
            return None;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v = g.failures.get_mut(&peer.ip)?;
        v.retain(|t| now_ms - *t < 60_000);
        if v.len() >= max as usize {
            let oldest = v.first().copied().unwrap_or(now_ms);
            Some((60_000 - (now_ms - oldest)).max(1) as u64)
        } else {
            None
        }
    }

    /// Records a failed shared-secret attempt.
    pub fn record_failure(&self, peer: Peer, now_ms: i64) {
        if peer.spared {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v = g.failures.entry(peer.ip).or_default();
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
        let ip = Peer::new("10.0.0.1".parse().unwrap(), false, false);
        for i in 0..3 {
            l.record_failure(ip, i);
        }
        assert!(l.auth_blocked(ip, 3, 10).is_some());
        assert!(l.auth_blocked(ip, 3, 70_000).is_none());
        let lo = Peer::new("127.0.0.1".parse().unwrap(), false, false);
        for i in 0..10 {
            l.record_failure(lo, i);
        }
        assert!(
            l.auth_blocked(lo, 3, 10).is_none(),
            "a local program is spared"
        );
    }

    #[test]
    fn a_loopback_browser_or_proxied_peer_is_limited() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for (browser, proxied) in [(true, false), (false, true), (true, true)] {
            let l = PeerLimits::default();
            let p = Peer::new(lo, browser, proxied);
            for i in 0..3 {
                l.record_failure(p, i);
            }
            assert!(l.auth_blocked(p, 3, 10).is_some(), "{browser} {proxied}");
        }
    }
}
