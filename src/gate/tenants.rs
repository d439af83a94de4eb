//! The tenants: the companies whose dialers use the trunk, each with its
//! compiled policy, recognised by the source network of their dialers or
//! by the name in a dialer's verified TLS client certificate. An INVITE
//! from anyone else is never forwarded (no open relay).

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::dnc::{ConsentList, DncList};
use crate::numbering::Country;
use crate::policy::TenantPolicy;
use crate::proxy::{Peer, Transport};
use crate::transport::tls::PeerNames;

#[derive(Debug, Default)]
pub struct Tenants {
    /// Source networks to tenants, most specific prefix first.
    nets: Vec<(IpNet, usize)>,
    /// Client-certificate names (lower case) to tenants.
    tls_names: HashMap<String, usize>,
    tenants: Vec<Arc<TenantPolicy>>,
    /// Every configured DNC list by name, with the country its national
    /// numbers are read in (admin API).
    lists: HashMap<String, (DncList, Country)>,
    /// Every configured consent list by name, likewise.
    consent: HashMap<String, (Arc<ConsentList>, Country)>,
}

impl Tenants {
    /// Adds a tenant, the networks its dialers send from and the names
    /// their certificates may carry.
    pub fn add(&mut self, policy: Arc<TenantPolicy>, sources: &[IpNet], tls_names: &[String]) {
        let i = self.tenants.len();
        self.tenants.push(policy);
        self.nets.extend(sources.iter().map(|n| (n.trunc(), i)));
        self.nets
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        for name in tls_names {
            self.tls_names.insert(name.to_ascii_lowercase(), i);
        }
    }

    pub fn add_dnc_list(&mut self, list: DncList, country: Country) {
        self.lists.insert(list.name().to_owned(), (list, country));
    }

    pub fn add_consent_list(&mut self, name: &str, list: Arc<ConsentList>, country: Country) {
        self.consent.insert(name.to_owned(), (list, country));
    }

    pub fn consent_list(&self, name: &str) -> Option<&(Arc<ConsentList>, Country)> {
        self.consent.get(name)
    }

    pub fn consent_list_names(&self) -> impl Iterator<Item = &str> {
        self.consent.keys().map(String::as_str)
    }

    /// The tenant whose networks hold `ip`, most specific prefix first.
    pub fn find(&self, ip: IpAddr) -> Option<&Arc<TenantPolicy>> {
        let ip = crate::proxy::routing::canonical(ip);
        self.nets
            .iter()
            .find(|(n, _)| n.contains(&ip))
            .map(|(_, i)| &self.tenants[*i])
    }

    /// The tenant of a peer: by the names of the verified client
    /// certificate of its TLS connection (or, for a destination, of a TLS
    /// connection open from its host), else by its source network.
    pub fn find_peer(&self, peer: &Peer, names: Option<&PeerNames>) -> Option<&Arc<TenantPolicy>> {
        if peer.transport == Transport::Tls && !self.tls_names.is_empty() {
            let ns = names.and_then(|n| n.get(&peer.addr).or_else(|| n.by_ip(peer.addr.ip())));
            let by_name = ns
                .iter()
                .flat_map(|ns| ns.iter())
                .find_map(|n| self.tls_names.get(&**n));
            if let Some(&i) = by_name {
                return Some(&self.tenants[i]);
            }
        }
        self.find(peer.addr.ip())
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<TenantPolicy>> {
        self.tenants.iter().find(|t| &*t.id == id)
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    pub fn dnc_list(&self, name: &str) -> Option<&(DncList, Country)> {
        self.lists.get(name)
    }

    pub fn dnc_lists(&self) -> impl Iterator<Item = &DncList> {
        self.lists.values().map(|(l, _)| l)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<TenantPolicy>> {
        self.tenants.iter()
    }

    /// The jurisdiction `id` names (case-insensitive), as its rule set
    /// writes it, when some tenant's rule sets know it (closures).
    pub fn jurisdiction(&self, id: &str) -> Option<std::sync::Arc<str>> {
        self.tenants
            .iter()
            .flat_map(|t| t.rules.sets.iter())
            .find_map(|s| s.find(id).map(|j| j.id.clone()))
    }

    /// The holiday calendars in use whose holidays are a dated list (no
    /// formula gives them), each with the last day its dates are known for.
    pub fn dated_calendars(&self) -> std::collections::BTreeMap<String, chrono::NaiveDate> {
        self.tenants
            .iter()
            .flat_map(|t| t.rules.sets.iter())
            .flat_map(|s| s.jurisdictions())
            .flat_map(|j| j.calendars.iter())
            .filter_map(|c| Some((c.id.clone(), c.dated_until?)))
            .collect()
    }

    /// The longest attempt window and refusal cool-off over all tenants:
    /// how long the state store must keep entries.
    pub fn retention(&self) -> (chrono::Duration, chrono::Duration) {
        let window = self
            .tenants
            .iter()
            .filter_map(|t| t.rules.retention().0)
            .max()
            .unwrap_or_default();
        let cooloff = self
            .tenants
            .iter()
            .filter_map(|t| t.rules.retention().1)
            .max()
            .unwrap_or(0);
        (window, chrono::Duration::days(cooloff as i64 + 1))
    }
}
