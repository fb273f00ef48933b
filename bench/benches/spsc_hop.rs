//! One message hop between two shards over the `shards` mesh (`shards::mesh::Mesh` on
//! glommio's `channel_mesh`, ordered per-peer outboxes), as a round trip: shard A sends to
//! shard B, B's receive loop sends it straight back, A receives it. This is the price rule 2
//! of the `shards` crate puts on a remote owner. The public API of `shards` is enough: the
//! pool is `shards::pool::run`, the mesh `shards::mesh::Mesh::new`/`receive`/`send`.
//!
//! Real executors: a pool of 2 shards (pinned, mesh capacity 1024 as the gateway uses), each a
//! glommio `LocalExecutor` on its own thread and CPU, idle between messages (they park in
//! io_uring, so every hop pays the cross-thread wake-up of a sleeping executor). The payload is
//! a `u64`, so this is the transport alone. On A, the mesh's `on_msg` callback hands the reply
//! to the timing task through a glommio local channel, as a waiting task on a shard learns of
//! a reply.
//!
//! - `round_trip`: one message in flight, A waits for each answer before the next (latency).
//! - `batch_1000`: A sends 1000 messages, then waits for the 1000 answers (throughput; the
//!   channel never fills at this depth, so the outboxes stay empty). Criterion's element rate
//!   is round trips per second.
//!
//! Hangs. Until 2acedc1 a third to a half of fresh pools never answered, and this was blamed
//! on glommio's sleep path (perf/reports/2026-11-25-criterion-2.md). The cause was ours: glommio
//! runs a spawned task at once, so B's receive loop, started while A's first message already
//! waited, echoed it before B's mesh handle was stored, and the echo was dropped. `Mesh` now
//! starts in two steps (`new`, then `receive`) and three runs since hung no pool. The watchdog
//! stays as a guard: no answer to a sample for 5 s abandons the pool (its threads sleep on
//! until the process exits), starts a fresh one primed with 10 000 round trips, and runs the
//! sample again; hung pools are counted at the end (the run gives up, exit 3, after 8).
//!
//! Between samples shard A blocks on a std channel for the next command, with nothing in
//! flight; the criterion thread sleeps while a sample runs, so the two shards own the 2 CPUs.
//! Round trips (or batches) slower than 10 ms (scheduler hiccups on a shared box) are counted
//! and printed.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::channels::local_channel;
use shards::mesh::{Class, Mesh};
use shards::pool::{self, PoolConfig, ShardCtx};
use shards::ShardId;

/// Messages in flight in the batched case.
const BATCH: u64 = 1000;
/// The outbox bound: a whole batch fits, as the gateway's default (4096) holds its bursts.
const OUTBOX_LIMIT: usize = 4096;
/// Tells shard B to stop (it echoes it first, so A knows B has seen it).
const STOP: u64 = u64::MAX;
/// A round trip (or a batch) slower than this is a stall.
const STALL: Duration = Duration::from_millis(10);
/// The watchdog: no answer to a sample (or to priming) within this long is a hang.
const HANG: Duration = Duration::from_secs(5);
/// Round trips a fresh pool must complete before it is measured.
const PRIME: u64 = 10_000;
/// Hung pools tolerated before giving up (each one left behind holds its threads).
const MAX_HANGS: u64 = 8;

#[derive(Clone, Copy)]
enum Cmd {
    /// `n` round trips, one at a time.
    Latency(u64),
    /// `n` batches of [`BATCH`] round trips.
    Batches(u64),
}

type Control = Arc<Mutex<Option<(mpsc::Receiver<Cmd>, mpsc::Sender<Duration>)>>>;

/// Round trips (or batches) slower than [`STALL`].
static STALLS: AtomicU64 = AtomicU64::new(0);
/// Pools abandoned because they hung.
static HANGS: AtomicU64 = AtomicU64::new(0);

/// Shard B: echoes every message back to its sender until [`STOP`].
async fn echo(ctx: ShardCtx<u64>) {
    let (stop_tx, stop_rx) = local_channel::new_bounded::<()>(1);
    let stop_tx = Rc::new(stop_tx);
    let mesh = Mesh::new(ctx.senders, OUTBOX_LIMIT);
    let echo = mesh.clone();
    mesh.receive(ctx.receivers, move |from: ShardId, msg: u64| {
        let _ = echo.try_send(from, msg, Class::Answer);
        if msg == STOP {
            let _ = stop_tx.try_send(());
        }
    });
    let _ = stop_rx.recv().await;
}

