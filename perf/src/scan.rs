//! Reading the few fields the load generator needs from a gateway frame without parsing all
//! of it.
//!
//! At a million frames a second on one core, deserializing every frame with serde (which reads
//! each string of the payload character by character) was a quarter of the load generator's
//! CPU, and the load generator became the bottleneck of the `chat` workload. Here a frame's
//! top-level members are walked and every value is skipped by structure: a string by jumping
//! to its closing quote (`memchr` for `"` and `\`), an object or array by bracket depth.
//! Only the values asked for are looked at.
//!
//! The scan checks structure (quotes, brackets, colons, commas) but is not a full JSON
//! validator: numbers and literals are not checked digit by digit. Anything it cannot read as
//! a plain member (a key or wanted string with an escape, say) returns `None`, and the caller
//! falls back to serde for that frame.

/// The members of a frame the load generator looks at.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Frame<'a> {
    /// `type`.
    pub(crate) kind: &'a str,
    /// `id` (a string).
    pub(crate) id: Option<&'a str>,
    /// `event`.
    pub(crate) event: Option<&'a str>,
    /// `ok`.
    pub(crate) ok: Option<bool>,
    /// `seq`.
    pub(crate) seq: Option<u64>,
    /// `payload`'s `status`, `state` and `runId` when it is an object.
    pub(crate) status: Option<&'a str>,
    pub(crate) state: Option<&'a str>,
    pub(crate) run_id: Option<&'a str>,
}

/// Reads `text` as one frame; `None` when it is not a JSON object this scan can read.
pub(crate) fn frame(text: &str) -> Option<Frame<'_>> {
    let b = text.as_bytes();
    let mut f = Frame::default();
    let mut kind = None;
    // The payload's status, state and runId, as written: read in the same pass that skips
    // the payload (one walk over its bytes), kept only for answers and chat events.
    let mut inner: [Option<&str>; 3] = [None; 3];
    let end = members(b, 0, |key, v0| {
        if key == b"payload" && b.get(v0) == Some(&b'{') {
            return members(b, v0, |k, p0| {
                let p1 = value_end(b, p0)?;
                let slot = match k {
                    b"status" => 0,
                    b"state" => 1,
                    b"runId" => 2,
                    _ => return Some(p1),
                };
                inner[slot] = Some(&text[p0..p1]);
                Some(p1)
            });
        }
        let v1 = value_end(b, v0)?;
        let v = &text[v0..v1];
        let read = match key {
            b"type" => plain_str(v).map(|s| kind = Some(s)).is_some(),
            b"id" => opt(v, plain_str, &mut f.id),
            b"event" => opt(v, plain_str, &mut f.event),
            b"ok" => opt(v, boolean, &mut f.ok),
            b"seq" => opt(v, unsigned, &mut f.seq),
            _ => true,
        };
        read.then_some(v1)
    })?;
    if !text[end..].trim_start().is_empty() {
        return None;
    }
    f.kind = kind?;
    // Only answers (status) and chat events (state, runId) need the payload's members.
    if f.kind == "res" || f.event == Some("chat") {
        let [status, state, run_id] = inner;
        for (v, slot) in [
            (status, &mut f.status),
            (state, &mut f.state),
            (run_id, &mut f.run_id),
        ] {
            if let Some(v) = v {
                if !opt(v, plain_str, slot) {
                    return None;
                }
            }
        }
    }
    Some(f)
}

/// `null` leaves `slot` empty; otherwise `read` must accept the value.
fn opt<'a, T>(v: &'a str, read: fn(&'a str) -> Option<T>, slot: &mut Option<T>) -> bool {
    if v == "null" {
        return true;
    }
    match read(v) {
        Some(x) => {
            *slot = Some(x);
            true
        }
        None => false,
    }
}

/// A string value without escapes, without its quotes.
fn plain_str(v: &str) -> Option<&str> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

