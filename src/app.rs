//! Start and stop of the whole gateway: the singleton check, the shard pool, signals, the
//! ready line, and the ordered shutdown (stop accepting → `shutdown` event → drain runs →
//! close 1012 → exit).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use shards::mesh::Mesh;
use shards::pool::{PoolConfig, ShardCtx};

use crate::auth::limits::PeerLimits;
use crate::auth::store::PairingStore;
use crate::clock::now_ms;
use crate::config::Config;
use crate::shard::{GatewayShard, MeshMsg, Shared};

/// Holds the singleton locks for the life of the process.
#[derive(Debug)]
pub struct Singleton {
    _state: File,
    _port: Option<File>,
}

fn lock_file(path: &Path) -> anyhow::Result<Result<File, String>> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(Ok(f)),
        Err(_) => {
            let mut who = String::new();
            let _ = f.read_to_string(&mut who);
            Ok(Err(who.trim().to_string()))
        }
    }
}

fn write_owner(f: &mut File, port: u16) {
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = write!(f, "pid {} port {}", std::process::id(), port);
    let _ = f.flush();
}

fn port_lock_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("shardgate-port-{port}.lock"))
}

/// Refuses to start when another gateway holds this state dir or this port.
fn acquire_singleton(state_dir: &Path, addr: SocketAddr) -> anyhow::Result<Singleton> {
    let state = match lock_file(&state_dir.join("gateway.lock"))? {
        Ok(f) => f,
        Err(who) => bail!(
            "another shardgate is already running on state dir {} ({}); stop it first or use --state-dir",
            state_dir.display(),
            if who.is_empty() { "pid unknown".to_string() } else { who }
        ),
    };
    let port =
        if addr.port() != 0 {
            match lock_file(&port_lock_path(addr.port()))? {
                Ok(f) => Some(f),
                Err(who) => bail!(
                "another shardgate is already running on port {} ({}); stop it first or use --port",
                addr.port(),
                if who.is_empty() { "pid unknown".to_string() } else { who }
            ),
            }
        } else {
            None
        };
    Ok(Singleton {
        _state: state,
        _port: port,
    })
}

