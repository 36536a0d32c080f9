//! `dingrec fake-dingtalk`: the fake DingTalk on its own, until Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;

use crate::exit::{CmdResult, EXIT_FAILURE, EXIT_INVALID, EXIT_OK, Failure};
use crate::fake::{FakeDingTalk, Scenario};

pub async fn run(listen: SocketAddr, scenario: Option<&Path>) -> CmdResult {
    let scenario = match scenario {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Failure::new(EXIT_INVALID, format!("cannot read {}: {e}", p.display())))?;
            Scenario::from_yaml(&text)
                .map_err(|e| Failure::new(EXIT_INVALID, format!("{}: {e}", p.display())))?
        }
        None => Scenario::default(),
    };
    let fake = FakeDingTalk::start(listen, scenario)
        .await
        .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot listen on {listen}: {e}")))?;
    eprintln!(
        "fake DingTalk listening on {} (admin API under /_fake/; Ctrl-C stops)",
        fake.base_url()
    );
    let _ = tokio::signal::ctrl_c().await;
    Ok(EXIT_OK)
}
