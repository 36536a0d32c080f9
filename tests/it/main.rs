//! dingrec's integration tests: one test binary (see STYLE.md 13).

mod support;

mod alerts;
mod cli;
mod cluster;
mod daemon;
mod dingtalk_client;
mod dingtalk_fixtures;
mod layout;
mod postgres;
mod quota;
mod reliability;
mod scheduler;
mod seams;
mod sim;
mod verify;
