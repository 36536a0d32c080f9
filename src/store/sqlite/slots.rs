//! Send slots: SQLite has one daemon, which keeps `dingtalk.rate_limit` in memory; there is
//! nothing to share (PostgreSQL's twin shares the slots among daemons).

use std::time::Duration;

use super::Sqlite;
use crate::store::Result;

impl Sqlite {
    pub async fn take_send_slots(&self, _app: &str, _n: u32, _period: Duration) -> Result<Option<Duration>> {
        Ok(None)
    }

    pub fn shares_rate_limit(&self) -> bool {
        false
    }
}
