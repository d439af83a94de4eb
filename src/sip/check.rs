//! Whether a request is well-formed enough to act on, and the response when
//! it is not (RFC 3261 §8.2, §16.3 step 1; the invalid messages of RFC
//! 4475). The parser indexes a message without judging the headers a proxy
//! carries through; this judges the ones the proxy reads or relies on.

use super::message::{params_raw, split_commas_raw, HeaderName, Message};
use super::uri::Uri;

/// A request that gets a response instead of being processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    pub status: u16,
    pub phrase: &'static str,
}

const fn bad(phrase: &'static str) -> Malformed {
    Malformed {
        status: 400,
        phrase,
    }
}

/// The URI schemes this proxy routes (`tel` only as a callee).
fn supported_scheme(s: &[u8]) -> bool {
    s.eq_ignore_ascii_case(b"sip")
        || s.eq_ignore_ascii_case(b"sips")
        || s.eq_ignore_ascii_case(b"tel")
}

/// RFC 3986 scheme syntax: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
fn scheme_of(uri: &[u8]) -> Option<&[u8]> {
    let colon = memchr::memchr(b':', uri)?;
    let s = &uri[..colon];
    let ok = s.first().is_some_and(u8::is_ascii_alphabetic)
        && s.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c));
    ok.then_some(s)
}

pub fn check_request(msg: &Message, method: &[u8]) -> Result<(), Malformed> {
    // §7.3.1: a header may repeat only when its value is a comma-separated
    // list. Two From, To, Call-ID, CSeq, Max-Forwards or Content-Length
    // headers make the request ambiguous (RFC 4475 multi01, mcl01): the
    // identity checked here might not be the one the next hop reads.
    let mut seen = [0u8; 6];
    for h in &msg.headers {
        let i = match h.name {
            HeaderName::From => 0,
            HeaderName::To => 1,
            HeaderName::CallId => 2,
            HeaderName::CSeq => 3,
            HeaderName::MaxForwards => 4,
            HeaderName::ContentLength => 5,
            _ => continue,
        };
        seen[i] += 1;
        if seen[i] > 1 {
            return Err(bad([
                "Duplicate From",
                "Duplicate To",
                "Duplicate Call-ID",
                "Duplicate CSeq",
                "Duplicate Max-Forwards",
                "Duplicate Content-Length",
            ][i]));
        }
    }
    if msg.call_id().is_none() {
        return Err(bad("Missing Call-ID"));
    }
    let from = msg.header(HeaderName::From).ok_or(bad("Missing From"))?;
    let to = msg.header(HeaderName::To).ok_or(bad("Missing To"))?;
    match msg.cseq() {
        // §8.1.1.5: the sequence number is below 2**31.
        Some((n, _)) if n >= 1 << 31 => return Err(bad("Bad CSeq")),
        Some((_, m)) if m != method => return Err(bad("CSeq Method Mismatch")),
        Some(_) => {}
        None => return Err(bad("Bad CSeq")),
    }
    // §20.22 / §8.1.1.6: 0 to 255.
    if let Some(mf) = msg.max_forwards() {
        if !matches!(mf, Ok(0..=255)) {
            return Err(bad("Bad Max-Forwards"));
        }
    }
    if msg.body().is_err() {
        return Err(bad("Bad Content-Length"));
    }
    let ruri = msg.request_uri().unwrap_or_default();
    match scheme_of(ruri) {
        None => return Err(bad("Bad Request-URI")),
        // RFC 4475 unkscm, novelsc: a scheme we cannot route.
        Some(s) if !supported_scheme(s) => {
            return Err(Malformed {
                status: 416,
                phrase: "Unsupported URI Scheme",
            })
        }
        Some(_) => {}
    }
    // §19.1.1 table 1: a Request-URI carries no headers (RFC 4475 escruri).
    if Uri::parse(ruri).is_none() || memchr::memchr(b'?', ruri).is_some() {
        return Err(bad("Bad Request-URI"));
    }
    if !name_addr_ok(from) {
        return Err(bad("Bad From"));
    }
    if !name_addr_ok(to) {
        return Err(bad("Bad To"));
    }
    // RFC 4475 badinv01: empty list elements and empty parameters.
    for h in msg.headers.iter().filter(|h| h.name == HeaderName::Via) {
        if !list_ok(msg.slice(h.value), |v| super::Via::parse(v).is_some()) {
            return Err(bad("Bad Via"));
        }
    }
    for h in msg.headers.iter().filter(|h| h.name == HeaderName::Contact) {
        let v = msg.slice(h.value);
        if v != b"*" && !list_ok(v, name_addr_ok) {
            return Err(bad("Bad Contact"));
        }
    }
    Ok(())
}

/// A comma-separated list with no empty element, each element valid and
/// with no empty `;` parameter.
fn list_ok(v: &[u8], each: impl Fn(&[u8]) -> bool) -> bool {
    split_commas_raw(v).all(|e| {
        let e = e.trim_ascii();
        !e.is_empty() && each(e) && params_raw(after_uri(e)).all(|p| !p.trim_ascii().is_empty())
    })
}

/// The part of a header value after its URI, where header parameters are.
fn after_uri(v: &[u8]) -> &[u8] {
    match angle(v) {
        Some((_, gt)) => &v[gt + 1..],
        None => match memchr::memchr(b';', v) {
            Some(s) => &v[s..],
            None => &[],
        },
    }
}

