//! How deeply a JSON5 text nests, counted before it is parsed: the JSON5 parser and the
//! serde layers after it recurse once per level, so a config nested tens of thousands deep
//! overflowed the stack (found by the config fuzz target). No real config nests past a
//! handful of levels; [`MAX_DEPTH`] is serde_json's own limit.

/// Deepest nesting of objects and arrays accepted.
pub(super) const MAX_DEPTH: usize = 128;

/// The deepest nesting of `{`/`[` in `text`, outside strings and comments, stopping early
/// once past `MAX_DEPTH`. Linear, no allocation.
pub(super) fn nesting(text: &str) -> usize {
    let b = text.as_bytes();
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while i < b.len() && max <= MAX_DEPTH {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    // An escape takes the next byte with it (a quote, a backslash, a newline).
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_outside_strings_and_comments() {
        assert_eq!(nesting("{a: [1, {b: 2}]}"), 3);
        assert_eq!(
            nesting(
                r#"{a: "[[[{", b: '\'{{', /* [[[ */ c: 1 // {{{
        }"#
            ),
            1
        );
        assert_eq!(nesting("[]{}[]"), 1);
        assert!(nesting(&"[".repeat(100_000)) > MAX_DEPTH);
    }
}
