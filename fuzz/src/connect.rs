//! The `connect` request's params ([`shardgate::protocol::connect::parse_params`],
//! [`shardgate::protocol::connect::negotiate`]) and the whole sans-IO admission
//! ([`shardgate::auth::handshake::admit`]) with a token, MFA and pairing terms.
//!
//! Input: `[terms, json…]`; `terms` picks the network class and pairing mode. The corpus
//! holds params signed by a device for [`NONCE`] at [`NOW`].
//!
//! Invariants: never a panic; parsed params have a client id and `min ≤ max`; the protocol
//! agreed lies in `[min, max]`; an admission is either a verified device (its id is the hash
//! of the key it presented) or a device-less connection with no scopes.

use std::net::IpAddr;

use serde_json::Value;
use shardgate::auth::device;
use shardgate::auth::handshake::{self, HandshakeEnv};
use shardgate::auth::net::NetClass;
use shardgate::auth::pairing::{Pairing, PeerTerms};
use shardgate::auth::store::PairingStore;
use shardgate::config::{Config, PairingMode};
use shardgate::protocol::connect::{negotiate, parse_params};

/// The challenge nonce the corpus's signatures are made for.
pub const NONCE: &str = "9c1e3c9e-2b39-4a7e-9f0c-2f7c7c0a1b11";
/// The time the corpus's signatures are made at (and the handshake runs at).
pub const NOW: i64 = 1_700_000_000_000;
/// The shared token the corpus uses.
pub const TOKEN: &str = "T";

/// What the handshake runs against: kept for the life of the thread (a store is a file).
struct World {
    _dir: tempfile::TempDir,
    store: PairingStore,
    cfg: Config,
    pairing: Pairing,
}

thread_local! {
    static WORLD: World = {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = PairingStore::open(dir.path()).expect("pairing store");
        let mut cfg = Config::default();
        cfg.gateway.auth.token = Some(TOKEN.into());
        cfg.access.authentication.mfa.enabled = true;
        let pairing = Pairing::new(&cfg);
        World { _dir: dir, store, cfg, pairing }
    };
}

/// The target.
pub fn run(data: &[u8]) {
    let [terms, json @ ..] = data else {
        return;
    };
    let Ok(params) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    if let Ok(p) = parse_params(&params) {
        assert!(!p.client.id.is_empty() && p.min_protocol <= p.max_protocol);
        for role in ["operator", "node"] {
            if let Ok(v) = negotiate(&p, role) {
                assert!(p.min_protocol <= v && v <= p.max_protocol, "{v} for {p:?}");
            }
        }
    }
    WORLD.with(|w| {
        let (net, policy) = match terms % 3 {
            0 => (
                NetClass::Localhost,
                &w.cfg.gateway.pairing.policies.localhost,
            ),
            1 => (NetClass::Lan, &w.cfg.gateway.pairing.policies.lan),
            _ => (NetClass::Wan, &w.cfg.gateway.pairing.policies.wan),
        };
        let mode = [
            PairingMode::Strict,
            PairingMode::Lenient,
            PairingMode::Disabled,
        ][usize::from(terms / 3 % 3)];
        let env = HandshakeEnv {
            auth: &w.cfg.gateway.auth,
            nonce: NONCE,
            now_ms: NOW,
            direct_loopback: net == NetClass::Localhost,
            store: &w.store,
            terms: PeerTerms {
                mode,
                net,
                policy,
                mfa: &w.cfg.access.authentication.mfa,
                pairing: &w.pairing,
                peer_ip: IpAddr::from([10, 0, 0, 1]),
                client_cert: None,
                cert_auth: false,
            },
            bootstrap: None,
        };
        if let Ok((adm, _, _)) = handshake::admit(&params, &env) {
            match &adm.device_id {
                Some(d) => {
                    let key = params["device"]["publicKey"]
                        .as_str()
                        .and_then(|k| device::parse_public_key(k).ok())
                        .expect("an admitted device presented a valid key");
                    assert_eq!(&device::device_id_for(&key), d);
                }
                None => assert!(adm.scopes.is_empty(), "device-less admission with scopes"),
            }
        }
    });
}
