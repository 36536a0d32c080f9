-- no-transaction
-- Meetings dingrec finds by itself (docs/events.md): `match` policies, occurrences made from
-- DingTalk's meeting events, and the `events` table.
--
-- policies: `match_rule` (JSON: creators, title, schedule_conference_ids); a policy with a rule
-- names no meeting and has no schedule (the event is the time), every other policy exactly one of
-- each as before.
-- occurrences: the trigger 'event'; `host_union_id`, the host of this occurrence when it is not
-- the policy's (a match policy's `host_union_id: creator`); `event_conference_id`, the meeting an
-- event or a catch-up of a match policy found, unique, so that one meeting gets one such
-- occurrence whatever delivers it, however often and to however many daemons; the one-row-per-
-- start rule (policy_id, due_at) now holds for the other occurrences only (two meetings created
-- in the same millisecond are two occurrences of one match policy).
--
-- SQLite cannot change a CHECK or a UNIQUE constraint in place: both tables are rebuilt, in their
-- own transaction with foreign keys off (with them on, dropping the old tables would delete every
-- occurrence, attempt and check through ON DELETE CASCADE, and renaming would rewrite the other
-- tables' references). The body can run again from the start should dingrec stop between its
-- COMMIT and sqlx's record: it copies the columns both shapes have and creates what it creates
-- only if missing.
PRAGMA foreign_keys = OFF;

BEGIN IMMEDIATE;

DROP TABLE IF EXISTS policies_new;
DROP TABLE IF EXISTS occurrences_new;
DROP VIEW IF EXISTS audit_log;
DROP VIEW IF EXISTS check_log;
DROP VIEW IF EXISTS alert_routes;

CREATE TABLE policies_new (
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
    verify                 TEXT CHECK (verify IS NULL OR json_valid(verify)),
    alert                  TEXT CHECK (alert IS NULL OR json_valid(alert)),
    -- A `match` policy's rule (NULL: the policy names its meeting and its schedule).
    match_rule             TEXT CHECK (match_rule IS NULL OR json_valid(match_rule)),
    CHECK (CASE WHEN match_rule IS NULL
        THEN (conference_id IS NULL) <> (schedule_conference_id IS NULL) AND (cron IS NULL) <> (at IS NULL)
        ELSE conference_id IS NULL AND schedule_conference_id IS NULL AND cron IS NULL AND at IS NULL END)
);
INSERT INTO policies_new (id, name, conference_id, schedule_conference_id, host_union_id, layout,
    small_window_position, cron, at, timezone, start_offset_ms, window_ms, retry, skip_dates, enabled,
    source, created_at, updated_at, planned_until, verify, alert)
SELECT id, name, conference_id, schedule_conference_id, host_union_id, layout,
    small_window_position, cron, at, timezone, start_offset_ms, window_ms, retry, skip_dates, enabled,
    source, created_at, updated_at, planned_until, verify, alert
FROM policies;

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
    trigger          TEXT NOT NULL DEFAULT 'schedule'
        CHECK (trigger IN ('schedule', 'catch_up', 'manual', 'restart', 'event')),
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
    -- This occurrence's host when it is not the policy's (`host_union_id: creator`).
    host_union_id    TEXT,
    -- The meeting an event (or a catch-up) found for a match policy: one occurrence per meeting.
    event_conference_id TEXT
);
INSERT INTO occurrences_new (id, policy_id, policy_name, due_at, window_ends_at, conference_id, state,
    attempt_count, throttled_count, next_attempt_at, last_code, trigger, created_at, updated_at,
    uncalled_count, meeting_at, verified_at, next_check_at, next_check_kind, check_count, check_failures,
    restart_of)
SELECT id, policy_id, policy_name, due_at, window_ends_at, conference_id, state,
    attempt_count, throttled_count, next_attempt_at, last_code, trigger, created_at, updated_at,
    uncalled_count, meeting_at, verified_at, next_check_at, next_check_kind, check_count, check_failures,
    restart_of
FROM occurrences;

-- The triggers name other tables in their bodies; legacy renaming rewrites nothing but the
-- renamed table's own entry (and, foreign keys off, no other table's references).
PRAGMA legacy_alter_table = ON;
DROP TABLE occurrences;
DROP TABLE policies;
ALTER TABLE policies_new RENAME TO policies;
ALTER TABLE occurrences_new RENAME TO occurrences;
PRAGMA legacy_alter_table = OFF;

CREATE INDEX policies_to_plan ON policies (planned_until) WHERE enabled = 1;

