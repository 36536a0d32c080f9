//! dingrec's benchmark: one command, real processes on loopback.
//!
//!     cargo run --release -p dingrec-bench            # everything; writes BENCHMARKS.md
//!     cargo run --release -p dingrec-bench -- --smoke # seconds long (CI), prints only
//!     cargo run --release -p dingrec-bench -- --burst 10000 | --paced 10000 2000 | --monday
//!                                             | --pg-burst 10000 3 (N, daemons on PostgreSQL)
//!                                                     # one scenario, printed (for tuning)
//!
//! dingrec runs as its real release binary (`dingrec run`) against the fake DingTalk as its own
//! process (`dingrec fake-dingtalk`, answering success at once), with a real SQLite file: the
//! daemon's whole path, planner → dispatcher → client → attempt rows. Figures come from the
//! database the daemon wrote, the fake's request log, and /proc. The tokio-cron-scheduler baseline
//! runs in a child process of this binary (`--baseline N`), so its memory is its own.

mod baseline;
mod burst;
mod cluster;
mod events;
mod history;
mod idle;
mod monday;
mod rate;
mod status;
mod support;

use support::*;

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores ({cpu}), {}", rfc(now()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--baseline") {
        let n = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(1000);
        let url = args.get(i + 2).cloned().unwrap_or_default();
        if let Err(err) = baseline_child(n, &url).await {
            eprintln!("{err}");
            std::process::exit(1);
        }
        return;
    }
    // One scenario on its own, printed, for tuning: `--burst N`, `--paced N RATE`, `--monday`,
    // `--idle N`.
    let num = |k: usize| args.get(k).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    let one = match args.get(1).map(String::as_str) {
        Some("--burst") => Some(
            burst(&bin_or_exit(), num(2), 0, "full")
                .await
                .map(|b| format!("{b:?}")),
        ),
        Some("--paced") => Some(
            rate_limited(&bin_or_exit(), num(2), num(3) as u32)
                .await
                .map(|r| {
                    format!(
                        "{r:?} reached {:.0}/s",
                        r.calls.saturating_sub(1) as f64 / r.total_s.max(1e-9)
                    )
                }),
        ),
        Some("--monday") => Some(monday(&bin_or_exit()).await.map(|m| format!("{m:?}"))),
        Some("--pg-burst") => Some(match Cluster::start() {
            Ok(c) => pg_burst(&bin_or_exit(), &c, num(2), num(3).max(1))
                .await
                .map(|(b, shares)| format!("{b:?} calls per daemon {shares:?}")),
            Err(err) => Err(err),
        }),
        Some("--events") => Some(
            event_burst(&bin_or_exit(), num(2), Duration::from_secs(10))
                .await
                .map(|b| format!("{b:?}")),
        ),
        Some("--event-flood") => Some(
            event_flood(&bin_or_exit(), num(2))
                .await
                .map(|x| format!("{x:?}")),
        ),
        Some("--status-page") => Some(status_page_alone(&bin_or_exit()).await),
        Some("--idle") => Some(
            idle(&bin_or_exit(), num(2), 60)
                .await
                .map(|f| format!("idle with {} yearly cron policies: {f:?}", num(2))),
        ),
        _ => None,
    };
    if let Some(one) = one {
        match one {
            Ok(line) => println!("{line}"),
            Err(err) => {
                eprintln!("bench: {err}");
                std::process::exit(1);
            }
        }
        return;
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    match run(smoke).await {
        Ok(()) => {}
        Err(err) => {
            eprintln!("bench: {err}");
            std::process::exit(1);
        }
    }
}

/// The status page's figures as BENCHMARKS.md shows them.
fn status_page_table(page: &PageFigures, json: &PageFigures) -> String {
    format!(
        "## Status page: 100k policies and 1M attempt rows\n\n\
         | request | server (reads + render), median (min–max) of 20 | to the last byte on loopback | size |\n\
         |---|---|---|---|\n\
         | `GET /` | {} ms | {} ms | {} KB |\n\
         | `GET /api/v1/summary` | {} ms | {} ms | {} KB |\n",
        agg(&page.server_ms),
        agg(&page.wall_ms),
        page.bytes / 1024,
        agg(&json.server_ms),
        agg(&json.wall_ms),
        json.bytes / 1024,
    )
}

