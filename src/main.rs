//! `dingrec`: wiring only. The library does the work (see `dingrec::cli`).

use clap::Parser as _;

fn main() {
    limit_malloc_arenas();
    // What dingrec creates (the database, its WAL and SHM, the lock file, their folder) is the
    // service's alone, whatever umask the caller had: 0600 files, 0700 folders.
    // SAFETY: umask only sets this process's file mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    let cli = dingrec::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Bounded, so that systemd's TasksMax= (the unit) always has room: file reads, policy
        // parsing and the instance lock's wait run here.
        .max_blocking_threads(64)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dingrec: cannot start the async runtime: {e}");
            std::process::exit(dingrec::exit::EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(dingrec::cli::dispatch(cli));
    std::process::exit(code);
}

/// glibc gives every thread that allocates its own malloc arena (up to eight per core), and memory
/// freed in one arena is not reused by another: with the runtime's workers and one thread per
/// SQLite connection, a burst's peak RSS grows by several MB of fragmentation. Two arenas are
/// enough for two cores (threads keep their per-thread caches). Set before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
