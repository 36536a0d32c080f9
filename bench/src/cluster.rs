use crate::support::*;

/// A PostgreSQL cluster for the bench: `TEST_POSTGRES_URL`'s, or a throwaway one started with
/// `scripts/pg` (stopped when dropped).
pub(crate) struct Cluster {
    pub(crate) url: String,
    pub(crate) dir: Option<tempfile::TempDir>,
}

/// The burst on PostgreSQL with `daemons` daemons sharing the database: what [`burst`] measures,
/// the peak RSS being the largest daemon's, and how many calls each daemon made.
pub(crate) async fn pg_burst(
    bin: &Path,
    cluster: &Cluster,
    n: usize,
    daemons: usize,
) -> R<(Burst, Vec<i64>)> {
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
