//! The SIP parser and the request checks on arbitrary bytes: no panic,
//! and what parses can be read in every way the proxy reads it.
#![no_main]

use callguard::sip::message::HeaderName;
use callguard::sip::{check::check_request, Message, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = bytes::Bytes::copy_from_slice(data);
    if let Ok(m) = Message::parse(buf.clone()) {
        let _ = m.top_via();
        let _ = m.cseq();
        let _ = (m.from_tag(), m.to_tag(), m.call_id(), m.max_forwards());
        let _ = m.body();
        for v in m.values(HeaderName::Route) {
            let _ = Uri::parse(callguard::sip::message::name_addr_uri(v));
        }
        if let Some(method) = m.method() {
            let _ = check_request(&m, method);
        }
        if let Some(u) = m.request_uri() {
            let _ = Uri::parse(u);
        }
    }
    if let Some((m, _)) = Message::salvage(buf) {
        assert!(m.is_request());
    }
});
