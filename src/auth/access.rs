//! Access limits (SPEC §8): the IP allowlist, connections per IP, the browser Origin check,
//! the network class of a peer (localhost / lan / wan, for pairing policies), and the request
//! rate limiters.
//!
//! Two kinds of state, kept apart on purpose:
//! - [`Access`] is process-wide and touched once per connection (accept and close): the
//!   allowlist with its host-name cache and the per-IP connection counts. A mutex is cheap at
//!   that rate and keeps the per-IP view exact across shards.
//! - [`ShardLimiter`] is per shard and touched once per request: token buckets in `RefCell`s,
//!   no lock, no atomic. The `global` and `perIp` budgets are split evenly over the shards
//!   (each shard refills at rate/N), so the sum over the gateway never exceeds the configured
//!   rate; the price is that a client whose connections all sit on one shard gets rate/N.
//!   `perConnection` is exact, since a connection lives on one shard.
#![expect(
    clippy::disallowed_types,
    reason = "Access is touched per connection, never per frame; exact across shards"
)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::net::{canonical, parse_entry, Cidr, Entry, NetClass};
use crate::config::{Config, PerMinute};
use crate::protocol::error::GatewayError;

// ---------------------------------------------------------------------------------------------
// Process-wide: allowlist, host names, connections per IP
// ---------------------------------------------------------------------------------------------

/// Addresses of the allowlist's host names, and when they were resolved.
#[derive(Debug, Default)]
struct HostCache {
    ips: Vec<IpAddr>,
    resolved_at: Option<Instant>,
    refreshing: bool,
}

/// Process-wide access state (see the module doc).
#[derive(Debug)]
pub struct Access {
    entries: Vec<Entry>,
    lan: Vec<Cidr>,
    ttl: Duration,
    hosts: Mutex<HostCache>,
    conns: Mutex<HashMap<IpAddr, usize>>,
    origins: Vec<String>,
    max_per_ip: usize,
}

/// Why a peer was turned away before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not on the allowlist: HTTP 403.
    NotAllowed,
    /// Too many connections from this IP: HTTP 429.
    TooManyConnections,
    /// A browser origin that is not allowed: HTTP 403.
    Origin,
}

