//! The policy clock: the instant decisions are taken at. Only the drivers
//! read it (the gate for a call, the admin API, the CLI); the decision
//! itself and the proxy core take the instant as an argument.

use chrono::{DateTime, Utc};

/// The policy clock. `Shifted` serves `serve --at`: testers exercise the
/// hour rules at any time of day; never for production.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    Shifted(chrono::Duration),
}

impl Clock {
    /// A clock that reads `at` now and runs on from there.
    pub fn starting_at(at: DateTime<Utc>) -> Clock {
        Clock::Shifted(at - Utc::now())
    }
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Shifted(d) => Utc::now() + *d,
        }
    }
}
