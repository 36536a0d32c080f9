//! dingrec's benchmark: one command, real processes on loopback.
//!
//!     cargo run --release -p dingrec-bench            # everything; writes BENCHMARKS.md
//!     cargo run --release -p dingrec-bench -- --smoke # seconds long (CI), prints only
//!     cargo run --release -p dingrec-bench -- --burst 10000 | --paced 10000 2000 | --monday
//!                                             | --pg-burst 10000 3 (N, daemons on PostgreSQL)
//!                                                     # one scenario, printed (for tuning)
//!
//! dingrec runs as its real release binary (`dingrec run`) against the fake DingTalk as its own
//! process (`dingrec fake-dingtalk`, answering success at once), with a real SQLite file: the
//! daemon's whole path, planner → dispatcher → client → attempt rows. Figures come from the
//! database the daemon wrote, the fake's request log, and /proc. The tokio-cron-scheduler baseline
//! runs in a child process of this binary (`--baseline N`), so its memory is its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use sqlx::Row;

type R<T> = Result<T, String>;

fn e<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |err| format!("{what}: {err}")
}

#[allow(clippy::disallowed_methods)]
fn now() -> DateTime<Utc> {
    Utc::now()
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

// ---------- processes ----------

fn dingrec_bin() -> R<PathBuf> {
    let exe = std::env::current_exe().map_err(e("current exe"))?;
    let dir = exe.parent().ok_or("no exe dir")?;
    let bin = dir.join("dingrec");
    // Build the daemon's release binary next to this one (cargo run built only the bench).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "dingrec",
            "--bin",
            "dingrec",
        ])
        .status()
        .map_err(e("cargo build"))?;
    if !st.success() || !bin.exists() {
        return Err(format!("cannot build {}", bin.display()));
    }
    Ok(bin)
}

fn free_port() -> R<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(e("free port"))
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn term(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = http()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let s = r.status().as_u16();
    Some((s, r.text().await.unwrap_or_default()))
}

struct Fake {
    _p: Proc,
    url: String,
}

async fn fake(bin: &Path, dir: &Path) -> R<Fake> {
    fake_with(bin, dir, "unknown_conferences: live\n").await
}

