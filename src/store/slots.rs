//! Send slots: `dingtalk.rate_limit` is DingTalk's limit per app, so daemons sharing a PostgreSQL
//! database share it through the database (`send_slots`). SQLite has one daemon, which keeps its
//! limit in memory; there is nothing to share.

use std::time::Duration;

use super::{Result, Store};

impl Store {
    /// Take the next `n` send slots of `app`, `period` apart, among every daemon on this
    /// database: how long from now until the first is this process's to use. `None` on SQLite.
    pub async fn take_send_slots(&self, app: &str, n: u32, period: Duration) -> Result<Option<Duration>> {
        match self.postgres() {
            Some(pg) => pg.take_send_slots(app, n, period).await.map(Some),
            None => Ok(None),
        }
    }

    /// Whether other daemons may send for the same app through this database.
    pub fn shares_rate_limit(&self) -> bool {
        self.postgres().is_some()
    }
}