impl Access {
    /// Builds the access state from the config and resolves the allowlist's host names once
    /// (blocking; called at start, before the shards run). Entries were checked by
    /// `Config::validate`; an unparsable one is skipped here.
    pub fn new(cfg: &Config) -> Access {
        let entries: Vec<Entry> = cfg
            .access
            .ip_whitelist
            .iter()
            .filter_map(|e| parse_entry(e).ok())
            .collect();
        let lan = cfg
            .gateway
            .pairing
            .lan_ranges
            .iter()
            .filter_map(|r| Cidr::parse(r).ok())
            .collect();
        let mut origins: Vec<String> = cfg
            .access
            .allowed_origins
            .iter()
            .chain(&cfg.gateway.control_ui.allowed_origins)
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        origins.dedup();
        let a = Access {
            entries,
            lan,
            ttl: cfg.access.host_resolve_ttl.duration(),
            hosts: Mutex::new(HostCache::default()),
            conns: Mutex::new(HashMap::new()),
            origins,
            max_per_ip: cfg.access.max_connections_per_ip,
        };
        if a.has_hosts() {
            let ips = resolve(&a.host_names());
            let mut h = a.hosts();
            h.ips = ips;
            h.resolved_at = Some(Instant::now());
        }
        a
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, HostCache> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has_hosts(&self) -> bool {
        self.entries.iter().any(|e| matches!(e, Entry::Host(_)))
    }

    fn host_names(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Host(h) => Some(h.clone()),
                Entry::Range(_) => None,
            })
            .collect()
    }

    /// The network class of a peer.
    pub fn classify(&self, ip: IpAddr) -> NetClass {
        let ip = canonical(ip);
        if ip.is_loopback() {
            NetClass::Localhost
        } else if self.lan.iter().any(|c| c.contains(ip)) {
            NetClass::Lan
        } else {
            NetClass::Wan
        }
    }

    /// Whether `ip` may connect. When the host-name cache is stale, returns the answer from
    /// the stale addresses and asks the caller (through the second value) to refresh it.
    pub fn allowed(&self, ip: IpAddr) -> (bool, bool) {
        let ip = canonical(ip);
        if self.entries.is_empty() || ip.is_loopback() {
            return (true, false);
        }
        if self
            .entries
            .iter()
            .any(|e| matches!(e, Entry::Range(c) if c.contains(ip)))
        {
            return (true, false);
        }
        if !self.has_hosts() {
            return (false, false);
        }
        let mut h = self.hosts();
        let stale = h.resolved_at.is_none_or(|t| t.elapsed() >= self.ttl);
        let refresh = stale && !h.refreshing;
        if refresh {
            h.refreshing = true;
        }
        (h.ips.contains(&ip), refresh)
    }

    /// Resolves the host names again (blocking: run it on a blocking thread) and stores them.
    pub fn refresh_hosts(&self) {
        let ips = resolve(&self.host_names());
        let mut h = self.hosts();
        h.ips = ips;
        h.resolved_at = Some(Instant::now());
        h.refreshing = false;
    }

    /// Counts a new connection from `ip`; false (nothing counted) when it has the maximum.
    pub fn enter_conn(&self, ip: IpAddr) -> bool {
        if self.max_per_ip == 0 {
            return true;
        }
        let mut g = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let n = g.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return false;
        }
        *n += 1;
        true
    }

    /// A connection from `ip` ended.
    pub fn leave_conn(&self, ip: IpAddr) {
        if self.max_per_ip == 0 {
            return;
        }
        let mut g = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = g.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.remove(&ip);
            }
        }
    }

    /// Whether a WebSocket upgrade with this `Origin` (and `Host`) may proceed. No `Origin`:
    /// not a browser, allowed. Otherwise the origin must be listed, `*` must be listed, or it
    /// must be the gateway's own origin (`http(s)://<Host>`).
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.origins.iter().any(|a| a == "*" || *a == o) {
            return true;
        }
        let own = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        matches!((own, host), (Some(own), Some(h)) if own == h.trim().to_ascii_lowercase())
    }
}

fn resolve(hosts: &[String]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for h in hosts {
        match (h.as_str(), 0u16).to_socket_addrs() {
            Ok(addrs) => out.extend(addrs.map(|a| canonical(a.ip()))),
            Err(e) => tracing::warn!(host = %h, error = %e, "access.ipWhitelist: cannot resolve"),
        }
    }
    out.sort();
    out.dedup();
    out
}

// ---------------------------------------------------------------------------------------------
// Per shard: request rate limits
// ---------------------------------------------------------------------------------------------

/// A token bucket: `capacity` tokens, refilled at `per_ms` tokens per millisecond.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    per_ms: f64,
    capacity: f64,
}

impl Rate {
    /// `rpm` split over `split` shards, with a bucket `burst` deep.
    fn new(rpm: PerMinute, split: usize, burst: Duration) -> Option<Rate> {
        if rpm.0 == 0 {
            return None;
        }
        let per_min = (rpm.0 as f64 / split.max(1) as f64).max(1.0);
        let per_ms = per_min / 60_000.0;
        let capacity = (per_ms * burst.as_millis() as f64).max(1.0);
        Some(Rate { per_ms, capacity })
    }
}

impl Bucket {
    fn full(r: &Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: r.capacity,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, r: &Rate, now: Instant) -> Result<(), u64> {
        let dt = now.saturating_duration_since(self.last).as_secs_f64() * 1000.0;
        self.tokens = (self.tokens + dt * r.per_ms).min(r.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / r.per_ms).ceil().max(1.0) as u64)
        }
    }
}

/// Which limit fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `access.rateLimiting.global`
    Global,
    /// `access.rateLimiting.perIp`
    PerIp,
    /// `access.rateLimiting.perConnection`
    PerConnection,
}

impl Limit {
    /// The config key's last part.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Global => "global",
            Limit::PerIp => "perIp",
            Limit::PerConnection => "perConnection",
        }
    }
}

