//! Writes to the SQLite file by any process, seen through Linux's inotify: how an idle daemon
//! learns of `dingrec apply`, `dingrec trigger` or `dingrec policies` run beside it without
//! reading the database every second. Every commit in WAL mode writes the `-wal` file, a
//! checkpoint the database file; both are watched by name in their folder, so a file made anew
//! is still seen. The writes of one moment ([`SETTLE`]) cost one wake.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// After a wake, how long before the next: the writes of one moment wake the scheduler once.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// How often the scheduler is woken when inotify cannot be used (as before inotify: every tick).
const FALLBACK: std::time::Duration = std::time::Duration::from_secs(1);

/// Until `cancel`, notify `wake` after every write to `db` or its `-wal` file.
pub(crate) async fn writes(db: &Path, wake: &Arc<Notify>, cancel: &CancellationToken) {
    let watched = match Watch::new(db) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, path = %db.display(), "cannot watch the database for other processes' writes; looking every second");
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(FALLBACK) => wake.notify_one(),
                }
            }
        }
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let ready = tokio::select! {
            () = cancel.cancelled() => return,
            r = watched.fd.readable() => r,
        };
        let Ok(mut guard) = ready else {
            return;
        };
        // Drain what is there; a name of ours anywhere in it wakes the scheduler once.
        let mut ours = false;
        loop {
            // SAFETY: `buf` is valid for writes of its length; the descriptor is ours.
            let n = unsafe { libc::read(watched.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let n = usize::try_from(n).unwrap_or(0);
            ours |=
                names(&buf[..n]).any(|name| watched.names.iter().any(|w| w.as_os_str().as_bytes() == name));
        }
        guard.clear_ready();
        if ours {
            wake.notify_one();
            // A burst or a planning pass writes thousands of pages a second: the events of the
            // next moment wait in the kernel's queue (identical ones merged) and cost one wake.
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(SETTLE) => {}
            }
        }
    }
}

/// The names in a buffer of `inotify_event`s (a fixed header, then `len` bytes of name padded
/// with NULs).
fn names(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = buf.get(at..at + HEADER)?;
        let len = u32::from_ne_bytes(header[12..16].try_into().ok()?) as usize;
        let name = buf.get(at + HEADER..at + HEADER + len)?;
        at += HEADER + len;
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        Some(&name[..end])
    })
}

struct Watch {
    fd: AsyncFd<OwnedFd>,
    /// The database's file name and its `-wal`'s.
    names: [OsString; 2],
}

impl Watch {
    fn new(db: &Path) -> std::io::Result<Self> {
        let dir = match db.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file = db
            .file_name()
            .ok_or_else(|| std::io::Error::other("the database path names no file"))?;
        let mut wal = file.to_os_string();
        wal.push("-wal");
        // SAFETY: no pointers; the result is checked.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: `c_dir` is a valid NUL-terminated string for the call's duration.
        let wd = unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                c_dir.as_ptr(),
                libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_CREATE | libc::IN_MOVED_TO,
            )
        };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor is owned by the `OwnedFd` moved in, so it stays open while
        // registered and is closed only after the registration is dropped with it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Self {
            fd,
            names: [file.to_os_string(), wal],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write by another handle to the database's `-wal` wakes; a write to another file in the
    /// folder does not.
    #[tokio::test]
    async fn a_write_to_the_wal_wakes_and_another_file_does_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("d.db");
        std::fs::write(&db, b"").expect("db");
        let wake = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let task = {
            let (db, wake, cancel) = (db.clone(), wake.clone(), cancel.clone());
            tokio::spawn(async move { writes(&db, &wake, &cancel).await })
        };
        // The watch is in place once a first write of ours is seen.
        let mut seen = false;
        for _ in 0..200 {
            std::fs::write(&db, b"x").expect("write");
            if tokio::time::timeout(std::time::Duration::from_millis(20), wake.notified())
                .await
                .is_ok()
            {
                seen = true;
                break;
            }
        }
        assert!(seen, "a write to the database woke nobody");
        std::fs::write(dir.path().join("other.txt"), b"x").expect("other");
        let other = tokio::time::timeout(std::time::Duration::from_millis(300), wake.notified()).await;
        assert!(other.is_err(), "a write to another file woke the scheduler");
        std::fs::write(dir.path().join("d.db-wal"), b"frame").expect("wal");
        tokio::time::timeout(std::time::Duration::from_secs(5), wake.notified())
            .await
            .expect("a write to the -wal wakes");
        cancel.cancel();
        task.await.expect("the watch ends");
    }
}
