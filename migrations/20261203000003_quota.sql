-- DingTalk's monthly API quota (docs/quota.md).
--
-- Every call DingTalk counts, per day of the quota's time zone (dingtalk.quota_timezone, where
-- DingTalk's month begins) and API. An attempt's or check's calls are added in the transaction
-- that writes its outcome; token fetches on their own.
CREATE TABLE api_usage (
    day   TEXT NOT NULL CHECK (day GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]'),
    api   TEXT NOT NULL CHECK (api IN ('token', 'start_cloud_record', 'conference_info',
                                       'schedule_conference', 'cloud_record_videos', 'stop_cloud_record')),
    calls INTEGER NOT NULL DEFAULT 0 CHECK (calls >= 0),
    PRIMARY KEY (day, api)
) WITHOUT ROWID;

-- What was said once a month: the forecast passed 80 %, used passed 90 %, the quota ran out
-- (`ApiCountLimitForOrg`), optional calls stopped. A row is the promise not to say it again.
CREATE TABLE quota_events (
    month TEXT NOT NULL CHECK (month GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]'),
    event TEXT NOT NULL CHECK (event IN ('forecast_80', 'used_90', 'exhausted', 'reserve')),
    at    TEXT NOT NULL,
    PRIMARY KEY (month, event)
) WITHOUT ROWID;

-- Attempts refused because the quota ran out: the quota task looks for them every few seconds.
CREATE INDEX attempts_quota_refused ON attempts (started_at)
    WHERE code = 'Forbidden.AccessDenied.ApiCountLimitForOrg';

-- An occurrence refused because the month's quota ran out raises no alert of its own: the one
-- `quota` alert of the month says it for all of them (otherwise the rest of the month's meetings
-- would each send one).
DROP TRIGGER alert_on_final_update;
CREATE TRIGGER alert_on_final_update AFTER UPDATE OF state ON occurrences
WHEN NEW.state IN ('failed', 'expired', 'missed') AND OLD.state IS NOT NEW.state
    AND NEW.last_code IS NOT 'Forbidden.AccessDenied.ApiCountLimitForOrg'
BEGIN
    INSERT INTO alerts (created_at, event, policy_name, occurrence_id, destination, payload, next_attempt_at)
    SELECT NEW.updated_at, NEW.state, policy_name, occurrence_id, destination, payload, NEW.updated_at
    FROM alert_routes WHERE occurrence_id = NEW.id AND NEW.state IN (SELECT value FROM json_each(events));
END;
