//! The floor of a reject on this box, for `compare-kamailio.sh FLOOR=1`:
//! what the kernel and the loopback cost to take an INVITE, answer it 603
//! and take its ACK, with no SIP work beyond copying the headers a
//! response needs. One thread, blocking `recv_from`/`send_to`, as a
//! Kamailio worker does. A proxy's CPU per reject above this figure is
//! its own code.
//!
//!   rustc --edition 2021 -O benches/floor/reject.rs -o /tmp/reject-floor && /tmp/reject-floor 127.0.0.1:5074
//!
//! Not a SIP implementation: no checks, no transaction, no retransmission.

use std::net::UdpSocket;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5074".into());
    let sock = UdpSocket::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(2048);
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        let msg = &buf[..n];
        if !msg.starts_with(b"INVITE ") {
            continue;
        }
        out.clear();
        out.extend_from_slice(b"SIP/2.0 603 Decline\r\n");
        for line in msg.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let is = |h: &[u8]| name.eq_ignore_ascii_case(h);
            if is(b"Via") || is(b"From") || is(b"Call-ID") || is(b"CSeq") {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            } else if is(b"To") {
                out.extend_from_slice(line);
                out.extend_from_slice(b";tag=floor\r\n");
            }
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let _ = sock.send_to(&out, from);
    }
}
