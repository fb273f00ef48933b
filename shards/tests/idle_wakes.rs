//! An idle executor sleeps until something happens (vendor/glommio/PATCHED.md, change 7).
//! Its preemption timer is kept armed across sleeps (change 5); when that timer fired in an
//! executor with nothing to run, the executor loop re-armed it (after spinning) and slept
//! again, so an idle executor woke once per time slice: 10 times a second at glommio's default
//! 100 ms, for as long as the gateway was idle.

use std::net::TcpStream as StdStream;
use std::time::Duration;

use glommio::net::TcpListener;
use glommio::LocalExecutorBuilder;

/// The executor's time slice: a broken executor wakes every slice while idle.
const SLICE: Duration = Duration::from_millis(50);
/// How long the idle executor is watched.
const WINDOW: Duration = Duration::from_millis(1500);

/// Voluntary context switches of thread `task` (`/proc/self/task/<tid>`): one per sleep.
fn sleeps(task: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/self/task/{task}/status")).expect("thread status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

#[test]
fn an_idle_executor_does_not_wake_every_time_slice() {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let executor = LocalExecutorBuilder::default()
        .preempt_timer(SLICE)
        .spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            // Some work first, so that the preemption timer is armed when it goes idle.
            for _ in 0..100 {
                glommio::yield_if_needed().await;
            }
            let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
            let tid = me.file_name().unwrap().to_string_lossy().into_owned();
            ready_tx
                .send((listener.local_addr().unwrap(), tid))
                .unwrap();
            // Idle until the test thread connects.
            listener.accept().await.map(drop)
        })
        .expect("executor");
    let (addr, tid) = ready_rx.recv().expect("executor ready");
    // The timer armed while it worked may fire once, a slice after it went idle.
    std::thread::sleep(SLICE * 3);
    let before = sleeps(&tid);
    std::thread::sleep(WINDOW);
    let woke = sleeps(&tid) - before;
    // And it still wakes for what it waits on.
    let _conn = StdStream::connect(addr).expect("connect");
    executor.join().expect("executor").expect("accept");
    // 30 wake-ups in the window when broken (one per 50 ms slice); none when fixed, a few
    // allowed for anything else the thread may do.
    assert!(
        woke < 5,
        "the idle executor slept {woke} times in {WINDOW:?}"
    );
}
