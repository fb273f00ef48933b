//! Heap allocations per request on the gateway's hot path, at steady state: how many
//! allocations (and bytes) the gateway's shard threads make to serve one `health` and one
//! `agent` request, the figure that allocation work on the hot path should bring down.
//!
//! A real gateway (`shardgate::app::serve`, one shard, token auth, in-memory queue, no log
//! subscriber) runs in this process; one client (`shardgate::client::Client` over loopback)
//! sends requests one at a time. A counting `#[global_allocator]` wraps mimalloc (the binary's
//! allocator) and files every allocation under the thread that made it, told by its OS name:
//! glommio names its executor threads `<pool name>-<n>`, and the gateway's pool is `shard`, so
//! `shard-*` threads are the gateway's hot path. The client (this main thread) and every other
//! thread are counted apart, so the client's own JSON work does not pollute the figure.
//!
//! Not a criterion group: it prints a table, counts only, and times nothing (counting slows
//! every allocation). Run with `cargo bench -p shardgate-bench --bench alloc_per_request`.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde_json::json;
use shardgate::client::Client;
use shardgate_bench::{agent_params, InProcessGateway};

/// Requests before counting (caches, buffers and maps reach their working size).
const WARMUP: u64 = 2_000;
/// Requests counted per method.
const COUNTED: u64 = 10_000;

/// Which counters a thread's allocations go to.
const SHARD: usize = 0;
const CLIENT: usize = 1;
const OTHER: usize = 2;
const CLASSES: usize = 3;

/// What is counted per class.
const ALLOCS: usize = 0;
const REALLOCS: usize = 1;
const BYTES: usize = 2;
const FREES: usize = 3;
const KINDS: usize = 4;

/// `[class][kind]`: allocations (`alloc`, `alloc_zeroed`), reallocations, bytes requested by
/// both (a realloc counts its new size), frees.
static COUNTS: [[AtomicU64; KINDS]; CLASSES] =
    [const { [const { AtomicU64::new(0) }; KINDS] }; CLASSES];
/// Bumped to make every thread look at its name again (names are set after a thread starts).
static EPOCH: AtomicU32 = AtomicU32::new(1);

thread_local! {
    /// (epoch seen, class). Const-initialised `Cell` of `Copy`: no lazy allocation, no
    /// destructor, so it is safe to touch from inside the allocator.
    static CLASS: Cell<(u32, usize)> = const { Cell::new((0, OTHER)) };
    /// Set by the client thread on itself.
    static IS_CLIENT: Cell<bool> = const { Cell::new(false) };
}

fn classify() -> usize {
    if IS_CLIENT.try_with(Cell::get).unwrap_or(false) {
        return CLIENT;
    }
    let mut buf = [0u8; 16];
    // SAFETY: `buf` is 16 bytes, the most a Linux thread name takes (with its NUL); the call
    // reads the calling thread's name (prctl) and allocates nothing.
    let rc = unsafe {
        libc::pthread_getname_np(libc::pthread_self(), buf.as_mut_ptr().cast(), buf.len())
    };
    if rc == 0 && buf.starts_with(b"shard-") {
        SHARD
    } else {
        OTHER
    }
}

fn class() -> usize {
    let epoch = EPOCH.load(Ordering::Relaxed);
    CLASS
        .try_with(|c| {
            let (seen, class) = c.get();
            if seen == epoch {
                return class;
            }
            let class = classify();
            c.set((epoch, class));
            class
        })
        .unwrap_or(OTHER)
}

struct Counting;

impl Counting {
    fn count(kind: usize, bytes: usize) {
        let c = &COUNTS[class()];
        c[kind].fetch_add(1, Ordering::Relaxed);
        c[BYTES].fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to mimalloc; the wrapper only bumps counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(ALLOCS, layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(ALLOCS, layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(REALLOCS, new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        COUNTS[class()][FREES].fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

type Snapshot = [[u64; KINDS]; CLASSES];

fn snapshot() -> Snapshot {
    let mut s = [[0; KINDS]; CLASSES];
    for (class, row) in COUNTS.iter().enumerate() {
        for (i, v) in row.iter().enumerate() {
            s[class][i] = v.load(Ordering::Relaxed);
        }
    }
    s
}

/// Counts over `n` calls of `one`, per call, by class.
fn per_request(n: u64, mut one: impl FnMut()) -> [[f64; KINDS]; CLASSES] {
    // Every thread reclassifies itself at its next allocation: all names are set by now.
    EPOCH.fetch_add(1, Ordering::SeqCst);
    let before = snapshot();
    for _ in 0..n {
        one();
    }
    let after = snapshot();
    let mut out = [[0.0; KINDS]; CLASSES];
    for class in 0..CLASSES {
        for i in 0..KINDS {
            out[class][i] = (after[class][i] - before[class][i]) as f64 / n as f64;
        }
    }
    out
}

fn health(c: &mut Client) {
    c.request("health", json!({}), false, |_| {})
        .expect("health answers");
}

fn main() {
    // Criterion-style flags (`--bench`, filters) are accepted and ignored.
    IS_CLIENT.with(|c| c.set(true));
    let gw = InProcessGateway::start();
    let mut client = gw.client();
    let mut n = 0u64;
    let mut agent = |c: &mut Client| {
        n += 1;
        c.request("agent", agent_params(n), true, |_| {})
            .expect("agent answers");
    };

    for _ in 0..WARMUP {
        health(&mut client);
    }
    let h = per_request(COUNTED, || health(&mut client));
    for _ in 0..WARMUP {
        agent(&mut client);
    }
    let a = per_request(COUNTED, || agent(&mut client));
    client.close();

    println!();
    println!(
        "alloc_per_request: steady state, {WARMUP} warm-up + {COUNTED} counted requests per method, 1 shard, one client over loopback"
    );
    println!(
        "{:<8} {:<20} {:>11} {:>13} {:>11} {:>11}",
        "method", "threads", "allocs/req", "reallocs/req", "bytes/req", "frees/req"
    );
    for (method, r) in [("health", h), ("agent", a)] {
        for (class, name) in [
            (SHARD, "gateway (shard-*)"),
            (OTHER, "gateway (other)"),
            (CLIENT, "client (bench)"),
        ] {
            println!(
                "{method:<8} {name:<20} {:>11.2} {:>13.2} {:>11.1} {:>11.2}",
                r[class][ALLOCS], r[class][REALLOCS], r[class][BYTES], r[class][FREES]
            );
        }
    }
}
