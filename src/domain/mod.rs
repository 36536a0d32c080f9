//! Pure types and functions, no I/O: what a policy is, when it fires, how long to wait before the
//! next attempt, and what DingTalk's answer means. Nothing here imports the rest of the crate.

pub mod outcome;
pub mod policy;
pub mod retry;
pub mod schedule;
pub mod time;

pub use outcome::{Classification, RetryClass};
pub use policy::{ConferenceId, Layout, Policy, PolicyName, Target, UnionId, WindowPosition};
pub use retry::RetryPolicy;
pub use schedule::{Schedule, Zone};
