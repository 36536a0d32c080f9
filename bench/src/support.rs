//! What every scenario uses: the binaries, the fake and the daemon as processes, their
//! configs, the database, and the figures' arithmetic.

pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::process::{Child, Command, Stdio};
pub(crate) use std::sync::Arc;
pub(crate) use std::time::{Duration, Instant};

pub(crate) use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
pub(crate) use sqlx::Row;

pub(crate) use crate::baseline::*;
pub(crate) use crate::burst::*;
pub(crate) use crate::cluster::*;
pub(crate) use crate::events::*;
pub(crate) use crate::history::*;
pub(crate) use crate::idle::*;
pub(crate) use crate::monday::*;
pub(crate) use crate::rate::*;
pub(crate) use crate::status::*;

pub(crate) type R<T> = Result<T, String>;

pub(crate) fn e<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |err| format!("{what}: {err}")
}

#[allow(clippy::disallowed_methods)]
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

pub(crate) fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

// ---------- processes ----------

pub(crate) fn dingrec_bin() -> R<PathBuf> {
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

pub(crate) fn free_port() -> R<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(e("free port"))
}

pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    pub(crate) fn term(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

pub(crate) fn status_kb(pid: u32, field: &str) -> u64 {
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
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub(crate) async fn get(url: &str) -> Option<(u16, String)> {
    let r = http()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let s = r.status().as_u16();
    Some((s, r.text().await.unwrap_or_default()))
}

pub(crate) struct Fake {
    pub(crate) _p: Proc,
    pub(crate) url: String,
}

pub(crate) async fn fake(bin: &Path, dir: &Path) -> R<Fake> {
    fake_with(bin, dir, "unknown_conferences: live\n").await
}

pub(crate) async fn fake_with(bin: &Path, dir: &Path, scenario_yaml: &str) -> R<Fake> {
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

pub(crate) struct Daemon {
    pub(crate) p: Proc,
}

pub(crate) fn write_config(
    dir: &Path,
    fake_url: &str,
    rate_limit: u32,
    synchronous: &str,
) -> R<(PathBuf, u16)> {
    let database = format!(
        "database:\n  path: {}\n  synchronous: {synchronous}\n",
        dir.join("dingrec.db").display()
    );
    write_config_as(dir, "config.yaml", &database, fake_url, rate_limit)
}

/// A config named `name` in `dir` with the `database:` lines given, listening on a port of its own.
pub(crate) fn write_config_as(
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

pub(crate) fn dingrec(bin: &Path, cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.arg("--config")
        .arg(cfg)
        .args(args)
        .env_remove("DINGREC_CONFIG")
        .env("DINGREC_DINGTALK__APP_SECRET", "bench-secret");
    c
}

pub(crate) async fn start_daemon(bin: &Path, cfg: &Path, port: u16) -> R<(Daemon, Duration)> {
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
pub(crate) fn write_oneoffs(dir: &Path, n: usize, at: DateTime<Utc>) -> R<PathBuf> {
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

pub(crate) fn write_crons(dir: &Path, n: usize) -> R<PathBuf> {
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

pub(crate) fn apply(bin: &Path, cfg: &Path, pdir: &Path) -> R<Duration> {
    let t = Instant::now();
    let out = dingrec(bin, cfg, &["apply", pdir.to_str().ok_or("utf8")?])
        .output()
        .map_err(e("apply"))?;
    if !out.status.success() {
        return Err(format!("apply failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(t.elapsed())
}

pub(crate) async fn pool(dir: &Path) -> R<sqlx::SqlitePool> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("dingrec.db"))
        .read_only(true);
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(e("open db"))
}

pub(crate) async fn scalar(pool: &sqlx::SqlitePool, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .map(|r| r.get::<i64, _>(0))
        .unwrap_or(-1)
}

// ---------- statistics ----------

pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Clone, Copy)]
pub(crate) struct Agg {
    pub(crate) med: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

pub(crate) fn agg(v: &[f64]) -> Agg {
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

impl Cluster {
    pub(crate) fn start() -> R<Cluster> {
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
    pub(crate) async fn fresh(&self, name: &str) -> R<String> {
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
