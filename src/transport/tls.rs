//! TLS on the gateway port (`wss://`), with rustls.
//!
//! - One port: the first byte of a connection says which it is (0x16 = a TLS handshake
//!   record). With TLS on, a plaintext request gets HTTP 400 "TLS required" unless
//!   `gateway.tls.allowPlaintext`.
//! - [`Transport`] is the byte stream under the HTTP and WebSocket code, plain or TLS, so the
//!   gateway code is the same for both.
//! - Versions: TLS 1.3 only unless `security.transport.tls.minVersion` is `TLSv1.2`; cipher
//!   suites from `security.transport.tls.ciphers`.
//! - mTLS: with `gateway.tls.clientCa`, client certificates are verified against it; the
//!   verified leaf's SHA-256 reaches the handshake, where `certificate` auth binds it to the
//!   device.
//! - Rotation: [`TlsState`] holds the current `ServerConfig`; [`watch`] (on shard 0) reloads
//!   it when the cert or key file changes, or on SIGHUP. A new config serves new connections
//!   only; open connections keep the session they negotiated. A reload that fails (half-
//!   written files, a key that does not match) keeps the old config and logs why.
//!
//! The current config sits behind a mutex taken once per TLS accept, never per frame.
#![expect(
    clippy::disallowed_types,
    reason = "the acceptor config is read once per TLS accept and swapped on rotation"
)]

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest as _;

use super::tls_policy::{check_policy, suite_key};
use crate::config::{CertRotation, Config};

/// The byte stream of one connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Transport {
    /// `ws://`, `http://`.
    Plain(TcpStream),
    /// `wss://`, `https://`.
    Tls(Box<futures_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

impl Transport {
    /// Hex SHA-256 of the verified client certificate (mTLS), if one was presented.
    pub fn client_cert_sha256(&self) -> Option<String> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|leaf| hex::encode(sha2::Sha256::digest(leaf.as_ref()))),
        }
    }

    /// Whether this is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }
}

/// Modification time and size of a file, to notice a change.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Where the files are and what to build from them.
#[derive(Debug)]
struct Settings {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    require_client_cert: bool,
    min13: bool,
    ciphers: Vec<String>,
}

/// The TLS settings and the current acceptor config, shared by every shard.
#[derive(Debug)]
pub struct TlsState {
    settings: Settings,
    /// Serve plaintext too.
    pub allow_plaintext: bool,
    current: Mutex<Arc<ServerConfig>>,
    stamps: Mutex<[Stamp; 3]>,
    /// Successful loads (1 after start).
    pub generation: AtomicU64,
    /// Set by SIGHUP: reload now.
    pub hup: Arc<AtomicBool>,
}

impl TlsState {
    /// Loads the certificate and key when TLS is enabled.
    ///
    /// # Errors
    /// A message naming the file or the setting at fault.
    pub fn from_config(cfg: &Config) -> Result<Option<TlsState>, String> {
        let t = &cfg.gateway.tls;
        if !t.enabled {
            return Ok(None);
        }
        let p = &cfg.security.transport.tls;
        let min13 = check_policy(&p.min_version, &p.ciphers)?;
        let (Some(cert), Some(key)) = (t.cert.clone(), t.key.clone()) else {
            return Err("gateway.tls.enabled needs gateway.tls.cert and gateway.tls.key".into());
        };
        let settings = Settings {
            cert,
            key,
            client_ca: t.client_ca.clone(),
            require_client_cert: t.require_client_cert,
            min13,
            ciphers: p.ciphers.clone(),
        };
        let stamps = settings.file_stamps();
        let built = settings.build()?;
        Ok(Some(TlsState {
            settings,
            allow_plaintext: t.allow_plaintext,
            current: Mutex::new(Arc::new(built)),
            stamps: Mutex::new(stamps),
            generation: AtomicU64::new(1),
            hup: Arc::new(AtomicBool::new(false)),
        }))
    }
}

impl Settings {
    fn file_stamps(&self) -> [Stamp; 3] {
        [
            stamp(&self.cert),
            stamp(&self.key),
            self.client_ca.as_deref().and_then(stamp),
        ]
    }

    fn build(&self) -> Result<ServerConfig, String> {
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.ciphers.is_empty() {
            let want: Vec<String> = self.ciphers.iter().map(|c| suite_key(c)).collect();
            provider.cipher_suites.retain(|s| {
                s.suite()
                    .as_str()
                    .is_some_and(|n| want.contains(&suite_key(n)))
            });
        }
        let provider = Arc::new(provider);
        let versions: &[&SupportedProtocolVersion] = if self.min13 {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("security.transport.tls: {e}"))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| format!("gateway.tls.clientCa {}: {e}", ca.display()))?;
                }
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let v = if self.require_client_cert {
                    v
                } else {
                    v.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(
                    v.build()
                        .map_err(|e| format!("gateway.tls.clientCa {}: {e}", ca.display()))?,
                )
            }
            None => builder.with_no_client_auth(),
        };
        let certs = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("gateway.tls.key {}: {e}", self.key.display()))?;
        let mut sc = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("gateway.tls: certificate and key: {e}"))?;
        sc.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(sc)
    }
}

