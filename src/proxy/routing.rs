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
use crate::text::{Hex, Ip};

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
) -> Hex {
    let mut h = siphasher::sip::SipHasher13::new_with_key(key);
    for part in [call_id, caller_tag, tenant.as_bytes(), carrier.as_bytes()] {
        h.write(part);
        // Separators: ("ab","c") and ("a","bc") must differ.
        h.write_u8(0);
    }
    Hex::padded(h.finish(), 16)
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
    let mut v = String::with_capacity(host.len() + branch.len() + 40);
    v.push_str("SIP/2.0/");
    v.push_str(dest.transport.as_via());
    v.push(' ');
    v.push_str(host);
    v.push(':');
    v.push_str(itoa::Buffer::new().format(port));
    v.push_str(";branch=");
    v.push_str(branch);
    v.push_str(";rport");
    v
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
        let mut v = String::with_capacity(host.len() + token.len() + carrier.len() + 48);
        v.push_str("<sip:");
        v.push_str(host);
        v.push(':');
        v.push_str(itoa::Buffer::new().format(port));
        v.push_str(t);
        v.push_str(";lr;cgr=");
        v.push_str(token);
        v.push_str(";cgc=");
        v.push_str(carrier);
        v.push('>');
        v
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
        tenant.is_some_and(|t| {
            token_eq(
                self::token(&s.route_key, call_id, tag, &t, carrier).as_str(),
                token,
            )
        })
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

/// Whether the Request-URI is a SIPS URI: every hop to its target is then
/// TLS (§26.2.2, RFC 5630 §3.1.3), so only carriers reached over TLS may
/// take the request.
pub fn is_sips_request(msg: &Message) -> bool {
    msg.request_uri()
        .and_then(|u| u.get(..5))
        .is_some_and(|s| s.eq_ignore_ascii_case(b"sips:"))
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

/// Where a response goes by the Via `via` (§18.2.2, RFC 3581): `received`
/// and `rport` when present, the sent-by otherwise. `None` for a host name
/// or an unknown transport: a stateless relay resolves nothing.
pub fn via_reply_peer(via: &Via<'_>) -> Option<Peer> {
    let transport = Transport::from_bytes(via.transport)?;
    let ip = via
        .received
        .and_then(crate::sip::uri::parse_ip_host)
        .or_else(|| crate::sip::uri::parse_ip_host(via.host))?;
    let port = match via.rport {
        Some(Some(p)) => std::str::from_utf8(p).ok().and_then(|p| p.parse().ok()),
        _ => None,
    }
    .or(via.port)
    .unwrap_or(5060);
    Some(Peer {
        transport,
        addr: (ip, port).into(),
    })
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
    let mut b = String::with_capacity(32);
    b.push_str("z9hG4bKcgsl");
    b.push_str(Hex::new(h.finish()).as_str());
    b
}

/// The Request-URI sent to a carrier: the dialled user at the carrier's
/// address (`tel:` URIs become `sip:`).
pub fn rewrite_uri_host(uri: &[u8], dest: &Peer) -> String {
    let transport = match dest.transport {
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        Transport::Udp => "",
    };
    let mut out = String::with_capacity(uri.len() + 64);
    let push_host = |out: &mut String| {
        let v6 = dest.addr.is_ipv6();
        if v6 {
            out.push('[');
        }
        out.push_str(Ip::new(dest.addr.ip()).as_str());
        if v6 {
            out.push(']');
        }
        out.push(':');
        out.push_str(itoa::Buffer::new().format(dest.addr.port()));
    };
    match Uri::parse(uri) {
        Some(u) => {
            // TLS to the carrier is this hop's transport (`transport=tls`);
            // `sips:` stays a promise of the caller's to make.
            out.push_str(if u.is_sips() { "sips:" } else { "sip:" });
            if let Some(user) = u.user {
                out.push_str(&String::from_utf8_lossy(user));
                out.push('@');
            }
            push_host(&mut out);
            for (n, v) in crate::sip::message::params(u.params) {
                if n.eq_ignore_ascii_case(b"transport") || n.eq_ignore_ascii_case(b"phone-context")
                {
                    continue;
                }
                out.push(';');
                out.push_str(&String::from_utf8_lossy(n));
                if let Some(v) = v {
                    out.push('=');
                    out.push_str(&String::from_utf8_lossy(v));
                }
            }
        }
        None => {
            out.push_str("sip:");
            push_host(&mut out);
        }
    }
    out.push_str(transport);
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    /// What `rewrite_uri_host` wrote through `format!` before it was
    /// written into one buffer: the reference for its bytes.
    fn rewrite_by_format(uri: &[u8], dest: &Peer) -> String {
        let host = match dest.addr {
            SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let transport = match dest.transport {
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
            Transport::Udp => "",
        };
        match Uri::parse(uri) {
            Some(u) => {
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

    fn transport(i: u8) -> Transport {
        [Transport::Udp, Transport::Tcp, Transport::Tls][usize::from(i % 3)]
    }

    proptest! {
        #[test]
        fn built_text_is_what_format_wrote(
            scheme in "sips?|tel|x",
            user in proptest::option::of("[+0-9a-z%.é]{0,14}"),
            host in "[a-z0-9.]{1,12}|\\[::1\\]",
            port in proptest::option::of(any::<u16>()),
            params in proptest::collection::vec(
                ("transport|phone-context|user|lr|[a-zA-Z]{1,6}", proptest::option::of("[a-z0-9=.]{0,6}")),
                0..4,
            ),
            raw in proptest::collection::vec(any::<u8>(), 0..30),
            ip in any::<u32>(),
            ip6 in any::<u128>(),
            v6 in any::<bool>(),
            dport in any::<u16>(),
            t in any::<u8>(),
            key in any::<[u8; 16]>(),
            call_id in "[a-zA-Z0-9@.-]{0,20}",
            branch in "z9hG4bK[a-z0-9.]{0,20}",
            carrier in "[a-z0-9-]{1,10}",
        ) {
            let addr: SocketAddr = if v6 {
                (std::net::Ipv6Addr::from(ip6), dport).into()
            } else {
                (std::net::Ipv4Addr::from(ip), dport).into()
            };
            let dest = Peer { transport: transport(t), addr };
            let mut uri = format!("{scheme}:");
            if let Some(u) = &user {
                uri.push_str(u);
                uri.push('@');
            }
            uri.push_str(&host);
            if let Some(p) = port {
                uri.push_str(&format!(":{p}"));
            }
            for (n, v) in &params {
                uri.push(';');
                uri.push_str(n);
                if let Some(v) = v {
                    uri.push('=');
                    uri.push_str(v);
                }
            }
            prop_assert_eq!(rewrite_uri_host(uri.as_bytes(), &dest), rewrite_by_format(uri.as_bytes(), &dest));
            prop_assert_eq!(rewrite_uri_host(&raw, &dest), rewrite_by_format(&raw, &dest));

            let s = Settings::simulated(&host, dport, vec![]);
            let (h, p) = endpoint_for(&s, dest);
            prop_assert_eq!(
                via_value(&s, dest, &branch),
                format!("SIP/2.0/{} {}:{};branch={};rport", dest.transport.as_via(), h, p, branch)
            );
            let tok = token(&key, call_id.as_bytes(), b"tag", "acme", &carrier).as_str().to_owned();
            let mut hasher = siphasher::sip::SipHasher13::new_with_key(&key);
            for part in [call_id.as_bytes(), b"tag", b"acme", carrier.as_bytes()] {
                hasher.write(part);
                hasher.write_u8(0);
            }
            prop_assert_eq!(&tok, &format!("{:016x}", hasher.finish()));
            let inbound = Peer { transport: transport(t.wrapping_add(1)), addr };
            let rr = record_route(&s, inbound, dest, &tok, &carrier);
            let by_format = |p: Peer| {
                let (host, port) = endpoint_for(&s, p);
                let t = match p.transport {
                    Transport::Tcp => ";transport=tcp",
                    Transport::Tls => ";transport=tls",
                    Transport::Udp => "",
                };
                format!("<sip:{host}:{port}{t};lr;cgr={tok};cgc={carrier}>")
            };
            prop_assert_eq!(&rr[0], &by_format(dest));
            prop_assert_eq!(rr.last().unwrap(), &by_format(inbound));
        }
    }

    #[test]
    fn stateless_branch_is_the_hash_in_hex() {
        let m = Message::parse(bytes::Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let mut h = siphasher::sip::SipHasher13::new();
        h.write(b"z9hG4bKx");
        h.write(b"10.0.0.1:5060");
        h.write(b"c1");
        assert_eq!(stateless_branch(&m), format!("z9hG4bKcgsl{:x}", h.finish()));
    }
}
