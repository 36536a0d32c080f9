use super::*;

const SPEC_EXAMPLE: &str = r#"policies:
  - name: weekly-all-hands               # unique; letters, digits, - and _; at most 64
    schedule_conference_id: 5f1a2b3c…    # a scheduled (recurring) meeting: the live conferenceId is looked up at fire time
    host_union_id: WFBkgxxx              # the host's unionId: only the host may start recording
    cron: "0 9 * * MON"                  # recurring: 5 or 6 fields (croner syntax, L W # allowed)
    timezone: Asia/Shanghai              # IANA name; DST gaps and overlaps handled, see below
    layout: speech                       # grid | speech | full_screen   (API field "mode")
    small_window_position: relative_right  # relative_right | float_right | float_bottom
    start_offset: 30s                    # fire this long after the meeting's start
    window: 20m                          # keep trying until start + window; also the catch-up window
    skip_dates: [2026-12-25]             # local dates on which no occurrence is made
    retry: { maximum_attempts: 50 }      # overrides, field by field
    enabled: true
  - name: board-2026-12-01
    conference_id: 61289f392xxx          # a known meeting
    host_union_id: WFBkgyyy
    at: 2026-12-01T09:00:00              # one-off, local time in `timezone` (or RFC 3339 with an offset)
"#;

fn parse(text: &str) -> Result<Vec<SourcedPolicy>, Vec<Diagnostic>> {
    parse_str(Path::new("policies.yaml"), text, &PolicyDefaults::default())
}

fn errors(text: &str) -> Vec<Diagnostic> {
    parse(text).expect_err("must be rejected")
}

fn one_error(text: &str) -> Diagnostic {
    let mut es = errors(text);
    assert_eq!(es.len(), 1, "expected one error, got: {es:#?}");
    es.remove(0)
}

const VALID_HEAD: &str = "policies:\n  - name: p\n    conference_id: c1\n    host_union_id: h1\n";

#[test]
fn the_spec_example_parses_with_defaults_applied_field_by_field() {
    let ps = parse(SPEC_EXAMPLE).expect("valid");
    assert_eq!(ps.len(), 2);
    let weekly = &ps[0].policy;
    assert_eq!(weekly.name.as_str(), "weekly-all-hands");
    assert!(matches!(&weekly.target, Target::Scheduled(s) if s.as_str() == "5f1a2b3c…"));
    assert_eq!(weekly.start_offset, Duration::from_secs(30));
    assert_eq!(weekly.window, Duration::from_secs(1200));
    assert_eq!(weekly.retry.maximum_attempts, 50);
    assert_eq!(
        weekly.retry.initial_interval,
        Duration::from_secs(2),
        "other retry fields from defaults"
    );
    assert_eq!(weekly.skip_dates.len(), 1);
    assert_eq!(ps[0].source, "policies.yaml:2");

    let board = &ps[1].policy;
    assert_eq!(board.layout, Layout::Speech, "default layout");
    assert_eq!(board.small_window_position, WindowPosition::RelativeRight);
    assert_eq!(board.timezone.name(), "Asia/Shanghai");
    assert_eq!(board.window, Duration::from_secs(1800));
    assert!(board.enabled);
    assert!(matches!(board.schedule, Schedule::At(At::Local(_))));
}

#[test]
fn an_unknown_key_is_located_with_a_hint() {
    let d = one_error(&format!(
        "{VALID_HEAD}    at: 2026-12-01T09:00:00\n    layuot: grid\n"
    ));
    assert_eq!((d.line, d.column), (6, 5));
    assert_eq!(d.message, "unknown key 'layuot'");
    assert_eq!(d.hint.as_deref(), Some("did you mean 'layout'?"));
    assert_eq!(d.headline(), "policies.yaml:6:5: error: unknown key 'layuot'");
}

#[test]
fn an_unknown_top_level_key_is_located() {
    let d = one_error("polices: []\n");
    assert_eq!((d.line, d.column), (1, 1));
    assert_eq!(d.message, "unknown key 'polices'");
    assert_eq!(d.hint.as_deref(), Some("did you mean 'policies'?"));
}

#[test]
fn a_bad_enum_value_is_located_with_a_hint() {
    let d = one_error(&format!(
        "{VALID_HEAD}    at: 2026-12-01T09:00:00\n    layout: speach\n"
    ));
    assert_eq!((d.line, d.column), (6, 13));
    assert!(d.message.starts_with("unknown layout 'speach'"), "{}", d.message);
    assert_eq!(d.hint.as_deref(), Some("did you mean 'speech'?"));
}

#[test]
fn a_bad_time_zone_reads_like_the_spec() {
    let text = "policies:\n  - name: p\n    conference_id: c1\n    host_union_id: h1\n    at: 2026-12-01T09:00:00\n    timezone: Asia/Shangai\n";
    let d = one_error(text);
    assert_eq!(
        d.headline(),
        "policies.yaml:6:15: error: unknown time zone 'Asia/Shangai'"
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean 'Asia/Shanghai'?"));
    let shown = d.to_string();
    assert!(shown.contains("6 |     timezone: Asia/Shangai"), "{shown}");
    assert!(
        shown.contains("  |               ^^^^^^^^^^^^ policies[0] (p).timezone"),
        "{shown}"
    );
}

#[test]
fn a_bad_cron_is_located() {
    let d = one_error(&format!("{VALID_HEAD}    cron: \"0 25 * * *\"\n"));
    assert_eq!((d.line, d.column), (5, 11));
    assert!(d.message.contains("invalid cron pattern"), "{}", d.message);
}

#[test]
fn duplicate_names_are_errors_across_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    std::fs::write(&a, format!("{VALID_HEAD}    at: 2026-12-01T09:00:00\n")).expect("write");
    std::fs::write(&b, format!("{VALID_HEAD}    at: 2026-12-02T09:00:00\n")).expect("write");
    let es = load_paths(&[dir.path().to_owned()], &PolicyDefaults::default()).expect_err("duplicate");
    assert_eq!(es.len(), 1);
    assert_eq!(es[0].file, b);
    assert_eq!(es[0].line, 2);
    assert!(es[0].message.contains("duplicate policy name 'p'"));
}

