//! Where a request goes next (RFC 3261 §16.4–16.6, §16.12): loose routing
//! by Route, the Record-Route this proxy inserts and the token in it that
//! keeps the dialog to its two hops, Max-Forwards, and the rewriting of Via
//! and Request-URI.
//!
//! The token is a keyed hash of the dialog's Call-ID, the caller's tag, the
//! tenant that placed the call and the carrier group it went to. An
//! in-dialog request is relayed only when the token checks out for the
//! side it comes from: from the caller side (its From tag is the caller's)
//! it must come from that tenant's network and go to that carrier; from the
//! callee side (its To tag is the caller's) it must come from that carrier
//! and go to that tenant's network. A stolen token therefore relays nothing
//! for a stranger, and cannot send a request anywhere else.

use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use super::{Gatekeeper, Peer, Settings, Transport};
use crate::sip::message::{name_addr_uri, HeaderName};
use crate::sip::{Message, Uri, Via};

/// Record-Route parameter carrying the token.
pub const TOKEN_PARAM: &[u8] = b"cgr";
/// Record-Route parameter naming the carrier group the dialog went to.
pub const CARRIER_PARAM: &[u8] = b"cgc";

/// The dialog token for `call_id` placed by `caller_tag` of `tenant`
/// through `carrier` (the carrier's configured name).
pub fn token(
    key: &[u8; 16],
    call_id: &[u8],
    caller_tag: &[u8],
    tenant: &str,
    carrier: &str,
) -> String {
    let mut h = siphasher::sip::SipHasher13::new_with_key(key);
    for part in [call_id, caller_tag, tenant.as_bytes(), carrier.as_bytes()] {
        h.write(part);
        // Separators: ("ab","c") and ("a","bc") must differ.
        h.write_u8(0);
    }
    format!("{:016x}", h.finish())
}

/// How this proxy names itself toward `dest`: the listener of the same
/// transport and address family.
pub fn endpoint_for(s: &Settings, dest: Peer) -> (&str, u16) {
    let v6 = dest.addr.is_ipv6();
    let l = &s.local;
    let e = l
        .iter()
        .find(|e| e.transport == dest.transport && e.ipv6 == v6)
        .or_else(|| l.iter().find(|e| e.transport == dest.transport))
        .or_else(|| l.first());
    match e {
        Some(e) => (e.host.as_str(), e.port),
        None => ("callguard.invalid", 5060),
    }
}

pub fn via_value(s: &Settings, dest: Peer, branch: &str) -> String {
    let (host, port) = endpoint_for(s, dest);
    format!(
        "SIP/2.0/{} {}:{};branch={};rport",
        dest.transport.as_via(),
        host,
        port,
        branch
    )
}

/// Record-Route values, topmost first, for a dialog between `inbound`
/// (the dialer) and `outbound` (the carrier). Two entries when the sides
/// differ in transport or address family, so each side reaches us the way
/// it first did (the "double record-route" of RFC 3261 §16.6 step 4 / RFC
/// 5658).
pub fn record_route(
    s: &Settings,
    inbound: Peer,
    outbound: Peer,
    token: &str,
    carrier: &str,
) -> Vec<String> {
    let entry = |p: Peer| {
        let (host, port) = endpoint_for(s, p);
        let t = match p.transport {
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
            Transport::Udp => "",
        };
        format!("<sip:{host}:{port}{t};lr;cgr={token};cgc={carrier}>")
    };
    let out = entry(outbound);
    let inn = entry(inbound);
    if out == inn {
        vec![out]
    } else {
        vec![out, inn]
    }
}

/// Whether `uri` designates this proxy (a listener's host and port, or an
/// alias).
pub fn is_ours(s: &Settings, uri: &Uri<'_>) -> bool {
    let default = if uri.is_sips() { 5061 } else { 5060 };
    let port = uri.port.unwrap_or(default);
    s.local
        .iter()
        .any(|e| e.port == port && e.host.as_bytes().eq_ignore_ascii_case(uri.host))
        || s.aliases
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(uri.host))
}

/// How many Route values an initial request carries: all are removed
/// before it goes to the carrier. §16.4 asks a proxy to remove the top one
/// that names it (a dialer using callguard as its outbound proxy); any
/// further one would steer the carrier's routing, and the trunk's next hop
/// is always the carrier callguard picks.
pub fn initial_route_values(msg: &Message) -> usize {
    msg.values(HeaderName::Route).count()
}

/// Why an in-dialog request is not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No Route names us: not a dialog we record-routed (404).
    NotOurs,
    /// Our Route's token does not hold for this request's side, source or
    /// destination (403).
    Forbidden(&'static str),
    /// The next hop is not an IP literal (478).
    Unresolvable,
}

