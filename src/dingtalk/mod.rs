//! The DingTalk open API client: token cache, StartCloudRecord/StopCloudRecord, meeting lookups,
//! error parsing. Speaks what the official SDK sends (`docs/dingtalk.md`), but percent-encodes path
//! segments, never follows redirects, and keeps the status of every error.

pub mod client;
pub mod error;
pub mod seal;
pub mod stream;
pub mod token;

pub use client::{ConferenceItem, DingTalkClient, StartRequest, StreamTicket};
pub use error::{DingTalkError, TransportKind};
