//! The one text form of an instant: UTC, RFC 3339, milliseconds, `Z`
//! (`2026-12-01T01:00:00.000Z`). It sorts as text and works with SQLite's date functions.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// Format an instant the way the database and the JSON outputs store it.
pub fn fmt_utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parse an instant written by [`fmt_utc`] (any RFC 3339 text is accepted).
pub fn parse_utc(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// `t + d`, or `None` past the last instant chrono can hold. Every sum of an instant and a
/// duration from outside (a policy, a config, an answer) goes through here or [`sub`].
pub fn add(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(TimeDelta::from_std(d).ok()?)
}

/// `t - d`, or `None` before the first instant chrono can hold.
pub fn sub(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_sub_signed(TimeDelta::from_std(d).ok()?)
}

/// Truncate to whole milliseconds, so that an instant survives a round trip through its text form.
pub fn trunc_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_out_of_range_are_none_not_a_panic() {
        let t = parse_utc("2026-12-01T09:00:00Z").expect("valid");
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(add(t, huge), None);
        assert_eq!(sub(t, huge), None);
        assert_eq!(add(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)), None);
        assert_eq!(
            add(t, Duration::from_secs(3600)).map(fmt_utc).as_deref(),
            Some("2026-12-01T10:00:00.000Z")
        );
    }

    #[test]
    fn instants_are_written_with_millis_and_z() {
        let t = parse_utc("2026-12-01T09:00:00+08:00").expect("valid");
        assert_eq!(fmt_utc(t), "2026-12-01T01:00:00.000Z");
    }
}
