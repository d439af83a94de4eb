//! Parsing a SIP message into indexed header lines over one `Bytes` buffer.

use bytes::Bytes;
use smallvec::SmallVec;
use std::ops::Range;

/// Messages with more header lines than this are rejected: a legitimate
/// INVITE carries 15–30, and a bound keeps a hostile datagram from costing
/// unbounded work.
pub const MAX_HEADERS: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("start line is not a SIP request or response line")]
    BadStartLine,
    #[error("unsupported SIP version")]
    BadVersion,
    #[error("header line without a colon or with an invalid name")]
    BadHeader,
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    #[error("message head is not terminated by an empty line")]
    Incomplete,
}

/// Content-Length unreadable, or larger than the bytes received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Content-Length does not match the message")]
pub struct BadContentLength;

/// Byte range inside the message buffer. `u32` keeps the header index small;
/// messages are bounded far below 4 GiB by the transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn new(r: Range<usize>) -> Self {
        Span {
            start: r.start as u32,
            end: r.end as u32,
        }
    }
    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
    pub fn is_empty(self) -> bool {
        self.start >= self.end
    }
}

/// The header names the proxy acts on; everything else is carried verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    Route,
    RecordRoute,
    ContentLength,
    Contact,
    ProxyRequire,
    Other,
}

impl HeaderName {
    /// Case-insensitive, with the compact forms of RFC 3261 §7.3.3.
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'l' => HeaderName::ContentLength,
                b'm' => HeaderName::Contact,
                _ => HeaderName::Other,
            };
        }
        const NAMES: &[(&[u8], HeaderName)] = &[
            (b"via", HeaderName::Via),
            (b"from", HeaderName::From),
            (b"to", HeaderName::To),
            (b"call-id", HeaderName::CallId),
            (b"cseq", HeaderName::CSeq),
            (b"max-forwards", HeaderName::MaxForwards),
            (b"route", HeaderName::Route),
            (b"record-route", HeaderName::RecordRoute),
            (b"content-length", HeaderName::ContentLength),
            (b"contact", HeaderName::Contact),
            (b"proxy-require", HeaderName::ProxyRequire),
        ];
        for (n, h) in NAMES {
            if n.eq_ignore_ascii_case(name) {
                return *h;
            }
        }
        HeaderName::Other
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HeaderLine {
    pub name: HeaderName,
    /// The name as written (for headers the proxy does not know).
    pub raw_name: Span,
    /// Value with surrounding whitespace trimmed; may contain folded line
    /// breaks, which every value reader treats as whitespace.
    pub value: Span,
    /// The whole line from the name to the end of the value (no CRLF).
    pub line: Span,
}

#[derive(Debug, Clone)]
pub enum StartLine {
    Request { method: Span, uri: Span },
    Response { code: u16, reason: Span },
}

/// A parsed message: the buffer plus an index of its parts.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Bytes,
    pub start: StartLine,
    pub headers: SmallVec<[HeaderLine; 24]>,
    /// Everything after the blank line, before Content-Length is applied.
    pub body: Span,
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

pub(crate) fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

pub(crate) fn trim(buf: &[u8], mut r: Range<usize>) -> Range<usize> {
    while r.start < r.end && is_ws(buf[r.start]) {
        r.start += 1;
    }
    while r.end > r.start && is_ws(buf[r.end - 1]) {
        r.end -= 1;
    }
    r
}

/// Finds the end of the line starting at `from`: returns (end of content,
/// start of next line). Accepts bare LF as well as CRLF, as RFC 3261 §7.5
/// asks receivers to be lenient.
fn line_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let nl = memchr::memchr(b'\n', &buf[from..])? + from;
    let end = if nl > from && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

