//! The carriers a call may go to: their order for each call (priority, then
//! a weighted random order within a priority, as RFC 2782 orders SRV
//! records), and whether each answers its OPTIONS health checks.

use rand::rngs::StdRng;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use super::Peer;

/// A carrier target (static address; DNS targets are resolved by the driver).
#[derive(Debug, Clone)]
pub struct Carrier {
    /// Name in metrics and logs (`NAME`, or `NAME/IP:PORT` for a target of
    /// a domain).
    pub name: Arc<str>,
    /// The configured carrier this target belongs to: in-dialog requests
    /// of a call may reach any of its targets (an SBC pair, SRV records).
    pub group: Arc<str>,
    pub peer: Peer,
    /// Lower is tried first.
    pub priority: u32,
    /// Share of the calls among carriers of the same priority.
    pub weight: u32,
}

impl Carrier {
    /// A carrier of its own group, first priority, weight 1.
    pub fn single(name: &str, peer: Peer) -> Carrier {
        Carrier {
            name: name.into(),
            group: name.into(),
            peer,
            priority: 0,
            weight: 1,
        }
    }
}

/// Reachability of each carrier, from OPTIONS pings: a carrier that leaves
/// `down_after` pings in a row unanswered is down until one is answered.
/// Shared by every shard; plain memory, no I/O.
#[derive(Debug)]
pub struct CarrierStatus {
    down_after: AtomicU32,
    /// Carriers out of rotation now.
    down: AtomicUsize,
    /// name -> (up, unanswered pings in a row)
    map: parking_lot::RwLock<std::collections::HashMap<Arc<str>, (bool, u32)>>,
}

impl CarrierStatus {
    pub fn new(down_after: u32) -> CarrierStatus {
        CarrierStatus {
            down_after: down_after.max(1).into(),
            down: Default::default(),
            map: Default::default(),
        }
    }

    pub fn set_down_after(&self, n: u32) {
        self.down_after.store(n.max(1), Ordering::Relaxed);
    }

    /// Whether any carrier is out of rotation (lets the call path skip
    /// the per-carrier lookup in the common case).
    pub fn any_down(&self) -> bool {
        self.down.load(Ordering::Relaxed) > 0
    }

    /// Carriers never pinged count as up.
    pub fn is_up(&self, name: &str) -> bool {
        self.checked(name).unwrap_or(true)
    }

    /// The state from pings; `None` before any ping result.
    pub fn checked(&self, name: &str) -> Option<bool> {
        self.map.read().get(name).map(|e| e.0)
    }

    /// Records one ping result; returns the new state when it changed.
    pub fn report(&self, name: &Arc<str>, answered: bool) -> Option<bool> {
        let down_after = self.down_after.load(Ordering::Relaxed);
        let mut map = self.map.write();
        let e = map.entry(name.clone()).or_insert((true, 0));
        let was = e.0;
        if answered {
            *e = (true, 0);
        } else {
            e.1 += 1;
            if e.1 >= down_after {
                e.0 = false;
            }
        }
        if e.0 == was {
            return None;
        }
        if e.0 {
            self.down.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.down.fetch_add(1, Ordering::Relaxed);
        }
        Some(e.0)
    }
}

/// Carriers to try for a new call, in order: those up, then those out of
/// rotation (a last resort, rather than refusing the call); within each,
/// by priority, and within a priority in a weighted random order (as RFC
/// 2782 orders SRV records: each pick has a chance proportional to its
/// weight among those left; weight 0 comes after the others).
/// `carriers` is sorted by priority.
pub fn order(carriers: &[Carrier], status: &CarrierStatus, rng: &mut StdRng) -> VecDeque<Carrier> {
    let mut out = VecDeque::with_capacity(carriers.len());
    // The common case, no carrier out of rotation, needs one pass and no
    // status lookup per carrier.
    let any_down = status.any_down();
    for in_rotation in [true, false] {
        if !in_rotation && !any_down {
            break;
        }
        for same in carriers.chunk_by(|a, b| a.priority == b.priority) {
            let mut left: SmallVec<[&Carrier; 4]> = same
                .iter()
                .filter(|c| !any_down || status.is_up(&c.name) == in_rotation)
                .collect();
            while left.len() > 1 {
                // Weight 0 only once every weighted carrier is taken.
                let weighted = left.iter().any(|c| c.weight > 0);
                let weight = |c: &Carrier| if weighted { u64::from(c.weight) } else { 1 };
                let total: u64 = left.iter().map(|c| weight(c)).sum();
                let mut pick = rand::RngExt::random_range(&mut *rng, 0..total);
                let i = left
                    .iter()
                    .position(|c| {
                        let w = weight(c);
                        let hit = pick < w;
                        pick = pick.saturating_sub(w);
                        hit
                    })
                    .unwrap_or(0);
                out.push_back(left.remove(i).clone());
            }
            out.extend(left.into_iter().cloned());
        }
    }
    out
}

/// An OPTIONS health check for `dest`, from `host:port`, with our Via.
pub fn ping(dest: Peer, via: &str, host: &str, port: u16, branch: &str, call_id: &str) -> String {
    let target = match dest.addr {
        std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        a => a.to_string(),
    };
    let scheme = if dest.transport == super::Transport::Tls {
        "sips"
    } else {
        "sip"
    };
    format!(
        "OPTIONS {scheme}:{target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
         From: <{scheme}:callguard@{host}:{port}>;tag={branch}\r\nTo: <{scheme}:{target}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}
