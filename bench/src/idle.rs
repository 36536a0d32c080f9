//! The idle daemon, measured from outside (the process's CPU ticks in `/proc`): `n` yearly cron
//! policies applied (nothing due during the run), then `dingrec run`. Two events: `/readyz`
//! answering 200 (the daemon serves), and rest (planning and the month's forecast done: the first
//! moment after which 5 s pass with at most one CPU tick). Then the CPU of `secs` seconds at rest.

use crate::support::*;

#[derive(Debug)]
pub(crate) struct IdleFigures {
    /// `dingrec run` to `/readyz` 200, seconds.
    pub(crate) ready_s: f64,
    /// `dingrec run` to rest, seconds.
    pub(crate) rest_s: f64,
    /// CPU seconds the daemon used from its start to rest.
    pub(crate) rest_cpu: f64,
    /// CPU seconds per minute at rest.
    pub(crate) idle_cpu_per_min: f64,
    /// Resident memory at rest, MB.
    pub(crate) rss_mb: f64,
}

/// A quiet window: this long with at most [`QUIET_TICKS`] of CPU.
const QUIET: Duration = Duration::from_secs(5);
const QUIET_TICKS: f64 = 0.01;

pub(crate) async fn idle(bin: &Path, n: usize, secs: u64) -> R<IdleFigures> {
    let dir = tempfile::tempdir().map_err(e("tmp"))?;
    let f = fake(bin, dir.path()).await?;
    let (cfg, port) = write_config(dir.path(), &f.url, 20, "full")?;
    let pdir = write_crons(dir.path(), n)?;
    apply(bin, &cfg, &pdir)?;
    let started = Instant::now();
    let (d, ready) = start_daemon(bin, &cfg, port).await?;
    let pid = d.p.pid();
    // CPU samples every 250 ms since the start; rest is the start of the first quiet window.
    let mut samples: Vec<(Duration, f64)> = vec![(started.elapsed(), cpu_seconds(pid))];
    let until = Instant::now() + Duration::from_secs(600);
    let (rest_s, rest_cpu) = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = (started.elapsed(), cpu_seconds(pid));
        samples.push(now);
        if let Some(&(at, cpu)) = samples
            .iter()
            .rev()
            .find(|(at, _)| now.0.saturating_sub(*at) >= QUIET)
            && now.1 - cpu <= QUIET_TICKS
        {
            break (at.as_secs_f64(), cpu);
        }
        if Instant::now() > until {
            return Err("the daemon did not come to rest within 600 s".into());
        }
    };
    let c0 = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = cpu_seconds(pid) - c0;
    let rss_mb = status_kb(pid, "VmRSS:") as f64 / 1024.0;
    let planned = {
        let db = pool(dir.path()).await?;
        let left = scalar(&db, "SELECT COUNT(*) FROM policies WHERE planned_until = ''").await;
        db.close().await;
        left
    };
    d.p.term();
    if planned > 0 {
        return Err(format!("at rest with {planned} policies not planned"));
    }
    Ok(IdleFigures {
        ready_s: ready.as_secs_f64(),
        rest_s,
        rest_cpu,
        idle_cpu_per_min: cpu * 60.0 / secs as f64,
        rss_mb,
    })
}
