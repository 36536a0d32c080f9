-- no-transaction
-- Verification (SPEC §9, docs/database.md): occurrences gain the state 'verifying', the trigger
-- 'restart' and the columns that schedule checks; table `checks` and view `check_log`; policies
-- gain `verify`.
--
-- SQLite cannot change a CHECK constraint in place: `occurrences` is rebuilt. The rebuild runs in
-- its own transaction with foreign keys off (with them on, dropping the old table would delete
-- every attempt through ON DELETE CASCADE); it can run again from the start should dingrec stop
-- between its COMMIT and the migration's record.
PRAGMA foreign_keys = OFF;

BEGIN IMMEDIATE;

DROP VIEW IF EXISTS audit_log;
DROP VIEW IF EXISTS check_log;
DROP TABLE IF EXISTS occurrences_new;

CREATE TABLE occurrences_new (
    id               INTEGER PRIMARY KEY,
    policy_id        INTEGER NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    policy_name      TEXT NOT NULL,
    due_at           TEXT NOT NULL,
    window_ends_at   TEXT NOT NULL,
    conference_id    TEXT,
    state            TEXT NOT NULL DEFAULT 'scheduled' CHECK (state IN
        ('scheduled', 'running', 'retry_wait', 'verifying', 'succeeded', 'failed', 'expired', 'missed', 'cancelled')),
    attempt_count    INTEGER NOT NULL DEFAULT 0,
    throttled_count  INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_code        TEXT,
    trigger          TEXT NOT NULL DEFAULT 'schedule' CHECK (trigger IN ('schedule', 'catch_up', 'manual', 'restart')),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    uncalled_count   INTEGER NOT NULL DEFAULT 0,
    meeting_at       TEXT,
    -- When a check found the recording running (NULL: not confirmed, or verify off).
    verified_at      TEXT,
    -- The next check: when and what ('start', 'watch', 'video'); NULL when none is pending or one
    -- is in flight (its `checks` row has no outcome yet).
    next_check_at    TEXT,
    next_check_kind  TEXT CHECK (next_check_kind IS NULL OR next_check_kind IN ('start', 'watch', 'video')),
    -- Start checks of the current start made so far, and checks that failed in a row.
    check_count      INTEGER NOT NULL DEFAULT 0,
    check_failures   INTEGER NOT NULL DEFAULT 0,
    -- For a 'restart' occurrence: the succeeded occurrence whose recording stopped.
    restart_of       INTEGER,
    UNIQUE (policy_id, due_at)
);

INSERT INTO occurrences_new (id, policy_id, policy_name, due_at, window_ends_at, conference_id, state,
    attempt_count, throttled_count, next_attempt_at, last_code, trigger, created_at, updated_at,
    uncalled_count, meeting_at)
SELECT id, policy_id, policy_name, due_at, window_ends_at, conference_id, state,
    attempt_count, throttled_count, next_attempt_at, last_code, trigger, created_at, updated_at,
    uncalled_count, meeting_at
FROM occurrences;

DROP TABLE occurrences;
ALTER TABLE occurrences_new RENAME TO occurrences;

-- The indexes of the old table, as the earlier migrations made them.
CREATE INDEX occurrences_next_due ON occurrences (next_attempt_at)
    WHERE state IN ('scheduled', 'retry_wait');
CREATE INDEX occurrences_by_state ON occurrences (state, due_at);
CREATE INDEX occurrences_window ON occurrences (window_ends_at)
    WHERE state IN ('scheduled', 'retry_wait');
CREATE INDEX occurrences_by_due ON occurrences (due_at);
CREATE INDEX occurrences_by_conference ON occurrences (conference_id);
CREATE INDEX occurrences_by_meeting ON occurrences (policy_id, meeting_at);
CREATE INDEX occurrences_retry_due ON occurrences (next_attempt_at) WHERE state = 'retry_wait';
CREATE INDEX occurrences_by_policy_name ON occurrences (policy_name, due_at);
CREATE INDEX occurrences_by_policy ON occurrences (policy_id, state, due_at);
-- "Which checks are due?": the checker's only question.
CREATE INDEX occurrences_next_check ON occurrences (next_check_at) WHERE next_check_at IS NOT NULL;

-- The policy's verification settings as JSON (`{"after":"15s","checks":3,...}`), NULL for
-- `verify: false`. Policies applied before: the built-in defaults, until the next apply.
ALTER TABLE policies ADD COLUMN verify TEXT
    CHECK (verify IS NULL OR json_valid(verify));
