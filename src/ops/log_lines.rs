//! The log file's line format: one JSON object per line, with the keys OpenClaw's log reader
//! looks for (`time`, `level`, `subsystem`, `message`), so `openclaw logs` (through
//! `logs.tail`) shows our lines as it shows its own: `TIME LEVEL SUBSYSTEM MESSAGE`.
//!
//! The event's other fields follow under their own names (numbers and booleans as JSON
//! values, anything else as its `Debug` text). Lines stay greppable for `shardgate logs`.
//! tracing-subscriber's own JSON format cannot serve: its keys are `timestamp` and `target`,
//! which OpenClaw's reader does not know (no time, no subsystem shown).
//! Secrets never reach here: no log call in the gateway carries one (CONVENTIONS §11).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The [`FormatEvent`] of the file layer. It writes the line straight into the layer's
/// (reused, per-thread) buffer: no map, no per-field string, one pass per event.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenClawLines;

/// Keys the line itself sets; an event field of the same name is left out, so a reader never
/// sees a key twice.
const OWN_KEYS: [&str; 3] = ["time", "level", "subsystem"];

/// A [`fmt::Write`] that escapes what passes through it as the inside of a JSON string, so
/// `Debug` and `Display` values are written escaped without a `String` of their own.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::protocol::frame::write_escaped(self.0, s)
    }
}

/// Writes `s` as a JSON string.
fn json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes an event's fields as `,"name":value` pairs.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    /// Whether a `message` field was written.
    message: bool,
    /// The first write error; `Visit` cannot return one.
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || OWN_KEYS.contains(&name) {
            return;
        }
        self.message |= name == "message";
        self.result = (|| {
            self.w.write_char(',')?;
            json_str(self.w, name)?;
            self.w.write_char(':')?;
            value(self.w)
        })();
    }
}

impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| json_str(w, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| write!(w, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| write!(w, "{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| write!(w, "{value}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those are null, as serde_json writes them.
        self.field(field, |w| {
            if value.is_finite() {
                write!(w, "{value}")
            } else {
                w.write_str("null")
            }
        });
    }
}

/// Now as RFC 3339 UTC (`2026-12-03T10:13:12.475123Z`), which JavaScript's `Date` parses.
pub fn rfc3339_now() -> String {
    let mut s = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut s));
    s
}

/// The level as OpenClaw writes it (lower case).
fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
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
        // The timestamp is digits, '-', ':', '.', 'T' and 'Z': nothing to escape.
        writer.write_str("{\"time\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(
            writer,
            "\",\"level\":\"{}\",\"subsystem\":",
            level_name(meta.level())
        )?;
        json_str(&mut writer, meta.target())?;
        let mut fields = Fields {
            w: &mut writer,
            message: false,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        if !fields.message {
            writer.write_str(",\"message\":\"\"")?;
        }
        writer.write_str("}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
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

    /// What `log` writes through an [`OpenClawLines`] layer.
    fn logged(log: impl FnOnce()) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(OpenClawLines)
                .with_writer(move || w.clone()),
        );
        tracing::subscriber::with_default(sub, log);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn a_line_has_the_keys_openclaw_reads() {
        let text = logged(|| {
            tracing::warn!(target: "shardgate::x", shard = 3, peer = "1.2.3.4:5", "connect refused: {}", "why");
        });
        let v: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["subsystem"], "shardgate::x");
        assert_eq!(v["message"], "connect refused: why");
        assert_eq!(v["shard"], 3);
        assert_eq!(v["peer"], "1.2.3.4:5");
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn values_are_escaped_and_the_line_is_one_json_object() {
        let text = logged(|| {
            let origin = Some("a\"b\\c");
            tracing::info!(target: "t", origin = ?origin, ratio = f64::NAN, ok = true,
                           level = "not the level", "two\nlines\tand \u{1} \u{e9}");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["message"], "two\nlines\tand \u{1} \u{e9}");
        assert_eq!(v["origin"], r#"Some("a\"b\\c")"#);
        assert_eq!(v["ratio"], Value::Null);
        assert_eq!(v["ok"], true);
        assert_eq!(
            v["level"], "info",
            "an event field does not replace the line's own key"
        );
        let no_message = logged(|| tracing::info!(target: "t", n = 1));
        let v: Value = serde_json::from_str(no_message.trim_end()).unwrap();
        assert_eq!(v["message"], "");
        assert_eq!(v["n"], 1);
    }
}
