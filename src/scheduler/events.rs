//! DingTalk's meeting events → occurrences (docs/events.md). Each event the Stream connection
//! hands over is read, matched against the enabled `match` policies (the first by name that wants
//! the meeting gets it), written with what came of it, and only then acknowledged: `SUCCESS` once
//! committed (or when its eventId was recorded before), `LATER` when it could not be, so that
//! DingTalk sends it again. A meeting gets at most one event occurrence, whatever delivers it
//! (the store's unique `event_conference_id`).

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::SharedClock;
use crate::dingtalk::DingTalkClient;
use crate::dingtalk::stream::{Ack, Delivery, StreamEvent, StreamState, StreamStatus};
use crate::domain::matching::{MeetingFacts, Verdict};
use crate::domain::policy::HOST_CREATOR;
use crate::domain::quota::{Api, Calls};
use crate::domain::{Policy, Target, Trigger};
use crate::store::{EventDecision, EventRecorded, NewEvent, Store, event_payload};

/// The event types dingrec acts on (the second: meetings the app's own API calls created).
const MEETING_EVENTS: &[&str] = &["meeting_status_change", "meeting_status_change_target_push"];
const CREATED: &str = "conference_created";
const CLOSED: &str = "conference_closed";
/// QueryOrgConferenceList's `status` of a meeting in progress.
const LIVE: i64 = 2;
/// The most pages one catch-up reads (50 meetings each).
const CATCH_UP_PAGES: usize = 100;
/// After a failed catch-up, the next try (while the connection stays up).
const CATCH_UP_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// What a catch-up found: meetings in progress, occurrences made, matched meetings that had one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUp {
    pub seen: usize,
    pub made: usize,
    pub known: usize,
}

/// What a `meeting_status_change` says about its meeting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeetingEvent {
    pub change_scene: Option<String>,
    pub conference_id: Option<String>,
    pub title: Option<String>,
    pub creator_id: Option<String>,
    pub schedule_conference_id: Option<String>,
}

/// A text field, or a number DingTalk sent in its place; empty counts as absent; at most 1,024
/// characters (ids and titles are far shorter).
fn text(v: &Value, key: &str) -> Option<String> {
    let s = match v.get(key)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let s: String = s.trim().chars().take(1024).collect();
    (!s.is_empty()).then_some(s)
}

/// Read an event's data (`{"changeScene", "openConfModel": {...}}`).
pub fn read_meeting_event(data: &str) -> Result<MeetingEvent, String> {
    let v: Value = serde_json::from_str(data).map_err(|e| format!("the event's data is not JSON: {e}"))?;
    let conf = v.get("openConfModel").cloned().unwrap_or(Value::Null);
    Ok(MeetingEvent {
        change_scene: text(&v, "changeScene"),
        conference_id: text(&conf, "conferenceId"),
        title: text(&conf, "title"),
        creator_id: text(&conf, "creatorId"),
        schedule_conference_id: text(&conf, "scheduleConferenceId"),
    })
}

/// A title decides and the event carries none: look it up and ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TitleNeeded;

/// The first policy (by name) that wants the meeting.
pub fn first_wanting<'p>(
    policies: &'p [(i64, Policy)],
    m: &MeetingEvent,
) -> Result<Option<&'p (i64, Policy)>, TitleNeeded> {
    let facts = MeetingFacts {
        creator_id: m.creator_id.as_deref(),
        title: m.title.as_deref(),
        schedule_conference_id: m.schedule_conference_id.as_deref(),
    };
    for p in policies {
        let Target::Match(rule) = &p.1.target else {
            continue;
        };
        match rule.wants(&facts) {
            Verdict::Wanted => return Ok(Some(p)),
            Verdict::NeedsTitle => return Err(TitleNeeded),
            Verdict::NotWanted => {}
        }
    }
    Ok(None)
}

