//! A real browser for the status page's tests: Debian's Chromium, headless, driven over the
//! Chrome DevTools Protocol on its own WebSocket (tokio-tungstenite, already dingrec's) — no
//! WebDriver server and no client crate in between. One page (target), one session; every
//! console message, uncaught exception and failed load is kept for the test to assert on.
//!
//! Which browser: `$TEST_BROWSER`, else `chromium` on the PATH. Without one the test is
//! skipped with a message, unless `TEST_REQUIRE_BROWSER=1` (scripts/test sets it; `.ci/run`
//! installs `chromium`), where a missing browser fails it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A call's bound: a browser that stops answering fails the test instead of hanging it.
const CALL: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    ws: Ws,
    session: String,
    next_id: u64,
    /// Problems the page reported: console errors, uncaught exceptions, failed loads.
    problems: Vec<String>,
    /// Page events seen and not yet waited for (`Page.loadEventFired`).
    loads: usize,
    _profile: tempfile::TempDir,
}

/// The browser to drive, or `None` (with the reason printed) when the test should be skipped.
pub fn find() -> Option<PathBuf> {
    let required = std::env::var("TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let named = std::env::var_os("TEST_BROWSER").map(PathBuf::from);
    let found = named.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("chromium"))
                .find(|p| p.is_file())
        })
    });
    match found {
        Some(p) => Some(p),
        None if required => panic!(
            "TEST_REQUIRE_BROWSER=1 but no browser: install Debian's chromium (apt-get install chromium) or set TEST_BROWSER"
        ),
        None => {
            eprintln!("skipped: no chromium on the PATH (scripts/test requires one; .ci/run installs it)");
            None
        }
    }
}

impl Browser {
    /// Start `binary` headless with a throwaway profile; open one blank page.
    pub async fn launch(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile");
        let child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--force-color-profile=srgb",
                "--remote-debugging-port=0",
                "--lang=en-US",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // Chromium writes its port and the browser's WebSocket path here once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.to_owned(), path.to_owned());
                }
            }
            assert!(
                tokio::time::Instant::now() < until,
                "chromium never opened its DevTools port"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}"))
            .await
            .expect("the DevTools WebSocket");
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            problems: Vec::new(),
            loads: 0,
            _profile: profile,
        };
        let target = b
            .call_browser("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = b
            .call_browser(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        b.session = attached["sessionId"].as_str().expect("sessionId").to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable", "Network.enable"] {
            b.call(domain, json!({})).await;
        }
        b
    }

    async fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("a DevTools send");
        let answer = tokio::time::timeout(CALL, async {
            loop {
                let m = self.next_message().await;
                if m["id"].as_u64() == Some(id) {
                    return m;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer within {CALL:?}"));
        if let Some(e) = answer.get("error") {
            panic!("{method}: {e}");
        }
        answer["result"].clone()
    }

    async fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None).await
    }

    /// A DevTools command on the page's session; its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = Some(self.session.clone());
        self.send(method, params, session).await
    }

    /// The next message, noting the events the tests ask about.
    async fn next_message(&mut self) -> Value {
        loop {
            let frame = self
                .ws
                .next()
                .await
                .expect("the DevTools socket stays open")
                .expect("a frame");
            let Message::Text(text) = frame else { continue };
            let m: Value = serde_json::from_str(text.as_str()).expect("DevTools sends JSON");
            match m["method"].as_str() {
                Some("Page.loadEventFired") => self.loads += 1,
                Some("Runtime.exceptionThrown") => self
                    .problems
                    .push(format!("exception: {}", m["params"]["exceptionDetails"])),
                Some("Runtime.consoleAPICalled")
                    if matches!(m["params"]["type"].as_str(), Some("error" | "warning" | "assert")) =>
                {
                    self.problems.push(format!(
                        "console.{}: {}",
                        m["params"]["type"], m["params"]["args"]
                    ))
                }
                Some("Log.entryAdded")
                    if matches!(m["params"]["entry"]["level"].as_str(), Some("error" | "warning")) =>
                {
                    self.problems.push(format!(
                        "log {}: {} ({})",
                        m["params"]["entry"]["level"],
                        m["params"]["entry"]["text"],
                        m["params"]["entry"]["url"]
                    ))
                }
                Some("Network.loadingFailed") => self.problems.push(format!(
                    "load failed: {} {}",
                    m["params"]["errorText"], m["params"]["blockedReason"]
                )),
                _ => {}
            }
            return m;
        }
    }

    /// Every request carries these headers (basic authentication).
    pub async fn headers(&mut self, headers: Value) {
        self.call("Network.setExtraHTTPHeaders", json!({"headers": headers}))
            .await;
    }

    pub async fn basic_auth(&mut self, user: &str, password: &str) {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.headers(json!({"Authorization": format!("Basic {token}")}))
            .await;
    }

    /// Open `url` and wait for its load event.
    pub async fn open(&mut self, url: &str) {
        self.loads = 0;
        let nav = self.call("Page.navigate", json!({"url": url})).await;
        assert!(nav.get("errorText").is_none(), "opening {url}: {nav}");
        tokio::time::timeout(CALL, async {
            while self.loads == 0 {
                self.next_message().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{url} did not load within {CALL:?}"));
    }

    /// Evaluate `expression` in the page; its value (JSON).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Until `expression` is true in the page, looking every 100 ms (a hang fails after `limit`).
    pub async fn wait_until(&mut self, what: &str, expression: &str, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while self.eval(expression).await != json!(true) {
            assert!(
                tokio::time::Instant::now() < until,
                "timed out waiting for {what} ({expression})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The window as a device of `width`×`height` CSS pixels (a phone: `mobile`).
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// A PNG of the whole page, written to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        self.capture(path, true).await;
    }

    /// A PNG of what the window shows (the page's top), written to `path`.
    pub async fn screenshot_window(&mut self, path: &Path) {
        self.capture(path, false).await;
    }

    async fn capture(&mut self, path: &Path, whole: bool) {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": whole}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("screenshot");
    }

    /// The page's problems so far (console errors and warnings, exceptions, failed loads).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