UPDATE policies SET verify = '{"after":"15s","checks":3,"watch":"0s","restart":true,"video":false}';

-- One row per check, written like attempts: the intent (`at`, no outcome) before the call, the
-- outcome after it.
CREATE TABLE checks (
    id                  INTEGER PRIMARY KEY,
    occurrence_id       INTEGER NOT NULL REFERENCES occurrences (id) ON DELETE CASCADE,
    kind                TEXT NOT NULL CHECK (kind IN ('start', 'watch', 'video')),
    at                  TEXT NOT NULL,
    duration_ms         INTEGER,
    http_status         INTEGER CHECK (http_status IS NULL OR http_status BETWEEN 0 AND 999),
    code                TEXT,
    message             TEXT,
    request_id          TEXT,
    cloud_record_status INTEGER,
    owner_union_id      TEXT,
    meeting_status      INTEGER,
    -- QueryCloudRecordVideo: the videos (JSON array of {recordId, duration, fileSize}) and their
    -- totals.
    videos              TEXT CHECK (videos IS NULL OR json_valid(videos)),
    video_duration_ms   INTEGER,
    video_file_size     INTEGER,
    outcome             TEXT CHECK (outcome IS NULL OR outcome IN ('recording', 'not_recording', 'paused',
        'stopped', 'meeting_ended', 'video_found', 'no_video', 'error'))
);

CREATE INDEX checks_by_occurrence ON checks (occurrence_id, id);
CREATE INDEX checks_open ON checks (id) WHERE outcome IS NULL;
CREATE INDEX checks_by_at ON checks (at);

CREATE VIEW audit_log AS
SELECT
    a.id              AS attempt_id,
    o.id              AS occurrence_id,
    p.id              AS policy_id,
    o.policy_name     AS policy_name,
    o.due_at          AS due_at,
    o.window_ends_at  AS window_ends_at,
    o.meeting_at      AS meeting_at,
    o.trigger         AS trigger,
    o.state           AS occurrence_state,
    o.attempt_count   AS attempt_count,
    o.last_code       AS last_code,
    o.verified_at     AS verified_at,
    a.attempt_no      AS attempt_no,
    a.started_at      AS started_at,
    a.sent_at         AS sent_at,
    a.finished_at     AS finished_at,
    a.duration_ms     AS duration_ms,
    a.conference_id   AS conference_id,
    p.schedule_conference_id AS schedule_conference_id,
    p.host_union_id   AS host_union_id,
    a.http_status     AS http_status,
    a.code            AS code,
    a.message         AS message,
    a.request_id      AS request_id,
    a.outcome         AS outcome,
    a.next_attempt_at AS next_attempt_at,
    CAST(ROUND((julianday(a.sent_at) - julianday(o.due_at)) * 86400000) AS INTEGER) AS lateness_ms
FROM attempts a
JOIN occurrences o ON o.id = a.occurrence_id
JOIN policies p ON p.id = o.policy_id;

-- One row per check, with its occurrence and policy.
CREATE VIEW check_log AS
SELECT
    c.id                  AS check_id,
    o.id                  AS occurrence_id,
    p.id                  AS policy_id,
    o.policy_name         AS policy_name,
    o.due_at              AS due_at,
    o.meeting_at          AS meeting_at,
    o.trigger             AS trigger,
    o.state               AS occurrence_state,
    o.verified_at         AS verified_at,
    o.conference_id       AS conference_id,
    p.host_union_id       AS host_union_id,
    c.kind                AS kind,
    c.at                  AS at,
    c.duration_ms         AS duration_ms,
    c.http_status         AS http_status,
    c.code                AS code,
    c.message             AS message,
    c.request_id          AS request_id,
    c.meeting_status      AS meeting_status,
    c.cloud_record_status AS cloud_record_status,
    c.owner_union_id      AS owner_union_id,
    c.owner_union_id IS NOT NULL AND c.owner_union_id != '' AND c.owner_union_id != p.host_union_id
                          AS owner_is_not_host,
    c.videos              AS videos,
    c.video_duration_ms   AS video_duration_ms,
    c.video_file_size     AS video_file_size,
    c.outcome             AS outcome
FROM checks c
JOIN occurrences o ON o.id = c.occurrence_id
JOIN policies p ON p.id = o.policy_id;

COMMIT;

PRAGMA foreign_keys = ON;
