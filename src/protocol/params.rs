// Hot path: every `agent`, `send` and `chat.send` request's parameters are read here.
//! A request's parameters. The methods that submit a message to a session (`agent`, `send`,
//! `chat.send`, `sessions.send`: most of a busy gateway's traffic) read a handful of fields,
//! parsed straight into a [`Submission`]; every other method gets its JSON object.
//!
//! Both answer the same questions ([`Params::field`], [`Params::str`]), so the code that
//! validates a request reads the same whichever form it got, and says the same things about
//! a missing field or one of the wrong type.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::GatewayError;
use super::method::Method;

/// Whether `method`'s parameters are a [`Submission`] ([`Method::is_submission`]; an unknown
/// method's are its JSON object).
fn is_submission(method: Option<Method>) -> bool {
    method.is_some_and(Method::is_submission)
}

/// One parameter as sent: absent, a string, or some other JSON value.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field {
    /// Not in the object.
    #[default]
    Missing,
    /// A string.
    Str(String),
    /// Any other JSON value (its content is not kept: only that it is not a string).
    Other,
}

/// A borrowed [`Field`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef<'a> {
    /// Not in the object.
    Missing,
    /// A string.
    Str(&'a str),
    /// Any other JSON value.
    Other,
}

impl Field {
    fn as_ref(&self) -> FieldRef<'_> {
        match self {
            Field::Missing => FieldRef::Missing,
            Field::Str(s) => FieldRef::Str(s),
            Field::Other => FieldRef::Other,
        }
    }
}

/// A member that should be a string: its text, or `None` for any other JSON value.
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'de>, D::Error> {
        struct AnyValue;
        impl<'de> Visitor<'de> for AnyValue {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Text<'de>, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Text<'de>, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(AnyValue)
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        Ok(match Text::deserialize(d)?.0 {
            Some(s) => Field::Str(s.into_owned()),
            None => Field::Other,
        })
    }
}

/// `sessionSeq` when it is a non-negative integer (what `Value::as_u64` accepts); anything
/// else is ignored, as on the JSON object.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Seq(Option<u64>);

impl<'de> Deserialize<'de> for Seq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Seq, D::Error> {
        Ok(Seq(match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }))
    }
}

/// The fields the submission methods read, by their wire names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Submission {
    /// `message`.
    pub message: Field,
    /// `idempotencyKey`.
    pub idempotency_key: Field,
    /// `sessionKey`.
    pub session_key: Field,
    /// `key` (`sessions.send`).
    pub key: Field,
    /// `agentId`.
    pub agent_id: Field,
    /// `channel` (`send`).
    pub channel: Field,
    /// `to` (`send`).
    pub to: Field,
    /// `sessionSeq`, the client's order of its messages to one session.
    seq: Seq,
}

/// Read from a JSON object like the object itself would be: a key given twice keeps its last
/// value, and keys no submission reads are skipped unread.
impl<'de> Deserialize<'de> for Submission {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Submission, D::Error> {
        /// A key of the object: one of [`NAMES`] (its index), `sessionSeq`, or another.
        struct SubKey(Option<usize>, bool);
        impl<'de> Deserialize<'de> for SubKey {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SubKey, D::Error> {
                struct Name;
                impl Visitor<'_> for Name {
                    type Value = SubKey;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a key")
                    }
                    fn visit_str<E>(self, k: &str) -> Result<SubKey, E> {
                        Ok(SubKey(
                            NAMES.iter().position(|n| *n == k),
                            k == "sessionSeq",
                        ))
                    }
                }
                d.deserialize_str(Name)
            }
        }
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Submission;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Submission, A::Error> {
                let mut s = Submission::default();
                while let Some(SubKey(field, seq)) = map.next_key()? {
                    match field {
                        Some(i) => {
                            let v = map.next_value()?;
                            if let Some(f) = s.field_at_mut(i) {
                                *f = v;
                            }
                        }
                        None if seq => s.seq = map.next_value()?,
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(s)
            }
        }
        d.deserialize_map(Fields)
    }
}

/// The wire names of [`Submission`]'s string fields, in the order of [`Submission::fields`].
const NAMES: [&str; 7] = [
    "message",
    "idempotencyKey",
    "sessionKey",
    "key",
    "agentId",
    "channel",
    "to",
];

impl Submission {
    fn fields(&self) -> [&Field; 7] {
        [
            &self.message,
            &self.idempotency_key,
            &self.session_key,
            &self.key,
            &self.agent_id,
            &self.channel,
            &self.to,
        ]
    }

    fn fields_mut(&mut self) -> [&mut Field; 7] {
        [
            &mut self.message,
            &mut self.idempotency_key,
            &mut self.session_key,
            &mut self.key,
            &mut self.agent_id,
            &mut self.channel,
            &mut self.to,
        ]
    }

