//! Discord REST rate limits, sans-IO: per-route buckets learned from the answers'
//! `X-RateLimit-Bucket` / `-Remaining` / `-Reset-After` headers, a 429's `retry_after`
//! (seconds, a float) for its bucket, or for every route when `global`. The caller asks
//! [`Limits::acquire`] before a request and reports the answer to [`Limits::on_answer`].
//!
//! A bucket is Discord's bucket hash (the route itself until the first answer names it) per
//! major parameter (the channel id): two channels never share a limit, two routes with the
//! same hash do.

use std::collections::HashMap;

use super::wire;

/// One bucket's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    /// Requests left before `reset_at`.
    remaining: u64,
    /// When the bucket refills, ms.
    reset_at: i64,
}

/// What an answer means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (2xx).
    Done,
    /// Rate limited: try again at this time (ms).
    RetryAt {
        /// When.
        at: i64,
        /// Whether it was the global limit.
        global: bool,
    },
    /// Refused for another reason (4xx, 5xx): the status is the caller's to report.
    Failed,
}

/// A bot's known limits.
#[derive(Debug, Default)]
pub struct Limits {
    /// Route (`POST /channels/{id}/messages`) → bucket hash.
    hashes: HashMap<String, String>,
    /// `<hash>:<major>` → state.
    buckets: HashMap<String, Bucket>,
    /// No request before this time, ms.
    global_until: i64,
}

impl Limits {
    fn key(&self, route: &str, major: &str) -> String {
        let hash = self.hashes.get(route).map_or(route, String::as_str);
        format!("{hash}:{major}")
    }

    /// Takes a request slot for `route` with major parameter `major` at `now`: `Ok` to go
    /// (the slot counted), `Err(at)` to wait until `at` and ask again.
    pub fn acquire(&mut self, route: &str, major: &str, now: i64) -> Result<(), i64> {
        if self.global_until > now {
            return Err(self.global_until);
        }
        let key = self.key(route, major);
        match self.buckets.get_mut(&key) {
            Some(b) if b.reset_at <= now => {
                // Refilled; the answer will say by how much.
                self.buckets.remove(&key);
                Ok(())
            }
            Some(b) if b.remaining == 0 => Err(b.reset_at),
            Some(b) => {
                b.remaining -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Reads an answer to a request on `route`/`major` made at `now`: `header` looks a
    /// lower-case header name up.
    pub fn on_answer<'a>(
        &mut self,
        route: &str,
        major: &str,
        status: u16,
        header: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
        now: i64,
    ) -> Verdict {
        if let Some(hash) = header("x-ratelimit-bucket") {
            self.hashes.insert(route.to_string(), hash.to_string());
        }
        let key = self.key(route, major);
        let reset_after = header("x-ratelimit-reset-after").and_then(|v| v.parse::<f64>().ok());
        let remaining = header("x-ratelimit-remaining").and_then(|v| v.parse::<u64>().ok());
        if let (Some(remaining), Some(after)) = (remaining, reset_after) {
            self.buckets.insert(
                key.clone(),
                Bucket {
                    remaining,
                    reset_at: now + secs_to_ms(after),
                },
            );
        }
        if (200..300).contains(&status) {
            return Verdict::Done;
        }
        if status != 429 {
            return Verdict::Failed;
        }
        let parsed: Option<wire::RateLimited> = serde_json::from_slice(body).ok();
        let retry_s = parsed
            .as_ref()
            .map(|r| r.retry_after)
            .or_else(|| header("retry-after").and_then(|v| v.parse().ok()))
            .unwrap_or(1.0);
        let global = parsed.as_ref().is_some_and(|r| r.global)
            || header("x-ratelimit-global").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let at = now + secs_to_ms(retry_s).max(1);
        if global {
            self.global_until = self.global_until.max(at);
        } else {
            self.buckets.insert(
                key,
                Bucket {
                    remaining: 0,
                    reset_at: at,
                },
            );
        }
        Verdict::RetryAt { at, global }
    }
}

/// Seconds (a float, as Discord sends them) to whole ms, rounded up.
fn secs_to_ms(s: f64) -> i64 {
    if s.is_finite() && s > 0.0 {
        (s * 1000.0).ceil().min(3_600_000.0) as i64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "POST /channels/{id}/messages";

    fn headers<'a>(h: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |k| h.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    #[test]
    fn buckets_follow_the_headers() {
        let mut l = Limits::default();
        assert_eq!(l.acquire(R, "1", 0), Ok(()));
        let h = [
            ("x-ratelimit-bucket", "abc"),
            ("x-ratelimit-remaining", "1"),
            ("x-ratelimit-reset-after", "2.5"),
        ];
        assert_eq!(
            l.on_answer(R, "1", 200, headers(&h), b"{}", 0),
            Verdict::Done
        );
        // One left, then the bucket is empty until 2.5 s after the answer.
        assert_eq!(l.acquire(R, "1", 10), Ok(()));
        assert_eq!(l.acquire(R, "1", 20), Err(2_500));
        // Another channel is another bucket.
        assert_eq!(l.acquire(R, "2", 20), Ok(()));
        assert_eq!(l.acquire(R, "1", 2_500), Ok(()));
    }

    #[test]
    fn a_429_waits_retry_after_for_its_bucket_or_everything() {
        let mut l = Limits::default();
        let body = br#"{"message":"You are being rate limited.","retry_after":0.3,"global":false}"#;
        assert_eq!(
            l.on_answer(R, "1", 429, headers(&[]), body, 1_000),
            Verdict::RetryAt {
                at: 1_300,
                global: false
            }
        );
        assert_eq!(l.acquire(R, "1", 1_100), Err(1_300));
        assert_eq!(l.acquire(R, "2", 1_100), Ok(()));
        assert_eq!(l.acquire(R, "1", 1_300), Ok(()));
        let body = br#"{"message":"You are being rate limited.","retry_after":1.25,"global":true}"#;
        assert_eq!(
            l.on_answer(R, "1", 429, headers(&[]), body, 2_000),
            Verdict::RetryAt {
                at: 3_250,
                global: true
            }
        );
        assert_eq!(l.acquire("GET /gateway", "", 2_000), Err(3_250));
        assert_eq!(
            l.on_answer(R, "1", 403, headers(&[]), b"{}", 4_000),
            Verdict::Failed
        );
    }
}