async fn fake_with(bin: &Path, dir: &Path, scenario_yaml: &str) -> R<Fake> {
    let port = free_port()?;
    let scenario = dir.join("scenario.yaml");
    std::fs::write(&scenario, scenario_yaml).map_err(e("scenario"))?;
    let p = Command::new(bin)
        .args([
            "fake-dingtalk",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--scenario",
        ])
        .arg(&scenario)
        .env_remove("DINGREC_CONFIG")
        .stderr(Stdio::null())
        .spawn()
        .map_err(e("fake"))?;
    let url = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(10);
    while get(&format!("{url}/_fake/stats")).await.is_none() {
        if Instant::now() > until {
            return Err("the fake did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Fake { _p: Proc(p), url })
}

struct Daemon {
    p: Proc,
}

fn write_config(dir: &Path, fake_url: &str, rate_limit: u32, synchronous: &str) -> R<(PathBuf, u16)> {
    let database = format!(
        "database:\n  path: {}\n  synchronous: {synchronous}\n",
        dir.join("dingrec.db").display()
    );
    write_config_as(dir, "config.yaml", &database, fake_url, rate_limit)
}

/// A config named `name` in `dir` with the `database:` lines given, listening on a port of its own.
fn write_config_as(
    dir: &Path,
    name: &str,
    database: &str,
    fake_url: &str,
    rate_limit: u32,
) -> R<(PathBuf, u16)> {
    let port = free_port()?;
    let cfg = format!(
        "{database}dingtalk:\n  base_url: {fake_url}\n  app_key: bench\n  rate_limit: {rate_limit}\nhttp:\n  listen: 127.0.0.1:{port}\npolicies:\n  paths: []\ndefaults:\n  timezone: UTC\n  window: 30m\n  verify: false\nlog:\n  level: warn\n"
    );
    let path = dir.join(name);
    std::fs::write(&path, cfg).map_err(e("config"))?;
    Ok((path, port))
}

fn dingrec(bin: &Path, cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.arg("--config")
        .arg(cfg)
        .args(args)
        .env_remove("DINGREC_CONFIG")
        .env("DINGREC_DINGTALK__APP_SECRET", "bench-secret");
    c
}

async fn start_daemon(bin: &Path, cfg: &Path, port: u16) -> R<(Daemon, Duration)> {
    let started = Instant::now();
    let p = dingrec(bin, cfg, &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(e("dingrec run"))?;
    let d = Daemon { p: Proc(p) };
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((200, _)) = get(&format!("http://127.0.0.1:{port}/readyz")).await {
            return Ok((d, started.elapsed()));
        }
        if Instant::now() > until {
            return Err("the daemon did not become ready".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One-off policies, `per_file` to a file (the 8 MiB file limit).
fn write_oneoffs(dir: &Path, n: usize, at: DateTime<Utc>) -> R<PathBuf> {
    let pdir = dir.join("policies");
    std::fs::create_dir_all(&pdir).map_err(e("policies dir"))?;
    let at = rfc(at);
    for (f, chunk) in (0..n).collect::<Vec<_>>().chunks(10_000).enumerate() {
        let mut y = String::with_capacity(chunk.len() * 120);
        y.push_str("policies:\n");
        for i in chunk {
            y.push_str(&format!("  - name: p{i:06}\n    conference_id: conf-{i:06}\n    host_union_id: host\n    at: \"{at}\"\n"));
        }
        std::fs::write(pdir.join(format!("p{f:03}.yaml")), y).map_err(e("policies"))?;
    }
    Ok(pdir)
}

fn write_crons(dir: &Path, n: usize) -> R<PathBuf> {
    let pdir = dir.join("policies");
    std::fs::create_dir_all(&pdir).map_err(e("policies dir"))?;
    for (f, chunk) in (0..n).collect::<Vec<_>>().chunks(10_000).enumerate() {
        let mut y = String::from("policies:\n");
        for i in chunk {
            // Yearly on 1 January at a minute spread over the day: nothing due during the run.
            y.push_str(&format!(
                "  - name: c{i:06}\n    conference_id: conf-{i:06}\n    host_union_id: host\n    cron: \"{} {} 1 1 *\"\n",
                i % 60,
                (i / 60) % 24
            ));
        }
        std::fs::write(pdir.join(format!("c{f:03}.yaml")), y).map_err(e("policies"))?;
    }
    Ok(pdir)
}

fn apply(bin: &Path, cfg: &Path, pdir: &Path) -> R<Duration> {
    let t = Instant::now();
    let out = dingrec(bin, cfg, &["apply", pdir.to_str().ok_or("utf8")?])
        .output()
        .map_err(e("apply"))?;
    if !out.status.success() {
        return Err(format!("apply failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(t.elapsed())
}

async fn pool(dir: &Path) -> R<sqlx::SqlitePool> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("dingrec.db"))
        .read_only(true);
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(e("open db"))
}

async fn scalar(pool: &sqlx::SqlitePool, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .map(|r| r.get::<i64, _>(0))
        .unwrap_or(-1)
}

// ---------- statistics ----------

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Clone, Copy)]
struct Agg {
    med: f64,
    min: f64,
    max: f64,
}

fn agg(v: &[f64]) -> Agg {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    Agg {
        med: pct(&s, 50.0),
        min: s.first().copied().unwrap_or(f64::NAN),
        max: s.last().copied().unwrap_or(f64::NAN),
    }
}

impl std::fmt::Display for Agg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = |x: f64| {
            if x.abs() >= 100.0 {
                format!("{x:.0}")
            } else if x.abs() >= 10.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.2}")
            }
        };
        write!(f, "{} ({}–{})", p(self.med), p(self.min), p(self.max))
    }
}

// ---------- scenarios ----------

#[derive(Debug, Default, Clone)]
struct Burst {
    total_s: f64,
    per_s: f64,
    /// Lateness of StartCloudRecord's arrival at the fake (its request log) after the due instant.
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The p50 of the first 100 arrivals.
    first100_p50_ms: f64,
    /// The first arrival.
    first_ms: f64,
    /// The p50 of the first 100 `sent_at` (dingrec's clock just before the request), for
    /// telling the daemon's time from the network's and the fake's.
    first100_sent_p50_ms: f64,
    /// The claim's lateness (the intent row's `started_at` − due): dingrec's decision, not the call.
    claim_p50_ms: f64,
    rss_mb: f64,
    attempts: i64,
    succeeded: i64,
    early: i64,
    fake_starts: i64,
}

fn lead_for(n: usize) -> Duration {
    Duration::from_secs(3 + (n as u64 / 4_000))
}

async fn burst(bin: &Path, n: usize, rate: u32, synchronous: &str) -> R<Burst> {
    let dir = tempfile::tempdir().map_err(e("tmp"))?;
    let f = fake(bin, dir.path()).await?;
    let (cfg, port) = write_config(dir.path(), &f.url, rate, synchronous)?;
    let due = now() + TimeDelta::from_std(lead_for(n)).unwrap_or_default() + TimeDelta::seconds(2);
    let due = DateTime::from_timestamp(due.timestamp(), 0).ok_or("time")?;
    let pdir = write_oneoffs(dir.path(), n, due)?;
    apply(bin, &cfg, &pdir)?;
    let (d, _) = start_daemon(bin, &cfg, port).await?;
    let db = pool(dir.path()).await?;
    let deadline =
        Instant::now() + lead_for(n) + Duration::from_secs(180 + (n as u64 * 2 / rate.max(1) as u64));
    loop {
        let planned = scalar(&db, "SELECT COUNT(*) FROM occurrences").await;
        let done = scalar(&db, "SELECT COUNT(*) FROM attempts WHERE outcome IS NOT NULL").await;
        if planned == n as i64 && done == n as i64 {
            break;
        }
        if now() < due && planned < n as i64 && now() + TimeDelta::milliseconds(200) > due {
            eprintln!("  warning: only {planned} of {n} planned at the due time");
        }
        if Instant::now() > deadline {
            return Err(format!("burst {n}: only {done} attempts recorded"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss = status_kb(d.p.pid(), "VmHWM:") as f64 / 1024.0;
    // The claim's lateness, for comparison: when dingrec decided, before any call.
    let mut claims: Vec<f64> = sqlx::query(
        "SELECT (julianday(a.started_at) - julianday(o.due_at)) * 86400000.0 AS late \
         FROM attempts a JOIN occurrences o ON o.id = a.occurrence_id WHERE a.attempt_no = 1",
    )
    .fetch_all(&db)
    .await
    .map_err(e("claim lateness"))?
    .iter()
    .map(|r| r.get::<f64, _>(0))
    .collect();
    claims.sort_by(|a, b| a.total_cmp(b));
    let first100_sent: Vec<f64> = sqlx::query(
        "SELECT (julianday(a.sent_at) - julianday(o.due_at)) * 86400000.0 AS late \
         FROM attempts a JOIN occurrences o ON o.id = a.occurrence_id WHERE a.attempt_no = 1 \
         ORDER BY a.sent_at LIMIT 100",
    )
    .fetch_all(&db)
    .await
    .map_err(e("sent lateness"))?
    .iter()
    .map(|r| r.get::<f64, _>(0))
    .collect();
    let arr = arrivals(&f.url, due).await?;
    let span = sqlx::query(
        "SELECT (julianday(MAX(finished_at)) - julianday(?)) * 86400.0, \
         (julianday(MAX(finished_at)) - julianday(MIN(started_at))) * 86400.0 FROM attempts",
    )
    .bind(rfc(due))
    .fetch_one(&db)
    .await
    .map_err(e("span"))?;
    let total: f64 = span.get(0);
    let active: f64 = span.get(1);
    let out = Burst {
        total_s: total,
        per_s: n as f64 / active.max(1e-9),
        first100_sent_p50_ms: pct(&first100_sent, 50.0),
        claim_p50_ms: pct(&claims, 50.0),
        rss_mb: rss,
        attempts: scalar(&db, "SELECT COUNT(*) FROM attempts").await,
        succeeded: scalar(&db, "SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded'").await,
        ..arr
    };
    db.close().await;
    d.p.term();
    Ok(out)
}

/// A PostgreSQL cluster for the bench: `TEST_POSTGRES_URL`'s, or a throwaway one started with
/// `scripts/pg` (stopped when dropped).
struct Cluster {
    url: String,
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    fn start() -> R<Cluster> {
        if let Ok(url) = std::env::var("TEST_POSTGRES_URL") {
            return Ok(Cluster { url, dir: None });
        }
        let dir = tempfile::tempdir().map_err(e("tmp"))?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg");
        let out = Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .output()
            .map_err(e("scripts/pg"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot start a PostgreSQL cluster (apt-get install postgresql): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok(Cluster { url, dir: Some(dir) })
    }

    /// A `database.url` on a new, empty schema of the cluster.
    async fn fresh(&self, name: &str) -> R<String> {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(&self.url)
            .await
            .map_err(e("connect to PostgreSQL"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        )))
        .execute(&mut c)
        .await
        .map_err(e("schema"))?;
        let _ = c.close().await;
        let sep = if self.url.contains('?') { '&' } else { '?' };
        Ok(format!("{}{sep}options=-c%20search_path%3D{name}", self.url))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg");
            let _ = Command::new(script).arg("stop").arg(dir.path()).status();
        }
    }
}

/// The burst on PostgreSQL with `daemons` daemons sharing the database: what [`burst`] measures,
/// the peak RSS being the largest daemon's, and how many calls each daemon made.
async fn pg_burst(bin: &Path, cluster: &Cluster, n: usize, daemons: usize) -> R<(Burst, Vec<i64>)> {
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = tempfile::tempdir().map_err(e("tmp"))?;
    let f = fake(bin, dir.path()).await?;
    let schema = format!(
        "bench_{}_{}",
        std::process::id(),
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let url = cluster.fresh(&schema).await?;
    let database = format!("database:\n  url: \"{url}\"\n");
    let mut configs = Vec::new();
    for k in 0..daemons {
        configs.push(write_config_as(
            dir.path(),
            &format!("config-{k}.yaml"),
            &database,
            &f.url,
            0,
        )?);
    }
    let due = now() + TimeDelta::from_std(lead_for(n)).unwrap_or_default() + TimeDelta::seconds(2);
    let due = DateTime::from_timestamp(due.timestamp(), 0).ok_or("time")?;
    let pdir = write_oneoffs(dir.path(), n, due)?;
    apply(bin, &configs[0].0, &pdir)?;
    let mut ds = Vec::new();
    for (cfg, port) in &configs {
        ds.push(start_daemon(bin, cfg, *port).await?.0);
    }
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .map_err(e("connect"))?;
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&db)
                .await
                .unwrap_or(-1)
        }
    };
    let deadline = Instant::now() + lead_for(n) + Duration::from_secs(180);
    loop {
        let done = count("SELECT COUNT(*) FROM attempts WHERE outcome IS NOT NULL").await;
        if done == n as i64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("PostgreSQL burst {n}: only {done} attempts recorded"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss = ds
        .iter()
        .map(|d| status_kb(d.p.pid(), "VmHWM:") as f64 / 1024.0)
        .fold(0.0, f64::max);
    let ms_after_due = |sql: &'static str| {
        let db = db.clone();
        async move {
            let mut v: Vec<f64> = sqlx::query_scalar::<_, f64>(sql)
                .fetch_all(&db)
                .await
                .map_err(e("lateness"))?;
            v.sort_by(|a, b| a.total_cmp(b));
            R::Ok(v)
        }
    };
    let claims = ms_after_due(
        "SELECT EXTRACT(EPOCH FROM (a.started_at - o.due_at))::float8 * 1000 \
         FROM attempts a JOIN occurrences o ON o.id = a.occurrence_id WHERE a.attempt_no = 1",
    )
    .await?;
    let first100_sent = ms_after_due(
        "SELECT EXTRACT(EPOCH FROM (a.sent_at - o.due_at))::float8 * 1000 \
         FROM attempts a JOIN occurrences o ON o.id = a.occurrence_id WHERE a.attempt_no = 1 \
         ORDER BY a.sent_at LIMIT 100",
    )
    .await?;
    let arr = arrivals(&f.url, due).await?;
    let (total, active): (f64, f64) = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM (MAX(finished_at) - $1))::float8, \
         EXTRACT(EPOCH FROM (MAX(finished_at) - MIN(started_at)))::float8 FROM attempts",
    )
    .bind(due)
    .fetch_one(&db)
    .await
    .map_err(e("span"))?;
    let shares: Vec<i64> =
        sqlx::query_scalar("SELECT COUNT(*) FROM attempts GROUP BY instance ORDER BY COUNT(*) DESC")
            .fetch_all(&db)
            .await
            .map_err(e("shares"))?;
    let out = Burst {
        total_s: total,
        per_s: n as f64 / active.max(1e-9),
        first100_sent_p50_ms: pct(&first100_sent, 50.0),
        claim_p50_ms: pct(&claims, 50.0),
        rss_mb: rss,
        attempts: count("SELECT COUNT(*) FROM attempts").await,
        succeeded: count("SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded'").await,
        ..arr
    };
    db.close().await;
    for d in ds {
        d.p.term();
    }
    Ok((out, shares))
}

/// The burst's figures taken at the fake: each StartCloudRecord's arrival after the due instant,
/// and the calls it counted.
async fn arrivals(fake_url: &str, due: DateTime<Utc>) -> R<Burst> {
    let arrivals = start_arrivals(fake_url).await?;
    let due_ms = due.timestamp_millis();
    let lates: Vec<f64> = arrivals.iter().map(|(_, at)| (*at - due_ms) as f64).collect();
    let mut first100: Vec<f64> = lates.iter().take(100).copied().collect();
    first100.sort_by(|a, b| a.total_cmp(b));
    let mut sorted = lates;
    sorted.sort_by(|a, b| a.total_cmp(b));
    let stats = get(&format!("{fake_url}/_fake/stats"))
        .await
        .map(|x| x.1)
        .unwrap_or_default();
    let fake_starts = serde_json::from_str::<serde_json::Value>(&stats)
        .ok()
        .and_then(|v| v["start_calls"].as_i64())
        .unwrap_or(-1);
    Ok(Burst {
        p50_ms: pct(&sorted, 50.0),
        p99_ms: pct(&sorted, 99.0),
        max_ms: sorted.last().copied().unwrap_or(f64::NAN),
        first100_p50_ms: pct(&first100, 50.0),
        first_ms: first100.first().copied().unwrap_or(f64::NAN),
        early: sorted.iter().filter(|l| **l < 0.0).count() as i64,
        fake_starts,
        ..Burst::default()
    })
}

/// StartCloudRecord arrivals at the fake, in arrival order: (conference id, epoch ms).
async fn start_arrivals(fake_url: &str) -> R<Vec<(String, i64)>> {
    let body = get(&format!("{fake_url}/_fake/starts")).await.ok_or("starts")?.1;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(e("starts json"))?;
    let mut out: Vec<(String, i64)> = v
        .as_array()
        .ok_or("starts array")?
        .iter()
        .filter_map(|r| Some((r["id"].as_str()?.to_owned(), r["at_ms"].as_i64()?)))
        .collect();
    out.sort_by_key(|(_, at)| *at);
    Ok(out)
}

/// "09:00 Monday": 10,000 policies, 1,000 of them due at one instant, `rate_limit: 20`; 5 % of the
/// meetings answer `systemError` once, 2 % are throttled once (retries after 2 s).
#[derive(Debug)]
struct Monday {
    meetings: usize,
    succeeded: i64,
    /// Confirmed recording by a start check (`verified_at`), and the checks made.
    confirmed: i64,
    checks: usize,
    /// Most calls (starts and checks) in any one second (sliding).
    max_calls_any_second: usize,
    /// Meetings with two successful starts.
    twice: usize,
    /// Most starts in any one second (sliding), and in each full second from the first start:
    /// the fewest and the most.
    max_any_second: usize,
    min_full_second: usize,
    max_full_second: usize,
    /// First attempts that arrived out of due (claim) order.
    out_of_order: usize,
    retries: usize,
    /// The most first attempts any retry waited behind after it came due.
    worst_retry_wait: usize,
    /// (k, arrival of the k-th meeting's first call after due (s), ideal k/20 s).
    kth: Vec<(usize, f64, f64)>,
}

async fn monday(bin: &Path) -> R<Monday> {
    const N: usize = 1_000;
    const RATE: u32 = 20;
    let dir = tempfile::tempdir().map_err(e("tmp"))?;
    // Every meeting is real (it records when started, so the start checks find it recording).
    let mut scenario = String::from("unknown_conferences: live\nmeetings:\n");
    for i in 0..N {
        scenario.push_str(&format!("  - conference_id: m{i:04}\n"));
        let answer = match (i % 20, i % 50) {
            (7, _) => "systemError",
            (_, 13) => "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
            _ => continue,
        };
        scenario.push_str(&format!("    script: [{{answer: \"{answer}\", times: 1}}]\n"));
    }
    let f = fake_with(bin, dir.path(), &scenario).await?;
    let (cfg, port) = write_config(dir.path(), &f.url, RATE, "full")?;
    let due = now() + TimeDelta::seconds(25);
    let due = DateTime::from_timestamp(due.timestamp(), 0).ok_or("time")?;
    let pdir = write_crons(dir.path(), 9_000)?;
    let mut y = String::from("policies:\n");
    for i in 0..N {
        y.push_str(&format!(
            "  - name: m{i:04}\n    conference_id: m{i:04}\n    host_union_id: host\n    at: \"{}\"\n    retry: {{ initial_interval: 2s, maximum_interval: 2s, maximum_attempts: 5 }}\n    verify: {{ after: 15s, checks: 1 }}\n",
            rfc(due)
        ));
    }
    std::fs::write(pdir.join("monday.yaml"), y).map_err(e("policies"))?;
    apply(bin, &cfg, &pdir)?;
    let (d, _) = start_daemon(bin, &cfg, port).await?;
    let db = pool(dir.path()).await?;
    // Starts, then the checks (which wait until no start is due): twice N calls at RATE.
    let deadline = Instant::now() + Duration::from_secs(25 + 4 * N as u64 / RATE as u64 + 60);
    loop {
        let finished = scalar(
            &db,
            "SELECT COUNT(*) FROM occurrences WHERE policy_name LIKE 'm%' AND state NOT IN ('scheduled', 'running', 'retry_wait', 'verifying')",
        )
        .await;
        if finished == N as i64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("09:00 Monday: only {finished} of {N} meetings final"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let succeeded = scalar(
        &db,
        "SELECT COUNT(*) FROM occurrences WHERE policy_name LIKE 'm%' AND state = 'succeeded'",
    )
    .await;
    let confirmed = scalar(
        &db,
        "SELECT COUNT(*) FROM occurrences WHERE policy_name LIKE 'm%' AND verified_at IS NOT NULL",
    )
    .await;
    // Each retried meeting's retry due time, from its first attempt.
    let retry_due: std::collections::HashMap<String, i64> = sqlx::query(
        "SELECT conference_id, next_attempt_at FROM attempts WHERE attempt_no = 1 AND next_attempt_at IS NOT NULL",
    )
    .fetch_all(&db)
    .await
    .map_err(e("retries"))?
    .iter()
    .filter_map(|r| {
        let t = DateTime::parse_from_rfc3339(r.get::<&str, _>(1)).ok()?;
        Some((r.get::<String, _>(0), t.timestamp_millis()))
    })
    .collect();
    db.close().await;
    d.p.term();
    // Starts and checks together, at the fake: never more than RATE in any second.
    let body = get(&format!("{}/_fake/requests", f.url))
        .await
        .ok_or("requests")?
        .1;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(e("requests json"))?;
    let mut calls: Vec<i64> = v
        .as_array()
        .ok_or("requests array")?
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/v1.0/conference/"))
        })
        .filter_map(|r| r["at_ms"].as_i64())
        .collect();
    calls.sort_unstable();
    let checks = v
        .as_array()
        .map_or(0, |a| a.iter().filter(|r| r["method"] == "GET").count());
    let max_calls_any_second = (0..calls.len())
        .map(|i| calls[i..].iter().take_while(|t| **t < calls[i] + 1000).count())
        .max()
        .unwrap_or(0);
    let body = get(&format!("{}/_fake/starts", f.url)).await.ok_or("starts")?.1;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(e("starts json"))?;
    let mut starts: Vec<(String, i64, String)> = v
        .as_array()
        .ok_or("starts array")?
        .iter()
        .filter_map(|r| {
            Some((
                r["id"].as_str()?.to_owned(),
                r["at_ms"].as_i64()?,
                r["code"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .filter(|(id, _, _)| id.starts_with('m'))
        .collect();
    starts.sort_by_key(|(_, at, _)| *at);
    let times: Vec<i64> = starts.iter().map(|(_, at, _)| *at).collect();
    let max_any_second = (0..times.len())
        .map(|i| times[i..].iter().take_while(|t| **t < times[i] + 1000).count())
        .max()
        .unwrap_or(0);
    let (first, last) = (
        times.first().copied().unwrap_or(0),
        times.last().copied().unwrap_or(0),
    );
    let due_ms = due.timestamp_millis();
    let mut seen = std::collections::HashSet::new();
    let mut successes: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut firsts: Vec<(&str, i64)> = Vec::new();
    // Each start's due time (09:00:00 for a first attempt, the retry's own for the second) and
    // its arrival.
    let mut due_and_arrival: Vec<(i64, i64)> = Vec::new();
    for (id, at, code) in &starts {
        if code == "200" {
            *successes.entry(id).or_default() += 1;
        }
        if seen.insert(id.as_str()) {
            firsts.push((id, *at));
            due_and_arrival.push((due_ms, *at));
        } else if let Some(d) = retry_due.get(id) {
            due_and_arrival.push((*d, *at));
        }
    }
    // Starts in each full second from the first start in which work was waiting throughout: a
    // start due by the second's beginning arrived after its end. (Seconds in which only retries
    // waiting for their backoff remain are not the rate's to fill.)
    let per_second: Vec<usize> = (0..((last - first) / 1000))
        .map(|k| (first + k * 1000, first + (k + 1) * 1000))
        .filter(|(from, to)| due_and_arrival.iter().any(|(d, at)| d <= from && at >= to))
        .map(|(from, to)| times.iter().filter(|t| **t >= from && **t < to).count())
        .collect();
    let out_of_order = firsts.windows(2).filter(|w| w[1].0 < w[0].0).count();
    let first_at: std::collections::HashMap<&str, i64> = firsts.iter().copied().collect();
    let mut worst_retry_wait = 0;
    for (id, due_ms) in &retry_due {
        let Some(retry_at) = starts
            .iter()
            .filter(|(i, _, _)| i == id)
            .nth(1)
            .map(|(_, at, _)| *at)
        else {
            continue;
        };
        let ahead = firsts
            .iter()
            .filter(|(i, at)| *at > *due_ms && *at < retry_at && first_at.get(i) == Some(at))
            .count();
        worst_retry_wait = worst_retry_wait.max(ahead);
    }
    let kth = [1, 100, 250, 500, 750, 1000]
        .iter()
        .filter_map(|k| {
            let (_, at) = firsts.get(k - 1)?;
            Some((*k, (*at - due_ms) as f64 / 1000.0, *k as f64 / f64::from(RATE)))
        })
        .collect();
    Ok(Monday {
        meetings: firsts.len(),
        succeeded,
        confirmed,
        checks,
        max_calls_any_second,
        twice: successes.values().filter(|n| **n > 1).count(),
        max_any_second,
        min_full_second: per_second.iter().copied().min().unwrap_or(0),
        max_full_second: per_second.iter().copied().max().unwrap_or(0),
        out_of_order,
        retries: retry_due.len(),
        worst_retry_wait,
        kth,
    })
}

#[derive(Debug)]
struct RateRun {
    max_window: usize,
    min_full_window: usize,
    total_s: f64,
    calls: usize,
}

async fn rate_limited(bin: &Path, n: usize, rate: u32) -> R<RateRun> {
    let dir = tempfile::tempdir().map_err(e("tmp"))?;
    let f = fake(bin, dir.path()).await?;
    let (cfg, port) = write_config(dir.path(), &f.url, rate, "full")?;
    let due = now() + TimeDelta::seconds(4);
    let pdir = write_oneoffs(dir.path(), n, due)?;
    apply(bin, &cfg, &pdir)?;
    let (d, _) = start_daemon(bin, &cfg, port).await?;
    let db = pool(dir.path()).await?;
    let deadline = Instant::now() + Duration::from_secs(30 + 2 * n as u64 / rate as u64);
    while scalar(&db, "SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded'").await < n as i64 {
        if Instant::now() > deadline {
            return Err("rate-limited burst did not finish".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = get(&format!("{}/_fake/requests", f.url))
        .await
        .ok_or("requests")?
        .1;
    let log: serde_json::Value = serde_json::from_str(&log).map_err(e("requests json"))?;
    let mut ts: Vec<i64> = log
        .as_array()
        .ok_or("array")?
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/start")))
        .filter_map(|r| r["at_ms"].as_i64())
        .collect();
    ts.sort();
    let max_window = (0..ts.len())
        .map(|i| ts[i..].iter().take_while(|t| **t < ts[i] + 1000).count())
        .max()
        .unwrap_or(0);
    let (first, last) = (ts.first().copied().unwrap_or(0), ts.last().copied().unwrap_or(0));
    let full = ((last - first) / 1000) as usize;
    let min_full_window = (0..full)
        .map(|k| {
            ts.iter()
                .filter(|t| **t >= first + k as i64 * 1000 && **t < first + (k as i64 + 1) * 1000)
                .count()
        })
        .min()
        .unwrap_or(0);
    db.close().await;
    d.p.term();
    Ok(RateRun {
        max_window,
        min_full_window,
        total_s: (last - first) as f64 / 1000.0,
        calls: ts.len(),
    })
}

async fn idle(bin: &Path, n: usize, secs: u64) -> R<(f64, f64)> {
    let dir = tempfile::tempdir().map_err(e("tmp"))?;
    let f = fake(bin, dir.path()).await?;
    let (cfg, port) = write_config(dir.path(), &f.url, 20, "full")?;
    let pdir = write_crons(dir.path(), n)?;
    apply(bin, &cfg, &pdir)?;
    let (d, _) = start_daemon(bin, &cfg, port).await?;
    let db = pool(dir.path()).await?;
    let until = Instant::now() + Duration::from_secs(300);
    while scalar(&db, "SELECT COUNT(*) FROM policies WHERE planned_until = ''").await > 0 {
        if Instant::now() > until {
            return Err("planning did not finish".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.close().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c0 = cpu_seconds(d.p.pid());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = cpu_seconds(d.p.pid()) - c0;
    let rss = status_kb(d.p.pid(), "VmRSS:") as f64 / 1024.0;
    d.p.term();
    Ok((cpu, rss))
}

/// 100k policies (planned) and 1M attempt rows, a tenth of the occurrences failed, all within 6 days.
async fn big_database(
    bin: &Path,
    dir: &Path,
    fake_url: &str,
    policies: usize,
    attempts: usize,
) -> R<(PathBuf, u16)> {
    let (cfg, port) = write_config(dir, fake_url, 20, "full")?;
    let pdir = write_crons(dir, policies)?;
    apply(bin, &cfg, &pdir)?;
    let (d, _) = start_daemon(bin, &cfg, port).await?;
    {
        let db = pool(dir).await?;
        while scalar(&db, "SELECT COUNT(*) FROM policies WHERE planned_until = ''").await > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        db.close().await;
    }
    d.p.term();
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.join("dingrec.db"));
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(e("db"))?;
    let mut tx = db.begin().await.map_err(e("tx"))?;
    let per = 4;
    let occurrences = attempts / per;
    let t0 = now() - TimeDelta::days(6);
    for i in 0..occurrences {
        let due = t0 + TimeDelta::seconds(i as i64 * 2);
        let failed = i % 10 == 0;
        let pid = (i % policies) as i64 + 1;
        let id: i64 = sqlx::query(
            "INSERT INTO occurrences (policy_id, policy_name, due_at, window_ends_at, conference_id, state, attempt_count, last_code, trigger, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'schedule', ?, ?) RETURNING id",
        )
        .bind(pid)
        .bind(format!("c{:06}", pid - 1))
        .bind(rfc(due))
        .bind(rfc(due + TimeDelta::minutes(30)))
        .bind(format!("conf-{:06}", pid - 1))
        .bind(if failed { "failed" } else { "succeeded" })
        .bind(per as i64)
        .bind(if failed { "roomClosed" } else { "200" })
        .bind(rfc(due))
        .bind(rfc(due))
        .fetch_one(&mut *tx)
        .await
        .map_err(e("occurrence"))?
        .get(0);
        for a in 1..=per {
            let last = a == per;
            let (code, outcome) = match (last, failed) {
                (true, true) => ("roomClosed", "fail"),
                (true, false) => ("200", "success"),
                _ => ("systemError", "retry"),
            };
            let st = due + TimeDelta::seconds(a as i64);
            sqlx::query(
                "INSERT INTO attempts (occurrence_id, attempt_no, started_at, finished_at, duration_ms, conference_id, http_status, code, message, request_id, outcome) \
                 VALUES (?, ?, ?, ?, 12, ?, ?, ?, '', ?, ?)",
            )
            .bind(id)
            .bind(a as i64)
            .bind(rfc(st))
            .bind(rfc(st + TimeDelta::milliseconds(12)))
            .bind(format!("conf-{:06}", pid - 1))
            .bind(if code == "200" { 200 } else if code == "roomClosed" { 400 } else { 500 })
            .bind(code)
            .bind(format!("{:08X}-0000-0000-0000-{:012X}", id, a))
            .bind(outcome)
            .execute(&mut *tx)
            .await
            .map_err(e("attempt"))?;
        }
    }
    tx.commit().await.map_err(e("commit"))?;
    db.close().await;
    Ok((cfg, port))
}

// ---------- the baseline: tokio-cron-scheduler ----------

struct Baseline {
    calls: Arrivals,
    rss_mb: f64,
}

/// In a child process: N one-shot jobs due at one instant; each job's callback sends the same
/// StartCloudRecord dingrec sends (one token fetched first) to the fake at `fake_url`, which logs its
/// arrival. Prints the due instant (epoch ms) and the peak RSS.
async fn baseline_child(n: usize, fake_url: &str) -> R<()> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let client = http();
    let token = client
        .post(format!("{fake_url}/v1.0/oauth2/accessToken"))
        .header("content-type", "application/json")
        .body(r#"{"appKey":"bench","appSecret":"bench"}"#)
        .send()
        .await
        .map_err(e("token"))?
        .text()
        .await
        .map_err(e("token body"))?;
    let token: serde_json::Value = serde_json::from_str(&token).map_err(e("token json"))?;
    let token = Arc::new(token["accessToken"].as_str().unwrap_or_default().to_owned());
    let sched = JobScheduler::new().await.map_err(e("scheduler"))?;
    let lead = lead_for(n) + Duration::from_secs(2);
    let due = Instant::now() + lead;
    let due_ms = now().timestamp_millis() + lead.as_millis() as i64;
    let url = Arc::new(fake_url.to_owned());
    for i in 0..n {
        let (client, token, url) = (client.clone(), token.clone(), url.clone());
        let job = Job::new_one_shot_at_instant(due, move |_id, _l| {
            let (client, token, url) = (client.clone(), token.clone(), url.clone());
            tokio::spawn(async move {
                let _ = client
                    .post(format!(
                        "{url}/v1.0/conference/videoConferences/b{i:06}/cloudRecords/start"
                    ))
                    .header("x-acs-dingtalk-access-token", token.as_str())
                    .header("content-type", "application/json")
                    .body(r#"{"unionId":"host","mode":"speech","smallWindowPosition":"relative_right"}"#)
                    .send()
                    .await;
            });
        })
        .map_err(e("job"))?;
        sched.add(job).await.map_err(e("add"))?;
    }
    sched.start().await.map_err(e("start"))?;
    // Wait until the due instant plus as long as dingrec's target for this size, and more.
    let wait = due + Duration::from_secs(if n >= 100_000 { 40 } else { 10 });
    tokio::time::sleep_until(tokio::time::Instant::from_std(wait)).await;
    let out = serde_json::json!({
        "due_ms": due_ms,
        "rss_mb": status_kb(std::process::id(), "VmHWM:") as f64 / 1024.0,
    });
    println!("{out}");
    std::process::exit(0);
}

/// Lateness figures of StartCloudRecord arrivals at a fake after `due_ms`, for `n` meetings.
struct Arrivals {
    fired: u64,
    missed: u64,
    duplicated: u64,
    early: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn arrivals_after(arrivals: &[(String, i64)], due_ms: i64, n: usize) -> Arrivals {
    let mut first: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    let mut dup = 0u64;
    for (id, at) in arrivals {
        if first.insert(id.as_str(), *at).is_some() {
            dup += 1;
        }
    }
    let mut lates: Vec<f64> = first.values().map(|at| (*at - due_ms) as f64).collect();
    lates.sort_by(|a, b| a.total_cmp(b));
    Arrivals {
        fired: first.len() as u64,
        missed: (n as u64).saturating_sub(first.len() as u64),
        duplicated: dup,
        early: lates.iter().filter(|l| **l < 0.0).count() as u64,
        p50_ms: pct(&lates, 50.0),
        p99_ms: pct(&lates, 99.0),
        max_ms: lates.last().copied().unwrap_or(f64::NAN),
    }
}

async fn baseline(bin: &Path, n: usize) -> R<Baseline> {
    let dir = tempfile::tempdir().map_err(e("tmp"))?;
    let f = fake(bin, dir.path()).await?;
    let exe = std::env::current_exe().map_err(e("exe"))?;
    let out = Command::new(exe)
        .args(["--baseline", &n.to_string(), &f.url])
        .stderr(Stdio::null())
        .output()
        .map_err(e("baseline"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or("{}")).map_err(e("baseline output"))?;
    let due_ms = v["due_ms"].as_i64().ok_or("baseline: no due instant")?;
    Ok(Baseline {
        calls: arrivals_after(&start_arrivals(&f.url).await?, due_ms, n),
        rss_mb: v["rss_mb"].as_f64().unwrap_or(f64::NAN),
    })
}

// ---------- main ----------

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores ({cpu}), {}", rfc(now()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--baseline") {
        let n = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(1000);
        let url = args.get(i + 2).cloned().unwrap_or_default();
        if let Err(err) = baseline_child(n, &url).await {
            eprintln!("{err}");
            std::process::exit(1);
        }
        return;
    }
    // One scenario on its own, printed, for tuning: `--burst N`, `--paced N RATE`, `--monday`,
    // `--idle N`.
    let num = |k: usize| args.get(k).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    let one = match args.get(1).map(String::as_str) {
        Some("--burst") => Some(
            burst(&bin_or_exit(), num(2), 0, "full")
                .await
                .map(|b| format!("{b:?}")),
        ),
        Some("--paced") => Some(
            rate_limited(&bin_or_exit(), num(2), num(3) as u32)
                .await
                .map(|r| {
                    format!(
                        "{r:?} reached {:.0}/s",
                        r.calls.saturating_sub(1) as f64 / r.total_s.max(1e-9)
                    )
                }),
        ),
        Some("--monday") => Some(monday(&bin_or_exit()).await.map(|m| format!("{m:?}"))),
        Some("--pg-burst") => Some(match Cluster::start() {
            Ok(c) => pg_burst(&bin_or_exit(), &c, num(2), num(3).max(1))
                .await
                .map(|(b, shares)| format!("{b:?} calls per daemon {shares:?}")),
            Err(err) => Err(err),
        }),
        Some("--idle") => Some(idle(&bin_or_exit(), num(2), 60).await.map(|(cpu, rss)| {
            format!(
                "idle with {} cron policies: {cpu:.2} s CPU in 60 s, RSS {rss:.1} MB",
                num(2)
            )
        })),
        _ => None,
    };
    if let Some(one) = one {
        match one {
            Ok(line) => println!("{line}"),
            Err(err) => {
                eprintln!("bench: {err}");
                std::process::exit(1);
            }
        }
        return;
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    match run(smoke).await {
        Ok(()) => {}
        Err(err) => {
            eprintln!("bench: {err}");
            std::process::exit(1);
        }
    }
}

fn bin_or_exit() -> PathBuf {
    dingrec_bin().unwrap_or_else(|err| {
        eprintln!("bench: {err}");
        std::process::exit(1);
    })
}

async fn run(smoke: bool) -> R<()> {
    let bin = dingrec_bin()?;
    let runs = if smoke { 1 } else { 3 };
    let mut md = String::new();
    let mut say = |line: String| {
        println!("{line}");
        md.push_str(&line);
        md.push('\n');
    };
    say(format!(
        "Machine: {}. Each figure: median (min–max) of {runs} run(s).\n",
        machine()
    ));

    // Bursts.
    let sizes: &[usize] = if smoke {
        &[1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    say("## Burst: N one-off occurrences due at the same instant\n".into());
    say("| N | last attempt committed after due (s) | attempts/s | call arrival after due p50 / p99 / max (ms) | first call's arrival / arrival p50 of the first 100 (ms) | `sent_at` p50 of the first 100 (ms) | claim p50 (ms) | peak RSS (MB) | correct |".into());
    say("|---|---|---|---|---|---|---|---|---|".into());
    let mut burst10k_full = Vec::new();
    let mut dingrec_p99 = std::collections::BTreeMap::new();
    let mut dingrec_rss = std::collections::BTreeMap::new();
    for &n in sizes {
        let mut rs = Vec::new();
        for _ in 0..runs {
            rs.push(burst(&bin, n, 0, "full").await?);
        }
        let a = |f: fn(&Burst) -> f64| agg(&rs.iter().map(f).collect::<Vec<_>>());
        let correct = rs.iter().all(|b| {
            b.attempts == n as i64 && b.succeeded == n as i64 && b.early == 0 && b.fake_starts == n as i64
        });
        say(format!(
            "| {n} | {} | {} | {} / {} / {} | {} / {} | {} | {} | {} | {} |",
            a(|b| b.total_s),
            a(|b| b.per_s),
            a(|b| b.p50_ms),
            a(|b| b.p99_ms),
            a(|b| b.max_ms),
            a(|b| b.first_ms),
            a(|b| b.first100_p50_ms),
            a(|b| b.first100_sent_p50_ms),
            a(|b| b.claim_p50_ms),
            a(|b| b.rss_mb),
            if correct {
                "all fired once, none early".to_owned()
            } else {
                format!(
                    "NO: {:?}",
                    rs.iter()
                        .map(|b| (b.attempts, b.succeeded, b.early, b.fake_starts))
                        .collect::<Vec<_>>()
                )
            }
        ));
        dingrec_p99.insert(n, a(|b| b.p99_ms).med);
        dingrec_rss.insert(n, a(|b| b.rss_mb).med);
        if n == 10_000 {
            burst10k_full = rs.iter().map(|b| b.total_s).collect();
        }
    }

    // Bursts on PostgreSQL, one and several daemons.
    let cluster = Cluster::start()?;
    let pg_runs: &[(usize, usize)] = if smoke {
        &[(1_000, 3)]
    } else {
        &[(10_000, 1), (10_000, 3)]
    };
    say("\n## Burst on PostgreSQL: N one-off occurrences due at the same instant, one or three daemons on one database\n".into());
    say("| N | daemons | last attempt committed after due (s) | attempts/s | call arrival after due p50 / p99 / max (ms) | first call's arrival / arrival p50 of the first 100 (ms) | claim p50 (ms) | largest daemon's peak RSS (MB) | calls per daemon (first run) | correct |".into());
    say("|---|---|---|---|---|---|---|---|---|---|".into());
    for &(n, k) in pg_runs {
        let mut rs = Vec::new();
        let mut shares = Vec::new();
        for _ in 0..runs {
            let (b, sh) = pg_burst(&bin, &cluster, n, k).await?;
            rs.push(b);
            shares.push(sh);
        }
        let a = |f: fn(&Burst) -> f64| agg(&rs.iter().map(f).collect::<Vec<_>>());
        let wrong: Vec<_> = rs
            .iter()
            .filter(|b| {
                !(b.attempts == n as i64
                    && b.succeeded == n as i64
                    && b.early == 0
                    && b.fake_starts == n as i64)
            })
            .map(|b| (b.attempts, b.succeeded, b.early, b.fake_starts))
            .collect();
        say(format!(
            "| {n} | {k} | {} | {} | {} / {} / {} | {} / {} | {} | {} | {} | {} |",
            a(|b| b.total_s),
            a(|b| b.per_s),
            a(|b| b.p50_ms),
            a(|b| b.p99_ms),
            a(|b| b.max_ms),
            a(|b| b.first_ms),
            a(|b| b.first100_p50_ms),
            a(|b| b.claim_p50_ms),
            a(|b| b.rss_mb),
            shares
                .first()
                .map(|s| s.iter().map(i64::to_string).collect::<Vec<_>>().join(" + "))
                .unwrap_or_default(),
            if wrong.is_empty() {
                "all fired once, none early".to_owned()
            } else {
                format!("NO: {wrong:?}")
            }
        ));
        if !wrong.is_empty() {
            return Err(format!(
                "PostgreSQL burst of {n} with {k} daemons: not every meeting started once (attempts, succeeded, early, calls): {wrong:?}"
            ));
        }
    }
    drop(cluster);

    // Rate-limited bursts.
    let paced: &[(usize, u32)] = if smoke {
        &[(100, 20), (2_000, 1_000)]
    } else {
        &[(2_000, 20), (10_000, 1_000), (10_000, 2_000)]
    };
    say("\n## Rate-limited bursts: N due at once, calls counted at the fake\n".into());
    say("| N | rate_limit | calls seen by the fake | max calls in any 1 s window | min calls in a full 1 s window | first to last call (s) | calls/s reached (% of the limit) |".into());
    say("|---|---|---|---|---|---|---|".into());
    for &(rn, rate) in paced {
        let mut rr = Vec::new();
        for _ in 0..runs {
            rr.push(rate_limited(&bin, rn, rate).await?);
        }
        let reached = agg(&rr
            .iter()
            .map(|r| (r.calls.saturating_sub(1)) as f64 / r.total_s.max(1e-9))
            .collect::<Vec<_>>());
        say(format!(
            "| {rn} | {rate} | {} | {} | {} | {} | {} ({:.0} %) |",
            agg(&rr.iter().map(|r| r.calls as f64).collect::<Vec<_>>()),
            agg(&rr.iter().map(|r| r.max_window as f64).collect::<Vec<_>>()),
            agg(&rr.iter().map(|r| r.min_full_window as f64).collect::<Vec<_>>()),
            agg(&rr.iter().map(|r| r.total_s).collect::<Vec<_>>()),
            reached,
            100.0 * reached.med / f64::from(rate)
        ));
        if rr.iter().any(|r| r.max_window > rate as usize || r.calls != rn) {
            return Err(format!(
                "rate-limited burst of {rn} at {rate}/s: over the limit or not every call made"
            ));
        }
    }

    // 09:00 Monday.
    let mut ms = Vec::new();
    for _ in 0..runs {
        ms.push(monday(&bin).await?);
    }
    say("\n## 09:00 Monday: 10,000 policies, 1,000 meetings due at 09:00:00, rate_limit: 20; 5 % answer systemError once, 2 % are throttled once (retry after 2 s); start checks on (15 s after each start)\n".into());
    say("| meetings called | succeeded (confirmed by a check; checks made) | started twice | max starts in any 1 s | max calls (starts + checks) in any 1 s | starts per full second with a start waiting (min–max) | first calls out of due order | retries | most first attempts a due retry waited behind |".into());
    say("|---|---|---|---|---|---|---|---|---|".into());
    let m = |f: fn(&Monday) -> f64| agg(&ms.iter().map(f).collect::<Vec<_>>());
    say(format!(
        "| {} | {} ({}; {}) | {} | {} | {} | {}–{} | {} | {} | {} |",
        m(|x| x.meetings as f64),
        m(|x| x.succeeded as f64),
        m(|x| x.confirmed as f64),
        m(|x| x.checks as f64),
        m(|x| x.twice as f64),
        m(|x| x.max_any_second as f64),
        m(|x| x.max_calls_any_second as f64),
        m(|x| x.min_full_second as f64),
        m(|x| x.max_full_second as f64),
        m(|x| x.out_of_order as f64),
        m(|x| x.retries as f64),
        m(|x| x.worst_retry_wait as f64),
    ));
    say(
        "\n| k-th meeting | its first call's arrival after 09:00:00 (s) | ideal k/20 (s) |\n|---|---|---|"
            .into(),
    );
    if let Some(first) = ms.first() {
        for (i, (k, _, ideal)) in first.kth.iter().enumerate() {
            let late = agg(&ms
                .iter()
                .filter_map(|x| x.kth.get(i).map(|t| t.1))
                .collect::<Vec<_>>());
            say(format!("| {k} | {late} | {ideal:.2} |"));
        }
    }
    for x in &ms {
        if x.max_calls_any_second > 20
            || x.meetings != 1_000
            || x.succeeded != 1_000
            || x.confirmed != 1_000
            || x.twice != 0
        {
            return Err(format!(
                "09:00 Monday is wrong: {} calls in one second, {} of 1000 called, {} succeeded, {} confirmed, {} started twice",
                x.max_calls_any_second, x.meetings, x.succeeded, x.confirmed, x.twice
            ));
        }
    }

    // apply.
    let an = if smoke { 1_000 } else { 10_000 };
    let mut ap = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().map_err(e("tmp"))?;
        let (cfg, _) = write_config(dir.path(), "http://127.0.0.1:1", 20, "full")?;
        let pdir = write_oneoffs(dir.path(), an, now() + TimeDelta::days(30))?;
        ap.push(apply(&bin, &cfg, &pdir)?.as_secs_f64());
    }
    say(format!(
        "\n## apply: {an} policies in YAML files\n\n`dingrec apply` wall time: {} s\n",
        agg(&ap)
    ));

    if !smoke {
        // Idle.
        let mut cpu = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..runs {
            let (c, r) = idle(&bin, 100_000, 60).await?;
            cpu.push(c);
            rss.push(r);
        }
        say(format!(
            "## Idle: 100k enabled cron policies, nothing due for 60 s\n\nCPU used in the 60 s: {} s; RSS: {} MB\n",
            agg(&cpu),
            agg(&rss)
        ));

        // Start-up and audit over a big database.
        let dir = tempfile::tempdir().map_err(e("tmp"))?;
        let f = fake(&bin, dir.path()).await?;
        let (cfg, port) = big_database(&bin, dir.path(), &f.url, 100_000, 1_000_000).await?;
        let mut up = Vec::new();
        for _ in 0..runs {
            let (d, t) = start_daemon(&bin, &cfg, port).await?;
            up.push(t.as_secs_f64());
            d.p.term();
        }
        let mut hist = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let out = dingrec(&bin, &cfg, &["history", "--since", "7d", "--state", "failed"])
                .output()
                .map_err(e("history"))?;
            if !out.status.success() {
                return Err("history failed".into());
            }
            hist.push(t.elapsed().as_secs_f64());
        }
        say(format!(
            "## Start-up: 100k policies and 1M attempt rows\n\n`dingrec run` to `/readyz` 200: {} s\n\n## Audit: `dingrec history --since 7d --state failed` over 1M attempts\n\nwall time: {} s\n",
            agg(&up),
            agg(&hist)
        ));

        // Durability cost.
        let mut normal = Vec::new();
        for _ in 0..runs {
            normal.push(burst(&bin, 10_000, 0, "normal").await?.total_s);
        }
        let full = agg(&burst10k_full);
        let norm = agg(&normal);
        say(format!(
            "## Durability cost: the 10k burst, synchronous=FULL vs NORMAL\n\nFULL: {full} s; NORMAL: {norm} s; ratio FULL/NORMAL: {:.2}\n",
            full.med / norm.med
        ));
    }

    // Baseline.
    let bsizes: &[usize] = if smoke { &[1_000] } else { &[10_000, 100_000] };
    say("## Baseline: tokio-cron-scheduler 0.15, one one-shot job per occurrence, same instant, each sending StartCloudRecord to the fake\n".into());
    say("| N | fired | missed | duplicated | early | call arrival after due p50 / p99 / max (ms) | peak RSS (MB) | baseline p99 ÷ dingrec p99 | baseline RSS ÷ dingrec RSS |".into());
    say("|---|---|---|---|---|---|---|---|---|".into());
    for &n in bsizes {
        let mut bs = Vec::new();
        for _ in 0..runs {
            bs.push(baseline(&bin, n).await?);
        }
        let a = |f: fn(&Baseline) -> f64| agg(&bs.iter().map(f).collect::<Vec<_>>());
        let p99 = a(|b| b.calls.p99_ms);
        let rss = a(|b| b.rss_mb);
        let dp99 = dingrec_p99.get(&n).copied().unwrap_or(f64::NAN);
        let drss = dingrec_rss.get(&n).copied().unwrap_or(f64::NAN);
        let ratio = if p99.med > 0.0 {
            format!("{:.1}", p99.med / dp99)
        } else {
            format!(
                "n/a: the baseline fires early (p99 {:.0} ms before due)",
                -p99.med
            )
        };
        say(format!(
            "| {n} | {} | {} | {} | {} | {} / {} / {} | {} | {ratio} | {:.2} |",
            a(|b| b.calls.fired as f64),
            a(|b| b.calls.missed as f64),
            a(|b| b.calls.duplicated as f64),
            a(|b| b.calls.early as f64),
            a(|b| b.calls.p50_ms),
            p99,
            a(|b| b.calls.max_ms),
            rss,
            rss.med / drss
        ));
    }

    if !smoke {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let marker = "<!-- figures below are written by `cargo run --release -p dingrec-bench` -->";
        let head = old.split(marker).next().unwrap_or("").to_owned();
        std::fs::write(&path, format!("{head}{marker}\n\n{md}")).map_err(e("BENCHMARKS.md"))?;
        println!("\nwritten to {}", path.display());
    }
    Ok(())
}
