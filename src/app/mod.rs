//! Builds a running proxy from a [`Config`]: binds sockets, derives the
//! addresses we advertise, creates the core shards and starts the tasks.

mod carriers;
pub mod compile;
mod sync;

pub use carriers::Resolved;
use carriers::{expand_carriers, ping_carriers};
use sync::{
    check_server_at_start, dnc_full_load, dnc_sync, list_names, share_pending, watch_server,
};

use anyhow::{bail, Context};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::{Config, SipAddr};
use crate::gate::{Gate, GateParts, RefusalSignal, Tenants, Unavailable};
use crate::metrics::Metrics;
use crate::proxy::{Carrier, CarrierStatus, Core, LocalEndpoint, Peer, Settings, Transport};
use crate::state::{Backend, Store};
use crate::transport::tls::{PeerNames, Tls, TlsFiles};
use crate::transport::{Dispatcher, Io, Known, StrangerLimits};

/// Socket receive buffer asked for (the kernel caps it at rmem_max): bursts
/// of a few thousand datagrams must not be dropped while a worker is busy.
const UDP_BUFFER: usize = 4 << 20;

/// Writes what strangers sent, one audit line per source, every
/// `interval` (`audit.stranger_interval_s`).
async fn account_strangers(r: Arc<Reloader>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        r.account_strangers();
    }
}

/// Each stranger address's budget: `sip.stranger_rate_per_s` sustained,
/// twice that at once.
fn stranger_budget(cfg: &Config) -> crate::admission::Budget {
    let rate = f64::from(cfg.sip.stranger_rate_per_s);
    crate::admission::Budget {
        per_second: rate,
        burst: 2.0 * rate,
        max_sources: 10_000,
    }
}

/// A started proxy. Dropping it does not stop the tasks; the process ends
/// them.
pub struct Running {
    /// Bound SIP addresses (ports resolved when 0 was asked for).
    pub sip: Vec<SipAddr>,
    pub admin: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub dispatcher: Arc<Dispatcher>,
    pub reloader: Arc<Reloader>,
    stopping: Arc<AtomicBool>,
    drain_timeout: Duration,
}

impl Running {
    /// First step of a graceful shutdown: `/readyz` turns 503 and every
    /// shard refuses new calls with `503` + `Retry-After`.
    pub fn drain(&self) {
        self.stopping.store(true, Ordering::Release);
        self.dispatcher.for_each_core(|c| c.drain());
    }

    /// Transactions still waiting for a final response, over all shards.
    pub fn unfinished(&self) -> usize {
        let mut n = 0;
        self.dispatcher
            .for_each_core(|c| n += c.unfinished_transactions());
        n
    }

