//! Durations (`250ms`, `1s`, `2m`) and byte sizes (`16MiB`, `4096`) as written in config.

use std::time::Duration;

/// Longest duration any key takes; also keeps `Instant + duration` from overflowing.
const MAX_DURATION_SECS: f64 = 30.0 * 86400.0;

/// Parses `<number><unit>` with unit `us`, `ms`, `s`, `m` or `h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("{s:?} has no unit (e.g. \"250ms\", \"1s\")"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration"))?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use us, ms, s, m, h)")),
    };
    if !(0.0..=MAX_DURATION_SECS).contains(&secs) {
        return Err(format!("{s:?} is out of range (at most 30 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte count, plain or with `KiB`, `MiB`, `GiB` (or `KB`, `MB`, `GB` as powers of 1000).
pub fn parse_byte_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// A size in bytes, as a config key gives it (`"16MiB"`, `4096`), validated against its key's
/// range when the config was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub usize);

impl ByteSize {
    /// The size in bytes.
    pub const fn get(self) -> usize {
        self.0
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}
