use crate::support::*;

/// 100k policies (planned) and 1M attempt rows, a tenth of the occurrences failed, all within 6 days.
pub(crate) async fn big_database(
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