    /// Waits until no transaction waits for a final response, or until
    /// `sip.drain_timeout_s`; returns how many were left.
    pub async fn drained(&self) -> usize {
        let until = tokio::time::Instant::now() + self.drain_timeout;
        loop {
            let left = self.unfinished();
            if left == 0 || tokio::time::Instant::now() >= until {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Last step: what the audit trail and the state hold in memory goes
    /// to disk. Blocking; bounded by the disk.
    pub fn flush(&self) -> anyhow::Result<()> {
        // The strangers' last interval, cut short, is on record too.
        self.reloader.account_strangers();
        if !self.reloader.audit.flush(Duration::from_secs(10)) {
            bail!("the audit log could not be flushed within 10 s");
        }
        self.reloader
            .state
            .flush()
            .context("flushing the call state")?;
        Ok(())
    }
}

/// Where the running config came from, so a reload reads it again.
#[derive(Debug, Clone)]
pub struct Origin {
    pub path: std::path::PathBuf,
    pub overrides: Overrides,
}

impl Origin {
    /// Relative list paths are read from the config file's directory.
    pub fn base_dir(&self) -> std::path::PathBuf {
        self.path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| ".".into())
    }
}

/// Re-reads the config and lists and swaps them into every core shard at
/// once (SIGHUP, `POST /v1/reload`). Transactions in flight keep the
/// carriers they were given; an invalid config changes nothing.
pub struct Reloader {
    origin: Origin,
    clock: Clock,
    bound: Vec<SipAddr>,
    listen: Vec<SipAddr>,
    route_key: [u8; 16],
    instance: u32,
    dispatcher: Arc<Dispatcher>,
    metrics: Arc<Metrics>,
    audit: crate::audit::Audit,
    state: Store,
    /// The shared state, when `state.backend = "redis"`: made once at
    /// start, so a reload never drops its connections.
    shared: Option<crate::state::Shared>,
    backend: crate::config::Backend,
    data_dir: std::path::PathBuf,
    /// The gate the shards use now (the admin API decides with it too).
    current: arc_swap::ArcSwap<Gate>,
    /// The settings the shards use now (carriers for the health checks).
    current_settings: arc_swap::ArcSwap<Settings>,
    /// Carriers as configured, and the last good DNS answer of each
    /// domain carrier: the two make `Settings::carriers`.
    carrier_cfg: parking_lot::Mutex<Vec<crate::config::CarrierConfig>>,
    resolved: parking_lot::Mutex<Resolved>,
    dns_servers: parking_lot::Mutex<Vec<SocketAddr>>,
    resolver: parking_lot::Mutex<Option<Arc<crate::dns::Resolver>>>,
    /// Domain carriers with a refresh task running.
    resolving: parking_lot::Mutex<std::collections::HashSet<String>>,
    me: std::sync::Weak<Reloader>,
    one_at_a_time: parking_lot::Mutex<()>,
    /// Start of the strangers' interval not yet written to the audit trail.
    strangers_since: parking_lot::Mutex<chrono::DateTime<chrono::Utc>>,
    /// TLS certificates and trust, when any TLS is configured at start.
    tls: Option<Arc<Tls>>,
    peer_names: Arc<PeerNames>,
}

fn config_version(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|t| crate::audit::config_version(&t))
        .unwrap_or_default()
}

impl crate::admin::Operations for Reloader {
    fn gate(&self) -> Arc<Gate> {
        Reloader::gate(self)
    }
    fn settings(&self) -> Arc<Settings> {
        Reloader::settings(self)
    }
    fn reload(&self) -> anyhow::Result<String> {
        Reloader::reload(self)
    }
}

impl Reloader {
    /// Hands what strangers sent since the last account to the audit trail.
    fn account_strangers(&self) {
        let counts = self.dispatcher.take_stranger_account();
        let until = self.clock.now();
        let since = std::mem::replace(&mut *self.strangers_since.lock(), until);
        let account = crate::audit::StrangerAccount {
            since,
            until,
            counts,
            config_version: self.current.load().config_version().clone(),
        };
        if self.audit.record_strangers(account).is_err() {
            tracing::warn!("audit trail behind: an account of strangers' messages was not written");
        }
    }

    pub fn reload(&self) -> anyhow::Result<String> {
        let _guard = self.one_at_a_time.lock();
        let result = self.try_reload();
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics
            .config_reloads
            .get_or_create(&crate::metrics::ResultLabels { result: label })
            .inc();
        match &result {
            Ok(summary) => tracing::info!("configuration reloaded: {summary}"),
            Err(e) => tracing::error!("configuration reload refused, the running one stays: {e:#}"),
        }
        result
    }

    /// A reload asked for by SIGHUP: done, and recorded in the audit
    /// trail as the API's reloads are.
    pub fn reload_on_signal(&self) -> anyhow::Result<String> {
        let result = self.reload();
        let (status, body) = match &result {
            Ok(summary) => (
                200,
                serde_json::json!({ "result": "success", "summary": summary }),
            ),
            Err(e) => (
                422,
                serde_json::json!({ "error": format!("reload refused, the running configuration stays: {e:#}") }),
            ),
        };
        let change = crate::audit::AdminChange {
            at: self.clock.now(),
            via: crate::audit::Via::Signal,
            token: None,
            method: "SIGHUP".into(),
            path: "/v1/reload".into(),
            request: None,
            status,
            result: Some(body),
        };
        if self.audit.record_admin(change).is_err() || !self.audit.flush(Duration::from_secs(5)) {
            tracing::error!("audit trail behind: the reload may not be recorded");
        }
        result
    }