fn boolean(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn unsigned(v: &str) -> Option<u64> {
    v.parse().ok()
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The object starting at `b[start]` (after whitespace): calls `each(key, value start)` for
/// every member (the key as written, without quotes), which returns the index just past the
/// value (or `None` to give up). Returns the index just past the closing brace.
fn members(
    b: &[u8],
    start: usize,
    mut each: impl FnMut(&[u8], usize) -> Option<usize>,
) -> Option<usize> {
    let mut i = skip_ws(b, start);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key = &b[i + 1..key_end - 1];
        if key.contains(&b'\\') {
            return None;
        }
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let v0 = skip_ws(b, i + 1);
        let v1 = each(key, v0)?;
        i = skip_ws(b, v1);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// `b[i]` is an opening quote: the index just past the closing one.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    // Most keys and values are short: look byte by byte first (a vector search costs more
    // to start than it saves on a few bytes), then search.
    let mut by_byte = 16;
    loop {
        let at = if by_byte > 0 {
            by_byte -= 1;
            if j >= b.len() {
                return None;
            }
            j
        } else {
            j + memchr::memchr2(b'"', b'\\', b.get(j..)?)?
        };
        match b[at] {
            b'"' => return Some(at + 1),
            // An escape: skip the backslash and the character it escapes.
            b'\\' => j = at + 2,
            _ => j = at + 1,
        }
    }
}

/// The index just past the value starting at `b[i]`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            // A number or a literal: up to the next delimiter.
            let n = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(b.len() - i);
            (n > 0).then_some(i + n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// type, id, event, ok, seq, and the payload's status, state, runId.
    type Read = (
        String,
        Option<String>,
        Option<String>,
        Option<bool>,
        Option<u64>,
        [Option<String>; 3],
    );

    /// The payload whose members the scan reads: an answer's or a chat event's.
    fn payload_read(v: &Value) -> &Value {
        if v["type"] == "res" || v["event"] == "chat" {
            &v["payload"]
        } else {
            &Value::Null
        }
    }

    /// What serde reads from the same text, in the scan's terms.
    fn by_serde(text: &str) -> Option<Read> {
        let v: Value = serde_json::from_str(text).ok()?;
        let s = |v: &Value| v.as_str().map(str::to_string);
        let p = payload_read(&v);
        Some((
            v["type"].as_str()?.to_string(),
            s(&v["id"]),
            s(&v["event"]),
            v["ok"].as_bool(),
            v["seq"].as_u64(),
            [s(&p["status"]), s(&p["state"]), s(&p["runId"])],
        ))
    }

    fn by_scan(text: &str) -> Option<Read> {
        let f = frame(text)?;
        let o = |s: Option<&str>| s.map(str::to_string);
        Some((
            f.kind.to_string(),
            o(f.id),
            o(f.event),
            f.ok,
            f.seq,
            [o(f.status), o(f.state), o(f.run_id)],
        ))
    }

    #[test]
    fn reads_the_gateways_frames_like_serde() {
        let frames = [
            json!({"type":"res","id":"7","ok":true,"payload":{"runId":"t-1-7","status":"accepted","acceptedAt":1}}),
            json!({"type":"res","id":"8","ok":false,"error":{"code":"INVALID_REQUEST","message":"a \"quoted\" {brace} [bracket]"}}),
            // The payload has its own seq and nested objects; only the top-level seq counts.
            json!({"type":"event","event":"agent","payload":{"runId":"r","seq":99,"stream":"assistant","data":{"text":"héllo } ] \\ \" {","delta":"x"},"list":[1,[2,{"a":"]"}]]},"seq":12}),
            json!({"type":"event","event":"chat","payload":{"runId":"t-3-41","sessionKey":"agent:main:x","state":"final","message":{"role":"assistant","content":[{"type":"text","text":"a b"}]}},"seq":13,"stateVersion":{"presence":1}}),
            json!({"type":"event","event":"tick","payload":{"ts":1764115200000_u64},"seq":1}),
            json!({"type":"event","event":"connect.challenge","payload":{"nonce":"abc","ts":1}}),
            json!({"type":"res","id":"1","ok":true,"payload":null}),
            json!({"type":"res","id":"2","ok":true,"payload":[1,2,3]}),
            json!({"type":"res","id":"3","ok":true,"payload":{}}),
        ];
        for f in frames {
            for text in [f.to_string(), serde_json::to_string_pretty(&f).unwrap()] {
                assert_eq!(by_scan(&text), by_serde(&text), "{text}");
                assert!(by_scan(&text).is_some(), "{text}");
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_whole_object() {
        for bad in [
            "",
            "[]",
            r#"{"type":"res""#,
            r#"{"type":"res","id":"1""#,
            r#"{"type":"res","payload":{"a":"unterminated}}"#,
            r#"{"type":"res","payload":{"a":1}"#,
            r#"{"type":"res"} trailing"#,
            r#"{"type" "res"}"#,
            r#"{"type":"res",}"#,
            r#"{"id":"1"}"#,
            r#"{"type":"res","seq":-1}"#,
            r#"{"type":"res","ok":"yes"}"#,
        ] {
            assert_eq!(frame(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_escaped_wanted_string_is_left_to_serde() {
        // The caller falls back to serde, which reads it right.
        let text = r#"{"type":"res","id":"a\"b","ok":true}"#;
        assert_eq!(frame(text), None);
        assert_eq!(by_serde(text).unwrap().1.as_deref(), Some("a\"b"));
    }

    /// The wanted members have the types the load generator expects (or are null/absent).
    fn well_typed(text: &str) -> bool {
        let v: Value = serde_json::from_str(text).unwrap();
        let str_or_null = |v: &Value| v.is_null() || v.is_string();
        let p = payload_read(&v);
        v["type"].is_string()
            && str_or_null(&v["id"])
            && str_or_null(&v["event"])
            && (v["ok"].is_null() || v["ok"].is_boolean())
            && (v["seq"].is_null() || v["seq"].is_u64())
            && (!p.is_object()
                || ["status", "state", "runId"]
                    .iter()
                    .all(|k| str_or_null(&p[*k])))
    }

    #[test]
    fn random_frames_read_like_serde() {
        // Deterministic pseudo-random frames: nested values with awkward strings.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words = [
            "", "a", "\"", "\\", "}", "]", "{[", "é", "\n", "seq", "payload", ":", ",",
        ];
        fn value(depth: u32, next: &mut dyn FnMut() -> u64, words: &[&str]) -> Value {
            match next() % if depth > 2 { 4 } else { 6 } {
                0 => json!(next() % 1000),
                1 => json!(
                    words[(next() % words.len() as u64) as usize].repeat((next() % 3) as usize)
                ),
                2 => json!(next().is_multiple_of(2)),
                3 => Value::Null,
                4 => Value::Array(
                    (0..next() % 4)
                        .map(|_| value(depth + 1, next, words))
                        .collect(),
                ),
                _ => {
                    let mut m = serde_json::Map::new();
                    for k in ["seq", "status", "state", "runId", "text", "data"] {
                        if next().is_multiple_of(2) {
                            m.insert(k.into(), value(depth + 1, next, words));
                        }
                    }
                    Value::Object(m)
                }
            }
        }
        let mut compared = 0;
        for _ in 0..3000 {
            let mut m = serde_json::Map::new();
            m.insert(
                "type".into(),
                json!(["res", "event"][(next() % 2) as usize]),
            );
            if next().is_multiple_of(2) {
                m.insert(
                    "event".into(),
                    json!(["chat", "agent"][(next() % 2) as usize]),
                );
            }
            if next().is_multiple_of(2) {
                m.insert("id".into(), json!(format!("{}", next() % 100)));
            }
            if next().is_multiple_of(2) {
                m.insert("seq".into(), json!(next() % 100_000));
            }
            if next().is_multiple_of(2) {
                m.insert("ok".into(), json!(next().is_multiple_of(2)));
            }
            m.insert("payload".into(), value(0, &mut next, &words));
            let text = Value::Object(m).to_string();
            match by_scan(&text) {
                // Refused only for an escape or a wanted member of the wrong type (which
                // the load generator's serde fallback refuses too).
                None => assert!(text.contains('\\') || !well_typed(&text), "{text}"),
                got => {
                    assert_eq!(got, by_serde(&text), "{text}");
                    compared += 1;
                }
            }
        }
        assert!(compared > 2000, "only {compared} compared");
    }
}