-- One row per start of a policy (the planner's ON CONFLICT), for all but found meetings.
CREATE UNIQUE INDEX occurrences_one_per_start ON occurrences (policy_id, due_at)
    WHERE event_conference_id IS NULL;
CREATE UNIQUE INDEX occurrences_one_per_found_meeting ON occurrences (event_conference_id);
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
CREATE INDEX occurrences_next_check ON occurrences (next_check_at) WHERE next_check_at IS NOT NULL;

-- The views, as before but for the host: the occurrence's own when it has one.
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
    COALESCE(o.host_union_id, p.host_union_id) AS host_union_id,
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
    c.owner_union_id IS NOT NULL AND c.owner_union_id != '' AND c.owner_union_id != COALESCE(o.host_union_id, p.host_union_id)
                          AS owner_is_not_host,
    c.videos              AS videos,
    c.video_duration_ms   AS video_duration_ms,
    c.video_file_size     AS video_file_size,
    c.outcome             AS outcome
FROM checks c
JOIN occurrences o ON o.id = c.occurrence_id
JOIN policies p ON p.id = o.policy_id;
CREATE VIEW alert_routes AS
SELECT
    o.id AS occurrence_id,
    o.policy_name AS policy_name,
    d.value AS destination,
    r.events AS events,
    json_object(
        'policy', o.policy_name,
        'occurrence_id', o.id,
        'conference_id', o.conference_id,
        'schedule_conference_id', p.schedule_conference_id,
        'host_union_id', COALESCE(o.host_union_id, p.host_union_id),
        'timezone', p.timezone,
        'due_at', o.due_at,
        'window_ends_at', o.window_ends_at,
        'state', o.state,
        'trigger', o.trigger,
        'attempts', o.attempt_count,
        'last_code', o.last_code,
        'message', (SELECT a.message FROM attempts a WHERE a.occurrence_id = o.id
                    ORDER BY a.attempt_no DESC LIMIT 1),
        'restart_of', o.restart_of
    ) AS payload
FROM occurrences o
JOIN policies p ON p.id = o.policy_id
JOIN alert_routing r
JOIN json_each(COALESCE(p.alert, r.destinations)) d;
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
    a.instance        AS instance,
    a.started_at      AS started_at,
    a.sent_at         AS sent_at,
    a.finished_at     AS finished_at,
    a.duration_ms     AS duration_ms,
    a.conference_id   AS conference_id,
    p.schedule_conference_id AS schedule_conference_id,
    COALESCE(o.host_union_id, p.host_union_id) AS host_union_id,
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


-- The alert triggers of the old table, as the alerts and quota migrations made them.
CREATE TRIGGER alert_on_missed_insert AFTER INSERT ON occurrences
WHEN NEW.state = 'missed'
BEGIN
    INSERT INTO alerts (created_at, event, policy_name, occurrence_id, destination, payload, next_attempt_at)
    SELECT NEW.updated_at, 'missed', policy_name, occurrence_id, destination, payload, NEW.updated_at
    FROM alert_routes WHERE occurrence_id = NEW.id AND 'missed' IN (SELECT value FROM json_each(events));
END;
CREATE TRIGGER alert_on_not_recording AFTER UPDATE OF state ON occurrences
WHEN OLD.state = 'verifying' AND NEW.state = 'retry_wait'
    AND NOT EXISTS (SELECT 1 FROM alerts WHERE occurrence_id = NEW.id AND event = 'not_recording')
BEGIN
    INSERT INTO alerts (created_at, event, policy_name, occurrence_id, destination, payload, next_attempt_at)
    SELECT NEW.updated_at, 'not_recording', policy_name, occurrence_id, destination, payload, NEW.updated_at
    FROM alert_routes WHERE occurrence_id = NEW.id AND 'not_recording' IN (SELECT value FROM json_each(events));
END;
CREATE TRIGGER alert_on_final_update AFTER UPDATE OF state ON occurrences
WHEN NEW.state IN ('failed', 'expired', 'missed') AND OLD.state IS NOT NEW.state
    AND NEW.last_code IS NOT 'Forbidden.AccessDenied.ApiCountLimitForOrg'
BEGIN
    INSERT INTO alerts (created_at, event, policy_name, occurrence_id, destination, payload, next_attempt_at)
    SELECT NEW.updated_at, NEW.state, policy_name, occurrence_id, destination, payload, NEW.updated_at
    FROM alert_routes WHERE occurrence_id = NEW.id AND NEW.state IN (SELECT value FROM json_each(events));
END;


-- Every event DingTalk pushed over Stream mode, and what came of it.
CREATE TABLE IF NOT EXISTS events (
    id            INTEGER PRIMARY KEY,
    -- DingTalk's eventId: an event delivered again (even after its acknowledgement) finds its row.
    event_id      TEXT NOT NULL UNIQUE,
    message_id    TEXT,
    event_type    TEXT NOT NULL,
    change_scene  TEXT,
    conference_id TEXT,
    received_at   TEXT NOT NULL,
    born_at       TEXT,
    -- The event's data, capped at 16 KiB (a longer one is kept as {"truncated": "<its start>"}).
    payload       TEXT NOT NULL CHECK (json_valid(payload)),
    outcome       TEXT NOT NULL CHECK (outcome IN ('matched', 'ignored', 'duplicate', 'invalid')),
    -- Why it was ignored, a duplicate or invalid (NULL when matched).
    reason        TEXT,
    policy_id     INTEGER REFERENCES policies (id) ON DELETE SET NULL,
    occurrence_id INTEGER REFERENCES occurrences (id) ON DELETE SET NULL,
    -- The daemon that received it.
    instance      TEXT
);
CREATE INDEX IF NOT EXISTS events_by_received ON events (received_at);
CREATE INDEX IF NOT EXISTS events_by_conference ON events (conference_id);
CREATE INDEX IF NOT EXISTS events_by_occurrence ON events (occurrence_id) WHERE occurrence_id IS NOT NULL;

COMMIT;

PRAGMA foreign_keys = ON;
