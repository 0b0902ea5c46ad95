//! Wire types shared by the hsm coordinator and agent: ids, the handshake, the message catalogue,
//! framing and the checks both sides run on what a peer sends (result paths, and
//! [`display_safe`] for any peer text that is printed or logged).
//!
//! # The conversation
//!
//! The coordinator dials an agent over QUIC (mutual TLS with pinned certificates, so nothing here
//! is ever decoded from an unauthenticated peer) and opens one bidirectional **control stream**:
//!
//! 1. coordinator → agent: a [`Hello`] frame;
//! 2. agent → coordinator: a [`HelloReply`] frame, [`Welcome`] (built by [`negotiate`]) or
//!    [`Reject`] followed by closing the connection;
//! 3. then [`ToAgent`] frames one way and [`FromAgent`] frames the other, until either side closes.
//!
//! Each result file travels on its own **unidirectional stream** opened by the agent after a
//! `FetchResults`: one [`FileHeader`] frame, then exactly `size` raw bytes, then the end of the
//! stream. [`FrameDecoder::into_buffered`] hands back file bytes that arrived with the header.
//!
//! # Frames
//!
//! A frame is a 4-byte big-endian body length and a body of at most [`MAX_FRAME`] bytes of
//! MessagePack written by rmp-serde with named fields ([`encode`], [`decode`], [`FrameDecoder`]).
//! Decoding never panics on any input; a bad frame is an error and the stream should be closed.
//!
//! # Compatibility rules
//!
//! - Peers talk only when their [`PROTOCOL_VERSION`]s are equal ([`is_compatible`]).
//! - A field may be added without a version bump if it has `#[serde(default)]` or is an `Option`:
//!   older peers ignore it, and newer peers fill it in when it is missing.
//! - Removing or renaming a field or variant, changing a type or a meaning, or adding a message
//!   variant (an older peer cannot decode it) needs a bump — except a request only a one-shot
//!   command sends, whose older peer's `Error` answer the sender recognises
//!   ([`is_unknown_request`]; `Clean`, see `clean.rs`).
//! - `Hello` and `HelloReply::Reject` never change incompatibly: they carry the versions.
//!
//! # Delivery
//!
//! Every task event carries `(sweep, task, attempt, seq)`. The agent keeps events until an
//! [`AckMsg`] names them and replays the rest after a reconnect; the coordinator applies an event
//! only when its `seq` follows the last one applied for that attempt, and ignores attempts it no
//! longer assigns.

mod bytes;
mod clean;
pub mod digest;
mod frame;
mod handshake;
mod ids;
mod messages;
mod paths;
pub mod preflight;
pub mod sync;
mod text;
mod time;

pub use bytes::Bytes;
pub use clean::{is_unknown_request, CleanMsg, CleanedMsg, CleanedSweep, KeptSweep};
pub use frame::{
    decode, encode, parse_length_prefix, FrameDecoder, FrameError, MAX_FRAME, PREFIX_LEN,
};
pub use handshake::{
    is_compatible, negotiate, AgentInfo, Hello, HelloReply, Reject, Welcome, PROTOCOL_VERSION,
};
pub use ids::{valid_sweep_id, Attempt, Seq, SweepId, TaskIndex};
pub use messages::{
    AckMsg, AttachMsg, AttachedMsg, CancelMsg, ErrorMsg, EventKind, EventRef, EventsMsg, FetchMsg,
    FileHeader, FileOffer, FileRef, FromAgent, HeartbeatMsg, HpcMsg, HpcResources, JobScriptMsg,
    OutcomeMsg, PingMsg, PongMsg, ResultsDoneMsg, SchedulerChoice, SchedulerRecordMsg,
    SchedulerStateMsg, Stream, SubmitMsg, SweepTaskRef, TaskEventMsg, TaskMsg, TaskRef,
    TemplateMsg, ToAgent, UsageMsg, AGENT_OUTPUT_DIR,
};
pub use paths::{
    check_relative_path, is_sha256_hex, task_dir_name, PathError, MAX_COMPONENT_LEN,
    MAX_PATH_COMPONENTS, MAX_PATH_LEN,
};
pub use preflight::{PreflightMsg, PreflightProblem};
pub use sync::{ManifestEntry, PushHeader, PushReply, SyncDiff, SyncReport, SyncRequest};
pub use text::{display_safe, MAX_DISPLAY_CHARS};
pub use time::{epoch_ms, now_ms, parse_retention};
