//! Tests of the decision, in memory: `decisions` table-driven by rule,
//! `reference` against a brute-force reference of the time rules.

mod decisions;
mod reference;
