//! [`Conn`]: one TCP connection to Redis, driven by two tasks around a [`Pipeline`].
//!
//! Callers queue commands with [`Conn::send`] (encoded at once into the pipeline's output
//! buffer) and await a one-shot reply. One writer task writes whatever is queued, so commands
//! from many callers between two writes leave in one `send`; one reader task feeds what arrives
//! to the pipeline and completes the oldest requests first. Neither task holds a `RefCell`
//! borrow across an await: the socket is borrowed inside one poll only.
//!
//! Invariant: a request is completed exactly once — by its reply, or with
//! [`Error::Disconnected`] when the connection dies (EOF, I/O error, protocol error, or
//! [`Conn::close`]). Dying is one step (`die`): mark dead, fail everything pending, wake the
//! writer and every waiter. Nothing waits on a dead connection.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_lite::future::{or, poll_fn};
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use tracing::debug;

use crate::error::Error;
use crate::link::Shared;
use crate::pipeline::{Expect, Output, Pipeline};
use crate::signal::Signal;
use crate::value::Value;

/// Bytes the reader asks the socket for at once.
const READ_CHUNK: usize = 16 * 1024;

/// What completes one request: where its reply goes and when it was queued (for the RTT).
#[derive(Debug)]
pub(crate) struct Waiter {
    tx: oneshot::Sender<Result<Value, Error>>,
    queued: Instant,
}

/// One live (or just died) connection.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: RefCell<TcpStream>,
    pipe: RefCell<Pipeline<Waiter>>,
    /// Wakes the writer: output was queued, or the connection died.
    output: Signal,
    /// Wakes everyone waiting for this connection to die or to be asked to close.
    state: Signal,
    dead: Cell<bool>,
    close_asked: Cell<bool>,
    shared: Rc<Shared>,
}

