//! The client against a real `redis-server` (Debian's 7.0), one private server per test
//! (`RedisServer`, feature `test-server`). Each test runs on a fresh glommio executor; every
//! wait is on a condition with a deadline, so a broken client fails a test instead of hanging.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use glommio::timer::{timeout, Timer};
use glommio::LocalExecutorBuilder;
use shardgate_redis::test_server::RedisServer;
use shardgate_redis::{
    Blocking, Client, Error, ErrorCode, Options, Push, Script, Subscriber, Value,
};

/// Far longer than anything here should take; only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(10);

fn on_executor<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .spawn(test)
        .expect("executor")
        .join()
        .expect("test task");
}

fn server() -> RedisServer {
    RedisServer::start().expect("start redis-server")
}

/// Quick reconnects so the tests that kill the server stay short.
fn opts(server: &RedisServer) -> Options {
    Options {
        reconnect_min: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(200),
        client_name: Some("shardgate-test".into()),
        ..Options::new(server.addr())
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    timeout(PATIENCE, async { Ok(f.await) })
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {PATIENCE:?}"))
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

/// Waits until `INFO clients` on `probe` reports `n` blocked clients.
async fn until_blocked_clients(probe: &Client, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    let want = format!("blocked_clients:{n}\r\n");
    loop {
        let info = probe.call(&[b"INFO", b"clients"]).await.expect("INFO");
        if info.as_str().is_some_and(|s| s.contains(&want)) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {want:?}: {info:?}");
        Timer::new(Duration::from_millis(5)).await;
    }
}

#[test]
fn set_get_and_typed_replies() {
    let server = server();
    on_executor(move || async move {
        let c = Client::connect(opts(&server)).await.expect("connect");
        let set = c.call(&[b"SET", b"k", b"v"]).await.unwrap();
        assert!(set.is_ok(), "{set:?}");
        assert_eq!(c.call(&[b"GET", b"k"]).await.unwrap(), bulk("v"));
        assert_eq!(c.call(&[b"GET", b"nope"]).await.unwrap(), Value::Nil);
        match c.call(&[b"LPUSH", b"k", b"x"]).await {
            Err(Error::Server(e)) => assert_eq!(e.code, ErrorCode::WrongType),
            other => panic!("expected WRONGTYPE, got {other:?}"),
        }
        // The handshake switched the connection to RESP3: HGETALL answers a map.
        c.call(&[b"HSET", b"h", b"a", b"1", b"b", b"2"])
            .await
            .unwrap();
        let map = c.call(&[b"HGETALL", b"h"]).await.unwrap();
        let Value::Map(mut pairs) = map else {
            panic!("HGETALL is not a RESP3 map: {map:?}")
        };
        pairs.sort_by(|x, y| x.0.as_bytes().cmp(&y.0.as_bytes()));
        assert_eq!(pairs, vec![(bulk("a"), bulk("1")), (bulk("b"), bulk("2"))]);
        // SETNAME from the options.
        let name = c.call(&[b"CLIENT", b"GETNAME"]).await.unwrap();
        assert_eq!(name, bulk("shardgate-test"));
        let s = c.stats();
        assert_eq!((s.commands, s.errors), (7, 1));
        assert!(s.replies >= 7 && s.mean_rtt().is_some());
    });
}

/// 1000 callers on one executor, all in flight at once on one connection: each gets the reply
/// to its own command. The shared counter's value tells which command a reply answers: the
/// i-th INCR sent must get i.
#[test]
fn a_thousand_pipelined_incrs_complete_in_order() {
    let server = server();
    on_executor(move || async move {
        let c = Client::connect(opts(&server)).await.expect("connect");
        let sent = Rc::new(Cell::new(0i64));
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (c, sent) = (c.clone(), sent.clone());
                glommio::spawn_local(async move {
                    // Queued synchronously in this poll, so `turn` is the send order.
                    let turn = sent.get() + 1;
                    sent.set(turn);
                    let got = c.call(&[b"INCR", b"counter"]).await.expect("INCR");
                    (turn, got)
                })
            })
            .collect();
        futures_lite::future::yield_now().await;
        assert!(c.in_flight() > 1, "commands were not pipelined");
        for t in tasks {
            let (turn, got) = within("INCR", t).await;
            assert_eq!(got, Value::Int(turn), "a reply went to the wrong caller");
        }
        // Ten callers, each sending its own key's INCRs one after another, interleaved.
        let own: Vec<_> = (0..10)
            .map(|i| {
                let c = c.clone();
                glommio::spawn_local(async move {
                    let key = format!("own:{i}");
                    let mut seen = Vec::new();
                    for _ in 0..100 {
                        let v = c.call(&[b"INCR", key.as_bytes()]).await.expect("INCR");
                        seen.push(v.as_int().expect("int"));
                    }
                    seen
                })
            })
            .collect();
        for t in own {
            assert_eq!(within("own INCRs", t).await, (1..=100).collect::<Vec<_>>());
        }
        assert_eq!(
            c.call(&[b"GET", b"counter"]).await.unwrap().as_int(),
            Some(1000)
        );
        assert_eq!(c.stats().errors, 0);
    });
}