    /// The gate new calls are decided with.
    pub fn gate(&self) -> Arc<Gate> {
        self.current.load_full()
    }

    pub fn state(&self) -> &Store {
        &self.state
    }

    /// The settings new transactions get (carriers, timers).
    pub fn settings(&self) -> Arc<Settings> {
        self.current_settings.load_full()
    }

    fn try_reload(&self) -> anyhow::Result<String> {
        let mut cfg = Config::load(&self.origin.path)?;
        self.origin.overrides.apply(&mut cfg)?;
        let (tenants, lists) = compile::tenants(&cfg, &self.origin.base_dir(), Some(&self.state))?;
        if cfg.state.data_dir != self.data_dir {
            tracing::warn!("state.data_dir changed: the state moves only on restart");
        }
        if cfg.state.backend != self.backend {
            tracing::warn!("state.backend changed: the backend changes only on restart");
        }
        if cfg.sip.listen != self.listen {
            tracing::warn!("sip.listen changed: listeners change only on restart");
        }
        match &self.tls {
            Some(tls) => tls
                .reload(&tls_files(&cfg, &self.origin.base_dir()))
                .context("reloading the TLS certificates")?,
            None if uses_tls(&cfg) => {
                tracing::warn!("TLS was not configured at start: it takes effect only on restart")
            }
            None => {}
        }
        self.settings().status.set_down_after(cfg.health.down_after);
        *self.carrier_cfg.lock() = cfg.carriers.clone();
        *self.dns_servers.lock() = cfg.dns.servers.clone();
        let settings = Arc::new(settings_from(
            &cfg,
            &self.bound,
            self.route_key,
            self.instance,
            self.settings().status.clone(),
            &self.resolved.lock(),
        ));
        let n_tenants = tenants.len();
        let (window, cooloff) = tenants.retention();
        self.state.retain(window, cooloff);
        if let Some(tls) = &self.tls {
            tls.set_names(tls_names(&cfg.carriers, &settings.carriers));
        }
        let gate = Arc::new(make_gate(
            &cfg,
            tenants,
            self.clock,
            Backend::new(self.state.clone(), self.shared.clone()),
            Some(self.audit.clone()),
            &self.metrics,
            self.peer_names.clone(),
            config_version(&self.origin.path).into(),
        ));
        self.metrics.dnc_sizes(&gate.tenants);
        self.metrics.dated_calendars(&gate.tenants);
        self.metrics
            .carriers_known(settings.carriers.iter().map(|c| &*c.name));
        self.current.store(gate.clone());
        self.current_settings.store(settings.clone());
        let gate: Arc<dyn crate::proxy::Gatekeeper> = gate;
        self.dispatcher.reconfigure(settings.clone(), gate);
        self.dispatcher.set_stranger_budget(stranger_budget(&cfg));
        if let Some(me) = self.me.upgrade() {
            me.start_resolving();
        }
        let lists: Vec<String> = lists
            .iter()
            .map(|l| format!("{} `{}`: {}", l.kind, l.name, l.report))
            .collect();
        Ok(format!(
            "tenants: {}, carriers: {}; {}",
            n_tenants,
            settings.carriers.len(),
            lists.join("; ")
        ))
    }
}

/// The TLS files of `cfg`, relative paths read from `base`.
fn tls_files(cfg: &Config, base: &Path) -> TlsFiles {
    let at = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| base.join(p));
    TlsFiles {
        certificate: at(&cfg.tls.certificate),
        private_key: at(&cfg.tls.private_key),
        client_ca: at(&cfg.tls.client_ca),
        carrier_ca: at(&cfg.tls.carrier_ca),
    }
}

/// Whether `cfg` uses TLS anywhere (a domain carrier may publish TLS
/// targets in NAPTR).
fn uses_tls(cfg: &Config) -> bool {
    cfg.tls != Default::default()
        || cfg.sip.listen.iter().any(|l| l.transport == Transport::Tls)
        || cfg
            .carriers
            .iter()
            .any(|c| c.domain.is_some() || c.address.is_some_and(|a| a.transport == Transport::Tls))
}

