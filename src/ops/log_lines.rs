//! The log file's line format: one JSON object per line, with the keys OpenClaw's log reader
//! looks for (`time`, `level`, `subsystem`, `message`), so `openclaw logs` (through
//! `logs.tail`) shows our lines as it shows its own: `TIME LEVEL SUBSYSTEM MESSAGE`.
//!
//! The event's other fields follow under their own names (numbers and booleans as JSON
//! values, anything else as its `Debug` text). Lines stay greppable for `shardgate logs`.
//! Secrets never reach here: no log call in the gateway carries one (CONVENTIONS §11).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The [`FormatEvent`] of the file layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenClawLines;

/// Collects an event's fields into a JSON object.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), value.into());
    }
}

/// Now as RFC 3339 UTC (`2026-12-03T10:13:12.475123Z`), which JavaScript's `Date` parses.
pub fn rfc3339_now() -> String {
    let mut s = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut s));
    s
}

impl<S, N> FormatEvent<S, N> for OpenClawLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        let mut line = Map::new();
        line.insert("time".into(), Value::String(rfc3339_now()));
        line.insert(
            "level".into(),
            Value::String(meta.level().as_str().to_ascii_lowercase()),
        );
        line.insert("subsystem".into(), Value::String(meta.target().to_string()));
        line.insert(
            "message".into(),
            fields
                .remove("message")
                .unwrap_or(Value::String(String::new())),
        );
        for (k, v) in fields {
            line.entry(k).or_insert(v);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Clone, Default)]
    #[expect(
        clippy::disallowed_types,
        reason = "tracing's writer must be Send; the test reads what it wrote"
    )]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_has_the_keys_openclaw_reads() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(OpenClawLines)
                .with_writer(move || w.clone()),
        );
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(target: "shardgate::x", shard = 3, peer = "1.2.3.4:5", "connect refused: {}", "why");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["subsystem"], "shardgate::x");
        assert_eq!(v["message"], "connect refused: why");
        assert_eq!(v["shard"], 3);
        assert_eq!(v["peer"], "1.2.3.4:5");
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
        assert_eq!(text.lines().count(), 1);
    }
}
