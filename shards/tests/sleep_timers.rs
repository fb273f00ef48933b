//! The sleep path of the patched glommio (vendor/glommio/PATCHED.md, change 5): the timeout
//! armed for the next timer when the executor goes to sleep is kept across sleeps while it has
//! not fired and still ends at the next timer's deadline. When an earlier timer appears, the
//! kept timeout ends too late and must be replaced, or the executor sleeps through the new
//! timer's deadline.

#![expect(
    clippy::disallowed_methods,
    reason = "the test plays a thread outside the shard pool"
)]

use std::net::TcpStream as StdStream;
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::timer::Timer;
use glommio::LocalExecutorBuilder;

/// The timer that is pending while the executor sleeps the first time.
const LONG: Duration = Duration::from_secs(60);
/// The executor's time slice: its preemption timer, armed while tasks run and kept while the
/// executor sleeps, would otherwise wake it within the default 100 ms and hide a late sleep
/// timeout.
const SLICE: Duration = Duration::from_secs(30);
/// The timer set after an outside event woke the executor.
const SHORT: Duration = Duration::from_millis(20);

#[test]
fn a_timer_set_after_a_sleep_wakes_the_executor_before_the_pending_later_one() {
    let late_by = LocalExecutorBuilder::default()
        .preempt_timer(SLICE)
        .spawn(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // Pending all along: the executor's first sleep arms a timeout for it.
            let long = glommio::spawn_local(Timer::new(LONG));
            // The outside event, once the executor sleeps: a connection from another thread.
            let peer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                StdStream::connect(addr).expect("connect")
            });
            let _conn = listener.accept().await.unwrap();
            // Now the next deadline is SHORT away, far before LONG's.
            let set = Instant::now();
            Timer::new(SHORT).await;
            let elapsed = set.elapsed();
            drop(long);
            drop(peer.join());
            elapsed
        })
        .expect("executor")
        .join()
        .expect("test task");
    // On time it fires after SHORT (plus scheduling); a kept timeout for LONG would let the
    // executor sleep until the slice's or LONG's deadline. The bound is far from all three.
    assert!(
        late_by >= SHORT && late_by < SLICE / 3,
        "the short timer fired after {late_by:?}"
    );
}
