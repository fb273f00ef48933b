//! [`Push`]: out-of-band data, which in RESP3 arrives as `>` frames between replies.
//!
//! A push never answers a request, so the pipeline routes it apart from the FIFO of replies:
//! pub/sub messages, client-side-caching invalidations, and subscription confirmations that
//! no request is waiting for. One kind is not from the server: [`Push::Reconnected`] tells the
//! consumer that the link was re-established, so whatever was pushed while it was down is lost
//! (pub/sub is a hint; reconcile from the data).

use crate::value::Value;

/// One push, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    /// `message`: a `PUBLISH` to a channel this connection subscribed to.
    Message {
        /// The channel.
        channel: Vec<u8>,
        /// What was published.
        payload: Vec<u8>,
    },
    /// `pmessage`: a `PUBLISH` matched by a `PSUBSCRIBE` pattern.
    PMessage {
        /// The pattern that matched.
        pattern: Vec<u8>,
        /// The channel published to.
        channel: Vec<u8>,
        /// What was published.
        payload: Vec<u8>,
    },
    /// `smessage`: a sharded `SPUBLISH` (Redis 7).
    SMessage {
        /// The shard channel.
        channel: Vec<u8>,
        /// What was published.
        payload: Vec<u8>,
    },
    /// `invalidate`: client-side caching (`CLIENT TRACKING on`); `None` means flush everything.
    Invalidate(Option<Vec<Vec<u8>>>),
    /// A (un)subscribe confirmation that no request was waiting for (e.g. the server dropped a
    /// subscription by itself).
    Subscription {
        /// `subscribe`, `psubscribe`, `ssubscribe`, `unsubscribe`, …
        kind: String,
        /// The channel or pattern, if any.
        channel: Option<Vec<u8>>,
        /// How many subscriptions the connection has now.
        count: i64,
    },
    /// Synthetic: the link reconnected (and resubscribed); pushes in between were lost.
    Reconnected,
    /// Any other push, whole.
    Other(Vec<Value>),
}

/// The kinds that confirm a (un)subscribe request; they complete it rather than flowing out.
pub(crate) fn is_subscription_kind(kind: &[u8]) -> bool {
    matches!(
        kind,
        b"subscribe"
            | b"psubscribe"
            | b"ssubscribe"
            | b"unsubscribe"
            | b"punsubscribe"
            | b"sunsubscribe"
    )
}

/// The first element of a push (its kind), when it is a string.
pub(crate) fn push_kind(items: &[Value]) -> Option<&[u8]> {
    items.first().and_then(Value::as_bytes)
}

impl Push {
    /// Classifies a push frame's elements; a shape it does not know stays whole in `Other`.
    pub(crate) fn classify(items: Vec<Value>) -> Push {
        match Push::parse(&items) {
            Some(push) => push,
            None => Push::Other(items),
        }
    }

    fn parse(items: &[Value]) -> Option<Push> {
        let bytes = |i: usize| items.get(i).and_then(Value::as_bytes).map(<[u8]>::to_vec);
        match (push_kind(items)?, items.len()) {
            (b"message", 3) => Some(Push::Message {
                channel: bytes(1)?,
                payload: bytes(2)?,
            }),
            (b"smessage", 3) => Some(Push::SMessage {
                channel: bytes(1)?,
                payload: bytes(2)?,
            }),
            (b"pmessage", 4) => Some(Push::PMessage {
                pattern: bytes(1)?,
                channel: bytes(2)?,
                payload: bytes(3)?,
            }),
            (b"invalidate", 2) => match &items[1] {
                Value::Nil => Some(Push::Invalidate(None)),
                Value::Array(keys) => keys
                    .iter()
                    .map(|k| k.as_bytes().map(<[u8]>::to_vec))
                    .collect::<Option<Vec<_>>>()
                    .map(|keys| Push::Invalidate(Some(keys))),
                _ => None,
            },
            (kind, 3) if is_subscription_kind(kind) => match items[2] {
                Value::Int(count) => Some(Push::Subscription {
                    kind: String::from_utf8_lossy(kind).into_owned(),
                    channel: bytes(1),
                    count,
                }),
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn messages_invalidations_and_confirmations_are_told_apart() {
        assert_eq!(
            Push::classify(vec![bulk("message"), bulk("ch"), bulk("hi")]),
            Push::Message {
                channel: b"ch".to_vec(),
                payload: b"hi".to_vec()
            }
        );
        assert_eq!(
            Push::classify(vec![bulk("pmessage"), bulk("c.*"), bulk("c.1"), bulk("x")]),
            Push::PMessage {
                pattern: b"c.*".to_vec(),
                channel: b"c.1".to_vec(),
                payload: b"x".to_vec()
            }
        );
        assert_eq!(
            Push::classify(vec![bulk("invalidate"), Value::Array(vec![bulk("k")])]),
            Push::Invalidate(Some(vec![b"k".to_vec()]))
        );
        assert_eq!(
            Push::classify(vec![bulk("invalidate"), Value::Nil]),
            Push::Invalidate(None)
        );
        assert_eq!(
            Push::classify(vec![bulk("unsubscribe"), Value::Nil, Value::Int(0)]),
            Push::Subscription {
                kind: "unsubscribe".into(),
                channel: None,
                count: 0
            }
        );
        // A malformed message is kept whole rather than dropped.
        let odd = vec![bulk("message"), Value::Int(1), bulk("x")];
        assert_eq!(Push::classify(odd.clone()), Push::Other(odd));
    }
}
