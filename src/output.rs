//! The CLI's data output (stdout): one table renderer for every command, CSV, and the audit log's
//! rows. Columns are measured in terminal cells (`unicode-width`): DingTalk's messages are often
//! Chinese, and a CJK character takes two cells.

use std::fmt::Write as _;

use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

use crate::store::OccurrenceRow;

/// A cell as it is drawn: control characters (a line break in a message) become spaces, so one
/// row stays one line.
fn cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(char::is_control) {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

/// Columns aligned with two spaces; the header underlined with dashes; trailing spaces trimmed.
pub fn table<R: AsRef<[String]>>(headers: &[&str], rows: &[R]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.width()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell(c).width());
        }
    }
    let line_len: usize = widths.iter().map(|w| w + 2).sum::<usize>() + 1;
    let mut out = String::with_capacity((rows.len() + 2) * line_len);
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let start = out.len();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let c = cell(c);
            out.push_str(&c);
            let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(c.width());
            out.extend(std::iter::repeat_n(' ', pad));
        }
        let trimmed = out[start..].trim_end().len();
        out.truncate(start + trimmed);
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut dashes.iter().map(String::as_str));
    for row in rows {
        line(&mut row.as_ref().iter().map(String::as_str));
    }
    out
}

/// At most `max` terminal cells of `s` (a wide character that would not fit is left out).
pub fn truncate_width(s: &str, max: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += c.width().unwrap_or(0);
        if used > max {
            return &s[..i];
        }
    }
    s
}

/// RFC 4180 CSV: fields with commas, quotes or line breaks are quoted.
pub fn csv<R: AsRef<[String]>>(headers: &[&str], rows: &[R]) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        headers.iter().map(|h| field(h)).collect::<Vec<_>>().join(",")
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{}",
            row.as_ref()
                .iter()
                .map(|c| field(c))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    out
}

const HISTORY_HEADERS: [&str; 13] = [
    "DUE_AT",
    "POLICY",
    "STATE",
    "TRIGGER",
    "ATTEMPT",
    "STARTED_AT",
    "MS",
    "HTTP",
    "CODE",
    "OUTCOME",
    "CONFERENCE",
    "REQUEST_ID",
    "MESSAGE",
];

/// How much of a message the table shows (CSV and JSON show all of it).
const MESSAGE_CELLS: usize = 60;

/// The audit log (`dingrec history`): one row per attempt; an occurrence with no attempt gets one
/// row of its own.
pub fn render_history(occurrences: &[OccurrenceRow], as_csv: bool) -> String {
    fn opt<T: ToString>(v: &Option<T>) -> String {
        v.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into())
    }
    let mut rows: Vec<[String; 13]> = Vec::with_capacity(occurrences.len() * 2);
    for o in occurrences {
        let base = |cells: [String; 9]| {
            let [a, b, c, d, e, f, g, h, i] = cells;
            [
                o.due_at.clone(),
                o.policy.clone(),
                o.state.to_string(),
                o.trigger.to_string(),
                a,
                b,
                c,
                d,
                e,
                f,
                g,
                h,
                i,
            ]
        };
        // The event that made it first: ATTEMPT says `event:<type>`, REQUEST ID its eventId.
        if let Some(e) = &o.event {
            rows.push(base([
                format!("event:{}", e.event_type),
                e.received_at.clone(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                opt(&o.conference_id),
                e.event_id.clone(),
                format!(
                    "found by {} (DingTalk's time {}) on {}",
                    e.event_id,
                    e.born_at.as_deref().unwrap_or("-"),
                    e.instance.as_deref().unwrap_or("-")
                ),
            ]));
        }
        if o.attempts.is_empty() {
            let dash = || "-".to_owned();
            rows.push(base([
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                opt(&o.conference_id),
                dash(),
                dash(),
            ]));
        }
        for a in &o.attempts {
            let msg = a.message.as_deref().unwrap_or_default();
            let msg = if as_csv {
                msg
            } else {
                truncate_width(msg, MESSAGE_CELLS)
            };
            rows.push(base([
                a.attempt_no.to_string(),
                a.started_at.clone(),
                opt(&a.duration_ms),
                opt(&a.http_status),
                opt(&a.code),
                opt(&a.outcome),
                opt(&a.conference_id),
                opt(&a.request_id),
                msg.to_owned(),
            ]));
        }
        // Checks under their occurrence, in the same columns: ATTEMPT says `check:<kind>`, the
        // message what DingTalk said about the recording.
        for c in &o.checks {
            let said = match (c.cloud_record_status, &c.video_duration_ms) {
                (Some(st), _) => format!(
                    "meeting status {}, cloudRecordStatus {st}{}",
                    opt(&c.meeting_status),
                    c.owner_union_id
                        .as_deref()
                        .map(|o| format!(", owner {o}"))
                        .unwrap_or_default()
                ),
                (None, Some(ms)) => format!("video {} s, {} bytes", ms / 1000, opt(&c.video_file_size)),
                (None, None) => c.message.clone().unwrap_or_default(),
            };
            let said = if as_csv {
                said
            } else {
                truncate_width(&said, MESSAGE_CELLS).to_owned()
            };
            rows.push(base([
                format!("check:{}", c.kind),
                c.at.clone(),
                opt(&c.duration_ms),
                opt(&c.http_status),
                opt(&c.code),
                opt(&c.outcome),
                opt(&o.conference_id),
                "-".to_owned(),
                said,
            ]));
        }
    }
    if as_csv {
        csv(&HISTORY_HEADERS, &rows)
    } else {
        table(&HISTORY_HEADERS, &rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["a", "long"], &[vec!["xyz".to_owned(), "1".to_owned()]]);
        assert_eq!(t, "a    long\n---  ----\nxyz  1\n");
    }

    #[test]
    fn tables_align_chinese_text_by_display_width() {
        let t = table(
            &["CODE", "MESSAGE", "X"],
            &[
                vec![
                    "InvalidAuthentication".to_owned(),
                    "不合法的access_token".to_owned(),
                    "1".to_owned(),
                ],
                vec!["systemError".to_owned(), "internal".to_owned(), "2".to_owned()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        // The third column starts at the same terminal cell on every line.
        let col = |l: &str| {
            let i = l.rfind(' ').expect("a space") + 1;
            l[..i].width()
        };
        assert_eq!(col(lines[0]), col(lines[2]), "{t}");
        assert_eq!(col(lines[2]), col(lines[3]), "{t}");
        assert_eq!(
            lines[1].split("  ").nth(1).map(str::len),
            Some("不合法的access_token".width())
        );
    }

    #[test]
    fn cells_stay_on_one_line() {
        let t = table(&["M"], &[vec!["a\nb".to_owned()]]);
        assert_eq!(t, "M\n---\na b\n");
    }

    #[test]
    fn truncation_counts_cells_not_chars() {
        assert_eq!(truncate_width("不合法的", 5), "不合");
        assert_eq!(truncate_width("abc", 5), "abc");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let c = csv(&["x", "y"], &[vec!["a,b".to_owned(), "say \"hi\"".to_owned()]]);
        assert_eq!(c, "x,y\n\"a,b\",\"say \"\"hi\"\"\"\n");
    }
}
