//! The one text form of an instant: UTC, RFC 3339, milliseconds, `Z`
//! (`2026-12-01T01:00:00.000Z`). It sorts as text and works with SQLite's date functions.

use chrono::{DateTime, SecondsFormat, Utc};

/// Format an instant the way the database and the JSON outputs store it.
pub fn fmt_utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parse an instant written by [`fmt_utc`] (any RFC 3339 text is accepted).
pub fn parse_utc(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// Truncate to whole milliseconds, so that an instant survives a round trip through its text form.
pub fn trunc_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_written_with_millis_and_z() {
        let t = parse_utc("2026-12-01T09:00:00+08:00").expect("valid");
        assert_eq!(fmt_utc(t), "2026-12-01T01:00:00.000Z");
    }
}
