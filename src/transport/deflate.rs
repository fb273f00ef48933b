// Hot path: a compressed connection's every message is inflated or deflated here.
//! permessage-deflate (RFC 7692): the negotiation on the upgrade, and the per-shard coders.
//!
//! Invariant: no connection owns a compressor. The server imposes
//! `server_no_context_takeover; client_no_context_takeover` in its answer (RFC 7692 §7.1.1
//! lets it), so every message is a deflate stream of its own: one raw-deflate compressor per
//! window size and one decompressor serve all of a shard's connections (thread-locals: one
//! shard per thread), each reset before a message. A compressed connection at rest therefore
//! holds one byte more than a plain one (its agreed window, in `Conn`), not the ~256 KiB of a
//! zlib compressor at a 32 KiB window plus the ~40 KiB of a decompressor that a stream per
//! connection and direction would cost.
//!
//! Inflation is bounded: output grows in steps and stops at `limit + 1` bytes, so a small
//! "zip bomb" frame (a megabyte of zeros is ~1 KiB compressed) never makes the shard allocate
//! more than the message limit before it is refused (close 1009).
//!
//! Window sizes: the compressor honours a client's `server_max_window_bits` of 9 to 15 (the
//! zlib-rs backend takes the window size); 8 cannot be honoured (zlib's raw deflate has no
//! 256-byte window), so such an offer is declined and the next one, or none, is taken. The
//! decompressor always has the full 32 KiB window, so any `client_max_window_bits` the client
//! uses is fine and the answer never constrains it.

use std::cell::RefCell;
use std::thread::LocalKey;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";
/// The empty stored block that ends every flushed message (RFC 7692 §7.2.1): stripped by the
/// sender, put back by the receiver.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Smallest and largest LZ77 window (log2 bytes) the compressor can use.
const MIN_BITS: u8 = 9;
const MAX_BITS: u8 = 15;
/// Level 1: a shard spends its CPU on many connections; on JSON frames level 6 saves a few
/// percent more bytes at about three times the CPU (tuning.md, compression).
const LEVEL: u32 = 1;
/// A scratch buffer gives back its memory above this after a large message.
const KEEP: usize = 256 * 1024;
/// First step of inflate output growth.
const FIRST_STEP: usize = 16 * 1024;

/// What was agreed with one client: compress its messages with this window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// log2 of the compressor's window (9..=15): the client's `server_max_window_bits`, or 15.
    pub server_window_bits: u8,
    /// The client asked for `server_max_window_bits`: the answer must state it.
    window_requested: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101 answer.
    pub fn response(&self) -> String {
        let mut s = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
        if self.window_requested {
            s.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        s
    }
}

/// Splits `s` at `sep` outside quoted strings (a quoted value may hold `,` or `;`).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// An RFC 7230 token (what extension and parameter names, and unquoted values, are).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A parameter value: a token, or a quoted string unquoted (RFC 6455 §9.1: its content must
/// then be a token too). `None` when malformed.
fn param_value(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let v = match raw.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            let mut v = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.push(chars.next()?),
                    '"' => return None,
                    c => v.push(c),
                }
            }
            v
        }
        None => raw.to_string(),
    };
    is_token(&v).then_some(v)
}

/// A window size as RFC 7692 §7.1.2 spells it: `8`..`15`, no sign, no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// One `permessage-deflate` offer's parameters (the part after the name), if valid and
/// acceptable.
fn accept_offer(params: &[&str]) -> Option<Agreed> {
    let mut seen = [false; 4];
    let mut agreed = Agreed {
        server_window_bits: MAX_BITS,
        window_requested: false,
    };
    for p in params {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(param_value(v)?)),
            None => (p.trim(), None),
        };
        let slot = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                let bits = window_bits(value.as_deref()?)?;
                if bits < MIN_BITS {
                    // zlib cannot deflate raw with a 256-byte window.
                    return None;
                }
                agreed.server_window_bits = bits;
                agreed.window_requested = true;
                2
            }
            "client_max_window_bits" => {
                // Any window fits the decompressor's 32 KiB one: nothing to answer.
                if let Some(v) = value.as_deref() {
                    window_bits(v)?;
                }
                3
            }
            // An unknown parameter, or a value where none is allowed: decline this offer.
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None; // a parameter twice (RFC 7692 §7)
        }
    }
    Some(agreed)
}