/// Binds a probe socket (SO_REUSEPORT) that fixes the port and proves it is free of other
/// programs, before the shards bind the same port.
fn probe_port(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    // Without SO_REUSEPORT first: fails when anything else holds the port.
    if addr.port() != 0 {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => drop(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                bail!(
                    "port {} on {} is already in use by another program",
                    addr.port(),
                    addr.ip()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("cannot bind {addr}")),
        }
    }
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())
        .with_context(|| format!("cannot bind {addr}"))?;
    s.listen(1)?;
    Ok(s.into())
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Runs the gateway until SIGTERM/SIGINT and a graceful drain.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let shards_n = config.shards.resolve();
    let state_dir = config.state_dir();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create state dir {}", state_dir.display()))?;
    set_mode(&state_dir, 0o700);
    let ip: std::net::IpAddr = config.gateway.host.parse().context("gateway.host")?;
    let want = SocketAddr::new(ip, config.gateway.port);
    let mut singleton = acquire_singleton(&state_dir, want)?;
    let probe = probe_port(want)?;
    let addr = probe.local_addr()?;
    write_owner(&mut singleton._state, addr.port());
    if let Some(f) = singleton._port.as_mut() {
        write_owner(f, addr.port());
    }
    // With `storage.encryption`, device tokens and TOTP secrets are sealed in the store file
    // with the same at-rest key as the journal.
    let store_key = match config.storage.encryption.as_deref() {
        Some("aes-256-gcm") => Some(
            crate::queue::journal::load_key(&state_dir)
                .context("at-rest key for the device store")?,
        ),
        _ => None,
    };
    // One thread writes every state file, off the shards (see `auth::store_writer`).
    let store_writer =
        crate::auth::store_writer::StoreWriter::start().context("store writer thread")?;
    let store = PairingStore::open_with(&state_dir, store_key, &store_writer)
        .context("paired device store")?;
    let tls =
        crate::transport::tls::TlsState::from_config(&config).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(t) = &tls {
        signal_hook::flag::register(signal_hook::consts::SIGHUP, t.hup.clone())?;
    }
    let access = crate::auth::access::Access::new(&config);
    let pairing = crate::auth::pairing::Pairing::new(&config);
    let node_pairing = crate::node::pairing::NodePairing::open(&state_dir, &config, &store_writer)
        .context("paired node store")?;
    let bootstrap = crate::auth::bootstrap::Bootstrap::open(&state_dir, &store_writer)
        .context("setup code store")?;
    let identity = crate::auth::identity::GatewayIdentity::load_or_create(&state_dir, now_ms())
        .map_err(|e| anyhow::anyhow!("gateway identity: {e}"))?;
    let plan = shards::pool::io_memory_plan(shards_n).map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(
        memlock_kib = plan.memlock_limit / 1024,
        io_memory_kib = plan.io_memory / 1024,
        registered = plan.registered,
        shards = shards_n,
        "io_uring registered buffers: {} KiB per shard ({})",
        plan.io_memory / 1024,
        if plan.registered {
            "fits ulimit -l"
        } else {
            "too little memlock: unregistered buffers"
        }
    );
    let clustering = &config.gateway.clustering;
    let cluster = clustering.enabled.then(|| {
        let me = crate::cluster::member_id(clustering, addr.port());
        tracing::info!(member = %me, "clustering: active-active on Redis leases");
        Arc::new(crate::cluster::Ownership::new(
            me,
            config.queue.redis.slots,
            clustering.nodes.clone(),
        ))
    });
    let shutdown = Arc::new(AtomicBool::new(false));
    let stop_signals = [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT];
    for sig in stop_signals {
        // A second signal while draining exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, shutdown.clone())?;
        signal_hook::flag::register(sig, shutdown.clone())?;
    }
    // The handlers above set the flag; this iterator's thread then wakes the shards waiting
    // for it (`StopWaiters`), which a signal handler may not do.
    let mut stop_seen = signal_hook::iterator::Signals::new(stop_signals)?;
    let shared = Arc::new(Shared {
        config: Arc::new(config),
        store,
        store_writer,
        limits: PeerLimits::default(),
        pairing,
        node_pairing,
        bootstrap,
        listen: addr,
        access,
        tls,
        started: Instant::now(),
        started_us: shards::clock::monotonic_us(),
        started_ms: now_ms(),
        shards: shards_n,
        shutdown,
        stop_waiters: Default::default(),
        drained: AtomicUsize::new(0),
        instance_id: uuid::Uuid::new_v4().to_string(),
        port: AtomicU16::new(addr.port()),
        queued: AtomicUsize::new(0),
        host: host_name(),
        shedding: AtomicBool::new(false),
        identity,
        cluster,
    });
    let waker_shared = shared.clone();
    std::thread::Builder::new()
        .name("stop-signal".into())
        .spawn(move || {
            for _ in stop_seen.forever() {
                waker_shared.stop_waiters.wake_all();
            }
        })?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let pool_cfg = PoolConfig {
        shards: shards_n,
        pin: true,
        mesh_capacity: 1024,
        name: "shard".into(),
        spin_before_park: match shared.config.network.spin_before_park_us {
            0 => None,
            us => Some(Duration::from_micros(us)),
        },
    };
    let sh = shared.clone();
    let pool = std::thread::Builder::new()
        .name("pool".into())
        .spawn(move || {
            shards::pool::run(&pool_cfg, &plan, move |ctx: ShardCtx<MeshMsg>| {
                let shared = sh.clone();
                let ready = ready_tx.clone();
                async move { shard_main(ctx, shared, addr, ready).await }
            })
        })?;
    for _ in 0..shards_n {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("shard failed to start: {e}"),
            Err(_) => match pool.join() {
                Ok(Err(e)) => bail!("{e}"),
                _ => bail!("shards did not start within 30 s"),
            },
        }
    }
    drop(probe);
    tracing::info!(listen = %addr, shards = shards_n, state_dir = %state_dir.display(), "gateway ready");
    println!(
        "shardgate ready listen={addr} shards={shards_n} pid={}",
        std::process::id()
    );
    let _ = std::io::stdout().flush();
    // Each shard reports once more when it has drained and closed its connections. The
    // executors are then left parked and the process exits from here: tearing down io_uring
    // executors with operations still registered is not safe (glommio), and nothing is left
    // to flush.
    // The shards hold every sender: if the pool ends (every executor gone), the channel
    // disconnects, so this waits without waking up to check on it.
    let mut stopped = 0;
    while stopped < shards_n {
        match ready_rx.recv() {
            Ok(_) => stopped += 1,
            Err(std::sync::mpsc::RecvError) => {
                return match pool.join() {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => bail!("{e}"),
                    Err(_) => bail!("a shard panicked"),
                }
            }
        }
    }
    // Every change handed out was awaited on disk already; this writes what is left (a
    // change whose connection went away before its write).
    shared.store_writer.wait_idle();
    tracing::info!("gateway stopped");
    Ok(())
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

