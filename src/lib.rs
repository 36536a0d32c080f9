//! dingrec: makes sure DingTalk video meetings get recorded.
//!
//! The data goes one way: policy YAML → [`policy_file`] → [`store`] (SQLite) → [`scheduler`] →
//! [`dingtalk`] client → attempt row. See README.md for the design notes.

pub mod alerts;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod dingtalk;
pub mod domain;
pub mod exit;
pub mod fake;
pub mod http;
pub mod instance;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod policy_file;
pub mod scheduler;
pub mod store;
pub mod telemetry;
