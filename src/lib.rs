//! callguard: a SIP gatekeeper proxy between outbound dialers and their
//! carrier. Every initial INVITE is checked before it is forwarded; every
//! rejection says why.
//!
//! # Layout
//! - [`sip`]: zero-copy SIP message parser and URI reader.
//! - [`proxy`]: the sans-IO transaction-stateful proxy core (RFC 3261 §16–17).
//! - [`transport`]: the tokio UDP/TCP driver around the core.
//! - [`numbering`]: numbers to E.164, French number categories, callee time zones.
//! - [`schedule`]: contact hours, holidays, the next allowed instant.
//! - [`dnc`]: do-not-call and consent lists: file snapshots plus run-time changes.
//! - [`dns`]: carriers given as SIP domains, located per RFC 3263 (NAPTR, SRV, A/AAAA).
//! - [`policy`]: the pure decision engine (facts + clock → decision).
//! - [`state`]: refusals, attempt counts and run-time DNC changes, durable in an embedded store;
//!   [`state::shared`]: refusals and counts shared by several instances in Redis.
//! - [`tenant`]: tenants by source address, their compiled policy, the gate.
//! - [`config`]: the TOML configuration and its validation.
//! - [`metrics`]: Prometheus counters with the contract's names.
//! - [`audit`]: the audit trail, one JSON line per decision, written off the call path.
//! - [`admin`]: the admin HTTP API (metrics, probes, check, DNC, refusals, reload).
//! - [`service`]: wiring config, core, transports and admin into one process; reload, drain.

pub mod admin;
pub mod app;
pub mod audit;
pub mod clock;
pub mod codes;
pub mod config;
pub mod dnc;
pub mod dns;
pub mod gate;
pub mod metrics;
pub mod numbering;
pub mod policy;
pub mod proxy;
pub mod schedule;
pub mod sip;
pub mod state;
pub mod transport;

#[cfg(test)]
mod testing;
