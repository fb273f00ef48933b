//! The gateway's own Ed25519 identity (`gateway.identity.get`): made once, kept in
//! `<stateDir>/identity/device.json`, the same across restarts.
//!
//! The wire form is OpenClaw's: `deviceId` is the lowercase hex SHA-256 of the raw 32-byte
//! public key, `publicKey` the raw key in unpadded base64url. The file has OpenClaw's device
//! identity shape (`version`, `deviceId`, `publicKeyPem` as SPKI, `privateKeyPem` as PKCS#8,
//! `createdAtMs`), so the same key material reads the same in either program.
//!
//! Invariant: a file that exists but does not hold a matching key pair is an error, never
//! replaced: a new key would silently change who the gateway is to everyone who pinned it.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::device::{b64url, device_id_for, parse_public_key, ED25519_SPKI_PREFIX};
use super::state_file;

/// DER prefix of an Ed25519 PKCS#8 private key (RFC 8410): the 32-byte seed follows it.
/// This is what Node's `privateKey.export({type:"pkcs8"})` emits.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The public half of the gateway's identity, as `gateway.identity.get` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayIdentity {
    /// Hex SHA-256 of the raw public key (64 chars).
    pub device_id: String,
    /// The raw public key, unpadded base64url.
    pub public_key: String,
}

/// The file, in OpenClaw's device identity shape.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    version: u32,
    device_id: String,
    public_key_pem: String,
    private_key_pem: String,
    created_at_ms: i64,
}

/// Where the identity lives under `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("identity").join("device.json")
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

fn seed_from_pkcs8_pem(text: &str) -> Option<[u8; 32]> {
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(body.as_bytes()).ok()?;
    der.strip_prefix(&ED25519_PKCS8_PREFIX[..])?.try_into().ok()
}

impl GatewayIdentity {
    fn of(key: &SigningKey) -> GatewayIdentity {
        let raw = key.verifying_key().to_bytes();
        GatewayIdentity {
            device_id: device_id_for(&raw),
            public_key: b64url(&raw),
        }
    }

    /// Reads the identity from `state_dir`, making (and saving, mode 0600) a new one when
    /// there is none.
    ///
    /// # Errors
    /// The file cannot be read or written, or holds no valid matching key pair.
    pub fn load_or_create(state_dir: &Path, now_ms: i64) -> Result<GatewayIdentity, String> {
        let p = path(state_dir);
        let at = |e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
        match state_file::read_if_exists(&p).map_err(|e| at(&e))? {
            Some(bytes) => {
                let text = String::from_utf8(bytes).map_err(|e| at(&e))?;
                Self::parse(&text).map_err(|e| at(&e))
            }
            None => {
                let seed: [u8; 32] = rand::random();
                let key = SigningKey::from_bytes(&seed);
                let id = Self::of(&key);
                let mut spki = ED25519_SPKI_PREFIX.to_vec();
                spki.extend_from_slice(&key.verifying_key().to_bytes());
                let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
                pkcs8.extend_from_slice(&seed);
                let stored = Stored {
                    version: 1,
                    device_id: id.device_id.clone(),
                    public_key_pem: pem("PUBLIC KEY", &spki),
                    private_key_pem: pem("PRIVATE KEY", &pkcs8),
                    created_at_ms: now_ms,
                };
                // Written so a crash leaves either no identity or a whole one.
                p.parent()
                    .map_or(Ok(()), state_file::create_private_dir)
                    .and_then(|()| state_file::write_json_atomic(&p, &stored))
                    .map_err(|e| at(&e))?;
                Ok(id)
            }
        }
    }

    /// Checks a stored identity: the private key derives the stored public key, whose
    /// fingerprint is the stored device id.
    fn parse(text: &str) -> Result<GatewayIdentity, String> {
        let s: Stored = serde_json::from_str(text).map_err(|e| format!("not an identity: {e}"))?;
        let seed = seed_from_pkcs8_pem(&s.private_key_pem)
            .ok_or("privateKeyPem is not an Ed25519 PKCS#8 key")?;
        let key = SigningKey::from_bytes(&seed);
        let public =
            parse_public_key(&s.public_key_pem).map_err(|_| "publicKeyPem is not Ed25519")?;
        if public != key.verifying_key().to_bytes() {
            return Err("publicKeyPem does not match privateKeyPem".into());
        }
        let id = Self::of(&key);
        if id.device_id != s.device_id {
            return Err("deviceId is not the fingerprint of the public key".into());
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let a = GatewayIdentity::load_or_create(dir.path(), 1).unwrap();
        let b = GatewayIdentity::load_or_create(dir.path(), 2).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.device_id.len(), 64);
        let raw = parse_public_key(&a.public_key).unwrap();
        assert_eq!(device_id_for(&raw), a.device_id);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path(dir.path())).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn a_tampered_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        GatewayIdentity::load_or_create(dir.path(), 1).unwrap();
        let p = path(dir.path());
        let text = std::fs::read_to_string(&p).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["deviceId"] = serde_json::json!("0".repeat(64));
        std::fs::write(&p, v.to_string()).unwrap();
        let e = GatewayIdentity::load_or_create(dir.path(), 2).unwrap_err();
        assert!(e.contains("fingerprint"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), v.to_string());
    }

    #[test]
    fn reads_a_node_made_identity() {
        // A throwaway key made by Node's crypto.generateKeyPairSync("ed25519") and exported
        // as OpenClaw does (spki / pkcs8 PEM).
        let text = r#"{"version":1,"deviceId":"2a7b840b99598e02dc34cab17da1c4111d13634decd3deb980176d7f3d2e4f5b","publicKeyPem":"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEApeCHsNaTe7jhHZoOWj7aoyIfXD02ffdYzvJiguC2dKs=\n-----END PUBLIC KEY-----\n","privateKeyPem":"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIM02SKBI/DdzdGkoNhQiAV603pdZNjQNTgQslgKLDIpd\n-----END PRIVATE KEY-----\n","createdAtMs":1}"#;
        let id = GatewayIdentity::parse(text).unwrap();
        assert_eq!(id.public_key, "peCHsNaTe7jhHZoOWj7aoyIfXD02ffdYzvJiguC2dKs");
        // And what we write, Node's PEM layout, line for line.
        let seed = seed_from_pkcs8_pem(
            &serde_json::from_str::<Stored>(text)
                .unwrap()
                .private_key_pem,
        )
        .unwrap();
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        assert_eq!(
            pem("PRIVATE KEY", &pkcs8),
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIM02SKBI/DdzdGkoNhQiAV603pdZNjQNTgQslgKLDIpd\n-----END PRIVATE KEY-----\n"
        );
    }
}
