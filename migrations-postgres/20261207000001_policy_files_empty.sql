-- The alert event `policy_files_empty` (docs/alerts.md), as in SQLite's migration of the same name.
ALTER TABLE alerts DROP CONSTRAINT alerts_event_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_event_check CHECK (event IN ('failed', 'expired', 'missed',
    'not_recording', 'paused', 'recording_stopped', 'no_video', 'auth_broken', 'quota',
    'policy_files_empty', 'test'));
