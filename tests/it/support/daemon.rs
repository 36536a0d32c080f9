//! The real `dingrec run` binary as a child process, with a config file, its stderr captured.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Daemon {
    pub child: Child,
    /// Where its HTTP listener is, once its log said so.
    http: std::sync::OnceLock<std::net::SocketAddr>,
    pub stderr_path: PathBuf,
}

/// A config for the daemon: the fake at `base_url`, the database and policies under `dir`. The
/// daemon binds port 0 and logs the address it got ([`Daemon::http`] reads it), so no two tests
/// can race for a port.
pub fn write_config(dir: &Path, base_url: &str, extra: &str) -> PathBuf {
    let secret = dir.join("app_secret");
    if !secret.exists() {
        std::fs::write(&secret, "test-app-secret\n").expect("secret");
    }
    let cfg = format!(
        "{db}dingtalk:\n  base_url: {base_url}\n  app_key: test-app-key\n  app_secret_file: {secret}\n  rate_limit: 0\n  request_timeout: 3s\nhttp:\n  listen: 127.0.0.1:0\npolicies:\n  paths: [{policies}]\ndefaults:\n  timezone: UTC\n  verify: false\n{extra}",
        db = super::engine::database_yaml(dir),
        secret = secret.display(),
        policies = dir.join("policies").display(),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, cfg).expect("config");
    std::fs::create_dir_all(dir.join("policies")).expect("policies dir");
    path
}

/// `dingrec --config <config> <args>` as a command, its environment cleaned like the daemon's.
pub fn cli(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dingrec"));
    c.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DINGREC_CONFIG");
    c
}

/// `dingrec apply` of the policies written under `dir`; panics unless it exits 0.
pub fn apply_dir(config: &Path, dir: &Path) {
    apply_path(config, &dir.join("policies"));
}

/// `dingrec apply <path>` (a file or a folder); panics unless it exits 0.
pub fn apply_path(config: &Path, path: &Path) {
    let out = cli(config, &["apply", &path.to_string_lossy()])
        .output()
        .expect("apply");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Write `policies:` followed by `entries` to `dir/policies/<file>`.
pub fn write_policies(dir: &Path, file: &str, entries: &str) {
    std::fs::create_dir_all(dir.join("policies")).expect("policies dir");
    std::fs::write(dir.join("policies").join(file), format!("policies:\n{entries}")).expect("policies");
}

impl Daemon {
    pub fn spawn(config: &Path, envs: &[(&str, &str)]) -> Daemon {
        let dir = config.parent().expect("dir");
        let stderr_path = dir.join(format!(
            "stderr-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dingrec"));
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .env_remove("DINGREC_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("dingrec run");
        Daemon {
            child,
            http: std::sync::OnceLock::new(),
            stderr_path,
        }
    }

    /// `n` daemons on `config`, started together, each serving HTTP.
    pub async fn spawn_ready(config: &Path, n: usize) -> Vec<Daemon> {
        let ds: Vec<Daemon> = (0..n).map(|_| Daemon::spawn(config, &[])).collect();
        for d in &ds {
            d.wait_http(super::HANG).await;
        }
        ds
    }

    /// The HTTP address from the "dingrec is running" log line (text or JSON), waiting for it.
    pub async fn http(&self) -> std::net::SocketAddr {
        if let Some(a) = self.http.get() {
            return *a;
        }
        let until = tokio::time::Instant::now() + super::HANG;
        loop {
            let log = self.stderr();
            let found = log
                .lines()
                .filter(|l| l.contains("dingrec is running"))
                .find_map(|l| {
                    let rest = &l[l.find("http")? + 4..];
                    let rest = rest.trim_start_matches(['=', '"', ':']);
                    let end = rest
                        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                        .unwrap_or(rest.len());
                    rest[..end].parse().ok()
                });
            if let Some(a) = found {
                return *self.http.get_or_init(|| a);
            }
            assert!(
                tokio::time::Instant::now() < until,
                "the daemon never said where it listens:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Wait for the process to exit; its exit code.
    pub async fn wait(&mut self, limit: Duration) -> Option<i32> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if tokio::time::Instant::now() > until {
                let _ = self.child.kill();
                panic!("dingrec did not exit within {limit:?}:\n{}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET a path on the daemon's HTTP port: (status, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let addr = self.http().await;
        let resp = reqwest::Client::new()
            .get(format!("http://{addr}{path}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.unwrap_or_default()))
    }

    /// Wait until `/healthz` answers.
    pub async fn wait_http(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while self.get("/healthz").await.is_none() {
            assert!(
                tokio::time::Instant::now() < until,
                "no HTTP within {limit:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
