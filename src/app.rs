//! The daemon: wiring of store, scheduler, DingTalk client, HTTP and signals.

use std::path::Path;

use crate::cli::{EXIT_CONFIG, Failure};

pub async fn run_command(config: Option<&Path>) -> Result<i32, Failure> {
    let _settings = crate::cli::load_settings(config, EXIT_CONFIG)?;
    Err(Failure::new(1, "the daemon is not built yet"))
}
