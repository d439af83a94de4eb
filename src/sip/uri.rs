//! SIP/SIPS/TEL URIs (RFC 3261 §19.1, RFC 3966), borrowed from the message.

use super::message::params;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    /// Lower-case scheme as written: `sip`, `sips` or `tel`.
    pub scheme: &'a [u8],
    pub user: Option<&'a [u8]>,
    /// Host as written; IPv6 references keep their brackets.
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// The `;params` part (starting with `;`), before any `?headers`.
    pub params: &'a [u8],
}

impl<'a> Uri<'a> {
    pub fn parse(s: &'a [u8]) -> Option<Uri<'a>> {
        let colon = memchr::memchr(b':', s)?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        let rest = match memchr::memchr(b'?', rest) {
            Some(q) => &rest[..q],
            None => rest,
        };
        if scheme.eq_ignore_ascii_case(b"tel") {
            // tel:+33162000000;phone-context=... — the number is the "user".
            let semi = memchr::memchr(b';', rest).unwrap_or(rest.len());
            if semi == 0 {
                return None;
            }
            return Some(Uri {
                scheme,
                user: Some(&rest[..semi]),
                host: b"",
                port: None,
                params: &rest[semi..],
            });
        }
        if !(scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips")) {
            return None;
        }
        // userinfo ends at the last '@' before the host (a user may contain
        // escaped characters, never a raw '@').
        let (user, hostpart) = match memchr::memchr(b'@', rest) {
            Some(at) => {
                let ui = &rest[..at];
                // strip ":password"
                let u = match memchr::memchr(b':', ui) {
                    Some(c) => &ui[..c],
                    None => ui,
                };
                (Some(u), &rest[at + 1..])
            }
            None => (None, rest),
        };
        let semi = find_params_start(hostpart);
        let (host, port) = split_host_port(&hostpart[..semi])?;
        if host.is_empty() {
            return None;
        }
        Some(Uri {
            scheme,
            user,
            host,
            port,
            params: &hostpart[semi..],
        })
    }

    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        params(self.params)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn has_param(&self, name: &[u8]) -> bool {
        self.param(name).is_some()
    }

    pub fn is_sips(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"sips")
    }

    /// The host as an IP address when it is a literal.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        parse_ip_host(self.host)
    }
}

fn find_params_start(hostpart: &[u8]) -> usize {
    // Skip over a bracketed IPv6 reference, whose colons are not separators.
    let from = if hostpart.first() == Some(&b'[') {
        memchr::memchr(b']', hostpart).unwrap_or(0)
    } else {
        0
    };
    memchr::memchr(b';', &hostpart[from..])
        .map(|i| i + from)
        .unwrap_or(hostpart.len())
}

/// `host[:port]`, with IPv6 references in brackets.
pub fn split_host_port(s: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let s = &s[super::message::trim(s, 0..s.len())];
    if s.first() == Some(&b'[') {
        let close = memchr::memchr(b']', s)?;
        let host = &s[..=close];
        let rest = &s[close + 1..];
        return match rest {
            [] => Some((host, None)),
            [b':', p @ ..] => Some((host, Some(parse_port(p)?))),
            _ => None,
        };
    }
    match memchr::memchr(b':', s) {
        Some(c) => Some((&s[..c], Some(parse_port(&s[c + 1..])?))),
        None => Some((s, None)),
    }
}

fn parse_port(p: &[u8]) -> Option<u16> {
    let p = &p[super::message::trim(p, 0..p.len())];
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(p).ok()?.parse().ok()
}

/// Parses an IPv4 literal or a bracketed (or bare) IPv6 literal.
pub fn parse_ip_host(host: &[u8]) -> Option<std::net::IpAddr> {
    let h = std::str::from_utf8(host).ok()?;
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    h.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sip_uris() {
        let u =
            Uri::parse(b"sip:+33162000000@127.0.0.1:5080;user=phone;transport=TCP?x=y").unwrap();
        assert_eq!(u.user, Some(&b"+33162000000"[..]));
        assert_eq!(u.host, b"127.0.0.1");
        assert_eq!(u.port, Some(5080));
        assert_eq!(u.param(b"transport"), Some(Some(&b"TCP"[..])));
        assert!(!u.has_param(b"lr"));

        let u = Uri::parse(b"sips:[2001:db8::1]:5061;lr").unwrap();
        assert_eq!(u.user, None);
        assert_eq!(u.host, b"[2001:db8::1]");
        assert_eq!(u.port, Some(5061));
        assert!(u.has_param(b"lr"));
        assert!(u.is_sips());
        assert_eq!(u.ip(), Some("2001:db8::1".parse().unwrap()));

        let u = Uri::parse(b"tel:+1-201-555-0123;phone-context=x").unwrap();
        assert_eq!(u.user, Some(&b"+1-201-555-0123"[..]));

        let u = Uri::parse(b"sip:alice:secret@example.com").unwrap();
        assert_eq!(u.user, Some(&b"alice"[..]));
    }

    #[test]
    fn rejects_bad_uris() {
        for bad in [
            &b"http://x"[..],
            b"sip:",
            b"sip:a@",
            b"sip:h:99999",
            b"sip:[::1",
            b"sip:h:p",
        ] {
            assert!(
                Uri::parse(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