impl TlsState {
    /// An acceptor with the current config.
    pub fn acceptor(&self) -> futures_rustls::TlsAcceptor {
        let cfg = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        futures_rustls::TlsAcceptor::from(cfg)
    }

    /// Reloads when `force` or when a file changed. Returns whether a new config is live.
    pub fn maybe_reload(&self, force: bool) -> bool {
        let now = self.settings.file_stamps();
        {
            let s = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *s == now {
                return false;
            }
        }
        match self.settings.build() {
            Ok(sc) => {
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(sc);
                *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = now;
                let g = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(
                    generation = g,
                    cert = %self.settings.cert.display(),
                    "TLS certificate reloaded; new connections use it"
                );
                true
            }
            Err(e) => {
                // Remember the stamps so a half-written pair is retried only when it changes.
                *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = now;
                tracing::warn!(error = %e, "TLS reload failed; keeping the current certificate");
                false
            }
        }
    }
}

fn read_certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(p)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in file", p.display()));
    }
    Ok(certs)
}

/// What the first bytes of a connection turned out to be.
#[derive(Debug)]
pub enum Accepted {
    /// Ready for HTTP: plain or TLS.
    Ready(Transport),
    /// Plaintext while TLS is required: answer 400 on this plain stream.
    PlainRefused(TcpStream),
    /// The TLS handshake failed (bad version, bad client cert…) or timed out.
    Failed(String),
    /// The peer went away before sending anything.
    Gone,
}

/// Sniffs the first byte and runs the TLS handshake when it is one, before `deadline`.
pub async fn accept(tls: Option<&TlsState>, stream: TcpStream, deadline: Instant) -> Accepted {
    let Some(tls) = tls else {
        return Accepted::Ready(Transport::Plain(stream));
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let mut b = [0u8; 1];
    let peeked = glommio::timer::timeout(left, async { Ok(stream.peek(&mut b).await) }).await;
    match peeked {
        Ok(Ok(1..)) => {}
        Ok(_) => return Accepted::Gone,
        Err(_) => return Accepted::Failed("no data before the handshake timeout".into()),
    }
    if b[0] != 0x16 {
        return if tls.allow_plaintext {
            Accepted::Ready(Transport::Plain(stream))
        } else {
            Accepted::PlainRefused(stream)
        };
    }
    let acceptor = tls.acceptor();
    let left = deadline.saturating_duration_since(Instant::now());
    match glommio::timer::timeout(left, async { Ok(acceptor.accept(stream).await) }).await {
        Ok(Ok(s)) => Accepted::Ready(Transport::Tls(Box::new(s))),
        Ok(Err(e)) => Accepted::Failed(e.to_string()),
        Err(_) => Accepted::Failed("TLS handshake timeout".into()),
    }
}

/// Reloads the TLS config on file change (every `checkInterval`, when rotation is enabled)
/// and on SIGHUP (checked every 100 ms). Runs on one shard until shutdown.
pub async fn watch(tls: &TlsState, rot: &CertRotation, shutdown: &AtomicBool) {
    let every = rot
        .check_interval
        .duration()
        .max(Duration::from_millis(100));
    let mut next_check = Instant::now() + every;
    while !shutdown.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(100)).await;
        if tls.hup.swap(false, Ordering::Relaxed) {
            tracing::info!("SIGHUP: reloading TLS certificate");
            tls.maybe_reload(true);
            next_check = Instant::now() + every;
        } else if rot.enabled && Instant::now() >= next_check {
            tls.maybe_reload(false);
            next_check = Instant::now() + every;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_with_configured_suites_and_rejects_a_bad_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("k.pem"), key.serialize_pem()).unwrap();
        let mut cfg = Config::default();
        cfg.gateway.tls.enabled = true;
        cfg.gateway.tls.cert = Some(dir.path().join("c.pem"));
        cfg.gateway.tls.key = Some(dir.path().join("k.pem"));
        cfg.security.transport.tls.ciphers = vec!["TLS_AES_256_GCM_SHA384".into()];
        let st = TlsState::from_config(&cfg).unwrap().unwrap();
        let sc = st.current.lock().unwrap().clone();
        let names: Vec<_> = sc
            .crypto_provider()
            .cipher_suites
            .iter()
            .filter_map(|s| s.suite().as_str())
            .collect();
        assert_eq!(names, vec!["TLS13_AES_256_GCM_SHA384"]);
        // A key that does not match the certificate: the reload keeps the old config.
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("k.pem"), other.serialize_pem()).unwrap();
        assert!(!st.maybe_reload(true));
        assert_eq!(st.generation.load(Ordering::Relaxed), 1);
        std::fs::write(dir.path().join("k.pem"), key.serialize_pem()).unwrap();
        assert!(st.maybe_reload(true));
        assert_eq!(st.generation.load(Ordering::Relaxed), 2);
        // Without TLS: nothing.
        assert!(TlsState::from_config(&Config::default()).unwrap().is_none());
    }
}
