//! A reply longer than a platform takes in one message, cut into messages.

/// `text` in pieces of at most `max_chars` characters, cut between characters (never inside
/// one); an empty text is one space, since the platforms refuse an empty message.
pub fn pieces(text: &str, max_chars: usize) -> Vec<&str> {
    if text.is_empty() {
        return vec![" "];
    }
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = rest
            .char_indices()
            .nth(max_chars)
            .map_or(rest.len(), |(i, _)| i);
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_texts_are_split_on_characters() {
        let t = "é".repeat(4096 + 10);
        let p = super::pieces(&t, 4096);
        assert_eq!(
            p.iter().map(|s| s.chars().count()).collect::<Vec<_>>(),
            [4096, 10]
        );
        let p = super::pieces(&t[..2003 * 2], 2000);
        assert_eq!(
            p.iter().map(|s| s.chars().count()).collect::<Vec<_>>(),
            [2000, 3]
        );
        assert_eq!(super::pieces("", 10), [" "]);
    }
}
