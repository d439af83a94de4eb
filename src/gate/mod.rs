//! The gate: what happens to an initial INVITE between the proxy core and
//! its verdict, written once. The tenant is recognised (by source network
//! or certificate), the call's facts are read from the INVITE, then one
//! flow runs: the callee's history read from the state, the policy's
//! decision, the attempt counted (atomically with the cap check) when the
//! call will be forwarded, the audit record, the verdict. When the state
//! cannot be read the gate fails closed (`503 policy_unavailable`) or, if
//! configured, open.
//!
//! The flow is one `async fn`. With the embedded state every step is ready
//! at once: the gate polls the flow once, inline, and answers the core at
//! once (no task, no allocation). With Redis a step waits on the network:
//! the flow then owns its inputs and goes to the core as a
//! [`Verdict::Pending`], which the driver runs as a task.

pub mod facts;
pub mod tenants;

pub use facts::{facts, RefusalSignal};
pub use tenants::Tenants;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::histogram::Histogram;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use crate::audit::{Audit, Record};
use crate::clock::Clock;
use crate::codes::Code;
use crate::numbering::E164;
use crate::policy::{Decision, Enforce, Facts, History, Outcome, Rule, TenantPolicy};
use crate::proxy::{Gatekeeper, Peer, Pending, Rejection, Settlement, Ticket, Verdict};
use crate::sip::message::HeaderName;
use crate::sip::Message;
use crate::state::Backend;
use crate::transport::tls::PeerNames;

/// When the call state cannot be read (Redis down or slow).
#[derive(Debug, Clone, Copy)]
pub struct Unavailable {
    /// Forward unchecked, tagged (`true`), or refuse `503` (`false`).
    pub fail_open: bool,
    /// `Retry-After` of the `503`.
    pub retry_after: u64,
}

/// What the flow needs beyond the tenant and the facts; clones share
/// (the pending path owns one).
#[derive(Clone)]
struct FlowCtx {
    /// Refusals and attempts; without it rules 6 and 9 see no history
    /// (`callguard check`).
    state: Option<Backend>,
    unavailable: Unavailable,
    audit: Option<Audit>,
    /// Hash of the config text, written in every audit line.
    config_version: Arc<str>,
    /// Where the time each decision takes is observed
    /// (`callguard_decision_duration_seconds`).
    durations: Option<Histogram>,
}

/// The gatekeeper the proxy core calls for each initial INVITE.
pub struct Gate {
    pub tenants: Tenants,
    pub clock: Clock,
    pub refusal: RefusalSignal,
    /// Client-certificate names of the TLS connections open now.
    pub peer_names: Option<Arc<PeerNames>>,
    flow: FlowCtx,
}

/// How a [`Gate`] is made: everything but the tenants is optional.
pub struct GateParts {
    pub tenants: Tenants,
    pub clock: Clock,
    pub state: Option<Backend>,
    pub unavailable: Unavailable,
    pub audit: Option<Audit>,
    pub refusal: RefusalSignal,
    pub config_version: Arc<str>,
    pub durations: Option<Histogram>,
    pub peer_names: Option<Arc<PeerNames>>,
}

impl GateParts {
    /// A gate with no state, no audit trail and the system clock.
    pub fn new(tenants: Tenants) -> GateParts {
        GateParts {
            tenants,
            clock: Clock::System,
            state: None,
            unavailable: Unavailable {
                fail_open: false,
                retry_after: 60,
            },
            audit: None,
            refusal: RefusalSignal::default(),
            config_version: "".into(),
            durations: None,
            peer_names: None,
        }
    }

    pub fn build(self) -> Gate {
        Gate {
            tenants: self.tenants,
            clock: self.clock,
            refusal: self.refusal,
            peer_names: self.peer_names,
            flow: FlowCtx {
                state: self.state,
                unavailable: self.unavailable,
                audit: self.audit,
                config_version: self.config_version,
                durations: self.durations,
            },
        }
    }
}

