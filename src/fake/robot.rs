//! The fake's DingTalk custom group robots (`POST /robot/send`, docs/dingtalk.md): the access
//! token, the signature and its timestamp's age, the `errcode` answers, 20 messages a minute (then
//! muted for 10 minutes), `msgUuid` dropping repeats, and a record of every message.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A robot the fake knows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotSpec {
    pub access_token: String,
    /// The `SEC…` secret: when set, every message must be signed with it.
    #[serde(default)]
    pub secret: Option<String>,
    /// Answer these `errcode`s first, one message each (e.g. `[410100]`), then normally.
    #[serde(default)]
    pub script: Vec<i64>,
    /// Hold every answer this long (the message is taken first: a sender that dies waiting has
    /// delivered it).
    #[serde(default, with = "humantime_serde")]
    pub delay: Option<std::time::Duration>,
}

/// A message the fake received, and what it answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RobotMessage {
    /// The fake's clock (the test's, when it has one), in ms.
    pub at_ms: i64,
    pub access_token: String,
    pub errcode: i64,
    pub msg_uuid: Option<String>,
    /// A repeat of an accepted `msgUuid`: answered 0, not shown in the group again.
    pub duplicate: bool,
    pub title: String,
    pub text: String,
    pub at_mobiles: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Robots {
    specs: HashMap<String, RobotSpec>,
    scripts: HashMap<String, VecDeque<i64>>,
    accepted: HashMap<String, VecDeque<DateTime<Utc>>>,
    muted_until: HashMap<String, DateTime<Utc>>,
    uuids: HashSet<String>,
    pub messages: Vec<RobotMessage>,
}

pub const PER_MINUTE: usize = 20;
const MUTE: TimeDelta = TimeDelta::minutes(10);

fn answer(errcode: i64, errmsg: &str) -> Value {
    json!({"errcode": errcode, "errmsg": errmsg})
}

impl Robots {
    pub fn load(&mut self, specs: &[RobotSpec]) {
        self.specs = specs
            .iter()
            .map(|s| (s.access_token.clone(), s.clone()))
            .collect();
        self.scripts = specs
            .iter()
            .map(|s| (s.access_token.clone(), s.script.iter().copied().collect()))
            .collect();
    }

    /// One `POST /robot/send`: the query's `access_token`, `timestamp`, `sign`, and the body.
    pub fn send(
        &mut self,
        now: DateTime<Utc>,
        query: &HashMap<String, String>,
        body: &Value,
    ) -> (Value, Option<std::time::Duration>) {
        let token = query.get("access_token").cloned().unwrap_or_default();
        let s = |v: &Value, p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let mut msg = RobotMessage {
            at_ms: now.timestamp_millis(),
            access_token: token.clone(),
            errcode: 0,
            msg_uuid: body.get("msgUuid").and_then(Value::as_str).map(str::to_owned),
            duplicate: false,
            title: s(body, "/markdown/title"),
            text: if body.pointer("/markdown").is_some() {
                s(body, "/markdown/text")
            } else {
                s(body, "/text/content")
            },
            at_mobiles: body
                .pointer("/at/atMobiles")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
        };
        let reply = self.decide(now, &token, query, body, &mut msg);
        self.messages.push(msg);
        (reply, self.specs.get(&token).and_then(|s| s.delay))
    }

    fn decide(
        &mut self,
        now: DateTime<Utc>,
        token: &str,
        query: &HashMap<String, String>,
        body: &Value,
        msg: &mut RobotMessage,
    ) -> Value {
        let mut refuse = |code: i64, text: &str| {
            msg.errcode = code;
            answer(code, text)
        };
        let Some(spec) = self.specs.get(token).cloned() else {
            return refuse(400101, "token not exist");
        };
        if let Some(secret) = &spec.secret {
            let ts = query.get("timestamp").and_then(|t| t.parse::<i64>().ok());
            let Some(ts) = ts else {
                return refuse(310000, "sign not match, timestamp missing");
            };
            // The signature is checked against the wall clock's hour, as DingTalk does.
            #[allow(clippy::disallowed_methods)]
            let wall = Utc::now().timestamp_millis();
            if (wall - ts).abs() > 3_600_000 {
                return refuse(310000, "sign not match, timestamp is more than 1 hour off");
            }
            let want = crate::alerts::deliver::robot_sign(secret, ts);
            if query.get("sign").map(String::as_str) != Some(want.as_str()) {
                return refuse(310000, "sign not match");
            }
        }
        if body.get("msgtype").and_then(Value::as_str).is_none() {
            return refuse(40035, "missing msgtype");
        }
        if let Some(code) = self.scripts.get_mut(token).and_then(VecDeque::pop_front) {
            return refuse(code, "scripted answer");
        }
        if self.muted_until.get(token).is_some_and(|m| now < *m) {
            return refuse(410100, "send too fast, exceed 20 times per minute");
        }
        let accepted = self.accepted.entry(token.to_owned()).or_default();
        while accepted
            .front()
            .is_some_and(|t| now - *t >= TimeDelta::minutes(1))
        {
            accepted.pop_front();
        }
        if accepted.len() >= PER_MINUTE {
            self.muted_until.insert(token.to_owned(), now + MUTE);
            return refuse(410100, "send too fast, exceed 20 times per minute");
        }
        if let Some(u) = &msg.msg_uuid
            && !self.uuids.insert(u.clone())
        {
            msg.duplicate = true;
            return answer(0, "ok");
        }
        accepted.push_back(now);
        answer(0, "ok")
    }
}
