//! The per-shard acceptor and the life of one connection: HTTP head, upgrade, challenge,
//! handshake, then the request loop (requests on one connection run concurrently) with a
//! writer task that drains the connection's send buffer in batches.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_util::{SinkExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};
use serde_json::{json, Value};

use super::conn::{Conn, ConnAuth};
use super::http;
use super::limited::{Budget, Limited};
use super::tls::{Accepted, Transport};
use crate::auth::pairing::PeerTerms;
use crate::protocol::error::GatewayError;
use crate::protocol::frame::{self, Inbound};
use crate::protocol::handshake::{self, HandshakeEnv, SharedAuth};
use crate::protocol::{authz, PROTOCOL_VERSION};
use crate::shard::{now_ms, Caller, GatewayShard, ReplyTo};

type Ws = WebSocketStream<Limited<Transport>>;
type WsRx = async_tungstenite::WebSocketReceiver<Limited<Transport>>;
type WsTx = async_tungstenite::WebSocketSender<Limited<Transport>>;

/// Accepts until `stop` resolves.
pub async fn accept_loop(
    shard: Rc<GatewayShard>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()>,
) {
    let stop = std::pin::pin!(stop);
    let mut stop = stop;
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            (&mut stop).await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                shard.metrics.accepted.set(shard.metrics.accepted.get() + 1);
                let sh = shard.clone();
                glommio::spawn_local(async move { handle_tcp(sh, stream).await }).detach();
            }
            Some(Err(e)) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                tracing::warn!(shard = %shard.id, error = %e, "accept failed; backing off 100ms");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Decrements the per-IP unauthenticated count when dropped.
struct UnauthGuard<'a> {
    shard: &'a GatewayShard,
    ip: std::net::IpAddr,
    active: Cell<bool>,
}

impl UnauthGuard<'_> {
    fn release(&self) {
        if self.active.replace(false) {
            self.shard.shared.limits.leave_unauth(self.ip);
        }
    }
}

impl Drop for UnauthGuard<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Counts a WebSocket connection against `access.maxConnectionsPerIp` until dropped.
struct ConnSlot<'a> {
    shard: &'a GatewayShard,
    ip: std::net::IpAddr,
}

impl Drop for ConnSlot<'_> {
    fn drop(&mut self) {
        self.shard.shared.access.leave_conn(self.ip);
    }
}

/// A socket that completed the WebSocket upgrade on `/`, with the slots it holds.
struct Upgraded<'a> {
    stream: Transport,
    rest: Vec<u8>,
    peer: SocketAddr,
    deadline: Instant,
    _slot: ConnSlot<'a>,
    guard: UnauthGuard<'a>,
}

async fn handle_tcp(shard: Rc<GatewayShard>, stream: TcpStream) {
    // Everything before the upgrade runs in its own boxed future, freed once it is done: the
    // task of an idle connection then holds only the steady-state part (see tuning.md, memory).
    let upgraded = Box::pin(serve_http(&shard, stream)).await;
    if let Some(up) = upgraded {
        gateway_ws(&shard, up.stream, up.rest, up.peer, up.deadline, &up.guard).await;
    }
}