/// Positions of the `<` and `>` of a name-addr, outside quotes.
fn angle(v: &[u8]) -> Option<(usize, usize)> {
    if memchr::memchr(b'"', v).is_none() {
        // No quoted display name (the usual case): the first `>` and a
        // `<` before it, found without a walk byte by byte.
        let gt = memchr::memchr(b'>', v)?;
        return memchr::memchr(b'<', &v[..gt]).map(|lt| (lt, gt));
    }
    let (mut quoted, mut escaped, mut lt) = (false, false, None);
    for (i, &c) in v.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted {
            match c {
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => quoted = true,
                b'<' if lt.is_none() => lt = Some(i),
                b'>' => return lt.map(|l| (l, i)),
                _ => {}
            }
        }
    }
    None
}

/// A From, To or Contact value: one `name-addr` or `addr-spec` with
/// parameters (§20.10, §25.1). Catches an unterminated quoted string
/// (quotbal), an unquoted display name with non-token characters such as a
/// comma (baddn), whitespace inside the angle brackets (badaspec).
fn name_addr_ok(v: &[u8]) -> bool {
    let v = v.trim_ascii();
    if split_commas_raw(v).count() != 1 {
        return false;
    }
    // Quotes must balance.
    let (mut quoted, mut escaped) = (false, false);
    let quotes = memchr::memchr(b'"', v).map_or(&[][..], |q| &v[q..]);
    for &c in quotes {
        if escaped {
            escaped = false;
        } else if quoted {
            match c {
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
        } else if c == b'"' {
            quoted = true;
        }
    }
    if quoted {
        return false;
    }
    let uri = match angle(v) {
        Some((lt, gt)) => {
            let display = v[..lt].trim_ascii();
            let display_ok = if display.starts_with(b"\"") {
                display.len() >= 2 && display.ends_with(b"\"")
            } else {
                display
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~ \t\r\n".contains(&c))
            };
            let inner = &v[lt + 1..gt];
            if !display_ok
                || inner.first().is_some_and(u8::is_ascii_whitespace)
                || inner.last().is_some_and(u8::is_ascii_whitespace)
            {
                return false;
            }
            inner
        }
        None => {
            if memchr::memchr2(b'<', b'>', v).is_some() {
                return false;
            }
            match memchr::memchr(b';', v) {
                Some(s) => v[..s].trim_ascii(),
                None => v,
            }
        }
    };
    scheme_of(uri).is_some() && !uri.iter().any(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(extra: &str, ruri: &str) -> Result<(), Malformed> {
        let text = format!(
            "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n{extra}Call-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let m = Message::parse(Bytes::from(text)).unwrap();
        check_request(&m, b"OPTIONS")
    }

    const FT: &str = "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n";

    #[test]
    fn well_formed_requests_pass() {
        assert_eq!(req(FT, "sip:a@b"), Ok(()));
        for ft in [
            "From: \"J \\\"R\\\"\" <sip:j@x>;tag=1\r\nTo: sip:c@d\r\n",
            "From: caller<sip:caller@example.com>;tag=3\r\nTo: isbn:2983792873\r\n",
            "From: <http://www.example.com>;tag=1\r\nTo: \"Watson, Thomas\" <sip:t@x>\r\n",
        ] {
            assert_eq!(req(ft, "sip:a@b"), Ok(()), "{ft}");
        }
        assert_eq!(req(FT, "tel:+33162000000"), Ok(()));
        assert_eq!(req(&format!("{FT}Contact: *\r\n"), "sip:a@b"), Ok(()));
    }

    #[test]
    fn malformed_requests_get_their_status() {
        let code = |extra: &str, ruri: &str| req(extra, ruri).err().map(|m| (m.status, m.phrase));
        assert_eq!(
            code(FT, "nobodyKnowsThisScheme:opaque"),
            Some((416, "Unsupported URI Scheme"))
        );
        assert_eq!(
            code(FT, "soap.beep://192.0.2.103:3002"),
            Some((416, "Unsupported URI Scheme"))
        );
        assert_eq!(code(FT, "<sip:a@b>"), Some((400, "Bad Request-URI")));
        assert_eq!(
            code(
                "From: Bell, Alexander <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n",
                "sip:a@b"
            ),
            Some((400, "Bad From"))
        );
        assert_eq!(
            code(
                "From: <sip:a@b>;tag=1\r\nTo: \"Mr. J. User <sip:c@d>\r\n",
                "sip:a@b"
            ),
            Some((400, "Bad To"))
        );
        assert_eq!(
            code("From: <sip:a@b>;tag=1\r\nTo: < sip:c@d >\r\n", "sip:a@b"),
            Some((400, "Bad To"))
        );
        assert_eq!(
            code(
                &format!("{FT}Via: SIP/2.0/UDP 192.0.2.15;;,;,,\r\n"),
                "sip:a@b"
            ),
            Some((400, "Bad Via"))
        );
        assert_eq!(
            code(
                &format!("{FT}Contact: \"Joe\" <sip:joe@example.org>;;;;\r\n"),
                "sip:a@b"
            ),
            Some((400, "Bad Contact"))
        );
        assert_eq!(
            code(&format!("{FT}Max-Forwards: 300\r\n"), "sip:a@b"),
            Some((400, "Bad Max-Forwards"))
        );
        assert_eq!(
            code(&format!("{FT}l: 0\r\n"), "sip:a@b"),
            Some((400, "Duplicate Content-Length"))
        );
    }
}
