//! SIP over TLS through a real `callguard`: dialers and carriers over
//! rustls on loopback, certificates made by the test (`rcgen`).

mod common;

use callguard::sip::message::HeaderName;
use callguard::sip::Message;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

/// A CA and certificates it signs.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

struct Cert {
    pem: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let ca = p.self_signed(&key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A certificate for `dns` names and 127.0.0.1, good for servers and
    /// clients.
    fn issue(&self, cn: &str, dns: &[&str]) -> Cert {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Cert {
            pem: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

fn roots(ca: &str) -> rustls::RootCertStore {
    let mut r = rustls::RootCertStore::empty();
    for c in chain(ca) {
        r.add(c).unwrap();
    }
    r
}

/// One TLS connection carrying SIP, either side.
struct TlsPeer<C> {
    s: rustls::StreamOwned<C, TcpStream>,
    buf: Vec<u8>,
}

impl<C, S> TlsPeer<C>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    fn send(&mut self, text: &str) {
        self.s.write_all(text.as_bytes()).unwrap();
        self.s.flush().unwrap();
    }

    fn recv(&mut self, within: Duration) -> Option<Message> {
        let deadline = Instant::now() + within;
        loop {
            let mut b = bytes::BytesMut::from(&self.buf[..]);
            if let Ok(Some(callguard::transport::stream::Frame::Message(m))) =
                callguard::transport::stream::next_frame(&mut b, 1 << 20)
            {
                self.buf = b.to_vec();
                return Some(Message::parse(m).unwrap());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.sock.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 8192];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => return None,
            }
        }
    }

    /// The next message that is not `100 Trying`.
    fn recv_skip_100(&mut self, within: Duration) -> Message {
        loop {
            let m = self.recv(within).expect("a SIP message over TLS");
            if m.status() != Some(100) {
                return m;
            }
        }
    }
}

/// A dialer connecting to callguard's TLS listener, trusting `ca`, with an
/// optional client certificate.
fn dialer(port: u16, ca: &str, cert: Option<&Cert>) -> TlsPeer<rustls::ClientConnection> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca));
    let cfg = match cert {
        Some(c) => b
            .with_client_auth_cert(
                chain(&c.pem),
                PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    TlsPeer {
        s: rustls::StreamOwned::new(conn, tcp),
        buf: Vec::new(),
    }
}

/// A carrier listening for TLS with `cert`, asking callguard for a client
/// certificate from `client_ca`; its connections come out of the channel.
fn carrier(
    cert: &Cert,
    client_ca: &str,
) -> (
    u16,
    std::sync::mpsc::Receiver<TlsPeer<rustls::ServerConnection>>,
) {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(client_ca)),
        provider(),
    )
    .build()
    .unwrap();
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                chain(&cert.pem),
                PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut peer = TlsPeer {
                s: rustls::StreamOwned::new(conn, tcp),
                buf: Vec::new(),
            };
            // Complete the handshake here, so a failure shows as no peer.
            peer.s.sock.set_read_timeout(Some(T)).unwrap();
            while peer.s.conn.is_handshaking() {
                if peer.s.conn.complete_io(&mut peer.s.sock).is_err() {
                    break;
                }
            }
            if !peer.s.conn.is_handshaking() && tx.send(peer).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const TLS_TOML: &str = "[tls]\ncertificate = \"cg.pem\"\nprivate_key = \"cg.key\"\nclient_ca = \"ca.pem\"\ncarrier_ca = \"ca.pem\"\n";

