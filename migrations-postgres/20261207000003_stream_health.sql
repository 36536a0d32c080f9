-- Stream mode's health (docs/events.md), as in SQLite's migration of the same name: the alert
-- events `stream_down` and `stream_recovered`, and the `api_usage` values `org_conferences`
-- and `stream_event`, and the `quota_events` `events_80` and `events_90`.
ALTER TABLE alerts DROP CONSTRAINT alerts_event_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_event_check CHECK (event IN ('failed', 'expired', 'missed',
    'not_recording', 'paused', 'recording_stopped', 'no_video', 'auth_broken', 'quota',
    'policy_files_empty', 'stream_down', 'stream_recovered', 'test'));
ALTER TABLE api_usage DROP CONSTRAINT api_usage_api_check;
ALTER TABLE api_usage ADD CONSTRAINT api_usage_api_check CHECK (api IN ('token', 'start_cloud_record',
    'conference_info', 'schedule_conference', 'cloud_record_videos', 'stop_cloud_record',
    'org_conferences', 'stream_event'));
-- The events' own quota is said once a month at 80 % and 90 % used.
ALTER TABLE quota_events DROP CONSTRAINT quota_events_event_check;
ALTER TABLE quota_events ADD CONSTRAINT quota_events_event_check CHECK (event IN ('forecast_80',
    'used_90', 'exhausted', 'reserve', 'events_80', 'events_90'));
