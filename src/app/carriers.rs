//! The carriers new calls choose from: domain carriers re-resolved when
//! their DNS answer expires, static ones as configured, and the OPTIONS
//! pings that take a silent one out of rotation.

use super::*;

impl Reloader {
    /// Starts a refresh task for each domain carrier that has none.
    pub(super) fn start_resolving(self: &Arc<Self>) {
        let names: Vec<String> = self
            .carrier_cfg
            .lock()
            .iter()
            .filter(|c| c.domain.is_some())
            .map(|c| c.name.clone())
            .collect();
        for name in names {
            if self.resolving.lock().insert(name.clone()) {
                tokio::spawn(resolve_loop(self.clone(), name));
            }
        }
    }

    pub(super) fn resolver(&self) -> anyhow::Result<Arc<crate::dns::Resolver>> {
        let mut r = self.resolver.lock();
        if let Some(r) = r.as_ref() {
            return Ok(r.clone());
        }
        let made = Arc::new(crate::dns::Resolver::new(&self.dns_servers.lock())?);
        *r = Some(made.clone());
        Ok(made)
    }

    /// A new DNS answer for a domain carrier: new calls use it at once.
    pub(super) fn set_resolved(&self, name: &str, targets: Vec<crate::dns::Target>) {
        let _guard = self.one_at_a_time.lock();
        {
            let mut resolved = self.resolved.lock();
            if resolved.get(name) == Some(&targets) {
                return;
            }
            let list: Vec<String> = targets
                .iter()
                .map(|t| {
                    format!(
                        "{}:{} (priority {}, weight {})",
                        t.transport, t.addr, t.priority, t.weight
                    )
                })
                .collect();
            tracing::info!(carrier = name, "carrier resolved: {}", list.join(", "));
            resolved.insert(name.to_owned(), targets);
        }
        let mut s = (*self.settings()).clone();
        s.carriers = expand_carriers(&self.carrier_cfg.lock(), &self.resolved.lock());
        if let Some(tls) = &self.tls {
            tls.set_names(tls_names(&self.carrier_cfg.lock(), &s.carriers));
        }
        let s = Arc::new(s);
        self.current_settings.store(s.clone());
        let gate: Arc<dyn crate::proxy::Gatekeeper> = self.gate();
        self.dispatcher.reconfigure(s, gate);
    }
}

/// Pings every carrier of the running config each `interval`; the core
/// records the answers in the carrier status.
pub(super) async fn ping_carriers(r: Arc<Reloader>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let settings = r.settings();
        for c in &settings.carriers {
            r.dispatcher.ping(c);
        }
    }
}

/// Re-resolves one domain carrier when its answer expires; a failure keeps
/// the last good answer and is retried soon. Ends when a reload removes
/// the carrier.
async fn resolve_loop(r: Arc<Reloader>, name: String) {
    let mut wait = Duration::ZERO;
    // An outage is logged when it starts and when it ends, not every retry.
    let mut failing = false;
    loop {
        tokio::time::sleep(wait).await;
        let domain = r
            .carrier_cfg
            .lock()
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.domain.clone());
        let Some(domain) = domain else {
            r.resolving.lock().remove(&name);
            r.resolved.lock().remove(&name);
            return;
        };
        let answer = match r.resolver() {
            Ok(resolver) => resolver.resolve(&domain).await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match answer {
            Ok(a) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(carrier = %name, "carrier domain resolves again");
                }
                wait = a.valid_for;
                r.set_resolved(&name, a.targets);
            }
            Err(e) => {
                let kept = r.resolved.lock().get(&name).map_or(0, Vec::len);
                if std::mem::replace(&mut failing, true) {
                    tracing::debug!(carrier = %name, kept, "carrier domain still not resolved: {e:#}");
                } else {
                    tracing::warn!(carrier = %name, kept, "carrier domain not resolved: {e:#}; the last answer stays, retried every 5 s");
                }
                wait = crate::dns::MIN_REFRESH;
            }
        }
    }
}

/// Carrier name -> its targets from DNS (the last good answer).
pub type Resolved = std::collections::HashMap<String, Vec<crate::dns::Target>>;

/// The carriers new calls choose from: static ones as configured, and one
/// per resolved target of each domain. A carrier's priority comes first;
/// SRV priority and weight order the targets within it.
pub(super) fn expand_carriers(
    cfg: &[crate::config::CarrierConfig],
    resolved: &Resolved,
) -> Vec<Carrier> {
    let mut out = Vec::new();
    for (i, c) in cfg.iter().enumerate() {
        let priority = c.priority.unwrap_or(i as u32).min(65_535) << 16;
        if let Some(a) = c.address {
            out.push(Carrier {
                name: c.name.as_str().into(),
                group: c.name.as_str().into(),
                peer: Peer {
                    transport: a.transport,
                    addr: a.addr,
                },
                priority,
                weight: c.weight,
            });
        }
        for t in resolved.get(&c.name).into_iter().flatten() {
            out.push(Carrier {
                name: format!("{}/{}", c.name, t.addr).into(),
                group: c.name.as_str().into(),
                peer: Peer {
                    transport: t.transport,
                    addr: t.addr,
                },
                priority: priority | u32::from(t.priority),
                weight: u32::from(t.weight),
            });
        }
    }
    // The core walks carriers by priority group.
    out.sort_by_key(|c| c.priority);
    out
}