impl Conn {
    /// Connects, starts the reader and writer, and runs the `HELLO 3` handshake (with `AUTH`
    /// and `SETNAME` when configured), all within `connect_timeout`.
    pub(crate) async fn open(shared: Rc<Shared>) -> Result<Rc<Conn>, Error> {
        let opts = &shared.opts;
        let deadline = Instant::now() + opts.connect_timeout;
        let connect_err = |reason: String| Error::Connect {
            addr: opts.addr.clone(),
            reason,
        };
        let stream = TcpStream::connect_timeout(opts.addr.as_str(), opts.connect_timeout)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        // Commands are small and latency-bound; the writer already batches what is queued.
        stream
            .set_nodelay(true)
            .map_err(|e| connect_err(e.to_string()))?;
        let conn = Rc::new(Conn {
            stream: RefCell::new(stream),
            pipe: RefCell::new(Pipeline::new()),
            output: Signal::default(),
            state: Signal::default(),
            dead: Cell::new(false),
            close_asked: Cell::new(false),
            shared: shared.clone(),
        });
        glommio::spawn_local(read_loop(conn.clone())).detach();
        glommio::spawn_local(write_loop(conn.clone())).detach();

        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(pass) = &opts.password {
            let user = opts.username.as_deref().unwrap_or("default");
            hello.extend([b"AUTH".as_slice(), user.as_bytes(), pass.as_bytes()]);
        }
        if let Some(name) = &opts.client_name {
            hello.extend([b"SETNAME".as_slice(), name.as_bytes()]);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.request(&hello, Expect::Reply, left).await {
            Ok(_) => Ok(conn),
            Err(e) => {
                conn.close();
                // The server's refusal (NOPROTO, WRONGPASS …) never echoes the password.
                Err(connect_err(format!("HELLO 3: {e}")))
            }
        }
    }

    /// True until the connection died.
    pub(crate) fn is_alive(&self) -> bool {
        !self.dead.get()
    }

    /// Queues a command; the receiver gets its reply (or `Disconnected`).
    pub(crate) fn send(
        &self,
        args: &[&[u8]],
        expect: Expect,
    ) -> Result<oneshot::Receiver<Result<Value, Error>>, Error> {
        if self.dead.get() {
            return Err(Error::Disconnected);
        }
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter {
            tx,
            queued: Instant::now(),
        };
        self.pipe.borrow_mut().send(args, expect, waiter);
        self.output.notify();
        Ok(rx)
    }

    /// Sends a command and waits for its reply for at most `within`.
    pub(crate) async fn request(
        &self,
        args: &[&[u8]],
        expect: Expect,
        within: Duration,
    ) -> Result<Value, Error> {
        let rx = self.send(args, expect)?;
        await_reply(rx, within).await
    }

    /// How many requests wait for their reply.
    pub(crate) fn in_flight(&self) -> usize {
        self.pipe.borrow().in_flight()
    }

    /// Asks the reader to stop; the connection dies (pending requests get `Disconnected`) and
    /// the socket is closed once both tasks ended.
    pub(crate) fn close(&self) {
        self.close_asked.set(true);
        self.state.notify();
    }

    /// Completes when the connection is dead.
    pub(crate) async fn died(&self) {
        loop {
            let changed = self.state.changed();
            if self.dead.get() {
                return;
            }
            changed.await;
        }
    }

    async fn close_requested(&self) {
        loop {
            let changed = self.state.changed();
            if self.close_asked.get() || self.dead.get() {
                return;
            }
            changed.await;
        }
    }

    /// The one way a connection ends (see the module invariant).
    fn die(&self, why: &str) {
        if self.dead.replace(true) {
            return;
        }
        debug!(addr = %self.shared.opts.addr, why, "redis connection closed");
        let pending = self.pipe.borrow_mut().fail_all();
        for w in pending {
            let _ = w.tx.send(Err(Error::Disconnected));
        }
        self.state.notify();
        self.output.notify();
    }

    /// Completes one request; a caller that gave up (timed out) dropped its receiver, and the
    /// late reply is dropped here.
    fn complete(&self, waiter: Waiter, result: Result<Value, Error>) {
        self.shared.stats.reply(waiter.queued.elapsed());
        let _ = waiter.tx.send(result);
    }
}

/// Waits for a reply with a deadline. Cancel-safe: dropping it abandons the reply only.
pub(crate) async fn await_reply(
    rx: oneshot::Receiver<Result<Value, Error>>,
    within: Duration,
) -> Result<Value, Error> {
    or(
        async {
            // A sender dropped without a reply means the connection went away.
            rx.await.unwrap_or(Err(Error::Disconnected))
        },
        async {
            Timer::new(within).await;
            Err(Error::Timeout(within))
        },
    )
    .await
}

async fn read_loop(conn: Rc<Conn>) {
    let mut buf = vec![0u8; READ_CHUNK];
    let why = loop {
        let read = or(
            async {
                Some(
                    poll_fn(|cx| Pin::new(&mut *conn.stream.borrow_mut()).poll_read(cx, &mut buf))
                        .await,
                )
            },
            async {
                conn.close_requested().await;
                None
            },
        )
        .await;
        let n = match read {
            None => break "closed by the client",
            Some(Ok(0)) => break "closed by the server",
            Some(Err(_)) => break "read error",
            Some(Ok(n)) => n,
        };
        if let Err(e) = deliver(&conn, &buf[..n]) {
            debug!(error = %e, "redis protocol error");
            break "protocol error";
        }
    };
    conn.die(why);
}

/// Feeds one read to the pipeline and completes what it decodes.
fn deliver(conn: &Conn, bytes: &[u8]) -> Result<(), crate::ProtocolError> {
    conn.pipe.borrow_mut().feed(bytes);
    loop {
        // The borrow ends before completing: a completion only schedules the waiting task,
        // but keeping the pipeline free here costs nothing and rules out re-entrance.
        let next = conn.pipe.borrow_mut().poll()?;
        match next {
            None => return Ok(()),
            Some(Output::Reply { token, result }) => {
                conn.complete(token, result.map_err(Error::Server));
            }
            Some(Output::Push(push)) => conn.shared.deliver_push(push),
        }
    }
}

async fn write_loop(conn: Rc<Conn>) {
    let mut buf = Vec::new();
    loop {
        loop {
            let changed = conn.output.changed();
            if conn.dead.get() {
                return;
            }
            if conn.pipe.borrow().has_output() {
                break;
            }
            changed.await;
        }
        conn.pipe.borrow_mut().take_output(&mut buf);
        let written = or(write_all(&conn, &buf), async {
            conn.died().await;
            Ok(())
        })
        .await;
        if written.is_err() {
            conn.die("write error");
            return;
        }
    }
}

async fn write_all(conn: &Conn, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *conn.stream.borrow_mut()).poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}
