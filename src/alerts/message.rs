//! What an alert says: the facts the migration's triggers store as `alerts.payload`, turned into a
//! robot's markdown (several alerts in one message) and a webhook's JSON.

use crate::domain::AlertEvent;
pub use crate::domain::alert::{Alert, Facts};
use crate::domain::time::parse_utc;

/// What the event means, as a headline.
pub fn headline(event: AlertEvent) -> &'static str {
    match event {
        AlertEvent::Failed => "recording could not be started",
        AlertEvent::Expired => "recording not started before the window closed",
        AlertEvent::Missed => "start missed while dingrec was down",
        AlertEvent::NotRecording => "DingTalk accepted the start but nothing records",
        AlertEvent::Paused => "recording paused",
        AlertEvent::RecordingStopped => "recording stopped during the meeting",
        AlertEvent::NoVideo => "the meeting left no video",
        AlertEvent::AuthBroken => "DingTalk refuses dingrec's credentials",
        AlertEvent::Quota => "DingTalk's monthly API quota",
        AlertEvent::PolicyFilesEmpty => "the policy files hold no policy: nothing was changed",
        AlertEvent::StreamDown => "DingTalk's meeting events are not arriving (Stream mode down)",
        AlertEvent::StreamRecovered => "DingTalk's meeting events arrive again (Stream mode back)",
        AlertEvent::AutoRecordRefused => {
            "DingTalk refused the auto-record setting; dingrec starts the recording itself"
        }
        AlertEvent::AutoRecordMissed => {
            "DingTalk's auto-recording did not start twice in a row; dingrec started it"
        }
        AlertEvent::Test => "test message",
    }
}

/// What a person can do about a code (or the event when the code says nothing).
pub fn advice(event: AlertEvent, code: Option<&str>) -> &'static str {
    match code.unwrap_or_default() {
        "recordStartPermissionError" => {
            "the host_union_id is not the meeting's host: set the host's unionId in the policy and apply it"
        }
        "roomClosed" | "roomNotFound" => {
            "the meeting had ended (or never existed): check the policy's conference_id and schedule"
        }
        "paramsError" => "DingTalk rejected the request's fields: check conference_id, layout and host",
        "Forbidden.AccessDenied.AccessTokenPermissionDenied" => {
            "the DingTalk app lacks the video-conference permission: grant it in the developer console"
        }
        "Forbidden.AccessDenied.ApiCountLimitForOrg" => {
            "the organisation's monthly API calls are spent: buy more, or wait for the month's end"
        }
        "creatorUidError" => {
            "set the policy's creator_union_id to the scheduled meeting's creator and apply it; dingrec starts the recording itself meanwhile"
        }
        "invalidClientIdOrSecret" | "invalidSuiteKey" | "invalidSuiteTicket" => {
            "check dingtalk.app_key and the app secret file, then `systemctl reload dingrec`"
        }
        "meetingNotLive" => {
            "no meeting of the scheduled meeting went live in time: was it held, and with this host?"
        }
        "notRecording" => {
            "start the recording by hand in the meeting, and check the host's cloud-recording rights"
        }
        "timeout" | "connect_error" | "systemError" | "ip_throttled" => {
            "DingTalk could not be reached or failed: start the recording by hand if the meeting is on"
        }
        _ => match event {
            AlertEvent::Missed => "dingrec was not running at the start time: check why it was down",
            AlertEvent::Paused => {
                "a participant paused the recording: resume it in the meeting if that was not meant"
            }
            AlertEvent::RecordingStopped => {
                "a participant stopped the recording; dingrec starts it again when the policy's verify.restart allows"
            }
            AlertEvent::NoVideo => "no video was kept: check the meeting's cloud recordings in DingTalk",
            AlertEvent::Test => "nothing: this destination works",
            AlertEvent::PolicyFilesEmpty => {
                "check that the policy folder is mounted and deployed; the policies in force stay as they were"
            }
            AlertEvent::StreamDown => {
                "meetings nobody declared are not found meanwhile: check the network to DingTalk and the app's Stream mode and event subscription; the daemon keeps reconnecting"
            }
            AlertEvent::AutoRecordRefused => {
                "grant the app VideoConference.Conference.Write and check creator_union_id; meanwhile dingrec starts the recording itself"
            }
            AlertEvent::AutoRecordMissed => {
                "check the meeting's auto-record setting in DingTalk and whether the host joined as the setting's `when` expects; dingrec keeps starting the recording itself"
            }
            AlertEvent::StreamRecovered => {
                "nothing: the meetings in progress were looked up on reconnect and the ones a match policy wants are being recorded"
            }
            _ => {
                "start the recording by hand if the meeting is on, and see `dingrec history` for every attempt"
            }
        },
    }
}

