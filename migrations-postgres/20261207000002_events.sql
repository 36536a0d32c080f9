-- Meetings dingrec finds by itself (docs/events.md), as in SQLite's migration of the same name:
-- `policies.match_rule`, the trigger 'event', `occurrences.host_union_id` and
-- `event_conference_id` (one occurrence per found meeting), and the `events` table.
ALTER TABLE policies ADD COLUMN match_rule jsonb;
-- The schema migration's two table CHECKs, as PostgreSQL named them (`policies_check` is
-- window_ms > start_offset_ms, and stays).
ALTER TABLE policies DROP CONSTRAINT policies_check1;
ALTER TABLE policies DROP CONSTRAINT policies_check2;
ALTER TABLE policies ADD CONSTRAINT policies_names_one_meeting CHECK (CASE WHEN match_rule IS NULL
    THEN (conference_id IS NULL) <> (schedule_conference_id IS NULL) AND (cron IS NULL) <> (at IS NULL)
    ELSE conference_id IS NULL AND schedule_conference_id IS NULL AND cron IS NULL AND at IS NULL END);

ALTER TABLE occurrences DROP CONSTRAINT occurrences_trigger_check;
ALTER TABLE occurrences ADD CONSTRAINT occurrences_trigger_check
    CHECK (trigger IN ('schedule', 'catch_up', 'manual', 'restart', 'event'));
ALTER TABLE occurrences ADD COLUMN host_union_id text;
ALTER TABLE occurrences ADD COLUMN event_conference_id text;
ALTER TABLE occurrences DROP CONSTRAINT occurrences_policy_id_due_at_key;
CREATE UNIQUE INDEX occurrences_one_per_start ON occurrences (policy_id, due_at)
    WHERE event_conference_id IS NULL;
CREATE UNIQUE INDEX occurrences_one_per_found_meeting ON occurrences (event_conference_id);

-- The views, as before but for the host: the occurrence's own when it has one.
CREATE OR REPLACE VIEW audit_log AS
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
    round(extract(epoch FROM a.sent_at - o.due_at) * 1000)::bigint AS lateness_ms
FROM attempts a
JOIN occurrences o ON o.id = a.occurrence_id
JOIN policies p ON p.id = o.policy_id;

CREATE OR REPLACE VIEW check_log AS
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
    COALESCE(c.owner_union_id IS NOT NULL AND c.owner_union_id <> '' AND c.owner_union_id <> COALESCE(o.host_union_id, p.host_union_id), false)
                          AS owner_is_not_host,
    c.videos              AS videos,
    c.video_duration_ms   AS video_duration_ms,
    c.video_file_size     AS video_file_size,
    c.outcome             AS outcome
FROM checks c
JOIN occurrences o ON o.id = c.occurrence_id
JOIN policies p ON p.id = o.policy_id;

-- Where an occurrence's alerts go: one row per destination (the policy's own, else the daemon's
-- default), with the facts the message is made of.
CREATE OR REPLACE VIEW alert_routes AS
SELECT
    o.id AS occurrence_id,
    o.policy_name AS policy_name,
    d.value AS destination,
    r.events AS events,
    jsonb_build_object(
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
CROSS JOIN alert_routing r
CROSS JOIN LATERAL jsonb_array_elements_text(COALESCE(p.alert, r.destinations)) AS d (value);

CREATE TABLE events (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    event_id      text NOT NULL UNIQUE,
    message_id    text,
    event_type    text NOT NULL,
    change_scene  text,
    conference_id text,
    received_at   timestamptz NOT NULL,
    born_at       timestamptz,
    payload       jsonb NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('matched', 'ignored', 'duplicate', 'invalid')),
    reason        text,
    policy_id     bigint REFERENCES policies (id) ON DELETE SET NULL,
    occurrence_id bigint REFERENCES occurrences (id) ON DELETE SET NULL,
    instance      text
);
CREATE INDEX events_by_received ON events (received_at);
CREATE INDEX events_by_conference ON events (conference_id);
CREATE INDEX events_by_occurrence ON events (occurrence_id) WHERE occurrence_id IS NOT NULL;