/// One shard's request limiters. `!Send`, no locks: touched only by its shard.
#[derive(Debug)]
pub struct ShardLimiter {
    global: Option<Rate>,
    per_ip: Option<Rate>,
    per_conn: Option<Rate>,
    global_bucket: RefCell<Option<Bucket>>,
    ips: RefCell<HashMap<IpAddr, Bucket>>,
    conns: RefCell<HashMap<u64, Bucket>>,
}

impl ShardLimiter {
    /// The limiters of one of `shards` shards.
    pub fn new(cfg: &Config, shards: usize) -> ShardLimiter {
        let r = &cfg.access.rate_limiting;
        let burst = r.burst.duration();
        ShardLimiter {
            global: r.global.and_then(|g| Rate::new(g, shards, burst)),
            per_ip: r.per_ip.and_then(|g| Rate::new(g, shards, burst)),
            per_conn: r.per_connection.and_then(|g| Rate::new(g, 1, burst)),
            global_bucket: RefCell::new(None),
            ips: RefCell::new(HashMap::new()),
            conns: RefCell::new(HashMap::new()),
        }
    }

    /// Whether any limit is configured.
    pub fn enabled(&self) -> bool {
        self.global.is_some() || self.per_ip.is_some() || self.per_conn.is_some()
    }

    /// Admits one request of connection `conn` from `ip`, or says which limit refused it
    /// and when to retry. A refused request takes no token from the other buckets.
    pub fn check(&self, conn: u64, ip: IpAddr, now: Instant) -> Result<(), (Limit, u64)> {
        if !self.enabled() {
            return Ok(());
        }
        // Take tentatively, in order from the narrowest bucket; give back on refusal.
        let mut taken: Vec<Limit> = Vec::with_capacity(3);
        let res = (|| {
            if let Some(r) = &self.per_conn {
                let mut m = self.conns.borrow_mut();
                let b = m.entry(conn).or_insert_with(|| Bucket::full(r, now));
                b.take(r, now).map_err(|w| (Limit::PerConnection, w))?;
                taken.push(Limit::PerConnection);
            }
            if let Some(r) = &self.per_ip {
                let mut m = self.ips.borrow_mut();
                if m.len() > 65_536 {
                    // Forget full buckets: they hold no information.
                    m.retain(|_, b| {
                        now.saturating_duration_since(b.last).as_secs_f64() * 1000.0 * r.per_ms
                            + b.tokens
                            < r.capacity
                    });
                }
                let b = m
                    .entry(canonical(ip))
                    .or_insert_with(|| Bucket::full(r, now));
                b.take(r, now).map_err(|w| (Limit::PerIp, w))?;
                taken.push(Limit::PerIp);
            }
            if let Some(r) = &self.global {
                let mut g = self.global_bucket.borrow_mut();
                let b = g.get_or_insert_with(|| Bucket::full(r, now));
                b.take(r, now).map_err(|w| (Limit::Global, w))?;
            }
            Ok(())
        })();
        if res.is_err() {
            for l in taken {
                match l {
                    Limit::PerConnection => {
                        if let Some(b) = self.conns.borrow_mut().get_mut(&conn) {
                            b.tokens += 1.0;
                        }
                    }
                    Limit::PerIp => {
                        if let Some(b) = self.ips.borrow_mut().get_mut(&canonical(ip)) {
                            b.tokens += 1.0;
                        }
                    }
                    Limit::Global => {}
                }
            }
        }
        res
    }

    /// Forgets a closed connection's bucket.
    pub fn forget_conn(&self, conn: u64) {
        if self.per_conn.is_some() {
            self.conns.borrow_mut().remove(&conn);
        }
    }
}