impl Message {
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        Self::parse_with(buf, false)
    }

    /// A request whose Request-Line is broken (extra spaces, a space in the
    /// URI, an unknown SIP version), read leniently so that it can still be
    /// answered `400` or `505` (RFC 4475 lwsruri, lwsstart, trws, badvers):
    /// the message and what was wrong with its start line. `None` when even
    /// the lenient reading fails, or when `buf` parses as is.
    pub fn salvage(buf: Bytes) -> Option<(Message, ParseError)> {
        let problem = match Self::parse_with(buf.clone(), false) {
            Ok(_) => return None,
            Err(e @ (ParseError::BadStartLine | ParseError::BadVersion)) => e,
            Err(_) => return None,
        };
        let m = Self::parse_with(buf, true).ok()?;
        // "SIP/2.0 " with trailing blanks is a malformed line, not an
        // unknown version.
        let first = m.buf.split(|&c| c == b'\n').next().unwrap_or_default();
        let problem = match problem {
            ParseError::BadVersion if first.trim_ascii().ends_with(b" SIP/2.0") => {
                ParseError::BadStartLine
            }
            p => p,
        };
        m.is_request().then_some((m, problem))
    }

    /// [`Message::parse`], giving the buffer back with the error (to be
    /// salvaged): the caller then keeps no clone, and cloning a `Bytes`
    /// made from a `Vec` allocates.
    pub fn parse_or_return(buf: Bytes) -> Result<Message, (ParseError, Bytes)> {
        Self::parse_returning(buf, false)
    }

    fn parse_with(buf: Bytes, lenient: bool) -> Result<Message, ParseError> {
        Self::parse_returning(buf, lenient).map_err(|(e, _)| e)
    }

    fn parse_returning(buf: Bytes, lenient: bool) -> Result<Message, (ParseError, Bytes)> {
        let mut m = Message {
            buf,
            start: StartLine::Response {
                code: 0,
                reason: Span::new(0..0),
            },
            headers: SmallVec::new(),
            body: Span::new(0..0),
        };
        match m.index(lenient) {
            Ok(()) => Ok(m),
            Err(e) => Err((e, m.buf)),
        }
    }

    /// Fills in the start line, headers and body of `self.buf`.
    fn index(&mut self, lenient: bool) -> Result<(), ParseError> {
        let b = &self.buf[..];
        let headers = &mut self.headers;
        let mut pos = 0;
        // §7.5: CRLFs before the start line are ignored (keep-alives).
        while pos < b.len() && (b[pos] == b'\r' || b[pos] == b'\n') {
            pos += 1;
        }
        if pos == b.len() {
            return Err(ParseError::Empty);
        }
        let (sl_end, mut next) = line_end(b, pos).ok_or(ParseError::Incomplete)?;
        let start = if lenient {
            lenient_request_line(b, pos..sl_end)?
        } else {
            parse_start_line(b, pos..sl_end)?
        };

        loop {
            let (end, after) = line_end(b, next).ok_or(ParseError::Incomplete)?;
            if end == next {
                next = after;
                break; // blank line: end of the head
            }
            // Folded continuation lines (starting with SP/HT) belong to this header.
            let line_start = next;
            let mut value_end = end;
            let mut cursor = after;
            while cursor < b.len() && (b[cursor] == b' ' || b[cursor] == b'\t') {
                let (e, a) = line_end(b, cursor).ok_or(ParseError::Incomplete)?;
                value_end = e;
                cursor = a;
            }
            let colon = memchr::memchr(b':', &b[line_start..value_end])
                .ok_or(ParseError::BadHeader)?
                + line_start;
            // `Via :` is legal (HCOLON = *( SP / HTAB ) ":" SWS).
            let name = trim(b, line_start..colon);
            if name.is_empty() || !b[name.clone()].iter().all(|&c| is_token_char(c)) {
                return Err(ParseError::BadHeader);
            }
            if headers.len() == MAX_HEADERS {
                return Err(ParseError::TooManyHeaders);
            }
            headers.push(HeaderLine {
                name: HeaderName::from_bytes(&b[name.clone()]),
                raw_name: Span::new(name),
                value: Span::new(trim(b, colon + 1..value_end)),
                line: Span::new(line_start..value_end),
            });
            next = cursor;
        }
        self.body = Span::new(next..b.len());
        self.start = start;
        Ok(())
    }

    pub fn buf(&self) -> &Bytes {
        &self.buf
    }

    pub fn slice(&self, s: Span) -> &[u8] {
        &self.buf[s.range()]
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&[u8]> {
        match self.start {
            StartLine::Request { method, .. } => Some(self.slice(method)),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&[u8]> {
        match self.start {
            StartLine::Request { uri, .. } => Some(self.slice(uri)),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// First header of that name.
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| self.slice(h.value))
    }

    /// First header whose name matches case-insensitively (for extension headers).
    pub fn header_by_name(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| self.slice(h.raw_name).eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| self.slice(h.value))
    }

    /// The value of every header whose name matches case-insensitively, in
    /// order (repeated extension headers such as P-Asserted-Identity).
    pub fn headers_by_name<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| self.slice(h.raw_name).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |h| self.slice(h.value))
    }

    /// Every value of a possibly comma-separated, possibly repeated header,
    /// in order (Via, Route, Record-Route).
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .flat_map(move |h| split_commas(self.slice(h.value)))
    }

    pub fn top_via(&self) -> Option<Via<'_>> {
        self.values(HeaderName::Via).next().and_then(Via::parse)
    }

    pub fn call_id(&self) -> Option<&[u8]> {
        self.header(HeaderName::CallId).filter(|v| !v.is_empty())
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &[u8])> {
        let v = self.header(HeaderName::CSeq)?;
        let mut it = v.split(|c| is_ws(*c)).filter(|p| !p.is_empty());
        let n = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
        let m = it.next()?;
        if it.next().is_some() {
            return None;
        }
        Some((n, m))
    }

    pub fn max_forwards(&self) -> Option<Result<u32, ()>> {
        self.header(HeaderName::MaxForwards).map(|v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or(())
        })
    }

    pub fn from_tag(&self) -> Option<&[u8]> {
        self.header(HeaderName::From)
            .and_then(|v| header_param(v, b"tag"))
    }

    pub fn to_tag(&self) -> Option<&[u8]> {
        self.header(HeaderName::To)
            .and_then(|v| header_param(v, b"tag"))
    }

    /// Content-Length: `None` when absent, `Some(Err)` when unreadable.
    pub fn content_length(&self) -> Option<Result<usize, ()>> {
        self.header(HeaderName::ContentLength).map(|v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or(())
        })
    }

    /// The body as declared by Content-Length. Errors when the buffer holds
    /// fewer bytes than declared (RFC 3261 §18.3); extra bytes are dropped.
    pub fn body(&self) -> Result<&[u8], BadContentLength> {
        let all = self.slice(self.body);
        match self.content_length() {
            None => Ok(all),
            Some(Ok(n)) if n <= all.len() => Ok(&all[..n]),
            Some(_) => Err(BadContentLength),
        }
    }
}

