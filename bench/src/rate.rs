use crate::support::*;

#[derive(Debug)]
pub(crate) struct RateRun {
    pub(crate) max_window: usize,
    pub(crate) min_full_window: usize,
    pub(crate) total_s: f64,
    pub(crate) calls: usize,
}

pub(crate) async fn rate_limited(bin: &Path, n: usize, rate: u32) -> R<RateRun> {
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
