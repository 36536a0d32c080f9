//! Pure types and functions, no I/O: what a policy is, when it fires, how long to wait before the
//! next attempt, what DingTalk's answer means, and the states an occurrence goes through. Nothing
//! here imports the rest of the crate.

pub mod alert;
pub mod auto_record;
pub mod ids;
pub mod invalid;
pub mod matching;
pub mod outcome;
pub mod policy;
pub mod quota;
pub mod retry;
pub mod schedule;
pub mod state;
pub mod time;
pub mod token;
pub mod verify;

pub use invalid::{Invalid, did_you_mean};
pub use outcome::{Classification, RetryClass};
pub use policy::{ConferenceId, Layout, Policy, PolicyDefaults, PolicyName, Target, UnionId, WindowPosition};
pub use retry::RetryPolicy;
pub use schedule::{Schedule, Zone};
pub use state::{
    AlertEvent, AlertState, AttemptOutcome, CheckKind, CheckOutcome, EventOutcome, OccurrenceState, Trigger,
};
pub use token::SealedToken;
pub use verify::Verify;
