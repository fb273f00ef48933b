//! Paired devices and their device tokens, persisted in the state directory.
//!
//! When a device is approved for a role (silently for a loopback peer, or by an
//! operator through `device.pair.approve`), the gateway records it here and
//! issues a per-role device token that the client presents later as
//! `auth.deviceToken`. The store lives at `<state_dir>/devices/paired.json`, a
//! JSON object keyed by device id, in OpenClaw's camelCase shape.
//!
//! Invariants a reader must keep:
//! - Memory and disk agree for everything handed out. A change is applied in memory at once
//!   and returns a [`Ticket`]; the store writer ([`super::store_writer`], a thread of its own)
//!   writes the table atomically (temp file in the same directory, fsync, rename, fsync of the
//!   directory), coalescing changes made meanwhile. Whoever tells anyone of a change (a
//!   device token in hello-ok, an operator's answer) awaits its ticket first; a failed write
//!   undoes every change not on disk and fails their tickets, so a failed write still changes
//!   nothing. The directory is `0700` and the file `0600`: it holds secrets.
//! - A file that cannot be read or parsed is an error naming its path, never an
//!   empty store: silently dropping it would unpair every device.
//! - Every stored device id is the SHA-256 of its stored public key.
//! - Token comparison is constant-time, and tokens never reach `Debug` output
//!   or error messages.
//!
//! The store is shared by every shard: the table is an `Arc` snapshot whose lock is held only
//! to copy the `Arc` (reads) or to change the table in memory (writes), never across I/O, so
//! a handshake on one shard never waits for another shard's disk write.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use super::device;
use super::state_file;
use super::store_writer::{Doc, Encode, StoreWriter, Ticket, WriteError};

/// Sub-directory of the state dir holding device state.
const DEVICES_DIR: &str = "devices";
/// File name of the paired-device table.
const PAIRED_FILE: &str = "paired.json";

/// A device approved for one or more roles. `Debug` redacts the TOTP secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairedDevice {
    /// Lowercase hex SHA-256 of the raw public key.
    pub device_id: String,
    /// Raw Ed25519 public key, unpadded base64url.
    pub public_key: String,
    /// Human-readable name shown in pairing lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `client.platform` at the last approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `client.id` at the last approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `client.mode` at the last approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_mode: Option<String>,
    /// Roles this device may take (`operator`, `node`), sorted, unique.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Union of the scopes approved for this device, sorted, unique.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The device token of each role, keyed by role.
    #[serde(default)]
    pub tokens: BTreeMap<String, DeviceToken>,
    /// When the device was first approved, ms since the epoch.
    pub created_at_ms: i64,
    /// When the device was last approved or widened, ms since the epoch.
    pub approved_at_ms: i64,
    /// Hex SHA-256 of the client certificate (DER) this device is bound to (mTLS
    /// `certificate` auth): set at its first approval over mTLS; a connect of this device
    /// with another certificate, or none, is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// Base32 TOTP secret (`device.mfa.enroll`). Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<String>,
}

/// The device token of one (device, role): what the client presents as
/// `auth.deviceToken`. `Debug` redacts the token itself.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceToken {
    /// 32 random bytes, unpadded base64url. Secret.
    pub token: String,
    /// The role this token authenticates.
    pub role: String,
    /// Scopes granted with this token, sorted, unique.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When this (device, role) first got a token, ms since the epoch.
    pub created_at_ms: i64,
    /// When the token value was last replaced by [`PairingStore::rotate`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at_ms: Option<i64>,
    /// When the token was revoked; a revoked token never verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<i64>,
    /// When the token stops verifying (exclusive), if it expires at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// The lifetime this token was issued with (its pairing policy's `tokenLifetime`);
    /// a rotation issues the new value with the same lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_ms: Option<i64>,
}

impl fmt::Debug for PairedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairedDevice")
            .field("device_id", &self.device_id)
            .field("public_key", &self.public_key)
            .field("display_name", &self.display_name)
            .field("platform", &self.platform)
            .field("client_id", &self.client_id)
            .field("client_mode", &self.client_mode)
            .field("roles", &self.roles)
            .field("scopes", &self.scopes)
            .field("tokens", &self.tokens)
            .field("created_at_ms", &self.created_at_ms)
            .field("approved_at_ms", &self.approved_at_ms)
            .field("cert_sha256", &self.cert_sha256)
            .field(
                "totp_secret",
                &self.totp_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceToken")
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .field("scopes", &self.scopes)
            .field("created_at_ms", &self.created_at_ms)
            .field("rotated_at_ms", &self.rotated_at_ms)
            .field("revoked_at_ms", &self.revoked_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("lifetime_ms", &self.lifetime_ms)
            .finish()
    }
}

impl DeviceToken {
    /// True when the token is neither revoked nor expired at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|e| now_ms < e)
    }
}

