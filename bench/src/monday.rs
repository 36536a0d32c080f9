use crate::support::*;

/// "09:00 Monday": 10,000 policies, 1,000 of them due at one instant, `rate_limit: 20`; 5 % of the
/// meetings answer `systemError` once, 2 % are throttled once (retries after 2 s).
#[derive(Debug)]
pub(crate) struct Monday {
    pub(crate) meetings: usize,
    pub(crate) succeeded: i64,
    /// Confirmed recording by a start check (`verified_at`), and the checks made.
    pub(crate) confirmed: i64,
    pub(crate) checks: usize,
    /// Most calls (starts and checks) in any one second (sliding).
    pub(crate) max_calls_any_second: usize,
    /// Meetings with two successful starts.
    pub(crate) twice: usize,
    /// Most starts in any one second (sliding), and in each full second from the first start:
    /// the fewest and the most.
    pub(crate) max_any_second: usize,
    pub(crate) min_full_second: usize,
    pub(crate) max_full_second: usize,
    /// First attempts that arrived out of due (claim) order.
    pub(crate) out_of_order: usize,
    pub(crate) retries: usize,
    /// The most first attempts any retry waited behind after it came due.
    pub(crate) worst_retry_wait: usize,
    /// (k, arrival of the k-th meeting's first call after due (s), ideal k/20 s).
    pub(crate) kth: Vec<(usize, f64, f64)>,
}

pub(crate) async fn monday(bin: &Path) -> R<Monday> {
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
