//! How a platform message enters the pipeline: as a `chat.send` request of an in-process
//! client, dispatched like any connection's request ([`crate::routing::dispatch`]: owner
//! shard, dedup, admission, journal, lane), whose answer tells the channel driver whether
//! the message was admitted.
//!
//! The client is a connection without a socket on the driver's shard ([`Submitter`]): its
//! answers and the events of the sessions it wrote to are queued on it like on any
//! connection, and a task of its own reads them (answers resolve waiting submissions,
//! events are dropped: replies leave through the channel's reply jobs, not through events).
//! It never authenticates, so it counts as a socket, not as a connection, in `/metrics`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::addr::{Caller, ConnRef, ReplyTo};
use crate::protocol::connect::{ClientInfo, ConnAuth};
use crate::protocol::method::{ChatMethod, Method};
use crate::protocol::params::Params;
use crate::shard::GatewayShard;
use crate::transport::conn::Outbound;

/// The longest a submission waits for its answer (the journal's write included).
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// Why a message was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The gateway's error message.
    pub why: String,
    /// Its retry hint, ms.
    pub retry_after_ms: Option<u64>,
}

/// An in-process client submitting one channel's messages.
pub struct Submitter {
    conn: ConnRef,
    auth: Arc<ConnAuth>,
    next: Cell<u64>,
    waiting: Rc<RefCell<HashMap<String, futures_channel::oneshot::Sender<Value>>>>,
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Submitter {
    /// A client for channel `name` on `shard`, with the task that reads its answers.
    pub fn open(shard: &Rc<GatewayShard>, name: &str) -> Submitter {
        let conn = shard.add_conn(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let waiting: Rc<RefCell<HashMap<String, futures_channel::oneshot::Sender<Value>>>> =
            Rc::default();
        let w = waiting.clone();
        let c = conn.clone();
        glommio::spawn_local(async move {
            loop {
                let batch = c.next_batch().await;
                let closing = batch.close.clone();
                // Taken is as good as written: the send buffer's bound counts what is left.
                c.written(batch.frames.iter().map(Outbound::len).sum());
                for f in &batch.frames {
                    if let Outbound::Text(t) = f {
                        // Events (the sessions' runs) are not read; an answer's keys may come in
                        // any order (`res_err` sorts them).
                        if t.starts_with(r#"{"type":"event""#) {
                            continue;
                        }
                        let Ok(v) = serde_json::from_str::<Value>(t) else {
                            continue;
                        };
                        if v["type"] != "res" {
                            continue;
                        }
                        let tx = v["id"].as_str().and_then(|id| w.borrow_mut().remove(id));
                        if let Some(tx) = tx {
                            let _ = tx.send(v);
                        }
                    }
                }
                batch.recycle();
                if closing.is_some() {
                    // Answers that will not come: their submissions see the drop.
                    w.borrow_mut().clear();
                    return;
                }
            }
        })
        .detach();
        let client = ClientInfo {
            id: format!("channel:{name}").into(),
            display_name: Some(format!("channel {name}").into()),
            version: env!("CARGO_PKG_VERSION").into(),
            platform: "linux".into(),
            mode: "backend".into(),
            ..ClientInfo::default()
        };
        Submitter {
            conn: shard.conn_ref(conn.id),
            auth: Arc::new(ConnAuth {
                role: "operator".into(),
                scopes: vec!["operator.write".into()],
                client,
                device_id: None,
                seed: false,
            }),
            next: Cell::new(1),
            waiting,
        }
    }

    /// Submits `message` to `session_key` as `chat.send` with `idem`; Ok once admitted (or
    /// already admitted under that key).
    pub async fn submit(
        &self,
        shard: &Rc<GatewayShard>,
        session_key: &str,
        message: &str,
        idem: &str,
    ) -> Result<(), Refused> {
        let n = self.next.get();
        self.next.set(n + 1);
        let id = format!("ch{n}");
        let (tx, rx) = futures_channel::oneshot::channel();
        self.waiting.borrow_mut().insert(id.clone(), tx);
        let method = Method::Chat(ChatMethod::ChatSend);
        let params = Params::for_method(
            Some(method),
            json!({"sessionKey": session_key, "message": message, "idempotencyKey": idem}),
        );
        let caller = Caller {
            conn: self.conn,
            auth: self.auth.clone(),
            received_us: shard.shared().mono_us(),
        };
        let reply = ReplyTo {
            conn: self.conn,
            req_id: id.clone(),
        };
        crate::routing::dispatch(shard.clone(), caller, reply, method, params);
        let answer = glommio::timer::timeout(ANSWER_WAIT, async {
            Ok(rx.await.map_err(|_| "the gateway dropped the request"))
        })
        .await;
        let v = match answer {
            Ok(Ok(v)) => v,
            Ok(Err(why)) => return Err(refused(why, None)),
            Err(_) => {
                self.waiting.borrow_mut().remove(&id);
                return Err(refused("no answer within 30 s", None));
            }
        };
        if v["ok"] == true {
            return Ok(());
        }
        let e = &v["error"];
        Err(refused(
            e["message"].as_str().unwrap_or("refused"),
            e["retryAfterMs"].as_u64(),
        ))
    }
}

fn refused(why: &str, retry_after_ms: Option<u64>) -> Refused {
    Refused {
        why: why.to_string(),
        retry_after_ms,
    }
}
