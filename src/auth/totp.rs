//! TOTP second factor (RFC 6238: HMAC-SHA-1, 6 digits, 30 s steps, ±1 step of clock skew),
//! and the replay guard that refuses a code whose time step was already used by the same
//! subject.
//!
//! A client sends the code at connect in `connect.params.auth.totp`. Secrets are base32 (as
//! authenticator apps expect): devices enrol with `device.mfa.enroll`, the device-less
//! operator's secret is `access.authentication.mfa.operatorSecret`.
//!
//! The replay guard is process-wide (a code must not work twice on two shards) and touched
//! only at connect, so it sits behind a mutex. It lives in memory: after a restart a code of
//! the current 30 s step could be used once more; a restart takes longer than that window.
#![expect(
    clippy::disallowed_types,
    reason = "touched at connect only, exact across shards"
)]

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use rand::RngCore as _;

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes base32 (case-insensitive, spaces and `=` padding ignored).
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a as char == c.to_ascii_uppercase())? as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A new 160-bit secret, base32.
pub fn generate_secret() -> String {
    let mut b = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base32_encode(&b)
}

/// The `otpauth://` URL an authenticator app reads (usually from a QR code).
pub fn otpauth_url(secret_b32: &str, account: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/shardgate:{}?secret={secret_b32}&issuer=shardgate&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(account)
    )
}

/// The code of time step `step` (HOTP of RFC 4226 over the step counter).
pub fn code_at(secret: &[u8], step: u64) -> u32 {
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret) else {
        return u32::MAX; // HMAC accepts any key length; unreachable.
    };
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = (h[19] & 0x0f) as usize;
    let bin = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    bin % 10u32.pow(DIGITS)
}

/// The code for `now_ms`, zero-padded (for tests and enrolment checks).
pub fn code_now(secret_b32: &str, now_ms: i64) -> Option<String> {
    let key = base32_decode(secret_b32)?;
    let step = (now_ms.max(0) as u64 / 1000) / STEP_SECS;
    Some(format!(
        "{:0width$}",
        code_at(&key, step),
        width = DIGITS as usize
    ))
}

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpError {
    /// Wrong, malformed, or outside the window.
    Invalid,
    /// Right, but its step (or a later one) was already used.
    Replayed,
}

/// The time step a code matches within ±1 step of `now_ms`, if any. Compares every
/// candidate (no early exit) so timing says nothing about which step matched.
pub fn matching_step(secret_b32: &str, code: &str, now_ms: i64) -> Option<u64> {
    let key = base32_decode(secret_b32)?;
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let given: u32 = code.parse().ok()?;
    let now_step = (now_ms.max(0) as u64 / 1000) / STEP_SECS;
    let mut found = None;
    for step in [now_step.saturating_sub(1), now_step, now_step + 1] {
        let hit = subtle::ConstantTimeEq::ct_eq(&code_at(&key, step), &given);
        if bool::from(hit) {
            found = Some(step);
        }
    }
    found
}

/// Last accepted time step per subject (`device:<id>`, `operator`).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    last: Mutex<HashMap<String, u64>>,
}

impl ReplayGuard {
    /// Checks `code` for `subject` and, when it is good and fresh, records its step.
    pub fn verify(
        &self,
        subject: &str,
        secret_b32: &str,
        code: &str,
        now_ms: i64,
    ) -> Result<(), TotpError> {
        let step = matching_step(secret_b32, code, now_ms).ok_or(TotpError::Invalid)?;
        let mut g = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match g.get(subject) {
            Some(last) if step <= *last => Err(TotpError::Replayed),
            _ => {
                g.insert(subject.to_owned(), step);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        let key = b"12345678901234567890";
        // RFC 6238 appendix B, truncated to 6 digits.
        for (t, want) in [
            (59u64, 287_082u32),
            (1_111_111_109, 81_804),
            (1_234_567_890, 5_924),
            (2_000_000_000, 279_037),
        ] {
            assert_eq!(code_at(key, t / 30), want, "T={t}");
        }
    }

    #[test]
    fn base32_round_trip() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("mzxw6ytboi======").unwrap(), b"foobar");
        assert!(base32_decode("1!").is_none());
        let s = generate_secret();
        assert_eq!(base32_decode(&s).unwrap().len(), 20);
    }

    #[test]
    fn window_and_replay() {
        let secret = generate_secret();
        let now = 1_700_000_000_000;
        let code = code_now(&secret, now).unwrap();
        let g = ReplayGuard::default();
        assert_eq!(
            g.verify("a", &secret, "000000x", now),
            Err(TotpError::Invalid)
        );
        assert_eq!(g.verify("a", &secret, &code, now), Ok(()));
        assert_eq!(g.verify("a", &secret, &code, now), Err(TotpError::Replayed));
        // Another subject has its own history.
        assert_eq!(g.verify("b", &secret, &code, now), Ok(()));
        // Previous step's code is within the window, but older than the used one.
        let prev = code_now(&secret, now - 30_000).unwrap();
        assert_eq!(g.verify("a", &secret, &prev, now), Err(TotpError::Replayed));
        // Two steps away: invalid.
        let old = code_now(&secret, now - 90_000).unwrap();
        if old != code && old != prev {
            assert_eq!(g.verify("c", &secret, &old, now), Err(TotpError::Invalid));
        }
        let next = code_now(&secret, now + 30_000).unwrap();
        assert_eq!(g.verify("a", &secret, &next, now), Ok(()));
    }
}
