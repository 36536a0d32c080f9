-- The alert event `policy_files_empty` (docs/alerts.md): the daemon's policy files held no policy
-- while the database holds enabled policies from them. SQLite cannot widen a CHECK constraint in
-- place, so `alerts` is rebuilt with the same columns and indexes. It runs in sqlx's transaction
-- with the migration's record (all or nothing).
CREATE TABLE alerts_new (
    id              INTEGER PRIMARY KEY,
    created_at      TEXT NOT NULL,
    event           TEXT NOT NULL CHECK (event IN ('failed', 'expired', 'missed', 'not_recording',
        'paused', 'recording_stopped', 'no_video', 'auth_broken', 'quota', 'policy_files_empty', 'test')),
    policy_name     TEXT,
    -- No foreign key: an alert outlives the occurrence that retention prunes.
    occurrence_id   INTEGER,
    destination     TEXT NOT NULL,
    payload         TEXT NOT NULL CHECK (json_valid(payload)),
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    sent_at         TEXT,
    next_attempt_at TEXT,
    batch           TEXT
);

INSERT INTO alerts_new (id, created_at, event, policy_name, occurrence_id, destination, payload, state,
    attempts, last_error, sent_at, next_attempt_at, batch)
SELECT id, created_at, event, policy_name, occurrence_id, destination, payload, state,
    attempts, last_error, sent_at, next_attempt_at, batch
FROM alerts;

-- The triggers name `alerts` in their bodies; between the DROP and the RENAME that table does
-- not exist, which SQLite's schema check on RENAME refuses unless the rename is the legacy one
-- (it rewrites nothing but the renamed table's own entry). Set back right after.
PRAGMA legacy_alter_table = ON;
DROP TABLE alerts;
ALTER TABLE alerts_new RENAME TO alerts;
PRAGMA legacy_alter_table = OFF;

CREATE INDEX alerts_pending ON alerts (next_attempt_at) WHERE state = 'pending';
CREATE INDEX alerts_by_created ON alerts (created_at);
CREATE INDEX alerts_by_batch ON alerts (batch) WHERE batch IS NOT NULL;
