//! When a policy's meetings start: a one-off local time or a cron pattern, in an IANA time zone.
//!
//! DST rules (`docs/policies.md`): a local time that does not exist (spring-forward gap) fires at the first
//! instant after the gap; a local time that happens twice (fall-back overlap) fires once, at the
//! first. All instants leave this module in UTC.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::invalid::{Invalid, did_you_mean};

/// An IANA time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Zone(Tz);

impl From<Tz> for Zone {
    fn from(tz: Tz) -> Self {
        Zone(tz)
    }
}

impl Zone {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Tz::from_str(s).map(Zone).map_err(|_| {
            Invalid::new(format!("unknown time zone '{s}'"))
                .with_hint(did_you_mean(s, chrono_tz::TZ_VARIANTS.iter().map(|z| z.name())))
        })
    }

    pub fn tz(self) -> Tz {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// Is `t` (whose wall-clock time here is `local`) the second of the two instants a repeated
    /// wall-clock time denotes in the fall-back overlap?
    pub fn is_second_pass(self, local: NaiveDateTime, t: DateTime<Utc>) -> bool {
        match self.0.from_local_datetime(&local) {
            LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc) != t,
            LocalResult::Single(_) | LocalResult::None => false,
        }
    }

    /// The instant a local wall-clock time denotes, with the DST rules above.
    pub fn resolve_local(self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.0.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            LocalResult::None => {
                // In a gap: walk forward minute by minute (zone transitions fall on whole minutes)
                // to the first wall-clock time that exists: that is the end of the gap.
                let mut probe = local
                    .with_second(0)
                    .and_then(|t| t.with_nanosecond(0))
                    .unwrap_or(local);
                for _ in 0..(48 * 60) {
                    probe += TimeDelta::minutes(1);
                    if let Some(t) = self.0.from_local_datetime(&probe).earliest() {
                        return Some(t.with_timezone(&Utc));
                    }
                }
                None
            }
        }
    }
}

use chrono::{Datelike as _, Timelike as _};

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// A validated cron pattern (5 fields, or 6 with seconds first; croner syntax with `L`, `W`, `#`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CronExpr(String);

fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

impl CronExpr {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let fields = s.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(Invalid::new(format!(
                "cron pattern '{s}' has {fields} fields; expected 5 (minute hour day month weekday) or 6 (with seconds first)"
            )));
        }
        let cron = cron_parser()
            .parse(s)
            .map_err(|e| Invalid::new(format!("invalid cron pattern '{s}': {e}")))?;
        // A pattern that names no real date (`0 9 31 2 *`: February has no 31st) is valid
        // syntax but would never fire: refused here, not discovered by an empty schedule.
        let from = DateTime::<Utc>::UNIX_EPOCH;
        if cron.find_next_occurrence(&from, false).is_err() {
            return Err(Invalid::new(format!(
                "cron pattern '{s}' never fires: no date matches its day and month fields"
            )));
        }
        Ok(Self(s.trim().to_owned()))
    }

    /// A pattern read back from the database, where only validated patterns are written. It is
    /// compiled lazily (and shared) by [`CronCache`]; an unparsable one simply never fires.
    pub fn from_stored(s: &str) -> Self {
        Self(s.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the hour field is a wildcard (`*`, `*/2`): such a pattern keeps its interval in
    /// real time through a fall-back hour; one with fixed hours fires once in it.
    pub fn hour_is_wildcard(&self) -> bool {
        let fields: Vec<&str> = self.0.split_whitespace().collect();
        let hour = if fields.len() == 6 {
            fields.get(2)
        } else {
            fields.get(1)
        };
        hour.is_some_and(|h| h.starts_with('*'))
    }

    fn compile(&self) -> Option<Cron> {
        cron_parser().parse(&self.0).ok()
    }
}

/// A one-off start: a local wall-clock time in the policy's zone, or an instant with its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Local(NaiveDateTime),
    Fixed(DateTime<FixedOffset>),
}