fn parse_start_line(b: &[u8], r: Range<usize>) -> Result<StartLine, ParseError> {
    let line = &b[r.clone()];
    if line.starts_with(b"SIP/") {
        // SIP/2.0 SP Status-Code SP Reason-Phrase
        let mut parts = line.splitn(3, |&c| c == b' ');
        if parts.next() != Some(b"SIP/2.0") {
            return Err(ParseError::BadVersion);
        }
        let code = parts.next().ok_or(ParseError::BadStartLine)?;
        if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadStartLine);
        }
        let code: u16 = std::str::from_utf8(code)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        if !(100..700).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        let reason_start = r.start + 12.min(line.len());
        return Ok(StartLine::Response {
            code,
            reason: Span::new(reason_start..r.end),
        });
    }
    let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    let sp2 = memchr::memrchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    if sp1 == 0 || sp2 <= sp1 + 1 {
        return Err(ParseError::BadStartLine);
    }
    if !line[..sp1].iter().all(|&c| is_token_char(c)) {
        return Err(ParseError::BadStartLine);
    }
    if &line[sp2 + 1..] != b"SIP/2.0" {
        return Err(ParseError::BadVersion);
    }
    let uri = &line[sp1 + 1..sp2];
    if uri.iter().any(|&c| c == b' ' || c == b'\t') || !uri.contains(&b':') {
        return Err(ParseError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: Span::new(r.start..r.start + sp1),
        uri: Span::new(r.start + sp1 + 1..r.start + sp2),
    })
}

