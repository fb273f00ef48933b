//! Encoding one command as Redis reads it: a RESP array of bulk strings.
//!
//! Redis accepts only this shape (or the inline form) from clients, whatever protocol version
//! it answers in, so every argument is a binary-safe bulk string, including numbers. The bytes
//! are appended to the connection's output buffer, so many commands queued between two writes
//! go out in one `send` (pipelining).

use redis_protocol::resp3::encode::complete::encode_borrowed;
use redis_protocol::resp3::types::BorrowedFrame;

/// Appends `args` (command name first) to `out` as one RESP array of bulk strings.
///
/// Panics never: the encoder's only failure is a too-small buffer, and the buffer is sized to
/// the frame's exact encoded length first.
pub(crate) fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let items: Vec<BorrowedFrame<'_>> = args
        .iter()
        .map(|a| BorrowedFrame::BlobString {
            data: a,
            attributes: None,
        })
        .collect();
    let frame = BorrowedFrame::Array {
        data: &items,
        attributes: None,
    };
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    match encode_borrowed(&mut out[start..], &frame, false) {
        Ok(n) => out.truncate(start + n),
        // Unreachable by construction (exact length); keep the buffer consistent regardless.
        Err(_) => out.truncate(start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b"v\r\n"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n");
    }

    #[test]
    fn commands_append_and_empty_arguments_are_kept() {
        let mut out = b"*1\r\n$4\r\nPING\r\n".to_vec();
        encode_command(&mut out, &[b"ECHO", b""]);
        assert_eq!(out, b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n");
    }
}