/// TLS, the HTTP head, access checks; answers plain HTTP itself and hands back an upgraded
/// gateway socket.
async fn serve_http(shard: &Rc<GatewayShard>, stream: TcpStream) -> Option<Upgraded<'_>> {
    let Ok(peer) = stream.peer_addr() else {
        return None;
    };
    let _ = stream.set_nodelay(true);
    let deadline =
        Instant::now() + Duration::from_millis(shard.config().gateway.handshake_timeout_ms);
    let mut stream = match super::tls::accept(shard.shared.tls.as_ref(), stream, deadline).await {
        Accepted::Ready(t) => t,
        Accepted::PlainRefused(mut s) => {
            shard.metrics.refusal("tls_required");
            http::respond(
                &mut s,
                400,
                "Bad Request",
                "text/plain",
                "TLS required: use wss:// or https://\n",
            )
            .await;
            return None;
        }
        Accepted::Failed(why) => {
            shard.metrics.refusal("tls_handshake");
            tracing::info!(shard = %shard.id, peer = %peer, error = %why, "TLS handshake failed");
            return None;
        }
        Accepted::Gone => return None,
    };
    let head = glommio::timer::timeout(
        Duration::from_millis(shard.config().gateway.handshake_timeout_ms),
        async { Ok(http::read_head(&mut stream).await) },
    )
    .await;
    let head = match head {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            http::respond(
                &mut stream,
                400,
                "Bad Request",
                "text/plain",
                &format!("{e}\n"),
            )
            .await;
            return None;
        }
        Err(_) => {
            http::respond(
                &mut stream,
                408,
                "Request Timeout",
                "text/plain",
                "request timeout\n",
            )
            .await;
            return None;
        }
    };
    let cfg = shard.config();
    let (allowed, refresh) = shard.shared.access.allowed(peer.ip());
    if refresh {
        let shared = shard.shared.clone();
        glommio::spawn_local(async move {
            glommio::executor()
                .spawn_blocking(move || shared.access.refresh_hosts())
                .await
        })
        .detach();
    }
    if !allowed {
        shard.metrics.refusal("ip_not_allowed");
        tracing::info!(shard = %shard.id, peer = %peer, "refused: address not in access.ipWhitelist");
        http::respond(
            &mut stream,
            403,
            "Forbidden",
            "text/plain",
            "forbidden: address not allowed\n",
        )
        .await;
        return None;
    }
    match (
        head.method.as_str(),
        head.path.as_str(),
        head.ws_key.as_deref(),
    ) {
        (_, "/echo", Some(key)) if cfg.gateway.dangerously_enable_ws_echo => {
            if http::switch(&mut stream, key).await.is_ok() {
                echo_ws(stream, head.rest, cfg.network.websocket.max_frame_size).await;
            }
        }
        (_, "/", Some(key)) => {
            if !shard
                .shared
                .access
                .origin_allowed(head.origin.as_deref(), head.host.as_deref())
            {
                shard.metrics.refusal("origin");
                tracing::info!(shard = %shard.id, peer = %peer, origin = ?head.origin, "refused: origin not allowed");
                http::respond(
                    &mut stream,
                    403,
                    "Forbidden",
                    "text/plain",
                    "forbidden: origin not allowed\n",
                )
                .await;
                return None;
            }
            if !shard.shared.access.enter_conn(peer.ip()) {
                shard.metrics.refusal("conn_per_ip");
                http::respond(
                    &mut stream,
                    429,
                    "Too Many Requests",
                    "text/plain",
                    "Too many connections from this address\n",
                )
                .await;
                return None;
            }
            let slot = ConnSlot {
                shard,
                ip: peer.ip(),
            };
            let guard = UnauthGuard {
                shard,
                ip: peer.ip(),
                active: Cell::new(false),
            };
            if !shard
                .shared
                .limits
                .enter_unauth(peer.ip(), cfg.gateway.max_unauthenticated_per_ip)
            {
                tracing::warn!(shard = %shard.id, peer = %peer, "too many unauthenticated sockets");
                http::respond(
                    &mut stream,
                    503,
                    "Service Unavailable",
                    "text/plain",
                    "Too many unauthenticated sockets\n",
                )
                .await;
                return None;
            }
            guard.active.set(true);
            if shard
                .shared
                .shutdown
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                http::respond(
                    &mut stream,
                    503,
                    "Service Unavailable",
                    "text/plain",
                    "shutting down\n",
                )
                .await;
                return None;
            }
            if shard
                .shared
                .shedding
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(shard = %shard.id, peer = %peer, "memory cap: connection refused");
                http::respond(
                    &mut stream,
                    503,
                    "Service Unavailable",
                    "text/plain",
                    "overloaded (memory cap)\n",
                )
                .await;
                return None;
            }
            if http::switch(&mut stream, key).await.is_err() {
                return None;
            }
            return Some(Upgraded {
                stream,
                rest: head.rest,
                peer,
                deadline,
                _slot: slot,
                guard,
            });
        }
        ("GET", "/metrics", None) => {
            let text = crate::ops::metrics::render(shard).await;
            http::respond(&mut stream, 200, "OK", "text/plain; version=0.0.4", &text).await;
        }
        ("GET", "/health" | "/healthz", None) => {
            http::respond(
                &mut stream,
                200,
                "OK",
                "application/json",
                r#"{"ok":true,"status":"live"}"#,
            )
            .await;
        }
        ("GET", "/ready" | "/readyz", None) => {
            if shard
                .shared
                .shutdown
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                http::respond(
                    &mut stream,
                    503,
                    "Service Unavailable",
                    "application/json",
                    r#"{"ok":false,"status":"draining"}"#,
                )
                .await;
            } else {
                http::respond(
                    &mut stream,
                    200,
                    "OK",
                    "application/json",
                    r#"{"ok":true,"status":"ready"}"#,
                )
                .await;
            }
        }
        _ => {
            http::respond(&mut stream, 404, "Not Found", "text/plain", "not found\n").await;
        }
    }
    None
}

