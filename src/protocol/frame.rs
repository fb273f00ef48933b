// Hot path: every inbound request and every outbound frame passes here.
//! Frames of PROTOCOL.md §2: parsing inbound text into a request, and writing outbound
//! `res`/`event` frames as text without building intermediate trees where it can be avoided.

use std::borrow::Cow;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::WireError;
use super::method::Called;
use super::params::{Params, Text};

/// An inbound request after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Non-empty correlation id.
    pub id: String,
    /// The method, looked up once here (a non-empty name).
    pub method: Called,
    /// Parameters (`{}` when absent): a submission's fields, or the JSON object.
    pub params: Params,
}

/// What an inbound text frame turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A valid `req`.
    Request(Request),
    /// The seed article's `{"type":"connect","params":{…}}`.
    SeedConnect(Value),
    /// Not a valid request; `id` is the frame's id when it had a usable one.
    Invalid {
        /// The id to answer, if any.
        id: Option<String>,
        /// Why it is refused.
        reason: String,
    },
}

/// A frame's envelope, read in one pass: `type` and `id` as text (borrowed from the frame
/// unless escaped), `method` looked up as soon as it is read (`None`: absent, empty or not a
/// string), `params` as it comes. A repeated key: the last one counts.
struct RawFrame<'a> {
    kind: Option<Text<'a>>,
    id: Option<Text<'a>>,
    method: Option<Called>,
    params: RawParams,
}

/// The text of a member that should be a string (`None` when absent or not a string).
fn as_str<'a>(t: Option<Text<'a>>) -> Option<Cow<'a, str>> {
    t.and_then(|t| t.0)
}

/// What `params` held.
enum RawParams {
    /// Absent or `null`.
    Absent,
    /// Read knowing the method (clients send it first): a submission's object goes straight
    /// into its fields.
    Read(Params),
    /// Read before the method: the object, sorted out once the method is known.
    Object(Value),
    /// Not an object.
    NotObject,
}

/// The envelope's keys.
enum Key {
    Type,
    Id,
    Method,
    Params,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyName;
        impl Visitor<'_> for KeyName {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, k: &str) -> Result<Key, E> {
                Ok(match k {
                    "type" => Key::Type,
                    "id" => Key::Id,
                    "method" => Key::Method,
                    "params" => Key::Params,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyName)
    }
}

impl<'de> Deserialize<'de> for RawFrame<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawFrame<'de>, D::Error> {
        struct Envelope;
        impl<'de> Visitor<'de> for Envelope {
            type Value = RawFrame<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFrame<'de>, A::Error> {
                let mut f = RawFrame {
                    kind: None,
                    id: None,
                    method: None,
                    params: RawParams::Absent,
                };
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Type => f.kind = Some(map.next_value()?),
                        Key::Id => f.id = Some(map.next_value()?),
                        Key::Method => {
                            let name: Text<'_> = map.next_value()?;
                            f.method = name.0.filter(|m| !m.is_empty()).map(Called::parse);
                        }
                        Key::Params => {
                            f.params = map.next_value_seed(ParamsSeed(f.method.as_ref()))?;
                        }
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(f)
            }
        }
        d.deserialize_map(Envelope)
    }
}

/// Reads `params` for the method named so far (`None`: not yet).
struct ParamsSeed<'m>(Option<&'m Called>);

