//! Wall-clock helpers: Unix milliseconds and RFC 3339 UTC timestamps, without a date crate
//! for what is twenty lines of calendar arithmetic.
use std::time::{SystemTime, UNIX_EPOCH};

/// Whole seconds of a monotonic instant since a fixed base: the retry budget's clock, read
/// from an instant the caller usually has already (no clock read of its own).
pub fn mono_secs(at: tokio::time::Instant) -> u64 {
    static BASE: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        at.checked_sub(std::time::Duration::from_secs(1))
            .unwrap_or(at)
    });
    at.saturating_duration_since(base).as_secs()
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2025-11-14T20:30:00.123Z`: [`rfc3339`] with milliseconds (the access log's `ts`).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let mut s = rfc3339(unix_ms);
    s.insert_str(s.len() - 1, &format!(".{:03}", unix_ms % 1000));
    s
}

/// `2025-11-14T20:30:00Z` for a Unix time in milliseconds.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_763_152_200_000), "2025-11-14T20:30:00Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(
            super::rfc3339_ms(951_782_400_007),
            "2000-02-29T00:00:00.007Z"
        );
    }
}