/// A Request-Line read as "method SP anything": the method up to the first
/// space, the URI the text after it (without a trailing version).
fn lenient_request_line(b: &[u8], r: Range<usize>) -> Result<StartLine, ParseError> {
    let line = &b[r.clone()];
    let sp = memchr::memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    if sp == 0 || line.starts_with(b"SIP/") || !line[..sp].iter().all(|&c| is_token_char(c)) {
        return Err(ParseError::BadStartLine);
    }
    let mut end = line.len();
    if let Some(v) = memchr::memmem::rfind(line, b" SIP/").filter(|&v| v > sp) {
        end = v;
    }
    let uri = trim(b, r.start + sp + 1..r.start + end);
    Ok(StartLine::Request {
        method: Span::new(r.start..r.start + sp),
        uri: Span::new(uri),
    })
}

/// Splits a header value at top-level commas, keeping empty elements
/// (for syntax checks: `a,,b` has three).
pub fn split_commas_raw(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let start = pos;
        let (mut quoted, mut angle, mut escaped) = (false, false, false);
        // Most values are one element: without a comma the scan below would
        // run to the end, so skip it (it was the parser's largest item).
        if memchr::memchr(b',', &v[pos..]).is_none() {
            pos = v.len();
        }
        while pos < v.len() {
            let c = v[pos];
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
                    b'<' => angle = true,
                    b'>' => angle = false,
                    b',' if !angle => break,
                    _ => {}
                }
            }
            pos += 1;
        }
        let r = trim(v, start..pos);
        if pos >= v.len() {
            done = true;
        }
        pos += 1;
        Some(&v[r])
    })
}

/// The `;`-separated parameter texts of `s` (after its first `;`),
/// keeping empty ones (for syntax checks).
pub fn params_raw(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    s.split(move |&c| {
        if c == b'"' {
            quoted = !quoted;
        }
        c == b';' && !quoted
    })
    .skip(1)
}

/// Splits a header value at top-level commas (outside quotes and `<>`).
pub fn split_commas(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < v.len() {
            let start = pos;
            let (mut quoted, mut angle, mut escaped) = (false, false, false);
            // As in `split_commas_raw`: no comma left, one element left.
            if memchr::memchr(b',', &v[pos..]).is_none() {
                pos = v.len();
            }
            while pos < v.len() {
                let c = v[pos];
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
                        b'<' => angle = true,
                        b'>' => angle = false,
                        b',' if !angle => break,
                        _ => {}
                    }
                }
                pos += 1;
            }
            let r = trim(v, start..pos);
            pos += 1; // skip the comma
            if !r.is_empty() {
                return Some(&v[r]);
            }
        }
        None
    })
}

/// Iterates `;name=value` parameters in `s` (which starts at or before the
/// first `;`). Names are returned as written; compare case-insensitively.
pub fn params(s: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    let mut quoted = false;
    s.split(move |&c| {
        if c == b'"' {
            quoted = !quoted;
        }
        c == b';' && !quoted
    })
    .skip(1)
    .filter_map(|p| {
        let p = &p[trim(p, 0..p.len())];
        if p.is_empty() {
            return None;
        }
        match memchr::memchr(b'=', p) {
            Some(eq) => {
                let n = &p[trim(p, 0..eq)];
                let v = &p[trim(p, eq + 1..p.len())];
                Some((n, Some(v)))
            }
            None => Some((p, None)),
        }
    })
}

