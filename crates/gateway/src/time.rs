//! Wall-clock time and human durations (`30s`, `15m`, `24h`, `90d`), as config and CLI take them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses `<n><unit>` with unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad =
        || format!("'{text}' is not a duration: write a whole number and a unit (ms, s, m, h, d), e.g. 30s or 90d");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let millis = number.checked_mul(millis_per_unit).ok_or_else(|| format!("'{text}' is too long a duration"))?;
    // Beyond about a hundred years the number is a mistake, and it would overflow timestamps.
    if millis > 100 * 365 * 86_400_000 {
        return Err(format!("'{text}' is too long a duration (at most 100 years)"));
    }
    Ok(Duration::from_millis(millis))
}

/// Deserializes a human duration from a TOML string.
pub fn deserialize_duration<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text: String = serde::Deserialize::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Now as RFC 3339 UTC with milliseconds (`2026-11-25T22:29:27.123Z`), for audit records.
pub fn now_rfc3339_millis() -> String {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX);
    let text = format_timestamp(seconds);
    format!("{}.{:03}Z", text.trim_end_matches('Z'), elapsed.subsec_millis())
}

/// Formats a Unix timestamp as RFC 3339 UTC (`2026-11-25T22:29:27Z`).
pub fn format_timestamp(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Civil-from-days, Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3_600, rest % 3_600 / 60, rest % 60)
}

/// The UTC day of a Unix timestamp, `YYYY-MM-DD` (quota windows and usage rows).
pub fn day_of(seconds: i64) -> String {
    format_timestamp(seconds)[..10].to_owned()
}

/// The first day of the UTC month of a Unix timestamp, `YYYY-MM-01`.
pub fn month_start(seconds: i64) -> String {
    format!("{}-01", &format_timestamp(seconds)[..7])
}

/// Seconds until the next UTC midnight.
pub fn until_next_day(seconds: i64) -> i64 {
    86_400 - seconds.rem_euclid(86_400)
}

/// Checks a `YYYY-MM-DD` day written by a person.
pub fn parse_day(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    let ok = bytes.len() == 10 && bytes[4] == b'-' && bytes[7] == b'-' && digits(0..4) && digits(5..7) && digits(8..10);
    let month: u32 = text.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(0);
    let day: u32 = text.get(8..10).and_then(|d| d.parse().ok()).unwrap_or(0);
    if ok && (1..=12).contains(&month) && (1..=31).contains(&day) {
        Ok(text.to_owned())
    } else {
        Err(format!("'{text}' is not a day written YYYY-MM-DD"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(1_795_646_967), "2026-11-25T22:49:27Z");
        assert_eq!(format_timestamp(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn days_and_months_are_utc_calendar_windows() {
        assert_eq!(day_of(1_795_646_967), "2026-11-25");
        assert_eq!(month_start(1_795_646_967), "2026-11-01");
        assert_eq!(until_next_day(1_795_646_967), 86_400 - (22 * 3600 + 49 * 60 + 27));
        assert_eq!(parse_day("2026-02-03"), Ok("2026-02-03".into()));
        for bad in ["2026-2-3", "2026-13-01", "yesterday", "2026-02-00", "2026/02/03"] {
            assert!(parse_day(bad).is_err(), "{bad}");
        }
    }
}
