-- The meeting's start that a planned occurrence is for (due_at − start_offset at planning time),
-- so an audit reads "the 09:00 meeting" without knowing the policy's offset then, and a meeting
-- started twice would show as two rows with the same (policy_id, meeting_at). NULL for manual
-- occurrences (`dingrec trigger` starts no scheduled meeting) and for rows written before this
-- column existed.
ALTER TABLE occurrences ADD COLUMN meeting_at TEXT;

-- Rows written before: the meeting start from the policy's current start_offset (exact integer
-- milliseconds; times are 'YYYY-MM-DDTHH:MM:SS.sssZ').
UPDATE occurrences SET meeting_at = (
    SELECT strftime('%Y-%m-%dT%H:%M:%S', m / 1000, 'unixepoch') || '.' || printf('%03d', m % 1000) || 'Z'
    FROM (
        SELECT unixepoch(occurrences.due_at) * 1000 + CAST(substr(occurrences.due_at, 21, 3) AS INTEGER)
               - p.start_offset_ms AS m
        FROM policies p WHERE p.id = occurrences.policy_id
    )
) WHERE trigger != 'manual';

-- "Does this meeting already have an occurrence?": the planner asks it for every row it writes.
CREATE INDEX occurrences_by_meeting ON occurrences (policy_id, meeting_at);
