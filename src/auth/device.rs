//! Ed25519 device identity: verifying the `device` proof of a `connect` request
//! (PROTOCOL.md §3.6), and producing one on the client side.
//!
//! A device is an Ed25519 key pair. Its id is the lowercase hex SHA-256 of the
//! raw 32-byte public key, so an id can never be claimed without the key. On
//! connect the client signs a `|`-separated payload binding the device to the
//! challenge nonce, the client, the role and scopes it asks for, the auth token
//! it presents and the time of signing; the gateway rebuilds the same string and
//! checks the signature.
//!
//! Invariants a reader must keep:
//! - The checks run in OpenClaw's order — public key parses, id matches the key,
//!   `signedAt` within [`MAX_SKEW_MS`] of now, nonce matches the challenge,
//!   signature verifies (v3 payload first, then v2) — so each failure maps to the
//!   same error OpenClaw reports.
//! - Signatures are checked with `verify_strict` (no small-order keys, no
//!   non-canonical `R`/`s`), and weak public keys are rejected at parse time.
//! - Nothing here panics on client input, and nothing logs: the proof carries the
//!   auth token, which must never reach a log line (the `Debug` impls redact it).
//! - The payload strings are byte-for-byte those of OpenClaw; changing a single
//!   character breaks every existing client.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// How far `signedAt` may be from the gateway's clock, either way, in
/// milliseconds (2 minutes, as in OpenClaw). The bound is inclusive.
pub const MAX_SKEW_MS: i64 = 120_000;

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): the raw 32-byte
/// key follows it. This is what Node's `publicKey.export({type:"spki"})` emits.
pub(crate) const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Lenient decoder for client-supplied base64: padding optional, trailing bits
/// ignored (as Node's `Buffer.from(s, "base64url")` does).
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
const B64STD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);

/// The `device` object of `connect.params`, plus the request fields its
/// signature covers. Borrowed from the parsed request; nothing is copied.
#[derive(Clone, Copy)]
pub struct DeviceProof<'a> {
    /// `device.id`: claimed lowercase hex SHA-256 of the raw public key.
    pub device_id: &'a str,
    /// `device.publicKey`: base64url of the raw 32-byte key (padded or not),
    /// or a PEM `PUBLIC KEY` (SPKI) block.
    pub public_key: &'a str,
    /// `device.signature`: base64url (standard base64 also accepted) of the
    /// 64-byte Ed25519 signature.
    pub signature: &'a str,
    /// `device.signedAt`: client clock at signing, ms since the epoch.
    pub signed_at_ms: i64,
    /// `device.nonce`: must equal the `connect.challenge` nonce.
    pub nonce: &'a str,
    /// `client.id`.
    pub client_id: &'a str,
    /// `client.mode`.
    pub client_mode: &'a str,
    /// Requested role (`operator` when absent on the wire).
    pub role: &'a str,
    /// Requested scopes, in request order.
    pub scopes: &'a [String],
    /// `auth.token ?? auth.deviceToken ?? auth.bootstrapToken ?? ""`.
    pub token: &'a str,
    /// `client.platform`, if sent (normalised only inside the v3 payload).
    pub platform: Option<&'a str>,
    /// `client.deviceFamily`, if sent (normalised only inside the v3 payload).
    pub device_family: Option<&'a str>,
}

impl fmt::Debug for DeviceProof<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceProof")
            .field("device_id", &self.device_id)
            .field("signed_at_ms", &self.signed_at_ms)
            .field("client_id", &self.client_id)
            .field("client_mode", &self.client_mode)
            .field("role", &self.role)
            .field("scopes", &self.scopes)
            .field("platform", &self.platform)
            .field("device_family", &self.device_family)
            .finish_non_exhaustive()
    }
}

/// A device whose proof passed every check of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDevice {
    /// The device id (equal to [`device_id_for`] of `public_key`).
    pub device_id: String,
    /// The raw 32-byte Ed25519 public key.
    pub public_key: [u8; 32],
    /// Which payload the signature covered: 3 or 2 (legacy clients).
    pub payload_version: u8,
}