/// The name each TLS carrier target's certificate must carry: its
/// `tls_name`, a domain carrier's domain, else the address.
fn tls_names(
    cfg: &[crate::config::CarrierConfig],
    carriers: &[Carrier],
) -> std::collections::HashMap<SocketAddr, String> {
    carriers
        .iter()
        .filter(|c| c.peer.transport == Transport::Tls)
        .map(|c| {
            let conf = cfg.iter().find(|x| *x.name == *c.group);
            let name = conf
                .and_then(|x| x.tls_name.clone().or_else(|| x.domain.clone()))
                .unwrap_or_else(|| c.peer.addr.ip().to_string());
            (c.peer.addr, name.trim_end_matches('.').to_owned())
        })
        .collect()
}

/// The gate new calls are decided by.
#[allow(clippy::too_many_arguments)]
fn make_gate(
    cfg: &Config,
    tenants: Tenants,
    clock: Clock,
    state: Backend,
    audit: Option<crate::audit::Audit>,
    metrics: &Metrics,
    peer_names: Arc<PeerNames>,
    config_version: Arc<str>,
) -> Gate {
    GateParts {
        clock,
        state: Some(state),
        unavailable: Unavailable {
            fail_open: cfg.state.fail_open,
            retry_after: cfg.state.unavailable_retry_after_s,
        },
        audit,
        refusal: RefusalSignal::new(&cfg.state.refusal_header, &cfg.state.refusal_values),
        config_version,
        durations: Some(metrics.decision_duration.clone()),
        peer_names: Some(peer_names),
        ..GateParts::new(tenants)
    }
    .build()
}

/// The Redis settings of `[state.redis]`.
fn redis_settings(c: &crate::config::RedisConfig) -> crate::state::RedisSettings {
    crate::state::RedisSettings {
        url: c.url.clone(),
        key_prefix: c.key_prefix.clone(),
        connections: c.connections,
        timeout: Duration::from_millis(c.timeout_ms),
    }
}

/// Command-line overrides of the config (`serve` flags).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub sip_listen: Vec<SipAddr>,
    pub carriers: Vec<SipAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub data_dir: Option<std::path::PathBuf>,
}

impl Overrides {
    /// Applies the flags to `cfg`, and refuses what they make of it that
    /// the config file's own checks would have refused: a carrier at one
    /// of our listeners (`--carrier` and `--sip-listen` bypass them).
    pub fn apply(&self, cfg: &mut Config) -> anyhow::Result<()> {
        if !self.sip_listen.is_empty() {
            cfg.sip.listen = self.sip_listen.clone();
        }
        if !self.carriers.is_empty() {
            cfg.carriers = self
                .carriers
                .iter()
                .enumerate()
                .map(|(i, a)| crate::config::CarrierConfig {
                    name: format!("cli-{}", i + 1),
                    address: Some(*a),
                    domain: None,
                    priority: None,
                    weight: 1,
                    tls_name: None,
                })
                .collect();
        }
        if let Some(a) = self.admin_listen {
            cfg.admin.listen = a;
        }
        if let Some(d) = &self.data_dir {
            cfg.state.data_dir = d.clone();
        }
        match cfg.self_routed_carrier() {
            Some(e) => anyhow::bail!("{e}"),
            None => Ok(()),
        }
    }
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Separate v4 and v6 sockets, so `0.0.0.0` and `[::]` can both bind.
        s.set_only_v6(true)?;
    }
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The key of the Record-Route token. It is kept in the data directory so
/// that calls established before a restart can still be hung up through us.
fn route_key(data_dir: &Path) -> anyhow::Result<[u8; 16]> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let path = data_dir.join("route-secret");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes = (0..text.trim().len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(text.trim().get(i..i + 2)?, 16).ok())
            .collect::<Vec<u8>>();
        if let Ok(key) = <[u8; 16]>::try_from(bytes) {
            return Ok(key);
        }
        tracing::warn!(path = %path.display(), "route secret is unreadable; writing a new one");
    }
    let key: [u8; 16] = rand::random();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, hex).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// The address to advertise for a listener bound to a wildcard: the local