/// A plain WebSocket echo (Autobahn conformance only).
async fn echo_ws(stream: Transport, rest: Vec<u8>, max_frame: usize) {
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(max_frame.max(16 << 20)));
    let budget: Budget = Rc::new(Cell::new(usize::MAX));
    let mut ws = WebSocketStream::from_partially_read(
        Limited::new(stream, budget),
        rest,
        Role::Server,
        Some(cfg),
    )
    .await;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

fn ws_config(shard: &GatewayShard) -> WebSocketConfig {
    let c = shard.config();
    WebSocketConfig::default()
        .max_message_size(Some(c.gateway.max_payload))
        .max_frame_size(Some(
            c.network
                .websocket
                .max_frame_size
                .min(c.gateway.max_payload),
        ))
        // Held by every connection, idle or not: 1 KiB fits the typical request in one read
        // and costs 3 KiB less per idle connection than tungstenite's 4 KiB (tuning.md).
        .read_buffer_size(1024)
        // Frames accumulate until the writer's flush (one write per batch), or 16 KiB.
        .write_buffer_size(16 * 1024)
}

async fn gateway_ws(
    shard: &Rc<GatewayShard>,
    stream: Transport,
    rest: Vec<u8>,
    peer: SocketAddr,
    deadline: Instant,
    guard: &UnauthGuard<'_>,
) {
    let cfg = shard.config();
    let budget: Budget = Rc::new(Cell::new(cfg.gateway.preauth_max_payload + 1024));
    if rest.len() > budget.get() {
        return;
    }
    budget.set(budget.get() - rest.len());
    let client_cert = stream.client_cert_sha256();
    let ws: Ws = WebSocketStream::from_partially_read(
        Limited::new(stream, budget.clone()),
        rest,
        Role::Server,
        Some(ws_config(shard)),
    )
    .await;
    let (sink, mut rx) = ws.split();
    let conn = shard.add_conn(peer);
    let writer = glommio::spawn_local(writer_loop(conn.clone(), sink)).detach();

    let nonce = uuid::Uuid::new_v4().to_string();
    let ts = now_ms();
    conn.push_frame(frame::event(
        "connect.challenge",
        &json!({"nonce": nonce, "ts": ts}).to_string(),
        None,
        None,
    ));

    let admitted = Box::pin(handshake_phase(
        shard,
        &conn,
        &mut rx,
        &nonce,
        peer,
        deadline,
        client_cert.as_deref(),
    ))
    .await;
    if admitted {
        guard.release();
        budget.set(usize::MAX);
        tracing::debug!(shard = %shard.id, conn = conn.id, peer = %peer, "connected");
        request_loop(shard, &conn, &mut rx).await;
    }
    // Let the writer flush a pending close, then forget the connection.
    if !conn.is_closing() {
        conn.close(1000, "");
    }
    let _ = glommio::timer::timeout(Duration::from_secs(3), async {
        writer.await;
        Ok(())
    })
    .await;
    shard.limiter.forget_conn(conn.id);
    shard.remove_conn(conn.id);
}

