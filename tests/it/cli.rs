//! The command line as ops people use it: exit codes, outputs, nothing written on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tmp");
        let database = if crate::support::engine::postgres() {
            crate::support::engine::database_yaml(dir.path())
        } else {
            format!("database:\n  path: {}\n", dir.path().join("d.db").display())
        };
        let cfg = format!(
            "{database}defaults:\n  timezone: Asia/Shanghai\npolicies:\n  paths: [{}]\n",
            dir.path().join("policies").display()
        );
        std::fs::write(dir.path().join("config.yaml"), cfg).expect("config");
        std::fs::create_dir_all(dir.path().join("policies")).expect("dir");
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dingrec"))
            .arg("--config")
            .arg(self.path("config.yaml"))
            .args(args)
            .env_remove("DINGREC_CONFIG")
            .env("NO_COLOR", "1")
            .output()
            .expect("runs")
    }

    /// The database as it stands: the SQLite file's bytes, or on PostgreSQL what a write would
    /// change (`None` while it has no schema).
    fn db_bytes(&self) -> Option<Vec<u8>> {
        match crate::support::engine::url_beside(&self.path("d.db")) {
            Some(url) => {
                let out = Command::new("psql")
                    .args([
                        "--no-psqlrc",
                        "-X",
                        "-A",
                        "-t",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-c",
                        "SELECT (SELECT COUNT(*) FROM policies), (SELECT MAX(updated_at) FROM policies), \
                         (SELECT COUNT(*) FROM occurrences), (SELECT COUNT(*) FROM attempts)",
                        &url,
                    ])
                    .output()
                    .ok()?;
                out.status.success().then_some(out.stdout)
            }
            None => std::fs::read(self.path("d.db")).ok(),
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const P1: &str = "policies:\n  - name: board\n    conference_id: c1\n    host_union_id: h1\n    at: 2030-12-01T09:00:00\n  - name: weekly\n    schedule_conference_id: s1\n    host_union_id: h1\n    cron: \"0 9 * * MON\"\n    window: 20m\n";

#[test]
fn apply_then_plan_reports_no_change_and_an_edit_shows_exactly_that_field() {
    let env = Env::new();
    let f = env.write("policies/a.yaml", P1);
    let f = f.to_str().expect("utf8");
    let plan = env.run(&["plan", f]);
    assert_eq!(plan.status.code(), Some(3), "{}", stderr(&plan));
    assert!(stdout(&plan).contains("+ board (new)"));
    // On PostgreSQL too: a read-only command gives an empty database no schema.
    assert!(env.db_bytes().is_none(), "plan never creates the database");

    let apply = env.run(&["apply", f]);
    assert_eq!(apply.status.code(), Some(0), "{}", stderr(&apply));
    let before = env.run(&["policies", "--format", "json"]);
    let again = env.run(&["apply", f]);
    assert!(stdout(&again).contains("No changes"));
    let after = env.run(&["policies", "--format", "json"]);
    assert_eq!(
        stdout(&before),
        stdout(&after),
        "re-applying changes nothing, updated_at included"
    );

    let plan = env.run(&["plan", f]);
    assert_eq!(plan.status.code(), Some(0));
    assert!(stdout(&plan).contains("No changes"));

    env.write("policies/a.yaml", &P1.replace("window: 20m", "window: 25m"));
    let plan = env.run(&["plan", f]);
    assert_eq!(plan.status.code(), Some(3));
    let out = stdout(&plan);
    assert!(
        out.contains("~ weekly\n    window_ms: 1200000 -> 1500000\n"),
        "{out}"
    );
    assert!(!out.contains("board"), "{out}");
}

#[test]
fn prune_disables_what_is_gone() {
    let env = Env::new();
    let f = env.write("policies/a.yaml", P1);
    let f = f.to_str().expect("utf8");
    assert_eq!(env.run(&["apply", f]).status.code(), Some(0));
    let only_board = P1
        .split("  - name: weekly")
        .next()
        .expect("first policy")
        .to_owned();
    env.write("policies/a.yaml", &only_board);
    let plain = env.run(&["plan", f]);
    assert_eq!(
        plain.status.code(),
        Some(0),
        "without --prune nothing is removed: {}",
        stdout(&plain)
    );
    let plan = env.run(&["plan", "--prune", f]);
    assert!(stdout(&plan).contains("- weekly (disabled"), "{}", stdout(&plan));
    assert_eq!(env.run(&["apply", "--prune", f]).status.code(), Some(0));
    let list: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(&["policies", "--format", "json"]))).expect("json");
    let weekly = list
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["name"] == "weekly")
        .expect("kept, for the audit log");
    assert_eq!(weekly["enabled"], false);
}