/// Why a device proof was refused, in the order the checks run.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DeviceAuthError {
    /// `device.id` is not the SHA-256 of `device.publicKey`.
    #[error("device identity mismatch")]
    IdMismatch,
    /// `device.publicKey` is not a valid Ed25519 public key (bad encoding,
    /// wrong length, not a curve point, or a weak key).
    #[error("device public key invalid")]
    PublicKeyInvalid,
    /// The signature does not decode or verify over the v3 or v2 payload.
    #[error("device signature invalid")]
    SignatureInvalid,
    /// `device.signedAt` is more than [`MAX_SKEW_MS`] away from now.
    #[error("device signature expired")]
    SignatureExpired,
    /// `device.nonce` is not the nonce of this connection's challenge.
    #[error("device nonce mismatch")]
    NonceMismatch,
}

/// Checks a device proof against the challenge nonce sent on this connection
/// and the gateway clock `now_ms`.
///
/// # Errors
/// The first failing check, in OpenClaw's order: [`DeviceAuthError::PublicKeyInvalid`],
/// [`DeviceAuthError::IdMismatch`], [`DeviceAuthError::SignatureExpired`],
/// [`DeviceAuthError::NonceMismatch`], [`DeviceAuthError::SignatureInvalid`].
pub fn verify(
    proof: &DeviceProof<'_>,
    expected_nonce: &str,
    now_ms: i64,
) -> Result<VerifiedDevice, DeviceAuthError> {
    let raw = parse_public_key(proof.public_key)?;
    // Weak keys were refused by `parse_public_key`; this cannot fail, but an
    // error beats a panic.
    let key = VerifyingKey::from_bytes(&raw).map_err(|_| DeviceAuthError::PublicKeyInvalid)?;

    if device_id_for(&raw) != proof.device_id {
        return Err(DeviceAuthError::IdMismatch);
    }
    // `abs_diff` cannot overflow, whatever the client sends.
    if now_ms.abs_diff(proof.signed_at_ms) > MAX_SKEW_MS.unsigned_abs() {
        return Err(DeviceAuthError::SignatureExpired);
    }
    if proof.nonce.is_empty() || proof.nonce != expected_nonce {
        return Err(DeviceAuthError::NonceMismatch);
    }

    let sig_bytes: [u8; 64] = decode_b64_lenient(proof.signature)
        .and_then(|v| v.try_into().ok())
        .ok_or(DeviceAuthError::SignatureInvalid)?;
    let signature = Signature::from_bytes(&sig_bytes);

    let v3 = payload_v3(
        proof.device_id,
        proof.client_id,
        proof.client_mode,
        proof.role,
        proof.scopes,
        proof.signed_at_ms,
        proof.token,
        proof.nonce,
        proof.platform,
        proof.device_family,
    );
    let payload_version = if key.verify_strict(v3.as_bytes(), &signature).is_ok() {
        3
    } else {
        let v2 = payload_v2(
            proof.device_id,
            proof.client_id,
            proof.client_mode,
            proof.role,
            proof.scopes,
            proof.signed_at_ms,
            proof.token,
            proof.nonce,
        );
        key.verify_strict(v2.as_bytes(), &signature)
            .map_err(|_| DeviceAuthError::SignatureInvalid)?;
        2
    };

    Ok(VerifiedDevice {
        device_id: proof.device_id.to_owned(),
        public_key: raw,
        payload_version,
    })
}

/// The device id of a raw Ed25519 public key: lowercase hex SHA-256 (64 chars).
pub fn device_id_for(public_key_raw: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(public_key_raw))
}

/// Parses `device.publicKey` into the raw 32-byte key: base64url or base64 of
/// the raw key (padding optional), or a PEM `PUBLIC KEY` block holding an
/// Ed25519 SPKI. Refuses non-points and weak (small-order) keys.
///
/// # Errors
/// [`DeviceAuthError::PublicKeyInvalid`] for anything else.
pub fn parse_public_key(encoded: &str) -> Result<[u8; 32], DeviceAuthError> {
    let encoded = encoded.trim();
    let raw: [u8; 32] = if encoded.starts_with("-----BEGIN") {
        let body: String = encoded
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = B64STD_LENIENT
            .decode(body.as_bytes())
            .map_err(|_| DeviceAuthError::PublicKeyInvalid)?;
        match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            Some(key) => key
                .try_into()
                .map_err(|_| DeviceAuthError::PublicKeyInvalid)?,
            None => return Err(DeviceAuthError::PublicKeyInvalid),
        }
    } else {
        decode_b64_lenient(encoded)
            .and_then(|v| v.try_into().ok())
            .ok_or(DeviceAuthError::PublicKeyInvalid)?
    };
    let key = VerifyingKey::from_bytes(&raw).map_err(|_| DeviceAuthError::PublicKeyInvalid)?;
    if key.is_weak() {
        return Err(DeviceAuthError::PublicKeyInvalid);
    }
    Ok(raw)
}

