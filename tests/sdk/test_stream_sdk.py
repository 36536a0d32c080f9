"""DingTalk's official Python Stream SDK (dingtalk-stream 0.24.3) against dingrec's fake gateway.

Run by scripts/test after `cargo build`:  python -m unittest discover -s tests/sdk -v
It starts `dingrec fake-dingtalk`, points the SDK at it with DINGTALK_OPENAPI_ENDPOINT (read when
the SDK is imported) and replaces the SDK's get_host_ip (which would ask the route to 8.8.8.8), so
nothing leaves loopback. The SDK opens a connection, receives a meeting_status_change event and
acknowledges it in its own form (the event's data echoed), and answers a ping. Its open call and
ping answer are held to tests/fixtures/stream_protocol.json, the file tests/it/stream.rs holds
dingrec's own to.
"""

import asyncio
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("SDK_TEST_DINGREC_BIN", os.path.join(ROOT, "target", "debug", "dingrec"))
KEY, SECRET = "dingstreamkey", "stream-secret-value"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()
BASE = f"http://127.0.0.1:{PORT}"
os.environ["DINGTALK_OPENAPI_ENDPOINT"] = BASE

import dingtalk_stream  # noqa: E402  (after the endpoint is set: the SDK reads it on import)
from dingtalk_stream import AckMessage  # noqa: E402

with open(os.path.join(ROOT, "tests", "fixtures", "stream_protocol.json")) as f:
    PROTOCOL = json.load(f)


def admin(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + "/_fake/" + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def wait_for(what, f, limit=20):
    deadline = time.time() + limit
    while time.time() < deadline:
        value = f()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class Recorder(dingtalk_stream.EventHandler):
    def __init__(self):
        super().__init__()
        self.events = []

    async def process(self, event):
        self.events.append(event)
        return AckMessage.STATUS_OK, "OK"


class StreamSdkAgainstFake(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.scenario = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        cls.scenario.write(f"app_key: {KEY}\napp_secret: {SECRET}\n")
        cls.scenario.close()
        cls.proc = subprocess.Popen(
            [BINARY, "fake-dingtalk", "--listen", f"127.0.0.1:{PORT}", "--scenario", cls.scenario.name],
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            cls.proc.kill()
            raise RuntimeError("the fake did not start: " + cls.proc.stderr.read().decode(errors="replace"))
        cls.recorder = Recorder()
        client = dingtalk_stream.DingTalkStreamClient(dingtalk_stream.Credential(KEY, SECRET))
        client.get_host_ip = lambda: "127.0.0.1"
        client.register_all_event_handler(cls.recorder)
        threading.Thread(target=lambda: asyncio.run(client.start()), daemon=True).start()
        wait_for("the SDK's connection", lambda: admin("GET", "stream")["connections"] == 1)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        os.unlink(cls.scenario.name)

    def test_the_sdk_opens_as_the_protocol_file_says(self):
        body = admin("GET", "stream")["open_bodies"][0]
        self.assertEqual(sorted(body), sorted(PROTOCOL["open_fields"]))
        self.assertEqual(body["clientId"], KEY)
        self.assertEqual(body["clientSecret"], "[REDACTED]", "the fake never keeps the secret")
        self.assertEqual(body["subscriptions"], PROTOCOL["event_subscriptions"])
        paths = [r["path"] for r in admin("GET", "requests")]
        self.assertIn(PROTOCOL["open_path"], paths)

    def test_the_sdk_receives_an_event_and_acknowledges_it(self):
        pushed = admin(
            "POST",
            "events",
            {"conference_id": "sdk-conf-1", "title": "Board", "creator_id": "union-creator"},
        )
        event = wait_for("the event at the SDK", lambda: self.recorder.events and self.recorder.events[-1])
        self.assertEqual(event.headers.event_id, pushed["event_id"])
        self.assertEqual(event.headers.event_type, "meeting_status_change")
        self.assertEqual(event.data["changeScene"], "conference_created")
        self.assertEqual(event.data["openConfModel"]["conferenceId"], "sdk-conf-1")

        def acked():
            acks = [a for a in admin("GET", "stream")["acks"] if a["event_id"] == pushed["event_id"]]
            return acks and acks[0]

        ack = wait_for("the SDK's acknowledgement", acked)
        self.assertEqual(ack["code"], 200)
        self.assertEqual(ack["status"], "ECHO", "the SDK echoes the event's data")
        self.assertEqual(admin("GET", "stream")["unacked"], 0)

    def test_the_sdk_answers_a_ping_as_the_protocol_file_says(self):
        admin("POST", "stream/ping")

        def pong():
            pongs = [a for a in admin("GET", "stream")["acks"] if a["status"] == "PONG"]
            return pongs and pongs[0]

        answer = json.loads(wait_for("the SDK's ping answer", pong)["raw"])
        self.assertEqual(sorted(answer), sorted(PROTOCOL["ping_answer_fields"]))
        self.assertEqual(answer["code"], 200)
        self.assertEqual(answer["headers"]["contentType"], "application/json")


if __name__ == "__main__":
    unittest.main()
