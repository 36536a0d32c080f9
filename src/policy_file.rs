//! Policy files (`docs/policies.md`): YAML → domain [`Policy`] values, with compiler-like errors.
//!
//! Parsing goes in two steps. The YAML becomes a raw document that keeps every value's line and
//! column (serde-saphyr's `Spanned`); unknown keys are collected rather than fatal, so one run
//! reports them all. Then each raw policy is checked field by field into a `Policy`, collecting
//! every problem of every file. Only structural YAML errors (a wrong type, broken syntax, a
//! duplicate key, a resource limit) stop a file at the first problem, since the parser cannot go
//! on past them.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::domain::PolicyDefaults;
use crate::domain::auto_record::{AutoRecord, When};
use crate::domain::matching::{MatchRule, PatternError, TitlePattern};
use crate::domain::policy::{HOST_CREATOR, ScheduleConferenceId, check_timing};
use crate::domain::schedule::{At, CronExpr};
use crate::domain::{
    ConferenceId, Layout, Policy, PolicyName, RetryPolicy, Schedule, Target, UnionId, Verify, WindowPosition,
    Zone,
};
use crate::domain::{Invalid, did_you_mean};

/// The most `skip_dates` one policy may list.
pub const MAX_SKIP_DATES: usize = 1_000;

/// Policy files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// One problem, located. Renders like a compiler error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
    /// The key the problem is about (`policies[2].timezone`), when there is one.
    pub key: Option<String>,
    pub hint: Option<String>,
    /// The source line, for the caret display.
    pub source_line: Option<String>,
    /// How many characters the caret underlines.
    pub width: usize,
}

impl Diagnostic {
    pub fn file_level(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message: message.into(),
            key: None,
            hint: None,
            source_line: None,
            width: 1,
        }
    }

    /// The first line only: `file:line:column: error: message`.
    pub fn headline(&self) -> String {
        format!(
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.headline())?;
        if let Some(src) = &self.source_line {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            writeln!(f, "{pad} |")?;
            writeln!(f, "{num} | {src}")?;
            let col = usize::try_from(self.column.saturating_sub(1)).unwrap_or(0);
            let lead: String = src
                .chars()
                .take(col)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let label = self.key.as_deref().map(|k| format!(" {k}")).unwrap_or_default();
            writeln!(f, "{pad} | {lead}{}{label}", "^".repeat(self.width.max(1)))?;
        } else if let Some(k) = &self.key {
            writeln!(f, "  = key: {k}")?;
        }
        if let Some(h) = &self.hint {
            writeln!(f, "  = hint: {h}")?;
        }
        Ok(())
    }
}

/// A policy with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcedPolicy {
    pub policy: Policy,
    /// `file:line` of the policy's entry.
    pub source: String,
}

/// Expand `paths` (files, or folders of `*.yaml`/`*.yml`, not recursive) into files, sorted.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Vec<Diagnostic>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(p) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml") && f.is_file())
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => errors.push(Diagnostic::file_level(p, format!("cannot read folder: {e}"))),
            },
            Ok(_) => files.push(p.clone()),
            Err(e) => errors.push(Diagnostic::file_level(p, format!("cannot read: {e}"))),
        }
    }
    if errors.is_empty() { Ok(files) } else { Err(errors) }
}

/// Load and check every policy in `paths`. All problems of all files come back at once.
pub fn load_paths(
    paths: &[PathBuf],
    defaults: &PolicyDefaults,
) -> Result<Vec<SourcedPolicy>, Vec<Diagnostic>> {
    let files = expand_paths(paths)?;
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for file in &files {
        match read_file(file) {
            Ok(text) => match parse_str(file, &text, defaults) {
                Ok(mut ps) => {
                    // The database keeps where a policy came from as an absolute path: the
                    // daemon's prune reaches only policies of its own `policies.paths`, whatever
                    // folder `apply` was run from.
                    let abs = std::path::absolute(file).unwrap_or_else(|_| file.clone());
                    for p in &mut ps {
                        let line = p.source.rsplit_once(':').map_or("1", |(_, l)| l);
                        p.source = format!("{}:{line}", abs.display());
                    }
                    all.append(&mut ps)
                }
                Err(mut es) => errors.append(&mut es),
            },
            Err(e) => errors.push(e),
        }
    }
    check_unique_names(&all, &mut errors);
    if errors.is_empty() { Ok(all) } else { Err(errors) }
}

