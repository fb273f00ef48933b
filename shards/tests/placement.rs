//! Pinned shards stay on the CPUs the process may use. A gateway started under `taskset -c 1`
//! (or in a container whose cpuset is one CPU) had its shard pinned to CPU 0 by glommio's
//! `MaxSpread`, which picks from every online CPU.

#![expect(
    clippy::disallowed_methods,
    reason = "the test plays a thread outside the shard pool"
)]

use shards::memlock;
use shards::pool::{self, allowed_cpus, PoolConfig, ShardCtx};

/// Confines the calling thread (and the threads it starts) to `cpu`.
fn confine_to(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; `cpu` is below CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn a_pinned_shard_stays_within_the_cpus_the_process_may_use() {
    let allowed = allowed_cpus().expect("sched_getaffinity");
    assert!(
        allowed.len() >= 2,
        "this test needs two CPUs to confine itself to one of them; it has {allowed:?}"
    );
    // The last one: MaxSpread over all CPUs starts from the first.
    let cpu = *allowed.last().unwrap();
    let runner = std::thread::spawn(move || {
        confine_to(cpu);
        let cfg = PoolConfig {
            shards: 1,
            pin: true,
            mesh_capacity: 4,
            name: "placement-test".into(),
            spin_before_park: None,
        };
        let plan = memlock::plan(memlock::memlock_limit(), 1);
        pool::run(&cfg, &plan, |_ctx: ShardCtx<()>| async move {
            allowed_cpus().expect("shard's sched_getaffinity")
        })
        .expect("pool")
    });
    let per_shard = runner.join().expect("runner");
    assert_eq!(per_shard, vec![vec![cpu]], "the shard's CPUs");
}