/// `due_at` as "2026-12-07 09:00 Asia/Shanghai (01:00 UTC)".
pub fn due_text(f: &Facts) -> Option<String> {
    let due = parse_utc(f.due_at.as_deref()?).ok()?;
    let utc = due.format("%H:%M:%S UTC").to_string();
    match f
        .timezone
        .as_deref()
        .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
    {
        Some(tz) if tz != chrono_tz::UTC => Some(format!(
            "{} {tz} ({utc})",
            due.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S")
        )),
        _ => Some(format!("{} {utc}", due.format("%Y-%m-%d"))),
    }
}

/// Markdown cannot be escaped reliably in DingTalk; keep outside text on one line, without the
/// characters that would start markup.
fn plain(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            '*' | '_' | '`' | '#' | '[' | ']' | '<' | '>' | '|' => ' ',
            c => c,
        })
        .collect();
    let t = one_line.trim();
    if t.chars().count() > 300 {
        format!("{}…", t.chars().take(300).collect::<String>())
    } else {
        t.to_owned()
    }
}

/// One alert as markdown lines (a heading and a short list: reads well on a phone).
fn markdown_block(a: &Alert, out: &mut String) {
    let f = &a.facts;
    let who = f.policy.as_deref().map(plain).unwrap_or_else(|| "dingrec".into());
    out.push_str(&format!("#### {who}: {}\n\n", headline(a.event)));
    if let Some(text) = &f.text {
        out.push_str(&format!("{}\n\n", plain(text)));
    }
    let meeting = f.conference_id.as_deref().or(f.schedule_conference_id.as_deref());
    if let Some(m) = meeting {
        out.push_str(&format!("- meeting: {}\n", plain(m)));
    }
    if let Some(d) = due_text(f) {
        out.push_str(&format!("- due: {d}\n"));
    }
    match &f.check {
        // A check's alert is about the recording, not the start (which succeeded).
        Some(c) => {
            let msg = f.check_message.as_deref().map(|m| format!(": {}", plain(m)));
            out.push_str(&format!("- found: {}{}\n", plain(c), msg.unwrap_or_default()));
        }
        None => {
            if let Some(s) = &f.state {
                out.push_str(&format!("- state: {}\n", plain(s)));
            }
        }
    }
    if let Some(code) = f
        .last_code
        .as_ref()
        .filter(|c| c.as_str() != crate::domain::outcome::codes::SUCCESS)
    {
        let msg = f.message.as_deref().map(|m| format!(": {}", plain(m)));
        out.push_str(&format!(
            "- last code: **{}**{}\n",
            plain(code),
            msg.unwrap_or_default()
        ));
    }
    if let Some(n) = f.attempts {
        out.push_str(&format!("- attempts: {n}\n"));
    }
    out.push_str(&format!(
        "- what to do: {}\n",
        advice(a.event, f.last_code.as_deref())
    ));
}