#[allow(clippy::result_large_err)] // one per file, on the error path only
fn read_file(file: &Path) -> Result<String, Diagnostic> {
    let meta =
        std::fs::metadata(file).map_err(|e| Diagnostic::file_level(file, format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::file_level(
            file,
            format!(
                "file is {} bytes; policy files are limited to {} MiB (split it into several files in a folder)",
                meta.len(),
                MAX_FILE_BYTES / 1024 / 1024
            ),
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| Diagnostic::file_level(file, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        let last_nl = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[last_nl..]).chars().count() as u64 + 1;
        Diagnostic {
            line,
            column,
            ..Diagnostic::file_level(file, "file is not valid UTF-8")
        }
    })
}

fn check_unique_names(all: &[SourcedPolicy], errors: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for p in all {
        if let Some(first) = seen.insert(p.policy.name.as_str(), &p.source) {
            let (file, line) = split_source(&p.source);
            errors.push(Diagnostic {
                file,
                line,
                column: 1,
                message: format!("duplicate policy name '{}'", p.policy.name),
                key: Some("name".into()),
                hint: Some(format!("the name is first used at {first}")),
                source_line: None,
                width: 1,
            });
        }
    }
}

fn split_source(source: &str) -> (PathBuf, u64) {
    match source.rsplit_once(':') {
        Some((f, l)) => (PathBuf::from(f), l.parse().unwrap_or(1)),
        None => (PathBuf::from(source), 1),
    }
}

/// Parse one file's text. `file` is only used to name it in errors and in `source`.
pub fn parse_str(
    file: &Path,
    text: &str,
    defaults: &PolicyDefaults,
) -> Result<Vec<SourcedPolicy>, Vec<Diagnostic>> {
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(vec![Diagnostic::file_level(
            file,
            "file is empty; expected a mapping with a 'policies' list",
        )]);
    }
    // What a reviewer reads is what DingTalk gets: no tags (`!!binary` stays its literal text,
    // unknown tags are errors), YAML 1.2 booleans only.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        reject_unsupported_tags: true,
        ignore_binary_tag_for_string: true,
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_aliases: 256,
            max_anchors: 256,
            max_nodes: 1_000_000,
        },
    };
    let doc: RawDocument = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let raw = e.without_snippet().to_string();
        let message = match raw.rsplit_once(" at line ") {
            Some((m, _)) => m.to_owned(),
            None => raw,
        };
        let (message, hint) = hint_for_structural(&message);
        vec![Diagnostic {
            file: file.to_owned(),
            line,
            column,
            message,
            key: None,
            hint,
            source_line: source_line(text, line),
            width: 1,
        }]
    })?;
    let Some(policies) = doc.policies else {
        return Err(vec![Diagnostic::file_level(
            file,
            "missing key 'policies' (a list of policies)",
        )]);
    };
    let mut ctx = Validator {
        file,
        text,
        errors: Vec::new(),
    };
    let mut out = Vec::new();
    for (i, raw) in policies.value.into_iter().enumerate() {
        if let Some(p) = ctx.policy(i, raw, defaults) {
            out.push(p);
        }
    }
    if ctx.errors.is_empty() {
        Ok(out)
    } else {
        ctx.errors.sort_by_key(|d| (d.line, d.column));
        Err(ctx.errors)
    }
}

/// serde's "unknown field `x`, expected one of a, b" gains a did-you-mean.
fn hint_for_structural(message: &str) -> (String, Option<String>) {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, expected)) = rest.split_once("`, expected ")
    {
        let choices: Vec<&str> = expected
            .trim_start_matches("one of ")
            .split(',')
            .map(|s| s.trim().trim_matches('`'))
            .collect();
        return (
            format!("unknown key '{name}'"),
            did_you_mean(name, choices.iter().copied())
                .or_else(|| Some(format!("expected one of: {}", choices.join(", ")))),
        );
    }
    (message.to_owned(), None)
}