async fn next_msg(rx: &mut WsRx, conn: &Conn) -> Option<Result<Message, WsError>> {
    futures_lite::future::or(rx.next(), async {
        conn.wait_closed().await;
        None
    })
    .await
}

/// Reads and answers `connect`. Returns true when admitted.
async fn handshake_phase(
    shard: &Rc<GatewayShard>,
    conn: &Rc<Conn>,
    rx: &mut WsRx,
    nonce: &str,
    peer: SocketAddr,
    deadline: Instant,
    client_cert: Option<&str>,
) -> bool {
    let cfg = shard.config();
    let left = deadline.saturating_duration_since(Instant::now());
    let first = glommio::timer::timeout(left, async { Ok(next_msg(rx, conn).await) }).await;
    let text = match first {
        Err(_) => {
            fail(conn, None, &GatewayError::HandshakeTimeout);
            return false;
        }
        Ok(None) => return false,
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(Message::Binary(_)))) => {
            fail(conn, None, &GatewayError::HandshakeNotConnect);
            return false;
        }
        Ok(Some(Ok(Message::Close(_)))) => return false,
        Ok(Some(Ok(_))) => {
            // ping/pong before connect: tolerated, but the handshake still needs a connect
            return Box::pin(handshake_phase(
                shard,
                conn,
                rx,
                nonce,
                peer,
                deadline,
                client_cert,
            ))
            .await;
        }
        Ok(Some(Err(WsError::Capacity(_)))) | Ok(Some(Err(WsError::Io(_)))) => {
            fail(conn, None, &GatewayError::PreauthTooLarge);
            return false;
        }
        Ok(Some(Err(_))) => return false,
    };
    if text.len() > cfg.gateway.preauth_max_payload {
        fail(conn, None, &GatewayError::PreauthTooLarge);
        return false;
    }
    let (req_id, params, seed) = match frame::parse(text.as_str()) {
        Inbound::Request(r) if r.method == "connect" => (Some(r.id), r.params, false),
        Inbound::SeedConnect(p) => {
            let id = serde_json::from_str::<Value>(text.as_str())
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string));
            (id, p, true)
        }
        Inbound::Request(r) => {
            fail(conn, Some(&r.id), &GatewayError::HandshakeNotConnect);
            return false;
        }
        Inbound::Invalid { id, .. } => {
            fail(conn, id.as_deref(), &GatewayError::HandshakeNotConnect);
            return false;
        }
    };
    let now = now_ms();
    if let Some(wait) =
        shard
            .shared
            .limits
            .auth_blocked(peer.ip(), cfg.gateway.auth_failures_per_minute, now)
    {
        shard.metrics.refusal("auth_locked_out");
        fail(
            conn,
            req_id.as_deref(),
            &GatewayError::AuthRateLimited {
                retry_after_ms: wait,
            },
        );
        return false;
    }
    let net = shard.shared.access.classify(peer.ip());
    let env = HandshakeEnv {
        auth: &cfg.gateway.auth,
        nonce,
        now_ms: now,
        direct_loopback: peer.ip().is_loopback(),
        store: &shard.shared.store,
        terms: PeerTerms {
            mode: cfg.gateway.pairing.mode,
            net,
            policy: crate::auth::pairing::policy_for(cfg, net),
            mfa: &cfg.access.authentication.mfa,
            pairing: &shard.shared.pairing,
            peer_ip: peer.ip(),
            client_cert,
            cert_auth: cfg
                .access
                .authentication
                .methods
                .iter()
                .any(|m| m == "certificate"),
        },
    };
    if seed {
        // The seed dialect has no device identity and gets read+write with the shared
        // secret, so its network's `requireToken` and MFA terms apply as to a device-less
        // operator.
        let mfa = env.terms.check_mfa(
            "operator",
            cfg.access.authentication.mfa.operator_secret.as_deref(),
            params.pointer("/auth/totp").and_then(|v| v.as_str()),
            &[authz::WRITE.to_string()],
            now,
        );
        let no_token = cfg.gateway.auth.effective_mode() == crate::config::AuthMode::None
            && env.terms.policy.require_token;
        if let Err(e) = mfa.and(if no_token {
            Err(GatewayError::AuthTokenMissing)
        } else {
            Ok(())
        }) {
            fail(conn, req_id.as_deref(), &e);
            return false;
        }
        return super::seed::admit(shard, conn, req_id.as_deref(), &params, peer);
    }
    let req_id = req_id.unwrap_or_default();
    let admitted = handshake::admit(&params, &env).and_then(|(mut adm, shared_auth)| {
        // OpenClaw keeps a device-less operator's requested scopes when it authenticated
        // with the shared secret from a direct loopback peer (the CLI's `gateway call`);
        // anywhere else a device-less operator gets no scopes.
        if adm.device_id.is_none()
            && shared_auth == SharedAuth::Secret
            && peer.ip().is_loopback()
            && cfg.gateway.auth.loopback_shared_secret_keeps_scopes
        {
            adm.scopes = adm.params.scopes.clone();
            // The device-less operator's second factor.
            env.terms.check_mfa(
                "operator",
                cfg.access.authentication.mfa.operator_secret.as_deref(),
                adm.params.auth.as_ref().and_then(|a| a.totp.as_deref()),
                &adm.scopes,
                now,
            )?;
        }
        Ok((adm, shared_auth))
    });
    crate::auth::pairing::announce(shard);
    match admitted {
        Ok((adm, shared_auth)) => {
            let auth = ConnAuth {
                role: adm.role.clone(),
                scopes: adm.scopes.clone(),
                client: adm.client.clone(),
                device_id: adm.device_id.clone(),
                seed: false,
            };
            shard.metrics.hellos.set(shard.metrics.hellos.get() + 1);
            let hello = hello_ok(shard, conn, &adm, shared_auth).await;
            *conn.auth.borrow_mut() = Some(std::sync::Arc::new(auth.clone()));
            conn.push_frame(frame::res_ok(&req_id, &hello));
            // Like OpenClaw: a fresh health snapshot right after hello (seq 1).
            let sv = (
                hello["snapshot"]["stateVersion"]["presence"]
                    .as_u64()
                    .unwrap_or(1),
                hello["snapshot"]["stateVersion"]["health"]
                    .as_u64()
                    .unwrap_or(1),
            );
            conn.push_event(
                "health",
                &hello["snapshot"]["health"].to_string(),
                false,
                Some(sv),
            );
            if adm.role == "node" {
                crate::node::node_up(shard, shard.conn_ref(conn.id), &adm, &params);
            }
            if crate::shard::presence_visible(&auth) {
                let entry = presence_entry(&adm, peer);
                let key = conn.conn_uuid.clone();
                shard.broadcast(move |s| s.presence_upsert(key.clone(), entry.clone()));
            }
            tracing::info!(shard = %shard.id, conn = conn.id, peer = %peer, role = %adm.role,
                client = %adm.client.id, mode = %adm.client.mode, device = adm.device_id.is_some(), "hello-ok");
            true
        }
        Err(e) => {
            if matches!(
                e,
                GatewayError::AuthTokenMismatch
                    | GatewayError::AuthPasswordMismatch
                    | GatewayError::DeviceTokenMismatch
                    | GatewayError::MfaInvalid
                    | GatewayError::MfaReplayed
            ) {
                shard.shared.limits.record_failure(peer.ip(), now);
            }
            match &e {
                GatewayError::MfaInvalid
                | GatewayError::MfaReplayed
                | GatewayError::MfaRequired
                | GatewayError::MfaNotEnrolled => shard.metrics.refusal("mfa"),
                GatewayError::PairingRequired { .. } => shard.metrics.refusal("pairing_required"),
                GatewayError::DeviceCertMismatch => shard.metrics.refusal("cert_mismatch"),
                _ => {}
            }
            shard
                .metrics
                .handshake_failures
                .set(shard.metrics.handshake_failures.get() + 1);
            tracing::info!(shard = %shard.id, peer = %peer, error = ?e, "connect refused");
            fail(conn, Some(&req_id), &e);
            false
        }
    }
}