/// The refusal for a fired limit.
pub fn rate_limited(limit: Limit, retry_after_ms: u64) -> GatewayError {
    GatewayError::RateLimited {
        limit: limit.as_str(),
        retry_after_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::net::check_entry;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("192.168.1.0/24").unwrap();
        assert!(c.contains(ip("192.168.1.77")));
        assert!(!c.contains(ip("192.168.2.1")));
        assert!(c.contains(ip("::ffff:192.168.1.5")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("fc00::/7").unwrap().contains(ip("fd12::1")));
        assert!(Cidr::parse("10.0.0.1").unwrap().contains(ip("10.0.0.1")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope/8").is_err());
    }

    #[test]
    fn classes_and_allowlist_with_host_names() {
        let mut cfg = Config::default();
        cfg.access.ip_whitelist = vec!["10.1.0.0/16".into(), "localhost".into()];
        let a = Access::new(&cfg);
        assert_eq!(a.classify(ip("127.0.0.1")), NetClass::Localhost);
        assert_eq!(a.classify(ip("192.168.0.9")), NetClass::Lan);
        assert_eq!(a.classify(ip("192.0.2.2")), NetClass::Wan);
        assert_eq!(a.allowed(ip("10.1.2.3")), (true, false));
        assert!(!a.allowed(ip("10.2.0.1")).0);
        // The host name was resolved at start; its addresses are cached.
        assert!(a.hosts().ips.iter().any(|i| i.is_loopback()));
        assert!(check_entry("vpn.company.com").is_ok());
        assert!(check_entry("bad host!").is_err());
    }

    #[test]
    fn stale_host_cache_asks_for_one_refresh() {
        let mut cfg = Config::default();
        cfg.access.ip_whitelist = vec!["localhost".into()];
        cfg.access.host_resolve_ttl = crate::config::Millis(0);
        let a = Access::new(&cfg);
        assert_eq!(a.allowed(ip("10.0.0.1")), (false, true));
        assert_eq!(a.allowed(ip("10.0.0.1")), (false, false));
        a.refresh_hosts();
        assert_eq!(a.allowed(ip("10.0.0.1")), (false, true));
    }

    #[test]
    fn connections_per_ip() {
        let mut cfg = Config::default();
        cfg.access.max_connections_per_ip = 2;
        let a = Access::new(&cfg);
        let x = ip("10.0.0.1");
        assert!(a.enter_conn(x) && a.enter_conn(x));
        assert!(!a.enter_conn(x));
        a.leave_conn(x);
        assert!(a.enter_conn(x));
    }

    #[test]
    fn origins() {
        let mut cfg = Config::default();
        cfg.access.allowed_origins = vec!["https://ui.example.com/".into()];
        let a = Access::new(&cfg);
        assert!(a.origin_allowed(None, Some("h")));
        assert!(a.origin_allowed(Some("https://UI.example.com"), None));
        assert!(a.origin_allowed(Some("http://127.0.0.1:1"), Some("127.0.0.1:1")));
        assert!(!a.origin_allowed(Some("https://evil.example"), Some("127.0.0.1:1")));
    }

    #[test]
    fn buckets_fire_and_recover() {
        let mut cfg = Config::default();
        cfg.access.rate_limiting.per_connection = Some(PerMinute(600)); // 10/s
        cfg.access.rate_limiting.burst = crate::config::Millis(300); // 3 deep
        let l = ShardLimiter::new(&cfg, 2);
        let t0 = Instant::now();
        let x = ip("10.0.0.1");
        for _ in 0..3 {
            assert!(l.check(1, x, t0).is_ok());
        }
        let (lim, wait) = l.check(1, x, t0).unwrap_err();
        assert_eq!(lim, Limit::PerConnection);
        assert!((90..=110).contains(&wait), "{wait}");
        assert!(
            l.check(2, x, t0).is_ok(),
            "other connections have their own bucket"
        );
        assert!(l.check(1, x, t0 + Duration::from_millis(wait)).is_ok());
    }

    #[test]
    fn global_is_split_over_shards_and_refusal_refunds() {
        let mut cfg = Config::default();
        cfg.access.rate_limiting.global = Some(PerMinute(1200)); // 20/s, 10/s per shard of 2
        cfg.access.rate_limiting.per_connection = Some(PerMinute(6000));
        cfg.access.rate_limiting.burst = crate::config::Millis(1000);
        let l = ShardLimiter::new(&cfg, 2);
        let t0 = Instant::now();
        let x = ip("10.0.0.1");
        let ok = (0..50).filter(|_| l.check(1, x, t0).is_ok()).count();
        assert_eq!(ok, 10);
        assert_eq!(l.check(1, x, t0).unwrap_err().0, Limit::Global);
        // The connection's bucket was refunded: 100 - 10 tokens left in it.
        let left = l.conns.borrow()[&1].tokens;
        assert!((89.0..=91.0).contains(&left), "{left}");
    }
}