/// address the kernel would use toward the first carrier of that family.
/// `connect` on a UDP socket sends nothing.
fn local_ip_toward(carriers: &[Carrier], v6: bool) -> IpAddr {
    let fallback: IpAddr = if v6 {
        "::1".parse().unwrap()
    } else {
        [127, 0, 0, 1].into()
    };
    let Some(c) = carriers.iter().find(|c| c.peer.addr.is_ipv6() == v6) else {
        return fallback;
    };
    let bind: SocketAddr = if v6 {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    std::net::UdpSocket::bind(bind)
        .and_then(|s| s.connect(c.peer.addr).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(fallback)
}

fn uri_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

pub fn settings_from(
    cfg: &Config,
    bound: &[SipAddr],
    route_key: [u8; 16],
    instance: u32,
    status: Arc<CarrierStatus>,
    resolved: &Resolved,
) -> Settings {
    let carriers = expand_carriers(&cfg.carriers, resolved);
    let local = bound
        .iter()
        .map(|b| {
            let v6 = b.addr.is_ipv6();
            let host = match &cfg.sip.advertise {
                Some(h) => h.clone(),
                None if b.addr.ip().is_unspecified() => uri_host(local_ip_toward(&carriers, v6)),
                None => uri_host(b.addr.ip()),
            };
            LocalEndpoint {
                transport: b.transport,
                ipv6: v6,
                host,
                port: b.addr.port(),
            }
        })
        .collect();
    Settings {
        t1: Duration::from_millis(cfg.sip.t1_ms),
        t2: Duration::from_millis(cfg.sip.t2_ms),
        t4: Duration::from_millis(cfg.sip.t4_ms),
        carrier_timeout: Duration::from_millis(cfg.sip.carrier_timeout_ms),
        timer_c: Duration::from_secs(cfg.sip.timer_c_s),
        local,
        aliases: cfg.sip.aliases.clone(),
        carriers,
        route_key,
        instance,
        status,
    }
}

/// Number of core shards: several per worker keeps lock contention low.
pub fn shard_count(workers: usize) -> usize {
    (workers * 4).clamp(4, 64)
}

/// Binds everything and starts the tasks on the current tokio runtime.
/// Runs what the call path would otherwise initialise on the first calls
/// (numbering tables, each tenant's decision path) before `/readyz`.
/// Decisions are pure: nothing is counted or recorded.
fn warm(tenants: &Tenants, clock: Clock) {
    crate::numbering::warm();
    let now = clock.now();
    let history = crate::policy::History::default();
    for t in tenants.iter() {
        for callee in ["+33142000000", "+12125550123", "+5511912345678"] {
            let facts = crate::policy::Facts::new("+33162000000", callee, None);
            let _ = t.decide(&facts, &history, now);
        }
    }
}

/// Sockets bound before the start, by a supervisor handing them over or by
/// a test that picked free ports: a listener whose configured address is
/// one of theirs uses it instead of binding again. Ports 0 in the config
/// need none of this; these are for a fixed port shared by UDP and TCP.
#[derive(Debug, Default)]
pub struct Prebound {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
    pub admin: Option<std::net::TcpListener>,
}

impl Prebound {
    fn take_udp(&mut self, addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
        match take_bound(&mut self.udp, addr, std::net::UdpSocket::local_addr) {
            Some(s) => {
                let _ = socket2::SockRef::from(&s).set_recv_buffer_size(UDP_BUFFER);
                let _ = socket2::SockRef::from(&s).set_send_buffer_size(UDP_BUFFER);
                s.set_nonblocking(true)?;
                Ok(s)
            }
            None => udp_socket(addr),
        }
    }

    fn take_tcp(&mut self, addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        match take_bound(&mut self.tcp, addr, std::net::TcpListener::local_addr) {
            Some(s) => {
                s.set_nonblocking(true)?;
                Ok(s)
            }
            None => tcp_listener(addr),
        }
    }
}

fn take_bound<S>(
    from: &mut Vec<S>,
    addr: SocketAddr,
    local: fn(&S) -> std::io::Result<SocketAddr>,
) -> Option<S> {
    let i = from.iter().position(|s| local(s).ok() == Some(addr))?;
    Some(from.swap_remove(i))
}

pub async fn start(
    cfg: Config,
    origin: Origin,
    clock: Clock,
    workers: usize,
) -> anyhow::Result<Running> {
    start_on(cfg, origin, clock, workers, Prebound::default()).await
}

/// [`start`], with some sockets already bound.
pub async fn start_on(
    cfg: Config,
    origin: Origin,
    clock: Clock,
    workers: usize,
    mut pre: Prebound,
) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let (state, loaded) =
        Store::open(&cfg.state.data_dir, clock).context("opening the call state")?;
    tracing::info!(dir = %cfg.state.data_dir.display(), "state loaded: {loaded}");
    state.report_to(metrics.state_health());
    let (tenants, lists) = compile::tenants(&cfg, &origin.base_dir(), Some(&state))?;
    let (window, cooloff) = tenants.retention();
    state.retain(window, cooloff);
    let shared = match cfg.state.backend {
        crate::config::Backend::Embedded => None,
        crate::config::Backend::Redis => {
            let s = crate::state::Shared::connect(
                &redis_settings(&cfg.state.redis),
                metrics.state_health(),
            )
            .with_context(|| format!("state.redis.url {}", cfg.state.redis.url))?;
            tracing::info!(
                url = %cfg.state.redis.url,
                fail_open = cfg.state.fail_open,
                "refusals and attempts are shared through Redis"
            );
            Some(s)
        }
    };
    // DNC changes made through other instances while this one was down are
    // applied before the first call, so none of those numbers is called.
    let mut dnc_after = None;
    if let Some(s) = &shared {
        check_server_at_start(s).await;
        let load = dnc_full_load(&state, s, list_names(&tenants));
        match tokio::time::timeout(Duration::from_secs(10), load).await {
            Ok(Ok((latest, _))) => dnc_after = Some(latest),
            Ok(Err(e)) => tracing::warn!(
                "DNC changes of the other instances not loaded ({e:#}): retried in the background"
            ),
            Err(_) => tracing::warn!(
                "DNC changes of the other instances not loaded within 10 s: retried in the background"
            ),
        }
    }
    for l in &lists {
        if l.report.invalid > 0 {
            tracing::warn!(kind = l.kind, list = %l.name, "{}", l.report);
        } else {
            tracing::info!(kind = l.kind, list = %l.name, "{}", l.report);
        }
    }
    if let Clock::Shifted(_) = clock {
        tracing::warn!(now = %clock.now(), "POLICY CLOCK SHIFTED (--at): decisions use this time, not the real one. Testing only.");
    }
    let key = route_key(&cfg.state.data_dir)?;
    let tls = if uses_tls(&cfg) {
        Some(Arc::new(
            Tls::new(&tls_files(&cfg, &origin.base_dir()))
                .context("loading the TLS certificates")?,
        ))
    } else {
        None
    };
    let peer_names = Arc::new(PeerNames::default());

    let mut bound = Vec::new();
    let mut udp_v4 = None;
    let mut udp_v6 = None;
    let mut tcp: Vec<(TcpListener, Transport)> = Vec::new();
    for l in &cfg.sip.listen {
        match l.transport {
            Transport::Udp => {
                let slot = if l.addr.is_ipv6() {
                    &mut udp_v6
                } else {
                    &mut udp_v4
                };
                if slot.is_some() {
                    bail!("only one UDP listener per address family is supported ({l})");
                }
                let s = pre
                    .take_udp(l.addr)
                    .with_context(|| format!("binding SIP listener {l}"))?;
                // Blocking: received on threads of their own
                // (`Dispatcher::udp_thread`).
                s.set_nonblocking(false)?;
                let s = Arc::new(s);
                bound.push(SipAddr {
                    transport: Transport::Udp,
                    addr: s.local_addr()?,
                });
                *slot = Some(s);
            }
            Transport::Tcp | Transport::Tls => {
                if l.transport == Transport::Tls && !tls.as_ref().is_some_and(|t| t.can_serve()) {
                    bail!("{l}: a TLS listener needs `tls.certificate` and `tls.private_key`");
                }
                let s = pre
                    .take_tcp(l.addr)
                    .with_context(|| format!("binding SIP listener {l}"))?;
                let s = TcpListener::from_std(s)?;
                bound.push(SipAddr {
                    transport: l.transport,
                    addr: s.local_addr()?,
                });
                tcp.push((s, l.transport));
            }
        }
    }
    let instance: u32 = rand::random();
    let status = Arc::new(CarrierStatus::new(cfg.health.down_after));
    // Domain carriers are resolved once before the first call (bounded),
    // then kept fresh in the background.
    let mut resolved = Resolved::new();
    if cfg.carriers.iter().any(|c| c.domain.is_some()) {
        let resolver = crate::dns::Resolver::new(&cfg.dns.servers)?;
        for c in &cfg.carriers {
            let Some(domain) = &c.domain else { continue };
            match tokio::time::timeout(Duration::from_secs(5), resolver.resolve(domain)).await {
                Ok(Ok(a)) => {
                    resolved.insert(c.name.clone(), a.targets);
                }
                Ok(Err(e)) => tracing::warn!(carrier = %c.name, "not resolved at start: {e}"),
                Err(_) => tracing::warn!(carrier = %c.name, "not resolved within 5 s at start"),
            }
        }
    }
    let settings = Arc::new(settings_from(
        &cfg,
        &bound,
        key,
        instance,
        status.clone(),
        &resolved,
    ));
    let audit_dir = cfg
        .audit
        .dir
        .clone()
        .unwrap_or_else(|| cfg.state.data_dir.join("audit"));
    let audit = crate::audit::Audit::start(
        &audit_dir,
        cfg.audit.max_file_mb.max(1) << 20,
        cfg.audit.retention_days,
        metrics.audit_meters(),
    )
    .with_context(|| format!("starting the audit log in {}", audit_dir.display()))?;
    tracing::info!(dir = %audit_dir.display(), "audit log");
    let gatekeeper = Arc::new(make_gate(
        &cfg,
        tenants,
        clock,
        Backend::new(state.clone(), shared.clone()),
        Some(audit.clone()),
        &metrics,
        peer_names.clone(),
        config_version(&origin.path).into(),
    ));
    if let Some(tls) = &tls {
        tls.set_names(tls_names(&cfg.carriers, &settings.carriers));
    }
    metrics.dnc_sizes(&gatekeeper.tenants);
    metrics.dated_calendars(&gatekeeper.tenants);
    metrics.carriers_known(settings.carriers.iter().map(|c| &*c.name));
    if gatekeeper.tenants.is_empty() {
        tracing::warn!("no tenant is configured: every INVITE will be rejected 403");
    }
    let cores = (0..shard_count(workers))
        .map(|i| {
            Core::new(
                settings.clone(),
                gatekeeper.clone(),
                metrics.clone(),
                i as u16,
            )
        })
        .collect();
    let dispatcher = Dispatcher::new(
        cores,
        Known::new(gatekeeper.clone(), &settings),
        Io {
            udp_v4: udp_v4.clone(),
            udp_v6: udp_v6.clone(),
            tls: tls.clone(),
            peer_names: peer_names.clone(),
            max_message: cfg.sip.max_message_bytes,
            tcp_idle: Duration::from_secs(cfg.sip.tcp_idle_timeout_s),
            strangers: StrangerLimits {
                budget: stranger_budget(&cfg),
                connections_per_source: cfg.sip.stranger_connections_per_source,
                connections: cfg.sip.stranger_connections,
                idle: Duration::from_secs(cfg.sip.stranger_idle_timeout_s),
            },
            stranger_metrics: metrics.strangers.clone(),
        },
    );
    dispatcher.spawn_timers();
    // The receive threads are not the runtime's, but the gate's hooks
    // they run spawn tasks on it (a refusal signalled on a BYE, an attempt
    // given back, written to Redis): each thread enters the runtime.
    let rt = tokio::runtime::Handle::current();
    for sock in [udp_v4, udp_v6].into_iter().flatten() {
        let mut helpers = Vec::new();
        for i in 1..workers.max(1) {
            let (d, sock, rt) = (Arc::downgrade(&dispatcher), sock.clone(), rt.clone());
            let h = std::thread::Builder::new()
                .name(format!("callguard-udp-{i}"))
                .spawn(move || {
                    let _rt = rt.enter();
                    Dispatcher::udp_helper(d, sock)
                })
                .context("starting a UDP receive thread")?;
            helpers.push(h.thread().clone());
        }
        let (d, sock, rt) = (Arc::downgrade(&dispatcher), sock.clone(), rt.clone());
        std::thread::Builder::new()
            .name("callguard-udp-0".into())
            .spawn(move || {
                let _rt = rt.enter();
                Dispatcher::udp_thread(d, sock, helpers)
            })
            .context("starting a UDP receive thread")?;
    }
    for (l, transport) in tcp {
        tokio::spawn(dispatcher.clone().accept_loop(l, transport));
    }

    let ready = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(AtomicBool::new(false));
    let token = match &cfg.admin.token_env {
        Some(var) => Some(
            std::env::var(var)
                .with_context(|| format!("admin.token_env names {var}, which is not set"))?,
        ),
        None => None,
    };
    let admin_listener = match pre.admin.take() {
        Some(l) if l.local_addr().ok() == Some(cfg.admin.listen) => {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)?
        }
        _ => tokio::net::TcpListener::bind(cfg.admin.listen)
            .await
            .with_context(|| format!("binding admin listener {}", cfg.admin.listen))?,
    };
    let admin = admin_listener.local_addr()?;
    let reloader = Arc::new_cyclic(|me| Reloader {
        origin,
        clock,
        bound: bound.clone(),
        listen: cfg.sip.listen.clone(),
        route_key: key,
        instance,
        dispatcher: dispatcher.clone(),
        metrics: metrics.clone(),
        audit,
        state,
        shared,
        backend: cfg.state.backend,
        current: arc_swap::ArcSwap::new(gatekeeper.clone()),
        current_settings: arc_swap::ArcSwap::new(settings.clone()),
        carrier_cfg: parking_lot::Mutex::new(cfg.carriers.clone()),
        resolved: parking_lot::Mutex::new(resolved),
        dns_servers: parking_lot::Mutex::new(cfg.dns.servers.clone()),
        resolver: parking_lot::Mutex::new(None),
        resolving: Default::default(),
        me: me.clone(),
        data_dir: cfg.state.data_dir.clone(),
        one_at_a_time: parking_lot::Mutex::new(()),
        strangers_since: parking_lot::Mutex::new(clock.now()),
        tls,
        peer_names,
    });
    reloader.start_resolving();
    let state = crate::admin::AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        stopping: stopping.clone(),
        token,
        ops: reloader.clone(),
    };
    tokio::spawn(crate::admin::serve(admin_listener, state));
    for c in &settings.carriers {
        // Known from the start, so the gauge reads 1 before any ping (and
        // stays 1 without pings: the proxy then always tries the carrier).
        crate::proxy::Observer::carrier_up(&*metrics, &c.name, true);
    }
    if cfg.health.options_interval_ms > 0 {
        let interval = Duration::from_millis(cfg.health.options_interval_ms);
        tokio::spawn(ping_carriers(reloader.clone(), interval));
    }
    if let Some(shared) = reloader.shared.clone() {
        tokio::spawn(dnc_sync(reloader.clone(), shared.clone(), dnc_after));
        tokio::spawn(share_pending(reloader.clone(), shared.clone()));
        tokio::spawn(watch_server(shared));
    }
    tokio::spawn(account_strangers(
        reloader.clone(),
        Duration::from_secs(cfg.audit.stranger_interval_s),
    ));

    for b in &bound {
        tracing::info!(listen = %b, "SIP listener ready");
    }
    for c in &settings.carriers {
        tracing::info!(carrier = %c.name, address = %c.peer, "carrier");
    }
    warm(&gatekeeper.tenants, clock);
    tracing::info!(admin = %admin, shards = shard_count(workers), workers, "callguard running");
    ready.store(true, Ordering::Release);
    Ok(Running {
        sip: bound,
        admin,
        metrics,
        dispatcher,
        reloader,
        stopping,
        drain_timeout: Duration::from_secs(cfg.sip.drain_timeout_s),
    })
}
