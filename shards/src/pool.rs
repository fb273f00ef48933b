//! Starting the shards: pinned glommio executors joined by the mesh.
//!
//! [`run`] blocks the calling thread until every shard's main future has returned. Each shard
//! gets a [`ShardCtx`] with its id, the shard count and its joined mesh halves.

use glommio::channels::channel_mesh::{MeshBuilder, Receivers, Senders};
use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};

use crate::memlock::{self, IoMemoryPlan};
use crate::ShardId;

/// How to start the pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Number of shards (executors), at least 1.
    pub shards: usize,
    /// Pin each shard to its own CPU (spread over the machine). When there are more shards
    /// than CPUs, shards are left unpinned.
    pub pin: bool,
    /// Capacity of each SPSC channel of the mesh, in messages.
    pub mesh_capacity: usize,
    /// Thread name prefix.
    pub name: String,
    /// How long an idle executor keeps polling before it sleeps (pinned shards only).
    pub spin_before_park: Option<std::time::Duration>,
}

/// What one shard is given at start.
pub struct ShardCtx<T: Send + 'static> {
    /// This shard.
    pub id: ShardId,
    /// The number of shards in the pool.
    pub shards: usize,
    /// The joined mesh, sending half.
    pub senders: Senders<T>,
    /// The joined mesh, receiving half.
    pub receivers: Receivers<T>,
}

impl<T: Send + 'static> std::fmt::Debug for ShardCtx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCtx")
            .field("id", &self.id)
            .field("shards", &self.shards)
            .finish()
    }
}

/// Errors starting the pool.
#[derive(Debug)]
pub enum PoolError {
    /// `ulimit -l` is below what glommio needs at all.
    MemlockTooLow(u64),
    /// glommio refused to start an executor.
    Start(String),
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::MemlockTooLow(l) => write!(
                f,
                "ulimit -l is {} KiB; io_uring under glommio needs at least {} KiB \
                 (raise it with `ulimit -l 512` or in /etc/security/limits.conf)",
                l / 1024,
                memlock::GLOMMIO_MIN_MEMLOCK / 1024
            ),
            PoolError::Start(e) => write!(f, "cannot start shard executors: {e}"),
        }
    }
}

impl std::error::Error for PoolError {}

/// The number of CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The CPUs the calling thread may run on: its affinity mask, which `taskset`, `numactl` and a
/// container's cpuset (Kubernetes' static CPU manager, `docker --cpuset-cpus`) restrict.
/// `None` if it cannot be read.
pub fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most `size_of::<cpu_set_t>()` bytes into `set`.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    Some(
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE, the set's size in bits.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect(),
    )
}

/// Where pinned shards go: spread over the CPUs the process may use. glommio's `MaxSpread`
/// picks from every online CPU unless given a set, which pinned a shard of a process confined
/// to CPU 1 (`taskset -c 1`) onto CPU 0, and would fail to start under a cpuset that forbids
/// the CPU it picks.
fn spread_over_allowed(shards: usize, allowed: Option<&[usize]>) -> PoolPlacement {
    let set = allowed.and_then(|allowed| {
        CpuSet::online()
            .ok()
            .map(|online| online.filter(|l| allowed.contains(&l.cpu)))
    });
    PoolPlacement::MaxSpread(shards, set)
}

/// Plans io memory for `shards` shards under the current memlock limit.
pub fn io_memory_plan(shards: usize) -> Result<IoMemoryPlan, PoolError> {
    let limit = memlock::memlock_limit();
    if limit < memlock::GLOMMIO_MIN_MEMLOCK {
        return Err(PoolError::MemlockTooLow(limit));
    }
    Ok(memlock::plan(limit, shards))
}

/// Runs `main` on every shard and returns each shard's result, in shard order.
pub fn run<T, R, F, Fut>(
    cfg: &PoolConfig,
    plan: &IoMemoryPlan,
    main: F,
) -> Result<Vec<R>, PoolError>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(ShardCtx<T>) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = R> + 'static,
{
    let shards = cfg.shards.max(1);
    // `available_cpus` counts the affinity mask (and a cgroup CPU quota), so the shards fit
    // in the allowed CPUs whenever they fit in it.
    let placement = if cfg.pin && shards <= available_cpus() {
        spread_over_allowed(shards, allowed_cpus().as_deref())
    } else {
        PoolPlacement::Unbound(shards)
    };
    let mesh: MeshBuilder<T, _> = MeshBuilder::full(shards, cfg.mesh_capacity.max(1));
    let mut builder = LocalExecutorPoolBuilder::new(placement)
        .name(&cfg.name)
        .io_memory(plan.io_memory);
    if let Some(spin) = cfg.spin_before_park {
        builder = builder.spin_before_park(spin);
    }
    let handles = builder
        .on_all_shards(move || {
            let mesh = mesh.clone();
            let main = main.clone();
            async move {
                let (senders, receivers) = mesh.join().await.expect("mesh join");
                let id = ShardId(senders.peer_id());
                main(ShardCtx {
                    id,
                    shards,
                    senders,
                    receivers,
                })
                .await
            }
        })
        .map_err(|e| PoolError::Start(e.to_string()))?;
    let mut out: Vec<(usize, R)> = Vec::with_capacity(shards);
    for (i, r) in handles.join_all().into_iter().enumerate() {
        match r {
            Ok(v) => out.push((i, v)),
            Err(e) => return Err(PoolError::Start(format!("shard {i}: {e}"))),
        }
    }
    Ok(out.into_iter().map(|(_, v)| v).collect())
}