#[test]
fn evalsha_loads_the_script_again_after_script_flush() {
    let server = server();
    on_executor(move || async move {
        let c = Client::connect(opts(&server)).await.expect("connect");
        let script = Script::new("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}");
        let exists = || async {
            c.call(&[b"SCRIPT", b"EXISTS", script.sha1().as_bytes()])
                .await
                .unwrap()
        };
        assert_eq!(exists().await, Value::Array(vec![Value::Int(0)]));
        let first = c.eval(&script, &[b"n"], &[b"a"]).await.expect("eval");
        assert_eq!(
            first,
            Value::Array(vec![bulk("n"), bulk("a"), Value::Int(1)])
        );
        assert_eq!(exists().await, Value::Array(vec![Value::Int(1)]));

        assert!(c.call(&[b"SCRIPT", b"FLUSH"]).await.unwrap().is_ok());
        assert_eq!(exists().await, Value::Array(vec![Value::Int(0)]));
        let again = c
            .eval(&script, &[b"n"], &[b"b"])
            .await
            .expect("eval after flush");
        assert_eq!(
            again,
            Value::Array(vec![bulk("n"), bulk("b"), Value::Int(2)])
        );
        assert_eq!(exists().await, Value::Array(vec![Value::Int(1)]));

        // A script's own error is the caller's, typed.
        let bad = Script::new("return redis.call('LPUSH', KEYS[1], 'x')");
        match c.eval(&bad, &[b"n"], &[]).await {
            Err(Error::Server(e)) => assert_eq!(e.code, ErrorCode::WrongType, "{e}"),
            other => panic!("expected WRONGTYPE from the script, got {other:?}"),
        }
    });
}

#[test]
fn pubsub_messages_arrive_as_pushes() {
    let server = server();
    on_executor(move || async move {
        let c = Client::connect(opts(&server)).await.expect("connect");
        let (sub, mut rx) = Subscriber::connect(opts(&server))
            .await
            .expect("subscriber");
        sub.subscribe(&[b"news", b"other"])
            .await
            .expect("subscribe");
        sub.psubscribe(&[b"ev.*"]).await.expect("psubscribe");
        let publish = |ch: &'static [u8], msg: &'static [u8]| {
            let c = c.clone();
            async move { c.call(&[b"PUBLISH", ch, msg]).await.unwrap() }
        };
        assert_eq!(publish(b"news", b"hello").await, Value::Int(1));
        assert_eq!(publish(b"ev.start", b"go").await, Value::Int(1));
        assert_eq!(
            within("message", rx.next()).await,
            Some(Push::Message {
                channel: b"news".to_vec(),
                payload: b"hello".to_vec()
            })
        );
        assert_eq!(
            within("pmessage", rx.next()).await,
            Some(Push::PMessage {
                pattern: b"ev.*".to_vec(),
                channel: b"ev.start".to_vec(),
                payload: b"go".to_vec()
            })
        );
        sub.unsubscribe(&[b"news"]).await.expect("unsubscribe");
        assert_eq!(publish(b"news", b"unheard").await, Value::Int(0));
        assert_eq!(publish(b"other", b"heard").await, Value::Int(1));
        assert_eq!(
            within("message after unsubscribe", rx.next()).await,
            Some(Push::Message {
                channel: b"other".to_vec(),
                payload: b"heard".to_vec()
            })
        );
        sub.close();
        assert_eq!(within("end of pushes", rx.next()).await, None);
    });
}

/// Client-side caching on the pipelined connection: the `invalidate` push arrives on the push
/// channel while replies keep their order.
#[test]
fn invalidations_arrive_beside_the_replies() {
    let server = server();
    on_executor(move || async move {
        let c = Client::connect(opts(&server)).await.expect("connect");
        let mut pushes = c.pushes();
        let other = Client::connect(opts(&server)).await.expect("connect");
        assert!(c
            .call(&[b"CLIENT", b"TRACKING", b"on"])
            .await
            .unwrap()
            .is_ok());
        assert_eq!(c.call(&[b"GET", b"cached"]).await.unwrap(), Value::Nil);
        assert!(other
            .call(&[b"SET", b"cached", b"x"])
            .await
            .unwrap()
            .is_ok());
        assert_eq!(
            within("invalidate", pushes.next()).await,
            Some(Push::Invalidate(Some(vec![b"cached".to_vec()])))
        );
        assert_eq!(c.call(&[b"GET", b"cached"]).await.unwrap(), bulk("x"));
        let s = c.stats();
        assert_eq!((s.pushes, s.pushes_dropped), (1, 0));
    });
}

