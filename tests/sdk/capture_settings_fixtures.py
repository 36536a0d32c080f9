"""Captures the requests the official SDK (alibabacloud-dingtalk 2.2.65) sends for
UpdateScheduleConfSettings and QueryScheduleConfSettings, with scripted answers, as conformance
fixtures: `python tests/sdk/capture_settings_fixtures.py tests/fixtures/dingtalk`."""
import json, socket, threading, sys, time
from alibabacloud_dingtalk.conference_1_0 import client as cc, models as m
from alibabacloud_tea_openapi import models as om
from alibabacloud_tea_util import models as um

def serve(sock, out, resp_body, status):
    conn, _ = sock.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = [l.split(": ", 1) for l in lines[1:]]
    n = int(dict((k.lower(), v) for k, v in hdrs).get("content-length", "0"))
    while len(body) < n:
        body += conn.recv(65536)
    method, target, _ = lines[0].split(" ")
    path, _, query = target.partition("?")
    out.update(method=method, path=path, query=query, headers=dict(hdrs), headers_in_wire_order=hdrs,
               body=body.decode(), body_json=json.loads(body) if body else None,
               raw=(head + b"\r\n\r\n" + body).decode())
    rb = json.dumps(resp_body, separators=(",", ":")).encode()
    conn.sendall(b"HTTP/1.1 %d OK\r\nServer: DingTalk/1.0.0\r\nContent-Type: application/json;charset=utf-8\r\nx-acs-request-id: 6F3C2E9A-7B1D-7E44-9A0C-2F1E3D4C5B6A\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (status, len(rb)) + rb)
    conn.close()

def case(name, note, call, resp_body, status=200):
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(1)
    port = sock.getsockname()[1]
    req = {}
    t = threading.Thread(target=serve, args=(sock, req, resp_body, status)); t.start()
    cfg = om.Config(); cfg.protocol = "http"; cfg.region_id = "central"; cfg.endpoint = f"127.0.0.1:{port}"
    c = cc.Client(cfg)
    try:
        r = call(c); res = {"ok": True, "type": type(r).__name__, "to_map": r.to_map()}
    except Exception as e:
        res = {"ok": False, "error": type(e).__name__, "code": getattr(e, "code", None), "message": str(e)[:300]}
    t.join()
    f = {"case": name, "note": note, "request": req,
         "response": {"status": status, "headers": {"Server": "DingTalk/1.0.0", "Content-Type": "application/json;charset=utf-8",
                      "x-acs-request-id": "6F3C2E9A-7B1D-7E44-9A0C-2F1E3D4C5B6A"},
                      "body": json.dumps(resp_body, separators=(",", ":")), "body_json": resp_body, "delay_s": 0},
         "sdk_result": res, "requests_seen": 1}
    json.dump(f, open(f"{OUT}/{name}.json", "w"), indent=1, ensure_ascii=False)
    print(name, req["method"], req["path"], req["query"], req["body"])

OUT = sys.argv[1] if len(sys.argv) > 1 else "."
TOKEN = "d27c05a1b2c3d4e5f60718293a4b5c6d"
def update(start_type, on=1, mode="speech"):
    def call(c):
        h = m.UpdateScheduleConfSettingsHeaders(); h.x_acs_dingtalk_access_token = TOKEN
        rec = m.UpdateScheduleConfSettingsRequestScheduleConfSettingModelMoziConfOpenRecordSetting(
            record_auto_start=on, record_auto_start_type=start_type, mode=mode)
        model = m.UpdateScheduleConfSettingsRequestScheduleConfSettingModel(mozi_conf_open_record_setting=rec)
        r = m.UpdateScheduleConfSettingsRequest(creator_union_id="WFBkgxxxCreatorUnionId",
              schedule_conference_id="5f1a2b3c4d5e6f708192a3b4c5d6e7f8", schedule_conf_setting_model=model)
        return c.update_schedule_conf_settings_with_options(r, h, um.RuntimeOptions())
    return call

case("update_schedule_conf_settings_ok", "UpdateScheduleConfSettings: auto-record when the host joins, layout speech",
     update(0), {"success": True})
case("update_schedule_conf_settings_anyone_grid", "UpdateScheduleConfSettings: auto-record when anyone joins, layout grid",
     update(2, mode="grid"), {"success": True})
case("update_schedule_conf_settings_err_400_creatorUidError", "UpdateScheduleConfSettings refused: creatorUnionId is not the creator",
     update(0), {"code": "creatorUidError", "message": "creator uid error", "requestid": "6F3C2E9A-7B1D-7E44-9A0C-2F1E3D4C5B6A"}, 400)
case("update_schedule_conf_settings_err_403_noPermission", "UpdateScheduleConfSettings refused: the app lacks VideoConference.Conference.Write",
     update(0), {"code": "noPermission", "message": "no permission", "requestid": "6F3C2E9A-7B1D-7E44-9A0C-2F1E3D4C5B6A"}, 403)
def query(c):
    h = m.QueryScheduleConfSettingsHeaders(); h.x_acs_dingtalk_access_token = TOKEN
    r = m.QueryScheduleConfSettingsRequest(schedule_conference_id="5f1a2b3c4d5e6f708192a3b4c5d6e7f8")
    return c.query_schedule_conf_settings_with_options(r, h, um.RuntimeOptions())
case("query_schedule_conf_settings_ok", "QueryScheduleConfSettings: no moziConfOpenRecordSetting in the answer",
     query, {"scheduleConfSettingModel": {"hostUnionId": "WFBkgxxxCreatorUnionId", "lockRoom": 0, "muteOnJoin": 0}})
