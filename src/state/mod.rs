//! The call state: refusals (rule 6), attempts per tenant and callee (rule
//! 9) and run-time DNC changes, behind one type, [`Backend`].
//!
//! - [`embedded`]: this instance's store, in memory for the call path and
//!   in redb for restarts. Always there: run-time DNC changes live in it
//!   whichever backend keeps refusals and attempts.
//! - [`redis`]: refusals and attempts shared by several instances, and the
//!   stream that carries DNC changes between them.
//!
//! Every operation the gate and the admin API need is an `async fn` of
//! [`Backend`]. With the embedded store alone they complete without ever
//! waiting, which lets the gate run its one decision flow inline (see
//! `gate`); with Redis they wait on the network, bounded by its timeout.

pub mod embedded;
pub mod redis;

pub use embedded::{Loaded, StateError, Store};
pub use redis::{DncChange, ListChange, RedisSettings, ServerSettings, Shared, SharedError};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use smallvec::SmallVec;
use std::sync::Arc;

use crate::numbering::E164;
use crate::policy::{Cap, History};

/// Attempt instants of one callee.
pub type Attempts = SmallVec<[DateTime<Utc>; 4]>;

/// What ops see of the backend (`callguard_state_backend_up`,
/// `callguard_state_errors_total`).
#[derive(Clone, Default)]
pub struct Health {
    pub up: Gauge,
    pub errors: Counter,
    /// Restarts of the Redis server seen (its `run_id` changed).
    pub restarts: Counter,
}

/// A state operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Embedded(#[from] StateError),
    #[error(transparent)]
    Redis(#[from] SharedError),
    #[error("state task failed")]
    Task,
    /// A call does not queue behind a move of this instance's attempts to
    /// Redis: against a Redis that does not answer, each move waits out the
    /// time-out, and calls would wait one after the other.
    #[error("this instance's own attempts are being moved to Redis")]
    Moving,
}

/// The call state as the gate and the admin API see it.
#[derive(Clone)]
pub struct Backend {
    local: Store,
    shared: Option<Shared>,
}

impl Backend {
    pub fn new(local: Store, shared: Option<Shared>) -> Backend {
        Backend { local, shared }
    }

    /// This instance's store (run-time DNC changes, and refusals and
    /// attempts when nothing is shared).
    pub fn local(&self) -> &Store {
        &self.local
    }

