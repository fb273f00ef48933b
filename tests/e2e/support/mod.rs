//! Test harness: a real `shardgate serve` child process per test, and a small synchronous
//! WebSocket client (tungstenite over `std::net::TcpStream`) that speaks the gateway protocol.
//!
//! Every wait is a wait on a condition (a frame, a close, an exit, a log line) bounded by a
//! timeout; nothing sleeps and hopes.

pub(crate) mod discord;
pub(crate) mod telegram;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shardgate::auth::device::DeviceIdentity;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

/// The shared token most tests use.
pub(crate) const TOKEN: &str = "T";
pub(crate) const READ: &str = "operator.read";
pub(crate) const WRITE: &str = "operator.write";
pub(crate) const ADMIN: &str = "operator.admin";

/// How long a gateway may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Default wait for one frame.
pub(crate) const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

/// Wall clock, ms since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after epoch")
        .as_millis() as i64
}

/// `&["a","b"]` → `vec!["a","b"]` as owned strings.
pub(crate) fn scopes(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------------------------

/// How to launch a gateway.
#[derive(Debug, Default, Clone)]
pub(crate) struct Launch<'a> {
    /// Extra arguments after `serve --port P --state-dir D`.
    pub(crate) args: &'a [&'a str],
    /// JSON5 config text, written to a file and passed with `--config`.
    pub(crate) config: Option<&'a str>,
    /// `--port` (default 0).
    pub(crate) port: Option<u16>,
    /// `--state-dir` (default a fresh temp dir).
    pub(crate) state_dir: Option<&'a Path>,
    /// Environment for the process (the variables the gateway reads are cleared first).
    pub(crate) env: &'a [(&'a str, &'a str)],
}

/// What came of a launch.
#[derive(Debug)]
pub(crate) enum Started {
    /// The ready line was printed.
    Ready(Gateway),
    /// The process exited before it was ready.
    Exited { status: ExitStatus, stderr: String },
}

/// A running `shardgate serve`. SIGKILLed on drop.
#[derive(Debug)]
pub(crate) struct Gateway {
    child: Child,
    pub(crate) port: u16,
    pub(crate) pid: u32,
    pub(crate) state_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
    exit: Option<ExitStatus>,
    _dir: tempfile::TempDir,
}

fn spawn_reader<R: Read + Send + 'static>(r: R, sink: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => sink.lock().unwrap().push_str(&line),
            }
        }
    })
}

impl Gateway {
    /// Starts `serve --port 0 --state-dir <temp> ARGS` (with `--config` when given) and waits
    /// for the ready line. Panics with the child's stderr when it does not become ready.
    pub(crate) fn start(args: &[&str], config_json5: Option<&str>) -> Gateway {
        match Gateway::launch(Launch {
            args,
            config: config_json5,
            ..Default::default()
        }) {
            Started::Ready(g) => g,
            Started::Exited { status, stderr } => {
                panic!("gateway exited before ready ({status}); stderr:\n{stderr}")
            }
        }
    }

    /// The usual test gateway: token [`TOKEN`], 2 shards, optional config.
    pub(crate) fn standard(config_json5: Option<&str>) -> Gateway {
        Gateway::start(&["--token", TOKEN, "--shards", "2"], config_json5)
    }

