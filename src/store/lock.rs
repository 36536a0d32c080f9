//! One daemon per SQLite file. `dingrec run` holds an exclusive `flock` on `<database>.lock` for
//! its whole life and takes it before it touches the database: a second `dingrec run` on the same
//! file (started by mistake, or by a second unit) refuses at once, before its recovery could close
//! the first daemon's calls in flight as interrupted and start those meetings a second time. The
//! kernel drops the lock when the process ends, however it ends (SIGKILL included). A separate file,
//! because closing any descriptor of the database itself would drop SQLite's own POSIX locks.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::StoreError;

/// How long a lock held by someone else is waited for before giving up.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Take the lock beside `database`, or say who holds it.
    pub fn acquire(database: &Path) -> Result<InstanceLock, StoreError> {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let io = |e: std::io::Error| StoreError::Open {
            path: path.clone(),
            source: sqlx::Error::Io(e),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            super::sqlite::private_dir(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .mode(0o600)
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        // A lock that is being released (a daemon of this same process just stopped, while a
        // thread forked a child that had not yet exec'd and so still shared the descriptor) is
        // waited for briefly; a daemon that holds it refuses the newcomer after RELEASE_WAIT.
        let give_up = std::time::Instant::now() + RELEASE_WAIT;
        loop {
            // SAFETY: flock only takes a valid descriptor, which `file` owns for the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(InstanceLock { _file: file, path });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io(e));
            }
            if std::time::Instant::now() >= give_up {
                return Err(StoreError::InUse {
                    database: database.to_owned(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("sub/d.db");
        let first = InstanceLock::acquire(&db).expect("first");
        assert!(first.path().ends_with("d.db.lock"));
        let err = InstanceLock::acquire(&db).expect_err("second");
        assert!(err.to_string().contains("another dingrec is running on"), "{err}");
        drop(first);
        InstanceLock::acquire(&db).expect("free again");
    }
}
