//! The status page over a big database: `GET /` and `GET /api/v1/summary`, each asked `n` times
//! one after the other; the server's own time (its `Server-Timing`: the database's reads plus the
//! rendering), the time to the last byte on loopback, and the page's size.

use crate::support::*;

#[derive(Debug)]
pub(crate) struct PageFigures {
    /// Server-side milliseconds (reads + render), per request.
    pub(crate) server_ms: Vec<f64>,
    /// Request to the last byte, milliseconds.
    pub(crate) wall_ms: Vec<f64>,
    pub(crate) bytes: usize,
}

/// `path` on the daemon at `port`, `n` times.
pub(crate) async fn page_times(port: u16, path: &str, n: usize) -> R<PageFigures> {
    let mut f = PageFigures {
        server_ms: Vec::new(),
        wall_ms: Vec::new(),
        bytes: 0,
    };
    for _ in 0..n {
        let t = Instant::now();
        let r = http()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(e(path))?;
        if r.status().as_u16() != 200 {
            return Err(format!("{path}: HTTP {}", r.status()));
        }
        let timing = r
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| format!("{path}: no Server-Timing"))?;
        let body = r.bytes().await.map_err(e(path))?;
        f.wall_ms.push(t.elapsed().as_secs_f64() * 1e3);
        f.bytes = body.len();
        // `db;dur=12.3, render;dur=0.4`
        let server: f64 = timing
            .split(',')
            .filter_map(|part| {
                part.split_once("dur=")
                    .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            })
            .sum();
        f.server_ms.push(server);
    }
    Ok(f)
}