/// What to write for an event about `m`, at `at` (the event's time), given the policy that
/// wants it.
pub fn decision(
    wanting: Option<&(i64, Policy)>,
    m: &MeetingEvent,
    at: DateTime<Utc>,
    trigger: Trigger,
) -> EventDecision {
    let Some((policy_id, p)) = wanting else {
        return EventDecision::Ignored("no enabled match policy wants its meeting".into());
    };
    let Some(conference_id) = &m.conference_id else {
        return EventDecision::Invalid("the event names no conferenceId".into());
    };
    let host_union_id = if p.host_union_id.as_str() == HOST_CREATOR {
        match &m.creator_id {
            Some(c) => Some(c.clone()),
            None => {
                return EventDecision::Invalid(format!(
                    "policy {} starts with the meeting's creator, and the event names no creatorId",
                    p.name
                ));
            }
        }
    } else {
        None
    };
    let after = |d: std::time::Duration| at + TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX / 4);
    EventDecision::Matched {
        policy_id: *policy_id,
        policy_name: p.name.to_string(),
        conference_id: conference_id.clone(),
        due_at: after(p.start_offset),
        window_ends_at: after(p.window),
        meeting_at: at,
        host_union_id,
        trigger,
    }
}

/// Turns events into occurrences.
pub struct EventHandler {
    pub store: Store,
    pub client: Arc<DingTalkClient>,
    pub clock: SharedClock,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The scheduler loop's wake-up: an occurrence made now is due now.
    pub wake: Arc<tokio::sync::Notify>,
}

/// `dingrec_stream_events_total`'s `event_type`: the types acted on, any other as `other`.
fn type_label(event_type: &str) -> &'static str {
    MEETING_EVENTS
        .iter()
        .find(|t| **t == event_type)
        .copied()
        .unwrap_or("other")
}

impl EventHandler {
    /// Handle deliveries until `cancel` or until the connection side is gone, and catch up each
    /// time `status` says a new connection is up (again after `CATCH_UP_RETRY` when it failed).
    pub async fn run(
        self,
        mut events: mpsc::Receiver<Delivery>,
        mut status: watch::Receiver<StreamStatus>,
        cancel: CancellationToken,
    ) {
        // The connection the last catch-up was for (by its number: two connections can open at
        // the same instant of the clock), and when to try again after a failure.
        let mut caught_up: Option<u64> = None;
        let mut retry: Option<tokio::time::Instant> = None;
        let mut watching = true;
        loop {
            let retry_at = retry.unwrap_or_else(|| tokio::time::Instant::now() + CATCH_UP_RETRY);
            tokio::select! {
                d = events.recv() => match d {
                    Some(d) => self.deliver(d).await,
                    None => return,
                },
                changed = status.changed(), if watching => {
                    watching = changed.is_ok();
                    let s = status.borrow_and_update().clone();
                    if s.state == StreamState::Connected && caught_up != Some(s.reconnects) {
                        caught_up = Some(s.reconnects);
                        retry = self.catch_up_logged().await;
                    }
                }
                () = tokio::time::sleep_until(retry_at), if retry.is_some() => {
                    retry = self.catch_up_logged().await;
                }
                () = cancel.cancelled() => return,
            }
        }
    }

    /// A catch-up, logged; when to try again if it failed.
    async fn catch_up_logged(&self) -> Option<tokio::time::Instant> {
        match self.catch_up().await {
            Ok(c) => {
                info!(
                    in_progress = c.seen,
                    made = c.made,
                    known = c.known,
                    "catch-up done"
                );
                None
            }
            Err(e) => {
                warn!(error = %e, retry_in_s = CATCH_UP_RETRY.as_secs(), "catch-up failed");
                Some(tokio::time::Instant::now() + CATCH_UP_RETRY)
            }
        }
    }

    /// Handle one delivery and acknowledge it.
    async fn deliver(&self, delivery: Delivery) {
        let label = type_label(&delivery.event.event_type);
        let ack = match self.handle(&delivery.event).await {
            Ok(outcome) => {
                self.metrics.stream_event(label, outcome);
                Ack::Success
            }
            Err(e) => {
                self.metrics.stream_event(label, "not_stored");
                warn!(event_id = %delivery.event.event_id, error = %e, "cannot store an event: DingTalk will send it again");
                Ack::Later
            }
        };
        delivery.ack(ack);
    }