    /// Launches a gateway and reports whether it became ready or exited.
    pub(crate) fn launch(l: Launch<'_>) -> Started {
        let dir = tempfile::tempdir().expect("temp dir");
        let state_dir = match l.state_dir {
            Some(d) => d.to_path_buf(),
            None => dir.path().join("state"),
        };
        let port = l.port.unwrap_or(0).to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardgate"));
        cmd.arg("serve")
            .arg("--port")
            .arg(&port)
            .arg("--state-dir")
            .arg(&state_dir);
        if let Some(c) = l.config {
            let p = dir.path().join("config.json5");
            std::fs::write(&p, c).expect("write config");
            cmd.arg("--config").arg(&p);
        }
        cmd.args(l.args);
        for k in [
            "SHARDGATE_TOKEN",
            "OPENCLAW_GATEWAY_TOKEN",
            "OPENCLAW_GATEWAY_PASSWORD",
            "SHARDGATE_STATE_DIR",
            "SHARDGATE_PORT",
            "SHARDGATE_SHARDS",
            "SHARDGATE_LOG",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(l.env.iter().copied());
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn shardgate");
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_thread = spawn_reader(child.stderr.take().unwrap(), stderr.clone());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        // The receiver may be gone after the ready line: keep draining.
                        let _ = tx.send(line.clone());
                    }
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("shardgate ready ") {
                        let field = |k: &str| {
                            rest.split_whitespace()
                                .find_map(|kv| kv.strip_prefix(k))
                                .unwrap_or_else(|| panic!("ready line without {k}: {line}"))
                                .to_string()
                        };
                        let listen = field("listen=");
                        let port: u16 = listen
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or_else(|| panic!("bad listen in ready line: {line}"));
                        let announced: u32 = field("pid=").parse().expect("pid in ready line");
                        assert_eq!(announced, pid, "ready line pid is the child's pid");
                        return Started::Ready(Gateway {
                            child,
                            port,
                            pid,
                            state_dir,
                            stderr,
                            stderr_thread: Some(stderr_thread),
                            exit: None,
                            _dir: dir,
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting.
                    let status = wait_child(&mut child, READY_TIMEOUT).unwrap_or_else(|| {
                        let _ = child.kill();
                        child.wait().expect("wait")
                    });
                    let _ = stderr_thread.join();
                    let text = stderr.lock().unwrap().clone();
                    return Started::Exited {
                        status,
                        stderr: text,
                    };
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = stderr_thread.join();
                    let text = stderr.lock().unwrap().clone();
                    panic!("gateway not ready within {READY_TIMEOUT:?}; stderr:\n{text}");
                }
            }
        }
    }

    /// Sends SIGTERM (graceful drain and stop).
    pub(crate) fn terminate(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {}", self.pid);
    }

