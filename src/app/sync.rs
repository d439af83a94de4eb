//! Instances sharing a Redis state kept in step: run-time DNC and consent
//! changes (the change stream, and a full load after any gap), what an
//! instance kept while Redis could not take it, and Redis's settings.

use super::*;

/// Keeps this instance's run-time DNC changes in step with the other
/// instances (Redis backend): the change stream, polled every 500 ms from
/// `after` (the position of the load at start), and a full load of every
/// list's changes after any error (the stream may have been trimmed
/// meanwhile).
pub(super) async fn dnc_sync(
    r: Arc<Reloader>,
    shared: crate::state::Shared,
    mut after: Option<String>,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let step = match after.clone() {
            None => {
                let lists = list_names(&r.gate().tenants);
                let loaded = dnc_full_load(&r.state, &shared, lists).await;
                if matches!(loaded, Ok((_, n)) if n > 0) {
                    r.metrics.dnc_sizes(&r.gate().tenants);
                }
                loaded.map(|(latest, _)| latest)
            }
            Some(id) => dnc_follow(&r, &shared, id).await,
        };
        match step {
            Ok(next) => after = Some(next),
            Err(e) => {
                if after.is_some() {
                    tracing::warn!("DNC changes from other instances: {e:#}; reloading them all");
                }
                after = None;
            }
        }
    }
}

/// Shares, every second, what this instance keeps because Redis could not
/// take it at the time: refusals signalled on a BYE (see
/// `Backend::refusal_signalled`) and attempts of calls forwarded under
/// `fail_open`.
pub(super) async fn share_pending(r: Arc<Reloader>, shared: crate::state::Shared) {
    let backend = crate::state::Backend::new(r.state.clone(), Some(shared));
    let gauge = |kind| {
        r.metrics
            .state_unshared
            .get_or_create(&crate::metrics::KindLabels { kind })
            .clone()
    };
    let (refusals_kept, attempts_kept) = (gauge("refusals"), gauge("attempts"));
    let show = || {
        let kept = r.state.sizes();
        refusals_kept.set(kept.0 as i64);
        attempts_kept.set(kept.1 as i64);
        kept
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if show() == (0, 0) {
            continue;
        }
        // A failure is Redis's, logged and counted by the backend; what is
        // kept waits for the next round.
        if let Ok((refusals, callees)) = backend.share_pending().await {
            if refusals + callees == 0 {
                continue;
            }
            tracing::info!(
                refusals,
                callees,
                "refusals and attempts kept in this instance's store are now shared through Redis"
            );
            show();
        }
    }
}

/// Checks the Redis server's settings every 10 s (the start-up checked
/// them first): while they let it evict keys, the call state is
/// unavailable (`Shared::check_server`).
pub(super) async fn watch_server(shared: crate::state::Shared) {
    let mut said = false;
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        match shared.check_server().await {
            Ok(_) => said = false,
            Err(e) if !said => {
                said = true;
                tracing::warn!("Redis settings not read ({e}): whether it may evict keys is not checked until they are");
            }
            Err(_) => {}
        }
    }
}

/// Reads Redis's settings once at start (bounded), so that a server that
/// may evict keys is refused before the first call, and says what a
/// server without an append-only file loses when it restarts.
pub(super) async fn check_server_at_start(shared: &crate::state::Shared) {
    // Bounded by the state's time-out, as every Redis operation.
    match shared.check_server().await {
        Ok(s) => {
            if s.aof == Some(false) {
                tracing::warn!("Redis runs without appendonly: a Redis restart loses the refusals and attempts counted since its last snapshot (README, \"Several instances\")");
            }
        }
        Err(e) => tracing::warn!("Redis settings not read ({e}): checked again every 10 s"),
    }
}

/// The names of the DNC lists and of the consent lists.
pub(super) fn list_names(tenants: &Tenants) -> (Vec<String>, Vec<String>) {
    (
        tenants.dnc_lists().map(|l| l.name().to_owned()).collect(),
        tenants.consent_list_names().map(str::to_owned).collect(),
    )
}

async fn consent_apply(
    state: &Store,
    list: String,
    changes: Vec<(u64, Option<crate::dnc::Consent>)>,
) -> anyhow::Result<usize> {
    let state = state.clone();
    let n = tokio::task::spawn_blocking(move || state.consent_apply(&list, changes))
        .await
        .context("consent apply task")??;
    Ok(n)
}

async fn dnc_apply(
    state: &Store,
    list: String,
    digits: Vec<u64>,
    listed: bool,
) -> anyhow::Result<usize> {
    let state = state.clone();
    let n = tokio::task::spawn_blocking(move || state.dnc_apply(&list, &digits, listed))
        .await
        .context("DNC apply task")??;
    Ok(n)
}

/// Applies every run-time change of `lists` recorded in Redis; returns the
/// stream position to follow from, and how many numbers changed here.
pub(super) async fn dnc_full_load(
    state: &Store,
    shared: &crate::state::Shared,
    (lists, consent_lists): (Vec<String>, Vec<String>),
) -> anyhow::Result<(String, usize)> {
    // The stream position first: a change made during the load is then
    // applied twice, never missed.
    let latest = shared.dnc_latest().await?;
    let mut changed = 0;
    for list in lists {
        let all = shared.dnc_all(&list).await?;
        for listed in [true, false] {
            let digits = all
                .iter()
                .filter(|(_, l)| *l == listed)
                .map(|(d, _)| *d)
                .collect();
            changed += dnc_apply(state, list.clone(), digits, listed).await?;
        }
    }
    for list in consent_lists {
        let all = shared.consent_all(&list).await?;
        changed += consent_apply(state, list, all).await?;
    }
    tracing::info!(
        changed,
        "DNC and consent changes of the other instances loaded"
    );
    Ok((latest, changed))
}

async fn dnc_follow(
    r: &Arc<Reloader>,
    shared: &crate::state::Shared,
    after: String,
) -> anyhow::Result<String> {
    let mut last = after;
    let mut changed = 0;
    for c in shared.dnc_changes(&last).await? {
        changed += match c.change {
            crate::state::ListChange::Dnc(listed) => {
                dnc_apply(&r.state, c.list.clone(), c.numbers, listed).await?
            }
            crate::state::ListChange::Consent(consent) => {
                let changes = c.numbers.iter().map(|&d| (d, consent.clone())).collect();
                consent_apply(&r.state, c.list.clone(), changes).await?
            }
        };
        last = c.id;
    }
    if changed > 0 {
        r.metrics.dnc_sizes(&r.gate().tenants);
        tracing::info!(
            changed,
            "DNC or consent changes from another instance applied"
        );
    }
    Ok(last)
}