fn tls_invite(proxy_port: u16, callee: &str, call_id: &str) -> String {
    let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:{callee}@127.0.0.1:{proxy_port};transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK{call_id};rport\r\nMax-Forwards: 70\r\n\
From: \"Dialer\" <sip:+33162000001@127.0.0.1>;tag=uac-{call_id}\r\nTo: <sip:{callee}@127.0.0.1>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:dialer@127.0.0.1:5099;transport=tls>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_call_from_a_tls_dialer_to_a_tls_carrier_with_a_certificate_tenant() {
    let pki = Pki::new("test CA");
    let cg = pki.issue("callguard.test", &["callguard.test"]);
    let carrier_cert = pki.issue("carrier.test", &["carrier.test"]);
    let dialer_cert = pki.issue("dialer.certco.example", &["dialer.certco.example"]);
    let (cport, carriers) = carrier(&carrier_cert, &pki.ca_pem);
    let top = format!(
        "{TLS_TOML}[[tenant]]\nid = \"certco\"\nsources = [\"192.0.2.0/24\"]\ntls_names = [\"dialer.certco.example\"]\n"
    );
    let p = Proxy::start_tls(&[format!("tls:127.0.0.1:{cport}")], &top, "", |dir| {
        write(dir, "cg.pem", &cg.pem);
        write(dir, "cg.key", &cg.key);
        write(dir, "ca.pem", &pki.ca_pem);
    });
    let mut d = dialer(p.tls, &pki.ca_pem, Some(&dialer_cert));
    d.send(&tls_invite(p.tls, "+33142000000", "tls-1"));
    let trying = d.recv(T).expect("100 Trying over TLS");
    assert_eq!(trying.status(), Some(100));
    let mut c = carriers.recv_timeout(T).unwrap_or_else(|_| {
        panic!(
            "callguard connects to the carrier over TLS, with its certificate:\n{}",
            p.log()
        )
    });
    let fwd = c.recv(T).expect("INVITE at the carrier");
    assert_eq!(fwd.method(), Some(&b"INVITE"[..]));
    assert!(fwd
        .top_via()
        .unwrap()
        .transport
        .eq_ignore_ascii_case(b"TLS"));
    let rr = String::from_utf8_lossy(fwd.header(HeaderName::RecordRoute).unwrap()).into_owned();
    assert!(rr.contains(";transport=tls;lr"), "{rr}");
    assert!(
        fwd.request_uri().unwrap().ends_with(b";transport=tls"),
        "{}",
        String::from_utf8_lossy(fwd.request_uri().unwrap())
    );
    c.send(&reply(
        &fwd,
        180,
        "Ringing",
        "cr1",
        &format!("127.0.0.1:{cport};transport=tls"),
    ));
    assert_eq!(d.recv_skip_100(T).status(), Some(180));
    c.send(&reply(
        &fwd,
        200,
        "OK",
        "cr1",
        &format!("127.0.0.1:{cport};transport=tls"),
    ));
    let ok = d.recv_skip_100(T);
    assert_eq!(ok.status(), Some(200));
    // ACK and BYE follow the Record-Route over TLS.
    d.send(&caller_dialog_request(
        &ok,
        "ACK",
        1,
        "127.0.0.1:5099",
        "TLS",
        "z9hG4bKtack",
    ));
    assert_eq!(c.recv(T).expect("ACK").method(), Some(&b"ACK"[..]));
    d.send(&caller_dialog_request(
        &ok,
        "BYE",
        2,
        "127.0.0.1:5099",
        "TLS",
        "z9hG4bKtbye",
    ));
    let bye = c.recv(T).expect("BYE at the carrier");
    assert_eq!(bye.method(), Some(&b"BYE"[..]));
    c.send(&reply(&bye, 200, "OK", "", ""));
    assert_eq!(
        d.recv(T).expect("200 for BYE").cseq(),
        Some((2, &b"BYE"[..]))
    );
    // The dialer was recognised by its certificate, not its address.
    wait_for(
        &p,
        "callguard_invites_total{tenant=\"certco\",decision=\"allow\",reason=\"\"}",
        1.0,
        T,
    );
}

#[test]
fn a_tls_dialer_to_a_udp_carrier_gets_a_record_route_for_each_side() {
    let pki = Pki::new("test CA");
    let cg = pki.issue("callguard.test", &["callguard.test"]);
    let uas = Ua::bind("127.0.0.1:0");
    let p = Proxy::start_tls(&[format!("udp:{}", uas.addr())], TLS_TOML, "", |dir| {
        write(dir, "cg.pem", &cg.pem);
        write(dir, "cg.key", &cg.key);
        write(dir, "ca.pem", &pki.ca_pem);
    });
    // No client certificate: the tenant comes from the source address.
    let mut d = dialer(p.tls, &pki.ca_pem, None);
    d.send(&tls_invite(p.tls, "+33142000000", "tls-2"));
    let (fwd, _) = uas.recv(T).expect("INVITE at the UDP carrier");
    let rr: Vec<String> = fwd
        .values(HeaderName::RecordRoute)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert!(
        !rr[0].contains("transport="),
        "toward the carrier: {}",
        rr[0]
    );
    assert!(
        rr[1].contains(&format!(":{};transport=tls;lr", p.tls)),
        "toward the dialer: {}",
        rr[1]
    );
    // The callee side's BYE reaches the dialer over its TLS connection.
    uas.send(p.addr(), &reply(&fwd, 200, "OK", "u2", &uas.hostport()));
    let ok = d.recv_skip_100(T);
    assert_eq!(ok.status(), Some(200));
    let bye = format!(
        "BYE sip:dialer@127.0.0.1:5099;transport=tls SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKub\r\nRoute: {}\r\n\
Max-Forwards: 70\r\nFrom: <sip:+33142000000@127.0.0.1>;tag=u2\r\nTo: \"Dialer\" <sip:+33162000001@127.0.0.1>;tag=uac-tls-2\r\n\
Call-ID: tls-2\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n",
        uas.hostport(),
        rr.join(", ")
    );
    uas.send(p.addr(), &bye);
    let got = d.recv(T).expect("the carrier's BYE over TLS");
    assert_eq!(got.method(), Some(&b"BYE"[..]));
}

