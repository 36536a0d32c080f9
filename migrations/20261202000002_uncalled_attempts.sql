-- Attempts that ended without a call to DingTalk (claimed, then not sent: dingrec stopped, the
-- policy was disabled, or the window passed while it waited). Like throttled ones, they do not
-- count against maximum_attempts (docs/database.md).
ALTER TABLE occurrences ADD COLUMN uncalled_count INTEGER NOT NULL DEFAULT 0;
