//! The Discord Gateway driver: one task per channel on shard 0 that does what the
//! [`Machine`] decides — opens the WebSocket ([`crate::channels::ws`]), sends Identify,
//! Resume and heartbeats (with the token, [`super::wire`]), feeds it every frame and every
//! timer, and hands each message to the channel's submission task — and publishes the
//! connection's state ([`crate::channels::state`]) as it changes.
//!
//! Messages are submitted by a task of their own, in arrival order, so a slow admission (a
//! durable queue's write) never delays a heartbeat. Discord has no acknowledgement of
//! events: a message is taken once by its id (the machine's window, then the queue's
//! idempotency key `discord:<channel>:<id>`), and a refused admission is retried a few times.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_channel::mpsc;
use futures_lite::StreamExt;

use super::machine::{Inbound, Machine, Next, Op, Out, Setup};
use super::wire;
use crate::channels::route::agent_of;
use crate::channels::state::{Link, LinkState};
use crate::channels::submit::Submitter;
use crate::channels::ws::{self, WsConn};
use crate::clock::now_ms;
use crate::config::ChannelConfig;
use crate::shard::GatewayShard;
use crate::transport::ws_client::Frame;

/// How long the WebSocket upgrade may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// How often a waiting driver looks at the shutdown flag.
const SHUTDOWN_POLL_MS: i64 = 500;

/// How many times a refused admission is tried before the message is dropped (counted as an
/// error).
const SUBMIT_TRIES: u32 = 5;

/// The state a channel starts in.
pub fn initial_state(shard: &GatewayShard, cfg: &ChannelConfig) -> LinkState {
    LinkState {
        gateway_url: Some(cfg.gateway_url().to_string()),
        ..LinkState::starting("discord", cfg, agent_of(shard.config(), cfg), now_ms())
    }
}

/// Runs channel `name`'s Gateway connection until the gateway stops (or Discord says stop).
pub async fn run(shard: Rc<GatewayShard>, name: String, cfg: ChannelConfig) {
    let state = initial_state(&shard, &cfg);
    let agent = state.agent.clone();
    shard.channels().set_link(&name, state);
    let token = match cfg.resolve_token() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(channel = %name, "discord channel not started: {e}");
            let mut m = machine(&name, agent, &cfg);
            m.stop(e.clone());
            m.last_error = Some(e);
            return publish(&shard, &name, &m);
        }
    };
    let (tx, rx) = mpsc::unbounded();
    glommio::spawn_local(submit_loop(
        shard.clone(),
        name.clone(),
        rx,
        cfg.reconnect_interval.0,
    ))
    .detach();
    let mut m = machine(&name, agent, &cfg);
    tracing::info!(channel = %name, gateway = %cfg.gateway_url(), "discord gateway connection started");
    let mut opened = 0u64;
    loop {
        if stopping(&shard) {
            m.stop("the gateway is stopping".into());
            return publish(&shard, &name, &m);
        }
        match m.next(now_ms()) {
            Next::Stop => {
                let reason = match &m.link {
                    Link::Stopped { reason } => reason.clone(),
                    _ => "stopped".into(),
                };
                tracing::error!(channel = %name, "discord channel stopped: {reason}");
                return publish(&shard, &name, &m);
            }
            Next::Wait(until) => {
                publish(&shard, &name, &m);
                let ms = (until - now_ms()).clamp(1, SHUTDOWN_POLL_MS);
                glommio::timer::sleep(Duration::from_millis(ms as u64)).await;
            }
            // Not reached: a connection's loop below runs until it ends.
            Next::Open => m.on_close(None, "connection loop ended", now_ms()),
            Next::Connect(url) => {
                publish(&shard, &name, &m);
                match ws::open(&url, cfg.ca_file.as_deref(), OPEN_TIMEOUT).await {
                    Err(e) => {
                        tracing::warn!(channel = %name, "discord gateway connect failed: {e}");
                        shard.channels().count(&name, |c| c.errors += 1);
                        m.connect_failed(&e, now_ms());
                    }
                    Ok(conn) => {
                        opened += 1;
                        if opened > 1 {
                            shard.channels().count(&name, |c| c.reconnects += 1);
                        }
                        m.connected(now_ms());
                        let ctx = Ctx {
                            shard: &shard,
                            name: &name,
                            token: &token,
                            intents: cfg.intents(),
                            inbound: &tx,
                        };
                        connection(&ctx, conn, &mut m).await;
                        if let Some(e) = &m.last_error {
                            tracing::info!(channel = %name, "discord gateway connection ended: {e}");
                        }
                    }
                }
            }
        }
    }
}

/// What a connection's loop works with.
struct Ctx<'a> {
    shard: &'a Rc<GatewayShard>,
    name: &'a str,
    token: &'a str,
    intents: u64,
    inbound: &'a mpsc::UnboundedSender<Inbound>,
}

/// What woke a connection's loop.
enum Woke {
    Frame(Result<Frame, String>),
    Timer,
}