    pub fn shared(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    /// The closures on record (kept by this instance's store).
    pub fn closures(&self) -> Option<Arc<Vec<crate::policy::Closure>>> {
        self.local.closures()
    }

    /// Whether refusals and attempts are read over the network: a decision
    /// that needs them then waits.
    pub fn waits(&self) -> bool {
        self.shared.is_some()
    }

    /// What the state knows of `callee` for `tenant`: its refusal when
    /// `refusals`, its attempts within `window` when given.
    pub async fn history(
        &self,
        tenant: &Arc<str>,
        callee: E164,
        refusals: bool,
        window: Option<chrono::Duration>,
        now: DateTime<Utc>,
    ) -> Result<History, Error> {
        match &self.shared {
            Some(s) => {
                let r = s.read(tenant, callee, refusals, window, now).await?;
                // A refusal signalled while Redis was unreachable waits here
                // until Redis takes it (`share_pending`).
                let pending = refusals
                    .then(|| self.local.refused_at(tenant, callee))
                    .flatten();
                // So do attempts counted here while Redis was unavailable
                // (`fail_open`), until `share_pending` has shared them.
                let mut attempts = r.attempts;
                if let Some(w) = window.filter(|_| self.local.holds_attempts(tenant, callee)) {
                    let since = now - w;
                    attempts.extend(
                        self.local
                            .attempts(tenant, callee)
                            .into_iter()
                            .filter(|&t| t > since),
                    );
                    attempts.sort_unstable();
                }
                Ok(History {
                    refused_at: r.refused_at.max(pending),
                    attempts,
                    closures: None,
                })
            }
            None => Ok(History {
                refused_at: refusals
                    .then(|| self.local.refused_at(tenant, callee))
                    .flatten(),
                attempts: match window {
                    Some(_) => self.local.attempts(tenant, callee),
                    None => Attempts::new(),
                },
                closures: None,
            }),
        }
    }

    /// Counts an attempt at `now`, unless `enforce` and the cap is already
    /// reached; atomic for this tenant and callee (across instances with
    /// Redis). Returns the attempts in the window before this one.
    pub async fn count(
        &self,
        tenant: &Arc<str>,
        callee: E164,
        now: DateTime<Utc>,
        cap: Cap,
        enforce: bool,
    ) -> Result<Attempts, Error> {
        match &self.shared {
            Some(s) => {
                // Attempts counted here during an outage go first, so that
                // the cap check sees them.
                if self.local.holds_attempts(tenant, callee) {
                    self.share_attempts(s, tenant, callee, false).await?;
                }
                Ok(s.count(tenant, callee, now, cap, enforce).await?)
            }
            None => Ok(self.local.count(tenant, callee, now, cap, enforce)),
        }
    }

    /// Records a refusal durably before returning (the admin API): an
    /// fsynced commit of the embedded store, or Redis's write.
    pub async fn record_refusal(
        &self,
        tenant: &Arc<str>,
        callee: E164,
        at: DateTime<Utc>,
        keep: chrono::Duration,
    ) -> Result<(), Error> {
        match &self.shared {
            Some(s) => Ok(s.record_refusal(tenant, callee, at, keep).await?),
            None => {
                let (store, tenant) = (self.local.clone(), tenant.clone());
                tokio::task::spawn_blocking(move || store.record_refusal(&tenant, callee, at))
                    .await
                    .map_err(|_| Error::Task)?
                    .map_err(Error::from)
            }
        }
    }

    /// Records a refusal signalled on the call path (a dialer's BYE)
    /// without waiting. With Redis it is kept in this instance's store too
    /// (on disk with the next batch) until Redis has taken it: a refusal
    /// signalled while Redis is unreachable still counts here at once, and
    /// is shared by [`Backend::share_pending`] when Redis is back, even
    /// after a restart.
    pub fn refusal_signalled(
        &self,
        tenant: &Arc<str>,
        callee: E164,
        at: DateTime<Utc>,
        keep: chrono::Duration,
    ) {
        self.local.record_refusal_soon(tenant, callee, at);
        if let Some(s) = &self.shared {
            let (s, local, tenant) = (s.clone(), self.local.clone(), tenant.clone());
            in_background("a refusal signalled on a BYE", async move {
                match s.record_refusal(&tenant, callee, at, keep).await {
                    Ok(()) => local.forget_refusal(&tenant, callee, at),
                    Err(e) => {
                        tracing::error!(tenant = %tenant, callee = %callee, error = %e, "refusal signalled on BYE not yet shared: kept here and retried")
                    }
                }
            });
        }
    }

    /// With Redis: writes to it what this instance holds because Redis
    /// could not take it at the time (refusals signalled on a BYE, attempts
    /// of calls forwarded under `fail_open`), or recorded before the switch
    /// from the embedded backend, and forgets each one Redis has taken.
    /// Stops at the first failure. Returns how many refusals and callees'
    /// attempts were shared.
    pub async fn share_pending(&self) -> Result<(usize, usize), Error> {
        let Some(s) = &self.shared else {
            return Ok((0, 0));
        };
        let keep = self.local.refusal_keep();
        let refusals = self.local.refusals();
        for (tenant, callee, at) in &refusals {
            s.record_refusal(tenant, *callee, *at, keep).await?;
            self.local.forget_refusal(tenant, *callee, *at);
        }
        let mut callees = 0;
        for (tenant, callee, _) in self.local.all_attempts() {
            callees += usize::from(self.share_attempts(s, &tenant, callee, true).await?);
        }
        Ok((refusals.len(), callees))
    }

    /// Moves `callee`'s attempts from this instance's store to Redis;
    /// whether there were any. A move that times out is taken back behind
    /// it (`redis::take_back`) and its attempts stay here, to be added
    /// again; an answer lost otherwise (a connection reset after Redis took
    /// them) leaves them counted twice, never lost. `wait`:
    /// for a move under way (the share task), else [`Error::Moving`] (a
    /// call, then decided on this instance's own view).
    async fn share_attempts(
        &self,
        s: &Shared,
        tenant: &Arc<str>,
        callee: E164,
        wait: bool,
    ) -> Result<bool, Error> {
        // The share task and a call to the same callee may both get here:
        // one move at a time, or the same attempts would be added twice.
        let _moving = s.moving_attempts(wait).await.ok_or(Error::Moving)?;
        let held = self.local.attempts(tenant, callee);
        if !held.is_empty() {
            s.add_attempts(tenant, callee, &held, self.local.attempt_keep())
                .await?;
            self.local.forget_attempts(tenant, callee, &held);
        }
        Ok(!held.is_empty())
    }

    /// This instance's own view: its store alone, as with the embedded
    /// backend. What the gate decides on while Redis is unavailable.
    pub fn local_only(&self) -> Backend {
        Backend::new(self.local.clone(), None)
    }

    /// Takes back an attempt counted at `at` (its call never reached the
    /// callee), without waiting: in the background when shared.
    pub fn uncount(&self, tenant: &Arc<str>, callee: E164, at: DateTime<Utc>) {
        match &self.shared {
            Some(s) => {
                // Counted here if Redis was unavailable when it was
                // decided, and in Redis once shared.
                if self.local.holds_attempts(tenant, callee)
                    && self.local.uncount(tenant, callee, at)
                {
                    return;
                }
                let (s, tenant) = (s.clone(), tenant.clone());
                in_background("an attempt given back", async move {
                    if let Err(e) = s.uncount(&tenant, callee, at).await {
                        tracing::warn!(tenant = %tenant, callee = %callee, error = %e, "a challenged call's attempt stays counted");
                    }
                });
            }
            None => {
                self.local.uncount(tenant, callee, at);
            }
        }
    }

    /// Gives (`Some`) or withdraws consent for numbers of a consent list at
    /// run time, durably: published to the other instances first when
    /// shared, then committed here.
    pub async fn consent_change(
        &self,
        list: &str,
        numbers: Vec<E164>,
        consent: Option<crate::dnc::Consent>,
    ) -> Result<(), Error> {
        if let Some(s) = &self.shared {
            s.consent_publish(list, &numbers, consent.as_ref()).await?;
        }
        let (store, list) = (self.local.clone(), list.to_owned());
        let changes: Vec<_> = numbers
            .iter()
            .map(|n| (n.digits(), consent.clone()))
            .collect();
        tokio::task::spawn_blocking(move || store.consent_set(&list, &changes))
            .await
            .map_err(|_| Error::Task)?
            .map_err(Error::from)
    }

    /// Adds (`listed`) or removes numbers of a DNC list at run time,
    /// durably: published to the other instances first when shared, then
    /// committed here.
    pub async fn dnc_change(
        &self,
        list: &str,
        numbers: Vec<E164>,
        listed: bool,
    ) -> Result<(), Error> {
        if let Some(s) = &self.shared {
            s.dnc_publish(list, &numbers, listed).await?;
        }
        let (store, list) = (self.local.clone(), list.to_owned());
        tokio::task::spawn_blocking(move || store.dnc_set(&list, &numbers, listed))
            .await
            .map_err(|_| Error::Task)?
            .map_err(Error::from)
    }
}

/// Runs a write to the shared store without waiting. Outside the runtime
/// (a thread that did not enter it) the write cannot start: said loudly,
/// as it once went missing silently.
fn in_background(what: &str, f: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(f);
        }
        Err(_) => {
            tracing::error!("{what} not written to the shared state: no runtime on this thread")
        }
    }
}
