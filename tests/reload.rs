//! Reload (SIGHUP and `POST /v1/reload`) swaps lists and config while the
//! process keeps running; an invalid config is refused and the running one
//! stays.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(3);

#[test]
fn sighup_swaps_the_dnc_list_and_a_broken_config_is_refused() {
    let uas = Ua::bind("127.0.0.1:0");
    let (p, _lists, list) = proxy_with_dnc_file(&uas, "# empty at start\n");
    let uac = Ua::bind("127.0.0.1:0");
    // Not listed: the call reaches the carrier (which answers 486).
    send_invite(&p, &uac, "+33142000050", "r-1");
    let (fwd, _) = uas.recv(T).expect("forwarded before the reload");
    uas.send(p.addr(), &reply(&fwd, 486, "Busy Here", "c", ""));
    assert_eq!(uac.recv_final_or_request(T).status(), Some(486));

    // List the number and reload with SIGHUP.
    std::fs::write(&list, "+33142000050\n").unwrap();
    p.signal("HUP");
    p.wait_metric("callguard_config_reloads_total{result=\"success\"}", 1.0);
    let r = call(&p, &uac, "+33142000050", "r-2");
    assert_eq!(r.status(), Some(603));
    assert_eq!(r.header_by_name("X-Callguard-Reason"), Some(&b"dnc"[..]));

    // A broken config is refused: counted, and the running one stays.
    let cfg = p.dir.path().join("cg.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, good.replace("[[tenant]]", "[[tenant]]\nsources = 12")).unwrap();
    p.signal("HUP");
    p.wait_metric("callguard_config_reloads_total{result=\"failure\"}", 1.0);
    assert_eq!(call(&p, &uac, "+33142000050", "r-3").status(), Some(603));
    assert!(p.log().contains("reload refused"), "{}", p.log());

    // A list file that disappeared is refused the same way.
    std::fs::write(&cfg, &good).unwrap();
    std::fs::remove_file(&list).unwrap();
    p.signal("HUP");
    p.wait_metric("callguard_config_reloads_total{result=\"failure\"}", 2.0);
    assert_eq!(call(&p, &uac, "+33142000050", "r-4").status(), Some(603));

    // POST /v1/reload with the list back, now empty: the number is callable again.
    std::fs::write(&list, "# emptied\n").unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", p.admin)).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"result\":\"success\""), "{resp}");
    send_invite(&p, &uac, "+33142000050", "r-5");
    assert!(
        uas.recv(T).is_some(),
        "forwarded again after the list was emptied"
    );
}
