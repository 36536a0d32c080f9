"""DingTalk's official Python SDK (alibabacloud-dingtalk) accepts dingrec's fake DingTalk.

Run by .ci/run after `cargo build`:  python -m unittest discover -s tests/sdk -v
It starts `dingrec fake-dingtalk` on a free loopback port with a scenario, then calls it with
the SDK exactly as an app would: a token, a successful StartCloudRecord, and a roomClosed error;
a scheduled meeting's auto-record setting (UpdateScheduleConfSettings), which the settings query
does not return, starting the recording as the meeting goes live; a setting from someone who is
not the creator refused.
"""

import os
import socket
import subprocess
import tempfile
import time
import unittest

from alibabacloud_dingtalk.conference_1_0 import models as conf_models
from alibabacloud_dingtalk.conference_1_0.client import Client as ConferenceClient
from alibabacloud_dingtalk.oauth2_1_0 import models as oauth_models
from alibabacloud_dingtalk.oauth2_1_0.client import Client as OAuthClient
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_util import models as util_models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("SDK_TEST_DINGREC_BIN", os.path.join(ROOT, "target", "debug", "dingrec"))

SCENARIO = """
meetings:
  - conference_id: live-meeting-1
    host_union_id: HostUnionId
    state: live
  - conference_id: closed-meeting-1
    host_union_id: HostUnionId
    state: ended
schedules:
  - schedule_conference_id: sched-auto-1
    conference_id: sched-auto-live-1
    host_union_id: HostUnionId
    creator_union_id: CreatorUnionId
    live_after: 6s
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SdkAgainstFake(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.scenario = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        cls.scenario.write(SCENARIO)
        cls.scenario.close()
        cls.proc = subprocess.Popen(
            [BINARY, "fake-dingtalk", "--listen", f"127.0.0.1:{cls.port}", "--scenario", cls.scenario.name],
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", cls.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            cls.proc.kill()
            raise RuntimeError("the fake did not start: " + cls.proc.stderr.read().decode(errors="replace"))

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        os.unlink(cls.scenario.name)

    def config(self):
        c = open_api_models.Config()
        c.protocol = "http"
        c.endpoint = f"127.0.0.1:{self.port}"
        c.region_id = "central"
        return c

    def token(self):
        client = OAuthClient(self.config())
        resp = client.get_access_token(
            oauth_models.GetAccessTokenRequest(app_key="dingappkey", app_secret="app-secret-value")
        )
        return resp

    def test_token(self):
        resp = self.token()
        self.assertEqual(resp.status_code, 200)
        self.assertTrue(resp.body.access_token)
        self.assertEqual(resp.body.expire_in, 7200)
        # Same token until it expires.
        self.assertEqual(self.token().body.access_token, resp.body.access_token)

    def start(self, conference_id):
        client = ConferenceClient(self.config())
        headers = conf_models.StartCloudRecordHeaders()
        headers.x_acs_dingtalk_access_token = self.token().body.access_token
        req = conf_models.StartCloudRecordRequest(
            union_id="HostUnionId", small_window_position="relative_right", mode="speech"
        )
        return client.start_cloud_record_with_options(conference_id, req, headers, util_models.RuntimeOptions())

    def conference(self):
        client = ConferenceClient(self.config())
        return client, self.token().body.access_token

    def update_settings(self, creator):
        client, token = self.conference()
        headers = conf_models.UpdateScheduleConfSettingsHeaders()
        headers.x_acs_dingtalk_access_token = token
        record = conf_models.UpdateScheduleConfSettingsRequestScheduleConfSettingModelMoziConfOpenRecordSetting(
            record_auto_start=1, record_auto_start_type=0, mode="speech"
        )
        req = conf_models.UpdateScheduleConfSettingsRequest(
            creator_union_id=creator,
            schedule_conference_id="sched-auto-1",
            schedule_conf_setting_model=conf_models.UpdateScheduleConfSettingsRequestScheduleConfSettingModel(
                mozi_conf_open_record_setting=record
            ),
        )
        return client.update_schedule_conf_settings_with_options(req, headers, util_models.RuntimeOptions())

    def test_auto_record_setting_starts_the_recording_as_the_meeting_goes_live(self):
        resp = self.update_settings("CreatorUnionId")
        self.assertEqual(resp.status_code, 200)
        self.assertTrue(resp.body.success)
        # The settings query answers, without the recording block: it cannot be read back.
        client, token = self.conference()
        qh = conf_models.QueryScheduleConfSettingsHeaders()
        qh.x_acs_dingtalk_access_token = token
        q = client.query_schedule_conf_settings_with_options(
            conf_models.QueryScheduleConfSettingsRequest(schedule_conference_id="sched-auto-1"),
            qh,
            util_models.RuntimeOptions(),
        )
        self.assertEqual(q.status_code, 200)
        self.assertNotIn("moziConfOpenRecordSetting", str(q.body.to_map()))
        self.assertEqual(q.body.schedule_conf_setting_model.host_union_id, "CreatorUnionId")
        # As the meeting goes live, DingTalk (the fake) starts its recording.
        ih = conf_models.QueryConferenceInfoHeaders()
        ih.x_acs_dingtalk_access_token = token
        deadline = time.time() + 30
        while True:
            info = client.query_conference_info_with_options(
                "sched-auto-live-1", ih, util_models.RuntimeOptions()
            ).body.conf_info
            if info.status == 2 or time.time() > deadline:
                break
            self.assertEqual(info.cloud_record_status, 0, "not before the meeting is live")
            time.sleep(0.2)
        self.assertEqual(info.status, 2)
        self.assertEqual(info.cloud_record_status, 1)

    def test_auto_record_setting_from_someone_not_the_creator_is_refused(self):
        with self.assertRaises(Exception) as caught:
            self.update_settings("SomeoneElse")
        self.assertEqual(getattr(caught.exception, "code", None), "creatorUidError")

    def test_successful_start(self):
        resp = self.start("live-meeting-1")
        self.assertEqual(resp.status_code, 200)
        self.assertEqual(resp.body.code, "200")

    def test_room_closed(self):
        with self.assertRaises(Exception) as caught:
            self.start("closed-meeting-1")
        err = caught.exception
        self.assertEqual(getattr(err, "code", None), "roomClosed")
        self.assertEqual(getattr(err, "statusCode", None) or getattr(err, "data", {}).get("statusCode"), 400)


if __name__ == "__main__":
    unittest.main()