#[test]
fn a_failing_file_in_a_folder_leaves_the_database_untouched() {
    let env = Env::new();
    env.write("policies/a.yaml", P1);
    let folder = env.path("policies");
    let folder = folder.to_str().expect("utf8");
    assert_eq!(env.run(&["apply", folder]).status.code(), Some(0));
    let before = env.db_bytes();
    env.write("policies/a.yaml", &P1.replace("window: 20m", "window: 25m"));
    env.write("policies/b.yaml", "policies:\n  - name: broken\n    conference_id: c9\n    host_union_id: h\n    at: 2030-12-01T09:00:00\n    timezone: Mars/Olympus\n");
    let apply = env.run(&["apply", folder]);
    assert_eq!(apply.status.code(), Some(2));
    let err = stderr(&apply);
    assert!(
        err.contains("b.yaml:6:15: error: unknown time zone 'Mars/Olympus'"),
        "{err}"
    );
    assert_eq!(
        env.db_bytes(),
        before,
        "nothing written, not even the valid change in a.yaml"
    );
    let plan = env.run(&["plan", env.path("policies/a.yaml").to_str().expect("utf8")]);
    assert_eq!(plan.status.code(), Some(3), "the edit is still pending");
}

#[test]
fn every_kind_of_bad_input_exits_2_with_a_located_error() {
    let env = Env::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown key",
            "policies:\n  - name: a\n    conference_id: c\n    host_union_id: h\n    at: 2030-12-01T09:00:00\n    colour: red\n",
            ":6:5: error: unknown key 'colour'",
        ),
        (
            "bad enum",
            "policies:\n  - name: a\n    conference_id: c\n    host_union_id: h\n    at: 2030-12-01T09:00:00\n    layout: tiles\n",
            ":6:13: error: unknown layout 'tiles'",
        ),
        (
            "bad cron",
            "policies:\n  - name: a\n    conference_id: c\n    host_union_id: h\n    cron: \"0 9 * *\"\n",
            ":5:11: error: cron pattern",
        ),
        (
            "duplicate name",
            "policies:\n  - name: a\n    conference_id: c\n    host_union_id: h\n    at: 2030-12-01T09:00:00\n  - name: a\n    conference_id: c\n    host_union_id: h\n    at: 2030-12-02T09:00:00\n",
            ":6:1: error: duplicate policy name 'a'",
        ),
        (
            "both targets",
            "policies:\n  - name: a\n    conference_id: c\n    schedule_conference_id: s\n    host_union_id: h\n    at: 2030-12-01T09:00:00\n",
            ":4:29: error: both conference_id and schedule_conference_id",
        ),
        (
            "neither schedule",
            "policies:\n  - name: a\n    conference_id: c\n    host_union_id: h\n",
            ":2:5: error: neither 'at'",
        ),
        (
            "window shorter than offset",
            "policies:\n  - name: a\n    conference_id: c\n    host_union_id: h\n    at: 2030-12-01T09:00:00\n    start_offset: 1h\n    window: 30m\n",
            ":7:13: error: window (30m) must be longer",
        ),
        ("empty", "", ":1:1: error: file is empty"),
        ("not YAML", "policies: [unclosed\n", "error:"),
    ];
    for (what, text, expected) in cases {
        let f = env.write("case.yaml", text);
        for cmd in ["validate", "apply"] {
            let out = env.run(&[cmd, f.to_str().expect("utf8")]);
            assert_eq!(out.status.code(), Some(2), "{what} ({cmd})");
            assert!(
                stderr(&out).contains(expected),
                "{what} ({cmd}): {}",
                stderr(&out)
            );
            assert!(!stderr(&out).contains("panicked"), "{what}");
        }
        assert!(env.db_bytes().is_none(), "{what}: nothing written");
    }
}

