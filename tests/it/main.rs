//! dingrec's integration tests, one module per subject in one test binary: dingrec is linked once,
//! not once per `tests/*.rs` file, and the modules share `support` (the fake, the daemon, the
//! database helpers).

mod support;

mod alerts;
mod auto_record;
mod cli;
mod cluster;
mod daemon;
mod dingtalk_client;
mod dingtalk_fixtures;
mod events;
mod layout;
mod postgres;
mod quota;
mod reliability;
mod scheduler;
mod seams;
mod sim;
mod status_page;
mod stream;
mod verify;