/// Loose routing of an in-dialog request (§16.4, §16.12): our own Route
/// values are removed and the request goes to the next Route, or to the
/// Request-URI, once the token says that `from` and that next hop are the
/// dialog's two sides. Returns the next hop and how many Route values to
/// remove.
pub fn in_dialog(
    s: &Settings,
    gate: &dyn Gatekeeper,
    msg: &Message,
    from: Peer,
) -> Result<(Peer, usize), Refusal> {
    let mut pops = 0;
    let mut mark: Option<(&[u8], &[u8])> = None;
    let mut next: Option<&[u8]> = None;
    for value in msg.values(HeaderName::Route) {
        let uri_text = name_addr_uri(value);
        match Uri::parse(uri_text) {
            Some(uri) if is_ours(s, &uri) => {
                let token = uri.param(TOKEN_PARAM).flatten();
                let carrier = uri.param(CARRIER_PARAM).flatten();
                match (token, carrier, mark) {
                    (Some(t), Some(c), None) => mark = Some((t, c)),
                    (Some(t), Some(c), Some(m)) if m == (t, c) => {}
                    _ => return Err(Refusal::Forbidden("Forbidden Route")),
                }
                pops += 1;
            }
            _ if pops == 0 => return Err(Refusal::NotOurs),
            _ => {
                next = Some(uri_text);
                break;
            }
        }
    }
    let Some((token, carrier)) = mark else {
        return Err(Refusal::NotOurs);
    };
    let target = next.unwrap_or_else(|| msg.request_uri().unwrap_or_default());
    let dest = Uri::parse(target)
        .and_then(|u| uri_destination(&u))
        .ok_or(Refusal::Unresolvable)?;
    let carrier =
        std::str::from_utf8(carrier).map_err(|_| Refusal::Forbidden("Forbidden Route"))?;
    let call_id = msg.call_id().unwrap_or_default();
    let valid = |tag: &[u8], tenant: Option<Arc<str>>| {
        tenant
            .is_some_and(|t| token_eq(&self::token(&s.route_key, call_id, tag, &t, carrier), token))
    };
    let from_tag = msg.from_tag().unwrap_or_default();
    let to_tag = msg.to_tag().unwrap_or_default();
    if valid(from_tag, gate.tenant_of(&from)) {
        // Caller side: to the carrier the call went to.
        if carrier_has(s, carrier, dest.addr.ip()) {
            return Ok((dest, pops));
        }
        return Err(Refusal::Forbidden("Next Hop Is Not The Carrier"));
    }
    if valid(to_tag, gate.tenant_of(&dest)) {
        // Callee side: from that carrier, to the tenant's network.
        if carrier_has(s, carrier, from.addr.ip()) {
            return Ok((dest, pops));
        }
        return Err(Refusal::Forbidden("Source Is Not The Carrier"));
    }
    Err(Refusal::Forbidden("Forbidden Route"))
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn token_eq(expected: &str, got: &[u8]) -> bool {
    let e = expected.as_bytes();
    e.len() == got.len() && e.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Whether `ip` is an address of the carrier group `name` (its static
/// address, or a target its domain resolved to).
fn carrier_has(s: &Settings, name: &str, ip: IpAddr) -> bool {
    let ip = canonical(ip);
    s.carriers
        .iter()
        .any(|c| &*c.group == name && canonical(c.peer.addr.ip()) == ip)
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) compare as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// §16.3 step 3 / §16.6 step 3: the Max-Forwards to send on, or the
/// response that ends the request (483 at zero).
pub fn max_forwards(msg: &Message) -> Result<u32, (u16, &'static str)> {
    match msg.max_forwards() {
        Some(Ok(0)) => Err((483, "Too Many Hops")),
        Some(Err(())) => Err((400, "Bad Max-Forwards")),
        Some(Ok(n)) => Ok(n.min(70) - 1),
        None => Ok(69),
    }
}

/// Where responses to a request go (§18.2.2, RFC 3581).
pub fn response_destination(via: &Via<'_>, from: Peer) -> Peer {
    if from.transport.is_reliable() || via.rport.is_some() {
        return from;
    }
    Peer {
        transport: from.transport,
        addr: (from.addr.ip(), via.port.unwrap_or(5060)).into(),
    }
}

/// Stateless relays must produce the same branch for a retransmitted
/// request (§16.11), so it is derived from the received one.
pub fn stateless_branch(msg: &Message) -> String {
    let mut h = siphasher::sip::SipHasher13::new();
    if let Some(v) = msg.top_via() {
        h.write(v.branch.unwrap_or_default());
        h.write(v.sent_by);
    }
    h.write(msg.call_id().unwrap_or_default());
    format!("z9hG4bKcgsl{:x}", h.finish())
}

/// The Request-URI sent to a carrier: the dialled user at the carrier's
/// address (`tel:` URIs become `sip:`).
pub fn rewrite_uri_host(uri: &[u8], dest: &Peer) -> String {
    let host = match dest.addr {
        std::net::SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    let transport = match dest.transport {
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        Transport::Udp => "",
    };
    match Uri::parse(uri) {
        Some(u) => {
            // TLS to the carrier is this hop's transport (`transport=tls`);
            // `sips:` stays a promise of the caller's to make.
            let scheme = if u.is_sips() { "sips" } else { "sip" };
            let user = u
                .user
                .map(|u| format!("{}@", String::from_utf8_lossy(u)))
                .unwrap_or_default();
            let params: String = crate::sip::message::params(u.params)
                .filter(|(n, _)| {
                    !n.eq_ignore_ascii_case(b"transport")
                        && !n.eq_ignore_ascii_case(b"phone-context")
                })
                .map(|(n, v)| match v {
                    Some(v) => format!(
                        ";{}={}",
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(v)
                    ),
                    None => format!(";{}", String::from_utf8_lossy(n)),
                })
                .collect();
            format!("{scheme}:{user}{host}{params}{transport}")
        }
        None => format!("sip:{host}{transport}"),
    }
}

/// The next hop named by a URI: needs an IP literal (DNS-named in-dialog
/// targets are answered 478 rather than resolved on the call path).
pub fn uri_destination(u: &Uri<'_>) -> Option<Peer> {
    let ip = u.ip()?;
    let transport = match u.param(b"transport").flatten() {
        Some(t) => Transport::from_bytes(t)?,
        None if u.is_sips() => Transport::Tls,
        None => Transport::Udp,
    };
    let default = if transport == Transport::Tls {
        5061
    } else {
        5060
    };
    let port = u.port.unwrap_or(default);
    Some(Peer {
        transport,
        addr: (ip, port).into(),
    })
}