/// Shard A: runs the commands criterion sends and reports how long each took.
async fn driver(ctx: ShardCtx<u64>, control: Control) {
    let (cmds, results) = control
        .lock()
        .expect("control lock")
        .take()
        .expect("one driver shard");
    let (tx, rx) = local_channel::new_unbounded::<u64>();
    let tx = Rc::new(tx);
    let mesh = Mesh::new(ctx.senders, OUTBOX_LIMIT);
    mesh.receive(ctx.receivers, move |_from: ShardId, msg: u64| {
        let _ = tx.try_send(msg);
    });
    let peer = ShardId(1);
    let judge = |from: Instant| {
        if from.elapsed() > STALL {
            STALLS.fetch_add(1, Ordering::Relaxed);
        }
    };
    // Blocking here stops the executor on purpose: nothing is in flight between samples.
    while let Ok(cmd) = cmds.recv() {
        let start = Instant::now();
        match cmd {
            Cmd::Latency(n) => {
                for i in 0..n {
                    let t = Instant::now();
                    mesh.try_send(peer, i, Class::Work)
                        .expect("the outbox holds a batch");
                    let back = rx.recv().await.expect("reply");
                    judge(t);
                    debug_assert_eq!(back, i);
                }
            }
            Cmd::Batches(n) => {
                for _ in 0..n {
                    let t = Instant::now();
                    for i in 0..BATCH {
                        mesh.try_send(peer, i, Class::Work)
                            .expect("the outbox holds a batch");
                    }
                    for i in 0..BATCH {
                        let back = rx.recv().await.expect("reply");
                        debug_assert_eq!(back, i, "replies arrive in order");
                    }
                    judge(t);
                }
            }
        }
        if results.send(start.elapsed()).is_err() {
            break;
        }
    }
    mesh.try_send(peer, STOP, Class::Work)
        .expect("peer in range");
    while rx.recv().await.is_some_and(|m| m != STOP) {}
}

/// A running 2-shard pool and the line to its driver shard.
struct Pool {
    cmds: mpsc::Sender<Cmd>,
    results: mpsc::Receiver<Duration>,
    thread: std::thread::JoinHandle<Result<Vec<()>, pool::PoolError>>,
}

impl Pool {
    fn start() -> Pool {
        let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>();
        let (res_tx, res_rx) = mpsc::channel::<Duration>();
        let control: Control = Arc::new(Mutex::new(Some((cmd_rx, res_tx))));
        let plan = pool::io_memory_plan(2).expect("memlock allows glommio");
        let cfg = PoolConfig {
            shards: 2,
            pin: true,
            mesh_capacity: 1024,
            name: "hop".into(),
            spin_before_park: None,
        };
        let thread = std::thread::spawn(move || {
            pool::run(&cfg, &plan, move |ctx: ShardCtx<u64>| {
                let control = control.clone();
                async move {
                    if ctx.id.0 == 0 {
                        driver(ctx, control).await
                    } else {
                        echo(ctx).await
                    }
                }
            })
        });
        Pool {
            cmds: cmd_tx,
            results: res_rx,
            thread,
        }
    }

    /// Starts a pool and primes it with [`PRIME`] round trips; `None` when it hung doing so.
    fn start_primed() -> Option<Pool> {
        let p = Pool::start();
        p.cmds
            .send(Cmd::Latency(PRIME))
            .expect("driver shard alive");
        match p.results.recv_timeout(HANG) {
            Ok(_) => Some(p),
            Err(_) => {
                p.abandon();
                None
            }
        }
    }

    /// Leaves a hung pool behind: its executors sleep on, the process exit ends them.
    fn abandon(self) {
        HANGS.fetch_add(1, Ordering::Relaxed);
        std::mem::forget(self);
    }

    fn stop(self) {
        drop(self.cmds);
        self.thread.join().expect("pool thread").expect("pool ran");
    }
}

/// The pool being measured, replaced when it hangs.
struct Pools(RefCell<Option<Pool>>);

impl Pools {
    fn new() -> Pools {
        let p = Pools(RefCell::new(None));
        p.replace();
        p
    }

    /// Puts a fresh, primed pool in place (after [`MAX_HANGS`] hangs in all, gives up).
    fn replace(&self) {
        while HANGS.load(Ordering::Relaxed) < MAX_HANGS {
            if let Some(p) = Pool::start_primed() {
                *self.0.borrow_mut() = Some(p);
                return;
            }
        }
        eprintln!("spsc_hop: {MAX_HANGS} pools hung (executors asleep with a message in flight); giving up");
        std::process::exit(3);
    }

    /// Runs one sample; a sample whose pool hangs is run again on a fresh pool.
    fn run(&self, cmd: Cmd) -> Duration {
        loop {
            let answer = {
                let pool = self.0.borrow();
                let pool = pool.as_ref().expect("a pool");
                pool.cmds.send(cmd).expect("driver shard alive");
                pool.results.recv_timeout(HANG)
            };
            match answer {
                Ok(d) => return d,
                Err(_) => {
                    if let Some(p) = self.0.borrow_mut().take() {
                        p.abandon();
                    }
                    self.replace();
                }
            }
        }
    }

    fn stop(self) {
        if let Some(p) = self.0.into_inner() {
            p.stop();
        }
    }
}

fn bench(c: &mut Criterion) {
    let pools = Pools::new();
    let mut g = c.benchmark_group("spsc_hop");
    g.throughput(Throughput::Elements(1));
    g.bench_function("round_trip", |b| {
        b.iter_custom(|iters| pools.run(Cmd::Latency(iters)))
    });
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("batch_1000", |b| {
        b.iter_custom(|iters| pools.run(Cmd::Batches(iters)))
    });
    g.finish();
    println!(
        "spsc_hop: {} round trips or batches slower than {} ms; {} pools hung (executors asleep \
         with a message in flight for {} s) and were replaced, their samples run again",
        STALLS.swap(0, Ordering::Relaxed),
        STALL.as_millis(),
        HANGS.load(Ordering::Relaxed),
        HANG.as_secs()
    );
    pools.stop();
}

criterion_group!(benches, bench);
criterion_main!(benches);