impl<'de> DeserializeSeed<'de> for ParamsSeed<'_> {
    type Value = RawParams;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawParams, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed<'_> {
    type Value = RawParams;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawParams, A::Error> {
        let map = MapAccessDeserializer::new(map);
        Ok(match self.0 {
            Some(Called::Known(m)) if m.is_submission() => {
                RawParams::Read(Params::Submit(Deserialize::deserialize(map)?))
            }
            Some(_) => RawParams::Read(Params::Json(Value::deserialize(map)?)),
            None => RawParams::Object(Value::deserialize(map)?),
        })
    }
    fn visit_unit<E>(self) -> Result<RawParams, E> {
        Ok(RawParams::Absent)
    }
    fn visit_bool<E>(self, _: bool) -> Result<RawParams, E> {
        Ok(RawParams::NotObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<RawParams, E> {
        Ok(RawParams::NotObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<RawParams, E> {
        Ok(RawParams::NotObject)
    }
    fn visit_f64<E>(self, _: f64) -> Result<RawParams, E> {
        Ok(RawParams::NotObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<RawParams, E> {
        Ok(RawParams::NotObject)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<RawParams, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawParams::NotObject)
    }
}

/// Parses one inbound text frame.
pub fn parse(text: &str) -> Inbound {
    let raw: RawFrame<'_> = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            return Inbound::Invalid {
                id: None,
                reason: if e.is_data() {
                    "frame must be a JSON object".into()
                } else {
                    format!("malformed JSON: {e}")
                },
            }
        }
    };
    let id = as_str(raw.id)
        .filter(|s| !s.is_empty())
        .map(Cow::into_owned);
    // Compared, not kept: no copy of `"req"` per request.
    let kind = as_str(raw.kind);
    match kind.as_deref() {
        Some("req") => {}
        Some("connect") => {
            let params = match raw.params {
                RawParams::Read(p) => p.into_json(),
                RawParams::Object(v) => v,
                RawParams::Absent | RawParams::NotObject => json!({}),
            };
            return Inbound::SeedConnect(params);
        }
        Some(other) => {
            return Inbound::Invalid {
                id,
                reason: format!("unexpected frame type {other:?} (expected \"req\")"),
            }
        }
        None => {
            return Inbound::Invalid {
                id,
                reason: "missing type".into(),
            }
        }
    }
    let Some(id) = id else {
        return Inbound::Invalid {
            id: None,
            reason: "missing id".into(),
        };
    };
    let Some(method) = raw.method else {
        return Inbound::Invalid {
            id: Some(id),
            reason: "missing method".into(),
        };
    };
    let params = match raw.params {
        RawParams::Absent => Params::empty(method.known()),
        // Read for the method named before them; a repeated `method` key after `params` (the
        // last one counts) can name a method of the other form: sort them out again, so the
        // form always follows the method (found by the frame fuzz target). A submission's
        // fields as an object keep only its strings; only such a frame pays for that.
        RawParams::Read(p) => match (p, method.known().is_some_and(|m| m.is_submission())) {
            (Params::Json(v), true) => Params::for_method(method.known(), v),
            (p @ Params::Submit(_), false) => Params::Json(p.into_json()),
            (p, _) => p,
        },
        RawParams::Object(v) => Params::for_method(method.known(), v),
        RawParams::NotObject => {
            return Inbound::Invalid {
                id: Some(id),
                reason: "params must be an object".into(),
            }
        }
    };
    Inbound::Request(Request { id, method, params })
}

/// `{"type":"res","id":…,"ok":true,"payload":…}`
pub fn res_ok<T: Serialize + ?Sized>(id: &str, payload: &T) -> String {
    res_ok_with(id, |s| push_json(s, payload))
}

/// Outbound frame buffers of this thread that were written and are free again: a frame is
/// built in one taken from here and given back once the connection's writer has copied it into
/// the socket ([`recycle`]), so a steady stream of frames allocates none. Most recently freed
/// first (still in cache); at most [`POOL_BUFFERS`] of at most [`POOL_BUFFER_MAX`] bytes each
/// are kept, so the pool stays under 2 MiB per thread whatever a burst did.
mod pool {
    use std::cell::RefCell;

    thread_local! {
        pub(super) static FREE: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }
}

/// Buffers the frame pool keeps per thread.
pub const POOL_BUFFERS: usize = 256;
/// The largest buffer the frame pool keeps (bytes of capacity).
pub const POOL_BUFFER_MAX: usize = 8 * 1024;

/// An empty buffer for an outbound frame, with room for `capacity` bytes: from this thread's
/// pool when it has one (grown if needed), else newly allocated.
pub fn text_buf(capacity: usize) -> String {
    let reused = pool::FREE.with_borrow_mut(Vec::pop);
    match reused {
        Some(mut s) => {
            s.reserve(capacity);
            s
        }
        None => String::with_capacity(capacity),
    }
}

/// Gives frames' buffers back to this thread's pool once their bytes were copied out (a
/// written batch's at once: one look at the pool, not one per frame).
pub fn recycle(texts: impl IntoIterator<Item = String>) {
    pool::FREE.with_borrow_mut(|free| {
        for mut s in texts {
            if free.len() == POOL_BUFFERS {
                return;
            }
            if s.capacity() != 0 && s.capacity() <= POOL_BUFFER_MAX {
                s.clear();
                free.push(s);
            }
        }
    });
}

/// A JSON value serialized once and shared (cheap to clone) by every frame that repeats it: a
/// run's final answer, sent to its caller and replayed to duplicates from the dedup cache.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonText(std::rc::Rc<str>);

impl JsonText {
    /// Serializes `v`.
    pub fn of<T: Serialize + ?Sized>(v: &T) -> JsonText {
        JsonText::with(|s| push_json(s, v))
    }

    /// JSON written by `write` (by hand for the hottest payloads, tested against their serde
    /// shape where they are written). It is written into this thread's scratch buffer and
    /// copied once into the shared text: one allocation, not a `String` and then an `Rc`.
    /// `write` must not make a `JsonText` itself (the scratch buffer is in use).
    pub fn with(write: impl FnOnce(&mut String)) -> JsonText {
        thread_local! {
            static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        SCRATCH.with_borrow_mut(|s| {
            s.clear();
            write(s);
            let text = JsonText(std::rc::Rc::from(s.as_str()));
            // A rare huge payload does not keep its buffer for the thread's whole life.
            if s.capacity() > 64 * 1024 {
                *s = String::new();
            }
            text
        })
    }

    /// The value as a tree again (rare paths: replays that amend it, the journal).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl shards::dedup::Prefetch for JsonText {
    fn prefetch(&self) {
        self.0.prefetch();
    }
}

/// `{"type":"res","id":…,"ok":true,"payload":…}` around an already serialized payload.
pub fn res_ok_text(id: &str, payload: &JsonText) -> String {
    res_ok_sized(payload.0.len() + id.len() + 48, id, |s| {
        s.push_str(&payload.0)
    })
}

/// A `res ok` whose payload is written by hand by `write`.
pub fn res_ok_with(id: &str, write: impl FnOnce(&mut String)) -> String {
    res_ok_sized(256, id, write)
}

/// The one writer of a `res ok` frame, in a buffer of `capacity` bytes to start with.
fn res_ok_sized(capacity: usize, id: &str, write: impl FnOnce(&mut String)) -> String {
    let mut s = text_buf(capacity);
    s.push_str(r#"{"type":"res","id":"#);
    push_json_str(&mut s, id);
    s.push_str(r#","ok":true,"payload":"#);
    write(&mut s);
    s.push('}');
    s
}

/// Serializes `v` onto the end of `s` (no intermediate String). serde_json writes its many small
/// pieces into the bytes of `s`; the result is then checked as UTF-8 once (serde_json writes
/// UTF-8 only, and `s` was UTF-8 before). Serializing our own payload types and `Value`s
/// cannot fail (no non-string map keys).
pub fn push_json<T: Serialize + ?Sized>(s: &mut String, v: &T) {
    let mut buf = std::mem::take(s).into_bytes();
    let _ = serde_json::to_writer(&mut buf, v);
    *s = String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into());
}

/// `{"type":"res","id":…,"ok":false,"error":…}`
pub fn res_err(id: &str, err: &WireError) -> String {
    json!({"type": "res", "id": id, "ok": false, "error": err.to_json()}).to_string()
}

/// An event frame. `seq` is given by the connection when the frame is queued (never for
/// `connect.challenge`); `state_version` is attached to presence/health events.
pub fn event(
    name: &str,
    payload: &str,
    seq: Option<u64>,
    state_version: Option<(u64, u64)>,
) -> String {
    let mut s = open_sized(payload.len() + 64, name, |s| s.push_str(payload));
    close_event(&mut s, seq, state_version);
    s
}

/// The start of an event frame, `payload` serialized straight into it: everything but `seq`
/// (given when a connection queues it, see [`close_event`]) and the closing brace.
pub fn open_event<T: Serialize + ?Sized>(name: &str, payload: &T) -> String {
    open_event_with(256, name, |s| push_json(s, payload))
}

/// An event frame begun like [`open_event`], its payload written by `write` (hand-rolled JSON
/// for the hottest payloads, see `agent::echo`) into a buffer of `room` bytes to start with:
/// a writer that knows its payload's size avoids growing the frame as it writes.
pub fn open_event_with(room: usize, name: &str, write: impl FnOnce(&mut String)) -> String {
    open_sized(room, name, write)
}

/// An event frame with an already serialized payload, without `seq` and the closing brace:
/// built once and shared by every connection a broadcast reaches ([`event_tail`] ends it).
pub fn open_event_raw(name: &str, payload: &str) -> String {
    open_sized(payload.len() + name.len() + 32, name, |s| {
        s.push_str(payload)
    })
}

/// The one writer of an event frame's start (`type`, `event`, `payload`), in a buffer of
/// `capacity` bytes to start with.
fn open_sized(capacity: usize, name: &str, write: impl FnOnce(&mut String)) -> String {
    let mut s = text_buf(capacity);
    s.push_str(r#"{"type":"event","event":"#);
    push_json_str(&mut s, name);
    s.push_str(r#","payload":"#);
    write(&mut s);
    s
}

/// The end of an event frame begun by [`open_event_raw`] or [`open_event`]: `seq`, the
/// state versions and the closing brace, written into a stack buffer (at most
/// [`EVENT_TAIL_MAX`] bytes).
pub fn event_tail(seq: u64, state_version: Option<(u64, u64)>) -> EventTail {
    let mut t = EventTail {
        buf: [0; EVENT_TAIL_MAX],
        len: 0,
    };
    write_tail(&mut t, Some(seq), state_version);
    t
}

/// Where an event's tail goes: the frame being built, or an [`EventTail`].
trait TailOut {
    fn put(&mut self, part: &str);
}

impl TailOut for String {
    fn put(&mut self, part: &str) {
        self.push_str(part);
    }
}

impl TailOut for EventTail {
    fn put(&mut self, part: &str) {
        self.buf[self.len..self.len + part.len()].copy_from_slice(part.as_bytes());
        self.len += part.len();
    }
}

/// The one writer of an event's tail: `seq`, the state versions, the closing brace.
fn write_tail(out: &mut impl TailOut, seq: Option<u64>, state_version: Option<(u64, u64)>) {
    if let Some(seq) = seq {
        out.put(r#","seq":"#);
        out.put(itoa::Buffer::new().format(seq));
    }
    if let Some((p, h)) = state_version {
        out.put(r#","stateVersion":{"presence":"#);
        out.put(itoa::Buffer::new().format(p));
        out.put(r#","health":"#);
        out.put(itoa::Buffer::new().format(h));
        out.put("}");
    }
    out.put("}");
}

/// Room for `,"seq":` + u64 + `,"stateVersion":{"presence":` + u64 + `,"health":` + u64 + `}}`.
pub const EVENT_TAIL_MAX: usize = 128;

/// The bytes [`event_tail`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct EventTail {
    buf: [u8; EVENT_TAIL_MAX],
    len: usize,
}

impl EventTail {
    /// The tail, as bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Appends an integer (no allocation).
pub fn push_int(s: &mut String, v: impl itoa::Integer) {
    s.push_str(itoa::Buffer::new().format(v));
}

/// Completes an event frame begun by [`open_event`].
pub fn close_event(s: &mut String, seq: Option<u64>, state_version: Option<(u64, u64)>) {
    write_tail(s, seq, state_version);
}

/// True if any byte of `b` needs a JSON escape (below 0x20, `"` or `\\`). Eight bytes at a
/// time (SWAR): such a byte sets the high bit of its lane in one of three tests, each exact
/// as a yes/no answer. Strings shorter than a word are read byte by byte.
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let special = |w: u64| {
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        below_space | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * 0x5c)) != 0
    };
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("8 bytes"));
    if b.len() < 8 {
        return b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
    }
    let mut chunks = b.chunks_exact(8);
    // The tail is checked as the last eight bytes (overlapping the last whole word).
    chunks.any(|c| special(word(c))) || special(word(&b[b.len() - 8..]))
}

/// Appends `v` as a JSON string literal, escaped as serde_json does (`"`, `\` and control
/// characters; non-ASCII text is copied as is), with no allocation: runs that need no escape
/// are copied whole.
pub fn push_json_str(s: &mut String, v: &str) {
    s.reserve(v.len() + 2);
    s.push('"');
    push_escaped(s, v);
    s.push('"');
}

/// Appends one of the gateway's own string constants (a status, a provider or model name) as
/// a JSON string without scanning it for characters to escape: such a constant never has any
/// (checked in debug builds).
pub fn push_json_const(s: &mut String, v: &'static str) {
    debug_assert!(!needs_escape(v.as_bytes()), "{v:?} needs escaping");
    s.reserve(v.len() + 2);
    s.push('"');
    s.push_str(v);
    s.push('"');
}

/// Appends `v` escaped as inside a JSON string literal, without the quotes: text built up
/// piece by piece (a streamed answer) is escaped once per piece, not once per frame.
pub fn push_escaped(s: &mut String, v: &str) {
    // Writing to a `String` cannot fail.
    let _ = write_escaped(s, v);
}

/// Writes `v` escaped as inside a JSON string literal, without the quotes, to any
/// [`std::fmt::Write`] (a frame's `String`, the log file's line buffer): the one JSON escape
/// table of the gateway.
pub fn write_escaped<W: std::fmt::Write + ?Sized>(w: &mut W, v: &str) -> std::fmt::Result {
    if !needs_escape(v.as_bytes()) {
        return w.write_str(v);
    }
    let mut start = 0;
    for (i, b) in v.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte: a char boundary.
        w.write_str(&v[start..i])?;
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            w.write_str("\\u00")?;
            w.write_char(char::from(HEX[usize::from(b >> 4)]))?;
            w.write_char(char::from(HEX[usize::from(b & 0xf)]))?;
        } else {
            w.write_str(esc)?;
        }
        start = i + 1;
    }
    w.write_str(&v[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_buffers_are_reused_and_the_pool_is_bounded() {
        pool::FREE.with_borrow_mut(Vec::clear);
        let first = String::with_capacity(1000);
        let ptr = first.as_ptr();
        recycle([first]);
        let again = text_buf(10);
        assert_eq!(again.as_ptr(), ptr, "the freed buffer is handed out again");
        assert!(again.is_empty() && again.capacity() >= 1000);
        // Too large to keep, or never allocated: not pooled.
        recycle([String::with_capacity(POOL_BUFFER_MAX + 1), String::new()]);
        assert_eq!(pool::FREE.with_borrow(Vec::len), 0);
        // A short pooled buffer grows to what the frame asks for.
        recycle([String::with_capacity(8)]);
        assert!(text_buf(4096).capacity() >= 4096);
        recycle((0..POOL_BUFFERS + 10).map(|_| String::with_capacity(64)));
        assert_eq!(pool::FREE.with_borrow(Vec::len), POOL_BUFFERS);
        pool::FREE.with_borrow_mut(Vec::clear);
    }

    #[test]
    fn a_shared_event_and_its_tail_make_the_same_frame_as_event() {
        for (seq, sv) in [
            (1, None),
            (u64::MAX, Some((u64::MAX, u64::MAX))),
            (42, Some((3, 4))),
        ] {
            let payload = r#"{"sessionKey":"agent:main:x","reason":"reset"}"#;
            let mut joined = open_event_raw("sessions.changed", payload).into_bytes();
            joined.extend_from_slice(event_tail(seq, sv).as_bytes());
            assert_eq!(
                String::from_utf8(joined).unwrap(),
                event("sessions.changed", payload, Some(seq), sv)
            );
        }
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_does() {
        for v in [
            "plain",
            "",
            "say \"hi\"\\ now",
            "line\nbreak\r\ttab\u{8}\u{c}\u{1}\u{1f}\u{7f}",
            "na\u{ef}ve \u{2014} \u{1f389} \u{4e2d}\u{6587}",
            "\"",
        ] {
            let mut s = String::new();
            push_json_str(&mut s, v);
            assert_eq!(s, serde_json::to_string(v).unwrap(), "{v:?}");
        }
    }

    /// The word-at-a-time scan answers as a byte-by-byte one would: every byte value, at
    /// every position of a string longer than two words, next to bytes that look alike.
    #[test]
    fn the_escape_scan_finds_every_byte_that_needs_escaping() {
        let naive = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        for fill in [b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xff] {
            for len in [0, 1, 7, 8, 9, 16, 23] {
                for at in 0..len {
                    for c in 0..=255u8 {
                        let mut b = vec![fill; len];
                        b[at] = c;
                        assert_eq!(needs_escape(&b), naive(&b), "{c:#x} at {at} of {len}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_shared_payload_makes_the_same_frame_as_res_ok() {
        let v = json!({"runId": "r\"1", "result": {"payloads": [{"text": "na\u{ef}ve"}]}, "n": 2});
        let text = JsonText::of(&v);
        assert_eq!(res_ok_text("i\n1", &text), res_ok("i\n1", &v));
        assert_eq!(text.to_value(), v);
        // Clones share the text: a replay costs no second serialization.
        assert!(std::rc::Rc::ptr_eq(&text.clone().0, &text.0));
    }

    #[test]
    fn push_json_appends_what_serde_json_writes() {
        // Non-ASCII next to escapes and after the frame's start; a `RawValue` as well.
        let v =
            json!({"t": "na\u{ef}ve \"\u{1f389}\"\n\u{4e2d}", "n": [1, -2.5, null], "k\u{e9}": {}});
        let want = format!("\u{e9}:{}", serde_json::to_string(&v).unwrap());
        let mut s = String::from("\u{e9}:");
        push_json(&mut s, &v);
        assert_eq!(s, want);
        let raw = serde_json::value::to_raw_value(&v).unwrap();
        let mut s = String::from("\u{e9}:");
        push_json(&mut s, &raw);
        assert_eq!(s, want);
    }

    #[test]
    fn parses_request() {
        let f = parse(r#"{"type":"req","id":"1","method":"health","params":{"probe":true}}"#);
        assert_eq!(
            f,
            Inbound::Request(Request {
                id: "1".into(),
                method: "health".into(),
                params: Params::Json(json!({"probe": true}))
            })
        );
    }

    /// A repeated `method` key after `params`: the last one counts, and the params take
    /// its form (they were read for the first).
    #[test]
    fn params_follow_the_last_method_named() {
        let to_submit = parse(
            r#"{"type":"req","id":"c","method":"health","params":{"message":"m","n":1},"method":"send"}"#,
        );
        let Inbound::Request(r) = to_submit else {
            panic!("a request")
        };
        assert_eq!(r.method.as_str(), "send");
        assert!(matches!(r.params, Params::Submit(_)), "{:?}", r.params);
        assert_eq!(r.params.str("message"), Some("m"));
        let to_json = parse(
            r#"{"type":"req","id":"c","method":"send","params":{"message":"m"},"method":"health"}"#,
        );
        let Inbound::Request(r) = to_json else {
            panic!("a request")
        };
        assert_eq!(r.params, Params::Json(json!({"message": "m"})));
    }

    /// A submission's params are read into their fields whether the method comes before
    /// them (as clients send it) or after; anything but an object is refused either way.
    #[test]
    fn submission_params_are_typed_wherever_the_method_is() {
        let first = parse(
            r#"{"type":"req","id":"1","method":"agent","params":{"message":"hi","idempotencyKey":"k"}}"#,
        );
        let last = parse(
            r#"{"params":{"message":"hi","idempotencyKey":"k"},"id":"1","method":"agent","type":"req"}"#,
        );
        assert_eq!(first, last);
        let Inbound::Request(r) = first else {
            panic!("a request")
        };
        assert!(matches!(r.params, Params::Submit(_)));
        assert_eq!(r.params.str("idempotencyKey"), Some("k"));
        for params in [r#""x""#, "[1]", "2", "true"] {
            for text in [
                format!(r#"{{"type":"req","id":"1","method":"agent","params":{params}}}"#),
                format!(r#"{{"params":{params},"type":"req","id":"1","method":"agent"}}"#),
            ] {
                assert_eq!(
                    parse(&text),
                    Inbound::Invalid {
                        id: Some("1".into()),
                        reason: "params must be an object".into()
                    },
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn ids_and_methods_are_unescaped() {
        let Inbound::Request(r) =
            parse(r#"{"type":"r\u0065q","id":"a\"b\u00e9","method":"he\u0061lth"}"#)
        else {
            panic!()
        };
        assert_eq!((r.id.as_str(), r.method.as_str()), ("a\"b\u{e9}", "health"));
        // A number is not an id.
        assert!(matches!(
            parse(r#"{"type":"req","id":7,"method":"health"}"#),
            Inbound::Invalid { id: None, .. }
        ));
    }

    #[test]
    fn missing_params_is_empty_object() {
        let Inbound::Request(r) = parse(r#"{"type":"req","id":"a","method":"status"}"#) else {
            panic!()
        };
        assert_eq!(r.params, Params::Json(json!({})));
    }

    #[test]
    fn invalid_frames_keep_id_when_possible() {
        assert!(matches!(
            parse("not json"),
            Inbound::Invalid { id: None, .. }
        ));
        assert!(matches!(parse("[1,2]"), Inbound::Invalid { id: None, .. }));
        assert_eq!(
            parse(r#"{"type":"req","id":"7"}"#),
            Inbound::Invalid {
                id: Some("7".into()),
                reason: "missing method".into()
            }
        );
        assert!(matches!(
            parse(r#"{"type":"req","method":"x"}"#),
            Inbound::Invalid { id: None, .. }
        ));
        assert!(matches!(
            parse(r#"{"type":"req","id":"","method":"x"}"#),
            Inbound::Invalid { id: None, .. }
        ));
        assert!(matches!(
            parse(r#"{"type":"req","id":"1","method":"x","params":3}"#),
            Inbound::Invalid { id: Some(_), .. }
        ));
    }

    #[test]
    fn seed_connect_recognised() {
        assert!(matches!(
            parse(r#"{"type":"connect","params":{"deviceId":"d"}}"#),
            Inbound::SeedConnect(_)
        ));
    }

    #[test]
    fn encodes_frames_as_valid_json() {
        let r: Value = serde_json::from_str(&res_ok("a\"b", &json!({"x":1}))).unwrap();
        assert_eq!(r["id"], "a\"b");
        assert_eq!(r["payload"]["x"], 1);
        let e: Value =
            serde_json::from_str(&event("tick", r#"{"ts":1}"#, Some(9), Some((2, 3)))).unwrap();
        assert_eq!(e["seq"], 9);
        assert_eq!(e["stateVersion"]["health"], 3);
        assert_eq!(e["payload"]["ts"], 1);
    }
}