    /// Decide about one event and write it: its outcome (`again` when its eventId was recorded
    /// before), `Err` when it could not be stored.
    pub async fn handle(&self, event: &StreamEvent) -> Result<&'static str, String> {
        let now = self.clock.now();
        let read = read_meeting_event(&event.data);
        let meeting = read.clone().unwrap_or_default();
        let decision = match (&read, MEETING_EVENTS.contains(&event.event_type.as_str())) {
            (_, false) => {
                EventDecision::Ignored(format!("event type '{}' is not acted on", event.event_type))
            }
            (Err(why), true) => EventDecision::Invalid(why.clone()),
            (Ok(m), true) if m.change_scene.as_deref() != Some(CREATED) => EventDecision::Ignored(format!(
                "change scene '{}' makes no occurrence",
                m.change_scene.as_deref().unwrap_or("")
            )),
            (Ok(m), true) => {
                self.match_meeting(m, event.born_at.unwrap_or(now), Trigger::Event)
                    .await?
            }
        };
        let new = NewEvent {
            event_id: event.event_id.clone(),
            message_id: event.message_id.clone(),
            event_type: event.event_type.clone(),
            change_scene: meeting.change_scene.clone(),
            conference_id: meeting.conference_id.clone(),
            received_at: now,
            born_at: event.born_at,
            payload: event_payload(&event.data),
            instance: crate::instance::this().to_owned(),
            decision,
            counted: true,
        };
        let recorded = self.store.record_event(&new).await.map_err(|e| e.to_string())?;
        if meeting.change_scene.as_deref() == Some(CLOSED)
            && let Some(conf) = &meeting.conference_id
        {
            let n = self
                .store
                .meeting_closed(conf, now)
                .await
                .map_err(|e| e.to_string())?;
            if n > 0 {
                info!(conference_id = %conf, "the meeting closed: its watch ends with a check now");
            }
        }
        Ok(match recorded {
            EventRecorded::Again => {
                info!(event_id = %event.event_id, "event delivered again: recorded before, nothing to do");
                "again"
            }
            EventRecorded::Stored {
                outcome,
                occurrence_id,
            } => {
                info!(
                    event_id = %event.event_id,
                    conference_id = meeting.conference_id.as_deref().unwrap_or(""),
                    outcome = outcome.as_str(),
                    occurrence_id = occurrence_id.unwrap_or(0),
                    "event recorded"
                );
                if outcome == crate::domain::EventOutcome::Matched {
                    self.wake.notify_one();
                }
                outcome.as_str()
            }
        })
    }

    /// Which policy wants a created meeting, looking its title up (QueryConferenceInfo, a counted
    /// call) when a title decides and the event carries none.
    async fn match_meeting(
        &self,
        m: &MeetingEvent,
        at: DateTime<Utc>,
        trigger: Trigger,
    ) -> Result<EventDecision, String> {
        let policies = self.match_policy_list().await?;
        let wanting = match first_wanting(&policies, m) {
            Ok(w) => w,
            Err(TitleNeeded) => {
                let title = self
                    .title_of(m.conference_id.as_deref().unwrap_or_default())
                    .await?;
                let known = MeetingEvent {
                    title: Some(title),
                    ..m.clone()
                };
                // The title is known now: no policy can ask for it again.
                first_wanting(&policies, &known).unwrap_or(None)
            }
        };
        Ok(decision(wanting, m, at, trigger))
    }

    async fn title_of(&self, conference_id: &str) -> Result<String, String> {
        let token = self.client.token().await.map_err(|e| e.to_string())?;
        let info = self.client.conference_info_with(&token, conference_id).await;
        self.count(Api::ConferenceInfo, &info).await;
        let info = info.map_err(|e| format!("looking up the meeting's title: {e}"))?;
        Ok(info.title.unwrap_or_default())
    }

    /// A call DingTalk counted (the rule every other call follows) goes into `api_usage`.
    async fn count<T>(&self, api: Api, answer: &Result<T, crate::dingtalk::DingTalkError>) {
        if crate::dingtalk::error::counted(answer) {
            let counted = self.store.add_usage(&Calls::one(api), self.clock.now()).await;
            if let Err(e) = counted {
                warn!(error = %e, api = api.as_str(), "cannot count a call in api_usage");
            }
        }
    }

    /// The catch-up, on every (re)connect: the meetings in progress (QueryOrgConferenceList, a
    /// page at a time) that a `match` policy wants get their occurrence as if their
    /// `conference_created` had arrived (`trigger = catch_up`), so that a meeting created while
    /// the connection was down is still recorded. Each is written as an event row of its own
    /// (`catch_up:<conferenceId>`); a meeting that has its occurrence already (from its event or
    /// an earlier catch-up), or that no policy wants, leaves no row.
    pub async fn catch_up(&self) -> Result<CatchUp, String> {
        let policies = self.match_policy_list().await?;
        let mut done = CatchUp::default();
        if policies.is_empty() {
            return Ok(done);
        }
        let token = self.client.token().await.map_err(|e| e.to_string())?;
        let mut next = String::new();
        for _ in 0..CATCH_UP_PAGES {
            let page = self.client.org_conferences_with(&token, &next).await;
            self.count(Api::OrgConferences, &page).await;
            let page = page.map_err(|e| format!("listing the meetings in progress: {e}"))?;
            for c in page
                .on_going_conf_list
                .iter()
                .filter(|c| c.status.is_none_or(|s| s == LIVE))
            {
                done.seen += 1;
                let m = MeetingEvent {
                    change_scene: Some(CREATED.into()),
                    conference_id: Some(c.conference_id.clone()),
                    title: c.title.clone(),
                    creator_id: c.creator_id.clone().filter(|s| !s.is_empty()),
                    schedule_conference_id: None,
                };
                let now = self.clock.now();
                let started = c.start_time.and_then(DateTime::from_timestamp_millis);
                let d = decision(
                    first_wanting(&policies, &m).unwrap_or(None),
                    &m,
                    started.unwrap_or(now),
                    Trigger::CatchUp,
                );
                if !matches!(d, EventDecision::Matched { .. }) {
                    continue;
                }
                let new = NewEvent {
                    event_id: format!("{}:{}", Trigger::CatchUp.as_str(), c.conference_id),
                    message_id: String::new(),
                    event_type: Trigger::CatchUp.as_str().to_owned(),
                    change_scene: m.change_scene.clone(),
                    conference_id: m.conference_id.clone(),
                    received_at: now,
                    born_at: started,
                    payload: event_payload(&serde_json::to_string(c).unwrap_or_default()),
                    instance: crate::instance::this().to_owned(),
                    decision: d,
                    counted: false,
                };
                match self.store.record_event(&new).await.map_err(|e| e.to_string())? {
                    EventRecorded::Stored {
                        outcome: crate::domain::EventOutcome::Matched,
                        occurrence_id,
                    } => {
                        info!(
                            conference_id = %c.conference_id,
                            occurrence_id = occurrence_id.unwrap_or(0),
                            "catch-up: a meeting in progress had no occurrence; it has one now"
                        );
                        done.made += 1;
                        self.wake.notify_one();
                    }
                    _ => done.known += 1,
                }
            }
            match page.next_token.filter(|t| page.has_more && !t.is_empty()) {
                Some(t) => next = t,
                None => return Ok(done),
            }
        }
        warn!(
            pages = CATCH_UP_PAGES,
            "catch-up: stopped after its last page; more meetings are in progress"
        );
        Ok(done)
    }

    /// The enabled `match` policies, by name (a row that does not read is skipped and logged).
    async fn match_policy_list(&self) -> Result<Vec<(i64, Policy)>, String> {
        let stored = self.store.match_policies().await.map_err(|e| e.to_string())?;
        Ok(stored
            .iter()
            .filter_map(|s| match s.record.to_policy() {
                Ok(p) => Some((s.id, p)),
                Err(e) => {
                    warn!(error = %e, "a match policy in the database does not read; skipped");
                    None
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_file::parse_str;

    fn policies(yaml: &str) -> Vec<(i64, Policy)> {
        parse_str(
            std::path::Path::new("p.yaml"),
            yaml,
            &crate::domain::PolicyDefaults::default(),
        )
        .expect("valid")
        .into_iter()
        .enumerate()
        .map(|(i, p)| (i as i64 + 1, p.policy))
        .collect()
    }

    const TWO: &str = "policies:\n  - name: a-board\n    match: { title: Board }\n    host_union_id: creator\n    start_offset: 30s\n    window: 20m\n  - name: b-all\n    match: { creators: [u1] }\n    host_union_id: fixed-host\n";

    fn created(conf: &str, title: Option<&str>, creator: Option<&str>) -> MeetingEvent {
        MeetingEvent {
            change_scene: Some(CREATED.into()),
            conference_id: Some(conf.into()),
            title: title.map(str::to_owned),
            creator_id: creator.map(str::to_owned),
            schedule_conference_id: None,
        }
    }

    #[test]
    fn the_event_data_is_read_with_numbers_for_text() {
        let m = read_meeting_event(
            r#"{"changeScene":"conference_created","statusSeqNum":1,"openConfModel":{"conferenceId":123,"title":"董事会","creatorId":"u1","scheduleConferenceId":""}}"#,
        )
        .expect("readable");
        assert_eq!(m.conference_id.as_deref(), Some("123"));
        assert_eq!(m.title.as_deref(), Some("董事会"));
        assert_eq!(m.schedule_conference_id, None, "empty is absent");
        assert!(read_meeting_event("not json").is_err());
    }

    #[test]
    fn the_first_policy_by_name_gets_the_meeting_with_its_timing_and_host() {
        let ps = policies(TWO);
        let at = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let m = created("c1", Some("Board Q4"), Some("u1"));
        let w = first_wanting(&ps, &m).expect("decided");
        match decision(w, &m, at, Trigger::Event) {
            EventDecision::Matched {
                policy_name,
                due_at,
                window_ends_at,
                host_union_id,
                ..
            } => {
                assert_eq!(policy_name, "a-board", "both want it; the first by name wins");
                assert_eq!(due_at, at + TimeDelta::seconds(30));
                assert_eq!(window_ends_at, at + TimeDelta::minutes(20));
                assert_eq!(host_union_id.as_deref(), Some("u1"), "the creator hosts");
            }
            other => panic!("{other:?}"),
        }
        let fixed = created("c2", Some("standup"), Some("u1"));
        match decision(
            first_wanting(&ps, &fixed).expect("decided"),
            &fixed,
            at,
            Trigger::Event,
        ) {
            EventDecision::Matched {
                policy_name,
                host_union_id,
                ..
            } => {
                assert_eq!(policy_name, "b-all");
                assert_eq!(host_union_id, None, "the policy's host");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_policy_a_missing_title_a_missing_creator() {
        let ps = policies(TWO);
        let at = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let nobody = created("c3", Some("standup"), Some("u9"));
        assert!(matches!(
            decision(
                first_wanting(&ps, &nobody).expect("decided"),
                &nobody,
                at,
                Trigger::Event
            ),
            EventDecision::Ignored(_)
        ));
        assert_eq!(
            first_wanting(&ps, &created("c4", None, Some("u9"))),
            Err(TitleNeeded),
            "the title decides"
        );
        let no_creator = created("c5", Some("Board"), None);
        assert!(matches!(
            decision(
                first_wanting(&ps, &no_creator).expect("decided"),
                &no_creator,
                at,
                Trigger::Event
            ),
            EventDecision::Invalid(_)
        ));
    }
}
