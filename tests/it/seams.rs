//! Where two documented things meet (RELIABILITY.md, "Seams"): `apply` beside the daemon's own
//! policy folder, secrets from the environment beside the config file, versions beside read-only
//! commands. Each test here failed before its fix.

use std::path::Path;
use std::time::Duration;

use crate::support::daemon::{Daemon, cli, write_config};
use crate::support::{HANG, fake, wall};
use dingrec::fake::Scenario;

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `dingrec policies --format json` as (name, enabled, source).
fn policies(config: &Path) -> Vec<(String, bool, String)> {
    let v = json(
        &cli(config, &["policies", "--format", "json"])
            .output()
            .expect("policies"),
    );
    v.as_array()
        .expect("array")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["enabled"].as_bool().unwrap_or_default(),
                p["source"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn enabled(config: &Path, name: &str) -> Option<bool> {
    policies(config)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, e, _)| e)
}

fn entry(name: &str) -> String {
    let at = (wall() + chrono::Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!("  - name: {name}\n    conference_id: conf-{name}\n    host_union_id: host-1\n    at: \"{at}\"\n")
}

async fn until(what: &str, daemon: &Daemon, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {HANG:?}\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The README's workflow: `dingrec apply team.yaml`, then the daemon with the default config
/// (`policies.paths` a folder, `prune: true`) and that folder empty. The applied policy stays
/// enabled; the daemon prunes only what came from its own folder; a folder emptied under it
/// changes nothing and raises `policy_files_empty`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_policy_survives_the_daemons_own_folder_and_an_emptied_folder_changes_nothing() {
    let f = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    // An alert destination, so that the alert has a row (delivery to a closed port fails: fine).
    std::fs::write(dir.path().join("hook_secret"), "s3cret\n").expect("secret");
    let config = write_config(
        dir.path(),
        &f.base_url(),
        &format!(
            "alerts:\n  destinations:\n    pager:\n      type: webhook\n      url: http://127.0.0.1:9/hook\n      secret_file: {}\n  default: [pager]\n",
            dir.path().join("hook_secret").display()
        ),
    );
    let team = dir.path().join("team.yaml");
    std::fs::write(&team, format!("policies:\n{}", entry("board"))).expect("team");
    let out = cli(&config, &["apply", &team.to_string_lossy()])
        .output()
        .expect("apply");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let daemon = Daemon::spawn(&config, &[]);
    daemon.wait_http(HANG).await;
    let ps = policies(&config);
    assert_eq!(ps.len(), 1);
    assert!(
        ps[0].1,
        "the applied policy is disabled at start:\n{}",
        daemon.stderr()
    );
    assert!(
        ps[0].2.starts_with(&team.to_string_lossy().into_owned()),
        "`policies` names the file that owns it: {ps:?}"
    );

    // A policy of the daemon's own folder is applied on SIGHUP, beside the other.
    let folder = dir.path().join("policies");
    std::fs::write(folder.join("f.yaml"), format!("policies:\n{}", entry("weekly"))).expect("f");
    daemon.signal("HUP");
    until("the folder's policy applied", &daemon, || {
        enabled(&config, "weekly") == Some(true)
    })
    .await;

    // The folder emptied (a failed mount, a wiped deploy): nothing changes, an ERROR and an alert.
    std::fs::remove_file(folder.join("f.yaml")).expect("rm");
    daemon.signal("HUP");
    until("the refusal logged", &daemon, || {
        daemon.stderr().contains("hold no policy")
    })
    .await;
    assert!(daemon.stderr().contains("ERROR"), "{}", daemon.stderr());
    assert_eq!(
        enabled(&config, "weekly"),
        Some(true),
        "an empty folder disabled its policy"
    );
    assert_eq!(enabled(&config, "board"), Some(true));
    let alerts = json(
        &cli(&config, &["alerts", "--format", "json"])
            .output()
            .expect("alerts"),
    );
    assert!(
        alerts
            .as_array()
            .expect("array")
            .iter()
            .any(|a| a["event"] == "policy_files_empty"),
        "no policy_files_empty alert: {alerts}"
    );
    let (_, ready) = daemon.get("/readyz").await.expect("readyz");
    assert!(
        ready.contains("hold no policy"),
        "/readyz shows the refusal: {ready}"
    );

    // Another policy in the folder: the folder's old one is pruned (it is the daemon's), the
    // applied one is not.
    std::fs::write(folder.join("g.yaml"), format!("policies:\n{}", entry("daily"))).expect("g");
    daemon.signal("HUP");
    until("the folder's old policy pruned", &daemon, || {
        enabled(&config, "weekly") == Some(false)
    })
    .await;
    assert_eq!(enabled(&config, "daily"), Some(true));
    assert_eq!(
        enabled(&config, "board"),
        Some(true),
        "the daemon pruned a policy it does not own"
    );
}

/// `apply --prune` of files with no policy at all is refused unless `--allow-empty`; `plan`
/// names the source of what a prune would disable.
#[test]
fn apply_prune_of_no_policy_needs_allow_empty_and_plan_names_what_it_would_disable() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    let team = dir.path().join("team.yaml");
    std::fs::write(&team, format!("policies:\n{}", entry("board"))).expect("team");
    let team = team.to_string_lossy().into_owned();
    assert_eq!(
        cli(&config, &["apply", &team])
            .output()
            .expect("apply")
            .status
            .code(),
        Some(0)
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    let empty = empty.to_string_lossy().into_owned();
    let plan = cli(&config, &["plan", "--prune", &empty]).output().expect("plan");
    assert_eq!(plan.status.code(), Some(3));
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("- board (disabled") && text.contains(&format!("from {team}:")),
        "{text}"
    );

    let refused = cli(&config, &["apply", "--prune", &empty])
        .output()
        .expect("apply");
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--allow-empty"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        enabled(&config, "board"),
        Some(true),
        "a refused apply changed something"
    );

    let allowed = cli(&config, &["apply", "--prune", "--allow-empty", &empty])
        .output()
        .expect("apply");
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_eq!(enabled(&config, "board"), Some(false));
}
