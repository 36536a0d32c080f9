-- Which dingrec process claimed (and made) each attempt: `hostname:pid`, e.g. `rec-1:4182`. The
-- daemon's attempts carry the daemon's, `dingrec trigger`'s its own. NULL for attempts written
-- before this column existed.
ALTER TABLE attempts ADD COLUMN instance TEXT;

DROP VIEW audit_log;

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