#[test]
fn a_blocked_xreadgroup_does_not_stall_the_pipelined_connection() {
    let server = server();
    on_executor(move || async move {
        let c = Client::connect(opts(&server)).await.expect("connect");
        let group = c
            .call(&[b"XGROUP", b"CREATE", b"jobs", b"workers", b"$", b"MKSTREAM"])
            .await
            .unwrap();
        assert!(group.is_ok());
        let b = Blocking::connect(opts(&server)).await.expect("blocking");
        let done = Rc::new(Cell::new(false));
        let read = {
            let done = done.clone();
            glommio::spawn_local(async move {
                let got = b
                    .call(
                        &[
                            b"XREADGROUP",
                            b"GROUP",
                            b"workers",
                            b"w1",
                            b"COUNT",
                            b"1",
                            b"BLOCK",
                            b"10000",
                            b"STREAMS",
                            b"jobs",
                            b">",
                        ],
                        Duration::from_secs(10),
                    )
                    .await;
                done.set(true);
                got
            })
        };
        until_blocked_clients(&c, 1).await;
        // Each PING is answered while the read stays blocked on its own connection.
        for _ in 0..200 {
            assert_eq!(
                within("PING beside a blocked read", c.call(&[b"PING"]))
                    .await
                    .unwrap(),
                Value::Simple("PONG".into())
            );
        }
        assert!(
            !done.get(),
            "the blocking read returned before anything was added"
        );
        let id = c
            .call(&[b"XADD", b"jobs", b"*", b"job", b"42"])
            .await
            .unwrap();
        let got = within("XREADGROUP", read).await.expect("XREADGROUP");
        // RESP3: {jobs: [[id, [job, 42]]]}
        let want = Value::Map(vec![(
            bulk("jobs"),
            Value::Array(vec![Value::Array(vec![
                id,
                Value::Array(vec![bulk("job"), bulk("42")]),
            ])]),
        )]);
        assert_eq!(got, want);
    });
}

/// A command without a reply in time fails with `Timeout`; its late reply is discarded and
/// the next command still gets its own reply (the pairing survives the timeout).
#[test]
fn a_timed_out_command_does_not_shift_later_replies() {
    let server = server();
    on_executor(move || async move {
        let c = Client::connect(opts(&server)).await.expect("connect");
        let pauser = Client::connect(opts(&server)).await.expect("connect");
        let paused = pauser
            .call(&[b"CLIENT", b"PAUSE", b"300", b"ALL"])
            .await
            .unwrap();
        assert!(paused.is_ok());
        let short = Duration::from_millis(50);
        assert_eq!(
            c.call_within(&[b"ECHO", b"one"], short).await,
            Err(Error::Timeout(short))
        );
        assert!(c.is_connected(), "a timeout must not drop the connection");
        // Answered after the pause: the late "one" goes nowhere, "two" comes to its caller.
        assert_eq!(c.call(&[b"ECHO", b"two"]).await.unwrap(), bulk("two"));
        let s = c.stats();
        assert_eq!((s.timeouts, s.errors), (1, 1));
        assert_eq!(
            s.replies, 3,
            "HELLO, the late ECHO and the second ECHO: {s:?}"
        );
    });
}

/// kill -9 of the server: a command in flight fails with `Disconnected` at once (not at its
/// timeout), and new commands fail with `Disconnected`: at once when failing fast, at their
/// timeout when waiting for a reconnect that does not come.
#[test]
fn a_killed_server_fails_in_flight_and_new_commands_with_disconnected() {
    let mut server = server();
    on_executor(move || async move {
        let long = Duration::from_secs(60);
        let waiting = Client::connect(Options {
            command_timeout: Duration::from_millis(300),
            ..opts(&server)
        })
        .await
        .expect("connect");
        // Its timeout outlasts `within`'s patience: an answer at all is a fast failure.
        let fast = Client::connect(Options {
            fail_fast: true,
            command_timeout: long,
            ..opts(&server)
        })
        .await
        .expect("connect");
        let probe = Client::connect(opts(&server)).await.expect("connect");
        // In flight for as long as the server lives: BLPOP on a key nobody pushes.
        let in_flight = {
            let c = waiting.clone();
            glommio::spawn_local(
                async move { c.call_within(&[b"BLPOP", b"never", b"0"], long).await },
            )
        };
        until_blocked_clients(&probe, 1).await;
        server.kill9();
        // Answered long before its 60 s timeout (`within` gives up after 10 s).
        let r = within("in-flight BLPOP", in_flight).await;
        assert_eq!(r, Err(Error::Disconnected));

        // The fail-fast client may need a moment to see its own connection drop.
        let deadline = Instant::now() + PATIENCE;
        while fast.is_connected() {
            assert!(Instant::now() < deadline, "never noticed the server died");
            Timer::new(Duration::from_millis(5)).await;
        }
        assert_eq!(
            within("fail-fast PING", fast.call(&[b"PING"])).await,
            Err(Error::Disconnected)
        );

        let t = Instant::now();
        assert_eq!(
            within("waiting PING", waiting.call(&[b"PING"])).await,
            Err(Error::Disconnected)
        );
        // It waited for a reconnect until its own 300 ms timeout, not less.
        assert!(t.elapsed() >= Duration::from_millis(300));
        let s = waiting.stats();
        assert_eq!(s.disconnected, 2, "{s:?}");
    });
}

