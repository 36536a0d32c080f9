//! The fake DingTalk (`docs/dingtalk.md`, "The fake"): DingTalk's endpoints on loopback, with its wire formats, for the
//! tests, the demo, the benchmarks, and for ops teams to try a policy.
//!
//! It is a small HTTP/1.1 server of its own (not a framework) so that it can misbehave for real:
//! hang, reset the connection, trickle one byte a second, or close half-way through a body.
//! Admin API under `/_fake/` (see README): `GET /_fake/requests`, `GET /_fake/starts`, `DELETE /_fake/requests`,
//! `POST /_fake/scenario`, `POST /_fake/meetings`, `POST /_fake/expire-tokens`,
//! `POST /_fake/token-outage?seconds=N`, `GET /_fake/stats`,
//! `POST /_fake/recording?conference_id=ID&action=pause|resume|stop|end|silent_once|silent_always|no_video`,
//! and Stream mode's (`stream.rs`): `POST /_fake/events`, `GET /_fake/stream`, `POST /_fake/stream/ping`,
//! `POST /_fake/stream/disconnect?after_ms=N`, `POST /_fake/stream/blackhole?on=true|false`,
//! `POST /_fake/stream/refuse-opens?count=N`, `POST /_fake/stream/redeliver-after?ms=N`.

mod robot;
pub mod scenario;
mod server;
mod state;
pub mod stream;

pub use robot::{RobotMessage, RobotSpec};
pub use scenario::{
    MeetingSpec, MeetingState, RecordingAction, Scenario, ScheduleSpec, Silent, Step, UnknownConferences,
};
pub use server::{FakeDingTalk, LoggedRequest};
pub use stream::{EventSpec, StreamAck, StreamDelivery};