    /// The field named `name` on the wire (`None` for any the methods do not read).
    fn field(&self, name: &str) -> Option<&Field> {
        let i = NAMES.iter().position(|n| *n == name)?;
        Some(self.fields()[i])
    }

    fn field_mut(&mut self, name: &str) -> Option<&mut Field> {
        let i = NAMES.iter().position(|n| *n == name)?;
        self.field_at_mut(i)
    }

    /// The field of `NAMES[i]`.
    fn field_at_mut(&mut self, i: usize) -> Option<&mut Field> {
        self.fields_mut().into_iter().nth(i)
    }

    /// The same fields read from a JSON object.
    fn from_object(m: &Map<String, Value>) -> Submission {
        let mut s = Submission {
            seq: Seq(m.get("sessionSeq").and_then(Value::as_u64)),
            ..Submission::default()
        };
        for (name, f) in NAMES.iter().zip(s.fields_mut()) {
            if let Some(v) = m.get(*name) {
                *f = match v {
                    Value::String(t) => Field::Str(t.clone()),
                    _ => Field::Other,
                };
            }
        }
        s
    }
}

/// The member `name` of a JSON object, as a [`FieldRef`].
pub fn field_of<'a>(v: &'a Value, name: &str) -> FieldRef<'a> {
    match v.get(name) {
        None => FieldRef::Missing,
        Some(Value::String(s)) => FieldRef::Str(s),
        Some(_) => FieldRef::Other,
    }
}

/// A request's parameters (always a JSON object on the wire).
#[derive(Debug, Clone, PartialEq)]
pub enum Params {
    /// A submission method's fields.
    Submit(Submission),
    /// Any other method's object.
    Json(Value),
}

impl Params {
    /// Parses `text`, a JSON object on its own, as `method`'s parameters: what
    /// `frame::parse` does with the `params` of a frame.
    pub fn parse(method: Option<Method>, text: &str) -> serde_json::Result<Params> {
        if is_submission(method) {
            serde_json::from_str(text).map(Params::Submit)
        } else {
            serde_json::from_str(text).map(Params::Json)
        }
    }

    /// `method`'s parameters from their JSON object (`Json` for a non-object).
    pub fn for_method(method: Option<Method>, v: Value) -> Params {
        match &v {
            Value::Object(m) if is_submission(method) => Params::Submit(Submission::from_object(m)),
            _ => Params::Json(v),
        }
    }

    /// No parameters (`{}`).
    pub fn empty(method: Option<Method>) -> Params {
        Params::for_method(method, Value::Object(Map::new()))
    }

    /// The parameter `name`: absent, a string, or something else.
    pub fn field(&self, name: &str) -> FieldRef<'_> {
        match self {
            Params::Submit(s) => s.field(name).map_or(FieldRef::Missing, Field::as_ref),
            Params::Json(v) => field_of(v, name),
        }
    }

    /// The parameter `name` when it is a string.
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.field(name) {
            FieldRef::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Moves the string parameter `name` out (empty when it is not a string).
    pub fn take_str(&mut self, name: &str) -> String {
        let taken = match self {
            Params::Submit(s) => s.field_mut(name).map(std::mem::take),
            Params::Json(v) => v.get_mut(name).map(|v| match v.take() {
                Value::String(s) => Field::Str(s),
                _ => Field::Other,
            }),
        };
        match taken {
            Some(Field::Str(s)) => s,
            _ => String::new(),
        }
    }

    /// Sets the string parameter `name` (a submission field, or a key of the object).
    pub fn set_str(&mut self, name: &str, value: String) {
        match self {
            Params::Submit(s) => {
                if let Some(f) = s.field_mut(name) {
                    *f = Field::Str(value);
                }
            }
            Params::Json(Value::Object(m)) => {
                m.insert(name.to_string(), Value::String(value));
            }
            Params::Json(_) => {}
        }
    }

    /// `sessionSeq`, when a non-negative integer.
    pub fn session_seq(&self) -> Option<u64> {
        match self {
            Params::Submit(s) => s.seq.0,
            Params::Json(v) => v.get("sessionSeq").and_then(Value::as_u64),
        }
    }

    /// The JSON object, for the methods that read it whole (a submission's is rebuilt from
    /// its fields; no method reads one that way).
    pub fn into_json(self) -> Value {
        match self {
            Params::Json(v) => v,
            Params::Submit(s) => {
                let mut m = Map::new();
                for (name, f) in NAMES.iter().zip(s.fields()) {
                    if let Field::Str(v) = f {
                        m.insert((*name).into(), Value::String(v.clone()));
                    }
                }
                if let Some(n) = s.seq.0 {
                    m.insert("sessionSeq".into(), n.into());
                }
                Value::Object(m)
            }
        }
    }
}

