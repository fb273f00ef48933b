//! Durations written the seed article's way: `"250ms"`, `"1s"`, `"5m"`, `"2h"`, `"7d"`, or a
//! bare number of milliseconds.

use serde::{Deserialize, Serialize};

/// A duration in milliseconds that reads `"5m"` and writes the shortest exact unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub u64);

impl Millis {
    /// As a std duration.
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }

    /// Parses `"250ms" | "1s" | "5m" | "2h" | "7d" | "1500"`.
    pub fn parse(s: &str) -> Result<Millis, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("expected a duration like \"5m\", got {s:?}"))?;
        let mult = match unit.trim() {
            "" | "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            u => {
                return Err(format!(
                    "unknown duration unit {u:?} in {s:?} (ms, s, m, h, d)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(Millis)
            .ok_or_else(|| format!("duration {s:?} is too large"))
    }
}

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ms = self.0;
        let text = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ]
        .iter()
        .find(|(m, _)| ms != 0 && ms.is_multiple_of(*m))
        .map(|(m, u)| format!("{}{u}", ms / m))
        .unwrap_or_else(|| format!("{ms}ms"));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Millis(n)),
            Raw::S(s) => Millis::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(Millis::parse("250ms").unwrap(), Millis(250));
        assert_eq!(Millis::parse("1s").unwrap(), Millis(1000));
        assert_eq!(Millis::parse("7d").unwrap(), Millis(604_800_000));
        assert_eq!(Millis::parse("42").unwrap(), Millis(42));
        assert!(Millis::parse("5 parsecs").is_err());
        assert!(Millis::parse("").is_err());
    }

    #[test]
    fn round_trips() {
        for ms in [0, 1, 999, 1000, 60_000, 90_000, 604_800_000] {
            let v = serde_json::to_value(Millis(ms)).unwrap();
            assert_eq!(serde_json::from_value::<Millis>(v).unwrap(), Millis(ms));
        }
    }
}
