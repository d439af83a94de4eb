//! Test harness: callguard on loopback — in this process on sockets the
//! test binds (most tests), or as a real `callguard` process (tests of
//! signals, kill -9, logs, exit) — and minimal SIP user agents (UDP and
//! TCP) that speak to it.
#![allow(dead_code)]

use bytes::Bytes;
use callguard::sip::message::HeaderName;
use callguard::sip::Message;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A Tuesday 11:00 in Paris: the legal hours are open.
const POLICY_NOW: &str = "2026-11-17T11:00:00+01:00";

pub struct Proxy {
    runner: Runner,
    pub sip: u16,
    pub admin: u16,
    /// The TLS listener's port, when started with one.
    pub tls: u16,
    pub dir: tempfile::TempDir,
}

enum Runner {
    Process(Child),
    InProcess(InProcess),
}

#[derive(Clone, Copy, PartialEq)]
enum Launch {
    InProcess,
    Process,
}

/// Panics on callguard's own threads (its runtime's workers, its writer
/// threads): tokio would catch them in a task and the proxy would go on
/// half dead, so `alive()` reads this count.
static PROXY_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_proxy_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("callguard") || n == "state-writer");
            if ours {
                PROXY_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// callguard's runtime on a thread of its own; dropping it stops the
/// runtime (every task of this proxy ends with it).
struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The listening sockets of one in-process proxy, bound by the test: SIP
/// on one port for UDP and TCP over IPv4 and IPv6 (as the process tests
/// ask for), TLS and admin on ports of their own.
struct Sockets {
    pre: callguard::app::Prebound,
    sip: u16,
    tls: u16,
    admin: u16,
}

fn bind_sockets(tls: bool) -> Sockets {
    loop {
        let u4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u4.local_addr().unwrap().port();
        // Another process may hold the port on another family: pick again.
        let (Ok(t4), Ok(u6), Ok(t6)) = (
            TcpListener::bind(("127.0.0.1", p)),
            UdpSocket::bind(("::1", p)),
            TcpListener::bind(("::1", p)),
        ) else {
            continue;
        };
        let mut tcp = vec![t4, t6];
        let mut tls_port = 0;
        if tls {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            tls_port = l.local_addr().unwrap().port();
            tcp.push(l);
        }
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin_port = admin.local_addr().unwrap().port();
        return Sockets {
            pre: callguard::app::Prebound {
                udp: vec![u4, u6],
                tcp,
                admin: Some(admin),
            },
            sip: p,
            tls: tls_port,
            admin: admin_port,
        };
    }
}

/// A port free for UDP and TCP on both families, for a process to bind.
/// Between this and the process binding it another test may take it: the
/// process launcher retries.
fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        let ok = TcpListener::bind(("127.0.0.1", p)).is_ok()
            && UdpSocket::bind(("::1", p)).is_ok()
            && TcpListener::bind(("::1", p)).is_ok();
        if ok {
            return p;
        }
    }
}

impl Proxy {
    /// Starts callguard in this process with the given carriers
    /// (`udp:127.0.0.1:P` ...) and the tenant `test` owning 127.0.0.1 and
    /// ::1.
    pub fn start(carriers: &[String]) -> Proxy {
        Self::start_with(carriers, "", "")
    }

    /// `top`: extra top-level tables (lists); `tenant`: extra keys of the
    /// `test` tenant.
    pub fn start_with(carriers: &[String], top: &str, tenant: &str) -> Proxy {
        Self::start_full(carriers, "", top, tenant)
    }

    /// Same, with extra keys of the `[sip]` table.
    pub fn start_full(carriers: &[String], sip: &str, top: &str, tenant: &str) -> Proxy {
        Self::launch(
            Launch::InProcess,
            carriers,
            sip,
            top,
            tenant,
            false,
            &|_| {},
        )
    }

    /// Same, with a TLS listener too; `prepare` writes files (certificates)
    /// into the directory before the proxy starts.
    pub fn start_tls(
        carriers: &[String],
        top: &str,
        tenant: &str,
        prepare: impl Fn(&std::path::Path),
    ) -> Proxy {
        Self::launch(Launch::InProcess, carriers, "", top, tenant, true, &prepare)
    }