    /// Waits for the process to exit; `None` on timeout.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = wait_child(&mut self.child, timeout);
        }
        self.exit
    }

    /// Everything the process wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle`.
    pub(crate) fn wait_stderr_contains(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A WebSocket that has read its `connect.challenge` and nothing else.
    pub(crate) fn raw(&self) -> Client {
        Client::connect_raw(self.port)
    }

    /// An operator connected with [`TOKEN`] and `scopes` (no device).
    pub(crate) fn operator(&self, scopes: &[&str]) -> Client {
        Client::connect_operator(self.port, Some(TOKEN), scopes)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        // A failing test shows what the gateway logged last: a flake that happens only under
        // load can then be read from the one run that caught it.
        if std::thread::panicking() {
            let log = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- gateway stderr, last {} of {} lines ---\n{}",
                tail.len(),
                lines.len(),
                tail.join("\n")
            );
        }
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `serve` expecting it to refuse to start; returns (status, stderr). Panics if it
/// becomes ready instead.
pub(crate) fn expect_start_failure(l: Launch<'_>) -> (ExitStatus, String) {
    match Gateway::launch(l) {
        Started::Exited { status, stderr } => (status, stderr),
        Started::Ready(g) => panic!(
            "gateway started (port {}) but was expected to refuse; stderr:\n{}",
            g.port,
            g.stderr()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP
// ---------------------------------------------------------------------------------------------

/// A raw HTTP exchange: writes `request` and reads until the server closes.
pub(crate) fn http_raw(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(FRAME_TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).expect("write request");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "reading HTTP response: {e}; got so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET path` → (status code, status line, body).
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String, String) {
    let text = http_raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    );
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let status_line = head.lines().next().unwrap_or("").to_string();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    (code, status_line, body.to_string())
}

/// Sends a hand-written WebSocket upgrade for `/` and returns the response head (status line
/// first) and, unless the upgrade succeeded (101), the body up to the server's close.
pub(crate) fn raw_upgrade(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(FRAME_TIMEOUT)).unwrap();
    s.write_all(upgrade_request(port).as_bytes())
        .expect("write request");
    let mut out = Vec::new();
    let mut buf = [0u8; 1];
    // Byte by byte up to the end of the head: nothing after it is consumed.
    while !out.ends_with(b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => out.push(buf[0]),
            Err(e) => panic!(
                "reading upgrade response: {e}; got so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    let head = String::from_utf8_lossy(&out).into_owned();
    if head.starts_with("HTTP/1.1 101") {
        return head;
    }
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    head + &rest
}

/// A WebSocket upgrade request for `/`, written by hand.
pub(crate) fn upgrade_request(port: u16) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Connect parameters
// ---------------------------------------------------------------------------------------------

/// The fields of `connect.params` a test varies.
#[derive(Debug, Clone)]
pub(crate) struct ConnectOpts<'a> {
    pub(crate) token: Option<&'a str>,
    pub(crate) device_token: Option<&'a str>,
    pub(crate) role: &'a str,
    pub(crate) scopes: Vec<String>,
    pub(crate) client_id: &'a str,
    pub(crate) client_mode: &'a str,
    pub(crate) platform: &'a str,
    pub(crate) device_family: Option<&'a str>,
    pub(crate) min_protocol: i64,
    pub(crate) max_protocol: i64,
}

impl Default for ConnectOpts<'_> {
    fn default() -> Self {
        ConnectOpts {
            token: Some(TOKEN),
            device_token: None,
            role: "operator",
            scopes: Vec::new(),
            client_id: "cli",
            client_mode: "cli",
            platform: "linux",
            device_family: Some("Linux"),
            min_protocol: 4,
            max_protocol: 4,
        }
    }
}

impl ConnectOpts<'_> {
    /// The token a device signature covers: `token ?? deviceToken ?? ""`.
    pub(crate) fn signed_token(&self) -> &str {
        self.token.or(self.device_token).unwrap_or("")
    }

    /// `connect.params` without a device block.
    pub(crate) fn params(&self) -> Value {
        let mut client = json!({
            "id": self.client_id, "version": "2026.9.6", "platform": self.platform,
            "mode": self.client_mode, "instanceId": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(f) = self.device_family {
            client["deviceFamily"] = json!(f);
        }
        let mut auth = json!({});
        if let Some(t) = self.token {
            auth["token"] = json!(t);
        }
        if let Some(t) = self.device_token {
            auth["deviceToken"] = json!(t);
        }
        json!({
            "minProtocol": self.min_protocol, "maxProtocol": self.max_protocol,
            "client": client, "caps": [], "auth": auth,
            "role": self.role, "scopes": self.scopes,
        })
    }

    /// The v3-signed device block for this connect, over `nonce` and `signed_at`.
    pub(crate) fn device_v3(&self, id: &DeviceIdentity, nonce: &str, signed_at: i64) -> Value {
        id.sign_connect(
            nonce,
            signed_at,
            self.client_id,
            self.client_mode,
            self.role,
            &self.scopes,
            self.signed_token(),
            Some(self.platform),
            self.device_family,
        )
    }

    /// The v2-signed device block.
    pub(crate) fn device_v2(&self, id: &DeviceIdentity, nonce: &str, signed_at: i64) -> Value {
        id.sign_connect_v2(
            nonce,
            signed_at,
            self.client_id,
            self.client_mode,
            self.role,
            &self.scopes,
            self.signed_token(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The WebSocket client
// ---------------------------------------------------------------------------------------------

/// One received item.
#[derive(Debug)]
enum Incoming {
    Json(Value),
    Binary,
    Close(u16, String),
}

/// A synchronous gateway client.
pub(crate) struct Client {
    ws: WebSocket<TcpStream>,
    /// The `connect.challenge` frame.
    pub(crate) challenge: Value,
    /// Its nonce.
    pub(crate) nonce: String,
    /// Its ts.
    pub(crate) challenge_ts: i64,
    /// The `hello-ok` payload once connected (Null before).
    pub(crate) hello: Value,
    /// Every text frame received after the challenge, in order.
    pub(crate) log: Vec<Value>,
    /// Every event received after the challenge, in order (a subset of `log`).
    pub(crate) events: Vec<Value>,
    event_cursor: usize,
    pending: VecDeque<Value>,
    next_id: u64,
    closed: Option<(u16, String)>,
    /// Wait per frame.
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("nonce", &self.nonce)
            .finish()
    }
}

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

impl Client {
    /// Opens the socket, upgrades, and reads the `connect.challenge`.
    pub(crate) fn connect_raw(port: u16) -> Client {
        Client::connect_raw_at(IpAddr::from([127, 0, 0, 1]), port)
    }

    /// [`Client::connect_raw`] to `ip` (e.g. the LAN address, to be a non-loopback peer).
    pub(crate) fn connect_raw_at(ip: IpAddr, port: u16) -> Client {
        Client::challenged(Client::upgrade_at(ip, port))
    }

    /// [`Client::connect_raw`] with an `Origin` header on the upgrade, as a browser sends.
    pub(crate) fn connect_raw_with_origin(port: u16, origin: &str) -> Client {
        Client::connect_raw_with_headers(port, &[("Origin", origin)])
    }

    /// [`Client::connect_raw`] with these headers on the upgrade request.
    pub(crate) fn connect_raw_with_headers(port: u16, headers: &[(&str, &str)]) -> Client {
        let ip = IpAddr::from([127, 0, 0, 1]);
        Client::challenged(Client::upgrade_with_headers(ip, port, headers))
    }

    /// Reads the `connect.challenge` off a fresh upgrade.
    fn challenged(mut c: Client) -> Client {
        let ch = c.recv_json();
        assert_eq!(ch["type"], "event", "first frame is an event: {ch}");
        assert_eq!(
            ch["event"], "connect.challenge",
            "first frame is connect.challenge: {ch}"
        );
        c.nonce = ch["payload"]["nonce"]
            .as_str()
            .unwrap_or_else(|| panic!("challenge nonce: {ch}"))
            .to_string();
        c.challenge_ts = ch["payload"]["ts"]
            .as_i64()
            .unwrap_or_else(|| panic!("challenge ts: {ch}"));
        c.challenge = ch;
        // The challenge is not part of the post-hello log.
        c.log.clear();
        c.events.clear();
        c
    }

    /// Opens the socket to `ip:port` and upgrades; reads nothing.
    pub(crate) fn upgrade_at(ip: IpAddr, port: u16) -> Client {
        Client::upgrade_with_headers(ip, port, &[])
    }

    /// [`Client::upgrade_at`], with an `Origin` header when given.
    fn upgrade_with_headers(ip: IpAddr, port: u16, headers: &[(&str, &str)]) -> Client {
        use tungstenite::client::IntoClientRequest;
        let stream = TcpStream::connect((ip, port)).expect("tcp connect");
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let url = format!("ws://{}/", SocketAddr::new(ip, port));
        let mut req = url.into_client_request().expect("ws request");
        for (name, value) in headers {
            let name: tungstenite::http::HeaderName = name.parse().expect("header name");
            req.headers_mut()
                .insert(name, value.parse().expect("header value"));
        }
        let (ws, resp) = match tungstenite::client(req, stream) {
            Ok(x) => x,
            Err(e) => panic!("websocket upgrade failed: {e}"),
        };
        assert_eq!(resp.status().as_u16(), 101);
        Client::over(ws)
    }

    /// A client on an upgraded socket, nothing read yet.
    fn over(ws: WebSocket<TcpStream>) -> Client {
        Client {
            ws,
            challenge: Value::Null,
            nonce: String::new(),
            challenge_ts: 0,
            hello: Value::Null,
            log: Vec::new(),
            events: Vec::new(),
            event_cursor: 0,
            pending: VecDeque::new(),
            next_id: 1,
            closed: None,
            timeout: FRAME_TIMEOUT,
        }
    }

    /// A full handshake as an operator without a device; panics unless hello-ok.
    pub(crate) fn connect_operator(port: u16, token: Option<&str>, scopes: &[&str]) -> Client {
        let o = ConnectOpts {
            token,
            scopes: crate::support::scopes(scopes),
            ..Default::default()
        };
        Client::connect_with(port, &o)
    }

    /// [`Client::connect_operator`] that says why instead of panicking (a gateway that may
    /// have just died).
    pub(crate) fn try_connect_operator(port: u16, scopes: &[&str]) -> Result<Client, String> {
        use tungstenite::client::IntoClientRequest;
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).ok();
        let url = format!("ws://127.0.0.1:{port}/");
        let req = url.into_client_request().map_err(|e| e.to_string())?;
        let (ws, _) = tungstenite::client(req, stream).map_err(|e| e.to_string())?;
        let mut c = Client::over(ws);
        match c.read_one(Duration::from_secs(5))? {
            Incoming::Json(v) if v["event"] == "connect.challenge" => {}
            other => return Err(format!("no challenge: {other:?}")),
        }
        let o = ConnectOpts {
            token: Some(TOKEN),
            scopes: crate::support::scopes(scopes),
            ..Default::default()
        };
        c.send_json(&json!({"type": "req", "id": "c1", "method": "connect", "params": o.params()}));
        let res = c.try_wait_res("c1", Duration::from_secs(5))?;
        if res["ok"] != true {
            return Err(format!("connect refused: {res}"));
        }
        c.hello = res["payload"].clone();
        c.log.clear();
        c.events.clear();
        Ok(c)
    }

    /// A full handshake with `o` (no device); panics unless hello-ok.
    pub(crate) fn connect_with(port: u16, o: &ConnectOpts<'_>) -> Client {
        let mut c = Client::connect_raw(port);
        let res = c.handshake(o.params());
        assert_eq!(res["ok"], true, "connect refused: {res}");
        c
    }

    /// A full handshake with a v3-signed device (signedAt = challenge ts); panics unless
    /// hello-ok.
    pub(crate) fn connect_with_device(
        port: u16,
        identity: &DeviceIdentity,
        o: &ConnectOpts<'_>,
    ) -> Client {
        let mut c = Client::connect_raw(port);
        let mut p = o.params();
        p["device"] = o.device_v3(identity, &c.nonce.clone(), c.challenge_ts);
        let res = c.handshake(p);
        assert_eq!(res["ok"], true, "device connect refused: {res}");
        c
    }

    /// Sends `connect` with `params` and returns its `res` frame; keeps the payload as
    /// `hello` when ok.
    pub(crate) fn handshake(&mut self, params: Value) -> Value {
        self.send_json(&json!({"type": "req", "id": "c1", "method": "connect", "params": params}));
        let res = self.wait_res("c1");
        if res["ok"] == true {
            self.hello = res["payload"].clone();
        }
        res
    }

    // ----- sending -----

    pub(crate) fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    pub(crate) fn try_send_text(&mut self, text: &str) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::text(text.to_string()))
    }

    pub(crate) fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string());
    }

    pub(crate) fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    /// Sends a request and returns its id without waiting.
    pub(crate) fn call(&mut self, method: &str, params: Value) -> String {
        let id = format!("r{}", self.next_id);
        self.next_id += 1;
        self.send_json(&json!({"type": "req", "id": id, "method": method, "params": params}));
        id
    }

    /// [`Client::call`] that says why the send failed instead of panicking.
    pub(crate) fn try_call(&mut self, method: &str, params: Value) -> Result<String, String> {
        let id = format!("r{}", self.next_id);
        self.next_id += 1;
        let frame = json!({"type": "req", "id": id, "method": method, "params": params});
        self.try_send_text(&frame.to_string())
            .map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// Sends a request and returns its (first) `res` frame. Events seen meanwhile are kept in
    /// `events`; other responses are kept for [`Client::wait_res`].
    pub(crate) fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.call(method, params);
        self.wait_res(&id)
    }

    /// Like [`Client::request`] but asserts `ok:true` and returns the payload.
    pub(crate) fn request_ok(&mut self, method: &str, params: Value) -> Value {
        let res = self.request(method, params);
        assert_eq!(res["ok"], true, "{method} failed: {res}");
        res["payload"].clone()
    }

    /// Like [`Client::request`] but asserts `ok:false` and returns the `error` object.
    pub(crate) fn request_err(&mut self, method: &str, params: Value) -> Value {
        let res = self.request(method, params);
        assert_eq!(res["ok"], false, "{method} should fail: {res}");
        res["error"].clone()
    }

    // ----- receiving -----

    /// The socket itself, to watch how bytes arrive (read boundaries). Only once nothing is
    /// on its way: bytes the client has buffered already are not seen here.
    pub(crate) fn socket(&mut self) -> &mut TcpStream {
        assert!(self.pending.is_empty(), "frames read and not yet consumed");
        self.ws.get_mut()
    }

    fn read_one(&mut self, timeout: Duration) -> Result<Incoming, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((code, reason)) = &self.closed {
                return Ok(Incoming::Close(*code, reason.clone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no frame within {timeout:?}"));
            }
            self.ws.get_mut().set_read_timeout(Some(left)).ok();
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server sent non-JSON text {t:?}: {e}"));
                    assert!(v.is_object(), "server frame is not an object: {v}");
                    self.log.push(v.clone());
                    if v["type"] == "event" {
                        self.events.push(v.clone());
                    }
                    return Ok(Incoming::Json(v));
                }
                Ok(Message::Binary(_)) => return Ok(Incoming::Binary),
                Ok(Message::Close(f)) => {
                    let (code, reason) = match f {
                        Some(f) => (u16::from(f.code), f.reason.as_str().to_string()),
                        None => (1005, String::new()),
                    };
                    let _ = self.ws.flush();
                    self.closed = Some((code, reason.clone()));
                    return Ok(Incoming::Close(code, reason));
                }
                Ok(_) => continue,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(format!("connection error: {e}")),
            }
        }
    }

    fn next_item(&mut self, what: &str) -> Incoming {
        match self.read_one(self.timeout) {
            Ok(i) => i,
            Err(e) => panic!(
                "waiting for {what}: {e}; last frames: {}",
                self.tail_of_log()
            ),
        }
    }

    fn tail_of_log(&self) -> String {
        let n = self.log.len();
        self.log[n.saturating_sub(6)..]
            .iter()
            .map(|v| {
                let s = v.to_string();
                if s.len() > 400 {
                    format!("{}…", &s[..400])
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("\n  ")
    }

    /// The next text frame, whatever it is.
    pub(crate) fn recv_json(&mut self) -> Value {
        match self.next_item("a frame") {
            Incoming::Json(v) => v,
            Incoming::Binary => panic!("server sent a binary frame"),
            Incoming::Close(c, r) => panic!(
                "connection closed ({c} {r:?}) while waiting for a frame; last frames: {}",
                self.tail_of_log()
            ),
        }
    }

    /// The next `res` with `id` within `timeout`, or why not (a closed or broken
    /// connection, silence): for clients that outlive a gateway and resend elsewhere.
    pub(crate) fn try_wait_res(&mut self, id: &str, timeout: Duration) -> Result<Value, String> {
        if let Some(i) = self.pending.iter().position(|r| r["id"] == id) {
            return Ok(self.pending.remove(i).unwrap());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_one(left)? {
                Incoming::Json(v) if v["type"] == "res" => {
                    if v["id"] == id {
                        return Ok(v);
                    }
                    self.pending.push_back(v);
                }
                Incoming::Json(_) | Incoming::Binary => {}
                Incoming::Close(c, r) => return Err(format!("closed ({c} {r:?})")),
            }
        }
    }

    /// The next `res` with `id` (earlier ones that arrived meanwhile included).
    pub(crate) fn wait_res(&mut self, id: &str) -> Value {
        if let Some(i) = self.pending.iter().position(|r| r["id"] == id) {
            return self.pending.remove(i).unwrap();
        }
        loop {
            match self.next_item(&format!("res {id}")) {
                Incoming::Json(v) if v["type"] == "res" => {
                    if v["id"] == id {
                        return v;
                    }
                    self.pending.push_back(v);
                }
                Incoming::Json(_) | Incoming::Binary => {}
                Incoming::Close(c, r) => panic!(
                    "connection closed ({c} {r:?}) while waiting for res {id}; last frames: {}",
                    self.tail_of_log()
                ),
            }
        }
    }

    /// The next event (after the last one returned by this method) that `pred` accepts.
    pub(crate) fn wait_event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        while self.event_cursor < self.events.len() {
            let i = self.event_cursor;
            self.event_cursor += 1;
            if pred(&self.events[i]) {
                return self.events[i].clone();
            }
        }
        loop {
            match self.next_item(what) {
                Incoming::Json(v) if v["type"] == "res" => self.pending.push_back(v),
                Incoming::Json(v) => {
                    self.event_cursor = self.events.len();
                    if v["type"] == "event" && pred(&v) {
                        return v;
                    }
                }
                Incoming::Binary => {}
                Incoming::Close(c, r) => panic!(
                    "connection closed ({c} {r:?}) while waiting for {what}; last frames: {}",
                    self.tail_of_log()
                ),
            }
        }
    }

    /// The next event named `name`.
    pub(crate) fn wait_event_named(&mut self, name: &str) -> Value {
        let n = name.to_string();
        self.wait_event(&format!("event {name}"), move |e| e["event"] == n.as_str())
    }

    /// Reads until the server's close frame; returns (code, reason). Frames before it are
    /// kept (responses for [`Client::wait_res`]).
    pub(crate) fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next_item("the close frame") {
                Incoming::Json(v) if v["type"] == "res" => self.pending.push_back(v),
                Incoming::Json(_) | Incoming::Binary => {}
                Incoming::Close(c, r) => return (c, r),
            }
        }
    }

    /// Every event named `name` received so far.
    pub(crate) fn events_named(&self, name: &str) -> Vec<Value> {
        self.events
            .iter()
            .filter(|e| e["event"] == name)
            .cloned()
            .collect()
    }

    /// Outer `seq` of every event received after the challenge, in order.
    pub(crate) fn event_seqs(&self) -> Vec<u64> {
        self.events
            .iter()
            .map(|e| {
                e["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("event without seq: {e}"))
            })
            .collect()
    }

    /// Index in `log` of the `res` frames with `id`.
    pub(crate) fn log_positions_of_res(&self, id: &str) -> Vec<usize> {
        self.log
            .iter()
            .enumerate()
            .filter(|(_, v)| v["type"] == "res" && v["id"] == id)
            .map(|(i, _)| i)
            .collect()
    }

    /// The shard this connection landed on (`hello-ok.server.shard`).
    pub(crate) fn shard(&self) -> usize {
        self.hello["server"]["shard"]
            .as_u64()
            .unwrap_or_else(|| panic!("hello-ok without server.shard: {}", self.hello))
            as usize
    }

    /// Runs `agent` to the end: returns (accepted payload, final res frame).
    pub(crate) fn run_agent(
        &mut self,
        session_key: &str,
        message: &str,
        key: &str,
    ) -> (Value, Value) {
        let id = self.call(
            "agent",
            json!({"message": message, "sessionKey": session_key, "idempotencyKey": key}),
        );
        let accepted = self.wait_res(&id);
        assert_eq!(accepted["ok"], true, "agent not accepted: {accepted}");
        assert_eq!(accepted["payload"]["status"], "accepted", "{accepted}");
        let fin = self.wait_res(&id);
        (accepted["payload"].clone(), fin)
    }
}

