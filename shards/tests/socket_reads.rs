//! The read path of the patched glommio (vendor/glommio/PATCHED.md, change 2): stream sockets
//! wait for read readiness in one edge-triggered epoll set per executor. An edge-triggered set
//! reports each change once, so a read that misses one waits forever; these are the two ways
//! the first version of the patch lost one (both hung reads that upstream glommio finishes).
//! Each read is bounded by a timeout, so a lost edge fails the test instead of hanging it.

use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::{timeout, Timer};
use glommio::LocalExecutorBuilder;

/// Long enough for any read that is not lost.
const PATIENCE: Duration = Duration::from_secs(5);

/// Runs `test` on a fresh executor of its own.
fn on_executor<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .spawn(test)
        .expect("executor")
        .join()
        .expect("test task");
}

async fn read_within(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    timeout(PATIENCE, async { Ok(s.read(buf).await) })
        .await
        .map_err(|_| std::io::Error::other("read lost its wake-up: timed out"))?
}

/// The peer's last bytes and its end of stream come under one edge while the reader waits.
/// The read that takes the bytes is short (the socket looks drained), and the end of stream
/// must still reach the next read as 0.
#[test]
fn the_end_of_stream_that_came_with_the_last_data_is_still_read() {
    on_executor(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut server = listener.accept().await.unwrap();
        let reader = glommio::spawn_local(async move {
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            loop {
                let n = read_within(&mut server, &mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(got);
                }
                got.extend_from_slice(&buf[..n]);
            }
        });
        // The reader runs first and waits in the epoll set.
        Timer::new(Duration::from_millis(20)).await;
        client.write_all(b"msg1").await.unwrap();
        client.close().await.unwrap();
        assert_eq!(reader.await.unwrap(), b"msg1");
    });
}

/// A socket whose reads found data at once has never waited, so the epoll set has no slot for
/// it yet. Its next edge may be collected while another socket's reader is the one waiting;
/// the edge must be kept for it, or its next read waits forever.
#[test]
fn an_edge_of_a_socket_that_never_waited_is_kept() {
    on_executor(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // A waits for data that comes only at the end: the set has a reader to collect for.
        let mut client_a = TcpStream::connect(addr).await.unwrap();
        let mut server_a = listener.accept().await.unwrap();
        let waiting = glommio::spawn_local(async move {
            let mut b = [0u8; 16];
            read_within(&mut server_a, &mut b).await
        });
        Timer::new(Duration::from_millis(10)).await;
        // B (a higher descriptor) has data before its first read: short, no wait.
        let mut client_b = TcpStream::connect(addr).await.unwrap();
        client_b.write_all(b"req1").await.unwrap();
        let mut server_b = listener.accept().await.unwrap();
        Timer::new(Duration::from_millis(10)).await;
        let mut b = [0u8; 16];
        assert_eq!(read_within(&mut server_b, &mut b).await.unwrap(), 4);
        // B's next data arrives and its edge is collected (for A) before B reads again.
        client_b.write_all(b"req2").await.unwrap();
        Timer::new(Duration::from_millis(10)).await;
        let second = read_within(&mut server_b, &mut b).await;
        client_a.write_all(b"x").await.unwrap();
        assert_eq!(waiting.await.unwrap(), 1);
        assert_eq!(second.unwrap(), 4, "B's second request was read");
    });
}
