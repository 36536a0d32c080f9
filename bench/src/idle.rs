use crate::support::*;

pub(crate) async fn idle(bin: &Path, n: usize, secs: u64) -> R<(f64, f64)> {
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