/// Runs one open connection until it ends (the machine has then moved on).
async fn connection(ctx: &Ctx<'_>, mut conn: WsConn, m: &mut Machine) {
    loop {
        let now = now_ms();
        if stopping(ctx.shard) {
            conn.close(1000).await;
            return m.on_close(Some(1000), "the gateway is stopping", now);
        }
        let until = m
            .deadline()
            .unwrap_or(now + SHUTDOWN_POLL_MS)
            .min(now + SHUTDOWN_POLL_MS);
        let woke = futures_lite::future::or(async { Woke::Frame(conn.read().await) }, async {
            glommio::timer::sleep(Duration::from_millis((until - now).max(0) as u64)).await;
            Woke::Timer
        })
        .await;
        let now = now_ms();
        let outs = match woke {
            Woke::Timer => m.tick(now),
            Woke::Frame(Ok(Frame::Text(t))) => m.on_text(&t, now),
            // The Gateway speaks JSON text (encoding=json); binary would be ETF or zlib.
            Woke::Frame(Ok(Frame::Binary(_) | Frame::Pong(_))) => Vec::new(),
            Woke::Frame(Ok(Frame::Ping(p))) => {
                if let Err(e) = conn.pong(&p).await {
                    return m.on_close(None, &e, now);
                }
                Vec::new()
            }
            Woke::Frame(Ok(Frame::Close(code, why))) => {
                m.on_close(code, &why, now);
                publish(ctx.shard, ctx.name, m);
                // Answer the close (RFC 6455 §5.5.1) with the same code.
                conn.close(code.unwrap_or(1000)).await;
                return;
            }
            Woke::Frame(Err(e)) => {
                m.on_close(None, &e, now);
                return publish(ctx.shard, ctx.name, m);
            }
        };
        for out in outs {
            match out {
                Out::Send(op) => {
                    let text = match &op {
                        Op::Heartbeat(seq) => wire::heartbeat(*seq),
                        Op::Identify => wire::identify(ctx.token, ctx.intents),
                        Op::Resume { session_id, seq } => wire::resume(ctx.token, session_id, *seq),
                    };
                    if let Err(e) = conn.send_text(&text).await {
                        m.on_close(None, &e, now_ms());
                        return publish(ctx.shard, ctx.name, m);
                    }
                }
                Out::Close(code) => {
                    publish(ctx.shard, ctx.name, m);
                    conn.close(code).await;
                    return;
                }
                Out::Inbound(i) => {
                    let _ = ctx.inbound.unbounded_send(i);
                }
                Out::Duplicate => ctx.shard.channels().count(ctx.name, |c| c.duplicates += 1),
                Out::Filtered => ctx.shard.channels().count(ctx.name, |c| c.filtered += 1),
            }
        }
        publish(ctx.shard, ctx.name, m);
    }
}

/// Submits channel `name`'s messages in order; a refusal is retried after its hint (the
/// reconnect interval without one), at most [`SUBMIT_TRIES`] times.
async fn submit_loop(
    shard: Rc<GatewayShard>,
    name: String,
    mut rx: mpsc::UnboundedReceiver<Inbound>,
    reconnect_ms: u64,
) {
    let submitter = Submitter::open(&shard, &name);
    while let Some(i) = rx.next().await {
        for attempt in 1..=SUBMIT_TRIES {
            match submitter
                .submit(&shard, &i.session_key, &i.text, &i.idem)
                .await
            {
                Ok(()) => {
                    shard.channels().count(&name, |c| c.messages_in += 1);
                    break;
                }
                Err(r) => {
                    shard.channels().count(&name, |c| c.errors += 1);
                    tracing::warn!(channel = %name, message = %i.message_id, attempt, "message not admitted: {}", r.why);
                    if attempt < SUBMIT_TRIES {
                        let ms = r.retry_after_ms.unwrap_or(reconnect_ms).max(10);
                        glommio::timer::sleep(Duration::from_millis(ms)).await;
                    }
                }
            }
        }
    }
}

fn machine(name: &str, agent: String, cfg: &ChannelConfig) -> Machine {
    Machine::new(Setup {
        channel: name.to_string(),
        agent,
        allow_from: cfg.allow_from.clone(),
        reconnect_ms: cfg.reconnect_interval.0,
        gateway_url: cfg.gateway_url().to_string(),
        seed: rand::random(),
    })
}

fn stopping(shard: &GatewayShard) -> bool {
    shard.shared().shutdown.load(Ordering::Relaxed)
}

/// Copies the machine's state into the shard's channel state; `health` is told only when
/// what it shows (state, error) changed.
fn publish(shard: &GatewayShard, name: &str, m: &Machine) {
    let mut changed = false;
    shard.channels().update_link(name, |s| {
        changed = s.link != m.link || s.last_error != m.last_error;
        s.link = m.link.clone();
        s.last_error = m.last_error.clone();
        s.reconnect_attempts = m.attempts;
        s.last_connected_at = m.last_connected_at;
        s.last_inbound_at = m.last_inbound_at;
        s.sequence = m.seq();
        s.latency_ms = m.latency_ms;
        s.resumes = m.resumes;
    });
    if changed {
        shard.health_parts().mark_changed();
    }
}
