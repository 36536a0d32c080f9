//! `dingrec quota`: DingTalk's monthly quota, used and forecast (`docs/quota.md`); and the cost
//! of a change, for `dingrec plan`.

use std::collections::BTreeMap;

use chrono::TimeDelta;

use super::TableOrJson;
use crate::clock::{Clock, SystemClock};
use crate::config::{Quota, Settings};
use crate::domain::Policy;
use crate::domain::quota::{Api, Observed};
use crate::exit::{CmdResult, EXIT_INVALID, EXIT_OK, Failure};
use crate::output::table;
use crate::scheduler::quota::{QuotaView, planned_cost, stored_policies, token_life, view};
use crate::store::Store;

/// The quota's settings, or the command's "invalid config" failure.
pub(super) fn quota_settings(settings: &Settings) -> Result<Quota, Failure> {
    settings
        .dingtalk
        .quota()
        .map_err(|e| Failure::new(EXIT_INVALID, format!("invalid config: {e}")))
}

pub async fn run(settings: &Settings, format: TableOrJson) -> CmdResult {
    let quota = quota_settings(settings)?;
    let store = Store::open_for_reading(&settings.database)
        .await?
        .with_quota_timezone(quota.timezone);
    let life = token_life(settings.dingtalk.token_refresh_margin);
    let v = view(&store, true, &quota, life, SystemClock.now()).await?;
    store.close().await;
    match format {
        TableOrJson::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&v.to_json()).unwrap_or_default()
            );
        }
        TableOrJson::Table => print!("{}", show(&v, &quota)),
    }
    Ok(EXIT_OK)
}

fn show(v: &QuotaView, quota: &Quota) -> String {
    let rows: Vec<Vec<String>> = Api::ALL
        .iter()
        .map(|a| {
            vec![
                a.as_str().to_owned(),
                v.by_api.get(a).copied().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    let limit = if v.limit == 0 {
        "no limit (dingtalk.monthly_quota: 0)".to_owned()
    } else {
        format!("{} calls", v.limit)
    };
    let pct = |r: f64| {
        if v.limit == 0 {
            String::new()
        } else {
            format!(" ({:.0} %)", r * 100.0)
        }
    };
    let mut out = format!(
        "DingTalk API calls in {} ({}): limit {limit}\n\n",
        v.month.label,
        quota.timezone.name()
    );
    out.push_str(&table(&["API", "CALLS"], &rows));
    out.push_str(&format!("\nused:     {}{}\n", v.used, pct(v.used_ratio())));
    out.push_str(&format!(
        "forecast: {}{} by the month's end (used, plus the planned firings' expected calls)\n",
        v.forecast,
        pct(v.forecast_ratio())
    ));
    if v.limit > 0 && v.forecast > u64::from(v.limit) {
        out.push_str("warning: the forecast passes the quota; see docs/quota.md for what costs calls\n");
    }
    let events_limit = if v.event_limit == 0 {
        "no limit".to_owned()
    } else {
        format!("of {} ({:.0} %)", v.event_limit, v.events_ratio() * 100.0)
    };
    out.push_str(&format!(
        "events:   {} {events_limit} pushed by DingTalk (their own quota, dingtalk.monthly_event_quota)\n",
        v.events
    ));
    out
}

/// What `dingrec plan` prints about a change's cost: the calls a month (30 days from now) of the
/// policies after the change minus before, and this month's forecast after it.
pub async fn plan_cost(settings: &Settings, after: &[Policy], prune: bool) -> Result<Vec<String>, Failure> {
    let quota = quota_settings(settings)?;
    let now = SystemClock.now();
    let (before, observed, used) = if let Some(store) = Store::open_if_applied(&settings.database).await? {
        let store = store.with_quota_timezone(quota.timezone);
        let before = stored_policies(&store).await?;
        let month = crate::domain::quota::month_of(now, quota.timezone)
            .ok_or_else(|| Failure::new(EXIT_INVALID, "the quota's month is outside the calendar"))?;
        let usage = store.usage(&month, true).await?;
        store.close().await;
        (before, usage.observed, usage.used())
    } else {
        (Vec::new(), Observed::default(), 0)
    };
    // After the apply: the files' policies, and (without --prune) the database's others.
    let mut merged: BTreeMap<&str, &Policy> = BTreeMap::new();
    if !prune {
        for p in &before {
            merged.insert(p.name.as_str(), p);
        }
    }
    for p in after {
        merged.insert(p.name.as_str(), p);
    }
    let after: Vec<Policy> = merged.into_values().cloned().collect();
    let life = token_life(settings.dingtalk.token_refresh_margin);
    let month_ahead = now + TimeDelta::days(30);
    let cost = |ps: &[Policy]| planned_cost(ps, now, month_ahead, &observed, life) as i64;
    let delta = cost(&after) - cost(&before);
    let month_end = crate::domain::quota::month_of(now, quota.timezone).map_or(month_ahead, |m| m.end);
    let forecast = used + planned_cost(&after, now, month_end, &observed, life);
    Ok(cost_lines(delta, forecast, quota.limit))
}

fn cost_lines(delta: i64, forecast: u64, limit: u32) -> Vec<String> {
    let limit_text = if limit == 0 {
        "no limit".to_owned()
    } else {
        limit.to_string()
    };
    let mut lines = vec![format!(
        "DingTalk calls per month: {delta:+} (forecast {forecast} of {limit_text})"
    )];
    if limit > 0 && forecast > u64::from(limit) {
        lines.push(format!(
            "warning: this month's forecast ({forecast}) passes the quota of {limit} calls: past it DingTalk refuses every call, starts included, until the month ends (see docs/quota.md)"
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_line_is_signed_and_warns_past_the_quota() {
        assert_eq!(
            cost_lines(62, 1200, 5000),
            vec!["DingTalk calls per month: +62 (forecast 1200 of 5000)".to_owned()]
        );
        assert_eq!(
            cost_lines(-4, 10, 0)[0],
            "DingTalk calls per month: -4 (forecast 10 of no limit)"
        );
        let over = cost_lines(9000, 9100, 5000);
        assert_eq!(over.len(), 2);
        assert!(
            over[1].starts_with("warning: this month's forecast (9100) passes the quota of 5000"),
            "{over:?}"
        );
    }
}
