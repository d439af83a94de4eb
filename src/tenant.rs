//! Tenants: the companies whose dialers use the trunk, recognised by the
//! source address of their INVITEs. An INVITE from anywhere else is never
//! forwarded (no open relay).

use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::proxy::{Gatekeeper, Peer, Rejection, Verdict};
use crate::sip::Message;

#[derive(Debug)]
pub struct Tenant {
    pub id: Arc<str>,
}

/// Source networks to tenants, most specific prefix first.
#[derive(Debug, Default)]
pub struct Tenants {
    nets: Vec<(IpNet, usize)>,
    tenants: Vec<Tenant>,
}

impl Tenants {
    pub fn from_config(cfg: &Config) -> Tenants {
        let mut t = Tenants::default();
        for (i, tc) in cfg.tenants.iter().enumerate() {
            t.tenants.push(Tenant {
                id: tc.id.get_ref().as_str().into(),
            });
            for net in &tc.sources {
                t.nets.push((net.trunc(), i));
            }
        }
        t.nets
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        t
    }

    pub fn find(&self, ip: IpAddr) -> Option<&Tenant> {
        // IPv4-mapped IPv6 sources (dual-stack sockets) match IPv4 ranges.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets
            .iter()
            .find(|(n, _)| n.contains(&ip))
            .map(|(_, i)| &self.tenants[*i])
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

/// Rule 1 of the decision table: the source must belong to a tenant.
pub fn source_not_authorized(source: &Peer) -> Rejection {
    Rejection {
        tenant: None,
        status: 403,
        phrase: "Source Not Authorized".into(),
        code: "source_not_authorized",
        explanation: format!(
            "source {} is not in any tenant's dialer networks",
            source.addr.ip()
        ),
        retry_after: None,
    }
}

impl Gatekeeper for Tenants {
    fn check(&self, _invite: &Message, source: &Peer) -> Verdict {
        match self.find(source.addr.ip()) {
            Some(t) => Verdict::Forward {
                tenant: t.id.clone(),
                headers: Vec::new(),
            },
            None => Verdict::Reject(source_not_authorized(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_mapped_v4_matches() {
        let cfg = Config::parse(
            r#"
[sip]
listen = ["udp:127.0.0.1:5060"]
[[tenant]]
id = "wide"
sources = ["10.0.0.0/8"]
[[tenant]]
id = "narrow"
sources = ["10.1.0.0/16", "2001:db8::/32"]
"#,
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let t = Tenants::from_config(&cfg);
        assert_eq!(&*t.find("10.1.2.3".parse().unwrap()).unwrap().id, "narrow");
        assert_eq!(&*t.find("10.2.2.3".parse().unwrap()).unwrap().id, "wide");
        assert_eq!(
            &*t.find("::ffff:10.9.9.9".parse().unwrap()).unwrap().id,
            "wide"
        );
        assert_eq!(
            &*t.find("2001:db8::5".parse().unwrap()).unwrap().id,
            "narrow"
        );
        assert!(t.find("192.0.2.1".parse().unwrap()).is_none());
    }
}
