//! Heap memory an idle connection holds in the gateway: live bytes the shard threads hold per
//! handshaken, idle connection, and which allocation sizes they are in — the breakdown behind
//! the RSS figure of `perf/run --idle N` (which adds allocator overhead and the kernel's side).
//!
//! A real gateway (`shardgate::app::serve`, one shard, token auth) runs in this process; this
//! thread opens `CONNS` operator connections (`shardgate::client::Client`: WebSocket upgrade,
//! challenge, `connect`, `hello-ok` and the `health` event read), waits until the gateway has
//! written to all of them, and compares the live heap of the shard threads before and after.
//! A counting `#[global_allocator]` wraps mimalloc and tells threads apart by their OS name
//! (glommio's executor threads are `shard-<n>`), as in `alloc_per_request`.
//!
//! Not a criterion group: it prints a table. Run with
//! `cargo bench -p shardgate-bench --bench idle_memory`.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use shardgate_bench::InProcessGateway;

/// Idle connections opened (one process: well under the 20 000 fd limit).
const CONNS: usize = 2_000;
/// Sizes are tracked exactly (in 8-byte steps) up to this; larger ones share the last bucket.
const TRACKED: usize = 64 * 1024;
const STEP: usize = 8;
const BUCKETS: usize = TRACKED / STEP + 1;

/// Live bytes allocated by shard threads (frees by shard threads subtract).
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
/// Live allocations per size bucket, shard threads only.
static LIVE_BY_SIZE: [AtomicI64; BUCKETS] = [const { AtomicI64::new(0) }; BUCKETS];
static EPOCH: AtomicU32 = AtomicU32::new(1);

thread_local! {
    /// (epoch seen, is a shard thread); const-initialised, safe inside the allocator.
    static SHARD: Cell<(u32, bool)> = const { Cell::new((0, false)) };
}

fn is_shard() -> bool {
    let epoch = EPOCH.load(Ordering::Relaxed);
    SHARD
        .try_with(|c| {
            let (seen, shard) = c.get();
            if seen == epoch {
                return shard;
            }
            let mut buf = [0u8; 16];
            // SAFETY: `buf` is 16 bytes, the most a Linux thread name takes (with its NUL);
            // the call reads the calling thread's name and allocates nothing.
            let rc = unsafe {
                libc::pthread_getname_np(libc::pthread_self(), buf.as_mut_ptr().cast(), buf.len())
            };
            let shard = rc == 0 && buf.starts_with(b"shard-");
            c.set((epoch, shard));
            shard
        })
        .unwrap_or(false)
}

fn bucket(size: usize) -> usize {
    size.div_ceil(STEP).min(BUCKETS - 1)
}

fn track(size: usize, sign: i64) {
    if is_shard() {
        LIVE_BYTES.fetch_add(sign * size as i64, Ordering::Relaxed);
        LIVE_BY_SIZE[bucket(size)].fetch_add(sign, Ordering::Relaxed);
    }
}

struct Counting;

// SAFETY: every call is forwarded unchanged to mimalloc; the wrapper only bumps counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size(), 1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        track(layout.size(), 1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(layout.size(), -1);
        track(new_size, 1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(layout.size(), -1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn by_size() -> Vec<i64> {
    LIVE_BY_SIZE
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect()
}

fn main() {
    let gw = InProcessGateway::start();
    // Warm the shard's maps and caches with a first round of connections, then close them.
    let warm: Vec<_> = (0..200).map(|_| gw.client()).collect();
    warm.into_iter().for_each(|c| c.close());
    std::thread::sleep(std::time::Duration::from_millis(500));
    EPOCH.fetch_add(1, Ordering::SeqCst);
    let bytes0 = LIVE_BYTES.load(Ordering::Relaxed);
    let sizes0 = by_size();
    // `Client::connect` returns after `hello-ok`; the `health` event that follows it is
    // written in the same batch, so the gateway has nothing left to send once all are in.
    let clients: Vec<_> = (0..CONNS).map(|_| gw.client()).collect();
    // The shard finishes each connection's writer batch right after the write; give the last
    // ones a moment (the figure is per connection over 2 000, one straggler moves it < 1 byte).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let bytes1 = LIVE_BYTES.load(Ordering::Relaxed);
    let sizes1 = by_size();
    let per_conn = (bytes1 - bytes0) as f64 / CONNS as f64;
    let mut rows: Vec<(usize, f64)> = (0..BUCKETS)
        .map(|b| (b * STEP, (sizes1[b] - sizes0[b]) as f64 / CONNS as f64))
        .filter(|(_, n)| n.abs() >= 0.05)
        .collect();
    rows.sort_by(|a, b| (b.0 as f64 * b.1).total_cmp(&(a.0 as f64 * a.1)));
    println!();
    println!(
        "idle_memory: {CONNS} idle handshaken connections, 1 shard, live heap of shard threads"
    );
    println!("live bytes per connection: {per_conn:.0}");
    println!(
        "{:>12} {:>12} {:>14}",
        "size (B, ≤)", "allocs/conn", "bytes/conn"
    );
    for (size, n) in rows.iter().take(20) {
        println!("{size:>12} {n:>12.2} {:>14.0}", *size as f64 * n);
    }
    drop(clients);
}
