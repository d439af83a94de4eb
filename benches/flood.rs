//! A flood of INVITEs from one source that is no tenant's, as fast as one
//! thread can send them, each with a fresh Call-ID and branch (the worst
//! case for a proxy that keeps a transaction per stranger). Used by
//! `benches/flood.sh`; on its own:
//!
//!   FLOOD_TARGET=127.0.0.1:5070 FLOOD_FROM=127.0.0.9 FLOOD_SECONDS=30 \
//!     cargo bench --bench flood
//!
//! Prints how many datagrams it sent and at what rate.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn main() {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let target: SocketAddr = var("FLOOD_TARGET", "127.0.0.1:5070")
        .parse()
        .expect("FLOOD_TARGET: IP:PORT");
    let from = var("FLOOD_FROM", "127.0.0.9");
    let seconds: f64 = var("FLOOD_SECONDS", "30").parse().expect("FLOOD_SECONDS");
    let sock = UdpSocket::bind((from.as_str(), 0)).expect("bind FLOOD_FROM");
    let me = sock.local_addr().expect("local address");
    // Answers are not read: a kernel buffer that fills drops them.
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut sent: u64 = 0;
    let mut failed: u64 = 0;
    let mut text = String::with_capacity(600);
    while !sent.is_multiple_of(1024) || Instant::now() < until {
        use std::fmt::Write;
        text.clear();
        let _ = write!(
            text,
            "INVITE sip:+33142000000@{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bKflood{sent}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:+33162000001@{me}>;tag=f{sent}\r\n\
             To: <sip:+33142000000@{target}>\r\n\
             Call-ID: flood-{sent}@{me}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:flood@{me}>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        if sock.send_to(text.as_bytes(), target).is_err() {
            failed += 1;
        }
        sent += 1;
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "flood: {sent} INVITEs from {me} in {s:.1} s = {:.0}/s ({failed} sends failed)",
        sent as f64 / s
    );
}
