-- DingTalk's own auto-recording, set ahead (docs/auto-record.md): policies gain `auto_record` (the
-- setting as JSON, NULL: off) and the state of their last settings call; `checks` gains the kind
-- `settings` (UpdateScheduleConfSettings) and the outcomes `set`, `refused`, `auto_recorded` and
-- `auto_record_missed`; `alerts` the events `auto_record_refused` and `auto_record_missed`;
-- `api_usage` the value `schedule_settings`. SQLite cannot widen a CHECK constraint in place, so
-- those tables are rebuilt with the same columns, indexes and triggers, in sqlx's transaction with
-- the migration's record (all or nothing).
ALTER TABLE policies ADD COLUMN auto_record TEXT CHECK (auto_record IS NULL OR json_valid(auto_record));
-- The last settings call: the setting it was made for, when, and how it ended (`pending` while
-- its answer is not written: dingrec stopped during it, or it is in flight).
ALTER TABLE policies ADD COLUMN auto_record_for TEXT;
ALTER TABLE policies ADD COLUMN auto_record_at TEXT;
ALTER TABLE policies ADD COLUMN auto_record_result TEXT
    CHECK (auto_record_result IS NULL OR auto_record_result IN ('pending', 'set', 'refused', 'error'));
ALTER TABLE policies ADD COLUMN auto_record_code TEXT;
-- The occurrence that call was made ahead of (its row in `checks` is that occurrence's).
ALTER TABLE policies ADD COLUMN auto_record_occurrence INTEGER;
-- Due-time checks in a row that found the setting did not start the recording.
ALTER TABLE policies ADD COLUMN auto_record_misses INTEGER NOT NULL DEFAULT 0;
-- The auto-record task's question: which enabled policies have the setting?
CREATE INDEX policies_auto_record ON policies (id) WHERE auto_record IS NOT NULL AND enabled = 1;

CREATE TABLE checks_new (
    id                  INTEGER PRIMARY KEY,
    occurrence_id       INTEGER NOT NULL REFERENCES occurrences (id) ON DELETE CASCADE,
    kind                TEXT NOT NULL CHECK (kind IN ('start', 'watch', 'video', 'settings')),
    at                  TEXT NOT NULL,
    duration_ms         INTEGER,
    http_status         INTEGER CHECK (http_status IS NULL OR http_status BETWEEN 0 AND 999),
    code                TEXT,
    message             TEXT,
    request_id          TEXT,
    cloud_record_status INTEGER,
    owner_union_id      TEXT,
    meeting_status      INTEGER,
    videos              TEXT CHECK (videos IS NULL OR json_valid(videos)),
    video_duration_ms   INTEGER,
    video_file_size     INTEGER,
    outcome             TEXT CHECK (outcome IS NULL OR outcome IN ('recording', 'not_recording', 'paused',
        'stopped', 'meeting_ended', 'video_found', 'no_video', 'error', 'set', 'refused', 'auto_recorded',
        'auto_record_missed')),
    instance            TEXT,
    lease_until         TEXT
);

INSERT INTO checks_new (id, occurrence_id, kind, at, duration_ms, http_status, code, message, request_id,
    cloud_record_status, owner_union_id, meeting_status, videos, video_duration_ms, video_file_size, outcome,
    instance, lease_until)
SELECT id, occurrence_id, kind, at, duration_ms, http_status, code, message, request_id,
    cloud_record_status, owner_union_id, meeting_status, videos, video_duration_ms, video_file_size, outcome,
    instance, lease_until
FROM checks;

-- The view `check_log` and the trigger below name `checks`: the legacy rename, as in 20261207000001.
PRAGMA legacy_alter_table = ON;
DROP TABLE checks;
ALTER TABLE checks_new RENAME TO checks;
PRAGMA legacy_alter_table = OFF;

CREATE INDEX checks_by_occurrence ON checks (occurrence_id, id);
CREATE INDEX checks_open ON checks (id) WHERE outcome IS NULL;
CREATE INDEX checks_by_at ON checks (at);

-- As 20261203000002 made it (dropped with the old table).
CREATE TRIGGER alert_on_check AFTER UPDATE OF outcome ON checks
WHEN OLD.outcome IS NULL AND (
    (NEW.kind = 'watch' AND NEW.outcome IN ('paused', 'stopped', 'not_recording'))
    OR (NEW.kind = 'video' AND NEW.outcome = 'no_video'))
BEGIN
    INSERT INTO alerts (created_at, event, policy_name, occurrence_id, destination, payload, next_attempt_at)
    SELECT NEW.at, ev.event, a.policy_name, a.occurrence_id, a.destination,
           json_set(a.payload, '$.check', NEW.outcome, '$.check_message', NEW.message), NEW.at
    FROM (SELECT CASE NEW.outcome WHEN 'paused' THEN 'paused' WHEN 'no_video' THEN 'no_video'
                 ELSE 'recording_stopped' END AS event) ev
    JOIN alert_routes a ON a.occurrence_id = NEW.occurrence_id
    WHERE ev.event IN (SELECT value FROM json_each(a.events))
      AND NOT (NEW.outcome = 'paused' AND COALESCE((
          SELECT c.outcome FROM checks c
          WHERE c.occurrence_id = NEW.occurrence_id AND c.id < NEW.id AND c.kind = 'watch'
            AND c.outcome IS NOT NULL AND c.outcome != 'error'
          ORDER BY c.id DESC LIMIT 1), '') = 'paused');
END;

CREATE TABLE alerts_new (
    id              INTEGER PRIMARY KEY,
    created_at      TEXT NOT NULL,
    event           TEXT NOT NULL CHECK (event IN ('failed', 'expired', 'missed', 'not_recording',
        'paused', 'recording_stopped', 'no_video', 'auth_broken', 'quota', 'policy_files_empty',
        'stream_down', 'stream_recovered', 'auto_record_refused', 'auto_record_missed', 'test')),
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
                                       'org_conferences', 'stream_event', 'schedule_settings')),
    calls INTEGER NOT NULL DEFAULT 0 CHECK (calls >= 0),
    PRIMARY KEY (day, api)
) WITHOUT ROWID;
INSERT INTO api_usage_new (day, api, calls) SELECT day, api, calls FROM api_usage;
DROP TABLE api_usage;
ALTER TABLE api_usage_new RENAME TO api_usage;