/// The lines of `text` as YAML counts them: a line ends at `\r\n`, `\n` or a lone `\r`.
pub(crate) fn yaml_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.find(['\r', '\n']) {
            Some(i) => {
                let skip = if r[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&r[i + skip..]).filter(|s| !s.is_empty());
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

fn source_line(text: &str, line: u64) -> Option<String> {
    let idx = usize::try_from(line.checked_sub(1)?).ok()?;
    yaml_lines(text).nth(idx).map(|l| l.chars().take(200).collect())
}

// ---- the raw document ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    policies: Option<Spanned<Vec<RawPolicy>>>,
}

type S<T> = Spanned<T>;

/// Declares the raw policy entry from one list of keys: the struct's fields, [`POLICY_KEYS`] (for
/// "unknown key" hints) and the map visitor's dispatch all come from it, so a key is added once.
macro_rules! raw_policy {
    ($($key:ident: $ty:ty),+ $(,)?) => {
        /// One entry of `policies:`, every value with its location. Unknown keys are collected,
        /// not fatal, so that one run reports them all.
        #[derive(Default)]
        struct RawPolicy {
            /// Where the entry starts (its first key).
            first_key: Option<serde_saphyr::Location>,
            $($key: Option<S<$ty>>,)+
            /// `match` (a Rust keyword, so not a field name of its own).
            match_rule: Option<S<RawMatch>>,
            unknown: Vec<S<String>>,
        }

        /// Every key a policy entry may hold.
        pub const POLICY_KEYS: &[&str] = &[$(stringify!($key)),+, "match"];

        impl RawPolicy {
            /// Read the value of `key` into its field; false for a key that is not a policy key.
            fn read_value<'de, A: MapAccess<'de>>(&mut self, key: &str, m: &mut A) -> Result<bool, A::Error> {
                match key {
                    $(stringify!($key) => self.$key = Some(m.next_value()?),)+
                    "match" => self.match_rule = Some(m.next_value()?),
                    _ => return Ok(false),
                }
                Ok(true)
            }
        }
    };
}

raw_policy! {
    name: String,
    conference_id: String,
    schedule_conference_id: String,
    host_union_id: String,
    cron: String,
    at: String,
    timezone: String,
    layout: String,
    small_window_position: String,
    start_offset: String,
    window: String,
    skip_dates: Vec<S<String>>,
    retry: RawRetry,
    verify: RawVerify,
    alert: Vec<S<String>>,
    auto_record: RawAutoRecord,
    creator_union_id: String,
    auto_record_refresh: String,
    enabled: bool,
}

/// `auto_record:` is `false`, `true` (`when: host`) or `{when: host | cohost | anyone}`.
enum RawAutoRecord {
    Switch(bool),
    Fields(RawAutoRecordFields),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoRecordFields {
    when: S<String>,
}

impl<'de> Deserialize<'de> for RawAutoRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawAutoRecord;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("false, true, or a mapping with when: host, cohost or anyone")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawAutoRecord, E> {
                Ok(RawAutoRecord::Switch(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawAutoRecord, A::Error> {
                RawAutoRecordFields::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(RawAutoRecord::Fields)
            }
        }
        d.deserialize_any(V)
    }
}

/// `match:`: which meetings a policy wants, by rule (docs/policies.md).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    creators: Option<S<Vec<S<String>>>>,
    title: Option<S<String>>,
    schedule_conference_ids: Option<S<Vec<S<String>>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_interval: Option<S<String>>,
    backoff_coefficient: Option<S<f64>>,
    maximum_interval: Option<S<String>>,
    maximum_attempts: Option<S<u32>>,
}

/// `verify:` is `false` (off), `true` (the defaults) or a mapping of fields over the defaults.
enum RawVerify {
    Switch(bool),
    Fields(Box<RawVerifyFields>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVerifyFields {
    after: Option<S<String>>,
    checks: Option<S<u32>>,
    watch: Option<S<String>>,
    restart: Option<S<bool>>,
    video: Option<S<bool>>,
}

impl<'de> Deserialize<'de> for RawVerify {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawVerify;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("false, true, or a mapping with after, checks, watch, restart, video")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawVerify, E> {
                Ok(RawVerify::Switch(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawVerify, A::Error> {
                RawVerifyFields::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(|f| RawVerify::Fields(Box::new(f)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPolicy;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a policy (a mapping with name, host_union_id, ...)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawPolicy, A::Error> {
                let mut p = RawPolicy::default();
                while let Some(key) = m.next_key::<S<String>>()? {
                    p.first_key.get_or_insert(key.referenced);
                    if !p.read_value(&key.value, &mut m)? {
                        m.next_value::<IgnoredAny>()?;
                        p.unknown.push(key);
                    }
                }
                Ok(p)
            }
        }
        d.deserialize_map(V)
    }
}

// ---- checking ----

/// The entry being checked: how its keys are named in errors, and where it starts.
struct Entry {
    label: String,
    first_key: Option<serde_saphyr::Location>,
}

impl Entry {
    /// `policies[2] (weekly).timezone`
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.label)
    }
}

struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn at(&self, loc: &serde_saphyr::Location, width: usize, key: String, err: Invalid) -> Diagnostic {
        Diagnostic {
            file: self.file.to_owned(),
            line: loc.line(),
            column: loc.column(),
            message: err.message,
            key: Some(key),
            hint: err.hint,
            source_line: source_line(self.text, loc.line()),
            width,
        }
    }

    fn push<T>(&mut self, v: &S<T>, key: String, err: Invalid) {
        let width = source_line(self.text, v.referenced.line())
            .map(|l| {
                let col = usize::try_from(v.referenced.column().saturating_sub(1)).unwrap_or(0);
                l.chars()
                    .skip(col)
                    .take_while(|c| *c != '#')
                    .collect::<String>()
                    .trim_end()
                    .chars()
                    .count()
            })
            .unwrap_or(1);
        let d = self.at(&v.referenced, width, key, err);
        self.errors.push(d);
    }

    /// Run `parse` on an optional spanned string, recording a located error.
    fn field<T>(
        &mut self,
        v: &Option<S<String>>,
        key: impl Fn() -> String,
        parse: impl FnOnce(&str) -> Result<T, Invalid>,
    ) -> Option<Option<T>> {
        match v {
            None => Some(None),
            Some(s) => match parse(&s.value) {
                Ok(t) => Some(Some(t)),
                Err(e) => {
                    self.push(s, key(), e);
                    None
                }
            },
        }
    }

    /// Record a problem at the start of the entry (a key that is missing, or two that clash).
    fn at_entry(&mut self, e: &Entry, k: &str, msg: impl Into<String>) {
        if let Some(loc) = e.first_key {
            let d = self.at(&loc, 1, e.key(k), Invalid::new(msg));
            self.errors.push(d);
        }
    }

    /// Check one entry of `policies:` into a policy; every problem is recorded, none stops the rest.
    fn policy(&mut self, i: usize, raw: RawPolicy, defaults: &PolicyDefaults) -> Option<SourcedPolicy> {
        let before = self.errors.len();
        let e = Entry {
            label: raw
                .name
                .as_ref()
                .map(|n| format!("policies[{i}] ({})", n.value))
                .unwrap_or_else(|| format!("policies[{i}]")),
            first_key: raw.first_key,
        };
        for u in &raw.unknown {
            let hint = did_you_mean(&u.value, POLICY_KEYS.iter().copied())
                .or_else(|| Some(format!("known keys: {}", POLICY_KEYS.join(", "))));
            self.push(
                u,
                e.key(&u.value),
                Invalid::new(format!("unknown key '{}'", u.value)).with_hint(hint),
            );
        }
        let name = self.required(&e, &raw.name, "name", "missing key 'name'", PolicyName::parse);
        let host = self.required(
            &e,
            &raw.host_union_id,
            "host_union_id",
            "missing key 'host_union_id' (the meeting host's unionId)",
            UnionId::parse,
        );
        let target = self.target(&e, &raw);
        if let Some(h) = &raw.host_union_id
            && h.value == HOST_CREATOR
            && raw.match_rule.is_none()
        {
            self.push(
                h,
                e.key("host_union_id"),
                Invalid::new("host_union_id: creator is for match policies (the meeting's creator starts it); name the host's unionId"),
            );
        }
        let schedule = self.schedule(&e, &raw);
        let timezone = self
            .field(&raw.timezone, || e.key("timezone"), Zone::parse)
            .map(|z| z.unwrap_or(defaults.timezone));
        let layout = self
            .field(&raw.layout, || e.key("layout"), Layout::parse)
            .map(|l| l.unwrap_or(defaults.layout));
        let position = self
            .field(
                &raw.small_window_position,
                || e.key("small_window_position"),
                WindowPosition::parse,
            )
            .map(|p| p.unwrap_or(defaults.small_window_position));
        let (start_offset, window) = self.timing(&e, &raw, defaults);
        let skip_dates = self.skip_dates(&e, &raw.skip_dates);
        let retry = self.retry(&raw.retry, defaults.retry, &|k| e.key(k));
        let verify = self.verify(&raw.verify, defaults.verify, &|k| e.key(k));
        let alert = self.alert(&e, &raw.alert, &defaults.alert_destinations);
        let auto_record = self.auto_record(&e, &raw, defaults, host.as_ref());
        let enabled = raw.enabled.as_ref().is_none_or(|v| v.value);

        if self.errors.len() > before {
            return None;
        }
        let line = e.first_key.map_or(1, |l| l.line());
        Some(SourcedPolicy {
            policy: Policy {
                name: name?,
                target: target?,
                host_union_id: host?,
                schedule: schedule?,
                timezone: timezone?,
                layout: layout?,
                small_window_position: position?,
                start_offset: start_offset?,
                window: window?,
                skip_dates: skip_dates?,
                retry: retry?,
                verify: verify?,
                alert: alert?,
                auto_record: auto_record?,
                enabled,
            },
            source: format!("{}:{line}", self.file.display()),
        })
    }

    /// A key every entry must have.
    fn required<T>(
        &mut self,
        e: &Entry,
        v: &Option<S<String>>,
        k: &str,
        missing: &str,
        parse: impl FnOnce(&str) -> Result<T, Invalid>,
    ) -> Option<T> {
        if v.is_none() {
            self.at_entry(e, k, missing);
        }
        self.field(v, || e.key(k), parse).flatten()
    }

    /// Exactly one of `a` and `b`: both set is an error at `b`, neither at the entry.
    fn one_of<A, B, T>(
        &mut self,
        e: &Entry,
        (a, b): (Option<Option<A>>, Option<Option<B>>),
        b_raw: &Option<S<String>>,
        (b_key, both, neither): (&str, &str, &str),
        make: (impl FnOnce(A) -> T, impl FnOnce(B) -> T),
    ) -> Option<T> {
        match (a, b) {
            (Some(Some(a)), Some(None)) => Some(make.0(a)),
            (Some(None), Some(Some(b))) => Some(make.1(b)),
            (Some(Some(_)), Some(Some(_))) => {
                if let Some(s) = b_raw {
                    self.push(s, e.key(b_key), Invalid::new(both));
                }
                None
            }
            (Some(None), Some(None)) => {
                self.at_entry(e, b_key, neither);
                None
            }
            _ => None,
        }
    }

    /// `conference_id` or `schedule_conference_id`, or a `match` rule and neither.
    fn target(&mut self, e: &Entry, raw: &RawPolicy) -> Option<Target> {
        if let Some(rule) = &raw.match_rule {
            for (key, v) in [
                ("conference_id", &raw.conference_id),
                ("schedule_conference_id", &raw.schedule_conference_id),
            ] {
                if let Some(v) = v {
                    self.push(
                        v,
                        e.key(key),
                        Invalid::new(format!(
                            "a match policy names no meeting: its meetings come from DingTalk's events; remove '{key}'"
                        ))
                        .with_hint(Some("to record only a scheduled series' meetings, list it under match.schedule_conference_ids".into())),
                    );
                }
            }
            return self.match_rule(e, rule).map(Target::Match);
        }
        let conf = self.field(&raw.conference_id, || e.key("conference_id"), ConferenceId::parse);
        let sched = self.field(
            &raw.schedule_conference_id,
            || e.key("schedule_conference_id"),
            ScheduleConferenceId::parse,
        );
        self.one_of(
            e,
            (conf, sched),
            &raw.schedule_conference_id,
            (
                "schedule_conference_id",
                "both conference_id and schedule_conference_id are set; set exactly one",
                "neither conference_id nor schedule_conference_id is set; set exactly one",
            ),
            (Target::Conference, Target::Scheduled),
        )
    }

    /// `cron` or `at`; neither for a `match` policy (the event is the time).
    fn schedule(&mut self, e: &Entry, raw: &RawPolicy) -> Option<Schedule> {
        if raw.match_rule.is_some() {
            let mut ok = true;
            for (key, v) in [("cron", &raw.cron), ("at", &raw.at)] {
                if let Some(v) = v {
                    self.push(
                        v,
                        e.key(key),
                        Invalid::new(format!(
                            "a match policy has no schedule: a meeting's creation is its time; remove '{key}'"
                        )),
                    );
                    ok = false;
                }
            }
            if let Some(v) = &raw.skip_dates {
                self.push(
                    v,
                    e.key("skip_dates"),
                    Invalid::new("skip_dates applies to policies with a schedule, not to a match policy"),
                );
                ok = false;
            }
            return ok.then_some(Schedule::OnEvent);
        }
        let cron = self.field(&raw.cron, || e.key("cron"), CronExpr::parse);
        let at = self.field(&raw.at, || e.key("at"), At::parse);
        self.one_of(
            e,
            (cron, at),
            &raw.at,
            (
                "at",
                "both 'at' and 'cron' are set; set exactly one",
                "neither 'at' (one-off) nor 'cron' (recurring) is set; set exactly one",
            ),
            (Schedule::Cron, Schedule::At),
        )
    }

    /// `match: {creators, title, schedule_conference_ids}`: at least one; a title that is not a
    /// valid regular expression is reported at the pattern's character at fault.
    fn match_rule(&mut self, e: &Entry, raw: &S<RawMatch>) -> Option<MatchRule> {
        let before = self.errors.len();
        let list = |this: &mut Self,
                    v: &Option<S<Vec<S<String>>>>,
                    key: &str,
                    parse: &dyn Fn(&str) -> Result<String, Invalid>| {
            let mut out = Vec::new();
            for (j, item) in v.iter().flat_map(|l| l.value.iter()).enumerate() {
                match parse(&item.value) {
                    Ok(x) => out.push(x),
                    Err(err) => this.push(item, e.key(&format!("match.{key}[{j}]")), err),
                }
            }
            if let Some(l) = v
                && l.value.is_empty()
            {
                this.push(
                    l,
                    e.key(&format!("match.{key}")),
                    Invalid::new(format!(
                        "match.{key} is empty; list at least one, or leave it out"
                    )),
                );
            }
            out
        };
        let creators: Vec<UnionId> = list(self, &raw.value.creators, "creators", &|s| {
            UnionId::parse(s).map(|u| u.as_str().to_owned())
        })
        .iter()
        .filter_map(|s| UnionId::parse(s).ok())
        .collect();
        let series: Vec<ScheduleConferenceId> = list(
            self,
            &raw.value.schedule_conference_ids,
            "schedule_conference_ids",
            &|s| ScheduleConferenceId::parse(s).map(|u| u.as_str().to_owned()),
        )
        .iter()
        .filter_map(|s| ScheduleConferenceId::parse(s).ok())
        .collect();
        let title = match &raw.value.title {
            None => None,
            Some(t) => match TitlePattern::parse(&t.value) {
                Ok(p) => Some(p),
                Err(err) => {
                    self.pattern_error(t, e.key("match.title"), err);
                    None
                }
            },
        };
        if self.errors.len() > before {
            return None;
        }
        match MatchRule::new(creators, title, series) {
            Ok(rule) => Some(rule),
            Err(err) => {
                self.push(raw, e.key("match"), err);
                None
            }
        }
    }

    /// A title pattern's error, at the pattern's character at fault: the value's column, past its
    /// opening quote.
    fn pattern_error(&mut self, v: &S<String>, key: String, err: PatternError) {
        let loc = v.referenced;
        let line = source_line(self.text, loc.line());
        let start = usize::try_from(loc.column().saturating_sub(1)).unwrap_or(0);
        let quoted = line
            .as_deref()
            .and_then(|l| l.chars().nth(start))
            .is_some_and(|c| c == '"' || c == '\'');
        let column =
            loc.column() + u64::from(quoted) + u64::try_from(err.column.saturating_sub(1)).unwrap_or(0);
        self.errors.push(Diagnostic {
            file: self.file.to_owned(),
            line: loc.line(),
            column,
            message: err.invalid.message,
            key: Some(key),
            hint: err.invalid.hint,
            source_line: line,
            width: 1,
        });
    }

    /// `start_offset` and `window`, each defaulted, the window longer than the offset.
    fn timing(
        &mut self,
        e: &Entry,
        raw: &RawPolicy,
        defaults: &PolicyDefaults,
    ) -> (Option<Duration>, Option<Duration>) {
        let start_offset = self
            .field(&raw.start_offset, || e.key("start_offset"), parse_duration)
            .map(|d| d.unwrap_or(defaults.start_offset));
        let window = self
            .field(&raw.window, || e.key("window"), parse_duration)
            .map(|d| d.unwrap_or(defaults.window));
        if let (Some(off), Some(win)) = (start_offset, window)
            && let Err((field, err)) = check_timing(off, win)
        {
            let blame = if field == "window" {
                &raw.window
            } else {
                &raw.start_offset
            };
            match (blame, &raw.window, &raw.start_offset) {
                (Some(v), _, _) | (None, Some(v), _) | (None, None, Some(v)) => {
                    self.push(v, e.key(field), err)
                }
                (None, None, None) => self.at_entry(e, "window", err.message),
            }
        }
        (start_offset, window)
    }

    /// `skip_dates`: local dates, `YYYY-MM-DD`.
    /// `alert: [names]`: each a destination of config.yaml's `alerts.destinations`; `None` (no
    /// key) routes to `alerts.default`.
    /// `auto_record`, `creator_union_id`, `auto_record_refresh`: DingTalk's own auto-recording,
    /// for scheduled meetings only (the default applies to those alone).
    fn auto_record(
        &mut self,
        e: &Entry,
        raw: &RawPolicy,
        defaults: &PolicyDefaults,
        host: Option<&UnionId>,
    ) -> Option<Option<AutoRecord>> {
        let scheduled = raw.schedule_conference_id.is_some() && raw.match_rule.is_none();
        let when = match &raw.auto_record {
            None if scheduled => defaults.auto_record,
            None => None,
            Some(r) => {
                let when = match &r.value {
                    RawAutoRecord::Switch(false) => None,
                    RawAutoRecord::Switch(true) => Some(When::Host),
                    RawAutoRecord::Fields(f) => match When::parse(&f.when.value) {
                        Ok(w) => Some(w),
                        Err(err) => {
                            self.push(&f.when, e.key("auto_record.when"), err);
                            return None;
                        }
                    },
                };
                if when.is_some() && !scheduled {
                    self.push(
                        r,
                        e.key("auto_record"),
                        Invalid::new("auto_record is for schedule_conference_id policies: DingTalk's auto-recording is a setting of a scheduled meeting")
                            .with_hint(Some("remove auto_record; dingrec's StartCloudRecord records this policy's meetings".into())),
                    );
                    return None;
                }
                when
            }
        };
        let creator = self.field(
            &raw.creator_union_id,
            || e.key("creator_union_id"),
            UnionId::parse,
        )?;
        let refresh = self.field(
            &raw.auto_record_refresh,
            || e.key("auto_record_refresh"),
            |s| {
                let d = parse_duration(s)?;
                AutoRecord::check_refresh(d)?;
                Ok(d)
            },
        )?;
        let Some(when) = when else {
            for (key, v) in [
                ("creator_union_id", &raw.creator_union_id),
                ("auto_record_refresh", &raw.auto_record_refresh),
            ] {
                if let Some(v) = v {
                    self.push(
                        v,
                        e.key(key),
                        Invalid::new(format!("{key} is used only with auto_record")),
                    );
                    return None;
                }
            }
            return Some(None);
        };
        let creator = match (creator, host) {
            (Some(c), _) => c,
            (None, Some(h)) => h.clone(),
            // The host's own error is reported already.
            (None, _) => return None,
        };
        Some(Some(AutoRecord {
            when,
            creator_union_id: creator,
            refresh: refresh.unwrap_or(defaults.auto_record_refresh),
        }))
    }

    fn alert(
        &mut self,
        e: &Entry,
        raw: &Option<S<Vec<S<String>>>>,
        known: &BTreeSet<String>,
    ) -> Option<Option<Vec<String>>> {
        let Some(list) = raw else { return Some(None) };
        let before = self.errors.len();
        let mut names = Vec::new();
        for (j, n) in list.value.iter().enumerate() {
            if known.contains(&n.value) {
                if !names.contains(&n.value) {
                    names.push(n.value.clone());
                }
                continue;
            }
            let hint = did_you_mean(&n.value, known.iter().map(String::as_str)).or_else(|| {
                Some(if known.is_empty() {
                    "config.yaml defines no alerts.destinations".into()
                } else {
                    format!(
                        "alerts.destinations in config.yaml: {}",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
            });
            self.push(
                n,
                e.key(&format!("alert[{j}]")),
                Invalid::new(format!("unknown alert destination '{}'", n.value)).with_hint(hint),
            );
        }
        (self.errors.len() == before).then_some(Some(names))
    }

    fn skip_dates(&mut self, e: &Entry, raw: &Option<S<Vec<S<String>>>>) -> Option<BTreeSet<NaiveDate>> {
        let mut dates = BTreeSet::new();
        let before = self.errors.len();
        if let Some(list) = raw
            && list.value.len() > MAX_SKIP_DATES
        {
            self.push(
                list,
                e.key("skip_dates"),
                Invalid::new(format!(
                    "skip_dates holds {} dates; at most {MAX_SKIP_DATES}",
                    list.value.len()
                )),
            );
            return None;
        }
        for (j, d) in raw.iter().flat_map(|l| l.value.iter()).enumerate() {
            match NaiveDate::parse_from_str(&d.value, "%Y-%m-%d") {
                Ok(date) => {
                    dates.insert(date);
                }
                Err(err) => self.push(
                    d,
                    e.key(&format!("skip_dates[{j}]")),
                    Invalid::new(format!("invalid date '{}': {err} (expected YYYY-MM-DD)", d.value)),
                ),
            }
        }
        (self.errors.len() == before).then_some(dates)
    }

    fn retry(
        &mut self,
        raw: &Option<S<RawRetry>>,
        base: RetryPolicy,
        key: &dyn Fn(&str) -> String,
    ) -> Option<RetryPolicy> {
        let Some(r) = raw else { return Some(base) };
        let mut out = base;
        let before = self.errors.len();
        if let Some(Some(d)) = self.field(
            &r.value.initial_interval,
            || key("retry.initial_interval"),
            parse_duration,
        ) {
            out.initial_interval = d;
        }
        if let Some(Some(d)) = self.field(
            &r.value.maximum_interval,
            || key("retry.maximum_interval"),
            parse_duration,
        ) {
            out.maximum_interval = d;
        }
        if let Some(c) = &r.value.backoff_coefficient {
            out.backoff_coefficient = c.value;
        }
        if let Some(n) = &r.value.maximum_attempts {
            out.maximum_attempts = n.value;
        }
        if self.errors.len() > before {
            return None;
        }
        if let Err(e) = out.check() {
            self.push(
                r,
                key(&format!("retry.{}", e.field())),
                Invalid::new(e.to_string()),
            );
            return None;
        }
        Some(out)
    }
}

impl Validator<'_> {
    /// `verify`: `None` is an error (reported); `Some(None)` is `verify: false`.
    fn verify(
        &mut self,
        raw: &Option<S<RawVerify>>,
        base: Option<Verify>,
        key: &dyn Fn(&str) -> String,
    ) -> Option<Option<Verify>> {
        let Some(r) = raw else { return Some(base) };
        let f = match &r.value {
            RawVerify::Switch(false) => return Some(None),
            RawVerify::Switch(true) => return Some(Some(base.unwrap_or_default())),
            RawVerify::Fields(f) => f,
        };
        // Fields override the defaults, or the built-in ones when the defaults turn verify off.
        let mut out = base.unwrap_or_default();
        let before = self.errors.len();
        if let Some(Some(d)) = self.field(&f.after, || key("verify.after"), parse_duration) {
            out.after = d;
        }
        if let Some(Some(d)) = self.field(&f.watch, || key("verify.watch"), parse_duration) {
            out.watch = d;
        }
        if let Some(n) = &f.checks {
            out.checks = n.value;
        }
        if let Some(b) = &f.restart {
            out.restart = b.value;
        }
        if let Some(b) = &f.video {
            out.video = b.value;
        }
        if self.errors.len() > before {
            return None;
        }
        if let Err(e) = out.check() {
            self.push(
                r,
                key(&format!("verify.{}", e.field())),
                Invalid::new(e.to_string()),
            );
            return None;
        }
        Some(Some(out))
    }
}

fn parse_duration(s: &str) -> Result<Duration, Invalid> {
    humantime::parse_duration(s).map_err(|e| {
        Invalid::new(format!("invalid duration '{s}': {e}")).with_hint(Some(
            "write durations like 30s, 15m, 1h 30m (note: 'M' is months, 'm' is minutes)".into(),
        ))
    })
}

#[cfg(test)]
mod tests;