impl At {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let at = Self::parse_unbounded(s)?;
        let year = match at {
            At::Local(t) => t.year(),
            At::Fixed(t) => t.year(),
        };
        if !(1970..=9000).contains(&year) {
            return Err(Invalid::new(format!(
                "time '{s}' is out of range: the year must be from 1970 to 9000"
            )));
        }
        Ok(at)
    }

    fn parse_unbounded(s: &str) -> Result<Self, Invalid> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(At::Fixed(t));
        }
        for fmt in [
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M",
        ] {
            if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
                return Ok(At::Local(t));
            }
        }
        Err(Invalid::new(format!(
            "invalid time '{s}': expected a local time like 2026-12-01T09:00:00, or RFC 3339 with an offset like 2026-12-01T09:00:00+08:00"
        )))
    }

    /// The text stored in `policies.at`.
    pub fn to_text(self) -> String {
        match self {
            At::Local(t) => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
            At::Fixed(t) => t.to_rfc3339(),
        }
    }
}

/// When a policy's meetings start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    At(At),
    Cron(CronExpr),
    /// A `match` policy's: its meetings start when DingTalk's event says so; nothing is planned.
    OnEvent,
}

/// Parsed cron patterns shared by expression: 100k policies on "0 9 * * MON" parse it once.
#[derive(Default)]
pub struct CronCache {
    parsed: HashMap<String, Option<Arc<Cron>>>,
}

impl CronCache {
    fn get(&mut self, expr: &CronExpr) -> Option<Arc<Cron>> {
        self.parsed
            .entry(expr.0.clone())
            .or_insert_with(|| expr.compile().map(Arc::new))
            .clone()
    }
}

impl Schedule {
    /// Meeting start instants in `(after, until]`, in order, at most `limit` of them.
    pub fn starts_between(
        &self,
        zone: Zone,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
        cache: &mut CronCache,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < limit {
            match self.next_start_after(zone, cursor, cache) {
                Some(t) if t <= until => {
                    out.push(t);
                    cursor = t;
                }
                _ => break,
            }
        }
        out
    }

    /// The first meeting start strictly after `after`.
    pub fn next_start_after(
        &self,
        zone: Zone,
        after: DateTime<Utc>,
        cache: &mut CronCache,
    ) -> Option<DateTime<Utc>> {
        match self {
            Schedule::OnEvent => None,
            Schedule::At(at) => {
                let t = match at {
                    At::Local(local) => zone.resolve_local(*local)?,
                    At::Fixed(t) => t.with_timezone(&Utc),
                };
                (t > after).then_some(t)
            }
            Schedule::Cron(expr) => {
                let cron = cache.get(expr)?;
                let fixed_hour = !expr.hour_is_wildcard();
                let mut cursor = after;
                // Bounded: a repeated hour holds at most 3,600 firings (a per-second pattern).
                for _ in 0..4_000 {
                    let local = cursor.with_timezone(&zone.tz());
                    let mut next = cron.find_next_occurrence(&local, false).ok()?;
                    // Never backwards in UTC (croner may offer the same wall-clock time again).
                    while next.with_timezone(&Utc) <= cursor {
                        next = cron.find_next_occurrence(&next, false).ok()?;
                    }
                    let t = next.with_timezone(&Utc);
                    // The fall-back rule (cronie's): a fixed hour fires once, in the first pass
                    // through the repeated hour; a `*` hour keeps its interval in real time.
                    if fixed_hour && zone.is_second_pass(next.naive_local(), t) {
                        cursor = t;
                        continue;
                    }
                    return Some(t);
                }
                None
            }
        }
    }

