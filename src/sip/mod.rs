//! SIP message syntax (RFC 3261 §7, §20, §25): a zero-copy parser and the few
//! rewriting primitives a proxy needs.
//!
//! Why hand-written: a proxy forwards almost every header byte for byte and
//! reads only Via, From/To tags, Call-ID, CSeq, Max-Forwards, Route and
//! Content-Length. The crates reviewed (see README, "Design") either allocate
//! an owned string per header (`rsipstack`), require UTF-8 input and build a
//! typed map of every header (`ezk-sip-types`), or mis-parse legal input
//! (`rsip`: compact forms, folding, `Via :`). Indexing header lines over one
//! `Bytes` buffer and parsing the needed ones on demand costs one small
//! vector per message.

pub mod check;
pub mod message;
pub mod uri;

pub use message::{HeaderName, Message, ParseError, StartLine, Via};
pub use uri::Uri;

/// Magic cookie that marks an RFC 3261 branch (§8.1.1.7).
pub const BRANCH_COOKIE: &[u8] = b"z9hG4bK";
