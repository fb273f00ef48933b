//! [`RedisServer`]: a private `redis-server` for tests (feature `test-server`).
//!
//! Every test starts its own server on a free port with its own data directory, never port
//! 6379 or a system service, so tests run in parallel and leave nothing behind. Persistence is
//! the one shardgate relies on: `--appendonly yes --appendfsync always` (every acknowledged
//! write is on disk), no RDB snapshots. [`RedisServer::kill9`] and [`RedisServer::restart`]
//! (same port, same directory) are for durability tests. The server is killed and its
//! directory removed on drop.
//!
//! This is blocking code (std process and sockets): call it outside an executor or accept a
//! few milliseconds of blocking in a test.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a starting server may take to answer `PING` (a restart replays the AOF first).
const READY_WITHIN: Duration = Duration::from_secs(10);
/// Attempts at a free port (another process may take the one we picked before redis binds).
const PORT_ATTEMPTS: usize = 5;

/// A running (or killed, until restarted) `redis-server` of one test.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` from `PATH` (or `$REDIS_SERVER`) on a free port with a fresh
    /// directory, and returns once it answers `PING`.
    pub fn start() -> io::Result<RedisServer> {
        let binary = find_binary()?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let mut server = RedisServer {
                binary: binary.clone(),
                port: free_port()?,
                dir: tempfile::Builder::new()
                    .prefix("shardgate-redis-")
                    .tempdir()?,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// `127.0.0.1:port`, for [`Options::new`](crate::Options::new).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory (the AOF lives under it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `SIGKILL`: no shutdown, no final fsync; only what was already on disk survives.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (killing it first if it runs),
    /// and returns once it answers `PING` (after replaying its AOF).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill9();
        self.spawn()
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = self.dir.path().join("redis.log");
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {:?}: {e}", self.binary)))?;
        self.child = Some(child);
        let ready = self.wait_ready(Instant::now() + READY_WITHIN);
        if ready.is_err() {
            self.kill9();
        }
        ready
    }

    /// Waits for `+PONG` (not `-LOADING`) with a deadline; fails early if the process exited.
    fn wait_ready(&mut self, deadline: Instant) -> io::Result<()> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(io::Error::other(format!(
                        "redis-server exited ({status}) before answering PING; its log:\n{}",
                        self.log_tail()
                    )));
                }
            }
            if ping(addr).unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-server did not answer PING within {READY_WITHIN:?}; its log:\n{}",
                        self.log_tail()
                    ),
                ));
            }
            // The next probe; the loop is bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One `PING` over a plain socket: true on `+PONG`.
fn ping(addr: SocketAddr) -> io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    Ok(buf[..n].starts_with(b"+PONG"))
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn find_binary() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("REDIS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "redis-server is not on PATH: install it (Debian: `apt-get install redis-server`; \
                 .ci/run does) or set REDIS_SERVER to its path",
            )
        })
}