fn presence_entry(adm: &handshake::Admission, peer: SocketAddr) -> Value {
    let c = &adm.client;
    json!({
        "host": c.display_name.clone().unwrap_or_else(|| c.id.clone()),
        "ip": peer.ip().to_string(), "version": c.version, "platform": c.platform,
        "deviceFamily": c.device_family, "mode": c.mode, "reason": "connect",
        "text": format!("{} · {} · mode {}", c.display_name.as_deref().unwrap_or(&c.id), c.version, c.mode),
        "ts": now_ms(), "deviceId": adm.device_id, "roles": [adm.role], "scopes": adm.scopes,
        "instanceId": c.instance_id,
    })
}

async fn hello_ok(
    shard: &Rc<GatewayShard>,
    conn: &Conn,
    adm: &handshake::Admission,
    shared_auth: SharedAuth,
) -> Value {
    let cfg = shard.config();
    let health = crate::routing::health_snapshot(shard).await;
    let mut auth = json!({
        "method": match shared_auth { SharedAuth::DeviceToken => "device-token", SharedAuth::Certificate => "certificate", SharedAuth::Open => "none", SharedAuth::Secret => cfg.gateway.auth.effective_mode().as_str() },
        "role": adm.role, "scopes": adm.scopes,
    });
    if let Some((tok, issued)) = &adm.device_token {
        auth["deviceToken"] = json!(tok);
        auth["issuedAtMs"] = json!(issued);
    }
    if let Some(id) = &adm.pairing_pending {
        auth["pairing"] = json!({"status": "pending", "requestId": id});
    }
    json!({
        "type": "hello-ok",
        "protocol": adm.protocol.min(PROTOCOL_VERSION),
        "server": {"version": env!("CARGO_PKG_VERSION"), "connId": conn.conn_uuid, "name": "shardgate", "shard": shard.id.0},
        "features": {
            "methods": authz::METHODS.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
            "events": authz::EVENTS,
            "capabilities": [],
        },
        "snapshot": {
            "presence": shard.presence_list(),
            "health": health,
            "stateVersion": shard.state_version(),
            "uptimeMs": shard.shared.uptime_ms(),
            "sessionDefaults": {"defaultAgentId": cfg.agents.default_agent, "mainKey": "main",
                                "mainSessionKey": format!("agent:{}:main", cfg.agents.default_agent), "scope": "per-sender"},
            "authMode": cfg.gateway.auth.effective_mode().as_str(),
        },
        "auth": auth,
        "policy": {"maxPayload": cfg.gateway.max_payload, "maxBufferedBytes": cfg.gateway.max_buffered_bytes,
                   "tickIntervalMs": cfg.gateway.tick_interval_ms},
    })
}

