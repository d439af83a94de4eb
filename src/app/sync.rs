//! Run-time DNC and consent changes kept in step across instances sharing
//! a Redis state: the change stream, and a full load after any gap.

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