/// A required, non-blank string parameter of a method's params (`INVALID_REQUEST` naming it
/// when missing).
pub fn required_str<'a>(p: &'a Value, k: &str) -> Result<&'a str, GatewayError> {
    match p.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        _ => Err(GatewayError::InvalidParams(format!(
            "invalid params: missing {k}"
        ))),
    }
}

/// The string parameter `k` of `p`, which must be there and not blank.
pub fn required<'a>(p: &'a Params, k: &str) -> Result<&'a str, GatewayError> {
    non_blank(p.field(k), k)
}

/// `field` (the parameter `k`) as a string that is not blank.
pub fn non_blank<'a>(field: FieldRef<'a>, k: &str) -> Result<&'a str, GatewayError> {
    match field {
        FieldRef::Str(s) if !s.trim().is_empty() => Ok(s),
        FieldRef::Str(_) | FieldRef::Other => Err(GatewayError::InvalidParams(format!(
            "invalid params: {k} must be a non-empty string"
        ))),
        FieldRef::Missing => Err(GatewayError::InvalidParams(format!(
            "invalid params: missing {k}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The methods by name, as requests name them.
    impl Params {
        fn parse_for(method: &str, text: &str) -> serde_json::Result<Params> {
            Params::parse(Method::parse(method), text)
        }
        fn empty_for(method: &str) -> Params {
            Params::empty(Method::parse(method))
        }
    }

    /// Objects as clients send them, including the awkward ones: wrong types, escapes,
    /// nested values, a field given twice, and fields no submission reads.
    fn samples() -> Vec<String> {
        [
            r#"{"message":"hi","idempotencyKey":"k-1","sessionKey":"Perf-7"}"#,
            r#"{"message":"say \"hi\"\n","idempotencyKey":"k\u00e9","agentId":"Ops"}"#,
            r#"{"message":3,"idempotencyKey":"","sessionKey":null}"#,
            r#"{"message":["a",{"b":[1,2]}],"idempotencyKey":{"x":"y"},"to":true}"#,
            r#"{"to":"+15550001","channel":"sms","message":"m","idempotencyKey":"s-1"}"#,
            r#"{"key":"agent:main:k","message":"x","idempotencyKey":"q","sessionSeq":7}"#,
            r#"{"sessionSeq":-1,"message":"x","idempotencyKey":"q"}"#,
            r#"{"sessionSeq":2.5,"message":"x","idempotencyKey":"q","extra":{"deep":[1]}}"#,
            r#"{"message":"first","message":"second","idempotencyKey":"d"}"#,
            r#"{}"#,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Every field a submission reads, and one it does not.
    fn names() -> impl Iterator<Item = &'static str> {
        NAMES.into_iter().chain(["label"])
    }

    /// The typed fields answer every question exactly as the JSON object does.
    #[test]
    fn a_submission_reads_as_its_json_object() {
        for text in samples() {
            let typed = Params::parse_for("agent", &text).expect("valid JSON");
            assert!(matches!(typed, Params::Submit(_)), "{text}");
            let json = Params::Json(serde_json::from_str(&text).unwrap());
            for name in names() {
                assert_eq!(typed.field(name), json.field(name), "{name} of {text}");
            }
            assert_eq!(
                typed.session_seq(),
                json.session_seq(),
                "sessionSeq of {text}"
            );
            let (mut t, mut j) = (typed.clone(), json.clone());
            for name in names() {
                assert_eq!(t.take_str(name), j.take_str(name), "take {name} of {text}");
            }
        }
    }

    #[test]
    fn other_methods_keep_their_object() {
        let p = Params::parse_for("chat.history", r#"{"sessionKey":"k","limit":5}"#).unwrap();
        assert_eq!(p, Params::Json(json!({"sessionKey": "k", "limit": 5})));
        assert_eq!(Params::empty_for("health"), Params::Json(json!({})));
        assert!(matches!(Params::empty_for("agent"), Params::Submit(_)));
    }

    #[test]
    fn a_submission_rebuilds_its_object_and_takes_new_fields() {
        let mut p = Params::parse_for("send", r#"{"to":"x","sessionSeq":3,"message":1}"#).unwrap();
        p.set_str("idempotencyKey", "seed:1".into());
        assert_eq!(p.str("idempotencyKey"), Some("seed:1"));
        assert_eq!(
            p.into_json(),
            json!({"to": "x", "sessionSeq": 3, "idempotencyKey": "seed:1"})
        );
    }
}
