//! The per-shard acceptor and the life of one connection: HTTP head, upgrade, challenge,
//! handshake, then the request loop (requests on one connection run concurrently). One task
//! per connection reads and writes: it drains the connection's send buffer in batches, one
//! write each, between reads.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use serde_json::{json, Value};

use super::conn::{Batch, Conn, Outbound};
use super::deflate::{self, Agreed};
use super::http;
use super::limited::{Budget, Limited};
use super::tls::{Accepted, Transport};
use super::ws::{self, Msg, Out, WsError, WsReader};
use crate::addr::{Caller, ReplyTo};
use crate::auth::handshake::{self, HandshakeEnv, SharedAuth};
use crate::auth::limits::Peer;
use crate::auth::pairing::PeerTerms;
use crate::clock::now_ms;
use crate::protocol::connect::ConnAuth;
use crate::protocol::error::GatewayError;
use crate::protocol::frame::{self, Inbound};
use crate::protocol::method::{ChatMethod, Method};
use crate::protocol::params::FieldRef;
use crate::protocol::{authz, PROTOCOL_VERSION};
use crate::shard::GatewayShard;

/// A connection's socket; borrowed only inside one poll (reads and writes of the connection's
/// task, and its boxed ending).
type Io = RefCell<Limited<Transport>>;

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
                shard
                    .metrics()
                    .accepted
                    .set(shard.metrics().accepted.get() + 1);
                let sh = shard.clone();
                glommio::spawn_local(handle_tcp(sh, stream)).detach();
            }
            Some(Err(e)) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                tracing::warn!(shard = %shard.id(), error = %e, "accept failed; backing off 100ms");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Decrements the per-IP unauthenticated count when dropped.
struct UnauthGuard {
    shard: Rc<GatewayShard>,
    ip: std::net::IpAddr,
    active: Cell<bool>,
}

impl UnauthGuard {
    fn release(&self) {
        if self.active.replace(false) {
            self.shard.shared().limits.leave_unauth(self.ip);
        }
    }
}

impl Drop for UnauthGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Counts a WebSocket connection against `access.maxConnectionsPerIp` until dropped, or until
/// handed over to the connection's [`Live`].
struct ConnSlot {
    /// `None` once handed over.
    shard: Option<Rc<GatewayShard>>,
    ip: std::net::IpAddr,
}

impl ConnSlot {
    /// Passes the count on to a [`Live`], which leaves by its `Conn`'s peer address (the same
    /// one) and so needs no copy of it: every idle connection's task holds a `Live`.
    fn hand_over(mut self) -> Rc<GatewayShard> {
        self.shard.take().expect("a slot is handed over once")
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(shard) = &self.shard {
            shard.shared().access.leave_conn(self.ip);
        }
    }
}

/// A socket that completed the WebSocket upgrade on `/`, with the slots it holds.
struct Upgraded {
    stream: Transport,
    rest: Vec<u8>,
    peer: SocketAddr,
    deadline: Instant,
    slot: ConnSlot,
    guard: UnauthGuard,
    /// The upgrade came with an `Origin` header (a browser): OpenClaw never lets a
    /// device-less browser keep shared-secret scopes.
    browser_origin: bool,
    /// The upgrade came through a proxy (a forwarding header).
    proxied: bool,
    /// permessage-deflate, if it was agreed on the upgrade.
    deflate: Option<Agreed>,
}

/// Agrees on permessage-deflate when `network.websocket.compression` is on and the client
/// offered an acceptable variant.
fn agree_deflate(shard: &GatewayShard, head: &http::Head) -> Option<Agreed> {
    if !shard.config().network.websocket.compression {
        return None;
    }
    deflate::negotiate(head.extensions.iter().map(String::as_str))
}

/// What an open gateway connection keeps for its whole life (besides the shard's `Conn`).
struct Live {
    conn: Rc<Conn>,
    io: Rc<Io>,
    rd: WsReader,
    /// Counts the connection against `access.maxConnectionsPerIp` while it lives (from its
    /// [`ConnSlot`]).
    slot: Rc<GatewayShard>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.slot.shared().access.leave_conn(self.conn.peer.ip());
    }
}

