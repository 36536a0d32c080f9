//! DingTalk's monthly API quota (`docs/quota.md`): which APIs count, the quota's month and day,
//! and what a planned firing is expected to cost.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::policy::{Policy, Target};

/// The DingTalk APIs dingrec calls, as `api_usage.api` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    Token,
    StartCloudRecord,
    ConferenceInfo,
    ScheduleConference,
    CloudRecordVideos,
    StopCloudRecord,
    /// QueryOrgConferenceList: the Stream catch-up's meetings in progress.
    OrgConferences,
    /// UpdateScheduleConfSettings: the auto-record setting (docs/auto-record.md).
    ScheduleSettings,
}

impl Api {
    pub const ALL: [Api; 8] = [
        Api::Token,
        Api::StartCloudRecord,
        Api::ConferenceInfo,
        Api::ScheduleConference,
        Api::CloudRecordVideos,
        Api::StopCloudRecord,
        Api::OrgConferences,
        Api::ScheduleSettings,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Api::Token => "token",
            Api::StartCloudRecord => "start_cloud_record",
            Api::ConferenceInfo => "conference_info",
            Api::ScheduleConference => "schedule_conference",
            Api::CloudRecordVideos => "cloud_record_videos",
            Api::StopCloudRecord => "stop_cloud_record",
            Api::OrgConferences => "org_conferences",
            Api::ScheduleSettings => "schedule_settings",
        }
    }

    pub fn parse(s: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// `api_usage.api` of the events DingTalk pushes: counted against their own monthly quota
/// (`dingtalk.monthly_event_quota`), not the calls'.
pub const STREAM_EVENT: &str = "stream_event";

/// Calls DingTalk counted, per API: what one attempt or check adds to `api_usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls([u32; Api::ALL.len()]);

impl Calls {
    pub fn one(api: Api) -> Self {
        let mut c = Self::default();
        c.add(api, 1);
        c
    }

    pub fn add(&mut self, api: Api, n: u32) {
        let i = api as usize;
        self.0[i] = self.0[i].saturating_add(n);
    }

    pub fn merge(&mut self, other: &Calls) {
        for api in Api::ALL {
            self.add(api, other.get(api));
        }
    }

    pub fn get(&self, api: Api) -> u32 {
        self.0[api as usize]
    }

    /// The APIs with calls, and how many.
    pub fn iter(&self) -> impl Iterator<Item = (Api, u32)> + '_ {
        Api::ALL
            .into_iter()
            .map(|a| (a, self.get(a)))
            .filter(|(_, n)| *n > 0)
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|n| u64::from(*n)).sum()
    }
}

/// The quota's month around an instant, in the quota's time zone (DingTalk's month begins at
/// local midnight on the 1st: 16:00 UTC the day before in `Asia/Shanghai`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Month {
    /// `2026-12`
    pub label: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// `api_usage.day` for a call at `at`.
