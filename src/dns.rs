//! Carriers published as SIP domains, located per RFC 3263 §4 with
//! `hickory-resolver`: NAPTR (SIP+D2U, SIP+D2T, SIPS+D2T), then SRV, then
//! A/AAAA.
//!
//! Resolution runs in background tasks (see `service`), never on the call
//! path: a call uses the last good answer, and a failed or empty answer
//! never replaces a good one, so one bad lookup cannot take a carrier away
//! until restart.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::proxy::Transport;

/// Bounds on how long an answer is used before it is asked again.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS resolver: {0}")]
    Setup(String),
    #[error("{name}: {message}")]
    Lookup { name: String, message: String },
    #[error("{0}: no NAPTR, SRV or address record")]
    Empty(String),
}

/// One place to send a carrier's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// SRV priority and weight (0 and 1 without SRV).
    pub priority: u16,
    pub weight: u16,
}

/// A resolved domain: its targets in no particular order, and how long the
/// answer may be used (the smallest TTL met, within the refresh bounds).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub targets: Vec<Target>,
    pub valid_for: Duration,
}

pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// `servers` empty: the system's resolv.conf.
    pub fn new(servers: &[SocketAddr]) -> Result<Resolver, DnsError> {
        let builder = if servers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| DnsError::Setup(e.to_string()))?
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            )
        };
        let mut builder = builder;
        let opts = builder.options_mut();
        // A carrier's records change; our own refresh loop is the cache.
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        let inner = builder
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Resolver { inner })
    }

    /// RFC 3263 §4.1–4.2 for a SIP URI with no port and no transport:
    /// NAPTR records choose the transport and the SRV name; without them,
    /// `_sip._udp` then `_sip._tcp` SRV; without those, the domain's
    /// addresses on port 5060 over UDP.
    pub async fn resolve(&self, domain: &str) -> Result<Resolved, DnsError> {
        let domain = domain.trim_end_matches('.');
        let fqdn = format!("{domain}.");
        let started = Instant::now();
        let mut ttl = MAX_REFRESH;
        let mut srv_names: Vec<(String, Transport)> = Vec::new();

        // "No such record" moves on to the next step; any other failure
        // (time-out, refused) ends this attempt, since the next queries
        // would fail the same way.
        let lookup_err = |name: &str, e: hickory_resolver::net::NetError| DnsError::Lookup {
            name: name.to_owned(),
            message: e.to_string(),
        };
        let naptr = match self.inner.lookup(fqdn.as_str(), RecordType::NAPTR).await {
            Ok(l) => Some(l),
            Err(e) if e.is_no_records_found() => None,
            Err(e) => return Err(lookup_err(domain, e)),
        };
        if let Some(naptr) = naptr {
            let mut rules: Vec<(u16, u16, String, Transport)> = Vec::new();
            for r in naptr.answers() {
                ttl = ttl.min(Duration::from_secs(u64::from(r.ttl)));
                let RData::NAPTR(n) = &r.data else { continue };
                let transport = match &n.services[..] {
                    s if s.eq_ignore_ascii_case(b"SIP+D2U") => Transport::Udp,
                    s if s.eq_ignore_ascii_case(b"SIP+D2T") => Transport::Tcp,
                    s if s.eq_ignore_ascii_case(b"SIPS+D2T") => Transport::Tls,
                    _ => continue,
                };
                if !n.flags.eq_ignore_ascii_case(b"s") {
                    continue;
                }
                rules.push((n.order, n.preference, n.replacement.to_ascii(), transport));
            }
            rules.sort_by_key(|r| (r.0, r.1));
            srv_names = rules.into_iter().map(|r| (r.2, r.3)).collect();
        }
        if srv_names.is_empty() {
            srv_names = vec![
                (format!("_sip._udp.{fqdn}"), Transport::Udp),
                (format!("_sip._tcp.{fqdn}"), Transport::Tcp),
            ];
        }

        let mut targets = Vec::new();
        for (name, transport) in &srv_names {
            let srv = match self.inner.lookup(name.as_str(), RecordType::SRV).await {
                Ok(l) => l,
                Err(e) if e.is_no_records_found() => continue,
                Err(e) => return Err(lookup_err(name, e)),
            };
            for r in srv.answers() {
                ttl = ttl.min(Duration::from_secs(u64::from(r.ttl)));
                let RData::SRV(s) = &r.data else { continue };
                let host = s.target.to_ascii();
                let ips =
                    self.inner
                        .lookup_ip(host.as_str())
                        .await
                        .map_err(|e| DnsError::Lookup {
                            name: host.clone(),
                            message: e.to_string(),
                        })?;
                ttl = ttl.min(ips.valid_until().saturating_duration_since(Instant::now()));
                for ip in ips.iter() {
                    targets.push(Target {
                        addr: SocketAddr::new(ip, s.port),
                        transport: *transport,
                        priority: s.priority,
                        weight: s.weight,
                    });
                }
            }
            if !targets.is_empty() {
                // The first NAPTR rule (or SRV name) that yields targets.
                break;
            }
        }
        if targets.is_empty() {
            let ips = self
                .inner
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| DnsError::Lookup {
                    name: domain.to_owned(),
                    message: e.to_string(),
                })?;
            ttl = ttl.min(ips.valid_until().saturating_duration_since(Instant::now()));
            for ip in ips.iter() {
                targets.push(Target {
                    addr: SocketAddr::new(ip, 5060),
                    transport: Transport::Udp,
                    priority: 0,
                    weight: 1,
                });
            }
        }
        if targets.is_empty() {
            return Err(DnsError::Empty(domain.to_owned()));
        }
        tracing::debug!(
            domain,
            took_ms = started.elapsed().as_millis() as u64,
            n = targets.len(),
            "carrier resolved"
        );
        Ok(Resolved {
            targets,
            valid_for: ttl.clamp(MIN_REFRESH, MAX_REFRESH),
        })
    }
}
