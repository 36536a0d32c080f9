-- Alerts (docs/alerts.md): an outbox. Each event that someone must hear about becomes one
-- row per destination, written by a trigger in the same transaction as the state change that
-- caused it: no path that makes an occurrence final can forget its alert, an alert is never lost
-- to a crash, and never sent for a change that did not commit. The sender (src/alerts) delivers
-- pending rows.

-- Where alerts go: the daemon writes config.yaml's `alerts.default` and `alerts.events` here when
-- it starts (one row; none: no alerts). A policy's own `alert: [...]` list is `policies.alert`.
CREATE TABLE alert_routing (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    destinations TEXT NOT NULL CHECK (json_valid(destinations)),
    events       TEXT NOT NULL CHECK (json_valid(events)),
    updated_at   TEXT NOT NULL
);

-- The policy's `alert:` destinations (JSON array of names); NULL: `alerts.default`.
ALTER TABLE policies ADD COLUMN alert TEXT CHECK (alert IS NULL OR json_valid(alert));

CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    created_at      TEXT NOT NULL,
    event           TEXT NOT NULL CHECK (event IN ('failed', 'expired', 'missed', 'not_recording',
        'paused', 'recording_stopped', 'no_video', 'auth_broken', 'quota', 'test')),
    policy_name     TEXT,
    -- No foreign key: an alert outlives the occurrence that retention prunes.
    occurrence_id   INTEGER,
    destination     TEXT NOT NULL,
    -- The facts the message is made of (policy, meeting, due time, state, code, DingTalk's
    -- message, attempts); JSON.
    payload         TEXT NOT NULL CHECK (json_valid(payload)),
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    sent_at         TEXT,
    -- When the sender may try next (pending only).
    next_attempt_at TEXT,
    -- The robot message this alert went out in: alerts sent together share it, and a retry sends
    -- the same message again under the same `msgUuid` (DingTalk drops the repeat).
    batch           TEXT
);

CREATE INDEX alerts_pending ON alerts (next_attempt_at) WHERE state = 'pending';
CREATE INDEX alerts_by_created ON alerts (created_at);
CREATE INDEX alerts_by_batch ON alerts (batch) WHERE batch IS NOT NULL;

-- Where one occurrence's alerts go, with what they say: one row per destination (the policy's own,
-- else the default), with the events that are routed at all. Each trigger below inserts from it,
-- saying only which event it is.
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
        'host_union_id', p.host_union_id,
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

CREATE TRIGGER alert_on_final_update AFTER UPDATE OF state ON occurrences
WHEN NEW.state IN ('failed', 'expired', 'missed') AND OLD.state IS NOT NEW.state
BEGIN
    INSERT INTO alerts (created_at, event, policy_name, occurrence_id, destination, payload, next_attempt_at)
    SELECT NEW.updated_at, NEW.state, policy_name, occurrence_id, destination, payload, NEW.updated_at
    FROM alert_routes WHERE occurrence_id = NEW.id AND NEW.state IN (SELECT value FROM json_each(events));
END;

CREATE TRIGGER alert_on_missed_insert AFTER INSERT ON occurrences
WHEN NEW.state = 'missed'
BEGIN
    INSERT INTO alerts (created_at, event, policy_name, occurrence_id, destination, payload, next_attempt_at)
    SELECT NEW.updated_at, 'missed', policy_name, occurrence_id, destination, payload, NEW.updated_at
    FROM alert_routes WHERE occurrence_id = NEW.id AND 'missed' IN (SELECT value FROM json_each(events));
END;

-- The start checks did not see the recording: the occurrence goes back to `retry_wait` for another
-- StartCloudRecord. Said once per occurrence, while the meeting is on; if it never records, its
-- expiry (above) says so again, for good.
CREATE TRIGGER alert_on_not_recording AFTER UPDATE OF state ON occurrences
WHEN OLD.state = 'verifying' AND NEW.state = 'retry_wait'
    AND NOT EXISTS (SELECT 1 FROM alerts WHERE occurrence_id = NEW.id AND event = 'not_recording')
BEGIN
    INSERT INTO alerts (created_at, event, policy_name, occurrence_id, destination, payload, next_attempt_at)
    SELECT NEW.updated_at, 'not_recording', policy_name, occurrence_id, destination, payload, NEW.updated_at
    FROM alert_routes WHERE occurrence_id = NEW.id AND 'not_recording' IN (SELECT value FROM json_each(events));
END;

-- A watch or video check's outcome: paused (once, not again while it stays paused), stopped or not
-- recording during the meeting, no video after it.
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
