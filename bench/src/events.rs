//! Meetings found by events: the daemon with Stream mode on against the fake's gateway, events
//! pushed through the fake's admin API (`POST /_fake/events`), figures from the fake's request
//! log and /proc.

use crate::support::*;

/// A burst of created meetings, each matched: how soon its StartCloudRecord arrives.
#[derive(Debug, Default, Clone)]
pub(crate) struct EventBurst {
    /// Each meeting's StartCloudRecord arrival at the fake after its event was pushed (the
    /// bench's clock just before the push: the admin call's round trip is in the figure).
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) started: u64,
    pub(crate) twice: u64,
}

/// A flood of events nobody wants: the daemon's memory and CPU as it goes.
#[derive(Debug, Default, Clone)]
pub(crate) struct EventFlood {
    /// (events pushed so far, RSS in MB, CPU seconds used so far).
    pub(crate) marks: Vec<(usize, f64, f64)>,
    pub(crate) stored: i64,
    pub(crate) started: u64,
}

const MATCH: &str = "policies:\n  - name: board-meetings\n    match: { creators: [bench-creator] }\n    host_union_id: creator\n    window: 20m\n";

/// The fake, a daemon with Stream mode on and the match policy applied, connected.
async fn stream_daemon(bin: &Path, dir: &Path) -> R<(Fake, Daemon, PathBuf)> {
    let f = fake(bin, dir).await?;
    let (cfg, port) = write_config(dir, &f.url, 0, "full")?;
    let text = std::fs::read_to_string(&cfg).map_err(e("config"))?;
    let text = text.replace(
        "  rate_limit: 0\n",
        "  rate_limit: 0\n  monthly_event_quota: 0\n  stream:\n    enabled: true\n",
    );
    std::fs::write(&cfg, text).map_err(e("config"))?;
    let pdir = dir.join("policies");
    std::fs::create_dir_all(&pdir).map_err(e("policies dir"))?;
    std::fs::write(pdir.join("match.yaml"), MATCH).map_err(e("policies"))?;
    apply(bin, &cfg, &pdir)?;
    let (d, _) = start_daemon(bin, &cfg, port).await?;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let connected = get(&format!("{}/_fake/stream", f.url))
            .await
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["connections"].as_u64())
            .unwrap_or(0);
        if connected > 0 {
            break;
        }
        if Instant::now() > until {
            return Err("the daemon's Stream connection did not open".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first catch-up (an empty list) is made on connect: let it pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((f, d, cfg))
}

async fn push(fake_url: &str, body: serde_json::Value) -> R<()> {
    let r = http()
        .post(format!("{fake_url}/_fake/events"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(e("push an event"))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("push an event: HTTP {}", r.status()))
    }
}

/// `n` meetings created over `over`, evenly, each wanted by the match policy.
pub(crate) async fn event_burst(bin: &Path, n: usize, over: Duration) -> R<EventBurst> {
    let dir = tempfile::tempdir().map_err(e("tmp"))?;
    let (f, d, _) = stream_daemon(bin, dir.path()).await?;
    let gap = over / n.max(1) as u32;
    let begin = Instant::now();
    let mut pushed = std::collections::HashMap::with_capacity(n);
    for i in 0..n {
        let at = begin + gap * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let id = format!("ev-{i:05}");
        pushed.insert(id.clone(), now().timestamp_millis());
        push(
            &f.url,
            serde_json::json!({"conference_id": id, "title": "Board", "creator_id": "bench-creator"}),
        )
        .await?;
    }
    let until = Instant::now() + Duration::from_secs(60);
    let arrivals = loop {
        let a = start_arrivals(&f.url).await?;
        if a.len() >= n || Instant::now() > until {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut first = std::collections::HashMap::new();
    let mut twice = 0;
    for (id, at) in &arrivals {
        if first.insert(id.clone(), *at).is_some() {
            twice += 1;
        }
    }
    let mut lates: Vec<f64> = first
        .iter()
        .filter_map(|(id, at)| pushed.get(id).map(|p| (*at - *p) as f64))
        .collect();
    lates.sort_by(|a, b| a.total_cmp(b));
    d.p.term();
    Ok(EventBurst {
        p50_ms: pct(&lates, 50.0),
        p99_ms: pct(&lates, 99.0),
        max_ms: lates.last().copied().unwrap_or(f64::NAN),
        started: first.len() as u64,
        twice,
    })
}

/// `n` events, one in a hundred wanted: RSS and CPU at each tenth.
pub(crate) async fn event_flood(bin: &Path, n: usize) -> R<EventFlood> {
    let dir = tempfile::tempdir().map_err(e("tmp"))?;
    let (f, d, _) = stream_daemon(bin, dir.path()).await?;
    let pid = d.p.pid();
    let mut marks = vec![(0, status_kb(pid, "VmRSS:") as f64 / 1024.0, cpu_seconds(pid))];
    let step = (n / 10).max(1);
    for i in 0..n {
        let creator = if i % 100 == 0 {
            "bench-creator"
        } else {
            "someone-else"
        };
        push(
            &f.url,
            serde_json::json!({"conference_id": format!("fl-{i:06}"), "title": "standup", "creator_id": creator}),
        )
        .await?;
        if (i + 1) % step == 0 {
            marks.push((i + 1, status_kb(pid, "VmRSS:") as f64 / 1024.0, cpu_seconds(pid)));
        }
    }
    let db = pool(dir.path()).await?;
    let until = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let stored = scalar(&db, "SELECT COUNT(*) FROM events").await;
        if stored >= n as i64 || Instant::now() > until {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    db.close().await;
    let started = start_arrivals(&f.url).await?.len() as u64;
    d.p.term();
    Ok(EventFlood {
        marks,
        stored,
        started,
    })
}
