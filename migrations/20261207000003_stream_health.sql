-- Stream mode's health (docs/events.md): the alert events `stream_down` (the connection has been
-- down longer than dingtalk.stream.alert_after) and `stream_recovered` (it is up again), and the
-- `api_usage` values `org_conferences` (the catch-up's QueryOrgConferenceList, a counted call) and
-- `stream_event` (DingTalk counts pushed events against their own monthly quota), and the
-- `quota_events` `events_80` and `events_90` (that quota said once a month). SQLite cannot
-- widen a CHECK constraint in place, so the tables are rebuilt with the same columns and indexes,
-- in sqlx's transaction with the migration's record (all or nothing).
CREATE TABLE alerts_new (
    id              INTEGER PRIMARY KEY,
    created_at      TEXT NOT NULL,
    event           TEXT NOT NULL CHECK (event IN ('failed', 'expired', 'missed', 'not_recording',
        'paused', 'recording_stopped', 'no_video', 'auth_broken', 'quota', 'policy_files_empty',
        'stream_down', 'stream_recovered', 'test')),
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

-- The triggers name `alerts` in their bodies: the legacy rename, as in 20261207000001.
PRAGMA legacy_alter_table = ON;
DROP TABLE alerts;
ALTER TABLE alerts_new RENAME TO alerts;
PRAGMA legacy_alter_table = OFF;

CREATE INDEX alerts_pending ON alerts (next_attempt_at) WHERE state = 'pending';
CREATE INDEX alerts_by_created ON alerts (created_at);
CREATE INDEX alerts_by_batch ON alerts (batch) WHERE batch IS NOT NULL;

CREATE TABLE api_usage_new (
    day   TEXT NOT NULL CHECK (day GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]'),
    api   TEXT NOT NULL CHECK (api IN ('token', 'start_cloud_record', 'conference_info',
                                       'schedule_conference', 'cloud_record_videos', 'stop_cloud_record',
                                       'org_conferences', 'stream_event')),
    calls INTEGER NOT NULL DEFAULT 0 CHECK (calls >= 0),
    PRIMARY KEY (day, api)
) WITHOUT ROWID;
INSERT INTO api_usage_new (day, api, calls) SELECT day, api, calls FROM api_usage;
DROP TABLE api_usage;
ALTER TABLE api_usage_new RENAME TO api_usage;

-- The events' own quota is said once a month at 80 % and 90 % used.
CREATE TABLE quota_events_new (
    month TEXT NOT NULL CHECK (month GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]'),
    event TEXT NOT NULL CHECK (event IN ('forecast_80', 'used_90', 'exhausted', 'reserve',
                                         'events_80', 'events_90')),
    at    TEXT NOT NULL,
    PRIMARY KEY (month, event)
) WITHOUT ROWID;
INSERT INTO quota_events_new (month, event, at) SELECT month, event, at FROM quota_events;
DROP TABLE quota_events;
ALTER TABLE quota_events_new RENAME TO quota_events;
