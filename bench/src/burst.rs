use crate::support::*;

#[derive(Debug, Default, Clone)]
pub(crate) struct Burst {
    pub(crate) total_s: f64,
    pub(crate) per_s: f64,
    /// Lateness of StartCloudRecord's arrival at the fake (its request log) after the due instant.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// The p50 of the first 100 arrivals.
    pub(crate) first100_p50_ms: f64,
    /// The first arrival.
    pub(crate) first_ms: f64,
    /// The p50 of the first 100 `sent_at` (dingrec's clock just before the request), for
    /// telling the daemon's time from the network's and the fake's.
    pub(crate) first100_sent_p50_ms: f64,
    /// The claim's lateness (the intent row's `started_at` − due): dingrec's decision, not the call.
    pub(crate) claim_p50_ms: f64,
    pub(crate) rss_mb: f64,
    pub(crate) attempts: i64,
    pub(crate) succeeded: i64,
    pub(crate) early: i64,
    pub(crate) fake_starts: i64,
}

pub(crate) fn lead_for(n: usize) -> Duration {
    Duration::from_secs(3 + (n as u64 / 4_000))
}

pub(crate) async fn burst(bin: &Path, n: usize, rate: u32, synchronous: &str) -> R<Burst> {
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

/// The burst's figures taken at the fake: each StartCloudRecord's arrival after the due instant,
/// and the calls it counted.
pub(crate) async fn arrivals(fake_url: &str, due: DateTime<Utc>) -> R<Burst> {
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
pub(crate) async fn start_arrivals(fake_url: &str) -> R<Vec<(String, i64)>> {
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

/// Lateness figures of StartCloudRecord arrivals at a fake after `due_ms`, for `n` meetings.
pub(crate) struct Arrivals {
    pub(crate) fired: u64,
    pub(crate) missed: u64,
    pub(crate) duplicated: u64,
    pub(crate) early: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

pub(crate) fn arrivals_after(arrivals: &[(String, i64)], due_ms: i64, n: usize) -> Arrivals {
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
