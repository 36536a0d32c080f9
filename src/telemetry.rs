//! Logging: one event per line on stderr, text or JSON (`log.format`), or straight to journald
//! when `$JOURNAL_STREAM` says stderr is the journal. Field names are stable (`policy`,
//! `conference_id`, `occurrence`, `attempt`, `code`, `http_status`, `duration_ms`,
//! `next_attempt_in_ms`); secrets are never logged.

use std::io::IsTerminal as _;
use std::os::fd::AsRawFd as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, LogSettings};

/// Is stderr the journal? `$JOURNAL_STREAM` is `device:inode` of the stream systemd connected.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let fd = std::io::stderr().as_raw_fd();
    let path = format!("/proc/self/fd/{fd}");
    match std::fs::metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::MetadataExt as _;
            dev.parse::<u64>().is_ok_and(|d| d == m.dev()) && ino.parse::<u64>().is_ok_and(|i| i == m.ino())
        }
        Err(_) => false,
    }
}

/// Install the global subscriber. `level` is a tracing filter (`info`, `dingrec=debug`).
/// Calling it twice is harmless (the second call is ignored).
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // sqlx logs every statement at DEBUG: keep it out unless asked for by name.
    let filter = if settings.level.contains("sqlx") {
        filter
    } else {
        filter.add_directive("sqlx=warn".parse().unwrap_or_default())
    };
    let registry = tracing_subscriber::registry().with(filter);
    if stderr_is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = registry.with(journald).try_init();
        return;
    }
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match settings.format {
        LogFormat::Json => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(false)
                        .with_span_list(false)
                        .with_writer(std::io::stderr),
                )
                .try_init();
        }
        LogFormat::Text => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(ansi)
                        .with_writer(std::io::stderr),
                )
                .try_init();
        }
    }
}
