//! `match` policies (docs/policies.md "Meetings found by events"): which meetings a policy wants
//! by who created them, what their title says, or which scheduled series they belong to. Every
//! criterion given must hold.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Invalid;
use super::ids::{ScheduleConferenceId, UnionId};

/// The longest title pattern, in characters.
pub const MAX_PATTERN: usize = 512;
/// The most creators or scheduled series one rule may list.
pub const MAX_LISTED: usize = 1_000;
/// The compiled pattern's size bound (the regex crate's, in bytes).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A regular expression on the meeting's title (the regex crate's syntax: linear time, no
/// backtracking).
#[derive(Clone)]
pub struct TitlePattern {
    source: String,
    regex: regex::Regex,
}

impl PartialEq for TitlePattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for TitlePattern {}

impl fmt::Debug for TitlePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TitlePattern({:?})", self.source)
    }
}

/// A pattern that does not compile, with the (1-based) character of the pattern at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub invalid: Invalid,
    pub column: usize,
}

impl TitlePattern {
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        let at = |column: usize, message: String| PatternError {
            invalid: Invalid::new(message),
            column,
        };
        if source.is_empty() {
            return Err(at(
                1,
                "an empty title pattern matches every meeting; leave `title` out instead".into(),
            ));
        }
        if source.chars().count() > MAX_PATTERN {
            return Err(at(
                MAX_PATTERN + 1,
                format!("the title pattern is longer than {MAX_PATTERN} characters"),
            ));
        }
        // The parser's errors carry where they are; the regex crate's only say it in prose.
        let ast = regex_syntax::ast::parse::Parser::new()
            .parse(source)
            .map_err(|e| {
                at(
                    e.span().start.column,
                    format!("invalid title pattern: {}", e.kind()),
                )
            })?;
        regex_syntax::hir::translate::Translator::new()
            .translate(source, &ast)
            .map_err(|e| {
                at(
                    e.span().start.column,
                    format!("invalid title pattern: {}", e.kind()),
                )
            })?;
        let regex = regex::RegexBuilder::new(source)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                at(
                    1,
                    format!("invalid title pattern: {}", first_line(&e.to_string())),
                )
            })?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, title: &str) -> bool {
        self.regex.is_match(title)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// What a `match` policy wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRule {
    /// unionIds of the meeting's creator (the event's `creatorId`), sorted, each once.
    pub creators: Vec<UnionId>,
    pub title: Option<TitlePattern>,
    /// Meetings of these scheduled series, sorted, each once.
    pub schedule_conference_ids: Vec<ScheduleConferenceId>,
}

/// What is known of a meeting when a rule is asked about it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeetingFacts<'a> {
    pub creator_id: Option<&'a str>,
    pub title: Option<&'a str>,
    pub schedule_conference_id: Option<&'a str>,
}

/// A rule's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Wanted,
    NotWanted,
    /// Every other criterion holds; the title decides and is not known (look it up).
    NeedsTitle,
}

/// The stored form (`policies.match_rule`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    creators: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    schedule_conference_ids: Vec<String>,
}

impl MatchRule {
    /// A rule needs at least one criterion (an empty rule would record every meeting).
    pub fn new(
        mut creators: Vec<UnionId>,
        title: Option<TitlePattern>,
        mut schedule_conference_ids: Vec<ScheduleConferenceId>,
    ) -> Result<Self, Invalid> {
        if creators.is_empty() && title.is_none() && schedule_conference_ids.is_empty() {
            return Err(Invalid::new(
                "a match needs at least one of creators, title, schedule_conference_ids",
            ));
        }
        if creators.len() > MAX_LISTED || schedule_conference_ids.len() > MAX_LISTED {
            return Err(Invalid::new(format!(
                "a match lists at most {MAX_LISTED} creators or series"
            )));
        }
        creators.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        creators.dedup();
        schedule_conference_ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        schedule_conference_ids.dedup();
        Ok(Self {
            creators,
            title,
            schedule_conference_ids,
        })
    }

    /// Does the rule want this meeting? Every criterion given must hold.
    pub fn wants(&self, m: &MeetingFacts<'_>) -> Verdict {
        let listed = |wanted: &[&str], got: Option<&str>| {
            wanted.is_empty() || got.is_some_and(|g| wanted.contains(&g))
        };
        let creators: Vec<&str> = self.creators.iter().map(UnionId::as_str).collect();
        let series: Vec<&str> = self
            .schedule_conference_ids
            .iter()
            .map(ScheduleConferenceId::as_str)
            .collect();
        if !listed(&creators, m.creator_id) || !listed(&series, m.schedule_conference_id) {
            return Verdict::NotWanted;
        }
        match (&self.title, m.title) {
            (None, _) => Verdict::Wanted,
            (Some(_), None) => Verdict::NeedsTitle,
            (Some(p), Some(t)) if p.is_match(t) => Verdict::Wanted,
            (Some(_), Some(_)) => Verdict::NotWanted,
        }
    }