/// A header parameter of a name-addr header (From, To): after the `>` when
/// the URI is bracketed, else after the addr-spec (RFC 3261 §20.10).
pub fn header_param<'a>(v: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let tail = header_params_part(v);
    params(tail)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, val)| val)
}

fn header_params_part(v: &[u8]) -> &[u8] {
    match memchr::memchr(b'<', v) {
        Some(_) => match memchr::memrchr(b'>', v) {
            Some(gt) => &v[gt + 1..],
            None => &[],
        },
        None => match memchr::memchr(b';', v) {
            Some(semi) => &v[semi..],
            None => &[],
        },
    }
}

/// The URI inside a name-addr (`"Name" <sip:...>;p`) or a bare addr-spec.
pub fn name_addr_uri(v: &[u8]) -> &[u8] {
    if let Some(lt) = memchr::memchr(b'<', v) {
        if let Some(gt) = memchr::memchr(b'>', &v[lt..]) {
            return &v[lt + 1..lt + gt];
        }
    }
    match memchr::memchr(b';', v) {
        Some(semi) => &v[..semi],
        None => v,
    }
}

/// One Via value: `SIP/2.0/UDP host[:port];params`.
#[derive(Debug, Clone)]
pub struct Via<'a> {
    pub transport: &'a [u8],
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// The `host[:port]` text as written (transaction matching key, §17.2.3).
    pub sent_by: &'a [u8],
    pub branch: Option<&'a [u8]>,
    pub received: Option<&'a [u8]>,
    /// `Some(None)`: `;rport` without a value (a request for RFC 3581).
    pub rport: Option<Option<&'a [u8]>>,
    pub raw: &'a [u8],
}

