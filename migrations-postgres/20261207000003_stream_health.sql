-- Stream mode's health (docs/events.md), as in SQLite's migration of the same name: the alert
-- events `stream_down` and `stream_recovered`, and the `api_usage` values `org_conferences`
-- and `stream_event`.
ALTER TABLE alerts DROP CONSTRAINT alerts_event_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_event_check CHECK (event IN ('failed', 'expired', 'missed',
    'not_recording', 'paused', 'recording_stopped', 'no_video', 'auth_broken', 'quota',
    'policy_files_empty', 'stream_down', 'stream_recovered', 'test'));
ALTER TABLE api_usage DROP CONSTRAINT api_usage_api_check;
ALTER TABLE api_usage ADD CONSTRAINT api_usage_api_check CHECK (api IN ('token', 'start_cloud_record',
    'conference_info', 'schedule_conference', 'cloud_record_videos', 'stop_cloud_record',
    'org_conferences', 'stream_event'));
