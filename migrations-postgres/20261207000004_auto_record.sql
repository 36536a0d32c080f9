-- DingTalk's own auto-recording, set ahead (docs/auto-record.md), as in SQLite's migration of the
-- same name: policies gain `auto_record` and the state of their last settings call; `checks` the
-- kind `settings` and the outcomes `set`, `refused`, `auto_recorded`, `auto_record_missed`;
-- `alerts` the events `auto_record_refused` and `auto_record_missed`; `api_usage` the value
-- `schedule_settings`.
ALTER TABLE policies ADD COLUMN auto_record jsonb;
ALTER TABLE policies ADD COLUMN auto_record_for text;
ALTER TABLE policies ADD COLUMN auto_record_at timestamptz;
ALTER TABLE policies ADD COLUMN auto_record_result text
    CHECK (auto_record_result IS NULL OR auto_record_result IN ('pending', 'set', 'refused', 'error'));
ALTER TABLE policies ADD COLUMN auto_record_code text;
ALTER TABLE policies ADD COLUMN auto_record_occurrence bigint;
ALTER TABLE policies ADD COLUMN auto_record_misses integer NOT NULL DEFAULT 0;
CREATE INDEX policies_auto_record ON policies (id) WHERE auto_record IS NOT NULL AND enabled;

ALTER TABLE checks DROP CONSTRAINT checks_kind_check;
ALTER TABLE checks ADD CONSTRAINT checks_kind_check CHECK (kind IN ('start', 'watch', 'video', 'settings'));
ALTER TABLE checks DROP CONSTRAINT checks_outcome_check;
ALTER TABLE checks ADD CONSTRAINT checks_outcome_check CHECK (outcome IS NULL OR outcome IN ('recording',
    'not_recording', 'paused', 'stopped', 'meeting_ended', 'video_found', 'no_video', 'error', 'set',
    'refused', 'auto_recorded', 'auto_record_missed'));
ALTER TABLE alerts DROP CONSTRAINT alerts_event_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_event_check CHECK (event IN ('failed', 'expired', 'missed',
    'not_recording', 'paused', 'recording_stopped', 'no_video', 'auth_broken', 'quota',
    'policy_files_empty', 'stream_down', 'stream_recovered', 'auto_record_refused', 'auto_record_missed',
    'test'));
ALTER TABLE api_usage DROP CONSTRAINT api_usage_api_check;
ALTER TABLE api_usage ADD CONSTRAINT api_usage_api_check CHECK (api IN ('token', 'start_cloud_record',
    'conference_info', 'schedule_conference', 'cloud_record_videos', 'stop_cloud_record',
    'org_conferences', 'stream_event', 'schedule_settings'));