    /// As [`Proxy::start_with`], as a `callguard` process: for tests of
    /// signals, kill -9, the log and the exit status.
    pub fn process_with(carriers: &[String], top: &str, tenant: &str) -> Proxy {
        Self::process_full(carriers, "", top, tenant)
    }

    pub fn process(carriers: &[String]) -> Proxy {
        Self::process_with(carriers, "", "")
    }

    /// A process whose test directory `prepare` fills first (its data
    /// directory is `DIR/data`).
    pub fn process_prepared(
        carriers: &[String],
        top: &str,
        tenant: &str,
        prepare: impl Fn(&std::path::Path),
    ) -> Proxy {
        Self::launch(Launch::Process, carriers, "", top, tenant, false, &prepare)
    }

    pub fn process_full(carriers: &[String], sip: &str, top: &str, tenant: &str) -> Proxy {
        Self::launch(Launch::Process, carriers, sip, top, tenant, false, &|_| {})
    }

    pub fn process_tls(
        carriers: &[String],
        top: &str,
        tenant: &str,
        prepare: impl Fn(&std::path::Path),
    ) -> Proxy {
        Self::launch(Launch::Process, carriers, "", top, tenant, true, &prepare)
    }

    fn launch(
        how: Launch,
        carriers: &[String],
        sip: &str,
        top: &str,
        tenant: &str,
        tls: bool,
        prepare: &dyn Fn(&std::path::Path),
    ) -> Proxy {
        if how == Launch::InProcess {
            let dir = tempfile::tempdir().unwrap();
            prepare(dir.path());
            let sockets = bind_sockets(tls);
            write_config(
                &dir,
                carriers,
                sip,
                top,
                tenant,
                (sockets.sip, sockets.tls, sockets.admin),
            );
            let (sip, tls, admin) = (sockets.sip, sockets.tls, sockets.admin);
            let runner = Runner::InProcess(run_in_process(&dir, sockets.pre));
            return Proxy {
                runner,
                sip,
                admin,
                tls,
                dir,
            };
        }
        for _ in 0..5 {
            if let Some(p) = Self::try_process(carriers, sip, top, tenant, tls, prepare) {
                return p;
            }
        }
        panic!("callguard did not start");
    }

