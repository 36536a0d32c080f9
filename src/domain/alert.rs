//! An alert's facts (`alerts.payload`), shared by the store that keeps them and the sender that
//! words them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AlertEvent;

/// `alerts.payload`: what the trigger (or the code that raised the alert) knew.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Facts {
    pub policy: Option<String>,
    pub occurrence_id: Option<i64>,
    pub conference_id: Option<String>,
    pub schedule_conference_id: Option<String>,
    pub host_union_id: Option<String>,
    pub timezone: Option<String>,
    pub due_at: Option<String>,
    pub window_ends_at: Option<String>,
    pub state: Option<String>,
    pub trigger: Option<String>,
    pub attempts: Option<i64>,
    pub last_code: Option<String>,
    /// DingTalk's message with the last code.
    pub message: Option<String>,
    pub restart_of: Option<i64>,
    /// For a watch or video check: what it found, and DingTalk's message.
    pub check: Option<String>,
    pub check_message: Option<String>,
    /// For alerts raised by code (`auth_broken`, `quota`, `test`): the whole story.
    pub text: Option<String>,
}

/// One alert as the sender delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub event: AlertEvent,
    pub facts: Facts,
}