    /// The last meeting start at or before `at_or_before`, no earlier than `not_before`.
    pub fn last_start_in(
        &self,
        zone: Zone,
        not_before: DateTime<Utc>,
        at_or_before: DateTime<Utc>,
        cache: &mut CronCache,
    ) -> Option<DateTime<Utc>> {
        match self {
            Schedule::OnEvent => None,
            Schedule::At(_) => self
                .next_start_after(zone, not_before - TimeDelta::milliseconds(1), cache)
                .filter(|t| *t <= at_or_before),
            Schedule::Cron(expr) => {
                // Most questions are about a short span (a meeting's window) holding no firing:
                // one step forward from its start answers them, where the backward search walks
                // back to the previous firing however far (a yearly cron: a year of days).
                if self
                    .next_start_after(zone, not_before - TimeDelta::milliseconds(1), cache)
                    .is_none_or(|first| first > at_or_before)
                {
                    return None;
                }
                let cron = cache.get(expr)?;
                let fixed_hour = !expr.hour_is_wildcard();
                let mut upper = at_or_before;
                for _ in 0..4_000 {
                    let local = upper.with_timezone(&zone.tz());
                    let prev = cron.find_previous_occurrence(&local, true).ok()?;
                    let t = prev.with_timezone(&Utc);
                    if t < not_before {
                        return None;
                    }
                    if fixed_hour && zone.is_second_pass(prev.naive_local(), t) {
                        upper = t - TimeDelta::milliseconds(1);
                        continue;
                    }
                    return Some(t);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn berlin() -> Zone {
        Zone::parse("Europe/Berlin").expect("zone")
    }

    #[test]
    fn zones_suggest_near_misses() {
        let err = Zone::parse("Asia/Shangai").expect_err("typo");
        assert_eq!(err.message, "unknown time zone 'Asia/Shangai'");
        assert_eq!(err.hint.as_deref(), Some("did you mean 'Asia/Shanghai'?"));
    }

    #[test]
    fn a_cron_that_can_never_fire_is_refused() {
        for never in ["0 9 31 2 *", "0 9 30 2 *", "0 9 31 4,6,9,11 *"] {
            let e = CronExpr::parse(never).expect_err(never);
            assert!(e.message.contains("never fires"), "{never}: {e}");
        }
        for rare in ["0 9 29 2 *", "0 9 31 * *", "0 9 L 2 *"] {
            assert!(CronExpr::parse(rare).is_ok(), "{rare}");
        }
    }

    #[test]
    fn cron_needs_five_or_six_fields_and_knows_l_w_hash() {
        assert!(CronExpr::parse("0 9 * * MON").is_ok());
        assert!(CronExpr::parse("30 0 9 * * MON").is_ok());
        assert!(CronExpr::parse("0 9 L * *").is_ok());
        assert!(CronExpr::parse("0 9 15W * *").is_ok());
        assert!(CronExpr::parse("0 9 * * MON#2").is_ok());
        assert!(CronExpr::parse("0 9 * *").is_err());
        assert!(CronExpr::parse("0 0 9 * * MON 2027").is_err());
        assert!(CronExpr::parse("0 25 * * *").is_err());
    }

    #[test]
    fn cron_in_the_spring_forward_gap_fires_at_the_end_of_the_gap() {
        // 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST (01:00 UTC).
        let s = Schedule::Cron(CronExpr::parse("30 2 * * *").expect("cron"));
        let mut cache = CronCache::default();
        let starts = s.starts_between(
            berlin(),
            utc("2026-03-27T12:00:00Z"),
            utc("2026-03-31T12:00:00Z"),
            10,
            &mut cache,
        );
        assert_eq!(
            starts,
            vec![
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // 02:30 does not exist: 03:00 CEST
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
                utc("2026-03-31T00:30:00Z"),
            ]
        );
    }

    #[test]
    fn cron_in_the_fall_back_overlap_fires_once_at_the_first() {
        // 2026-10-25: Berlin goes from 03:00 CEST back to 02:00 CET (01:00 UTC).
        let s = Schedule::Cron(CronExpr::parse("30 2 * * *").expect("cron"));
        let mut cache = CronCache::default();
        let starts = s.starts_between(
            berlin(),
            utc("2026-10-24T12:00:00Z"),
            utc("2026-10-26T12:00:00Z"),
            10,
            &mut cache,
        );
        assert_eq!(
            starts,
            vec![
                utc("2026-10-25T00:30:00Z"), // 02:30 CEST, the first of the two
                utc("2026-10-26T01:30:00Z"), // 02:30 CET
            ]
        );
    }

    #[test]
    fn in_the_fall_back_hour_fixed_hours_fire_once_and_a_wildcard_hour_keeps_its_interval() {
        // 2027-10-31: Berlin goes from 03:00 CEST back to 02:00 CET (01:00 UTC); 02:00-02:59
        // happens twice (00:00-00:59 UTC in CEST, 01:00-01:59 UTC in CET).
        let mut cache = CronCache::default();
        let (from, to) = (utc("2027-10-30T22:00:00Z"), utc("2027-10-31T03:00:00Z"));
        let ranges = Schedule::Cron(CronExpr::parse("0,30 1-3 * * *").expect("cron"));
        assert_eq!(
            ranges.starts_between(berlin(), from, to, 20, &mut cache),
            vec![
                utc("2027-10-30T23:00:00Z"), // 01:00 CEST
                utc("2027-10-30T23:30:00Z"), // 01:30 CEST
                utc("2027-10-31T00:00:00Z"), // 02:00 CEST, the first pass
                utc("2027-10-31T00:30:00Z"), // 02:30 CEST
                utc("2027-10-31T02:00:00Z"), // 03:00 CET: the second pass through 02:xx is skipped
                utc("2027-10-31T02:30:00Z"), // 03:30 CET
            ]
        );
        let wildcard = Schedule::Cron(CronExpr::parse("*/30 * * * *").expect("cron"));
        assert_eq!(
            wildcard.starts_between(
                berlin(),
                utc("2027-10-30T23:45:00Z"),
                utc("2027-10-31T02:00:00Z"),
                20,
                &mut cache
            ),
            vec![
                utc("2027-10-31T00:00:00Z"), // 02:00 CEST
                utc("2027-10-31T00:30:00Z"), // 02:30 CEST
                utc("2027-10-31T01:00:00Z"), // 02:00 CET: every 30 minutes of real time
                utc("2027-10-31T01:30:00Z"), // 02:30 CET
                utc("2027-10-31T02:00:00Z"), // 03:00 CET
            ]
        );
        // Looking back from after the overlap finds the first pass, not the second.
        let list = Schedule::Cron(CronExpr::parse("30 2 * * *").expect("cron"));
        assert_eq!(
            list.last_start_in(
                berlin(),
                utc("2027-10-30T12:00:00Z"),
                utc("2027-10-31T01:45:00Z"),
                &mut cache
            ),
            Some(utc("2027-10-31T00:30:00Z"))
        );
    }

    #[test]
    fn one_off_local_times_follow_the_same_dst_rules() {
        let mut cache = CronCache::default();
        let gap = Schedule::At(At::parse("2026-03-29T02:30:00").expect("at"));
        assert_eq!(
            gap.next_start_after(berlin(), utc("2026-01-01T00:00:00Z"), &mut cache),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        let overlap = Schedule::At(At::parse("2026-10-25T02:30:00").expect("at"));
        assert_eq!(
            overlap.next_start_after(berlin(), utc("2026-01-01T00:00:00Z"), &mut cache),
            Some(utc("2026-10-25T00:30:00Z"))
        );
        let fixed = Schedule::At(At::parse("2026-12-01T09:00:00+08:00").expect("at"));
        assert_eq!(
            fixed.next_start_after(berlin(), utc("2026-01-01T00:00:00Z"), &mut cache),
            Some(utc("2026-12-01T01:00:00Z"))
        );
        assert_eq!(
            fixed.next_start_after(berlin(), utc("2026-12-01T01:00:00Z"), &mut cache),
            None,
            "a one-off start is not after itself"
        );
    }

    #[test]
    fn last_start_finds_the_latest_firing_in_a_range() {
        let s = Schedule::Cron(CronExpr::parse("0 9 * * MON").expect("cron"));
        let mut cache = CronCache::default();
        let zone = Zone::parse("Asia/Shanghai").expect("zone");
        // Mondays 2026-11-02, 09, 16, 23 at 01:00 UTC.
        assert_eq!(
            s.last_start_in(
                zone,
                utc("2026-11-01T00:00:00Z"),
                utc("2026-11-25T00:00:00Z"),
                &mut cache
            ),
            Some(utc("2026-11-23T01:00:00Z"))
        );
        assert_eq!(
            s.last_start_in(
                zone,
                utc("2026-11-24T00:00:00Z"),
                utc("2026-11-25T00:00:00Z"),
                &mut cache
            ),
            None
        );
    }
}
