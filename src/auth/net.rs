//! Network addresses as the access rules see them: CIDR ranges, the network class of a peer
//! (for the pairing policies) and the syntax of an allowlist entry. Pure values, so config
//! validation can use them.

use std::net::IpAddr;

/// An address range, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `addr/bits` or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, b) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s.trim(), None),
        };
        let net: IpAddr = a
            .parse()
            .map_err(|_| format!("not an address or CIDR range: {s:?}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match b {
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("bad prefix length in {s:?} (0..={max})"))?,
            None => max,
        };
        Ok(Cidr { net, bits })
    }

    /// The prefix length.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Whether `ip` is inside the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.bits as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.bits as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Where a peer is, for the pairing policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetClass {
    /// A direct loopback peer.
    Localhost,
    /// Inside `gateway.pairing.lanRanges`.
    Lan,
    /// Anywhere else.
    Wan,
}

impl NetClass {
    /// `localhost`, `lan`, `wan`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetClass::Localhost => "localhost",
            NetClass::Lan => "lan",
            NetClass::Wan => "wan",
        }
    }
}

/// One allowlist entry.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// An address or a CIDR range.
    Range(Cidr),
    /// A host name, resolved when the allowlist is checked.
    Host(String),
}

pub(crate) fn parse_entry(s: &str) -> Result<Entry, String> {
    let t = s.trim();
    if let Ok(c) = Cidr::parse(t) {
        return Ok(Entry::Range(c));
    }
    let host_like = !t.is_empty()
        && !t.contains('/')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if host_like {
        Ok(Entry::Host(t.to_ascii_lowercase()))
    } else {
        Err(format!("not a CIDR range, address or host name: {s:?}"))
    }
}

/// Checks an allowlist entry (for `Config::validate`).
pub fn check_entry(s: &str) -> Result<(), String> {
    parse_entry(s).map(|_| ())
}