/// Rule 1 of the decision table: the source must belong to a tenant.
pub fn source_not_authorized(source: &Peer) -> Rejection {
    Rejection {
        tenant: None,
        status: 403,
        phrase: "Source Not Authorized".into(),
        code: Code::SourceNotAuthorized,
        explanation: format!(
            "source {} is not in any tenant's dialer networks",
            source.addr.ip()
        ),
        retry_after: None,
    }
}

/// The audit trail cannot take another record (the disk refuses its
/// writes, or stalls): the call is refused rather than placed unrecorded,
/// and counted.
fn audit_unavailable() -> Rejection {
    Rejection {
        tenant: None,
        status: 503,
        phrase: "Service Unavailable".into(),
        code: Code::AuditUnavailable,
        explanation:
            "the audit trail cannot be written (its disk refuses writes or stalls): the call is not placed unrecorded"
                .into(),
        retry_after: Some(5),
    }
}

impl Gate {
    /// The state this gate reads and counts with.
    pub fn state(&self) -> Option<&Backend> {
        self.flow.state.as_ref()
    }

    /// The decision the proxy would take for a call, with the state read
    /// and nothing counted (`POST /v1/check`).
    pub async fn decide(
        &self,
        t: &TenantPolicy,
        facts: &Facts<'_>,
        now: DateTime<Utc>,
    ) -> Decision {
        decide(&self.flow, t, facts, now, false).await.0
    }

    /// The decision for a call that is forwarded if allowed: its attempt
    /// is counted with the cap check. Neither audited nor timed (the
    /// Gatekeeper path does both).
    pub async fn decide_and_count(
        &self,
        t: &TenantPolicy,
        facts: &Facts<'_>,
        now: DateTime<Utc>,
    ) -> Decision {
        decide(&self.flow, t, facts, now, true).await.0
    }

    /// [`Gate::decide_and_count`] run inline; `None` when the state would
    /// wait on the network (Redis).
    pub fn decide_and_count_now(
        &self,
        t: &TenantPolicy,
        facts: &Facts<'_>,
        now: DateTime<Utc>,
    ) -> Option<Decision> {
        match poll_once(self.decide_and_count(t, facts, now)) {
            Poll::Ready(d) => Some(d),
            Poll::Pending => None,
        }
    }
}

/// An attempt the gate counted for a call it lets through: handed to the
/// core as the call's [`Ticket`], and taken back if the carrier answers
/// only with a challenge for credentials (see [`Gate::settled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counted {
    callee: E164,
    at: DateTime<Utc>,
}

impl Counted {
    fn ticket(self) -> Ticket {
        Ticket([self.callee.digits(), self.at.timestamp() as u64])
    }

    fn of(t: Ticket) -> Option<Counted> {
        let at = DateTime::from_timestamp(t.0[1] as i64, 0)?;
        Some(Counted {
            callee: E164::from_digits(t.0[0]),
            at,
        })
    }
}

/// Read → decide → count: the decision for one call of tenant `t` with its
/// history from the state. `count`: the call will be forwarded if allowed,
/// so its attempt is counted atomically with the cap check; the attempt
/// counted, if any, comes back with the decision.
///
/// While the state is unavailable (Redis), the decision is taken on this
/// instance's own view: the refusals and attempts it holds. A call that
/// view refuses is refused for its rule; one it allows is refused `503`
/// (fail-closed) or forwarded with a warning and counted here, to be
/// shared with Redis when it is back (`fail_open`).
async fn decide(
    flow: &FlowCtx,
    t: &TenantPolicy,
    facts: &Facts<'_>,
    now: DateTime<Utc>,
    count: bool,
) -> (Decision, Option<Counted>) {
    let state = flow.state.as_ref();
    match decide_on(state, t, facts, now, count).await {
        Ok(r) => r,
        Err((_, e)) => {
            let local = state.map(Backend::local_only);
            let count = count && flow.unavailable.fail_open;
            // This instance's store answers without fail; if it ever did
            // not, the rules that need no state would still decide.
            let (d, counted) = decide_on(local.as_ref(), t, facts, now, count)
                .await
                .unwrap_or_else(|(d, _)| (d, None));
            (unavailable(flow.unavailable, d, &e), counted)
        }
    }
}

