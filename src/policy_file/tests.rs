use super::*;

const DOCS_EXAMPLE: &str = r#"policies:
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
fn the_documented_example_parses_with_defaults_applied_field_by_field() {
    let ps = parse(DOCS_EXAMPLE).expect("valid");
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
fn a_bad_time_zone_reads_like_the_documented_error() {
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
    // Refused at its first key, before anything is expanded (that would be 10^9 nodes).
    let d = one_error(bomb);
    assert_eq!((d.line, d.column, d.message.as_str()), (1, 1, "unknown key 'a'"));
    // The same inside the policies list.
    let bomb2 = format!(
        "policies:\n  - &a {{name: x, conference_id: c, host_union_id: h, at: \"2026-12-01T09:00:00\"}}\n{}",
        "  - *a\n".repeat(300)
    );
    let es = errors(&bomb2);
    assert!(es.iter().any(|d| d.message.contains("alias")), "{es:?}");
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

// ---- hostile input (RELIABILITY.md row 8) ----

/// Every diagnostic points into `text`: its line exists (or is the one after the last, for an
/// error at the end), its column is on that line, its source line is that line, and an error about
/// a key points at a token (a key or a value), not at white space.
fn assert_located(text: &str, d: &Diagnostic) {
    assert!(!d.message.is_empty());
    let lines: Vec<&str> = yaml_lines(text).collect();
    let line = usize::try_from(d.line).unwrap_or(usize::MAX);
    assert!(
        line >= 1 && line <= lines.len() + 1,
        "line out of the text: {d:?}"
    );
    let src = lines.get(line - 1).copied().unwrap_or("");
    let col = usize::try_from(d.column).unwrap_or(usize::MAX);
    assert!(
        col >= 1 && col <= src.chars().count() + 1,
        "column out of the line: {d:?}\n{src:?}"
    );
    if let Some(shown) = &d.source_line {
        assert_eq!(shown.as_str(), src.chars().take(200).collect::<String>(), "{d:?}");
    }
    if d.key.is_some() && d.source_line.is_some() {
        let at = src.chars().nth(col - 1);
        assert!(
            at.is_some_and(|c| !c.is_whitespace()),
            "a key's error points at a token: {d:?}"
        );
    }
}

/// Parse, and check the result is either a located error or an exact acceptance. Returns the
/// parse time (reported, not judged: RELIABILITY.md has the figure).
fn hostile(text: &str) -> (Result<Vec<SourcedPolicy>, Vec<Diagnostic>>, Duration) {
    let started = std::time::Instant::now();
    let r = parse(text);
    let took = started.elapsed();
    if let Err(es) = &r {
        assert!(!es.is_empty());
        for d in es {
            assert_located(text, d);
        }
    }
    (r, took)
}

#[test]
fn a_hostile_corpus_is_rejected_with_locations_or_accepted_exactly() {
    let deep = format!("policies: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let deep_map = format!(
        "policies:\n{}",
        (0..10_000)
            .map(|i| format!("{}a:\n", " ".repeat(i % 200)))
            .collect::<String>()
    );
    let cases: Vec<(&str, String, bool)> = vec![
        ("10,000-deep flow nesting", deep, false),
        ("deep block nesting", deep_map, false),
        ("NUL bytes", "policies:\n  - name: a\u{0}b\n    conference_id: c\n".into(), false),
        ("a !!binary tag", format!("{VALID_HEAD}    at: 2030-01-01T00:00:00\n    layout: !!binary Z3JpZA==\n"), false),
        ("a custom tag", format!("{VALID_HEAD}    at: 2030-01-01T00:00:00\n    timezone: !python/object:os.system UTC\n"), false),
        ("a name with SQL", "policies:\n  - name: \"x'; DROP TABLE policies;--\"\n    conference_id: c\n    host_union_id: h\n    at: 2030-01-01T00:00:00\n".into(), false),
        ("YAML 1.1 yes", format!("{VALID_HEAD}    at: 2030-01-01T00:00:00\n    enabled: yes\n"), false),
        ("YAML 1.1 off", format!("{VALID_HEAD}    at: 2030-01-01T00:00:00\n    enabled: off\n"), false),
        ("a null host", "policies:\n  - name: a\n    conference_id: c\n    host_union_id: ~\n    at: 2030-01-01T00:00:00\n".into(), false),
        ("a list for a string", format!("{VALID_HEAD}    at: [1, 2]\n"), false),
        ("a document stream", format!("{VALID_HEAD}    at: 2030-01-01T00:00:00\n---\npolicies: []\n"), false),
        ("a merge key", format!("base: &b {{layout: grid}}\n{VALID_HEAD}    at: 2030-01-01T00:00:00\n    <<: *b\n"), false),
        ("SQL in a conference id", "policies:\n  - name: q\n    conference_id: \"a');DROP/**/TABLE/**/policies;--\"\n    host_union_id: \"h\\\"1\"\n    at: 2030-01-01T00:00:00\n".into(), true),
        ("a 'no' that is a string", "policies:\n  - name: \"no\"\n    conference_id: \"no\"\n    host_union_id: \"off\"\n    at: 2030-01-01T00:00:00\n".into(), true),
    ];
    let mut worst = Duration::ZERO;
    for (what, text, accept) in &cases {
        let (r, took) = hostile(text);
        worst = worst.max(took);
        assert_eq!(r.is_ok(), *accept, "{what}: {r:?}");
    }
    let ok = parse(&cases[12].1).expect("valid");
    assert!(
        matches!(&ok[0].policy.target, Target::Conference(c) if c.as_str() == "a');DROP/**/TABLE/**/policies;--")
    );
    assert_eq!(ok[0].policy.host_union_id.as_str(), "h\"1");
    let no = parse(&cases[13].1).expect("valid");
    assert_eq!(no[0].policy.name.as_str(), "no");
    assert_eq!(no[0].policy.host_union_id.as_str(), "off");
    eprintln!("hostile corpus: slowest parse {worst:?}");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(POLICY_KEYS.to_vec()).prop_map(str::to_owned),
            "[a-z_]{1,12}",
        ]
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
            "[ -~]{0,20}",
            any::<i64>().prop_map(|n| n.to_string()),
            Just("~".to_owned()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
            Just("2030-01-01T00:00:00".to_owned()),
            Just("\"0 9 * * MON\"".to_owned()),
        ]
    }

    fn document() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::collection::vec((key(), scalar()), 0..8), 0..4).prop_map(
            |policies| {
                let mut y = String::from("policies:\n");
                for p in policies {
                    y.push_str("  -");
                    if p.is_empty() {
                        y.push_str(" {}\n");
                    }
                    for (i, (k, v)) in p.iter().enumerate() {
                        y.push_str(if i == 0 { " " } else { "    " });
                        y.push_str(&format!("{k}: {v}\n"));
                    }
                }
                y
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn random_documents_never_panic_and_errors_are_located(doc in document()) {
            let _ = hostile(&doc);
        }

        #[test]
        fn an_unknown_key_is_reported_exactly_where_it_stands(
            n in 1usize..4,
            at in 0usize..4,
            indent_value in 1usize..4,
        ) {
            // n valid policies; an unknown key inserted into one of them at a known place.
            let at = at % n;
            let mut y = String::from("policies:\n");
            let mut want = (0, 0);
            for i in 0..n {
                y.push_str(&format!("  - name: p{i}\n    conference_id: c{i}\n    host_union_id: h\n"));
                if i == at {
                    want = (y.lines().count() as u64 + 1, 5);
                    y.push_str(&format!("    tiemzone:{}Asia/Shanghai\n", " ".repeat(indent_value)));
                }
                y.push_str("    at: 2030-01-01T00:00:00\n");
            }
            let es = parse(&y).expect_err("unknown key");
            prop_assert_eq!(es.len(), 1);
            prop_assert_eq!((es[0].line, es[0].column), want);
            prop_assert_eq!(es[0].hint.as_deref(), Some("did you mean 'timezone'?"));
            assert_located(&y, &es[0]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = hostile(&text);
        }

        #[test]
        fn valid_policies_are_accepted_exactly(
            name in "[A-Za-z0-9_-]{1,64}",
            conf in "[!-~\u{a1}-\u{2fff}]{1,40}",
            host in "[!-~]{1,40}",
        ) {
            prop_assume!(!conf.chars().any(|c| c.is_whitespace() || c.is_control()));
            let text = format!(
                "policies:\n  - name: {}\n    conference_id: {}\n    host_union_id: {}\n    at: 2030-01-01T00:00:00\n",
                serde_json::to_string(&name).unwrap_or_default(),
                serde_json::to_string(&conf).unwrap_or_default(),
                serde_json::to_string(&host).unwrap_or_default(),
            );
            let ps = parse(&text).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(ps[0].policy.name.as_str(), name.as_str());
            prop_assert!(matches!(&ps[0].policy.target, Target::Conference(c) if c.as_str() == conf));
            prop_assert_eq!(ps[0].policy.host_union_id.as_str(), host.as_str());
        }
    }
}

#[test]
fn a_cron_that_never_fires_is_a_located_error() {
    let d = one_error(&format!("{VALID_HEAD}    cron: \"0 9 31 2 *\"\n"));
    assert_eq!((d.line, d.column), (5, 11), "{d:?}");
    assert!(d.message.contains("never fires"), "{d:?}");
    assert!(d.key.as_deref().is_some_and(|k| k.ends_with(".cron")), "{d:?}");
}

#[test]
fn lines_are_counted_as_yaml_counts_them() {
    let lines: Vec<&str> = yaml_lines("a\r\nb\rc\n\nd").collect();
    assert_eq!(lines, ["a", "b", "c", "", "d"]);
    assert_eq!(yaml_lines("x\n").collect::<Vec<_>>(), ["x"]);
}

#[test]
fn durations_and_dates_beyond_their_bounds_are_located_errors() {
    let cases = [
        (
            "    at: 2030-01-01T00:00:00\n    window: 300000y\n",
            (6, 13),
            "window",
            "at most 366 days",
        ),
        (
            "    at: 2030-01-01T00:00:00\n    start_offset: 400d\n    window: 500d\n",
            (7, 13),
            "window",
            "at most 366 days",
        ),
        (
            "    at: 2030-01-01T00:00:00\n    retry: { initial_interval: 10000000y, maximum_interval: 10000000y }\n",
            (6, 12),
            "retry.initial_interval",
            "at most 1 day",
        ),
        (
            "    at: 2030-01-01T00:00:00\n    retry: { maximum_attempts: 4000000000 }\n",
            (6, 12),
            "retry.maximum_attempts",
            "from 1 to 1000",
        ),
        (
            "    at: 2030-01-01T00:00:00\n    retry: { initial_interval: 500ms }\n",
            (6, 12),
            "retry.initial_interval",
            "at least 1s",
        ),
        (
            "    at: 2030-01-01T00:00:00\n    retry: { maximum_attempts: 1001 }\n",
            (6, 12),
            "retry.maximum_attempts",
            "from 1 to 1000",
        ),
        ("    at: 9999-12-31T23:00:00\n", (5, 9), "at", "out of range"),
    ];
    for (tail, at, key, says) in cases {
        let d = one_error(&format!("{VALID_HEAD}{tail}"));
        assert_eq!((d.line, d.column), at, "{tail}: {d:?}");
        assert!(
            d.key.as_deref().is_some_and(|k| k.ends_with(key)),
            "{tail}: {d:?}"
        );
        assert!(d.message.contains(says), "{tail}: {d:?}");
    }
}

#[test]
fn verify_is_off_on_or_fields_over_the_defaults() {
    let at = "    at: 2030-01-01T00:00:00\n";
    let get = |tail: &str| {
        parse(&format!("{VALID_HEAD}{at}{tail}")).expect("valid")[0]
            .policy
            .verify
    };
    assert_eq!(get(""), Some(Verify::default()), "on by default");
    assert_eq!(get("    verify: false\n"), None);
    assert_eq!(get("    verify: true\n"), Some(Verify::default()));
    assert_eq!(
        get("    verify: { watch: 5m, video: true }\n"),
        Some(Verify {
            watch: Duration::from_secs(300),
            video: true,
            ..Verify::default()
        })
    );
    // Fields turn it on even when the defaults have it off.
    let off = PolicyDefaults {
        verify: None,
        ..PolicyDefaults::default()
    };
    let ps = parse_str(
        Path::new("policies.yaml"),
        &format!("{VALID_HEAD}{at}    verify: {{ after: 30s }}\n"),
        &off,
    )
    .expect("valid");
    assert_eq!(
        ps[0].policy.verify.map(|v| v.after),
        Some(Duration::from_secs(30))
    );
}

#[test]
fn verify_values_beyond_their_bounds_are_located_errors() {
    let at = "    at: 2030-01-01T00:00:00\n";
    for (tail, key, says) in [
        ("    verify: { after: 0s }\n", "verify.after", "from 1s to 1h"),
        ("    verify: { checks: 0 }\n", "verify.checks", "from 1 to 10"),
        ("    verify: { watch: 1s }\n", "verify.watch", "from 10s to 24h"),
        (
            "    verify: { after: 1h, checks: 10 }\n",
            "verify.checks",
            "within 24h",
        ),
    ] {
        let d = one_error(&format!("{VALID_HEAD}{at}{tail}"));
        assert_eq!(d.line, 6, "{tail}: {d:?}");
        assert!(
            d.key.as_deref().is_some_and(|k| k.ends_with(key)),
            "{tail}: {d:?}"
        );
        assert!(d.message.contains(says), "{tail}: {d:?}");
    }
    let d = one_error(&format!("{VALID_HEAD}{at}    verify: {{ aftre: 10s }}\n"));
    assert_eq!(d.line, 6, "{d:?}");
    assert!(d.message.contains("aftre"), "{d:?}");
    let d = one_error(&format!("{VALID_HEAD}{at}    verify: sometimes\n"));
    assert_eq!(d.line, 6, "{d:?}");
}

#[test]
fn alert_names_destinations_of_the_config_and_an_unknown_one_is_a_located_error() {
    let with = PolicyDefaults {
        alert_destinations: ["ops-group".to_owned(), "pager".to_owned()].into(),
        ..PolicyDefaults::default()
    };
    let at = "    at: 2030-01-01T00:00:00\n";
    let ps = parse_str(
        Path::new("policies.yaml"),
        &format!("{VALID_HEAD}{at}    alert: [pager, pager, ops-group]\n"),
        &with,
    )
    .expect("valid");
    assert_eq!(
        ps[0].policy.alert,
        Some(vec!["pager".to_owned(), "ops-group".to_owned()])
    );
    let ps = parse_str(Path::new("policies.yaml"), &format!("{VALID_HEAD}{at}"), &with).expect("valid");
    assert_eq!(ps[0].policy.alert, None, "no key: alerts.default");

    let es = parse_str(
        Path::new("policies.yaml"),
        &format!("{VALID_HEAD}{at}    alert: [pager, ops-grop]\n"),
        &with,
    )
    .expect_err("unknown destination");
    assert_eq!(es.len(), 1, "{es:#?}");
    let d = &es[0];
    assert_eq!((d.line, d.column), (6, 20), "{d:?}");
    assert!(d.key.as_deref().is_some_and(|k| k.ends_with("alert[1]")), "{d:?}");
    assert!(
        d.message.contains("unknown alert destination 'ops-grop'"),
        "{d:?}"
    );
    assert!(
        format!("{d}").contains("ops-group"),
        "a hint names the near miss: {d}"
    );

    // A config without destinations: any name is unknown, and the hint says why.
    let d = one_error(&format!("{VALID_HEAD}{at}    alert: [pager]\n"));
    assert!(format!("{d}").contains("defines no alerts.destinations"), "{d}");
}

/// The `match` example of docs/policies.md, as written there.
const MATCH_EXAMPLE: &str = r#"policies:
  - name: board-meetings
    match:
      creators: [WFBkgxxx, WFBkgyyy]   # unionIds of whoever creates the meeting (the event's creatorId)
      title: "董事会|Board"             # a regular expression on the meeting's title
    host_union_id: creator              # the meeting's creator starts the recording, or a unionId
    start_offset: 0s
    window: 20m
"#;

#[test]
fn a_match_policy_names_no_meeting_and_no_schedule() {
    let ps = parse(MATCH_EXAMPLE).expect("valid");
    let p = &ps[0].policy;
    let Target::Match(rule) = &p.target else {
        panic!("not a match policy: {:?}", p.target);
    };
    assert_eq!(p.schedule, Schedule::OnEvent);
    assert_eq!(p.host_union_id.as_str(), HOST_CREATOR);
    assert_eq!(rule.creators.len(), 2);
    assert_eq!(rule.title.as_ref().map(|t| t.as_str()), Some("董事会|Board"));
    assert_eq!(p.window, Duration::from_secs(1200));
}

#[test]
fn a_bad_title_pattern_is_reported_at_its_character() {
    let text =
        "policies:\n  - name: p\n    host_union_id: creator\n    match:\n      title: \"董事会|(Board\"\n";
    let d = one_error(text);
    assert_eq!((d.line, d.column), (5, 19), "{d}");
    assert!(d.message.contains("unclosed group"), "{d}");
    assert_eq!(d.key.as_deref(), Some("policies[0] (p).match.title"));
    // Unquoted: no quote to step over.
    let plain = "policies:\n  - name: p\n    host_union_id: creator\n    match:\n      title: a[z-a]\n";
    assert_eq!(one_error(plain).column, 16, "the range z-a");
}

#[test]
fn a_match_policy_refuses_a_meeting_a_schedule_and_an_empty_rule() {
    let text = "policies:\n  - name: p\n    host_union_id: h\n    conference_id: c\n    cron: \"0 9 * * *\"\n    match:\n      creators: [a]\n";
    let es = errors(text);
    let keys: Vec<&str> = es.iter().filter_map(|d| d.key.as_deref()).collect();
    assert_eq!(
        keys,
        ["policies[0] (p).conference_id", "policies[0] (p).cron"],
        "{es:#?}"
    );
    let empty = one_error("policies:\n  - name: p\n    host_union_id: h\n    match: {}\n");
    assert!(empty.message.contains("at least one"), "{empty}");
    let unknown = one_error("policies:\n  - name: p\n    host_union_id: h\n    match:\n      creator: [a]\n");
    assert!(unknown.message.contains("creator"), "{unknown}");
}

#[test]
fn the_creator_as_host_is_for_match_policies_only() {
    let d = one_error(
        "policies:\n  - name: p\n    conference_id: c1\n    host_union_id: creator\n    at: 2030-01-01T09:00:00\n",
    );
    assert_eq!(d.key.as_deref(), Some("policies[0] (p).host_union_id"));
    assert_eq!((d.line, d.column), (4, 20));
}

const SCHEDULED_HEAD: &str = "policies:\n  - name: s\n    schedule_conference_id: sc1\n    host_union_id: h1\n    cron: \"0 9 * * MON\"\n";

#[test]
fn auto_record_is_read_on_scheduled_meetings_with_the_creator_defaulting_to_the_host() {
    let ps = parse(&format!("{SCHEDULED_HEAD}    auto_record: {{ when: anyone }}\n")).expect("valid");
    let a = ps[0].policy.auto_record.as_ref().expect("on");
    assert_eq!(a.when, crate::domain::auto_record::When::Anyone);
    assert_eq!(a.creator_union_id.as_str(), "h1", "the host by default");
    assert_eq!(a.refresh, Duration::from_secs(3600));
    let ps = parse(&format!(
        "{SCHEDULED_HEAD}    auto_record: true\n    creator_union_id: c9\n    auto_record_refresh: 2h\n"
    ))
    .expect("valid");
    let a = ps[0].policy.auto_record.as_ref().expect("on");
    assert_eq!(
        (a.when, a.creator_union_id.as_str(), a.refresh),
        (
            crate::domain::auto_record::When::Host,
            "c9",
            Duration::from_secs(7200)
        )
    );
    assert!(
        parse(&format!("{SCHEDULED_HEAD}    auto_record: false\n")).expect("valid")[0]
            .policy
            .auto_record
            .is_none()
    );
}

#[test]
fn auto_record_off_a_scheduled_meeting_or_with_a_bad_value_is_a_located_error() {
    let d = one_error(&format!(
        "{VALID_HEAD}    at: 2026-12-01T09:00:00\n    auto_record: true\n"
    ));
    assert_eq!(
        (d.line, d.column, d.key.as_deref()),
        (6, 18, Some("policies[0] (p).auto_record"))
    );
    assert!(d.message.contains("schedule_conference_id"), "{}", d.message);
    let d = one_error(&format!("{SCHEDULED_HEAD}    auto_record: {{ when: hots }}\n"));
    assert_eq!(d.line, 6);
    assert_eq!(d.hint.as_deref(), Some("did you mean 'host'?"));
    let d = one_error(&format!("{SCHEDULED_HEAD}    creator_union_id: c9\n"));
    assert!(d.message.contains("only with auto_record"), "{}", d.message);
    let d = one_error(&format!(
        "{SCHEDULED_HEAD}    auto_record: true\n    auto_record_refresh: 0s\n"
    ));
    assert_eq!(d.line, 7);
}

#[test]
fn defaults_auto_record_reaches_scheduled_meetings_only() {
    let defaults = PolicyDefaults {
        auto_record: Some(crate::domain::auto_record::When::Cohost),
        ..PolicyDefaults::default()
    };
    let text = format!(
        "{SCHEDULED_HEAD}  - name: known\n    conference_id: c1\n    host_union_id: h1\n    at: 2026-12-01T09:00:00\n"
    );
    let ps = parse_str(Path::new("policies.yaml"), &text, &defaults).expect("valid");
    assert_eq!(
        ps[0].policy.auto_record.as_ref().map(|a| a.when),
        Some(crate::domain::auto_record::When::Cohost)
    );
    assert!(
        ps[1].policy.auto_record.is_none(),
        "a known meeting has no setting to make"
    );
}