impl<'a> Via<'a> {
    pub fn parse(v: &'a [u8]) -> Option<Via<'a>> {
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport,
        // with SWS allowed around the slashes.
        let mut i = 0;
        let mut slashes = 0;
        let mut transport_start = 0;
        while i < v.len() {
            if v[i] == b'/' {
                slashes += 1;
                if slashes == 2 {
                    transport_start = i + 1;
                    break;
                }
            }
            i += 1;
        }
        if slashes != 2 {
            return None;
        }
        let proto = v[..transport_start - 1]
            .iter()
            .filter(|c| !is_ws(**c))
            .map(u8::to_ascii_uppercase);
        if !proto.eq(b"SIP/2.0".iter().copied()) {
            return None;
        }
        let mut j = transport_start;
        while j < v.len() && is_ws(v[j]) {
            j += 1;
        }
        let t_start = j;
        while j < v.len() && !is_ws(v[j]) {
            j += 1;
        }
        let transport = &v[t_start..j];
        while j < v.len() && is_ws(v[j]) {
            j += 1;
        }
        let rest = &v[j..];
        let semi = memchr::memchr(b';', rest).unwrap_or(rest.len());
        let sent_by_r = trim(rest, 0..semi);
        let sent_by = &rest[sent_by_r];
        if transport.is_empty() || sent_by.is_empty() {
            return None;
        }
        let (host, port) = crate::sip::uri::split_host_port(sent_by)?;
        let mut via = Via {
            transport,
            host,
            port,
            sent_by,
            branch: None,
            received: None,
            rport: None,
            raw: v,
        };
        for (n, val) in params(&rest[semi..]) {
            if n.eq_ignore_ascii_case(b"branch") {
                via.branch = val;
            } else if n.eq_ignore_ascii_case(b"received") {
                via.received = val;
            } else if n.eq_ignore_ascii_case(b"rport") {
                via.rport = Some(val);
            }
        }
        Some(via)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    const INVITE: &str = "INVITE sip:+33162000000@10.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:+33162000000@10.0.0.1>\r\n\
From: \"Dialer, one\" <sip:+33162000001@10.0.0.2>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    #[test]
    fn parses_request() {
        let m = parse(INVITE);
        assert_eq!(m.method(), Some(&b"INVITE"[..]));
        assert_eq!(m.request_uri(), Some(&b"sip:+33162000000@10.0.0.1"[..]));
        assert_eq!(m.call_id(), Some(&b"a84b4c76e66710@pc33"[..]));
        assert_eq!(m.cseq(), Some((314159, &b"INVITE"[..])));
        assert_eq!(m.from_tag(), Some(&b"1928301774"[..]));
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.max_forwards(), Some(Ok(70)));
        assert_eq!(m.body(), Ok(&b"v=0\n"[..]));
        let via = m.top_via().unwrap();
        assert_eq!(via.transport, b"UDP");
        assert_eq!(via.host, b"10.0.0.2");
        assert_eq!(via.port, Some(5060));
        assert_eq!(via.branch, Some(&b"z9hG4bK776asdhds"[..]));
        assert_eq!(via.rport, Some(None));
    }

    #[test]
    fn compact_forms_folding_and_space_before_colon() {
        let m = parse(
            "BYE sip:a@b SIP/2.0\r\n\
v: SIP/2.0/TCP h.example:5070\r\n ;branch=z9hG4bKx1, SIP/2.0/UDP [2001:db8::1];branch=z9hG4bKx2\r\n\
Via  : SIP / 2.0 / UDP last;branch=z9hG4bKx3\r\n\
f: <sip:a@b>;tag=ft\r\n\
t: sip:c@d;tag=tt\r\n\
i: cid\r\n\
CSeq:\r\n 2 BYE\r\n\
l: 0\r\n\r\n",
        );
        let vias: Vec<_> = m.values(HeaderName::Via).filter_map(Via::parse).collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].branch, Some(&b"z9hG4bKx1"[..]));
        assert_eq!(vias[0].port, Some(5070));
        assert_eq!(vias[1].host, b"[2001:db8::1]");
        assert_eq!(vias[2].branch, Some(&b"z9hG4bKx3"[..]));
        assert_eq!(m.from_tag(), Some(&b"ft"[..]));
        assert_eq!(m.to_tag(), Some(&b"tt"[..]));
        assert_eq!(m.call_id(), Some(&b"cid"[..]));
        assert_eq!(m.cseq(), Some((2, &b"BYE"[..])));
        assert_eq!(m.content_length(), Some(Ok(0)));
    }

    #[test]
    fn parses_response_and_bare_lf() {
        let m =
            parse("SIP/2.0 180 Ringing\nVia: SIP/2.0/UDP x;branch=z9hG4bKa\nContent-Length: 0\n\n");
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.top_via().unwrap().host, b"x");
    }

    #[test]
    fn quoted_commas_do_not_split() {
        let v: Vec<_> = split_commas(b"\"a, b\" <sip:x;p=1,2>, <sip:y>").collect();
        assert_eq!(v, vec![&b"\"a, b\" <sip:x;p=1,2>"[..], &b"<sip:y>"[..]]);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "\r\n\r\n",
            "hello world",
            "INVITE sip:a@b SIP/3.0\r\n\r\n",
            "INVITE  SIP/2.0\r\n\r\n",
            "SIP/2.0 99 Low\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\nNoColonHere\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\nVia: x\r\n",
            "INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(Message::parse(Bytes::from(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_length_mismatch_is_detected() {
        let m = parse("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nabc");
        assert!(m.body().is_err());
        let m = parse("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\n\r\nabc");
        assert_eq!(m.body(), Ok(&b"a"[..]));
    }

    #[test]
    fn too_many_headers() {
        let mut s = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
        for i in 0..=MAX_HEADERS {
            s.push_str(&format!("X-{i}: y\r\n"));
        }
        s.push_str("\r\n");
        assert_eq!(
            Message::parse(Bytes::from(s)).unwrap_err(),
            ParseError::TooManyHeaders
        );
    }
}
