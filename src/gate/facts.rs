//! The facts of a call as its SIP messages state them: callee, every
//! identity presented as the caller, withheld identity, dialing mode; and
//! a refusal a dialer signals on the BYE that ends a call.

use crate::policy::Facts;
use crate::sip::message::{name_addr_uri, HeaderName};
use crate::sip::{Message, Uri};

pub fn uri_user(v: &[u8]) -> Option<&str> {
    let uri = Uri::parse(name_addr_uri(v))?;
    if uri.host.eq_ignore_ascii_case(b"anonymous.invalid") {
        return Some("anonymous");
    }
    std::str::from_utf8(uri.user.unwrap_or_default()).ok()
}

/// The call's facts as the INVITE states them: callee from the
/// Request-URI; caller from the first P-Asserted-Identity, else From; every
/// other identity the carrier will see (further P-Asserted-Identity values,
/// P-Preferred-Identity, Remote-Party-ID, From when it holds a number) to
/// be checked as well.
pub fn facts<'a>(invite: &'a Message, mode_header: &str) -> Facts<'a> {
    let callee = invite.request_uri().and_then(uri_user).unwrap_or("");
    let mut identities = invite
        .headers_by_name("P-Asserted-Identity")
        .flat_map(crate::sip::message::split_commas)
        // A value that is not a URI is kept as written: it fails the
        // caller-ID check instead of being skipped.
        .map(|v| {
            uri_user(v)
                .or_else(|| std::str::from_utf8(v).ok())
                .unwrap_or("?")
        });
    let from = invite.header(HeaderName::From).and_then(uri_user);
    // Identities a carrier may also present: P-Preferred-Identity (RFC
    // 3325, a hint some networks assert as is) and Remote-Party-ID (the
    // pre-standard header many trunks still read the calling number from).
    let others = ["P-Preferred-Identity", "Remote-Party-ID"]
        .into_iter()
        .flat_map(|h| invite.headers_by_name(h))
        .flat_map(crate::sip::message::split_commas)
        .filter(|v| {
            // Remote-Party-ID also names the called party and diversions.
            crate::sip::message::header_param(v, b"party")
                .is_none_or(|p| p.eq_ignore_ascii_case(b"calling"))
        })
        .map(|v| {
            uri_user(v)
                .or_else(|| std::str::from_utf8(v).ok())
                .unwrap_or("?")
        });
    let mut also_presented = smallvec::SmallVec::new();
    let caller = match identities.next() {
        Some(first) => {
            also_presented.extend(identities);
            also_presented.extend(others);
            // From is presented too when it holds a number (a name such
            // as `dialer` or `anonymous` is not a caller ID).
            if let Some(f) = from.filter(|f| looks_like_number(f)) {
                also_presented.push(f);
            }
            Some(first)
        }
        None => {
            also_presented.extend(others);
            from
        }
    }
    .filter(|u| !u.is_empty());
    let withheld = invite.headers_by_name("Privacy").any(|v| {
        v.split(|&c| c == b';')
            .map(|t| t.trim_ascii())
            .any(|t| t.eq_ignore_ascii_case(b"id") || t.eq_ignore_ascii_case(b"user"))
    }) || invite
        .headers_by_name("Remote-Party-ID")
        .flat_map(crate::sip::message::split_commas)
        .any(|v| {
            crate::sip::message::header_param(v, b"privacy")
                .is_some_and(|p| p.eq_ignore_ascii_case(b"full") || p.eq_ignore_ascii_case(b"uri"))
        });
    let mode = invite
        .header_by_name(mode_header)
        .and_then(|v| std::str::from_utf8(v).ok());
    Facts {
        caller,
        also_presented,
        withheld,
        callee,
        mode,
    }
}

/// A user part that is written as a telephone number (digits, with an
/// optional `+` and visual separators).
fn looks_like_number(u: &str) -> bool {
    let u = u.trim();
    let digits = u.trim_start_matches('+');
    !digits.is_empty()
        && digits.starts_with(|c: char| c.is_ascii_digit())
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | ' ' | '(' | ')'))
}

/// A refusal signalled by the dialer on a BYE (`X-Disposition: refused`).
#[derive(Debug, Clone, Default)]
pub struct RefusalSignal {
    /// Header name; empty = ignore BYEs.
    pub header: String,
    /// Values that mean "refused", lower-case.
    pub values: Vec<String>,
}

impl RefusalSignal {
    /// `header` names the header (empty: BYEs are not read); `values` are
    /// the values that mean a refusal, compared without case.
    pub fn new(header: &str, values: &[String]) -> RefusalSignal {
        RefusalSignal {
            header: header.trim().to_owned(),
            values: values
                .iter()
                .map(|v| v.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    pub fn matches(&self, req: &Message) -> bool {
        !self.header.is_empty()
            && req
                .header_by_name(&self.header)
                .and_then(|v| std::str::from_utf8(v).ok())
                .is_some_and(|v| {
                    let v = v.split(';').next().unwrap_or("").trim();
                    self.values.iter().any(|x| v.eq_ignore_ascii_case(x))
                })
    }
}
