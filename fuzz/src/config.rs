//! The config loader ([`shardgate::config::Config::from_json5`], then `validate`).
//!
//! Input: JSON5 text (invalid UTF-8 is refused before parsing, as `load` does).
//!
//! Invariants: never a panic (nesting, huge numbers, odd keys); a config that loads and
//! validates writes out as JSON that loads back to the same config with no warnings.

use std::path::Path;

use shardgate::config::Config;

/// The target.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.json5");
    let Ok(loaded) = Config::from_json5(text, path) else {
        return;
    };
    if loaded.config.validate().is_err() {
        return;
    }
    let _ = loaded.config.redacted_json();
    let out = serde_json::to_string(&loaded.config).expect("a config serializes");
    let again = Config::from_json5(&out, path).expect("a written config loads");
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(again.config, loaded.config, "round trip through {out}");
}
