//! [`Value`]: a RESP3 reply as callers see it, independent of the codec crate's frame type.
//!
//! The decoder's `OwnedFrame` carries attributes and codec-only kinds (`Hello`, streamed
//! chunks); a `Value` keeps what a reply means. Maps keep the server's order (a `Vec` of pairs,
//! decoded through an ordered map). An error at the top of a reply is not a `Value` but
//! [`ServerError`] (see `pipeline.rs`); an error nested inside an aggregate
//! (an `EXEC` result, a script's table) is [`Value::Error`].

use redis_protocol::resp3::types::{OwnedFrame, VerbatimStringFormat};

use crate::error::{ProtocolError, ServerError};

/// One decoded reply (or one element of an aggregate reply).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `_`: no value (a missing key, a timed-out `BLPOP`).
    Nil,
    /// `:`: a signed 64-bit integer.
    Int(i64),
    /// `$`: a binary-safe string.
    Bulk(Vec<u8>),
    /// `+`: a status line such as `OK` or `PONG`.
    Simple(String),
    /// `,`: a double.
    Double(f64),
    /// `#`: a boolean.
    Bool(bool),
    /// `(`: an integer too large for `i64`, as its decimal text.
    BigNumber(Vec<u8>),
    /// `=`: a string meant for display, with its format (`txt` or `mkd`).
    Verbatim {
        /// True for `mkd`, false for `txt`.
        markdown: bool,
        /// The text without its format prefix.
        text: Vec<u8>,
    },
    /// `*`: an ordered list.
    Array(Vec<Value>),
    /// `%`: key/value pairs in the order the server sent them.
    Map(Vec<(Value, Value)>),
    /// `~`: an unordered collection of distinct values.
    Set(Vec<Value>),
    /// `>`: a push frame nested in a reply (Redis does not send this; kept for completeness).
    Push(Vec<Value>),
    /// An error nested inside an aggregate.
    Error(ServerError),
}

impl Value {
    /// The bytes of a bulk, simple or verbatim string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) | Value::BigNumber(b) => Some(b),
            Value::Simple(s) => Some(s.as_bytes()),
            Value::Verbatim { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The string as UTF-8, when it is a string and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The integer of an `Int`, or of a string holding a decimal integer (Redis answers some
    /// numbers as bulk strings, e.g. `INCRBYFLOAT`, `HGET` of a counter).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => self.as_str().and_then(|s| s.parse().ok()),
        }
    }

    /// The elements of an array, set or push.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// True for `Nil`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// True for the status `OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Value::Simple(s) if s == "OK")
    }

    /// Converts a decoded frame; errors become [`Value::Error`] (the caller lifts a top-level
    /// one out). Codec-only kinds (`Hello`, streamed chunks) are refused: Redis never sends
    /// them, so receiving one means the stream cannot be trusted.
    pub(crate) fn from_frame(frame: OwnedFrame) -> Result<Value, ProtocolError> {
        Ok(match frame {
            OwnedFrame::Null => Value::Nil,
            OwnedFrame::Number { data, .. } => Value::Int(data),
            OwnedFrame::BlobString { data, .. } => Value::Bulk(data),
            OwnedFrame::SimpleString { data, .. } => {
                Value::Simple(String::from_utf8_lossy(&data).into_owned())
            }
            OwnedFrame::Double { data, .. } => Value::Double(data),
            OwnedFrame::Boolean { data, .. } => Value::Bool(data),
            OwnedFrame::BigNumber { data, .. } => Value::BigNumber(data),
            OwnedFrame::VerbatimString { data, format, .. } => Value::Verbatim {
                markdown: matches!(format, VerbatimStringFormat::Markdown),
                text: data,
            },
            OwnedFrame::SimpleError { data, .. } => Value::Error(ServerError::from_text(data)),
            OwnedFrame::BlobError { data, .. } => Value::Error(ServerError::from_text(
                String::from_utf8_lossy(&data).into_owned(),
            )),
            OwnedFrame::Array { data, .. } => Value::Array(Self::list(data)?),
            OwnedFrame::Push { data, .. } => Value::Push(Self::list(data)?),
            OwnedFrame::Set { data, .. } => Value::Set(Self::list(data)?),
            OwnedFrame::Map { data, .. } => Value::Map(
                // redis-protocol 6 builds a map by popping pairs off the end of the decoded
                // list, so its (ordered) map holds them last first; reversing restores the
                // server's order (pinned by the pipeline's byte-at-a-time test).
                data.into_iter()
                    .rev()
                    .map(|(k, v)| Ok((Value::from_frame(k)?, Value::from_frame(v)?)))
                    .collect::<Result<_, ProtocolError>>()?,
            ),
            OwnedFrame::Hello { .. } | OwnedFrame::ChunkedString(_) => {
                return Err(ProtocolError::Streamed)
            }
        })
    }

    fn list<I: IntoIterator<Item = OwnedFrame>>(frames: I) -> Result<Vec<Value>, ProtocolError> {
        frames.into_iter().map(Value::from_frame).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_read_the_shapes_redis_uses_for_numbers_and_strings() {
        assert_eq!(Value::Int(7).as_int(), Some(7));
        assert_eq!(Value::Bulk(b"42".to_vec()).as_int(), Some(42));
        assert_eq!(Value::Bulk(b"x".to_vec()).as_int(), None);
        assert_eq!(Value::Simple("OK".into()).as_str(), Some("OK"));
        assert!(Value::Simple("OK".into()).is_ok());
        assert!(!Value::Bulk(b"OK".to_vec()).is_ok());
        assert!(Value::Nil.is_nil());
        assert_eq!(Value::Nil.as_bytes(), None);
        let a = Value::Array(vec![Value::Int(1)]);
        assert_eq!(a.as_array(), Some(&[Value::Int(1)][..]));
    }
}