#[test]
fn a_duplicate_key_is_located() {
    let d = one_error(&format!(
        "{VALID_HEAD}    at: 2026-12-01T09:00:00\n    at: 2026-12-02T09:00:00\n"
    ));
    assert_eq!(d.line, 6);
    assert!(d.message.contains("duplicate"), "{}", d.message);
}

#[test]
fn both_or_neither_target_is_an_error() {
    let d = one_error(
        "policies:\n  - name: p\n    conference_id: c1\n    schedule_conference_id: s1\n    host_union_id: h\n    at: 2026-12-01T09:00:00\n",
    );
    assert_eq!((d.line, d.column), (4, 29));
    assert!(d.message.contains("exactly one"));
    let d = one_error("policies:\n  - name: p\n    host_union_id: h\n    at: 2026-12-01T09:00:00\n");
    assert_eq!((d.line, d.column), (2, 5));
    assert!(
        d.message
            .contains("neither conference_id nor schedule_conference_id")
    );
}

#[test]
fn both_or_neither_schedule_is_an_error() {
    let d = one_error(&format!(
        "{VALID_HEAD}    at: 2026-12-01T09:00:00\n    cron: \"0 9 * * *\"\n"
    ));
    assert_eq!((d.line, d.column), (5, 9));
    assert!(d.message.contains("both 'at' and 'cron'"));
    let d = one_error(VALID_HEAD);
    assert!(d.message.contains("neither 'at'"), "{}", d.message);
}

#[test]
fn a_window_shorter_than_the_offset_is_an_error() {
    let d = one_error(&format!(
        "{VALID_HEAD}    at: 2026-12-01T09:00:00\n    start_offset: 10m\n    window: 5m\n"
    ));
    assert_eq!((d.line, d.column), (7, 13));
    assert!(
        d.message
            .contains("window (5m) must be longer than start_offset (10m)"),
        "{}",
        d.message
    );
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let text = "policies:\n  - name: p\n    conference_id: c1\n    host_union_id: h1\n    at: 2026-12-01T09:00:00\n    timezone: Mars/Olympus\n    colour: red\n  - name: q\n    conference_id: c2\n    host_union_id: h2\n    cron: \"61 * * * *\"\n    layout: tiles\n";
    let es = errors(text);
    let lines: Vec<u64> = es.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![6, 7, 11, 12], "{es:#?}");
}

#[test]
fn an_empty_file_is_an_error() {
    assert!(one_error("").message.contains("file is empty"));
    assert!(
        one_error("# only a comment\n\n")
            .message
            .contains("file is empty")
    );
}

#[test]
fn a_file_that_is_not_yaml_gets_a_located_error() {
    let d = one_error("policies:\n  - name: [unclosed\n");
    assert!(d.line >= 2, "{d:?}");
    let d = one_error("just a sentence, not a mapping\n");
    assert_eq!(d.line, 1);
}

#[test]
fn a_ten_megabyte_garbage_file_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("garbage.yaml");
    let garbage: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&f, garbage).expect("write");
    let es = load_paths(std::slice::from_ref(&f), &PolicyDefaults::default()).expect_err("refused");
    assert_eq!(es.len(), 1);
    assert!(es[0].message.contains("limited to 8 MiB"), "{}", es[0].message);
}

#[test]
fn invalid_utf8_is_located() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, b"policies:\n  - name: a\xff\n").expect("write");
    let es = load_paths(&[f], &PolicyDefaults::default()).expect_err("refused");
    assert_eq!((es[0].line, es[0].column), (2, 12));
    assert!(es[0].message.contains("UTF-8"));
}

#[test]
fn an_alias_bomb_is_refused() {
    let bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]\npolicies: *i\n";
    let started = std::time::Instant::now();
    let d = one_error(bomb);
    assert!(d.line >= 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "must stop early, not expand"
    );
    // The same inside the policies list.
    let bomb2 = format!(
        "policies:\n  - &a {{name: x, conference_id: c, host_union_id: h, at: \"2026-12-01T09:00:00\"}}\n{}",
        "  - *a\n".repeat(300)
    );
    assert!(!errors(&bomb2).is_empty());
}

#[test]
fn yaml_1_1_booleans_are_not_booleans() {
    let d = one_error(&format!(
        "{VALID_HEAD}    at: 2026-12-01T09:00:00\n    enabled: no\n"
    ));
    assert_eq!(d.line, 6);
    let ps = parse(&format!(
        "{VALID_HEAD}    at: 2026-12-01T09:00:00\n    enabled: false\n"
    ))
    .expect("valid");
    assert!(!ps[0].policy.enabled);
}