/// [`decide`] on one view of the state. On a state error: the decision of
/// the rules that need no state, and the error.
async fn decide_on(
    state: Option<&Backend>,
    t: &TenantPolicy,
    facts: &Facts<'_>,
    now: DateTime<Utc>,
    count: bool,
) -> Result<(Decision, Option<Counted>), (Decision, crate::state::Error)> {
    let resolved = t.resolve(facts);
    let mut closures = state.and_then(|s| s.closures());
    let r = &resolved;
    // Called once, on whichever path the call takes.
    let mut decide = move |history: &mut History| {
        history.closures = closures.take();
        t.decide_resolved(facts, r, history, now)
    };
    let (Some(state), Ok(callee), Some(a)) = (state, resolved.callee, resolved.applied()) else {
        return Ok((decide(&mut History::default()), None));
    };
    let mode = t.mode_of(facts.mode);
    let today = now.date_naive();
    let cooloff = a.cooloff(today).is_some();
    let cap = a.counted_cap(mode, today);
    // When the call is counted, the count returns the attempts: one access
    // to them per call (one map entry lock, or one Redis script).
    let window = if count { None } else { cap.map(|c| c.window) };
    let mut history = if cooloff || window.is_some() {
        match state.history(&t.id, callee, cooloff, window, now).await {
            Ok(h) => h,
            Err(e) => return Err((decide(&mut History::default()), e)),
        }
    } else {
        History::default()
    };
    let mut d = decide(&mut history);
    let mut counted = None;
    if let (Some(cap), Some(callee)) = (cap, d.callee) {
        let prior = if count && d.decision != Outcome::Reject {
            let enforce = t.enforcement(d.mode, Rule::FrequencyCap) == Enforce::Block;
            match state.count(&t.id, callee, now, cap, enforce).await {
                Ok(p) => {
                    // The store adds the attempt unless the cap is
                    // enforced and reached (the call is then refused).
                    if !enforce || p.len() < cap.attempts as usize {
                        counted = Some(Counted { callee, at: now });
                    }
                    p
                }
                Err(e) => return Err((d, e)),
            }
        } else {
            history.attempts
        };
        t.fold_cap(&mut d, a, callee, &prior, now);
    }
    Ok((d, counted))
}

/// The decision when the state could not be read, taken on this instance's
/// own view `d`: a call it refuses stays refused (a DNC callee still gets
/// `603`); a call it allows is refused `503 policy_unavailable`
/// (fail-closed) or forwarded with a `policy_unavailable` warning
/// (fail-open).
fn unavailable(u: Unavailable, mut d: Decision, e: &crate::state::Error) -> Decision {
    if d.decision == Outcome::Reject {
        return d;
    }
    d.reason = Some(Code::PolicyUnavailable);
    if u.fail_open {
        d.decision = Outcome::Warn;
        d.explanation = format!(
            "call state unavailable ({e}): forwarded on this instance's own refusals and attempts only, and counted here until the state is back (fail_open)"
        )
        .into();
    } else {
        d.decision = Outcome::Reject;
        d.status = 503;
        d.phrase = "Service Unavailable".into();
        d.explanation =
            format!("call state unavailable ({e}): refusals and attempts cannot be checked").into();
        d.retry_after = Some(u.retry_after);
    }
    d
}

/// An initial INVITE as the flow remembers it for its audit record.
struct Call {
    call_id: String,
    source: std::net::SocketAddr,
    started: std::time::Instant,
}