/// The first acceptable `permessage-deflate` offer among the `Sec-WebSocket-Extensions`
/// header values, or `None` (the connection is then uncompressed, always legal). Other
/// extensions are ignored; a malformed or unhonourable offer is declined, not an error.
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<Agreed> {
    headers
        .into_iter()
        .flat_map(|h| split_outside_quotes(h, ','))
        .find_map(|ext| {
            let parts = split_outside_quotes(ext, ';');
            let name = parts[0].trim();
            if !name.eq_ignore_ascii_case(NAME) {
                return None;
            }
            accept_offer(&parts[1..])
        })
}

thread_local! {
    /// This shard's decompressor (full window: takes any client's stream).
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
    /// This shard's compressors, by window size (index `bits - 9`), made when first used.
    static DEFLATE: RefCell<[Option<Box<Compress>>; 7]> = const {
        RefCell::new([None, None, None, None, None, None, None])
    };
    /// Inflated messages land here; compressed ones are built here.
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a thread-local (or, if it is in use, on a fresh value).
fn with_local<T: Default, R>(key: &'static LocalKey<RefCell<T>>, f: impl FnOnce(&mut T) -> R) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(&mut v),
        Err(_) => f(&mut T::default()),
    })
}

/// Why a compressed message could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit (bytes).
    TooBig(usize),
    /// Not a valid deflate stream.
    Corrupt,
}

/// Grows `out`'s capacity for the next inflate step, never past `limit + 1` bytes in all
/// (one byte over is how the limit is seen to be passed).
fn grow(out: &mut Vec<u8>, limit: usize) {
    let cap = limit.saturating_add(1);
    let want = out
        .capacity()
        .max(FIRST_STEP / 2)
        .saturating_mul(2)
        .min(cap);
    out.reserve_exact(want.saturating_sub(out.len()));
}

