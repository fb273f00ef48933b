//! Opening one gateway connection the way a real client does: TCP (optionally from a chosen
//! 127.0.0.x source address), WebSocket upgrade, `connect.challenge`, `connect` with the shared
//! token and, unless disabled, a signed Ed25519 device proof (a token-only operator is admitted
//! with no scopes, so only `health` would work without it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use shardgate::auth::device::DeviceIdentity;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A connected, authenticated socket.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `ws://host:port/path` as given.
    pub(crate) url: String,
    /// Resolved address of the host.
    pub(crate) addr: SocketAddr,
    /// Shared token.
    pub(crate) token: String,
    /// Spread source addresses over 127.0.0.F ..= 127.0.0.(F+N-1) (loopback targets only).
    pub(crate) source_ips: u8,
    /// F above: the first source address's last byte (1 unless this process is one of a
    /// fleet: each takes addresses of its own).
    pub(crate) source_ip_first: u8,
    /// tungstenite read buffer (eagerly allocated per connection).
    pub(crate) read_buffer: usize,
    /// Whole-handshake timeout.
    pub(crate) timeout: Duration,
}

impl Target {
    /// Parses `ws://host:port/path`.
    pub(crate) fn new(
        url: &str,
        token: &str,
        source_ips: u8,
        source_ip_first: u8,
        read_buffer: usize,
    ) -> Result<Self, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("only ws:// URLs are supported: {url}"))?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
            .next()
            .ok_or_else(|| format!("no address for {hostport}"))?;
        Ok(Target {
            url: url.to_owned(),
            addr,
            token: token.to_owned(),
            source_ips: source_ips.max(1),
            source_ip_first: source_ip_first.max(1),
            read_buffer,
            timeout: Duration::from_secs(15),
        })
    }
}

#[derive(Deserialize)]
struct Challenge {
    event: Option<String>,
    payload: Option<ChallengePayload>,
}

#[derive(Deserialize)]
struct ChallengePayload {
    nonce: String,
}

#[derive(Deserialize)]
struct HelloRes {
    #[serde(rename = "type")]
    kind: String,
    ok: Option<bool>,
    error: Option<serde_json::Value>,
    payload: Option<serde_json::Value>,
}

/// A handshaken connection and the gateway shard that holds it (`hello-ok.server.shard`;
/// `None` from servers that do not say, like the baseline).
pub(crate) type Connected = (Ws, Option<usize>);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(c))) => return Err(format!("closed during handshake: {c:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("handshake read: {e}")),
            None => return Err("eof during handshake".into()),
        }
    }
}

/// The command the built-in node clients declare and answer (`--workload invoke`; they echo
/// the params whatever the command). A command of a Linux node's default allowlist, so a
/// gateway with OpenClaw's node command policy admits it without configuration.
pub(crate) const NODE_COMMAND: &str = "system.which";

/// Who a connection is.
#[derive(Clone, Copy)]
pub(crate) enum Role<'a> {
    /// An operator (`operator.admin`), with a device proof when given one.
    Operator(Option<&'a DeviceIdentity>),
    /// A node with its own device identity, declaring [`NODE_COMMAND`].
    Node(&'a DeviceIdentity),
}

/// Connects connection number `idx` and completes the OpenClaw handshake.
pub(crate) async fn connect(
    t: &Target,
    idx: usize,
    device: Option<&DeviceIdentity>,
) -> Result<Connected, String> {
    connect_as(t, idx, Role::Operator(device)).await
}

/// [`connect`] with any role.
pub(crate) async fn connect_as(
    t: &Target,
    idx: usize,
    role: Role<'_>,
) -> Result<Connected, String> {
    tokio::time::timeout(t.timeout, connect_inner(t, idx, role))
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

async fn connect_inner(t: &Target, idx: usize, role: Role<'_>) -> Result<Connected, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if (t.source_ips > 1 || t.source_ip_first > 1) && t.addr.ip().is_loopback() {
        let spread = (idx % usize::from(t.source_ips)) as u8;
        let last = t.source_ip_first.saturating_add(spread);
        sock.bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))
        .map_err(|e| format!("bind 127.0.0.{last}: {e}"))?;
    }
    let stream = sock
        .connect(t.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", t.addr))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let cfg = WebSocketConfig::default().read_buffer_size(t.read_buffer);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(t.url.as_str(), stream, Some(cfg))
            .await
            .map_err(|e| format!("upgrade: {e}"))?;

    let first = next_text(&mut ws).await?;
    let ch: Challenge =
        serde_json::from_str(&first).map_err(|e| format!("challenge: {e}: {first}"))?;
    let nonce = match (ch.event.as_deref(), ch.payload) {
        (Some("connect.challenge"), Some(p)) => p.nonce,
        _ => return Err(format!("expected connect.challenge, got {first}")),
    };

    let (role_name, client_id, mode, scopes, device) = match role {
        Role::Operator(d) => (
            "operator",
            "cli",
            "cli",
            vec!["operator.admin".to_string()],
            d,
        ),
        Role::Node(d) => ("node", "node-host", "node", Vec::new(), Some(d)),
    };
    let mut params = serde_json::json!({
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": client_id, "version": "1", "platform": "linux", "deviceFamily": "Linux", "mode": mode},
        "role": role_name,
        "scopes": scopes,
        "auth": {"token": t.token},
    });
    if let Role::Node(_) = role {
        params["commands"] = serde_json::json!([NODE_COMMAND]);
    }
    if let Some(d) = device {
        params["device"] = d.sign_connect(
            &nonce,
            now_ms(),
            client_id,
            mode,
            role_name,
            &scopes,
            &t.token,
            Some("linux"),
            Some("Linux"),
        );
    }
    let req = serde_json::json!({"type": "req", "id": "c1", "method": "connect", "params": params});
    ws.send(Message::text(req.to_string()))
        .await
        .map_err(|e| format!("send connect: {e}"))?;
    // Events (presence and the like) may precede the answer; the answer is the first `res`.
    let (text, res) = loop {
        let text = next_text(&mut ws).await?;
        let res: HelloRes =
            serde_json::from_str(&text).map_err(|e| format!("hello: {e}: {text}"))?;
        if res.kind == "res" {
            break (text, res);
        }
    };
    if res.ok != Some(true) {
        return Err(format!(
            "connect refused: {}",
            res.error.map(|e| e.to_string()).unwrap_or(text)
        ));
    }
    let shard = res
        .payload
        .as_ref()
        .and_then(|p| p["server"]["shard"].as_u64())
        .map(|s| s as usize);
    Ok((ws, shard))
}