/// The whole flow for one forwarded-or-not call: decide (counting), time
/// it, record it, and the verdict.
async fn call(
    flow: &FlowCtx,
    t: &TenantPolicy,
    facts: &Facts<'_>,
    now: DateTime<Utc>,
    c: Call,
) -> Verdict {
    let (d, counted) = decide(flow, t, facts, now, true).await;
    if let Some(h) = &flow.durations {
        h.observe(c.started.elapsed().as_secs_f64());
    }
    let mut verdict = verdict(t, &d, counted);
    if let Some(a) = &flow.audit {
        let record = Record {
            call_id: c.call_id,
            source: c.source,
            decision: Some(d),
            at: now,
            config_version: flow.config_version.clone(),
        };
        if a.try_record(record).is_err() && matches!(verdict, Verdict::Forward { .. }) {
            verdict = Verdict::Reject(audit_unavailable());
        }
    }
    verdict
}

fn verdict(t: &TenantPolicy, d: &Decision, counted: Option<Counted>) -> Verdict {
    let ticket = counted.map(Counted::ticket);
    match d.decision {
        Outcome::Allow => Verdict::Forward {
            tenant: t.id.clone(),
            headers: Vec::new(),
            warn: None,
            ticket,
        },
        Outcome::Warn => Verdict::Forward {
            tenant: t.id.clone(),
            headers: vec![(
                "X-Callguard-Warning".into(),
                format!("{}; {}", d.reason_str().unwrap_or(""), d.explanation),
            )],
            warn: d.reason,
            ticket,
        },
        Outcome::Reject => Verdict::Reject(Rejection {
            tenant: Some(t.id.clone()),
            status: d.status,
            phrase: d.phrase.clone(),
            // The policy names the rule of every refusal; a refusal without one
            // would be a policy defect, reported as the state's failure.
            code: d.reason.unwrap_or(Code::PolicyUnavailable),
            explanation: d.explanation.to_string(),
            retry_after: d.retry_after,
        }),
    }
}

/// Polls a future once. The flow with the embedded state never waits, so
/// it completes here without a task or a waker that could be woken.
fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
    let mut f = std::pin::pin!(f);
    f.as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// The facts of a call, owned, for a flow that outlives the message.
struct OwnedFacts {
    caller: Option<Box<str>>,
    also_presented: Vec<Box<str>>,
    withheld: bool,
    callee: Box<str>,
    mode: Option<Box<str>>,
}

impl OwnedFacts {
    fn new(f: &Facts<'_>) -> OwnedFacts {
        OwnedFacts {
            caller: f.caller.map(Into::into),
            also_presented: f.also_presented.iter().map(|&c| c.into()).collect(),
            withheld: f.withheld,
            callee: f.callee.into(),
            mode: f.mode.map(Into::into),
        }
    }
    fn get(&self) -> Facts<'_> {
        Facts {
            caller: self.caller.as_deref(),
            also_presented: self.also_presented.iter().map(|c| &**c).collect(),
            withheld: self.withheld,
            callee: &self.callee,
            mode: self.mode.as_deref(),
        }
    }
}

impl Gate {
    /// The version of the config this gate was built from (audit lines).
    pub fn config_version(&self) -> &Arc<str> {
        &self.flow.config_version
    }

    /// The audit trail, where admin changes are recorded too.
    pub fn audit(&self) -> Option<&Audit> {
        self.flow.audit.as_ref()
    }
}

