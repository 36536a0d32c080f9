use crate::support::*;

pub(crate) struct Baseline {
    pub(crate) calls: Arrivals,
    pub(crate) rss_mb: f64,
}

/// In a child process: N one-shot jobs due at one instant; each job's callback sends the same
/// StartCloudRecord dingrec sends (one token fetched first) to the fake at `fake_url`, which logs its
/// arrival. Prints the due instant (epoch ms) and the peak RSS.
pub(crate) async fn baseline_child(n: usize, fake_url: &str) -> R<()> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let client = http();
    let token = client
        .post(format!("{fake_url}/v1.0/oauth2/accessToken"))
        .header("content-type", "application/json")
        .body(r#"{"appKey":"bench","appSecret":"bench"}"#)
        .send()
        .await
        .map_err(e("token"))?
        .text()
        .await
        .map_err(e("token body"))?;
    let token: serde_json::Value = serde_json::from_str(&token).map_err(e("token json"))?;
    let token = Arc::new(token["accessToken"].as_str().unwrap_or_default().to_owned());
    let sched = JobScheduler::new().await.map_err(e("scheduler"))?;
    let lead = lead_for(n) + Duration::from_secs(2);
    let due = Instant::now() + lead;
    let due_ms = now().timestamp_millis() + lead.as_millis() as i64;
    let url = Arc::new(fake_url.to_owned());
    for i in 0..n {
        let (client, token, url) = (client.clone(), token.clone(), url.clone());
        let job = Job::new_one_shot_at_instant(due, move |_id, _l| {
            let (client, token, url) = (client.clone(), token.clone(), url.clone());
            tokio::spawn(async move {
                let _ = client
                    .post(format!(
                        "{url}/v1.0/conference/videoConferences/b{i:06}/cloudRecords/start"
                    ))
                    .header("x-acs-dingtalk-access-token", token.as_str())
                    .header("content-type", "application/json")
                    .body(r#"{"unionId":"host","mode":"speech","smallWindowPosition":"relative_right"}"#)
                    .send()
                    .await;
            });
        })
        .map_err(e("job"))?;
        sched.add(job).await.map_err(e("add"))?;
    }
    sched.start().await.map_err(e("start"))?;
    // Wait until the due instant plus as long as dingrec's target for this size, and more.
    let wait = due + Duration::from_secs(if n >= 100_000 { 40 } else { 10 });
    tokio::time::sleep_until(tokio::time::Instant::from_std(wait)).await;
    let out = serde_json::json!({
        "due_ms": due_ms,
        "rss_mb": status_kb(std::process::id(), "VmHWM:") as f64 / 1024.0,
    });
    println!("{out}");
    std::process::exit(0);
}

pub(crate) async fn baseline(bin: &Path, n: usize) -> R<Baseline> {
    let dir = tempfile::tempdir().map_err(e("tmp"))?;
    let f = fake(bin, dir.path()).await?;
    let exe = std::env::current_exe().map_err(e("exe"))?;
    let out = Command::new(exe)
        .args(["--baseline", &n.to_string(), &f.url])
        .stderr(Stdio::null())
        .output()
        .map_err(e("baseline"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or("{}")).map_err(e("baseline output"))?;
    let due_ms = v["due_ms"].as_i64().ok_or("baseline: no due instant")?;
    Ok(Baseline {
        calls: arrivals_after(&start_arrivals(&f.url).await?, due_ms, n),
        rss_mb: v["rss_mb"].as_f64().unwrap_or(f64::NAN),
    })
}

// ---------- main ----------