/// Encodes bytes as unpadded base64url, the wire form of keys and signatures.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, falling back to standard base64; padding optional.
fn decode_b64_lenient(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    B64URL_LENIENT
        .decode(s)
        .or_else(|_| B64STD_LENIENT.decode(s))
        .ok()
}

/// `platform`/`deviceFamily` as they enter the v3 payload: trimmed, ASCII
/// lower-case, empty when absent.
fn normalize_metadata(value: Option<&str>) -> String {
    value
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The v3 signed payload:
/// `v3|deviceId|clientId|clientMode|role|scopes|signedAt|token|nonce|platform|deviceFamily`,
/// scopes joined by `,`, platform and device family normalised (trimmed, ASCII
/// lower-case, `""` when absent).
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per payload field, in payload order"
)]
pub fn payload_v3(
    device_id: &str,
    client_id: &str,
    client_mode: &str,
    role: &str,
    scopes: &[String],
    signed_at_ms: i64,
    token: &str,
    nonce: &str,
    platform: Option<&str>,
    device_family: Option<&str>,
) -> String {
    format!(
        "v3|{device_id}|{client_id}|{client_mode}|{role}|{scopes}|{signed_at_ms}|{token}|{nonce}|{platform}|{family}",
        scopes = scopes.join(","),
        platform = normalize_metadata(platform),
        family = normalize_metadata(device_family),
    )
}

/// The legacy v2 signed payload:
/// `v2|deviceId|clientId|clientMode|role|scopes|signedAt|token|nonce`.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per payload field, in payload order"
)]
pub fn payload_v2(
    device_id: &str,
    client_id: &str,
    client_mode: &str,
    role: &str,
    scopes: &[String],
    signed_at_ms: i64,
    token: &str,
    nonce: &str,
) -> String {
    format!(
        "v2|{device_id}|{client_id}|{client_mode}|{role}|{scopes}|{signed_at_ms}|{token}|{nonce}",
        scopes = scopes.join(","),
    )
}

/// A client-side device identity (our CLI, load generator and tests): an
/// Ed25519 signing key. The secret is zeroised on drop and never printed.
#[derive(Clone)]
pub struct DeviceIdentity {
    key: SigningKey,
}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("device_id", &self.device_id())
            .finish_non_exhaustive()
    }
}