impl Gatekeeper for Gate {
    fn check(&self, invite: &Message, source: &Peer) -> Verdict {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let call_id = || String::from_utf8_lossy(invite.call_id().unwrap_or_default()).into_owned();
        let Some(t) = self.tenants.find_peer(source, self.peer_names.as_deref()) else {
            // Not audited one by one: the driver accounts for strangers per
            // source and interval (`crate::admission`).
            return Verdict::Reject(source_not_authorized(source));
        };
        if self.flow.audit.as_ref().is_some_and(|a| !a.has_room(now)) {
            return Verdict::Reject(audit_unavailable());
        }
        let f = facts(invite, &t.mode_header);
        let c = Call {
            call_id: call_id(),
            source: source.addr,
            started,
        };
        let needs_state = t.rules.needs_state();
        if needs_state && self.flow.state.as_ref().is_some_and(Backend::waits) {
            // The state is over the network: the core parks the call and
            // the driver runs the flow, which owns what it reads.
            let (flow, tenant, owned) = (self.flow.clone(), t.clone(), OwnedFacts::new(&f));
            return Verdict::Pending(Pending(Box::pin(async move {
                call(&flow, &tenant, &owned.get(), now, c).await
            })));
        }
        match poll_once(call(&self.flow, t, &f, now, c)) {
            Poll::Ready(v) => v,
            Poll::Pending => {
                // Cannot happen: only Redis waits, and it took the branch
                // above. Refused rather than forwarded unchecked.
                tracing::error!("a decision that should not wait did");
                Verdict::Reject(Rejection {
                    tenant: Some(t.id.clone()),
                    status: 503,
                    phrase: "Service Unavailable".into(),
                    code: Code::PolicyUnavailable,
                    explanation: "internal error: the decision could not be taken".into(),
                    retry_after: Some(self.flow.unavailable.retry_after),
                })
            }
        }
    }

    fn knows(&self, peer: &Peer) -> bool {
        self.tenants
            .find_peer(peer, self.peer_names.as_deref())
            .is_some()
    }

    fn tenant_of(&self, peer: &Peer) -> Option<Arc<str>> {
        self.tenants
            .find_peer(peer, self.peer_names.as_deref())
            .map(|t| t.id.clone())
    }

    fn settled(&self, call: Settlement<'_>) {
        if let Some(a) = &self.flow.audit {
            a.record_outcome(crate::audit::CallOutcome {
                call_id: String::from_utf8_lossy(call.call_id).into_owned(),
                tenant: call.tenant.clone(),
                status: call.status,
                carrier: call.carrier.cloned(),
                at: self.clock.now(),
            });
        }
        // A carrier that asks for credentials (RFC 3261 §22.2) did not place
        // the call: the dialer sends the INVITE again, with the same
        // Call-ID, and that one is decided and counted. Counting both would
        // spend two of the callee's attempts (France: 4 in 30 days) on one.
        if matches!(call.status, 401 | 407) {
            if let (Some(state), Some(c)) = (&self.flow.state, call.ticket.and_then(Counted::of)) {
                state.uncount(call.tenant, c.callee, c.at);
            }
        }
    }

    /// A BYE ends the call (recorded: its duration runs from the answer);
    /// from a tenant's dialer it may also say the callee refused: the
    /// callee is the dialog's remote party, named in the To header.
    fn in_dialog(&self, req: &Message, source: &Peer) {
        if req.method() != Some(&b"BYE"[..]) {
            return;
        }
        let tenant = self.tenants.find_peer(source, self.peer_names.as_deref());
        if let Some(a) = &self.flow.audit {
            a.record_end(crate::audit::CallEnd {
                call_id: String::from_utf8_lossy(req.call_id().unwrap_or_default()).into_owned(),
                by: if tenant.is_some() {
                    crate::audit::Party::Dialer
                } else {
                    crate::audit::Party::Carrier
                },
                at: self.clock.now(),
            });
        }
        if !self.refusal.matches(req) {
            return;
        }
        let Some(t) = tenant else {
            return;
        };
        let callee = req
            .header(HeaderName::To)
            .and_then(facts::uri_user)
            .and_then(|u| crate::numbering::parse(u, t.country).ok());
        match (callee, &self.flow.state) {
            (Some(c), Some(state)) => {
                tracing::info!(tenant = %t.id, callee = %c, "refusal signalled on BYE");
                state.refusal_signalled(&t.id, c, self.clock.now(), t.refusal_keep());
            }
            (Some(_), None) => {}
            (None, _) => tracing::warn!(
                tenant = %t.id,
                "refusal signalled on a BYE whose To header holds no valid number; ignored"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