/// A robot message for several alerts: a title for the notification, the markdown text, and the
/// `@` line for `at_mobiles` (an @ must appear in the text too).
pub fn robot_markdown(alerts: &[Alert], at_mobiles: &[String]) -> (String, String) {
    let title = match alerts {
        [one] => format!(
            "dingrec: {} {}",
            one.facts.policy.as_deref().map(plain).unwrap_or_default(),
            headline(one.event)
        ),
        many => format!("dingrec: {} recordings need attention", many.len()),
    };
    // One alert: its own heading says it all; several: a heading that counts them.
    let mut text = if alerts.len() > 1 {
        format!("### {}\n\n", plain(&title))
    } else {
        String::new()
    };
    for (i, a) in alerts.iter().enumerate() {
        if i > 0 {
            text.push_str("\n---\n\n");
        }
        markdown_block(a, &mut text);
    }
    if !at_mobiles.is_empty() {
        text.push('\n');
        for m in at_mobiles {
            text.push_str(&format!("@{m} "));
        }
        text.push('\n');
    }
    (title, text)
}

/// A webhook's JSON body: the facts, the headline and the advice; `id` is its `webhook-id`.
pub fn webhook_json(a: &Alert, id: &str) -> serde_json::Value {
    let f = &a.facts;
    serde_json::json!({
        "id": id,
        "type": format!("dingrec.alert.{}", a.event),
        "event": a.event,
        "headline": headline(a.event),
        "created_at": crate::domain::time::fmt_utc(a.created_at),
        "policy": f.policy,
        "occurrence_id": f.occurrence_id,
        "conference_id": f.conference_id,
        "schedule_conference_id": f.schedule_conference_id,
        "due_at": f.due_at,
        "due": due_text(f),
        "timezone": f.timezone,
        "state": f.state,
        "last_code": f.last_code,
        "message": f.message,
        "check": f.check,
        "check_message": f.check_message,
        "attempts": f.attempts,
        "text": f.text,
        "advice": advice(a.event, f.last_code.as_deref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(policy: &str, code: &str) -> Alert {
        Alert {
            id: 7,
            created_at: parse_utc("2026-12-07T01:00:05Z").expect("t"),
            event: AlertEvent::Failed,
            facts: Facts {
                policy: Some(policy.into()),
                conference_id: Some("conf-1".into()),
                timezone: Some("Asia/Shanghai".into()),
                due_at: Some("2026-12-07T01:00:00.000Z".into()),
                state: Some(crate::domain::OccurrenceState::Failed.as_str().into()),
                attempts: Some(1),
                last_code: Some(code.into()),
                message: Some("no *permission*\nto record".into()),
                ..Facts::default()
            },
        }
    }

    #[test]
    fn one_alert_names_policy_meeting_local_and_utc_time_code_message_attempts_and_advice() {
        let (title, text) = robot_markdown(&[alert("board", "recordStartPermissionError")], &[]);
        assert_eq!(title, "dingrec: board recording could not be started");
        for want in [
            "#### board: recording could not be started",
            "- meeting: conf-1",
            "- due: 2026-12-07 09:00:00 Asia/Shanghai (01:00:00 UTC)",
            "- state: failed",
            "- last code: **recordStartPermissionError**: no  permission  to record",
            "- attempts: 1",
            "the host_union_id is not the meeting's host",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }

    #[test]
    fn several_alerts_are_one_message_listing_each_and_at_mentions_appear_in_the_text() {
        let alerts: Vec<Alert> = (0..3).map(|i| alert(&format!("p{i}"), "systemError")).collect();
        let (title, text) = robot_markdown(&alerts, &["13800000000".into()]);
        assert_eq!(title, "dingrec: 3 recordings need attention");
        for i in 0..3 {
            assert!(text.contains(&format!("#### p{i}:")), "{text}");
        }
        assert_eq!(text.matches("\n---\n").count(), 2);
        assert!(text.contains("@13800000000"));
    }

    #[test]
    fn the_webhook_body_carries_the_same_facts() {
        let v = webhook_json(&alert("board", "roomClosed"), "dingrec-0a1b2c3d-alert-7");
        assert_eq!(v["id"], "dingrec-0a1b2c3d-alert-7");
        assert_eq!(v["event"], AlertEvent::Failed.as_str());
        assert_eq!(v["policy"], "board");
        assert_eq!(v["last_code"], "roomClosed");
        assert_eq!(v["due"], "2026-12-07 09:00:00 Asia/Shanghai (01:00:00 UTC)");
        assert!(v["advice"].as_str().is_some_and(|a| a.contains("ended")));
    }
}
