-- The meeting's start that a planned occurrence is for (due_at − start_offset at planning time),
-- so an audit reads "the 09:00 meeting" without knowing the policy's offset then, and a meeting
-- started twice would show as two rows with the same (policy_id, meeting_at). NULL for manual
-- occurrences (`dingrec trigger` starts no scheduled meeting) and for rows written before this
-- column existed.
ALTER TABLE occurrences ADD COLUMN meeting_at TEXT;
