-- dingrec's audit database. Times are TEXT in UTC, RFC 3339 with milliseconds and a Z
-- ('2026-12-01T01:00:00.000Z'): they sort as text and work with SQLite's date functions.
-- Table and column names are a contract (SPEC §5): audit queries rely on them.

CREATE TABLE policies (
    id                     INTEGER PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    conference_id          TEXT,
    schedule_conference_id TEXT,
    host_union_id          TEXT NOT NULL,
    layout                 TEXT NOT NULL CHECK (layout IN ('grid', 'speech', 'full_screen')),
    small_window_position  TEXT NOT NULL
        CHECK (small_window_position IN ('relative_right', 'float_right', 'float_bottom')),
    cron                   TEXT,
    at                     TEXT,
    timezone               TEXT NOT NULL,
    start_offset_ms        INTEGER NOT NULL CHECK (start_offset_ms >= 0),
    window_ms              INTEGER NOT NULL CHECK (window_ms > start_offset_ms),
    retry                  TEXT NOT NULL CHECK (json_valid(retry)),
    skip_dates             TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(skip_dates)),
    enabled                INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    source                 TEXT NOT NULL,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL,
    -- Every start at or before this instant has its occurrence row ('' = not planned yet).
    planned_until          TEXT NOT NULL DEFAULT '',
    CHECK ((conference_id IS NULL) <> (schedule_conference_id IS NULL)),
    CHECK ((cron IS NULL) <> (at IS NULL))
);

-- The planner's question: which enabled policies need occurrences written?
CREATE INDEX policies_to_plan ON policies (planned_until) WHERE enabled = 1;

CREATE TABLE occurrences (
    id               INTEGER PRIMARY KEY,
    policy_id        INTEGER NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    policy_name      TEXT NOT NULL,
    due_at           TEXT NOT NULL,
    window_ends_at   TEXT NOT NULL,
    conference_id    TEXT,
    state            TEXT NOT NULL DEFAULT 'scheduled' CHECK (state IN
        ('scheduled', 'running', 'retry_wait', 'succeeded', 'failed', 'expired', 'missed', 'cancelled')),
    attempt_count    INTEGER NOT NULL DEFAULT 0,
    -- Attempts answered with a throttle code; they do not count against maximum_attempts.
    throttled_count  INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_code        TEXT,
    trigger          TEXT NOT NULL DEFAULT 'schedule' CHECK (trigger IN ('schedule', 'catch_up', 'manual')),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (policy_id, due_at)
);

-- "Next due": the dispatcher's only question on a tick.
CREATE INDEX occurrences_next_due ON occurrences (next_attempt_at)
    WHERE state IN ('scheduled', 'retry_wait');
CREATE INDEX occurrences_by_state ON occurrences (state, due_at);
-- "Whose window has passed?": the sweep's question, only over live rows.
CREATE INDEX occurrences_window ON occurrences (window_ends_at)
    WHERE state IN ('scheduled', 'retry_wait');
CREATE INDEX occurrences_by_due ON occurrences (due_at);
CREATE INDEX occurrences_by_conference ON occurrences (conference_id);

CREATE TABLE attempts (
    id              INTEGER PRIMARY KEY,
    occurrence_id   INTEGER NOT NULL REFERENCES occurrences (id) ON DELETE CASCADE,
    attempt_no      INTEGER NOT NULL CHECK (attempt_no >= 1),
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    duration_ms     INTEGER,
    conference_id   TEXT,
    http_status     INTEGER CHECK (http_status IS NULL OR http_status BETWEEN 0 AND 999),
    code            TEXT,
    message         TEXT,
    request_id      TEXT,
    outcome         TEXT CHECK (outcome IS NULL OR outcome IN ('success', 'retry', 'fail', 'interrupted')),
    next_attempt_at TEXT,
    UNIQUE (occurrence_id, attempt_no)
);

CREATE INDEX attempts_by_started ON attempts (started_at);
CREATE INDEX attempts_by_conference ON attempts (conference_id);
CREATE INDEX attempts_open ON attempts (id) WHERE outcome IS NULL;

-- Small counters of dingrec's own (the readiness probe writes 'ready_probe' here). A running
-- daemon notices `apply` through policies.planned_until, which apply resets, not through meta.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per attempt, for people at the sqlite3 prompt.
CREATE VIEW audit_log AS
SELECT
    a.id              AS attempt_id,
    o.id              AS occurrence_id,
    p.id              AS policy_id,
    o.policy_name     AS policy_name,
    o.due_at          AS due_at,
    o.window_ends_at  AS window_ends_at,
    o.trigger         AS trigger,
    o.state           AS occurrence_state,
    o.attempt_count   AS attempt_count,
    o.last_code       AS last_code,
    a.attempt_no      AS attempt_no,
    a.started_at      AS started_at,
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
    CAST(ROUND((julianday(a.started_at) - julianday(o.due_at)) * 86400000) AS INTEGER) AS lateness_ms
FROM attempts a
JOIN occurrences o ON o.id = a.occurrence_id
JOIN policies p ON p.id = o.policy_id;