pub(crate) fn handle_tcp(
    shard: Rc<GatewayShard>,
    stream: TcpStream,
) -> impl std::future::Future<Output = ()> {
    // Everything before the request loop (TLS, HTTP head, upgrade, challenge, `connect`) runs
    // in boxed futures freed once they are done, and so does the ending: the task of an idle
    // connection holds only the request loop, `Live` and the shard (see tuning.md, memory).
    let http = Box::pin(serve_http(shard.clone(), stream));
    async move {
        let Some(up) = http.await else {
            return;
        };
        let Some((mut live, admitted)) = Box::pin(open_ws(&shard, up)).await else {
            return;
        };
        if admitted {
            request_loop(&shard, &live.conn, &mut live.rd, &live.io).await;
        }
        let id = live.conn.id;
        Box::pin(finish(&shard, &live.conn, &mut live.rd, &live.io)).await;
        shard.limiter().forget_conn(id);
        let gone = shard.remove_conn(id);
        if gone.is_some_and(|c| c.auth.borrow().as_ref().is_some_and(|a| a.role == "node")) {
            crate::node::node_down(&shard, shard.conn_ref(id));
        }
    }
}

/// TLS, the HTTP head, access checks; answers plain HTTP itself and hands back an upgraded
/// gateway socket.
async fn serve_http(shard: Rc<GatewayShard>, stream: TcpStream) -> Option<Upgraded> {
    let shard = &shard;
    let Ok(peer) = stream.peer_addr() else {
        return None;
    };
    let _ = stream.set_nodelay(true);
    let deadline =
        Instant::now() + Duration::from_millis(shard.config().gateway.handshake_timeout_ms);
    let mut stream = match super::tls::accept(shard.shared().tls.as_ref(), stream, deadline).await {
        Accepted::Ready(t) => t,
        Accepted::PlainRefused(mut s) => {
            shard.metrics().refusal("tls_required");
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
            shard.metrics().refusal("tls_handshake");
            tracing::info!(shard = %shard.id(), peer = %peer, error = %why, "TLS handshake failed");
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
    let (allowed, refresh) = shard.shared().access.allowed(peer.ip());
    if refresh {
        let shared = shard.shared().clone();
        glommio::spawn_local(async move {
            glommio::executor()
                .spawn_blocking(move || shared.access.refresh_hosts())
                .await
        })
        .detach();
    }
    if !allowed {
        shard.metrics().refusal("ip_not_allowed");
        tracing::info!(shard = %shard.id(), peer = %peer, "refused: address not in access.ipWhitelist");
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
            let agreed = agree_deflate(shard, &head);
            let answer = agreed.map(|a| a.response());
            if http::switch(&mut stream, key, answer.as_deref())
                .await
                .is_ok()
            {
                echo_ws(
                    shard,
                    stream,
                    head.rest,
                    peer,
                    cfg.network.websocket.max_frame_size,
                    agreed,
                )
                .await;
            }
        }
        (_, "/", Some(key)) => {
            if !shard
                .shared()
                .access
                .origin_allowed(head.origin.as_deref(), head.host.as_deref())
            {
                shard.metrics().refusal("origin");
                tracing::info!(shard = %shard.id(), peer = %peer, origin = ?head.origin, "refused: origin not allowed");
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
            if !shard.shared().access.enter_conn(peer.ip()) {
                shard.metrics().refusal("conn_per_ip");
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
                shard: Some(shard.clone()),
                ip: peer.ip(),
            };
            let guard = UnauthGuard {
                shard: shard.clone(),
                ip: peer.ip(),
                active: Cell::new(false),
            };
            if !shard
                .shared()
                .limits
                .enter_unauth(peer.ip(), cfg.gateway.max_unauthenticated_per_ip)
            {
                tracing::warn!(shard = %shard.id(), peer = %peer, "too many unauthenticated sockets");
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
                .shared()
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
                .shared()
                .shedding
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(shard = %shard.id(), peer = %peer, "memory cap: connection refused");
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
            let agreed = agree_deflate(shard, &head);
            let answer = agreed.map(|a| a.response());
            if http::switch(&mut stream, key, answer.as_deref())
                .await
                .is_err()
            {
                return None;
            }
            let browser_origin = head.origin.as_deref().is_some_and(|o| !o.trim().is_empty());
            return Some(Upgraded {
                stream,
                rest: head.rest,
                peer,
                deadline,
                slot,
                guard,
                browser_origin,
                proxied: head.proxied,
                deflate: agreed,
            });
        }
        ("POST", path, None)
            if cfg.gateway.dangerously_enable_test_hooks && path.starts_with("/dangerously/") =>
        {
            let (status, body) = crate::ops::test_hooks::call(shard, path);
            let reason = match status {
                200 => "OK",
                400 => "Bad Request",
                409 => "Conflict",
                _ => "Not Found",
            };
            http::respond(&mut stream, status, reason, "text/plain", &body).await;
        }
        (method, path, None) if path == "/j" || path.starts_with("/j/") => {
            // Setup-code join URLs (`openclaw devices join-code`): burned by the first GET;
            // misses count as auth failures of the peer (guessing costs a lockout).
            let now = now_ms();
            let browser = head.origin.as_deref().is_some_and(|o| !o.trim().is_empty());
            let limited = Peer::new(peer.ip(), browser, head.proxied);
            let blocked = shard.shared().limits.auth_blocked(
                limited,
                cfg.gateway.auth_failures_per_minute,
                now,
            );
            let (status, reason, body) = match blocked {
                Some(_) => (
                    429,
                    "Too Many Requests",
                    r#"{"error":"rate_limited"}"#.to_owned(),
                ),
                None => {
                    match crate::auth::bootstrap::join(
                        &shard.shared().bootstrap,
                        method,
                        path,
                        head.has_query,
                        now,
                    )
                    .await
                    {
                        Some(payload) => (200, "OK", payload),
                        None => {
                            shard.shared().limits.record_failure(limited, now);
                            (404, "Not Found", r#"{"error":"not_found"}"#.to_owned())
                        }
                    }
                }
            };
            http::respond_with(
                &mut stream,
                status,
                reason,
                "application/json; charset=utf-8",
                "Cache-Control: no-store\r\n",
                &body,
            )
            .await;
        }
        ("GET", "/metrics", None) => {
            let text = crate::ops::exposition::render(shard).await;
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
                .shared()
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

/// A plain WebSocket echo (Autobahn conformance only), on the gateway's WebSocket layer.
async fn echo_ws(
    shard: &GatewayShard,
    stream: Transport,
    rest: Vec<u8>,
    peer: SocketAddr,
    max_frame: usize,
    agreed: Option<Agreed>,
) {
    let io = RefCell::new(Limited::new(stream, Rc::new(Cell::new(usize::MAX))));
    let mut rd = WsReader::new(max_frame.max(16 << 20), 64 << 20)
        .with_initial(rest)
        .with_deflate(agreed.is_some());
    let conn = Conn::new(0, peer, 256 << 20);
    if let Some(a) = agreed {
        conn.set_deflate(a.server_window_bits);
    }
    let ended = drive(shard, &conn, &mut rd, &io, |m| {
        match m {
            Msg::Text(t) => conn.push(Outbound::Text(t.to_owned())),
            Msg::Binary(b) => conn.push(Outbound::Binary(b.to_vec())),
            _ => {}
        }
        true
    })
    .await;
    if let Ended::Failed(e) = ended {
        report(&conn, &e);
    }
    finish(shard, &conn, &mut rd, &io).await;
}

/// How driving a connection ended.
enum Ended {
    /// The callback asked to stop.
    Stopped,
    /// The peer sent its close (answered later by `finish`), or ours was written.
    Closed,
    /// A protocol violation or a socket error.
    Failed(WsError),
}

/// One step of [`drive`].
enum Step {
    Write(Batch),
    Read(Result<bool, WsError>),
}

/// Runs a connection from its own task: writes what is queued for it (first, so the answers
/// to one read leave together before the next read) and reads messages, answering pings and
/// noting the peer's close; text and binary messages go to `on`. Returns when `on` returns
/// false, a close was exchanged, or the connection fails.
async fn drive(
    shard: &GatewayShard,
    conn: &Conn,
    rd: &mut WsReader,
    io: &Io,
    mut on: impl FnMut(Msg<'_>) -> bool,
) -> Ended {
    loop {
        let mut ended = None;
        let step = std::future::poll_fn(|cx| {
            if let Poll::Ready(batch) = conn.poll_batch(cx) {
                return Poll::Ready(Step::Write(batch));
            }
            let read = rd.poll_read(cx, io, &mut |m| match m {
                Msg::Ping(p) => {
                    conn.push(Outbound::Pong(p.to_vec()));
                    true
                }
                Msg::Pong => true,
                Msg::Close(code) => {
                    conn.set_peer_closed();
                    conn.close(code.unwrap_or(1000), "");
                    ended = Some(Ended::Closed);
                    false
                }
                data => {
                    let go = on(data);
                    if !go {
                        ended = Some(Ended::Stopped);
                    }
                    go
                }
            });
            read.map(Step::Read)
        })
        .await;
        match step {
            Step::Write(batch) => {
                let wrote = write_batch(shard, conn, io, &batch).await;
                let close = batch.close.is_some();
                batch.recycle();
                if wrote.is_err() || close {
                    conn.mark_closed();
                    return Ended::Closed;
                }
            }
            Step::Read(Err(e)) => return Ended::Failed(e),
            Step::Read(Ok(_)) => {
                if let Some(e) = ended {
                    return e;
                }
            }
        }
    }
}

/// Closes as a read error calls for: a protocol error gets its close code; a dead socket
/// just ends (what is queued is flushed, no close frame is sent).
fn report(conn: &Conn, e: &WsError) {
    match e.close() {
        Some((code, why)) => conn.close(code, why),
        None => conn.close(1006, ""),
    }
}

/// Ends a connection: writes what is still queued and the close frame (1000 unless a close
/// was asked for), then gives the peer up to 200 ms to answer the close before the socket is
/// dropped. At most 3 s in all.
async fn finish(shard: &GatewayShard, conn: &Conn, rd: &mut WsReader, io: &Io) {
    if !conn.is_closing() {
        conn.close(1000, "");
    }
    let _ = glommio::timer::timeout(Duration::from_secs(3), async {
        if !conn.is_closed() {
            let batch = conn.next_batch().await;
            let wrote = write_batch(shard, conn, io, &batch).await;
            batch.recycle();
            conn.mark_closed();
            if wrote.is_err() {
                return Ok(());
            }
        }
        if conn.close_code().is_some_and(|c| c != 1006) && !conn.peer_closed() {
            let _ = glommio::timer::timeout(Duration::from_millis(200), async {
                while let Ok(true) = rd.read(io, &mut |m| !matches!(m, Msg::Close(_))).await {}
                Ok(())
            })
            .await;
        }
        Ok(())
    })
    .await;
    conn.mark_closed();
}

/// The largest frame and message of an authenticated connection.
fn frame_limits(shard: &GatewayShard) -> (usize, usize) {
    let c = shard.config();
    let max = c.gateway.max_payload;
    (c.network.websocket.max_frame_size.min(max), max)
}

/// Starts the WebSocket side of an upgraded socket: the writer, the challenge and the
/// `connect` handshake. Returns the connection and whether it was admitted.
async fn open_ws(shard: &Rc<GatewayShard>, up: Upgraded) -> Option<(Live, bool)> {
    let Upgraded {
        stream,
        rest,
        peer,
        deadline,
        slot,
        guard,
        browser_origin,
        proxied,
        deflate,
    } = up;
    let cfg = shard.config();
    let budget: Budget = Rc::new(Cell::new(cfg.gateway.preauth_max_payload + 1024));
    if rest.len() > budget.get() {
        return None;
    }
    budget.set(budget.get() - rest.len());
    let client_cert = stream.client_cert_sha256();
    let io = Rc::new(RefCell::new(Limited::new(stream, budget.clone())));
    let pre = cfg.gateway.preauth_max_payload;
    let mut rd = WsReader::new(pre, pre)
        .with_initial(rest)
        .with_deflate(deflate.is_some());
    let conn = shard.add_conn(peer);
    if let Some(a) = deflate {
        conn.set_deflate(a.server_window_bits);
    }

    let nonce = uuid::Uuid::new_v4().to_string();
    let ts = now_ms();
    conn.push_frame(frame::event(
        "connect.challenge",
        &json!({"nonce": nonce, "ts": ts}).to_string(),
        None,
        None,
    ));

    let admitted = handshake_phase(
        shard,
        &conn,
        &mut rd,
        &io,
        &nonce,
        deadline,
        Upgrade {
            client_cert: client_cert.as_deref(),
            browser_origin,
            proxied,
        },
    )
    .await;
    if admitted {
        guard.release();
        budget.set(usize::MAX);
        tracing::debug!(shard = %shard.id(), conn = conn.id, peer = %peer, "connected");
        let (frame, message) = frame_limits(shard);
        rd.set_limits(frame, message);
    }
    Some((
        Live {
            conn,
            io,
            rd,
            slot: slot.hand_over(),
        },
        admitted,
    ))
}

/// What the upgrade request told about the peer, for the handshake.
struct Upgrade<'a> {
    /// sha256 of the TLS client certificate, if one was presented.
    client_cert: Option<&'a str>,
    /// The upgrade carried an `Origin` header (a browser).
    browser_origin: bool,
    /// The upgrade carried a forwarding header (a proxy).
    proxied: bool,
}

/// Reads and answers `connect`. Returns true when admitted.
async fn handshake_phase(
    shard: &Rc<GatewayShard>,
    conn: &Rc<Conn>,
    rd: &mut WsReader,
    io: &Io,
    nonce: &str,
    deadline: Instant,
    up: Upgrade<'_>,
) -> bool {
    let Upgrade {
        client_cert,
        browser_origin,
        proxied,
    } = up;
    let peer = conn.peer;
    let limited = Peer::new(peer.ip(), browser_origin, proxied);
    let cfg = shard.config();
    let left = deadline.saturating_duration_since(Instant::now());
    let mut first = None;
    let ended = glommio::timer::timeout(left, async {
        Ok(drive(shard, conn, rd, io, |m| {
            first = Some(match m {
                Msg::Text(t) => Some(t.to_owned()),
                _ => None,
            });
            false
        })
        .await)
    })
    .await;
    let text = match (ended, first) {
        (Err(_), _) => {
            conn.fail(None, &GatewayError::HandshakeTimeout);
            return false;
        }
        (Ok(Ended::Stopped), Some(Some(text))) => text,
        (Ok(Ended::Stopped), _) => {
            conn.fail(None, &GatewayError::HandshakeNotConnect);
            return false;
        }
        (Ok(Ended::Closed), _) => return false,
        (Ok(Ended::Failed(WsError::TooBig(_) | WsError::Io(_))), _) => {
            conn.fail(None, &GatewayError::PreauthTooLarge);
            return false;
        }
        (Ok(Ended::Failed(e)), _) => {
            report(conn, &e);
            return false;
        }
    };
    if text.len() > cfg.gateway.preauth_max_payload {
        conn.fail(None, &GatewayError::PreauthTooLarge);
        return false;
    }
    let (req_id, params, seed) = match frame::parse(text.as_str()) {
        Inbound::Request(r) if r.method.as_str() == "connect" => {
            (Some(r.id), r.params.into_json(), false)
        }
        Inbound::SeedConnect(p) => {
            let id = serde_json::from_str::<Value>(text.as_str())
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string));
            (id, p, true)
        }
        Inbound::Request(r) => {
            conn.fail(Some(&r.id), &GatewayError::HandshakeNotConnect);
            return false;
        }
        Inbound::Invalid { id, .. } => {
            conn.fail(id.as_deref(), &GatewayError::HandshakeNotConnect);
            return false;
        }
    };
    let now = now_ms();
    if let Some(wait) =
        shard
            .shared()
            .limits
            .auth_blocked(limited, cfg.gateway.auth_failures_per_minute, now)
    {
        shard.metrics().refusal("auth_locked_out");
        conn.fail(
            req_id.as_deref(),
            &GatewayError::AuthRateLimited {
                retry_after_ms: wait,
            },
        );
        return false;
    }
    let net = shard.shared().access.classify(peer.ip());
    let env = HandshakeEnv {
        auth: &cfg.gateway.auth,
        nonce,
        now_ms: now,
        direct_loopback: peer.ip().is_loopback(),
        store: &shard.shared().store,
        terms: PeerTerms {
            mode: cfg.gateway.pairing.mode,
            net,
            policy: crate::auth::pairing::policy_for(cfg, net),
            mfa: &cfg.access.authentication.mfa,
            pairing: &shard.shared().pairing,
            peer_ip: peer.ip(),
            client_cert,
            cert_auth: cfg
                .access
                .authentication
                .methods
                .iter()
                .any(|m| m == "certificate"),
        },
        bootstrap: Some(&shard.shared().bootstrap),
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
            conn.fail(req_id.as_deref(), &e);
            return false;
        }
        return super::seed::admit(shard, conn, req_id.as_deref(), &params, limited);
    }
    let req_id = req_id.unwrap_or_default();
    let admitted = handshake::admit(&params, &env).and_then(|(mut adm, shared_auth, durable)| {
        // OpenClaw keeps a device-less operator's requested scopes when its CLI (or local
        // backend) authenticated with the shared secret from a direct loopback peer (the
        // CLI's `gateway call`); any other device-less operator gets no scopes.
        if adm.device_id.is_none()
            && shared_auth == SharedAuth::Secret
            && peer.ip().is_loopback()
            && handshake::loopback_secret_keeps_scopes(&adm.client, browser_origin)
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
        Ok((adm, shared_auth, durable))
    });
    crate::auth::device_methods::announce(shard);
    // What the admission hands out (a device token, a spent setup code) must be on disk
    // first. The store writer's thread writes it; this task waits without blocking the
    // shard, and without any lock: other handshakes go on meanwhile.
    let admitted = match admitted {
        Ok((adm, shared_auth, durable)) if durable.is_ready() => Ok((adm, shared_auth)),
        Ok((adm, shared_auth, durable)) => durable.wait().await.map(|()| (adm, shared_auth)),
        Err(e) => Err(e),
    };
    match admitted {
        Ok((adm, shared_auth)) => {
            let auth = ConnAuth {
                role: adm.role.clone(),
                scopes: adm.scopes.clone(),
                client: adm.client.clone(),
                device_id: adm.device_id.clone(),
                seed: false,
            };
            shard.metrics().hellos.set(shard.metrics().hellos.get() + 1);
            let hello = hello_ok(shard, conn, &adm, shared_auth).await;
            *conn.auth.borrow_mut() = Some(std::sync::Arc::new(auth.clone()));
            // One more connection (a node up, a presence entry): others' hello-ok shows it soon.
            shard.health_parts().mark_changed();
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
                crate::node::node_up(
                    shard,
                    shard.conn_ref(conn.id),
                    &adm,
                    &params,
                    shared_auth == SharedAuth::Bootstrap,
                );
            }
            if crate::shard::presence_visible(&auth) {
                let entry = presence_entry(&adm, peer);
                let key = conn.conn_uuid.to_string();
                shard.broadcast(move |s| s.presence_upsert(key.clone(), entry.clone()));
            }
            tracing::info!(shard = %shard.id(), conn = conn.id, peer = %peer, role = %adm.role,
                client = %adm.client.id, mode = %adm.client.mode, device = adm.device_id.is_some(),
                deflate = conn.deflate_bits().is_some(), "hello-ok");
            true
        }
        Err(e) => {
            if matches!(
                e,
                GatewayError::AuthTokenMismatch
                    | GatewayError::AuthPasswordMismatch
                    | GatewayError::DeviceTokenMismatch
                    | GatewayError::BootstrapTokenInvalid
                    | GatewayError::MfaInvalid
                    | GatewayError::MfaReplayed
            ) {
                shard.shared().limits.record_failure(limited, now);
            }
            match &e {
                GatewayError::MfaInvalid
                | GatewayError::MfaReplayed
                | GatewayError::MfaRequired
                | GatewayError::MfaNotEnrolled => shard.metrics().refusal("mfa"),
                GatewayError::PairingRequired { .. } => shard.metrics().refusal("pairing_required"),
                GatewayError::DeviceCertMismatch => shard.metrics().refusal("cert_mismatch"),
                _ => {}
            }
            shard
                .metrics()
                .handshake_failures
                .set(shard.metrics().handshake_failures.get() + 1);
            tracing::info!(shard = %shard.id(), peer = %peer, error = ?e, "connect refused");
            conn.fail(Some(&req_id), &e);
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
    let health = crate::routing::hello_health(shard);
    let mut auth = json!({
        "method": match shared_auth { SharedAuth::DeviceToken => "device-token", SharedAuth::Certificate => "certificate", SharedAuth::Open => "none", SharedAuth::Bootstrap => "bootstrap-token", SharedAuth::Secret => cfg.gateway.auth.effective_mode().as_str() },
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
        "server": {"version": crate::protocol::OPENCLAW_COMPAT_VERSION, "shardgateVersion": env!("CARGO_PKG_VERSION"),
                   "connId": conn.conn_uuid.to_string(), "name": "shardgate", "shard": shard.id().0},
        "features": {
            "methods": Method::ALL.iter().map(|m| m.name()).collect::<Vec<_>>(),
            "events": authz::EVENTS,
            "capabilities": authz::CAPABILITIES,
        },
        "snapshot": {
            "presence": shard.presence_list(),
            "health": health,
            "stateVersion": shard.state_version(),
            "uptimeMs": shard.shared().uptime_ms(),
            "sessionDefaults": {"defaultAgentId": cfg.agents.default_agent, "mainKey": "main",
                                "mainSessionKey": format!("agent:{}:main", cfg.agents.default_agent), "scope": "per-sender"},
            "authMode": cfg.gateway.auth.effective_mode().as_str(),
        },
        "auth": auth,
        "policy": {"maxPayload": cfg.gateway.max_payload, "maxBufferedBytes": cfg.gateway.max_buffered_bytes,
                   "tickIntervalMs": cfg.gateway.tick_interval_ms},
    })
}

async fn request_loop(shard: &Rc<GatewayShard>, conn: &Rc<Conn>, rd: &mut WsReader, io: &Io) {
    let ended = drive(shard, conn, rd, io, |m| {
        if conn.is_closing() {
            return false;
        }
        match m {
            Msg::Text(t) => on_text(shard, conn, t),
            _ => {
                let e = GatewayError::InvalidFrame(
                    "binary frames are not supported; send JSON text".into(),
                );
                conn.push_frame(frame::res_err("invalid", &e.wire()));
            }
        }
        true
    })
    .await;
    match ended {
        Ended::Failed(WsError::TooBig(limit)) => {
            conn.fail(None, &GatewayError::FrameTooLarge { limit });
        }
        Ended::Failed(e) => {
            tracing::debug!(conn = conn.id, error = %e, "read ended");
            report(conn, &e);
        }
        Ended::Stopped | Ended::Closed => {}
    }
}

fn on_text(shard: &Rc<GatewayShard>, conn: &Rc<Conn>, text: &str) {
    // A request is handled without yielding (a run that waits goes on in its own task): one
    // wall-clock reading stamps its acceptance, its session, and an inline run's events.
    let _clock = shards::clock::WallFreeze::hold();
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
    if shard.limiter().enabled() {
        if let Err((limit, wait)) = shard
            .limiter()
            .check(conn.id, conn.peer.ip(), Instant::now())
        {
            shard.metrics().refusal("rate_limited");
            let e = crate::auth::access::rate_limited(limit, wait);
            conn.push_frame(frame::res_err(&req.id, &e.wire()));
            return;
        }
    }
    if req.method.as_str() == "connect" {
        let e = GatewayError::InvalidFrame("already connected".into());
        conn.push_frame(frame::res_err(&req.id, &e.wire()));
        return;
    }
    let method = match authz::authorize(&req.method, &auth.role, &auth.scopes) {
        Ok(m) => m,
        Err(e) => {
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
    };
    conn.unauthorized_streak.set(0);
    shard.metrics().request(method);
    let mut req = req;
    if auth.seed
        && method == Method::Chat(ChatMethod::Agent)
        && req.params.field("idempotencyKey") == FieldRef::Missing
    {
        let key = format!("seed:{}:{}", conn.conn_uuid, req.id);
        req.params.set_str("idempotencyKey", key);
    }
    if method == Method::Chat(ChatMethod::ChatSend)
        && matches!(&*auth.client.mode, "ui" | "webchat")
    {
        pause_after_chat_ack(shard, conn, &req.id);
    }
    let caller = Caller {
        conn: shard.conn_ref(conn.id),
        auth,
        received_us: shard.shared().mono_us(),
    };
    let reply = ReplyTo {
        conn: caller.conn,
        req_id: req.id,
    };
    crate::routing::dispatch(shard.clone(), caller, reply, method, req.params);
}

/// A UI client learns of its run from the answer to `chat.send`: the run's events wait
/// `gateway.uiChatAckPauseMs` after it ([`super::conn::Conn::hold_after_response`]).
fn pause_after_chat_ack(shard: &GatewayShard, conn: &Conn, req_id: &str) {
    let ms = shard.config().gateway.ui_chat_ack_pause_ms;
    if ms > 0 {
        conn.hold_after_response(req_id, Duration::from_millis(ms));
    }
}

/// Writes a batch (and its close frame, unless the close is 1006: the peer is gone). The
/// socket usually takes it all at once; only the rest waits, in a boxed future with its
/// timer (so the connection's task, which every idle connection keeps, does not carry that
/// state: the timer alone made it 168 bytes larger).
async fn write_batch(
    shard: &GatewayShard,
    conn: &Conn,
    io: &Io,
    batch: &Batch,
) -> std::io::Result<()> {
    let z = conn.deflate_bits().map(|window_bits| ws::Deflate {
        window_bits,
        threshold: shard.config().network.websocket.compression_threshold,
    });
    let Some(rest) = encode_and_write(conn, io, batch, z)? else {
        return Ok(());
    };
    Box::pin(drain_rest(shard, conn, io, rest)).await
}

/// Waits for a full socket to take `rest`, at most `gateway.writeTimeoutMs`.
async fn drain_rest(
    shard: &GatewayShard,
    conn: &Conn,
    io: &Io,
    rest: Vec<u8>,
) -> std::io::Result<()> {
    let limit = Duration::from_millis(shard.config().gateway.write_timeout_ms);
    let drained = glommio::timer::timeout(limit, async { Ok(ws::drain(io, rest).await) }).await;
    match drained {
        Ok(r) => r,
        Err(_) => {
            shard.metrics().refusal("write_timeout");
            tracing::warn!(shard = %shard.id(), conn = conn.id, peer = %conn.peer, timeout_ms = limit.as_millis() as u64,
                "peer stopped reading: connection dropped (gateway.writeTimeoutMs)");
            Err(std::io::ErrorKind::TimedOut.into())
        }
    }
}

fn encode_and_write(
    conn: &Conn,
    io: &Io,
    batch: &Batch,
    z: Option<ws::Deflate>,
) -> std::io::Result<Option<Vec<u8>>> {
    let seed = conn.is_seed();
    let close = batch.close.as_ref().filter(|(code, _)| *code != 1006);
    let mut bytes = 0;
    let rest = ws::write_now(io, |buf| {
        for f in &batch.frames {
            bytes += f.len();
            match f {
                Outbound::Text(t) if seed => {
                    if let Some(t) = super::seed::translate(t) {
                        ws::encode_z(buf, Out::Text(t.as_bytes()), z);
                    }
                }
                Outbound::Text(t) => ws::encode_z(buf, Out::Text(t.as_bytes()), z),
                Outbound::Binary(b) => ws::encode_z(buf, Out::Binary(b), z),
                Outbound::Pong(p) => ws::encode(buf, Out::Pong(p)),
                Outbound::Shared {
                    open,
                    seq,
                    state_version,
                } if seed => {
                    let t = Outbound::shared_text(open, *seq, *state_version);
                    if let Some(t) = super::seed::translate(&t) {
                        ws::encode_z(buf, Out::Text(t.as_bytes()), z);
                    }
                }
                Outbound::Shared {
                    open,
                    seq,
                    state_version,
                } => {
                    let tail = frame::event_tail(*seq, *state_version);
                    ws::encode_parts(buf, open.as_bytes(), tail.as_bytes(), z);
                }
            }
        }
        if let Some((code, reason)) = close {
            ws::encode(buf, Out::Close(*code, reason));
        }
    });
    conn.written(bytes);
    rest
}