/// The server comes back on the same port: the clients reconnect by themselves (the
/// subscriber resubscribes and says so) and commands succeed without any call to reconnect.
#[test]
fn clients_reconnect_by_themselves_after_a_restart() {
    let mut server = server();
    on_executor(move || async move {
        let c = Client::connect(Options {
            command_timeout: PATIENCE,
            ..opts(&server)
        })
        .await
        .expect("connect");
        let (sub, mut rx) = Subscriber::connect(opts(&server))
            .await
            .expect("subscriber");
        sub.subscribe(&[b"ch"]).await.expect("subscribe");
        assert!(c.call(&[b"SET", b"k", b"1"]).await.unwrap().is_ok());

        server.kill9();
        let deadline = Instant::now() + PATIENCE;
        while c.is_connected() {
            assert!(Instant::now() < deadline, "never noticed the server died");
            Timer::new(Duration::from_millis(5)).await;
        }
        server.restart().expect("restart");

        // Waits for the reconnect within its timeout, then runs.
        assert_eq!(c.call(&[b"GET", b"k"]).await.unwrap(), bulk("1"));
        assert!(c.stats().reconnects >= 1);
        assert_eq!(
            within("reconnect notice", rx.next()).await,
            Some(Push::Reconnected)
        );
        assert_eq!(
            c.call(&[b"PUBLISH", b"ch", b"back"]).await.unwrap(),
            Value::Int(1),
            "the subscriber did not resubscribe"
        );
        assert_eq!(
            within("message after restart", rx.next()).await,
            Some(Push::Message {
                channel: b"ch".to_vec(),
                payload: b"back".to_vec()
            })
        );
    });
}

/// With `appendfsync always`, what Redis acknowledged is on disk: it survives kill -9.
#[test]
fn acknowledged_writes_survive_kill_9_and_restart() {
    let mut server = server();
    on_executor(move || async move {
        {
            let c = Client::connect(opts(&server)).await.expect("connect");
            for i in 0..100 {
                let v = i.to_string();
                c.call(&[b"XADD", b"acked", b"*", b"n", v.as_bytes()])
                    .await
                    .expect("XADD");
            }
            assert!(c.call(&[b"SET", b"last", b"99"]).await.unwrap().is_ok());
            c.close();
        }
        server.kill9();
        server.restart().expect("restart");
        let c = Client::connect(opts(&server)).await.expect("connect");
        assert_eq!(c.call(&[b"XLEN", b"acked"]).await.unwrap(), Value::Int(100));
        assert_eq!(c.call(&[b"GET", b"last"]).await.unwrap(), bulk("99"));
    });
}

#[test]
fn connect_to_nothing_fails_with_a_connect_error() {
    // A port that was free a moment ago and has no listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    on_executor(move || async move {
        let r = Client::connect(Options {
            connect_timeout: Duration::from_millis(300),
            ..Options::new(format!("127.0.0.1:{port}"))
        })
        .await;
        assert!(matches!(r, Err(Error::Connect { .. })), "{r:?}");
    });
}

#[test]
fn a_wrong_password_is_refused_at_connect_without_echoing_it() {
    let server = server();
    on_executor(move || async move {
        let c = Client::connect(opts(&server)).await.expect("connect");
        c.call(&[b"CONFIG", b"SET", b"requirepass", b"s3cret"])
            .await
            .unwrap();
        let r = Client::connect(Options {
            password: Some("wrong-pass".into()),
            connect_timeout: Duration::from_millis(500),
            ..opts(&server)
        })
        .await;
        match r {
            Err(e @ Error::Connect { .. }) => {
                let text = e.to_string();
                assert!(text.contains("WRONGPASS"), "{text}");
                assert!(!text.contains("wrong-pass"), "{text}");
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
        let ok = Client::connect(Options {
            password: Some("s3cret".into()),
            ..opts(&server)
        })
        .await
        .expect("connect with the password");
        assert_eq!(
            ok.call(&[b"PING"]).await.unwrap(),
            Value::Simple("PONG".into())
        );
    });
}