async fn shard_main(
    ctx: ShardCtx<MeshMsg>,
    shared: Arc<Shared>,
    addr: SocketAddr,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    // The shard owns its sending half from the start; receiving starts only once the shard
    // exists, because a peer that started sooner may already have sent (a gather, a
    // delivery) and glommio runs the receive loop at once (see `shards::mesh`).
    let mesh = Mesh::new(ctx.senders, shared.config.network.mesh_outbox_limit);
    let shard = GatewayShard::new(ctx.id, shared.clone(), mesh.clone());
    let on = shard.clone();
    mesh.receive(ctx.receivers, move |_from, msg| {
        crate::routing::on_mesh(&on, msg)
    });
    if shared.config.queue.backend == "journal" {
        if let Err(e) = crate::queue::open_journal(&shard) {
            let _ = ready.send(Err(format!("shard {}: journal: {e}", ctx.id)));
            return;
        }
    }
    if shared.config.queue.backend == "redis" {
        if let Err(e) = crate::queue::open_redis(&shard) {
            let _ = ready.send(Err(format!("shard {}: redis: {e}", ctx.id)));
            return;
        }
    }
    let cluster = match join_cluster(&shard).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("shard {}: cluster: {e}", ctx.id)));
            return;
        }
    };
    let listener = match glommio::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("shard {}: bind {addr}: {e}", ctx.id)));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    tracing::debug!(shard = %ctx.id, "accepting");

    if ctx.id.0 == 0 {
        let shared = shared.clone();
        glommio::spawn_local(async move {
            if let Some(tls) = &shared.tls {
                let rot = &shared.config.security.transport.tls.certificate_rotation;
                crate::transport::tls::watch(tls, rot, &shared.shutdown).await;
            }
        })
        .detach();
    }
    let tick_ms = shared.config.gateway.tick_interval_ms;
    let ticker = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(tick_ms)).await;
                let payload = json!({"ts": now_ms()}).to_string();
                shard.event_local_all("tick", &payload, false, false, |_| true);
            }
        })
        .detach()
    };

    let health = glommio::spawn_local(crate::routing::publish_health(shard.clone())).detach();

    let purger = {
        let shard = shard.clone();
        // Housekeeping once a minute, or at half the shortest cache ttl (at least 100 ms).
        let caching = &shard.config().memory.caching;
        let period = [caching.session.ttl, caching.message.ttl]
            .iter()
            .flatten()
            .map(|t| t.0 / 2)
            .fold(60_000, u64::min)
            .max(100);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(period)).await;
                crate::ops::deps::trim_caches(&shard, now_ms());
                crate::queue::purge_dead(&shard, now_ms());
                shard.queue().core.borrow_mut().dedup.expire(now_ms());
                // The run ring keeps traces, and runs for `agent.wait`, within the dedup window.
                shard.runs().borrow_mut().expire(now_ms());
            }
        })
        .detach()
    };
    if ctx.id.0 == 0 {
        // The chat platforms' connections (their long polls) run on shard 0.
        crate::channels::start(&shard);
        glommio::spawn_local(crate::ops::monitor::shed_loop(shard.clone())).detach();
        glommio::spawn_local(crate::ops::monitor::alert_loop(shard.clone())).detach();
        glommio::spawn_local(crate::ops::deps::check_loop(shard.clone())).detach();
    }
    let stop = shared.stop_waiters.wait(&shared.shutdown);
    crate::transport::server::accept_loop(shard.clone(), listener, stop).await;
    let driver = cluster.and_then(|c| c.borrow_mut().take());
    if let Some(d) = driver {
        // Hand the slots over now, so the others take them without waiting for the TTL.
        d.leave().await;
    }
    drain(&shard).await;
    ticker.cancel();
    health.cancel();
    purger.cancel();
    let _ = ready.send(Ok(()));
    // Stay parked: the process exits from the main thread (see `serve`).
    futures_lite::future::pending::<()>().await;
}