#[test]
fn a_ten_megabyte_garbage_file_and_an_alias_bomb_are_refused() {
    let env = Env::new();
    let garbage: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let g = env.path("garbage.yaml");
    std::fs::write(&g, garbage).expect("write");
    let out = env.run(&["validate", g.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("limited to 8 MiB"));
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    bomb.push_str("policies: *a9\n");
    let b = env.write("bomb.yaml", &bomb);
    let out = env.run(&["apply", b.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bomb.yaml:"), "{}", stderr(&out));
    assert!(env.db_bytes().is_none());
}

#[test]
fn validate_without_paths_checks_the_configured_folder_and_the_config() {
    let env = Env::new();
    env.write("policies/a.yaml", P1);
    let out = env.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok: 2 policies in 1 file"));
    env.write("config.yaml", "dingtalk:\n  rate_limt: 5\n");
    let out = env.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("rate_limt"), "{}", stderr(&out));
}

#[test]
fn run_exits_78_on_an_invalid_config() {
    let env = Env::new();
    env.write("config.yaml", "http:\n  listen: not-an-address\n");
    let out = env.run(&["run"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("http.listen"), "{}", stderr(&out));
    // Valid settings but no credentials: also a config problem.
    env.write(
        "config.yaml",
        &format!("database:\n  path: {}\n", env.path("d.db").display()),
    );
    let out = env.run(&["run"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("app_key"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2_and_help_teaches() {
    let env = Env::new();
    let out = env.run(&["history", "--state", "exploded"]);
    assert_eq!(out.status.code(), Some(2));
    let help = env.run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = stdout(&help);
    for cmd in [
        "run",
        "validate",
        "plan",
        "apply",
        "policies",
        "next",
        "history",
        "trigger",
        "migrate",
        "demo",
        "fake-dingtalk",
    ] {
        assert!(text.contains(cmd), "--help names {cmd}");
    }
    assert!(text.contains("First steps"));
}

#[test]
fn next_lists_firings_in_utc_and_local_time() {
    let env = Env::new();
    let f = env.write("policies/a.yaml", P1);
    assert_eq!(
        env.run(&["apply", f.to_str().expect("utf8")]).status.code(),
        Some(0)
    );
    let out = env.run(&[
        "next", "--policy", "weekly", "--limit", "2", "--within", "30d", "--format", "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let items = v.as_array().expect("array");
    assert_eq!(items.len(), 2);
    for it in items {
        assert_eq!(it["policy"], "weekly");
        assert_eq!(it["timezone"], "Asia/Shanghai");
        assert!(it["due_at"].as_str().expect("due").ends_with(":00:00.000Z"));
        assert!(
            it["local"].as_str().expect("local").ends_with("T09:00:00+08:00"),
            "{it}"
        );
    }
}

#[test]
fn the_schema_has_every_table_and_column_of_docs_database() {
    if !crate::support::engine::sqlite_only("PostgreSQL's schema is held to SQLite's by postgres::") {
        return;
    }
    let env = Env::new();
    assert_eq!(env.run(&["migrate"]).status.code(), Some(0));
    let expected: &[(&str, &[&str])] = &[
        (
            "policies",
            &[
                "id",
                "name",
                "conference_id",
                "schedule_conference_id",
                "host_union_id",
                "layout",
                "small_window_position",
                "cron",
                "at",
                "timezone",
                "start_offset_ms",
                "window_ms",
                "retry",
                "skip_dates",
                "enabled",
                "source",
                "created_at",
                "updated_at",
            ],
        ),
        (
            "occurrences",
            &[
                "id",
                "policy_id",
                "policy_name",
                "due_at",
                "window_ends_at",
                "conference_id",
                "state",
                "attempt_count",
                "next_attempt_at",
                "last_code",
                "trigger",
                "created_at",
                "updated_at",
            ],
        ),
        (
            "attempts",
            &[
                "id",
                "occurrence_id",
                "attempt_no",
                "started_at",
                "finished_at",
                "duration_ms",
                "conference_id",
                "http_status",
                "code",
                "message",
                "request_id",
                "outcome",
                "next_attempt_at",
            ],
        ),
        (
            "audit_log",
            &[
                "attempt_id",
                "occurrence_id",
                "policy_name",
                "due_at",
                "attempt_no",
                "started_at",
                "code",
                "outcome",
                "conference_id",
                "http_status",
                "request_id",
            ],
        ),
    ];
    for (table, cols) in expected {
        let out = Command::new("sqlite3")
            .arg(env.path("d.db"))
            .arg(format!("SELECT name FROM pragma_table_info('{table}')"))
            .output()
            .expect("sqlite3 is installed (see .ci/run)");
        let have = String::from_utf8_lossy(&out.stdout).to_string();
        let have: Vec<&str> = have.lines().collect();
        for c in *cols {
            assert!(have.contains(c), "{table}.{c} missing; have {have:?}");
        }
    }
}

#[test]
fn every_policy_file_example_in_the_readme_and_docs_validates() {
    let env = Env::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).expect("docs") {
        files.push(e.expect("entry").path());
    }
    let mut seen = 0;
    for f in files.iter().filter(|f| f.extension().is_some_and(|x| x == "md")) {
        let text = std::fs::read_to_string(f).expect("doc");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("```yaml\n") {
            let block = &rest[i + 8..];
            let end = block.find("```").expect("end of block");
            let yaml = &block[..end];
            rest = &block[end..];
            if !yaml.starts_with("policies:") {
                continue;
            }
            seen += 1;
            let file = env.write(&format!("example-{seen}.yaml"), yaml);
            let out = env.run(&["validate", file.to_str().expect("utf8")]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {yaml}\n{}",
                f.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(seen >= 3, "the policy examples of the README and docs: {seen}");
}

#[test]
fn the_readme_audit_queries_run_against_the_schema() {
    if !crate::support::engine::sqlite_only("the README's queries are written for the sqlite3 prompt") {
        return;
    }
    let env = Env::new();
    assert_eq!(env.run(&["migrate"]).status.code(), Some(0));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let statements_in = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("```sql\n") {
            let block = &rest[i + 7..];
            let end = block.find("```").expect("end of block");
            out.extend(
                block[..end]
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            rest = &block[end..];
        }
        out
    };
    let readme = statements_in("README.md");
    assert_eq!(readme.len(), 6, "the README's six audit queries");
    assert!(
        statements_in("docs/database.md").len() >= 5,
        "docs/database.md's audit queries"
    );
    let mut docs = Vec::new();
    for e in std::fs::read_dir(root.join("docs")).expect("docs") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            docs.extend(statements_in(&format!("docs/{name}")));
        }
    }
    for q in readme.iter().chain(&docs) {
        use std::io::Write as _;
        let mut child = Command::new("sqlite3")
            .arg("-bail")
            .arg(env.path("d.db"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sqlite3");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{q};\n").as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("sqlite3");
        assert!(
            out.status.success(),
            "{q}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn read_only_commands_on_a_missing_database_say_so_and_create_nothing() {
    let env = Env::new();
    // The database's folder does not exist either.
    let cfg = format!(
        "database:\n  path: {}\npolicies:\n  paths: []\n",
        env.path("nowhere/d.db").display()
    );
    env.write("config.yaml", &cfg);
    for args in [&["history"][..], &["policies"], &["next"]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("does not exist"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!env.path("nowhere").exists(), "{args:?} created the folder");
    }
    // Reading an existing database writes nothing to it.
    env.write("config.yaml", &cfg.replace("nowhere/", ""));
    assert_eq!(env.run(&["migrate"]).status.code(), Some(0));
    let before = env.db_bytes();
    for args in [&["history"][..], &["policies"], &["next"]] {
        assert_eq!(env.run(args).status.code(), Some(0), "{args:?}");
    }
    assert_eq!(env.db_bytes(), before, "a read changed the file");
}