impl DeviceIdentity {
    /// A fresh identity from the operating system's RNG.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self::from_secret(secret)
    }

    /// The identity for a stored 32-byte Ed25519 secret (seed).
    pub fn from_secret(bytes: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&bytes),
        }
    }

    /// The 32-byte secret, for persisting the identity. Handle with care.
    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The device id: lowercase hex SHA-256 of the raw public key.
    pub fn device_id(&self) -> String {
        device_id_for(&self.public_key())
    }

    /// The raw public key as unpadded base64url (the `device.publicKey` form).
    pub fn public_key_b64url(&self) -> String {
        b64url(&self.public_key())
    }

    /// Signs `payload` and returns the unpadded base64url signature.
    pub fn sign_b64url(&self, payload: &str) -> String {
        b64url(&self.key.sign(payload.as_bytes()).to_bytes())
    }

    /// Builds the `device` object of `connect.params`
    /// (`{id, publicKey, signature, signedAt, nonce}`), signing the v3 payload.
    /// `token` must be the token the request presents (see [`DeviceProof::token`]).
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per signed connect field"
    )]
    pub fn sign_connect(
        &self,
        nonce: &str,
        signed_at_ms: i64,
        client_id: &str,
        client_mode: &str,
        role: &str,
        scopes: &[String],
        token: &str,
        platform: Option<&str>,
        device_family: Option<&str>,
    ) -> serde_json::Value {
        let device_id = self.device_id();
        let payload = payload_v3(
            &device_id,
            client_id,
            client_mode,
            role,
            scopes,
            signed_at_ms,
            token,
            nonce,
            platform,
            device_family,
        );
        self.device_object(device_id, &payload, signed_at_ms, nonce)
    }

    /// Like [`DeviceIdentity::sign_connect`] but signs the legacy v2 payload,
    /// as older clients do.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per signed connect field"
    )]
    pub fn sign_connect_v2(
        &self,
        nonce: &str,
        signed_at_ms: i64,
        client_id: &str,
        client_mode: &str,
        role: &str,
        scopes: &[String],
        token: &str,
    ) -> serde_json::Value {
        let device_id = self.device_id();
        let payload = payload_v2(
            &device_id,
            client_id,
            client_mode,
            role,
            scopes,
            signed_at_ms,
            token,
            nonce,
        );
        self.device_object(device_id, &payload, signed_at_ms, nonce)
    }

    fn device_object(
        &self,
        device_id: String,
        payload: &str,
        signed_at_ms: i64,
        nonce: &str,
    ) -> serde_json::Value {
        serde_json::json!({
            "id": device_id,
            "publicKey": self.public_key_b64url(),
            "signature": self.sign_b64url(payload),
            "signedAt": signed_at_ms,
            "nonce": nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    const NOW: i64 = 1_700_000_000_000;
    const NONCE: &str = "5f0c2b8e-1a2b-4c3d-8e9f-0a1b2c3d4e5f";

    fn scopes() -> Vec<String> {
        vec!["operator.read".into(), "operator.write".into()]
    }

    fn identity() -> DeviceIdentity {
        DeviceIdentity::from_secret([7u8; 32])
    }

    /// Owned strings behind a [`DeviceProof`], so tests can tamper with them.
    struct Owned {
        id: String,
        key: String,
        sig: String,
        signed_at: i64,
        nonce: String,
        scopes: Vec<String>,
        token: String,
        platform: Option<String>,
        family: Option<String>,
    }

    impl Owned {
        fn from_json(v: &serde_json::Value, scopes: Vec<String>, token: &str) -> Self {
            Self {
                id: v["id"].as_str().unwrap().into(),
                key: v["publicKey"].as_str().unwrap().into(),
                sig: v["signature"].as_str().unwrap().into(),
                signed_at: v["signedAt"].as_i64().unwrap(),
                nonce: v["nonce"].as_str().unwrap().into(),
                scopes,
                token: token.into(),
                platform: Some(" MacOS ".into()),
                family: Some("Mac".into()),
            }
        }

        fn proof(&self) -> DeviceProof<'_> {
            DeviceProof {
                device_id: &self.id,
                public_key: &self.key,
                signature: &self.sig,
                signed_at_ms: self.signed_at,
                nonce: &self.nonce,
                client_id: "cli",
                client_mode: "cli",
                role: "operator",
                scopes: &self.scopes,
                token: &self.token,
                platform: self.platform.as_deref(),
                device_family: self.family.as_deref(),
            }
        }
    }

    fn signed_v3(id: &DeviceIdentity, signed_at: i64) -> Owned {
        let v = id.sign_connect(
            NONCE,
            signed_at,
            "cli",
            "cli",
            "operator",
            &scopes(),
            "tok",
            Some(" MacOS "),
            Some("Mac"),
        );
        Owned::from_json(&v, scopes(), "tok")
    }

    #[test]
    fn payload_strings_are_exact() {
        let s = scopes();
        assert_eq!(
            payload_v3(
                "dev",
                "cli",
                "ui",
                "operator",
                &s,
                42,
                "t",
                "n",
                Some("  MacOS\t"),
                None
            ),
            "v3|dev|cli|ui|operator|operator.read,operator.write|42|t|n|macos|"
        );
        assert_eq!(
            payload_v3(
                "d",
                "c",
                "m",
                "node",
                &[],
                -1,
                "",
                "n",
                None,
                Some("ÄPhone")
            ),
            "v3|d|c|m|node||-1||n||Äphone"
        );
        assert_eq!(
            payload_v2("dev", "cli", "ui", "operator", &s, 42, "t", "n"),
            "v2|dev|cli|ui|operator|operator.read,operator.write|42|t|n"
        );
    }

    #[test]
    fn device_id_is_sha256_hex_of_raw_key() {
        let id = identity();
        let expected = hex::encode(Sha256::digest(id.public_key()));
        assert_eq!(id.device_id(), expected);
        assert_eq!(id.device_id().len(), 64);
        assert!(id
            .device_id()
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn identity_round_trips_secret() {
        let a = DeviceIdentity::generate();
        let b = DeviceIdentity::from_secret(a.secret());
        assert_eq!(a.device_id(), b.device_id());
        assert_ne!(a.device_id(), DeviceIdentity::generate().device_id());
        assert!(!format!("{a:?}").contains(&hex::encode(a.secret())));
    }

    #[test]
    fn v3_ok() {
        let o = signed_v3(&identity(), NOW);
        let v = verify(&o.proof(), NONCE, NOW).unwrap();
        assert_eq!(v.payload_version, 3);
        assert_eq!(v.device_id, identity().device_id());
        assert_eq!(v.public_key, identity().public_key());
    }

    #[test]
    fn v3_metadata_is_normalised_on_both_sides() {
        let mut o = signed_v3(&identity(), NOW);
        o.platform = Some("macos".into());
        o.family = Some("  MAC ".into());
        assert_eq!(verify(&o.proof(), NONCE, NOW).unwrap().payload_version, 3);
        o.platform = None;
        assert_eq!(
            verify(&o.proof(), NONCE, NOW),
            Err(DeviceAuthError::SignatureInvalid)
        );
    }

    #[test]
    fn v2_fallback_ok() {
        let id = identity();
        let v = id.sign_connect_v2(NONCE, NOW, "cli", "cli", "operator", &scopes(), "tok");
        let o = Owned::from_json(&v, scopes(), "tok");
        assert_eq!(verify(&o.proof(), NONCE, NOW).unwrap().payload_version, 2);
    }

    #[test]
    fn signature_covers_token_and_scopes() {
        let mut o = signed_v3(&identity(), NOW);
        o.token = "other".into();
        assert_eq!(
            verify(&o.proof(), NONCE, NOW),
            Err(DeviceAuthError::SignatureInvalid)
        );
        let mut o = signed_v3(&identity(), NOW);
        o.scopes.push("operator.admin".into());
        assert_eq!(
            verify(&o.proof(), NONCE, NOW),
            Err(DeviceAuthError::SignatureInvalid)
        );
    }

    #[test]
    fn wrong_nonce() {
        let o = signed_v3(&identity(), NOW);
        assert_eq!(
            verify(&o.proof(), "another-nonce", NOW),
            Err(DeviceAuthError::NonceMismatch)
        );
        let mut o = signed_v3(&identity(), NOW);
        o.nonce = String::new();
        assert_eq!(
            verify(&o.proof(), "", NOW),
            Err(DeviceAuthError::NonceMismatch)
        );
    }

    #[test]
    fn skew_boundary_is_inclusive() {
        let id = identity();
        for signed_at in [NOW - MAX_SKEW_MS, NOW + MAX_SKEW_MS] {
            let o = signed_v3(&id, signed_at);
            assert!(verify(&o.proof(), NONCE, NOW).is_ok(), "at {signed_at}");
        }
        for signed_at in [NOW - MAX_SKEW_MS - 1, NOW + MAX_SKEW_MS + 1] {
            let o = signed_v3(&id, signed_at);
            assert_eq!(
                verify(&o.proof(), NONCE, NOW),
                Err(DeviceAuthError::SignatureExpired),
                "at {signed_at}"
            );
        }
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let mut o = signed_v3(&identity(), NOW);
        o.signed_at = i64::MIN;
        assert_eq!(
            verify(&o.proof(), NONCE, i64::MAX),
            Err(DeviceAuthError::SignatureExpired)
        );
    }

    #[test]
    fn expiry_is_checked_before_nonce() {
        let o = signed_v3(&identity(), NOW - 10 * MAX_SKEW_MS);
        assert_eq!(
            verify(&o.proof(), "wrong", NOW),
            Err(DeviceAuthError::SignatureExpired)
        );
    }

    #[test]
    fn tampered_signature() {
        let mut o = signed_v3(&identity(), NOW);
        let mut raw = URL_SAFE_NO_PAD.decode(&o.sig).unwrap();
        raw[10] ^= 0x01;
        o.sig = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            verify(&o.proof(), NONCE, NOW),
            Err(DeviceAuthError::SignatureInvalid)
        );
        for garbage in ["", "!!!", "AAAA", &"A".repeat(200)] {
            o.sig = garbage.into();
            assert_eq!(
                verify(&o.proof(), NONCE, NOW),
                Err(DeviceAuthError::SignatureInvalid),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn signature_by_other_key_is_invalid() {
        let mut o = signed_v3(&identity(), NOW);
        o.sig = signed_v3(&DeviceIdentity::from_secret([9u8; 32]), NOW).sig;
        assert_eq!(
            verify(&o.proof(), NONCE, NOW),
            Err(DeviceAuthError::SignatureInvalid)
        );
    }

    #[test]
    fn wrong_id() {
        let mut o = signed_v3(&identity(), NOW);
        o.id = DeviceIdentity::from_secret([9u8; 32]).device_id();
        assert_eq!(
            verify(&o.proof(), NONCE, NOW),
            Err(DeviceAuthError::IdMismatch)
        );
        let mut o = signed_v3(&identity(), NOW);
        o.id = o.id.to_ascii_uppercase();
        assert_eq!(
            verify(&o.proof(), NONCE, NOW),
            Err(DeviceAuthError::IdMismatch)
        );
    }

    #[test]
    fn id_is_checked_before_expiry() {
        let mut o = signed_v3(&identity(), 0);
        o.id = "nope".into();
        assert_eq!(
            verify(&o.proof(), NONCE, NOW),
            Err(DeviceAuthError::IdMismatch)
        );
    }

    fn pem_for(raw: &[u8; 32]) -> String {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(raw);
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(der)
        )
    }

    #[test]
    fn pem_key_accepted() {
        let id = identity();
        let mut o = signed_v3(&id, NOW);
        o.key = pem_for(&id.public_key());
        assert_eq!(verify(&o.proof(), NONCE, NOW).unwrap().payload_version, 3);
        // CRLF line endings and surrounding whitespace too.
        o.key = format!("  {}", pem_for(&id.public_key()).replace('\n', "\r\n"));
        assert!(verify(&o.proof(), NONCE, NOW).is_ok());
    }

    #[test]
    fn pem_with_wrong_algorithm_rejected() {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der[8] = 0x71; // Ed448 OID arc
        der.extend_from_slice(&identity().public_key());
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
            STANDARD.encode(der)
        );
        assert_eq!(
            parse_public_key(&pem),
            Err(DeviceAuthError::PublicKeyInvalid)
        );
        assert_eq!(
            parse_public_key("-----BEGIN PUBLIC KEY-----\n%%%\n-----END PUBLIC KEY-----"),
            Err(DeviceAuthError::PublicKeyInvalid)
        );
    }

    #[test]
    fn garbage_key() {
        for key in [
            "",
            "not base64 at all!",
            &URL_SAFE_NO_PAD.encode([1u8; 31]),
            &URL_SAFE_NO_PAD.encode([1u8; 33]),
            // The identity point: a small-order (weak) key.
            &URL_SAFE_NO_PAD.encode({
                let mut k = [0u8; 32];
                k[0] = 1;
                k
            }),
        ] {
            assert_eq!(
                parse_public_key(key),
                Err(DeviceAuthError::PublicKeyInvalid),
                "{key:?}"
            );
            let mut o = signed_v3(&identity(), NOW);
            o.key = key.into();
            assert_eq!(
                verify(&o.proof(), NONCE, NOW),
                Err(DeviceAuthError::PublicKeyInvalid)
            );
        }
    }

    #[test]
    fn key_and_signature_encodings() {
        let id = identity();
        let raw = id.public_key();
        for key in [
            URL_SAFE_NO_PAD.encode(raw),
            URL_SAFE.encode(raw),
            STANDARD.encode(raw),
        ] {
            assert_eq!(parse_public_key(&key), Ok(raw), "{key}");
        }
        let mut o = signed_v3(&id, NOW);
        o.key = URL_SAFE.encode(raw);
        let sig = URL_SAFE_NO_PAD.decode(&o.sig).unwrap();
        for s in [URL_SAFE.encode(&sig), STANDARD.encode(&sig)] {
            o.sig = s;
            assert_eq!(verify(&o.proof(), NONCE, NOW).unwrap().payload_version, 3);
        }
    }

    #[test]
    fn debug_redacts_token() {
        let o = signed_v3(&identity(), NOW);
        let mut o2 = signed_v3(&identity(), NOW);
        o2.token = "super-secret-token".into();
        assert!(!format!("{:?}", o2.proof()).contains("super-secret-token"));
        assert!(format!("{:?}", o.proof()).contains("operator"));
    }
}
