-- The dingrec daemons that have run on this database (`dingrec status`, `/readyz` `instances`):
-- one row per process (`hostname:pid`), its heartbeat moved with its leases. Live while
-- `seen_at` + `lease_ms` is ahead and it has not stopped; `stopped_at` is written by a clean stop.
CREATE TABLE instances (
    instance    TEXT PRIMARY KEY,
    version     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    seen_at     TEXT NOT NULL,
    lease_ms    INTEGER NOT NULL CHECK (lease_ms > 0),
    stopped_at  TEXT
);