/// Inflates `input` (fed in order) into `out` with the shard's decompressor, at most `limit`
/// bytes. `out` is cleared first.
fn inflate_into(
    d: &mut Decompress,
    input: &[&[u8]],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), InflateError> {
    d.reset(false);
    out.clear();
    for part in input.iter().copied().chain(std::iter::once(&TAIL[..])) {
        let mut used = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(InflateError::TooBig(limit));
                }
                grow(out, limit);
            }
            let (in0, out0) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(&part[used..], out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            used += (d.total_in() - in0) as usize;
            if out.len() > limit {
                return Err(InflateError::TooBig(limit));
            }
            let progressed = d.total_in() != in0 || d.total_out() != out0;
            match status {
                // A final block: what follows (our tail) is not part of the message.
                Status::StreamEnd => return Ok(()),
                _ if used == part.len() && out.len() < out.capacity() => break,
                _ if !progressed && out.len() < out.capacity() => {
                    return Err(InflateError::Corrupt)
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Inflates one message (its frames' payloads in order, tail not included) and hands the
/// result to `f`. Uses the shard's decompressor and output buffer.
pub fn with_inflated<R>(
    input: &[&[u8]],
    limit: usize,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, InflateError> {
    with_local(&OUT, |out| {
        let r = INFLATE.with(|cell| {
            let mut slot = cell.borrow_mut();
            let d = slot.get_or_insert_with(|| Decompress::new_with_window_bits(false, MAX_BITS));
            inflate_into(d, input, out, limit)
        });
        let r = r.map(|()| f(out));
        if out.capacity() > KEEP {
            *out = Vec::new();
        }
        r
    })
}

/// Deflates `input` (one message, fed in order) with `c`, appending to `out` without the
/// trailing `00 00 ff ff`.
fn deflate_into(c: &mut Compress, input: &[&[u8]], out: &mut Vec<u8>) {
    c.reset();
    let total: usize = input.iter().map(|p| p.len()).sum();
    out.reserve(total / 2 + 64);
    for part in input.iter().copied() {
        let mut used = 0;
        while used < part.len() {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(1024));
            }
            let before = c.total_in();
            // Compressing into a Vec with room cannot fail (no dictionary, valid flush).
            let _ = c.compress_vec(&part[used..], out, FlushCompress::None);
            used += (c.total_in() - before) as usize;
        }
    }
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let _ = c.compress_vec(&[], out, FlushCompress::Sync);
        // Done when the flush left room unused: everything pending was written.
        if out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
}

/// Deflates one message (`input`, in order) with the shard's compressor for `bits` and hands
/// the compressed payload (trailer stripped) to `f`.
pub fn with_deflated<R>(bits: u8, input: &[&[u8]], f: impl FnOnce(&[u8]) -> R) -> R {
    let bits = bits.clamp(MIN_BITS, MAX_BITS);
    with_local(&OUT, |out| {
        out.clear();
        DEFLATE.with(|cell| {
            let mut all = cell.borrow_mut();
            let c = all[usize::from(bits - MIN_BITS)].get_or_insert_with(|| {
                Box::new(Compress::new_with_window_bits(
                    Compression::new(LEVEL),
                    false,
                    bits,
                ))
            });
            deflate_into(c, input, out);
        });
        let r = f(out);
        if out.capacity() > KEEP {
            *out = Vec::new();
        }
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(bits: u8, requested: bool) -> Option<Agreed> {
        Some(Agreed {
            server_window_bits: bits,
            window_requested: requested,
        })
    }

    #[test]
    fn offers_are_parsed_and_the_first_acceptable_one_wins() {
        let cases: &[(&[&str], Option<Agreed>)] = &[
            (&["permessage-deflate"], agreed(15, false)),
            (
                &["permessage-deflate; client_max_window_bits"],
                agreed(15, false),
            ),
            (
                &["Permessage-Deflate ;client_max_window_bits=10"],
                agreed(15, false),
            ),
            (
                &["permessage-deflate; server_max_window_bits=10"],
                agreed(10, true),
            ),
            (
                &["permessage-deflate; server_max_window_bits=\"12\""],
                agreed(12, true),
            ),
            (
                &["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
                agreed(15, false),
            ),
            // 8 cannot be honoured: that offer is declined, the next taken.
            (
                &["permessage-deflate; server_max_window_bits=8, permessage-deflate"],
                agreed(15, false),
            ),
            (&["permessage-deflate; server_max_window_bits=8"], None),
            // Several headers; other extensions ignored.
            (
                &[
                    "x-webkit-deflate-frame",
                    "foo; a=\"x,y\", permessage-deflate; server_max_window_bits=9",
                ],
                agreed(9, true),
            ),
            // Unknown parameter, duplicate, bad values: declined.
            (&["permessage-deflate; foo"], None),
            (
                &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
                None,
            ),
            (&["permessage-deflate; server_max_window_bits"], None),
            (&["permessage-deflate; server_max_window_bits=16"], None),
            (&["permessage-deflate; server_max_window_bits=010"], None),
            (
                &["permessage-deflate; server_max_window_bits=\"1\"0\""],
                None,
            ),
            (&["permessage-deflate; client_max_window_bits=7"], None),
            (&["permessage-deflate; server_no_context_takeover=1"], None),
            (&["permessage-deflate; client_max_window_bits=\"10"], None),
            (&["permessage-deflate;"], None),
            (&["deflate-frame", ""], None),
            (&[], None),
        ];
        for (headers, want) in cases {
            assert_eq!(negotiate(headers.iter().copied()), *want, "{headers:?}");
        }
    }

    #[test]
    fn the_answer_imposes_no_context_takeover_both_ways() {
        assert_eq!(
            agreed(15, false).unwrap().response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            agreed(10, true).unwrap().response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
    }

    /// Some JSON-like text that compresses (repeats at distances of a few hundred bytes).
    fn sample(n: usize) -> Vec<u8> {
        let mut s = Vec::new();
        let mut i = 0u64;
        while s.len() < n {
            s.extend_from_slice(
                format!(
                    r#"{{"type":"event","event":"agent","seq":{i},"payload":{{"delta":"w{}"}}}}"#,
                    i * 7919 % 1000
                )
                .as_bytes(),
            );
            i += 1;
        }
        s.truncate(n);
        s
    }

    #[test]
    fn messages_round_trip_with_every_window_and_in_pieces() {
        for bits in MIN_BITS..=MAX_BITS {
            for n in [0, 1, 300, 70_000] {
                let msg = sample(n);
                let (a, b) = msg.split_at(n / 3);
                let z = with_deflated(bits, &[a, b], |z| z.to_vec());
                assert!(!z.ends_with(&TAIL) || n == 0, "tail not stripped");
                if n >= 300 {
                    assert!(z.len() < n / 2, "bits {bits} n {n}: {} bytes", z.len());
                }
                // A decompressor with only the agreed window reads it: no distance is longer.
                let mut d = Decompress::new_with_window_bits(false, bits);
                let mut out = Vec::new();
                inflate_into(&mut d, &[&z], &mut out, usize::MAX - 1).unwrap();
                assert_eq!(out, msg, "bits {bits} n {n}");
                // The shard's decompressor too, with the payload split anywhere.
                let (x, y) = z.split_at(z.len() / 2);
                let got = with_inflated(&[x, y], n, |m| m.to_vec()).unwrap();
                assert_eq!(got, msg, "bits {bits} n {n}");
            }
        }
    }

    #[test]
    fn a_zip_bomb_is_refused_without_allocating_past_the_limit() {
        // What an attacker sends: 1 MiB of zeros at the best ratio deflate has (~1:1000).
        let zeros = vec![0u8; 1 << 20];
        let mut c = Compress::new(Compression::best(), false);
        let mut z = Vec::with_capacity(4096);
        c.compress_vec(&zeros, &mut z, FlushCompress::Sync).unwrap();
        assert!(z.len() < 2048, "{} bytes", z.len());
        let limit = 64 * 1024;
        let mut d = Decompress::new_with_window_bits(false, 15);
        let mut out = Vec::new();
        assert_eq!(
            inflate_into(&mut d, &[&z], &mut out, limit),
            Err(InflateError::TooBig(limit))
        );
        assert!(out.capacity() <= limit + 1, "capacity {}", out.capacity());
        // Exactly at the limit is fine.
        let exact = with_deflated(15, &[&zeros[..limit]], |z| z.to_vec());
        assert_eq!(with_inflated(&[&exact], limit, |m| m.len()), Ok(limit));
        assert_eq!(
            with_inflated(&[&exact], limit - 1, |m| m.len()),
            Err(InflateError::TooBig(limit - 1))
        );
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for input in [
            &[0xff_u8, 0xff, 0xff][..],
            &[0x07],
            &[0x02, 0xff, 0x00, 0x13],
        ] {
            let r = with_inflated(&[input], 1 << 20, |m| m.len());
            assert!(
                matches!(r, Err(InflateError::Corrupt) | Ok(_)),
                "{input:?}: {r:?}"
            );
        }
        assert_eq!(
            with_inflated(&[&[0xff, 0xff, 0xff]], 1 << 20, |m| m.len()),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn a_final_block_ends_the_message() {
        // A sender may end with BFINAL set (a full `finish`): the tail then is not read.
        let mut c = Compress::new(Compression::default(), false);
        let mut z = Vec::with_capacity(1024);
        c.compress_vec(b"hello hello hello", &mut z, FlushCompress::Finish)
            .unwrap();
        assert_eq!(
            with_inflated(&[&z], 100, |m| m.to_vec()),
            Ok(b"hello hello hello".to_vec())
        );
    }
}