#[test]
fn an_untrusted_carrier_certificate_is_refused_and_certificates_reload_on_sighup() {
    let pki = Pki::new("test CA");
    let rogue = Pki::new("rogue CA");
    let cg = pki.issue("callguard.test", &["callguard.test"]);
    let impostor = rogue.issue("carrier.test", &["carrier.test"]);
    let (cport, carriers) = carrier(&impostor, &pki.ca_pem);
    let uac = Ua::bind("127.0.0.1:0");
    let p = Proxy::process_tls(&[format!("tls:127.0.0.1:{cport}")], TLS_TOML, "", |dir| {
        write(dir, "cg.pem", &cg.pem);
        write(dir, "cg.key", &cg.key);
        write(dir, "ca.pem", &pki.ca_pem);
    });
    // The carrier's certificate does not chain to `carrier_ca`: no call
    // goes through it, the dialer gets 503.
    let r = call(&p, &uac, "+33142000000", "rogue-1");
    assert_eq!(r.status(), Some(503), "{}", first_line(&r));
    assert!(
        carriers.try_recv().is_err(),
        "no TLS session with the impostor"
    );

    // A new certificate, then SIGHUP: new connections get it.
    let renewed = pki.issue("callguard-renewed.test", &["callguard.test"]);
    write(p.dir.path(), "cg.pem", &renewed.pem);
    write(p.dir.path(), "cg.key", &renewed.key);
    p.signal("HUP");
    wait_for(
        &p,
        "callguard_config_reloads_total{result=\"success\"}",
        1.0,
        T,
    );
    let mut d = dialer(p.tls, &pki.ca_pem, None);
    d.send(&tls_invite(p.tls, "+33142000000", "renewed"));
    assert!(d.recv(T).is_some());
    let seen = d.s.conn.peer_certificates().unwrap()[0].clone();
    assert_eq!(
        seen,
        chain(&renewed.pem)[0],
        "the renewed certificate is served"
    );
}

#[test]
fn a_sips_request_goes_only_to_a_carrier_reached_over_tls() {
    let pki = Pki::new("test CA");
    let cg = pki.issue("callguard.test", &["callguard.test"]);
    let carrier_cert = pki.issue("carrier.test", &["carrier.test"]);
    let (cport, carriers) = carrier(&carrier_cert, &pki.ca_pem);
    let uas = Ua::bind("127.0.0.1:0");
    let files = |dir: &Path| {
        write(dir, "cg.pem", &cg.pem);
        write(dir, "cg.key", &cg.key);
        write(dir, "ca.pem", &pki.ca_pem);
    };
    let sips_invite = |port: u16, call_id: &str| {
        tls_invite(port, "+33142000000", call_id).replacen("INVITE sip:", "INVITE sips:", 1)
    };
    // Two carriers of one priority, one over UDP: a `sip:` call could go
    // to either, a `sips:` one only over TLS (RFC 3261 §26.2.2).
    let p = Proxy::process_tls(
        &[
            format!("udp:{}", uas.addr()),
            format!("tls:127.0.0.1:{cport}"),
        ],
        TLS_TOML,
        "",
        files,
    );
    let mut d = dialer(p.tls, &pki.ca_pem, None);
    let mut c = None;
    for n in 0..4 {
        d.send(&sips_invite(p.tls, &format!("sips-{n}")));
        let c = c.get_or_insert_with(|| {
            carriers
                .recv_timeout(T)
                .unwrap_or_else(|_| panic!("no TLS connection to the carrier:\n{}", p.log()))
        });
        let fwd = c.recv(T).expect("INVITE at the TLS carrier");
        assert_eq!(fwd.call_id(), Some(format!("sips-{n}").as_bytes()));
        assert!(fwd.request_uri().unwrap().starts_with(b"sips:"));
    }
    uas.expect_silence(Duration::from_millis(300));
    drop(p);

    // Only a UDP carrier: the call cannot go on securely, 480 (RFC 5630
    // §5.3), and nothing reaches the carrier.
    let p = Proxy::process_tls(&[format!("udp:{}", uas.addr())], TLS_TOML, "", files);
    let mut d = dialer(p.tls, &pki.ca_pem, None);
    d.send(&sips_invite(p.tls, "sips-udp"));
    let r = d.recv_skip_100(T);
    assert_eq!(r.status(), Some(480), "{}", first_line(&r));
    assert_eq!(
        reason(&r),
        "no_carrier",
        "{}",
        String::from_utf8_lossy(r.buf())
    );
    let warning = String::from_utf8_lossy(r.header_by_name("Warning").unwrap()).into_owned();
    assert!(warning.contains("sips:"), "{warning}");
    uas.expect_silence(Duration::from_millis(300));
}
