//! The closed vocabulary of decisions the contract names: what happened to
//! an initial INVITE ([`Outcome`]) and why ([`Code`], sent as
//! `X-Callguard-Reason`, counted as the `reason` label, written in the
//! audit trail). Shared by the policy, the gate and the proxy core.

use std::fmt;

/// What happened to an initial INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Forwarded: every rule passed.
    Allow,
    /// Refused, with the response the code says.
    Reject,
    /// Forwarded, tagged: a failed rule is enforced as `warn`.
    Warn,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Reject => "reject",
            Outcome::Warn => "warn",
        }
    }
}

/// Why a call was refused or tagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    // Rule 1.
    SourceNotAuthorized,
    // The rules a tenant configures, in decision order (`policy::Rule`).
    InvalidCallee,
    NoRuleSet,
    AnonymousCallerId,
    CallerIdCategory,
    Dnc,
    DncListStale,
    RefusalCooloff,
    NoConsent,
    Closure,
    PublicHoliday,
    Weekend,
    OutsideHours,
    FrequencyCap,
    // Not rules: the state, the audit trail or the proxy itself.
    PolicyUnavailable,
    AuditUnavailable,
    ShuttingDown,
    NoCarrier,
    /// No carrier gave a final response in time (`408`).
    CarrierTimeout,
    /// No carrier could be reached (`503`).
    CarrierUnreachable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::SourceNotAuthorized => "source_not_authorized",
            Code::InvalidCallee => "invalid_callee",
            Code::NoRuleSet => "no_rule_set",
            Code::AnonymousCallerId => "anonymous_caller_id",
            Code::CallerIdCategory => "caller_id_category",
            Code::Dnc => "dnc",
            Code::DncListStale => "dnc_list_stale",
            Code::RefusalCooloff => "refusal_cooloff",
            Code::NoConsent => "no_consent",
            Code::Closure => "closure",
            Code::PublicHoliday => "public_holiday",
            Code::Weekend => "weekend",
            Code::OutsideHours => "outside_hours",
            Code::FrequencyCap => "frequency_cap",
            Code::PolicyUnavailable => "policy_unavailable",
            Code::AuditUnavailable => "audit_unavailable",
            Code::ShuttingDown => "shutting_down",
            Code::NoCarrier => "no_carrier",
            Code::CarrierTimeout => "carrier_timeout",
            Code::CarrierUnreachable => "carrier_unreachable",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
