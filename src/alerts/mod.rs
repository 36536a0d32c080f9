//! Alerts (docs/alerts.md): what went wrong, told to people in a DingTalk group (a
//! custom robot) or to a webhook. The outbox rows are written by the database's triggers with
//! the state change that caused them (`migrations/…_alerts.sql`); [`sender`] delivers them.

pub mod deliver;
pub mod message;
pub mod sender;