/// The shutdown sequence of one shard.
async fn drain(shard: &Rc<GatewayShard>) {
    let cfg = shard.config();
    tracing::info!(shard = %shard.id(), inflight = shard.inflight().get(), "shutting down: draining runs");
    let payload = json!({"reason": "gateway stopping", "restartExpectedMs": null}).to_string();
    shard.event_local_all("shutdown", &payload, false, false, |_| true);
    let deadline = Instant::now() + Duration::from_millis(cfg.gateway.drain_timeout_ms);
    while shard.inflight().get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    if shard.inflight().get() > 0 {
        tracing::warn!(shard = %shard.id(), inflight = shard.inflight().get(), "drain timeout: runs still in flight");
    }
    let journal = shard.queue().journal.borrow().clone();
    if let Some(j) = journal {
        j.close().await;
    }
    shard.shared().drained.fetch_add(1, Ordering::SeqCst);
    while shard.shared().drained.load(Ordering::SeqCst) < shard.shards()
        && Instant::now() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    // Deliveries from other shards' last runs may still be in the mesh: give them a beat.
    glommio::timer::sleep(Duration::from_millis(50)).await;
    for c in shard.all_conns() {
        c.close(1012, "service restart");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while shard.conn_counts().1 > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
}

/// The cluster driver, once started (shard 0), for a graceful leave at shutdown.
type ClusterSlot = Rc<std::cell::RefCell<Option<crate::cluster::ClusterHandle>>>;

/// Joins the cluster when `gateway.clustering.enabled`: every shard gets its end of the
/// relay (publishing on its queue's Redis connection); shard 0 also listens on this
/// gateway's relay channel and then starts the lease driver, in the background so that a
/// Redis down at start delays the cluster, not the gateway's local methods. Listening comes
/// first: a member takes slots (and so gets requests) only once it can hear them.
async fn join_cluster(shard: &Rc<GatewayShard>) -> Result<Option<ClusterSlot>, String> {
    let Some(own) = shard.shared().cluster.clone() else {
        return Ok(None);
    };
    let cfg = shard.config();
    let q = shard
        .queue()
        .redis
        .borrow()
        .clone()
        .ok_or("gateway.clustering needs queue.backend \"redis\"")?;
    let relay =
        crate::relay::Relay::new(q.client().clone(), own.clone(), &cfg.queue.redis.key_prefix);
    shard.set_relay(relay.clone());
    crate::routing::remote::sweep_orphans(shard, relay.clone());
    if shard.id().0 != 0 {
        return Ok(None);
    }
    let opts = crate::cluster::driver::options(cfg)?;
    let slot: ClusterSlot = Rc::default();
    let (weak, out) = (Rc::downgrade(shard), slot.clone());
    glommio::spawn_local(async move {
        let mut attempt = 0u32;
        let (sub, rx) = loop {
            match async {
                let (sub, rx) = shardgate_redis::Subscriber::connect(opts.clone()).await?;
                let (mine, all) = (relay.my_channel(), relay.all_channel());
                sub.subscribe(&[mine.as_bytes(), all.as_bytes()]).await?;
                Ok::<_, shardgate_redis::Error>((sub, rx))
            }
            .await
            {
                Ok(s) => break s,
                Err(e) => {
                    if attempt.is_multiple_of(20) {
                        tracing::warn!("cluster: cannot subscribe to the relay yet: {e}");
                    }
                    attempt += 1;
                    glommio::timer::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        let Some(shard) = weak.upgrade() else { return };
        crate::transport::relay_in::listen(&shard, relay, sub, rx);
        let host = crate::queue::takeover::Takeover::new(&shard);
        match crate::cluster::start(shard.config(), own.me(), own.clone(), host) {
            Ok(h) => *out.borrow_mut() = Some(h),
            Err(e) => tracing::error!("cluster: the lease driver did not start: {e}"),
        }
    })
    .detach();
    Ok(Some(slot))
}