/// Sends the error (as a `res` when there is an id to answer) and closes as the error says.
pub fn fail(conn: &Conn, id: Option<&str>, e: &GatewayError) {
    let w = e.wire();
    conn.push_frame(frame::res_err(id.unwrap_or("invalid"), &w));
    let (code, reason) = w.close.unwrap_or((1008, "closing"));
    conn.close(code, reason);
}

async fn request_loop(shard: &Rc<GatewayShard>, conn: &Rc<Conn>, rx: &mut WsRx) {
    let max = shard.config().gateway.max_payload;
    while let Some(msg) = next_msg(rx, conn).await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(_)) => {
                let e = GatewayError::InvalidFrame(
                    "binary frames are not supported; send JSON text".into(),
                );
                conn.push_frame(frame::res_err("invalid", &e.wire()));
                continue;
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(WsError::Capacity(_)) => {
                fail(conn, None, &GatewayError::FrameTooLarge { limit: max });
                break;
            }
            Err(e) => {
                tracing::debug!(conn = conn.id, error = %e, "read ended");
                break;
            }
        };
        if conn.is_closing() {
            break;
        }
        on_text(shard, conn, text.as_str());
    }
}

fn on_text(shard: &Rc<GatewayShard>, conn: &Rc<Conn>, text: &str) {
    let auth = match conn.auth.borrow().as_ref() {
        Some(a) => a.clone(),
        None => return,
    };
    let req = match frame::parse(text) {
        Inbound::Request(r) => r,
        Inbound::SeedConnect(_) => {
            let e = GatewayError::InvalidFrame("already connected".into());
            conn.push_frame(frame::res_err("invalid", &e.wire()));
            return;
        }
        Inbound::Invalid { id, reason } => {
            conn.push_frame(frame::res_err(
                id.as_deref().unwrap_or("invalid"),
                &GatewayError::InvalidFrame(reason).wire(),
            ));
            return;
        }
    };
    if shard.limiter.enabled() {
        if let Err((limit, wait)) = shard.limiter.check(conn.id, conn.peer.ip(), Instant::now()) {
            shard.metrics.refusal("rate_limited");
            let e = crate::auth::access::rate_limited(limit, wait);
            conn.push_frame(frame::res_err(&req.id, &e.wire()));
            return;
        }
    }
    if req.method == "connect" {
        let e = GatewayError::InvalidFrame("already connected".into());
        conn.push_frame(frame::res_err(&req.id, &e.wire()));
        return;
    }
    if let Err(e) = authz::authorize(&req.method, &auth.role, &auth.scopes) {
        let unauthorized = matches!(
            e,
            GatewayError::MissingScope(_) | GatewayError::UnauthorizedRole(_)
        );
        conn.push_frame(frame::res_err(&req.id, &e.wire()));
        if unauthorized {
            let n = conn.unauthorized_streak.get() + 1;
            conn.unauthorized_streak.set(n);
            if n > 10 {
                let w = GatewayError::RepeatedUnauthorized.wire();
                let (code, reason) = w.close.unwrap_or((1008, "repeated unauthorized calls"));
                conn.close(code, reason);
            }
        }
        return;
    }
    conn.unauthorized_streak.set(0);
    shard.metrics.request(&req.method);
    let mut req = req;
    if auth.seed && req.method == "agent" && req.params.get("idempotencyKey").is_none() {
        req.params["idempotencyKey"] = Value::String(format!("seed:{}:{}", conn.conn_uuid, req.id));
    }
    let caller = Caller {
        conn: shard.conn_ref(conn.id),
        auth,
        received_us: shard.shared.mono_us(),
    };
    let reply = ReplyTo {
        conn: caller.conn,
        req_id: req.id,
    };
    let sh = shard.clone();
    glommio::spawn_local(crate::routing::dispatch(
        sh, caller, reply, req.method, req.params,
    ))
    .detach();
}

/// Drains the connection's buffer into the socket: all queued frames, one flush.
async fn writer_loop(conn: Rc<Conn>, mut sink: WsTx) {
    loop {
        let batch = conn.next_batch().await;
        let mut bytes = 0;
        let mut failed = false;
        for f in batch.frames {
            bytes += f.len();
            let f = if conn.is_seed() {
                super::seed::translate(&f)
            } else {
                Some(f)
            };
            let Some(f) = f else { continue };
            if sink.feed(Message::text(f)).await.is_err() {
                failed = true;
                break;
            }
        }
        if !failed && sink.flush().await.is_err() {
            failed = true;
        }
        conn.written(bytes);
        if failed {
            conn.mark_closed();
            return;
        }
        if let Some((code, reason)) = batch.close {
            if code != 1006 {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                let _ = sink.close(Some(frame)).await;
                // Give the peer a moment to answer the close, then drop the socket.
                glommio::timer::sleep(Duration::from_millis(if conn.is_closed() {
                    0
                } else {
                    200
                }))
                .await;
            }
            conn.mark_closed();
            return;
        }
    }
}