/// `--status-page`: the big database, then the page's figures alone.
async fn status_page_alone(bin: &Path) -> R<String> {
    let dir = tempfile::tempdir().map_err(e("tmp"))?;
    let f = fake(bin, dir.path()).await?;
    let (cfg, port) = big_database(bin, dir.path(), &f.url, 100_000, 1_000_000).await?;
    let (d, _) = start_daemon(bin, &cfg, port).await?;
    let page = page_times(port, "/", 20).await?;
    let json = page_times(port, "/api/v1/summary", 20).await?;
    d.p.term();
    let hist = history_times(bin, &cfg, 3)?;
    Ok(format!(
        "{}\n`dingrec history --since 7d --state failed`: {} s\n",
        status_page_table(&page, &json),
        agg(&hist)
    ))
}

/// `dingrec history --since 7d --state failed` over the big database, `n` times: wall seconds
/// from the command's start to its exit, its output read.
fn history_times(bin: &Path, cfg: &Path, n: usize) -> R<Vec<f64>> {
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let out = dingrec(bin, cfg, &["history", "--since", "7d", "--state", "failed"])
            .output()
            .map_err(e("history"))?;
        if !out.status.success() {
            return Err(format!(
                "history failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        times.push(t.elapsed().as_secs_f64());
    }
    if std::env::var_os("BENCH_KEEP").is_some() {
        let dir = cfg.parent().ok_or("config dir")?;
        let keep = std::env::temp_dir().join("dingrec-bench-big");
        let _ = std::fs::remove_dir_all(&keep);
        std::fs::create_dir_all(&keep).map_err(e("keep"))?;
        for f in ["dingrec.db", "config.yaml"] {
            std::fs::copy(dir.join(f), keep.join(f)).map_err(e("keep"))?;
        }
        eprintln!("kept the database in {}", keep.display());
    }
    Ok(times)
}

fn bin_or_exit() -> PathBuf {
    dingrec_bin().unwrap_or_else(|err| {
        eprintln!("bench: {err}");
        std::process::exit(1);
    })
}

async fn run(smoke: bool) -> R<()> {
    let bin = dingrec_bin()?;
    let runs = if smoke { 1 } else { 3 };
    let mut md = String::new();
    let mut say = |line: String| {
        println!("{line}");
        md.push_str(&line);
        md.push('\n');
    };
    say(format!(
        "Machine: {}. Each figure: median (min–max) of {runs} run(s).\n",
        machine()
    ));

    // Bursts.
    let sizes: &[usize] = if smoke {
        &[1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    say("## Burst: N one-off occurrences due at the same instant\n".into());
    say("| N | last attempt committed after due (s) | attempts/s | call arrival after due p50 / p99 / max (ms) | first call's arrival / arrival p50 of the first 100 (ms) | `sent_at` p50 of the first 100 (ms) | claim p50 (ms) | peak RSS (MB) | correct |".into());
    say("|---|---|---|---|---|---|---|---|---|".into());
    let mut burst10k_full = Vec::new();
    let mut dingrec_p99 = std::collections::BTreeMap::new();
    let mut dingrec_rss = std::collections::BTreeMap::new();
    for &n in sizes {
        let mut rs = Vec::new();
        for _ in 0..runs {
            rs.push(burst(&bin, n, 0, "full").await?);
        }
        let a = |f: fn(&Burst) -> f64| agg(&rs.iter().map(f).collect::<Vec<_>>());
        let correct = rs.iter().all(|b| {
            b.attempts == n as i64 && b.succeeded == n as i64 && b.early == 0 && b.fake_starts == n as i64
        });
        say(format!(
            "| {n} | {} | {} | {} / {} / {} | {} / {} | {} | {} | {} | {} |",
            a(|b| b.total_s),
            a(|b| b.per_s),
            a(|b| b.p50_ms),
            a(|b| b.p99_ms),
            a(|b| b.max_ms),
            a(|b| b.first_ms),
            a(|b| b.first100_p50_ms),
            a(|b| b.first100_sent_p50_ms),
            a(|b| b.claim_p50_ms),
            a(|b| b.rss_mb),
            if correct {
                "all fired once, none early".to_owned()
            } else {
                format!(
                    "NO: {:?}",
                    rs.iter()
                        .map(|b| (b.attempts, b.succeeded, b.early, b.fake_starts))
                        .collect::<Vec<_>>()
                )
            }
        ));
        dingrec_p99.insert(n, a(|b| b.p99_ms).med);
        dingrec_rss.insert(n, a(|b| b.rss_mb).med);
        if n == 10_000 {
            burst10k_full = rs.iter().map(|b| b.total_s).collect();
        }
    }

    // Bursts on PostgreSQL, one and several daemons.
    let cluster = Cluster::start()?;
    let pg_runs: &[(usize, usize)] = if smoke {
        &[(1_000, 3)]
    } else {
        &[(10_000, 1), (10_000, 3)]
    };
    say("\n## Burst on PostgreSQL: N one-off occurrences due at the same instant, one or three daemons on one database\n".into());
    say("| N | daemons | last attempt committed after due (s) | attempts/s | call arrival after due p50 / p99 / max (ms) | first call's arrival / arrival p50 of the first 100 (ms) | claim p50 (ms) | largest daemon's peak RSS (MB) | calls per daemon (first run) | correct |".into());
    say("|---|---|---|---|---|---|---|---|---|---|".into());
    for &(n, k) in pg_runs {
        let mut rs = Vec::new();
        let mut shares = Vec::new();
        for _ in 0..runs {
            let (b, sh) = pg_burst(&bin, &cluster, n, k).await?;
            rs.push(b);
            shares.push(sh);
        }
        let a = |f: fn(&Burst) -> f64| agg(&rs.iter().map(f).collect::<Vec<_>>());
        let wrong: Vec<_> = rs
            .iter()
            .filter(|b| {
                !(b.attempts == n as i64
                    && b.succeeded == n as i64
                    && b.early == 0
                    && b.fake_starts == n as i64)
            })
            .map(|b| (b.attempts, b.succeeded, b.early, b.fake_starts))
            .collect();
        say(format!(
            "| {n} | {k} | {} | {} | {} / {} / {} | {} / {} | {} | {} | {} | {} |",
            a(|b| b.total_s),
            a(|b| b.per_s),
            a(|b| b.p50_ms),
            a(|b| b.p99_ms),
            a(|b| b.max_ms),
            a(|b| b.first_ms),
            a(|b| b.first100_p50_ms),
            a(|b| b.claim_p50_ms),
            a(|b| b.rss_mb),
            shares
                .first()
                .map(|s| s.iter().map(i64::to_string).collect::<Vec<_>>().join(" + "))
                .unwrap_or_default(),
            if wrong.is_empty() {
                "all fired once, none early".to_owned()
            } else {
                format!("NO: {wrong:?}")
            }
        ));
        if !wrong.is_empty() {
            return Err(format!(
                "PostgreSQL burst of {n} with {k} daemons: not every meeting started once (attempts, succeeded, early, calls): {wrong:?}"
            ));
        }
    }
    drop(cluster);

    // Rate-limited bursts.
    let paced: &[(usize, u32)] = if smoke {
        &[(100, 20), (2_000, 1_000)]
    } else {
        &[(2_000, 20), (10_000, 1_000), (10_000, 2_000)]
    };
    say("\n## Rate-limited bursts: N due at once, calls counted at the fake\n".into());
    say("| N | rate_limit | calls seen by the fake | max calls in any 1 s window | min calls in a full 1 s window | first to last call (s) | calls/s reached (% of the limit) |".into());
    say("|---|---|---|---|---|---|---|".into());
    for &(rn, rate) in paced {
        let mut rr = Vec::new();
        for _ in 0..runs {
            rr.push(rate_limited(&bin, rn, rate).await?);
        }
        let reached = agg(&rr
            .iter()
            .map(|r| (r.calls.saturating_sub(1)) as f64 / r.total_s.max(1e-9))
            .collect::<Vec<_>>());
        say(format!(
            "| {rn} | {rate} | {} | {} | {} | {} | {} ({:.0} %) |",
            agg(&rr.iter().map(|r| r.calls as f64).collect::<Vec<_>>()),
            agg(&rr.iter().map(|r| r.max_window as f64).collect::<Vec<_>>()),
            agg(&rr.iter().map(|r| r.min_full_window as f64).collect::<Vec<_>>()),
            agg(&rr.iter().map(|r| r.total_s).collect::<Vec<_>>()),
            reached,
            100.0 * reached.med / f64::from(rate)
        ));
        if rr.iter().any(|r| r.max_window > rate as usize || r.calls != rn) {
            return Err(format!(
                "rate-limited burst of {rn} at {rate}/s: over the limit or not every call made"
            ));
        }
    }

    // 09:00 Monday.
    let mut ms = Vec::new();
    for _ in 0..runs {
        ms.push(monday(&bin).await?);
    }
    say("\n## 09:00 Monday: 10,000 policies, 1,000 meetings due at 09:00:00, rate_limit: 20; 5 % answer systemError once, 2 % are throttled once (retry after 2 s); start checks on (15 s after each start)\n".into());
    say("| meetings called | succeeded (confirmed by a check; checks made) | started twice | max starts in any 1 s | max calls (starts + checks) in any 1 s | starts per full second with a start waiting (min–max) | first calls out of due order | retries | most first attempts a due retry waited behind |".into());
    say("|---|---|---|---|---|---|---|---|---|".into());
    let m = |f: fn(&Monday) -> f64| agg(&ms.iter().map(f).collect::<Vec<_>>());
    say(format!(
        "| {} | {} ({}; {}) | {} | {} | {} | {}–{} | {} | {} | {} |",
        m(|x| x.meetings as f64),
        m(|x| x.succeeded as f64),
        m(|x| x.confirmed as f64),
        m(|x| x.checks as f64),
        m(|x| x.twice as f64),
        m(|x| x.max_any_second as f64),
        m(|x| x.max_calls_any_second as f64),
        m(|x| x.min_full_second as f64),
        m(|x| x.max_full_second as f64),
        m(|x| x.out_of_order as f64),
        m(|x| x.retries as f64),
        m(|x| x.worst_retry_wait as f64),
    ));
    say(
        "\n| k-th meeting | its first call's arrival after 09:00:00 (s) | ideal k/20 (s) |\n|---|---|---|"
            .into(),
    );
    if let Some(first) = ms.first() {
        for (i, (k, _, ideal)) in first.kth.iter().enumerate() {
            let late = agg(&ms
                .iter()
                .filter_map(|x| x.kth.get(i).map(|t| t.1))
                .collect::<Vec<_>>());
            say(format!("| {k} | {late} | {ideal:.2} |"));
        }
    }
    for x in &ms {
        if x.max_calls_any_second > 20
            || x.meetings != 1_000
            || x.succeeded != 1_000
            || x.confirmed != 1_000
            || x.twice != 0
        {
            return Err(format!(
                "09:00 Monday is wrong: {} calls in one second, {} of 1000 called, {} succeeded, {} confirmed, {} started twice",
                x.max_calls_any_second, x.meetings, x.succeeded, x.confirmed, x.twice
            ));
        }
    }

    // Meetings found by events.
    let (en, eover) = if smoke {
        (100, Duration::from_secs(1))
    } else {
        (1_000, Duration::from_secs(10))
    };
    let mut eb = Vec::new();
    for _ in 0..runs {
        eb.push(event_burst(&bin, en, eover).await?);
    }
    say(format!(
        "\n## Meetings found by events: {en} meetings created within {} s, each matched by a `match` policy (Stream mode, the fake's gateway)\n",
        eover.as_secs()
    ));
    say("| StartCloudRecord arrival at the fake after the event's push p50 / p99 / max (ms) | meetings started | started twice |".into());
    say("|---|---|---|".into());
    let ea = |f: fn(&EventBurst) -> f64| agg(&eb.iter().map(f).collect::<Vec<_>>());
    say(format!(
        "| {} / {} / {} | {} | {} |",
        ea(|b| b.p50_ms),
        ea(|b| b.p99_ms),
        ea(|b| b.max_ms),
        ea(|b| b.started as f64),
        ea(|b| b.twice as f64)
    ));
    if eb.iter().any(|b| b.started != en as u64 || b.twice != 0) {
        return Err(format!(
            "events: not every matched meeting started once: {:?}",
            eb.iter().map(|b| (b.started, b.twice)).collect::<Vec<_>>()
        ));
    }
    let fnn = if smoke { 1_000 } else { 10_000 };
    let flood = event_flood(&bin, fnn).await?;
    say(format!(
        "\n## Events nobody wants: {fnn} events, 1 % matched (one run)\n"
    ));
    say("| events pushed | daemon RSS (MB) | daemon CPU used so far (s) |".into());
    say("|---|---|---|".into());
    for (k, rss, cpu) in &flood.marks {
        say(format!("| {k} | {rss:.1} | {cpu:.2} |"));
    }
    say(format!(
        "\nevents stored: {}; meetings started: {} (of {} matched)\n",
        flood.stored,
        flood.started,
        fnn.div_ceil(100)
    ));
    if flood.stored != fnn as i64 || flood.started != fnn.div_ceil(100) as u64 {
        return Err(format!(
            "event flood: {} of {fnn} events stored, {} meetings started",
            flood.stored, flood.started
        ));
    }

    // apply.
    let an = if smoke { 1_000 } else { 10_000 };
    let mut ap = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().map_err(e("tmp"))?;
        let (cfg, _) = write_config(dir.path(), "http://127.0.0.1:1", 20, "full")?;
        let pdir = write_oneoffs(dir.path(), an, now() + TimeDelta::days(30))?;
        ap.push(apply(&bin, &cfg, &pdir)?.as_secs_f64());
    }
    say(format!(
        "\n## apply: {an} policies in YAML files\n\n`dingrec apply` wall time: {} s\n",
        agg(&ap)
    ));

    if !smoke {
        // Idle.
        let mut figures = Vec::new();
        for _ in 0..runs {
            figures.push(idle(&bin, 100_000, 60).await?);
        }
        let of = |f: fn(&IdleFigures) -> f64| agg(&figures.iter().map(f).collect::<Vec<_>>());
        say(format!(
            "## Idle: 100k yearly cron policies, nothing due\n\n\
             `dingrec run` to `/readyz` 200: {} s; to rest (5 s with at most one CPU tick): {} s, \
             {} CPU s used until then\n\nat rest: {} CPU s a minute; RSS: {} MB\n",
            of(|f| f.ready_s),
            of(|f| f.rest_s),
            of(|f| f.rest_cpu),
            of(|f| f.idle_cpu_per_min),
            of(|f| f.rss_mb),
        ));

        // Start-up and audit over a big database.
        let dir = tempfile::tempdir().map_err(e("tmp"))?;
        let f = fake(&bin, dir.path()).await?;
        let (cfg, port) = big_database(&bin, dir.path(), &f.url, 100_000, 1_000_000).await?;
        let mut up = Vec::new();
        for _ in 0..runs {
            let (d, t) = start_daemon(&bin, &cfg, port).await?;
            up.push(t.as_secs_f64());
            d.p.term();
        }
        let (d, _) = start_daemon(&bin, &cfg, port).await?;
        let page = page_times(port, "/", 20).await?;
        let json = page_times(port, "/api/v1/summary", 20).await?;
        d.p.term();
        say(status_page_table(&page, &json));
        let hist = history_times(&bin, &cfg, runs)?;
        say(format!(
            "## Start-up: 100k policies and 1M attempt rows\n\n`dingrec run` to `/readyz` 200: {} s\n\n## Audit: `dingrec history --since 7d --state failed` over 1M attempts\n\nwall time: {} s\n",
            agg(&up),
            agg(&hist)
        ));

        // Durability cost.
        let mut normal = Vec::new();
        for _ in 0..runs {
            normal.push(burst(&bin, 10_000, 0, "normal").await?.total_s);
        }
        let full = agg(&burst10k_full);
        let norm = agg(&normal);
        say(format!(
            "## Durability cost: the 10k burst, synchronous=FULL vs NORMAL\n\nFULL: {full} s; NORMAL: {norm} s; ratio FULL/NORMAL: {:.2}\n",
            full.med / norm.med
        ));
    }

    // Baseline.
    let bsizes: &[usize] = if smoke { &[1_000] } else { &[10_000, 100_000] };
    say("## Baseline: tokio-cron-scheduler 0.15, one one-shot job per occurrence, same instant, each sending StartCloudRecord to the fake\n".into());
    say("| N | fired | missed | duplicated | early | call arrival after due p50 / p99 / max (ms) | peak RSS (MB) | baseline p99 ÷ dingrec p99 | baseline RSS ÷ dingrec RSS |".into());
    say("|---|---|---|---|---|---|---|---|---|".into());
    for &n in bsizes {
        let mut bs = Vec::new();
        for _ in 0..runs {
            bs.push(baseline(&bin, n).await?);
        }
        let a = |f: fn(&Baseline) -> f64| agg(&bs.iter().map(f).collect::<Vec<_>>());
        let p99 = a(|b| b.calls.p99_ms);
        let rss = a(|b| b.rss_mb);
        let dp99 = dingrec_p99.get(&n).copied().unwrap_or(f64::NAN);
        let drss = dingrec_rss.get(&n).copied().unwrap_or(f64::NAN);
        let ratio = if p99.med > 0.0 {
            format!("{:.1}", p99.med / dp99)
        } else {
            format!(
                "n/a: the baseline fires early (p99 {:.0} ms before due)",
                -p99.med
            )
        };
        say(format!(
            "| {n} | {} | {} | {} | {} | {} / {} / {} | {} | {ratio} | {:.2} |",
            a(|b| b.calls.fired as f64),
            a(|b| b.calls.missed as f64),
            a(|b| b.calls.duplicated as f64),
            a(|b| b.calls.early as f64),
            a(|b| b.calls.p50_ms),
            p99,
            a(|b| b.calls.max_ms),
            rss,
            rss.med / drss
        ));
    }

    if !smoke {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let marker = "<!-- figures below are written by `cargo run --release -p dingrec-bench` -->";
        let head = old.split(marker).next().unwrap_or("").to_owned();
        std::fs::write(&path, format!("{head}{marker}\n\n{md}")).map_err(e("BENCHMARKS.md"))?;
        println!("\nwritten to {}", path.display());
    }
    Ok(())
}