pub fn day_of(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

/// The first instant of a local date (its midnight, or the first hour after a gap).
fn local_midnight(date: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    (0..=3).find_map(|h| {
        tz.from_local_datetime(&date.and_hms_opt(h, 0, 0)?)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// The month `at` falls in. `None` only at the calendar's ends.
pub fn month_of(at: DateTime<Utc>, tz: Tz) -> Option<Month> {
    let local = at.with_timezone(&tz).date_naive();
    let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1)?;
    let next = first.checked_add_months(chrono::Months::new(1))?;
    Some(Month {
        label: first.format("%Y-%m").to_string(),
        start: local_midnight(first, tz)?,
        end: local_midnight(next, tz)?,
    })
}

/// How long a meeting is assumed to last when a watch's cost is forecast.
pub const EXPECTED_MEETING: Duration = Duration::from_secs(3600);

/// What this month's history says about the cost of a firing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    /// Occurrences that made at least one StartCloudRecord this month.
    pub started: u64,
    /// StartCloudRecord calls this month.
    pub start_calls: u64,
}

impl Observed {
    /// What a month's counts say: `started` occurrences, and the StartCloudRecord calls among
    /// `by_api`.
    pub fn of(by_api: &BTreeMap<Api, u64>, started: i64) -> Observed {
        Observed {
            started: u64::try_from(started).unwrap_or(0),
            start_calls: by_api.get(&Api::StartCloudRecord).copied().unwrap_or(0),
        }
    }

    /// Extra StartCloudRecord calls per firing: retries, restarts, starts after failed checks.
    pub fn retry_rate(&self) -> f64 {
        if self.started == 0 {
            return 0.0;
        }
        (self.start_calls as f64 / self.started as f64 - 1.0).max(0.0)
    }
}

/// A month's calls by API from the database's rows (`api`, calls): a name this dingrec does not
/// know (a newer one wrote it) is left out, a negative count is none.
pub fn tally(rows: impl IntoIterator<Item = (String, i64)>) -> BTreeMap<Api, u64> {
    let mut by_api = BTreeMap::new();
    for (api, n) in rows {
        if let Some(a) = Api::parse(&api) {
            *by_api.entry(a).or_default() += u64::try_from(n).unwrap_or(0);
        }
    }
    by_api
}

/// The calls one firing of `p` is expected to cost, token fetches aside: its starts (1 plus the
/// retry rate), a look-up before each start for a scheduled meeting, one start check per start
/// when verification is on (the first check usually confirms), the watch checks over an
/// [`EXPECTED_MEETING`], and one video look-up. With `auto_record`, the setting made again before
/// each meeting and the check before the start are added, and the start itself is kept (it is
/// the fallback whenever the setting did not work; the forecast does not bet on it).
pub fn firing_cost(p: &Policy, retry_rate: f64) -> f64 {
    let starts = 1.0 + retry_rate.max(0.0);
    let lookups = match p.target {
        Target::Scheduled(_) => starts,
        Target::Conference(_) | Target::Match(_) => 0.0,
    };
    let verify = p.verify.as_ref().map_or(0.0, |v| {
        let watch = if v.watch.is_zero() {
            0.0
        } else {
            (EXPECTED_MEETING.as_secs_f64() / v.watch.as_secs_f64()).floor()
        };
        starts + watch + if v.video { 1.0 } else { 0.0 }
    });
    let auto_record = if p.auto_record.is_some() { 2.0 } else { 0.0 };
    starts + lookups + verify + auto_record
}

/// Token fetches for calls at `dues` (sorted): one whenever a call comes after the last token
/// has run out (`life`: DingTalk's 2 h minus the refresh margin).
pub fn token_fetches(dues: &[DateTime<Utc>], life: Duration) -> u64 {
    let life = chrono::TimeDelta::from_std(life).unwrap_or(chrono::TimeDelta::hours(2));
    let mut fetches = 0;
    let mut valid_until: Option<DateTime<Utc>> = None;
    for t in dues {
        if valid_until.is_none_or(|v| *t >= v) {
            fetches += 1;
            valid_until = t.checked_add_signed(life);
        }
    }
    fetches
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_month_tally_keeps_the_apis_it_knows_and_no_negative_count() {
        let by_api = super::tally([
            ("start_cloud_record".to_owned(), 7),
            ("start_cloud_record".to_owned(), 3),
            ("something_newer".to_owned(), 100),
            ("conference_info".to_owned(), -2),
        ]);
        assert_eq!(by_api.get(&Api::StartCloudRecord), Some(&10));
        assert_eq!(by_api.get(&Api::ConferenceInfo), Some(&0));
        assert_eq!(by_api.len(), 2, "{by_api:?}");
        let seen = Observed::of(&by_api, 8);
        assert_eq!((seen.started, seen.start_calls), (8, 10));
        assert!((seen.retry_rate() - 0.25).abs() < 1e-9);
        assert_eq!(Observed::of(&BTreeMap::new(), -1).started, 0);
    }

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    #[test]
    fn shanghai_months_begin_at_16_utc_the_day_before() {
        let tz = chrono_tz::Asia::Shanghai;
        let m = month_of(t("2026-12-31T15:59:59Z"), tz).expect("month");
        assert_eq!(m.label, "2026-12");
        assert_eq!(m.start, t("2026-11-30T16:00:00Z"));
        assert_eq!(m.end, t("2026-12-31T16:00:00Z"));
        let next = month_of(t("2026-12-31T16:00:00Z"), tz).expect("month");
        assert_eq!(next.label, "2027-01");
        assert_eq!(day_of(t("2026-12-31T16:00:00Z"), tz), "2027-01-01");
        assert_eq!(day_of(t("2026-12-31T15:59:59Z"), tz), "2026-12-31");
    }

    #[test]
    fn the_retry_rate_is_extra_starts_per_started_firing() {
        assert_eq!(Observed::default().retry_rate(), 0.0);
        let o = Observed {
            started: 10,
            start_calls: 13,
        };
        assert!((o.retry_rate() - 0.3).abs() < 1e-9);
    }

    #[test]
    fn a_token_serves_every_call_of_its_life() {
        let life = Duration::from_secs(7200 - 200);
        let dues = [
            t("2026-12-01T01:00:00Z"),
            t("2026-12-01T01:00:15Z"),
            t("2026-12-01T02:00:00Z"),
            t("2026-12-01T03:00:00Z"),
            t("2026-12-02T01:00:00Z"),
        ];
        assert_eq!(token_fetches(&dues, life), 3);
        assert_eq!(token_fetches(&[], life), 0);
    }

    #[test]
    fn calls_add_up_per_api() {
        let mut c = Calls::one(Api::StartCloudRecord);
        c.merge(&Calls::one(Api::ScheduleConference));
        c.add(Api::StartCloudRecord, 2);
        assert_eq!(c.get(Api::StartCloudRecord), 3);
        assert_eq!(c.total(), 4);
        assert_eq!(
            c.iter().collect::<Vec<_>>(),
            vec![(Api::StartCloudRecord, 3), (Api::ScheduleConference, 1)]
        );
        assert_eq!(Api::parse("conference_info"), Some(Api::ConferenceInfo));
        assert_eq!(Api::parse("nope"), None);
    }
}