/// What to approve: a device, the role it asked for and the scopes it wants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApproveRequest {
    /// The device id (must be the SHA-256 of `public_key`).
    pub device_id: String,
    /// The public key as sent on the wire (base64url, base64 or PEM); stored
    /// normalised to unpadded base64url.
    pub public_key: String,
    /// Optional display name; an absent value keeps the stored one.
    pub display_name: Option<String>,
    /// `client.platform`; an absent value keeps the stored one.
    pub platform: Option<String>,
    /// `client.id`; an absent value keeps the stored one.
    pub client_id: Option<String>,
    /// `client.mode`; an absent value keeps the stored one.
    pub client_mode: Option<String>,
    /// The role to approve (`operator` or `node`).
    pub role: String,
    /// The scopes to approve for that role (added to any already approved).
    pub scopes: Vec<String>,
}

/// Terms of an approval beyond role and scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApproveTerms {
    /// Lifetime of a newly issued token, ms (`None`: no expiry).
    pub token_lifetime_ms: Option<i64>,
    /// Bind the device to this client certificate (hex SHA-256 of its DER) if it is not
    /// bound yet.
    pub cert_sha256: Option<String>,
}

/// Errors of the pairing store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing or syncing a store file or directory failed.
    #[error("pairing store i/o error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The store file exists but is not valid JSON of the expected shape.
    #[error("pairing store {path} is corrupt: {source}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The store file parses but breaks an invariant (e.g. an entry keyed
    /// under another device's id, or an id that is not its key's hash).
    #[error("pairing store {path} is inconsistent: {reason}")]
    Inconsistent {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A change could not be written (it was undone; see [`super::store_writer`]).
    #[error("pairing store write failed: {0}")]
    Write(#[from] WriteError),
    /// The store could not be serialised (should not happen).
    #[error("pairing store could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
    /// An approval named a device whose id does not match its public key, or
    /// whose key is not a valid Ed25519 key.
    #[error("invalid device {device_id}: {reason}")]
    InvalidDevice {
        /// The device id given.
        device_id: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No paired device has this id.
    #[error("unknown device {0}")]
    UnknownDevice(String),
    /// The device is paired, but not for this role (or has no token for it).
    #[error("device {device_id} is not paired for role {role}")]
    RoleNotPaired {
        /// The device id.
        device_id: String,
        /// The role asked for.
        role: String,
    },
}

/// Why a presented device token was refused.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheckError {
    /// The device is not paired, or has no token for the role.
    #[error("device token unknown")]
    Unknown,
    /// The presented token is not the current token.
    #[error("device token mismatch")]
    Mismatch,
    /// The token was revoked.
    #[error("device token revoked")]
    Revoked,
    /// The token is past its expiry.
    #[error("device token expired")]
    Expired,
}

/// True when a grant of `approved` scopes includes `requested`:
/// an exact match, `operator.admin` for any `operator.*` scope, or
/// `operator.write` for `operator.read`.
pub fn scope_covered(approved: &[String], requested: &str) -> bool {
    approved.iter().any(|a| {
        a == requested
            || (a == "operator.admin" && requested.starts_with("operator."))
            || (a == "operator.write" && requested == "operator.read")
    })
}

/// True when every scope of `requested` is covered by `approved`
/// (see [`scope_covered`]).
pub fn scopes_covered(approved: &[String], requested: &[String]) -> bool {
    requested.iter().all(|r| scope_covered(approved, r))
}

type Devices = BTreeMap<String, PairedDevice>;

/// The paired-device table, loaded from and persisted to
/// `<state_dir>/devices/paired.json`. Cheap to share behind an `Arc`; every
/// method takes `&self`. Changes return a [`Ticket`] to await before the change is
/// handed out.
#[derive(Debug)]
pub struct PairingStore {
    /// `<state_dir>/devices/paired.json`.
    path: PathBuf,
    /// The table (keyed by device id for the tickets), written by the store writer,
    /// secrets sealed there when `storage.encryption` is set (in memory they are plain).
    devices: Doc<Devices>,
}

/// AES-256-GCM for the secret fields of the store file: each becomes
/// `"sealed:" + base64url(nonce ‖ ciphertext)`, bound to its device id by the AAD.
#[derive(Clone)]
struct Sealer(aes_gcm::Aes256Gcm);

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

const SEALED: &str = "sealed:";

impl Sealer {
    fn seal(&self, aad: &str, plain: &str) -> String {
        use aes_gcm::aead::{Aead, Payload};
        let nonce: [u8; 12] = rand::random();
        let ct = self
            .0
            .encrypt(
                aes_gcm::Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{SEALED}{}", device::b64url(&out))
    }

    fn open(&self, aad: &str, sealed: &str) -> Option<String> {
        use aes_gcm::aead::{Aead, Payload};
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed.strip_prefix(SEALED)?)
            .ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = raw.split_at(12);
        let plain = self
            .0
            .decrypt(
                aes_gcm::Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }

    /// Applies `f` to every secret field of the table.
    fn map_secrets(
        devices: &mut Devices,
        mut f: impl FnMut(&str, &str) -> Result<String, String>,
    ) -> Result<(), String> {
        for (id, d) in devices.iter_mut() {
            for t in d.tokens.values_mut() {
                t.token = f(&format!("{id}/token/{}", t.role), &t.token)?;
            }
            if let Some(s) = d.totp_secret.as_mut() {
                *s = f(&format!("{id}/totp"), s)?;
            }
        }
        Ok(())
    }
}

impl PairingStore {
    /// Opens the store under `state_dir` with a store writer of its own (tests, tools); the
    /// gateway uses [`PairingStore::open_with`] and one writer for every file.
    ///
    /// # Errors
    /// As [`PairingStore::open_with`].
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let writer = StoreWriter::start().map_err(|source| StoreError::Io {
            path: state_dir.to_owned(),
            source,
        })?;
        Self::open_with(state_dir, None, &writer)
    }

    /// [`PairingStore::open`] with secrets sealed at rest by `key`.
    ///
    /// # Errors
    /// As [`PairingStore::open_with`].
    pub fn open_sealed(
        state_dir: &Path,
        key: Option<aes_gcm::Aes256Gcm>,
    ) -> Result<Self, StoreError> {
        let writer = StoreWriter::start().map_err(|source| StoreError::Io {
            path: state_dir.to_owned(),
            source,
        })?;
        Self::open_with(state_dir, key, &writer)
    }

    /// Opens the store under `state_dir`, creating `devices/` (mode 0700) if needed; a
    /// missing file is an empty store. With `key`, secrets are sealed at rest (AES-256-GCM):
    /// plain secrets of an older file are read and sealed on the next write; sealed ones
    /// without the key (or with another key) are an error naming the file. `writer` writes
    /// every change.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directory cannot be created or the file read,
    /// [`StoreError::Corrupt`] / [`StoreError::Inconsistent`] if the file is bad.
    pub fn open_with(
        state_dir: &Path,
        key: Option<aes_gcm::Aes256Gcm>,
        writer: &StoreWriter,
    ) -> Result<Self, StoreError> {
        let cipher = key.map(Sealer);
        let dir = state_dir.join(DEVICES_DIR);
        let io_err = |source| StoreError::Io {
            path: dir.clone(),
            source,
        };
        state_file::create_private_dir(&dir).map_err(io_err)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err)?;

        let path = dir.join(PAIRED_FILE);
        let mut devices = match state_file::read_if_exists(&path) {
            Ok(Some(bytes)) => parse(&path, &bytes)?,
            Ok(None) => Devices::new(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Sealer::map_secrets(&mut devices, |aad, v| {
            if !v.starts_with(SEALED) {
                return Ok(v.to_owned());
            }
            match &cipher {
                Some(c) => c
                    .open(aad, v)
                    .ok_or_else(|| format!("{aad}: cannot unseal (another key?)")),
                None => Err(format!("{aad} is sealed but storage.encryption is not set")),
            }
        })
        .map_err(|reason| StoreError::Inconsistent {
            path: path.clone(),
            reason,
        })?;
        let encode: Encode<Devices> = Box::new(move |d| encode(d, cipher.as_ref()));
        Ok(Self {
            devices: Doc::file(devices, path.clone(), encode, writer),
            path,
        })
    }

    /// The store file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The table as it is now (changes not yet on disk included). Taking it holds the lock
    /// only to copy an `Arc`.
    fn snapshot(&self) -> Arc<Devices> {
        self.devices.read()
    }

    /// The paired device with this id, if any.
    pub fn get(&self, device_id: &str) -> Option<PairedDevice> {
        self.snapshot().get(device_id).cloned()
    }

    /// Every paired device, ordered by id.
    pub fn list(&self) -> Vec<PairedDevice> {
        self.snapshot().values().cloned().collect()
    }

    /// Approves (or widens) a device for `req.role` and `req.scopes`, and
    /// returns the device token for that role: the existing one if it is live
    /// and its scopes already cover the request, else a new one whose scopes
    /// are the union of the old token's and the requested. The token may be handed
    /// out once the ticket resolved.
    ///
    /// # Errors
    /// [`StoreError::InvalidDevice`] if the id is not the hash of a valid key (the
    /// store is then unchanged).
    pub fn approve(
        &self,
        req: ApproveRequest,
        now_ms: i64,
    ) -> Result<(DeviceToken, Ticket), StoreError> {
        self.approve_with(req, &ApproveTerms::default(), now_ms)
    }

    /// [`PairingStore::approve`] with a token lifetime and a certificate binding.
    ///
    /// # Errors
    /// As [`PairingStore::approve`].
    pub fn approve_with(
        &self,
        req: ApproveRequest,
        terms: &ApproveTerms,
        now_ms: i64,
    ) -> Result<(DeviceToken, Ticket), StoreError> {
        let raw =
            device::parse_public_key(&req.public_key).map_err(|_| StoreError::InvalidDevice {
                device_id: req.device_id.clone(),
                reason: "public key invalid",
            })?;
        if device::device_id_for(&raw) != req.device_id {
            return Err(StoreError::InvalidDevice {
                device_id: req.device_id,
                reason: "device id is not the SHA-256 of its public key",
            });
        }
        let public_key = device::b64url(&raw);
        let key = req.device_id.clone();

        self.devices.change(&key, |devices| {
            let before = devices.get(&req.device_id).cloned();
            let dev = devices
                .entry(req.device_id.clone())
                .or_insert_with(|| PairedDevice {
                    device_id: req.device_id.clone(),
                    public_key: public_key.clone(),
                    display_name: None,
                    platform: None,
                    client_id: None,
                    client_mode: None,
                    roles: Vec::new(),
                    scopes: Vec::new(),
                    tokens: BTreeMap::new(),
                    created_at_ms: now_ms,
                    approved_at_ms: now_ms,
                    cert_sha256: None,
                    totp_secret: None,
                });
            dev.public_key = public_key;
            if dev.cert_sha256.is_none() {
                dev.cert_sha256.clone_from(&terms.cert_sha256);
            }
            for (field, value) in [
                (&mut dev.display_name, req.display_name),
                (&mut dev.platform, req.platform),
                (&mut dev.client_id, req.client_id),
                (&mut dev.client_mode, req.client_mode),
            ] {
                if value.is_some() {
                    *field = value;
                }
            }
            dev.roles = union(&dev.roles, std::slice::from_ref(&req.role));
            dev.scopes = union(&dev.scopes, &req.scopes);
            dev.approved_at_ms = now_ms;

            let token = match dev.tokens.get(&req.role) {
                Some(t) if t.is_live(now_ms) && scopes_covered(&t.scopes, &req.scopes) => t.clone(),
                existing => {
                    let old_scopes = existing
                        .filter(|t| t.revoked_at_ms.is_none())
                        .map(|t| t.scopes.as_slice())
                        .unwrap_or_default();
                    let t = DeviceToken {
                        token: new_token(),
                        role: req.role.clone(),
                        scopes: union(old_scopes, &req.scopes),
                        created_at_ms: now_ms,
                        rotated_at_ms: None,
                        revoked_at_ms: None,
                        expires_at_ms: terms.token_lifetime_ms.map(|l| now_ms.saturating_add(l)),
                        lifetime_ms: terms.token_lifetime_ms,
                    };
                    dev.tokens.insert(req.role.clone(), t.clone());
                    t
                }
            };
            let changed = before.as_ref() != Some(&*dev);
            Ok((token, changed))
        })
    }

    /// The live token of (device, role) if it covers `scopes`, with the ticket of the
    /// device's last change: a token approved by another connection a moment ago may not be
    /// on disk yet, and is handed out only once it is.
    pub fn live_token(
        &self,
        device_id: &str,
        role: &str,
        scopes: &[String],
        now_ms: i64,
    ) -> Option<(DeviceToken, Ticket)> {
        let (t, ticket) = self.devices.read_durable(device_id, |d| {
            d.get(device_id)
                .and_then(|dev| dev.tokens.get(role))
                .filter(|t| t.is_live(now_ms) && scopes_covered(&t.scopes, scopes))
                .cloned()
        });
        t.map(|t| (t, ticket))
    }

    /// True when the device is paired with `role` and every requested scope
    /// is within its approved scopes (see [`scope_covered`]).
    pub fn covers(&self, device_id: &str, role: &str, scopes: &[String]) -> bool {
        self.snapshot()
            .get(device_id)
            .is_some_and(|d| d.roles.iter().any(|r| r == role) && scopes_covered(&d.scopes, scopes))
    }

    /// Checks a presented `auth.deviceToken` for (device, role). The token is
    /// compared in constant time, and before its state is looked at, so only
    /// its holder learns whether it was revoked or expired.
    ///
    /// # Errors
    /// [`TokenCheckError::Unknown`], [`TokenCheckError::Mismatch`],
    /// [`TokenCheckError::Revoked`] or [`TokenCheckError::Expired`].
    pub fn verify_token(
        &self,
        device_id: &str,
        role: &str,
        token: &str,
        now_ms: i64,
    ) -> Result<DeviceToken, TokenCheckError> {
        let devices = self.snapshot();
        let stored = devices
            .get(device_id)
            .and_then(|d| d.tokens.get(role))
            .ok_or(TokenCheckError::Unknown)?;
        if !bool::from(stored.token.as_bytes().ct_eq(token.as_bytes())) {
            return Err(TokenCheckError::Mismatch);
        }
        if stored.revoked_at_ms.is_some() {
            return Err(TokenCheckError::Revoked);
        }
        if !stored.is_live(now_ms) {
            return Err(TokenCheckError::Expired);
        }
        Ok(stored.clone())
    }

    /// Replaces the token of (device, role) with a fresh one, keeping its
    /// scopes (or the device's scopes if it had none) and clearing any
    /// revocation or expiry. The old value stops verifying at once; the new one may be
    /// handed out once the ticket resolved.
    ///
    /// # Errors
    /// [`StoreError::UnknownDevice`] or [`StoreError::RoleNotPaired`].
    pub fn rotate(
        &self,
        device_id: &str,
        role: &str,
        now_ms: i64,
    ) -> Result<(DeviceToken, Ticket), StoreError> {
        self.devices.change(device_id, |devices| {
            let dev = devices
                .get_mut(device_id)
                .ok_or_else(|| StoreError::UnknownDevice(device_id.to_owned()))?;
            if !dev.roles.iter().any(|r| r == role) {
                return Err(not_paired(device_id, role));
            }
            let (scopes, created_at_ms, lifetime_ms) = match dev.tokens.get(role) {
                Some(t) => (t.scopes.clone(), t.created_at_ms, t.lifetime_ms),
                None => (dev.scopes.clone(), now_ms, None),
            };
            let t = DeviceToken {
                token: new_token(),
                role: role.to_owned(),
                scopes,
                created_at_ms,
                rotated_at_ms: Some(now_ms),
                revoked_at_ms: None,
                expires_at_ms: lifetime_ms.map(|l| now_ms.saturating_add(l)),
                lifetime_ms,
            };
            dev.tokens.insert(role.to_owned(), t.clone());
            Ok((t, true))
        })
    }

    /// Revokes the token of (device, role); the device stays paired and a
    /// later [`PairingStore::approve`] issues a new token. Revoking twice keeps
    /// the first revocation time.
    ///
    /// # Errors
    /// [`StoreError::UnknownDevice`] or [`StoreError::RoleNotPaired`] (no token for the
    /// role).
    pub fn revoke(&self, device_id: &str, role: &str, now_ms: i64) -> Result<Ticket, StoreError> {
        self.devices
            .change(device_id, |devices| {
                let dev = devices
                    .get_mut(device_id)
                    .ok_or_else(|| StoreError::UnknownDevice(device_id.to_owned()))?;
                let t = dev
                    .tokens
                    .get_mut(role)
                    .ok_or_else(|| not_paired(device_id, role))?;
                let changed = t.revoked_at_ms.is_none();
                t.revoked_at_ms.get_or_insert(now_ms);
                Ok(((), changed))
            })
            .map(|((), t)| t)
    }

    /// Sets (or clears) the device's TOTP secret.
    ///
    /// # Errors
    /// [`StoreError::UnknownDevice`].
    pub fn set_totp(&self, device_id: &str, secret: Option<String>) -> Result<Ticket, StoreError> {
        self.devices
            .change(device_id, |devices| {
                let dev = devices
                    .get_mut(device_id)
                    .ok_or_else(|| StoreError::UnknownDevice(device_id.to_owned()))?;
                let changed = dev.totp_secret != secret;
                dev.totp_secret = secret;
                Ok(((), changed))
            })
            .map(|((), t)| t)
    }

    /// Unpairs a device entirely. Returns whether it was paired.
    pub fn remove(&self, device_id: &str) -> (bool, Ticket) {
        match self.devices.change(device_id, |devices| {
            let removed = devices.remove(device_id).is_some();
            Ok::<_, std::convert::Infallible>((removed, removed))
        }) {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }

    /// Changes the table directly (tests that set up states no method makes).
    #[cfg(test)]
    fn edit(&self, device_id: &str, f: impl FnOnce(&mut PairedDevice)) -> Ticket {
        self.devices
            .change(device_id, |d| {
                f(d.get_mut(device_id).expect("device"));
                Ok::<_, ()>(((), true))
            })
            .expect("edit")
            .1
    }
}

/// The store file's bytes: the table as pretty JSON, secrets sealed when a key is set (runs
/// on the store writer's thread).
fn encode(devices: &Devices, cipher: Option<&Sealer>) -> Result<Vec<u8>, String> {
    let sealed;
    let devices = match cipher {
        Some(c) => {
            let mut d = devices.clone();
            let _ = Sealer::map_secrets(&mut d, |aad, v| Ok(c.seal(aad, v)));
            sealed = d;
            &sealed
        }
        None => devices,
    };
    let mut bytes =
        serde_json::to_vec_pretty(devices).map_err(|e| StoreError::Encode(e).to_string())?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Parses and checks the store file.
fn parse(path: &Path, bytes: &[u8]) -> Result<Devices, StoreError> {
    let devices: Devices = serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    for (key, dev) in &devices {
        let reason = if *key != dev.device_id {
            Some(format!("entry {key} holds device {}", dev.device_id))
        } else {
            match device::parse_public_key(&dev.public_key) {
                Ok(raw) if device::device_id_for(&raw) == dev.device_id => None,
                Ok(_) => Some(format!("device {key}: id is not the hash of its key")),
                Err(_) => Some(format!("device {key}: public key invalid")),
            }
        };
        if let Some(reason) = reason {
            return Err(StoreError::Inconsistent {
                path: path.to_owned(),
                reason,
            });
        }
    }
    Ok(devices)
}

fn not_paired(device_id: &str, role: &str) -> StoreError {
    StoreError::RoleNotPaired {
        device_id: device_id.to_owned(),
        role: role.to_owned(),
    }
}

/// Sorted, de-duplicated union of two scope or role lists.
fn union(a: &[String], b: &[String]) -> Vec<String> {
    a.iter()
        .chain(b)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// A new device token: 32 bytes from the OS RNG, unpadded base64url.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    device::b64url(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use device::DeviceIdentity;
    use futures_lite::future::block_on;
    use std::sync::Arc;

    /// A change's result once it is on disk (blocks the test thread on its ticket).
    fn done<T>(r: Result<(T, Ticket), StoreError>) -> Result<T, StoreError> {
        let (v, t) = r?;
        block_on(t.wait())?;
        Ok(v)
    }

    /// [`done`] of a change without a result.
    fn durable(r: Result<Ticket, StoreError>) -> Result<(), StoreError> {
        done(r.map(|t| ((), t)))
    }

    /// [`done`] of a removal.
    fn removed((r, t): (bool, Ticket)) -> Result<bool, StoreError> {
        done(Ok((r, t)))
    }

    const T0: i64 = 1_700_000_000_000;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn req(id: &DeviceIdentity, role: &str, scopes: &[&str]) -> ApproveRequest {
        ApproveRequest {
            device_id: id.device_id(),
            public_key: id.public_key_b64url(),
            display_name: Some("laptop".into()),
            platform: Some("macos".into()),
            client_id: Some("cli".into()),
            client_mode: Some("cli".into()),
            role: role.into(),
            scopes: s(scopes),
        }
    }

    fn ident(n: u8) -> DeviceIdentity {
        DeviceIdentity::from_secret([n; 32])
    }

    #[test]
    fn approve_get_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        assert!(store.list().is_empty());
        let id = ident(1);
        let tok = done(store.approve(
            req(&id, "operator", &["operator.write", "operator.read"]),
            T0,
        ))
        .unwrap();
        assert_eq!(tok.role, "operator");
        assert_eq!(tok.scopes, s(&["operator.read", "operator.write"]));
        assert_eq!(tok.token.len(), 43);

        let dev = store.get(&id.device_id()).unwrap();
        assert_eq!(dev.roles, s(&["operator"]));
        assert_eq!(dev.created_at_ms, T0);
        assert_eq!(dev.tokens["operator"], tok);

        let reopened = PairingStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get(&id.device_id()), Some(dev));
        assert_eq!(reopened.list().len(), 1);
        assert!(reopened.get("nope").is_none());
    }

    #[test]
    fn file_is_camel_case_keyed_by_device_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let id = ident(1);
        done(store.approve(req(&id, "operator", &[]), T0)).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(store.path()).unwrap()).unwrap();
        let dev = &v[id.device_id()];
        assert_eq!(dev["deviceId"], id.device_id());
        assert_eq!(dev["publicKey"], id.public_key_b64url());
        assert_eq!(dev["createdAtMs"], T0);
        assert_eq!(dev["tokens"]["operator"]["createdAtMs"], T0);
        assert!(dev["tokens"]["operator"].get("revokedAtMs").is_none());
    }

    #[test]
    fn file_and_dir_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = PairingStore::open(&state).unwrap();
        done(store.approve(req(&ident(1), "operator", &[]), T0)).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(mode(&state.join("devices")), 0o700);
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(state.join("devices"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("paired.json")]);
    }

    #[test]
    fn approve_reuses_covering_token_and_widens_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let id = ident(1);
        let t1 = done(store.approve(req(&id, "operator", &["operator.write"]), T0)).unwrap();
        let t2 = done(store.approve(req(&id, "operator", &["operator.read"]), T0 + 1)).unwrap();
        assert_eq!(t1, t2);
        let t3 = done(store.approve(req(&id, "operator", &["operator.admin"]), T0 + 2)).unwrap();
        assert_ne!(t3.token, t1.token);
        assert_eq!(t3.scopes, s(&["operator.admin", "operator.write"]));
        let node = done(store.approve(req(&id, "node", &[]), T0 + 3)).unwrap();
        let dev = store.get(&id.device_id()).unwrap();
        assert_eq!(dev.roles, s(&["node", "operator"]));
        assert_eq!(dev.tokens.len(), 2);
        assert_eq!(dev.tokens["node"], node);
        assert_eq!(dev.created_at_ms, T0);
        assert_eq!(dev.approved_at_ms, T0 + 3);
    }

    #[test]
    fn approve_keeps_metadata_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let id = ident(1);
        done(store.approve(req(&id, "operator", &[]), T0)).unwrap();
        let mut r = req(&id, "operator", &[]);
        r.display_name = None;
        r.platform = Some("linux".into());
        done(store.approve(r, T0)).unwrap();
        let dev = store.get(&id.device_id()).unwrap();
        assert_eq!(dev.display_name.as_deref(), Some("laptop"));
        assert_eq!(dev.platform.as_deref(), Some("linux"));
    }

    #[test]
    fn approve_rejects_id_not_matching_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let mut r = req(&ident(1), "operator", &[]);
        r.device_id = ident(2).device_id();
        assert!(matches!(
            done(store.approve(r, T0)),
            Err(StoreError::InvalidDevice { .. })
        ));
        let mut r = req(&ident(1), "operator", &[]);
        r.public_key = "garbage".into();
        assert!(matches!(
            done(store.approve(r, T0)),
            Err(StoreError::InvalidDevice { .. })
        ));
        assert!(store.list().is_empty());
        assert!(!store.path().exists());
    }

    #[test]
    fn token_verify_ok_mismatch_revoked_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let id = ident(1);
        let dev = id.device_id();
        let t = done(store.approve(req(&id, "operator", &["operator.read"]), T0)).unwrap();

        assert_eq!(
            store.verify_token(&dev, "operator", &t.token, T0),
            Ok(t.clone())
        );
        assert_eq!(
            store.verify_token(&dev, "operator", "wrong", T0),
            Err(TokenCheckError::Mismatch)
        );
        assert_eq!(
            store.verify_token(&dev, "operator", "", T0),
            Err(TokenCheckError::Mismatch)
        );
        assert_eq!(
            store.verify_token(&dev, "node", &t.token, T0),
            Err(TokenCheckError::Unknown)
        );
        assert_eq!(
            store.verify_token("unknown", "operator", &t.token, T0),
            Err(TokenCheckError::Unknown)
        );

        // Expiry (set directly: the store issues non-expiring tokens).
        block_on(
            store
                .edit(&dev, |d| {
                    d.tokens.get_mut("operator").unwrap().expires_at_ms = Some(T0 + 10);
                })
                .wait(),
        )
        .unwrap();
        assert!(store
            .verify_token(&dev, "operator", &t.token, T0 + 9)
            .is_ok());
        assert_eq!(
            store.verify_token(&dev, "operator", &t.token, T0 + 10),
            Err(TokenCheckError::Expired)
        );
        // Expired tokens are replaced on the next approval.
        let t2 = done(store.approve(req(&id, "operator", &["operator.read"]), T0 + 11)).unwrap();
        assert_ne!(t2.token, t.token);
        assert_eq!(t2.expires_at_ms, None);

        durable(store.revoke(&dev, "operator", T0 + 20)).unwrap();
        durable(store.revoke(&dev, "operator", T0 + 30)).unwrap();
        assert_eq!(
            store.verify_token(&dev, "operator", &t2.token, T0 + 21),
            Err(TokenCheckError::Revoked)
        );
        // A wrong token against a revoked entry learns nothing about its state.
        assert_eq!(
            store.verify_token(&dev, "operator", "wrong", T0 + 21),
            Err(TokenCheckError::Mismatch)
        );
        let reopened = PairingStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.get(&dev).unwrap().tokens["operator"].revoked_at_ms,
            Some(T0 + 20)
        );
        assert_eq!(
            reopened.verify_token(&dev, "operator", &t2.token, T0 + 21),
            Err(TokenCheckError::Revoked)
        );
        // Still paired; re-approval issues a fresh token.
        assert!(store.covers(&dev, "operator", &s(&["operator.read"])));
        let t3 = done(store.approve(req(&id, "operator", &["operator.read"]), T0 + 40)).unwrap();
        assert_ne!(t3.token, t2.token);
        assert!(store
            .verify_token(&dev, "operator", &t3.token, T0 + 40)
            .is_ok());
    }

    #[test]
    fn rotate_invalidates_old_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let id = ident(1);
        let dev = id.device_id();
        let old = done(store.approve(req(&id, "operator", &["operator.admin"]), T0)).unwrap();
        let new = done(store.rotate(&dev, "operator", T0 + 5)).unwrap();
        assert_ne!(new.token, old.token);
        assert_eq!(new.scopes, old.scopes);
        assert_eq!(new.created_at_ms, T0);
        assert_eq!(new.rotated_at_ms, Some(T0 + 5));
        assert_eq!(
            store.verify_token(&dev, "operator", &old.token, T0 + 6),
            Err(TokenCheckError::Mismatch)
        );
        assert!(store
            .verify_token(&dev, "operator", &new.token, T0 + 6)
            .is_ok());
        let reopened = PairingStore::open(dir.path()).unwrap();
        assert!(reopened
            .verify_token(&dev, "operator", &new.token, T0 + 6)
            .is_ok());

        assert!(matches!(
            done(store.rotate(&dev, "node", T0)),
            Err(StoreError::RoleNotPaired { .. })
        ));
        assert!(matches!(
            done(store.rotate("nope", "operator", T0)),
            Err(StoreError::UnknownDevice(_))
        ));
        assert!(matches!(
            durable(store.revoke(&dev, "node", T0)),
            Err(StoreError::RoleNotPaired { .. })
        ));
    }

    #[test]
    fn covers_wider_and_narrower_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let (a, w) = (ident(1), ident(2));
        done(store.approve(req(&a, "operator", &["operator.admin"]), T0)).unwrap();
        done(store.approve(req(&w, "operator", &["operator.write"]), T0)).unwrap();
        let (a, w) = (a.device_id(), w.device_id());

        assert!(store.covers(&a, "operator", &[]));
        assert!(store.covers(
            &a,
            "operator",
            &s(&[
                "operator.read",
                "operator.write",
                "operator.approvals",
                "operator.pairing",
                "operator.admin"
            ])
        ));
        assert!(!store.covers(&a, "operator", &s(&["node.exec"])));
        assert!(!store.covers(&a, "node", &[]));

        assert!(store.covers(&w, "operator", &s(&["operator.read"])));
        assert!(store.covers(&w, "operator", &s(&["operator.write", "operator.read"])));
        assert!(!store.covers(&w, "operator", &s(&["operator.admin"])));
        assert!(!store.covers(&w, "operator", &s(&["operator.read", "operator.pairing"])));
        assert!(!store.covers("unknown", "operator", &[]));

        assert!(!scope_covered(&s(&["operator.read"]), "operator.write"));
        assert!(!scope_covered(&s(&["operator.admin"]), "operatorx"));
    }

    #[test]
    fn remove_unpairs_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let id = ident(1);
        done(store.approve(req(&id, "operator", &[]), T0)).unwrap();
        assert!(removed(store.remove(&id.device_id())).unwrap());
        assert!(!removed(store.remove(&id.device_id())).unwrap());
        assert!(PairingStore::open(dir.path()).unwrap().list().is_empty());
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let devices = dir.path().join("devices");
        fs::create_dir_all(&devices).unwrap();
        let file = devices.join("paired.json");
        for bad in ["{not json", "", "[]"] {
            fs::write(&file, bad).unwrap();
            let err = PairingStore::open(dir.path()).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains(&file.display().to_string()));
            // The bad file is left for the operator to inspect.
            assert_eq!(fs::read_to_string(&file).unwrap(), bad);
        }
    }

    #[test]
    fn inconsistent_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let id = ident(1);
        done(store.approve(req(&id, "operator", &[]), T0)).unwrap();
        let text = fs::read_to_string(store.path()).unwrap();
        let swapped = text.replace(&id.public_key_b64url(), &ident(2).public_key_b64url());
        fs::write(store.path(), swapped).unwrap();
        let err = PairingStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
    }

    #[test]
    fn tolerates_unknown_and_missing_optional_fields() {
        let dir = tempfile::tempdir().unwrap();
        let id = ident(1);
        let devices = dir.path().join("devices");
        fs::create_dir_all(&devices).unwrap();
        let json = serde_json::json!({
            id.device_id(): {
                "deviceId": id.device_id(),
                "publicKey": id.public_key_b64url(),
                "role": "operator",
                "remoteIp": "127.0.0.1",
                "createdAtMs": 1,
                "approvedAtMs": 2,
            }
        });
        fs::write(devices.join("paired.json"), json.to_string()).unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let dev = store.get(&id.device_id()).unwrap();
        assert!(dev.roles.is_empty() && dev.tokens.is_empty());
    }

    #[test]
    fn failed_write_leaves_store_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let id = ident(1);
        done(store.approve(req(&id, "operator", &[]), T0)).unwrap();
        // A directory where the file should be makes the rename fail, even as root.
        fs::remove_file(store.path()).unwrap();
        fs::create_dir(store.path()).unwrap();
        let err = done(store.approve(req(&ident(2), "operator", &[]), T0));
        assert!(matches!(err, Err(StoreError::Write(_))), "{err:?}");
        assert!(matches!(
            removed(store.remove(&id.device_id())),
            Err(StoreError::Write(_))
        ));
        assert_eq!(store.list().len(), 1);
        assert!(store.get(&ident(2).device_id()).is_none());
        // The temp file was cleaned up.
        assert_eq!(fs::read_dir(dir.path().join("devices")).unwrap().count(), 1);
    }

    #[test]
    fn debug_redacts_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::open(dir.path()).unwrap();
        let id = ident(1);
        let t = done(store.approve(req(&id, "operator", &[]), T0)).unwrap();
        assert!(!format!("{t:?}").contains(&t.token));
        assert!(!format!("{:?}", store.get(&id.device_id())).contains(&t.token));
        assert!(!format!("{store:?}").contains(&t.token));
    }

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "the test plays two shard threads"
    )]
    fn concurrent_approve_from_two_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(PairingStore::open(dir.path()).unwrap());
        let shared = ident(100);
        let handles: Vec<_> = (0..2u8)
            .map(|t| {
                let store = Arc::clone(&store);
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let mut tokens = Vec::new();
                    for i in 0..20u8 {
                        let id = ident(t * 50 + i + 1);
                        done(store.approve(req(&id, "operator", &["operator.read"]), T0)).unwrap();
                        tokens.push(
                            done(store.approve(req(&shared, "operator", &["operator.read"]), T0))
                                .unwrap(),
                        );
                    }
                    tokens
                })
            })
            .collect();
        let tokens: Vec<DeviceToken> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        // Both threads got the one token of the shared device.
        assert!(tokens.iter().all(|t| *t == tokens[0]));
        let reopened = PairingStore::open(dir.path()).unwrap();
        assert_eq!(reopened.list().len(), 41);
        assert_eq!(reopened.list(), store.list());
    }

    #[test]
    fn secrets_sealed_at_rest_with_a_key() {
        use aes_gcm::KeyInit as _;
        let key = || aes_gcm::Aes256Gcm::new_from_slice(&[9u8; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let id = ident(1);
        let dev = id.device_id();
        // An older plain file is read, then sealed on the next write.
        let plain = PairingStore::open(dir.path()).unwrap();
        let t = done(plain.approve(req(&id, "operator", &[]), T0)).unwrap();
        let store = PairingStore::open_sealed(dir.path(), Some(key())).unwrap();
        assert_eq!(store.get(&dev).unwrap().tokens["operator"].token, t.token);
        durable(store.set_totp(&dev, Some("JBSWY3DPEHPK3PXP".into()))).unwrap();
        let text = fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&t.token), "{text}");
        assert!(!text.contains("JBSWY3DPEHPK3PXP"), "{text}");
        assert!(text.contains(SEALED));
        let again = PairingStore::open_sealed(dir.path(), Some(key())).unwrap();
        assert!(again.verify_token(&dev, "operator", &t.token, T0).is_ok());
        assert_eq!(
            again.get(&dev).unwrap().totp_secret.as_deref(),
            Some("JBSWY3DPEHPK3PXP")
        );
        // Without the key, or with another, the file is refused, never read as empty.
        assert!(matches!(
            PairingStore::open(dir.path()),
            Err(StoreError::Inconsistent { .. })
        ));
        let other = aes_gcm::Aes256Gcm::new_from_slice(&[8u8; 32]).unwrap();
        assert!(PairingStore::open_sealed(dir.path(), Some(other)).is_err());
    }
}