    fn try_process(
        carriers: &[String],
        sip_extra: &str,
        top: &str,
        tenant: &str,
        tls: bool,
        prepare: &dyn Fn(&std::path::Path),
    ) -> Option<Proxy> {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let (sip, admin) = (free_port(), free_port());
        let tls_port = if tls { free_port() } else { 0 };
        write_config(
            &dir,
            carriers,
            sip_extra,
            top,
            tenant,
            (sip, tls_port, admin),
        );
        let child = spawn(&dir);
        let mut p = Proxy {
            runner: Runner::Process(child),
            sip,
            admin,
            tls: tls_port,
            dir,
        };
        p.wait_ready().then_some(p)
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.runner {
            Runner::Process(c) => c,
            Runner::InProcess(_) => {
                panic!("this test needs a callguard process: start it with Proxy::process*")
            }
        }
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .http_get("/readyz")
                .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
            {
                return true;
            }
            if self.child().try_wait().unwrap().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `kill -9` the process, then start it again on the same config,
    /// ports and data directory: what survives is what was durable.
    pub fn kill9_and_restart(&mut self) {
        self.kill9_and_restart_after(|| {});
    }

    /// Same, running `meanwhile` while the process is down.
    pub fn kill9_and_restart_after(&mut self, meanwhile: impl FnOnce()) {
        self.child().kill().unwrap();
        self.child().wait().unwrap();
        meanwhile();
        for _ in 0..5 {
            *self.child() = spawn(&self.dir);
            if self.wait_ready() {
                return;
            }
            let _ = self.child().kill();
            let _ = self.child().wait();
        }
        panic!("callguard did not restart:\n{}", self.log());
    }

    /// One admin API request: (status, body).
    /// Restarts the process (`kill -9`) with `admin.token_env` set: the API
    /// then needs `Authorization: Bearer s3cret`.
    pub fn restart_with_admin_token(&mut self) {
        let cfg = self.dir.path().join("cg.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let with = "[admin]\ntoken_env = \"CALLGUARD_TEST_TOKEN\"\n";
        std::fs::write(&cfg, text.replace("[admin]\n", with)).unwrap();
        self.kill9_and_restart();
    }

    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.http_with(method, path, body, "")
    }

    /// Same, with extra header lines (each ending in CRLF).
    pub fn http_with(&self, method: &str, path: &str, body: &str, headers: &str) -> (u16, String) {
        self.http_raw(method, path, body.as_bytes(), headers)
    }

    /// Same, with a body of any bytes.
    pub fn http_raw(&self, method: &str, path: &str, body: &[u8], headers: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_owned())
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.sip).into()
    }

    pub fn addr6(&self) -> SocketAddr {
        format!("[::1]:{}", self.sip).parse().unwrap()
    }

    pub fn http_get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// Value of one metric sample (0 when absent).
    pub fn metric(&self, sample: &str) -> f64 {
        let body = self.http_get("/metrics").unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    pub fn pid(&self) -> u32 {
        match &self.runner {
            Runner::Process(c) => c.id(),
            Runner::InProcess(_) => {
                panic!("this test needs a callguard process: start it with Proxy::process*")
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits until a metric sample reaches `value` (bounded).
    pub fn wait_metric(&self, sample: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric(sample) < value {
            assert!(Instant::now() < deadline, "{sample} never reached {value}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(st) = self.child().try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn alive(&mut self) -> bool {
        match &mut self.runner {
            Runner::Process(c) => c.try_wait().unwrap().is_none(),
            Runner::InProcess(r) => {
                PROXY_PANICS.load(Ordering::SeqCst) == 0
                    && r.thread.as_ref().is_some_and(|t| !t.is_finished())
            }
        }
    }

    /// The process's log; an in-process proxy logs nowhere.
    pub fn log(&self) -> String {
        match &self.runner {
            Runner::Process(_) => {
                std::fs::read_to_string(self.dir.path().join("cg.log")).unwrap_or_default()
            }
            Runner::InProcess(_) => "(in-process proxy: no log)".into(),
        }
    }
}

fn spawn(dir: &tempfile::TempDir) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("cg.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_callguard"))
        .args(["serve", "--config"])
        .arg(dir.path().join("cg.toml"))
        .args(["--at", POLICY_NOW])
        .env("RUST_LOG", "debug")
        // Used when a test's config sets `admin.token_env`.
        .env("CALLGUARD_TEST_TOKEN", "s3cret")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Runner::Process(c) = &mut self.runner {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn write_config(
    dir: &tempfile::TempDir,
    carriers: &[String],
    sip_extra: &str,
    top: &str,
    tenant: &str,
    (sip, tls_port, admin): (u16, u16, u16),
) {
    let tls_listen = if tls_port != 0 {
        format!(", \"tls:127.0.0.1:{tls_port}\"")
    } else {
        String::new()
    };
    let mut cfg = format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:{sip}\", \"tcp:127.0.0.1:{sip}\", \"udp:[::1]:{sip}\", \"tcp:[::1]:{sip}\"{tls_listen}]\n\
         carrier_timeout_ms = 1000\nmax_message_bytes = 65535\n{sip_extra}\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n[state]\ndata_dir = \"{}\"\n{top}\n\
         [[tenant]]\nid = \"test\"\nsources = [\"127.0.0.1/32\", \"::1/128\"]\n{tenant}\n",
        dir.path().join("data").display()
    );
    for (i, c) in carriers.iter().enumerate() {
        cfg.push_str(&format!(
            "[[carrier]]\nname = \"c{}\"\naddress = \"{c}\"\n",
            i + 1
        ));
    }
    std::fs::write(dir.path().join("cg.toml"), cfg).unwrap();
}

/// Starts callguard's application on a runtime of its own (two workers,
/// as CI has two cores) and returns once it serves: `app::start_on`
/// returns after every listener is up, so no readiness polling.
fn run_in_process(dir: &tempfile::TempDir, pre: callguard::app::Prebound) -> InProcess {
    count_proxy_panics();
    let path = dir.path().join("cg.toml");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("callguard-test-main".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("callguard-test-worker")
                .enable_all()
                .build()
                .unwrap();
            let at = chrono::DateTime::parse_from_rfc3339(POLICY_NOW).unwrap();
            let clock = callguard::clock::Clock::starting_at(at.with_timezone(&chrono::Utc));
            let started = rt.block_on(async move {
                let cfg = callguard::config::Config::load(&path).map_err(|e| format!("{e:#}"))?;
                let origin = callguard::app::Origin {
                    path,
                    overrides: Default::default(),
                };
                callguard::app::start_on(cfg, origin, clock, 2, pre)
                    .await
                    .map_err(|e| format!("{e:#}"))
            });
            match started {
                Ok(running) => {
                    let _ = started_tx.send(Ok(()));
                    let _ = rt.block_on(stop_rx);
                    drop(running);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            }
            rt.shutdown_timeout(Duration::from_secs(2));
        })
        .unwrap();
    match started_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("callguard did not start: {e}"),
        Err(_) => panic!("callguard did not start within 20 s"),
    }
    InProcess {
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

/// A SIP endpoint on a UDP socket.
pub struct Ua {
    pub sock: UdpSocket,
}

impl Ua {
    pub fn bind(addr: &str) -> Ua {
        let sock = UdpSocket::bind(addr).unwrap();
        Ua { sock }
    }

    /// The same socket, for a thread of its own (a carrier answering while
    /// the test goes on with the original).
    pub fn try_clone(&self) -> Ua {
        Ua {
            sock: self.sock.try_clone().unwrap(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// `host:port` as written in SIP (IPv6 in brackets).
    pub fn hostport(&self) -> String {
        self.addr().to_string()
    }

    pub fn send(&self, to: SocketAddr, text: &str) {
        self.sock.send_to(text.as_bytes(), to).unwrap();
    }

    pub fn recv(&self, within: Duration) -> Option<(Message, SocketAddr)> {
        let mut buf = vec![0u8; 65536];
        self.sock.set_read_timeout(Some(within)).unwrap();
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => Some((
                Message::parse(Bytes::copy_from_slice(&buf[..n])).expect("proxy sent valid SIP"),
                from,
            )),
            Err(_) => None,
        }
    }

    /// The next message that is not a `100 Trying`.
    pub fn recv_final_or_request(&self, within: Duration) -> Message {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (m, _) = self
                .recv(left.max(Duration::from_millis(1)))
                .expect("expected a SIP message");
            if m.status() != Some(100) {
                return m;
            }
        }
    }

    pub fn expect_silence(&self, d: Duration) {
        if let Some((m, _)) = self.recv(d) {
            panic!("expected nothing, got {}", first_line(&m));
        }
    }
}

pub fn first_line(m: &Message) -> String {
    let b = m.buf();
    let end = memchr_cr(b);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn memchr_cr(b: &[u8]) -> usize {
    b.iter().position(|&c| c == b'\r').unwrap_or(b.len())
}

pub fn invite(
    uac: &str,
    transport: &str,
    proxy: SocketAddr,
    callee: &str,
    call_id: &str,
    branch: &str,
) -> String {
    let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:{callee}@{proxy} SIP/2.0\r\n\
Via: SIP/2.0/{transport} {uac};branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Dialer\" <sip:+33162000001@{uac}>;tag=uac-{call_id}\r\n\
To: <sip:{callee}@{proxy}>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:dialer@{uac};transport={}>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{body}",
        transport.to_ascii_lowercase(),
        body.len()
    )
}

/// A UAS response to `req`: Via, Record-Route, From, To (+tag), Call-ID,
/// CSeq copied; a Contact for 2xx.
pub fn reply(req: &Message, code: u16, phrase: &str, to_tag: &str, contact: &str) -> String {
    let mut s = format!("SIP/2.0 {code} {phrase}\r\n");
    for h in &req.headers {
        let name = String::from_utf8_lossy(req.slice(h.raw_name));
        let value = String::from_utf8_lossy(req.slice(h.value));
        match h.name {
            HeaderName::Via
            | HeaderName::RecordRoute
            | HeaderName::From
            | HeaderName::CallId
            | HeaderName::CSeq => s.push_str(&format!("{name}: {value}\r\n")),
            HeaderName::To if req.to_tag().is_none() && code > 100 => {
                s.push_str(&format!("{name}: {value};tag={to_tag}\r\n"))
            }
            HeaderName::To => s.push_str(&format!("{name}: {value}\r\n")),
            _ => {}
        }
    }
    if (200..300).contains(&code) {
        s.push_str(&format!("Contact: <sip:carrier@{contact}>\r\n"));
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

/// An in-dialog request from the caller: Route set = the 2xx's
/// Record-Route reversed (RFC 3261 §12.1.2), target = the callee's Contact.
pub fn caller_dialog_request(
    ok: &Message,
    method: &str,
    cseq: u32,
    uac: &str,
    transport: &str,
    branch: &str,
) -> String {
    let mut routes: Vec<String> = ok
        .values(HeaderName::RecordRoute)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    routes.reverse();
    let contact = callguard::sip::message::name_addr_uri(ok.header(HeaderName::Contact).unwrap());
    let contact = String::from_utf8_lossy(contact);
    let to = String::from_utf8_lossy(ok.header(HeaderName::To).unwrap());
    let from = String::from_utf8_lossy(ok.header(HeaderName::From).unwrap());
    let call_id = String::from_utf8_lossy(ok.call_id().unwrap());
    format!(
        "{method} {contact} SIP/2.0\r\nVia: SIP/2.0/{transport} {uac};branch={branch}\r\nRoute: {}\r\nMax-Forwards: 70\r\n\
From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        routes.join(", ")
    )
}

/// A SIP endpoint on one TCP connection.
pub struct TcpUa {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpUa {
    pub fn new(stream: TcpStream) -> TcpUa {
        TcpUa {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
    }

    pub fn recv(&mut self, within: Duration) -> Option<Message> {
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
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub fn recv_skip_100(&mut self, within: Duration) -> Message {
        loop {
            let m = self.recv(within).expect("expected a SIP message over TCP");
            if m.status() != Some(100) {
                return m;
            }
        }
    }
}

/// A proxy forwarding to `carrier`, whose `test` tenant uses a DNC list
/// holding `numbers`, in a file the test can rewrite (kept in the returned
/// directory).
pub fn proxy_with_dnc_file(
    carrier: &Ua,
    numbers: &str,
) -> (Proxy, tempfile::TempDir, std::path::PathBuf) {
    proxy_with_dnc_file_and(carrier, numbers, "")
}

/// The same, with `top` added to the config's top level.
pub fn proxy_with_dnc_file_and(
    carrier: &Ua,
    numbers: &str,
    top: &str,
) -> (Proxy, tempfile::TempDir, std::path::PathBuf) {
    let lists = tempfile::tempdir().unwrap();
    let list = lists.path().join("dnc.txt");
    std::fs::write(&list, numbers).unwrap();
    let p = Proxy::process_with(
        &[format!("udp:{}", carrier.addr())],
        &format!(
            "{top}[[dnc_list]]\nname = \"d\"\nfile = \"{}\"\n",
            list.display()
        ),
        "dnc_lists = [\"d\"]\n",
    );
    (p, lists, list)
}

/// Sends an initial INVITE from `uac` to the proxy over UDP (IPv4), with
/// branch `z9hG4bK<call_id>`.
pub fn send_invite(p: &Proxy, uac: &Ua, callee: &str, call_id: &str) {
    uac.send(
        p.addr(),
        &invite(
            &uac.hostport(),
            "UDP",
            p.addr(),
            callee,
            call_id,
            &format!("z9hG4bK{call_id}"),
        ),
    );
}

/// Sends an initial INVITE over UDP and returns its first answer that is
/// not `100 Trying` (matched by Call-ID: stray retransmissions of earlier
/// calls are skipped). A non-2xx final is ACKed, as a dialer would, so it
/// is not retransmitted into later calls.
pub fn call(p: &Proxy, uac: &Ua, callee: &str, call_id: &str) -> Message {
    let branch = format!("z9hG4bK{call_id}");
    send_invite(p, uac, callee, call_id);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = uac.recv_final_or_request(left.max(Duration::from_millis(1)));
        if m.call_id() != Some(call_id.as_bytes()) {
            continue;
        }
        if m.status().is_some_and(|s| s >= 300) {
            ack_final(p, uac, callee, &m, &branch);
        }
        return m;
    }
}

/// The dialer's ACK for a non-2xx final `m` to its INVITE sent with
/// `branch` (same CSeq number, §17.1.1.3).
pub fn ack_final(p: &Proxy, uac: &Ua, callee: &str, m: &Message, branch: &str) {
    let to = String::from_utf8_lossy(m.header(HeaderName::To).unwrap_or_default());
    let call_id = String::from_utf8_lossy(m.call_id().unwrap_or_default());
    let cseq = m.cseq().map_or(1, |c| c.0);
    let hp = uac.hostport();
    uac.send(
        p.addr(),
        &format!(
            "ACK sip:{callee}@{} SIP/2.0\r\nVia: SIP/2.0/UDP {hp};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: \"Dialer\" <sip:+33162000001@{hp}>;tag=uac-{call_id}\r\n\
             To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
            p.addr()
        ),
    );
}

pub fn reason(m: &Message) -> String {
    String::from_utf8_lossy(m.header_by_name("X-Callguard-Reason").unwrap_or_default()).into_owned()
}

/// A carrier that answers every INVITE 486 (the transaction ends at once)
/// and counts them, until `stop` INVITEs or the deadline.
pub fn busy_carrier(uas: Ua, stop: usize) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let Some((m, from)) = uas.recv(Duration::from_millis(300)) else {
                if seen.len() >= stop {
                    break;
                }
                continue;
            };
            if m.method() == Some(&b"INVITE"[..]) {
                seen.insert(m.call_id().unwrap_or_default().to_vec());
                uas.send(from, &reply(&m, 486, "Busy Here", "c", ""));
            }
        }
        seen.len()
    })
}

/// A call through `p` answered, then ended by the dialer's BYE saying the
/// callee refused (`X-Disposition: refused`): the next call to `callee`,
/// through `next`, is refused `603 refusal_cooloff`.
pub fn refusal_on_a_bye_blocks_the_next_call(
    p: &Proxy,
    next: &Proxy,
    uas: Ua,
    callee: &str,
    tag: &str,
) {
    let uac = Ua::bind("127.0.0.1:0");
    let ok = answered_call(p, &uas, &uac, callee, tag);
    hang_up_refused(p, &uas, &uac, &ok, tag);
    wait_refused(next, callee, Duration::from_secs(3));
    let r = call(next, &uac, callee, &format!("{tag}-2"));
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(603), "refusal_cooloff".into())
    );
}

/// A call from `uac` to `callee` through `p`, answered `200` by `uas`;
/// returns the 200 as `uac` saw it.
pub fn answered_call(p: &Proxy, uas: &Ua, uac: &Ua, callee: &str, tag: &str) -> Message {
    send_invite(p, uac, callee, &format!("{tag}-1"));
    let (inv, from) = uas.recv(Duration::from_secs(3)).unwrap();
    uas.send(from, &reply(&inv, 200, "OK", "callee", &uas.hostport()));
    let ok = uac.recv_final_or_request(Duration::from_secs(3));
    assert_eq!(ok.status(), Some(200));
    ok
}

/// The caller hangs up the call `ok` answered with a BYE that signals the
/// callee's refusal (`X-Disposition: refused`); `uas` answers it.
pub fn hang_up_refused(p: &Proxy, uas: &Ua, uac: &Ua, ok: &Message, tag: &str) {
    let bye = caller_dialog_request(
        ok,
        "BYE",
        2,
        &uac.hostport(),
        "UDP",
        &format!("z9hG4bK{tag}-1-bye"),
    )
    .replace(
        "Content-Length: 0",
        "X-Disposition: refused\r\nContent-Length: 0",
    );
    uac.send(p.addr(), &bye);
    // The ACK for the 200 was never sent: skip the carrier's retransmitted
    // 200s and answer the BYE.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        assert!(Instant::now() < deadline, "BYE never reached the carrier");
        if let Some((m, from)) = uas.recv(Duration::from_secs(3)) {
            if m.method() == Some(&b"BYE"[..]) {
                uas.send(from, &reply(&m, 200, "OK", "callee", ""));
                break;
            }
        }
    }
    let bye_ok = uac.recv_final_or_request(Duration::from_secs(3));
    assert_eq!(bye_ok.status(), Some(200));
    assert!(bye_ok.header(HeaderName::CSeq).unwrap().ends_with(b"BYE"));
}

/// Waits (bounded by `within`) until `p` would refuse tenant `test`'s calls
/// to `callee` for its refusal: refusals signalled in SIP are recorded in
/// the background.
pub fn wait_refused(p: &Proxy, callee: &str, within: Duration) {
    let check = format!(r#"{{"tenant":"test","from":"+33162000001","to":"{callee}"}}"#);
    let deadline = Instant::now() + within;
    while !p
        .http("POST", "/v1/check", &check)
        .1
        .contains("refusal_cooloff")
    {
        assert!(Instant::now() < deadline, "the refusal was never recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A carrier that challenges every INVITE without credentials (`407`) and
/// answers the others `486`; counts the INVITEs that carried them.
pub fn challenging_carrier(uas: Ua, stop: usize) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut authorized = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && authorized < stop {
            let Some((m, from)) = uas.recv(Duration::from_millis(300)) else {
                continue;
            };
            if m.method() != Some(&b"INVITE"[..]) {
                continue;
            }
            let answer = if m.header_by_name("Proxy-Authorization").is_some() {
                authorized += 1;
                reply(&m, 486, "Busy Here", "c", "")
            } else {
                reply(&m, 407, "Proxy Authentication Required", "c", "").replacen(
                    "Content-Length",
                    "Proxy-Authenticate: Digest realm=\"carrier\", nonce=\"n1\"\r\nContent-Length",
                    1,
                )
            };
            uas.send(from, &answer);
        }
        authorized
    })
}

/// Four calls to `callee` through `p`, each challenged by the carrier
/// (`uas`) and sent again with credentials (same Call-ID, next CSeq, RFC
/// 3261 §22.2): all four reach the carrier, and a fifth call is refused
/// `frequency_cap` (France: 4 in 30 days). Only the INVITEs the carrier
/// took count.
pub fn challenged_calls_count_once(p: &Proxy, uas: Ua, callee: &str) {
    let carrier = challenging_carrier(uas, 4);
    let uac = Ua::bind("127.0.0.1:0");
    for i in 0..4 {
        let id = format!("auth-{i}");
        let r = call(p, &uac, callee, &id);
        assert_eq!(r.status(), Some(407), "{id}: {r:?}");
        let branch = format!("z9hG4bK{id}-2");
        let again = invite(&uac.hostport(), "UDP", p.addr(), callee, &id, &branch)
            .replacen("CSeq: 1 INVITE", "CSeq: 2 INVITE", 1)
            .replacen(
                "Content-Type",
                "Proxy-Authorization: Digest username=\"dialer\", realm=\"carrier\", nonce=\"n1\", uri=\"sip:x\", response=\"0\"\r\nContent-Type",
                1,
            );
        uac.send(p.addr(), &again);
        let r = loop {
            let m = uac.recv_final_or_request(Duration::from_secs(3));
            if m.call_id() == Some(id.as_bytes()) && m.cseq().is_some_and(|c| c.0 == 2) {
                break m;
            }
        };
        assert_eq!(r.status(), Some(486), "{id} with credentials: {r:?}");
        ack_final(p, &uac, callee, &r, &branch);
    }
    assert_eq!(carrier.join().unwrap(), 4, "calls that reached the callee");
    let r = call(p, &uac, callee, "auth-5");
    assert_eq!(
        (r.status(), reason(&r)),
        (Some(480), "frequency_cap".into())
    );
}

/// The fr cap under a race: 100 INVITEs at once to one fresh callee
/// (see [`race_invites`]) with `uas` as the carrier answering 486. Exactly
/// 4 may reach it; the 96 others get `480 frequency_cap`.
pub fn race_forwards_exactly_four(proxies: &[SocketAddr], uas: Ua, callee: &str, tag: &str) {
    let carrier = busy_carrier(uas, 4);
    let finals = race_invites(proxies, callee, tag);
    assert_eq!(
        carrier.join().unwrap(),
        4,
        "INVITEs that reached the carrier"
    );
    let expected: std::collections::HashMap<(u16, String), usize> = [
        ((486, String::new()), 4),
        ((480, "frequency_cap".to_owned()), 96),
    ]
    .into();
    assert_eq!(finals, expected);
}

/// 100 INVITEs to one callee, sent at once from 4 dialer sockets (socket
/// `u` sends to `proxies[u % len]`): the Call-IDs spread over every shard
/// (and every instance), so the counts race for real. Returns how many
/// final answers came back per (status, X-Callguard-Reason).
pub fn race_invites(
    proxies: &[SocketAddr],
    callee: &str,
    tag: &str,
) -> std::collections::HashMap<(u16, String), usize> {
    let uacs: Vec<Ua> = (0..4).map(|_| Ua::bind("127.0.0.1:0")).collect();
    std::thread::scope(|s| {
        for (u, uac) in uacs.iter().enumerate() {
            let to = proxies[u % proxies.len()];
            s.spawn(move || {
                for i in 0..25 {
                    let id = format!("{tag}-{u}-{i}");
                    uac.send(
                        to,
                        &invite(
                            &uac.hostport(),
                            "UDP",
                            to,
                            callee,
                            &id,
                            &format!("z9hG4bK{id}"),
                        ),
                    );
                }
            });
        }
    });
    let mut finals = std::collections::HashMap::new();
    for uac in &uacs {
        for _ in 0..25 {
            let m = uac.recv_final_or_request(Duration::from_secs(5));
            *finals.entry((m.status().unwrap(), reason(&m))).or_default() += 1;
            if m.status() == Some(480) {
                assert!(m.header_by_name("Retry-After").is_some());
            }
        }
    }
    finals
}

/// A carrier on its own thread: answers OPTIONS 200 and INVITEs 486 while
/// `alive`, ignores everything otherwise; counts the INVITEs it answered.
pub struct TestCarrier {
    pub addr: std::net::SocketAddr,
    pub alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub invites: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TestCarrier {
    pub fn start() -> TestCarrier {
        let ua = Ua::bind("127.0.0.1:0");
        let c = TestCarrier {
            addr: ua.addr(),
            alive: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
            invites: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            stop: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let (alive, invites, stop) = (c.alive.clone(), c.invites.clone(), c.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some((m, from)) = ua.recv(Duration::from_millis(100)) else {
                    continue;
                };
                if !alive.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                match m.method() {
                    Some(b"OPTIONS") => ua.send(from, &reply(&m, 200, "OK", "o", "")),
                    Some(b"INVITE") => {
                        invites.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        ua.send(from, &reply(&m, 486, "Busy Here", "c", ""));
                    }
                    _ => {}
                }
            }
        });
        c
    }
}

impl Drop for TestCarrier {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Mounts made by a test, unmounted (lazily, so a process still holding
/// one cannot keep it) when the test ends, passed or not.
pub struct Mounts(pub Vec<std::path::PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(m)
                .status();
        }
    }
}

pub fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Mounts a tmpfs of `size` (`mount -o size=`) at `at`, unmounted when the
/// returned guard drops. Where this process may not mount (it needs root
/// with CAP_SYS_ADMIN, as `.ci/run` has) it says SKIPPED and returns None.
pub fn mount_tmpfs(at: &std::path::Path, size: &str) -> Option<Mounts> {
    let a = at.to_str().unwrap();
    match run(
        "mount",
        &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", a],
    ) {
        Ok(()) => Some(Mounts(vec![at.to_owned()])),
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {e}");
            None
        }
    }
}

/// Waits (bounded) until a metric sample reads exactly `value`.
pub fn wait_for(p: &Proxy, sample: &str, value: f64, within: Duration) {
    let deadline = Instant::now() + within;
    while p.metric(sample) != value {
        assert!(
            Instant::now() < deadline,
            "{sample} never read {value}: {}",
            p.metric(sample)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