/// This host's non-loopback IPv4 address (the source of the default route), if any. A
/// client connecting to it is a non-loopback peer of a gateway bound to `lan`.
pub(crate) fn lan_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connect only picks the route and source address.
    s.connect("8.8.8.8:53").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Session keys `agent:main:<prefix>-<i>` owned by shard 0 and by shard 1 of 2.
pub(crate) fn keys_on_each_shard(prefix: &str) -> [String; 2] {
    let mut found: [Option<String>; 2] = [None, None];
    for i in 0.. {
        let k = format!("agent:main:{prefix}-{i}");
        let o = shards::route::owner(&k, 2).0;
        if found[o].is_none() {
            found[o] = Some(k);
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.map(Option::unwrap)
}

/// Opens operator connections until there is at least one on each of the 2 shards (at least
/// `min` in all); returns them grouped by shard.
pub(crate) fn operators_on_each_shard(
    gw: &Gateway,
    scopes: &[&str],
    min: usize,
) -> [Vec<Client>; 2] {
    let mut by: [Vec<Client>; 2] = [Vec::new(), Vec::new()];
    let mut opened = 0;
    while opened < min || by.iter().any(Vec::is_empty) {
        assert!(
            opened < 64,
            "64 connections all landed on one shard: SO_REUSEPORT spreading broken?"
        );
        let c = gw.operator(scopes);
        let s = c.shard();
        assert!(s < 2, "shard index {s} out of range for --shards 2");
        by[s].push(c);
        opened += 1;
    }
    by
}

/// Connects a node (role `node`, a fresh device identity) to `port` declaring `commands`
/// (caps `camera`, nodeType `raspberry-pi`); returns it and its node id. Panics unless
/// hello-ok.
pub(crate) fn connect_node(port: u16, commands: &[&str]) -> (Client, String) {
    let id = DeviceIdentity::generate();
    let c = connect_node_as(port, &id, commands, "raspberry-pi");
    (c, id.device_id())
}

/// Connects a node with a given device identity (so it can reconnect as the same node),
/// declaring `commands` (caps `camera`) and `node_type`. Panics unless hello-ok.
pub(crate) fn connect_node_as(
    port: u16,
    id: &DeviceIdentity,
    commands: &[&str],
    node_type: &str,
) -> Client {
    let o = ConnectOpts {
        role: "node",
        client_id: "node-host",
        client_mode: "node",
        ..Default::default()
    };
    let mut c = Client::connect_raw(port);
    let mut p = o.params();
    p["commands"] = json!(commands);
    p["caps"] = json!(["camera"]);
    p["nodeType"] = json!(node_type);
    p["device"] = o.device_v3(id, &c.nonce.clone(), c.challenge_ts);
    let res = c.handshake(p);
    assert_eq!(res["ok"], true, "node connect refused: {res}");
    c
}