    /// The stored form: JSON, keys in a fixed order, empty criteria left out.
    pub fn to_json(&self) -> String {
        let stored = Stored {
            creators: self.creators.iter().map(|c| c.as_str().to_owned()).collect(),
            title: self.title.as_ref().map(|t| t.as_str().to_owned()),
            schedule_conference_ids: self
                .schedule_conference_ids
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
        };
        serde_json::to_string(&stored).unwrap_or_else(|_| "{}".into())
    }

    pub fn from_json(text: &str) -> Result<Self, Invalid> {
        let s: Stored = serde_json::from_str(text).map_err(|e| Invalid::new(format!("match_rule: {e}")))?;
        let creators = s
            .creators
            .iter()
            .map(|c| UnionId::parse(c))
            .collect::<Result<_, _>>()?;
        let series = s
            .schedule_conference_ids
            .iter()
            .map(|c| ScheduleConferenceId::parse(c))
            .collect::<Result<_, _>>()?;
        let title = s
            .title
            .as_deref()
            .map(TitlePattern::parse)
            .transpose()
            .map_err(|e| e.invalid)?;
        Self::new(creators, title, series)
    }

    /// One line for `plan` and `policies`: `creators=[a,b] title=/x/ series=[s]`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.creators.is_empty() {
            let c: Vec<&str> = self.creators.iter().map(UnionId::as_str).collect();
            parts.push(format!("creators=[{}]", c.join(",")));
        }
        if let Some(t) = &self.title {
            parts.push(format!("title=/{}/", t.as_str()));
        }
        if !self.schedule_conference_ids.is_empty() {
            let s: Vec<&str> = self
                .schedule_conference_ids
                .iter()
                .map(ScheduleConferenceId::as_str)
                .collect();
            parts.push(format!("schedule_conference_ids=[{}]", s.join(",")));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn union(s: &str) -> UnionId {
        UnionId::parse(s).expect("unionId")
    }

    fn facts<'a>(
        creator: Option<&'a str>,
        title: Option<&'a str>,
        series: Option<&'a str>,
    ) -> MeetingFacts<'a> {
        MeetingFacts {
            creator_id: creator,
            title,
            schedule_conference_id: series,
        }
    }

    #[test]
    fn every_criterion_given_must_hold() {
        let rule = MatchRule::new(
            vec![union("WFBk1"), union("WFBk2")],
            Some(TitlePattern::parse("董事会|Board").expect("pattern")),
            vec![],
        )
        .expect("rule");
        assert_eq!(
            rule.wants(&facts(Some("WFBk1"), Some("Q4 董事会"), None)),
            Verdict::Wanted
        );
        assert_eq!(
            rule.wants(&facts(Some("WFBk2"), Some("Board review"), None)),
            Verdict::Wanted
        );
        assert_eq!(
            rule.wants(&facts(Some("WFBk1"), Some("standup"), None)),
            Verdict::NotWanted
        );
        assert_eq!(
            rule.wants(&facts(Some("other"), Some("Board"), None)),
            Verdict::NotWanted
        );
        assert_eq!(rule.wants(&facts(None, Some("Board"), None)), Verdict::NotWanted);
        assert_eq!(rule.wants(&facts(Some("WFBk1"), None, None)), Verdict::NeedsTitle);
        // A creator outside the list never costs a title look-up.
        assert_eq!(rule.wants(&facts(Some("other"), None, None)), Verdict::NotWanted);
        let series =
            MatchRule::new(vec![], None, vec![ScheduleConferenceId::parse("s1").expect("id")]).expect("rule");
        assert_eq!(series.wants(&facts(None, None, Some("s1"))), Verdict::Wanted);
        assert_eq!(
            series.wants(&facts(Some("x"), Some("y"), None)),
            Verdict::NotWanted
        );
    }

    #[test]
    fn an_empty_rule_is_refused() {
        assert!(MatchRule::new(vec![], None, vec![]).is_err());
    }

    #[test]
    fn a_bad_pattern_names_its_column() {
        let e = TitlePattern::parse("董事会|(Board").expect_err("unclosed");
        assert_eq!(e.column, 5, "{e:?}");
        assert!(e.invalid.message.contains("unclosed group"), "{e:?}");
        let e = TitlePattern::parse("ab[z-a]").expect_err("range");
        assert_eq!(e.column, 4, "{e:?}");
        assert!(TitlePattern::parse("").is_err());
        assert!(TitlePattern::parse(&"a".repeat(MAX_PATTERN + 1)).is_err());
        // Too big once compiled, though short.
        assert!(TitlePattern::parse(r"\w{1000}{1000}").is_err());
    }

    #[test]
    fn the_stored_form_round_trips_sorted() {
        let rule = MatchRule::new(
            vec![union("b"), union("a"), union("b")],
            Some(TitlePattern::parse("^All hands$").expect("pattern")),
            vec![ScheduleConferenceId::parse("s").expect("id")],
        )
        .expect("rule");
        let json = rule.to_json();
        assert_eq!(
            json,
            r#"{"creators":["a","b"],"title":"^All hands$","schedule_conference_ids":["s"]}"#
        );
        assert_eq!(MatchRule::from_json(&json), Ok(rule));
        assert!(MatchRule::from_json(r#"{"title":"("}"#).is_err());
        assert!(MatchRule::from_json(r#"{}"#).is_err());
    }
}
