//! callguard: a SIP gatekeeper proxy between outbound dialers and their
//! carrier. Every initial INVITE is checked before it is forwarded; every
//! rejection says why.
//!
//! # Layout
//! Layers, each using only the ones above it (no import cycles):
//!
//! 1. Vocabulary and pure data, no I/O:
//!    - [`sip`]: zero-copy SIP message parser, URI reader, request checks.
//!    - [`numbering`]: numbers to E.164, numbering plans, callee time zones.
//!    - [`schedule`]: contact hours, holidays, the next allowed instant.
//!    - [`dnc`]: do-not-call and consent lists: file snapshots plus run-time changes.
//!    - [`codes`]: the closed sets a decision is named by (outcome, reason code).
//!    - [`clock`]: the policy clock, read only by drivers.
//! 2. Decisions and SIP, sans-IO:
//!    - [`policy`]: the pure decision engine (facts + history + instant → decision).
//!    - [`proxy`]: the proxy core (§16) on the transaction machines
//!      ([`proxy::txn`], §17): messages and instants in, datagrams and deadlines out.
//!    - [`admission`]: what a stranger (no tenant, no carrier) may cost: per-source
//!      budgets, addresses and instants in, verdicts and an account out.
//! 3. Effects the call path needs:
//!    - [`state`]: refusals, attempts, DNC and consent changes behind one [`state::Backend`]
//!      (embedded redb store, or Redis shared by several instances).
//!    - [`audit`]: the audit trail (decisions, call outcomes, admin changes), hash-chained,
//!      written off the call path; read back by `audit verify` and `audit search`.
//!    - [`dns`]: carriers given as SIP domains, located per RFC 3263.
//!    - [`transport`]: the UDP/TCP/TLS driver around the core (UDP threads, tokio).
//! 4. [`gate`]: the one flow for an initial INVITE (tenant → facts → state →
//!    policy → count → audit → verdict), the proxy's [`proxy::Gatekeeper`].
//! 5. The process:
//!    - [`config`]: the TOML configuration as data, with syntax checks only.
//!    - [`app`]: compiles the config into policies ([`app::compile`]), binds
//!      sockets, starts shards and tasks; reload, carriers, DNC sync, drain.
//!    - [`admin`]: the admin HTTP API, reaching the app through [`admin::Operations`].
//!    - [`metrics`]: Prometheus series with the contract's names.

pub mod admin;
pub mod admission;
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
pub mod rules;
pub mod schedule;
pub mod sip;
pub mod state;
pub mod text;
pub mod transport;

#[cfg(test)]
mod testing;
