//! The TOML configuration as data: typed, checked for what parsing can
//! see (values, names, references between tables), with errors that name
//! the key and the line. Compiling it into policies is `app::compile`'s
//! job; its errors name key and line the same way (`Config::invalid`).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::numbering::Country;
use crate::policy::{Campaign, Enforce, Mode};
use crate::proxy::Transport;

mod locate;
pub use locate::{display as locate_display, Locator, Seg};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: line {line}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// `transport:ip:port`, e.g. `udp:0.0.0.0:5060`, `tcp:[::1]:5060` or
/// `tls:0.0.0.0:5061`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SipAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// A listen or carrier address that is not `transport:IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not `udp:IP:PORT`, `tcp:IP:PORT` or `tls:IP:PORT` (IPv6 in brackets)")]
pub struct BadSipAddr(pub String);

impl std::str::FromStr for SipAddr {
    type Err = BadSipAddr;
    fn from_str(s: &str) -> Result<Self, BadSipAddr> {
        let (transport, rest) = match s.split_once(':') {
            Some((t, rest)) if t.eq_ignore_ascii_case("udp") => (Transport::Udp, rest),
            Some((t, rest)) if t.eq_ignore_ascii_case("tcp") => (Transport::Tcp, rest),
            Some((t, rest)) if t.eq_ignore_ascii_case("tls") => (Transport::Tls, rest),
            _ => (Transport::Udp, s),
        };
        let addr = rest.parse().map_err(|_| BadSipAddr(s.to_owned()))?;
        Ok(SipAddr { transport, addr })
    }
}

impl TryFrom<String> for SipAddr {
    type Error = BadSipAddr;
    fn try_from(s: String) -> Result<Self, BadSipAddr> {
        s.parse()
    }
}

/// A tenant's source networks: `IP/prefix`, or a bare IP for that one host
/// (what admins write for a single dialer server).
fn networks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| {
            let s = s.trim();
            if let Ok(net) = s.parse::<ipnet::IpNet>() {
                return Ok(net);
            }
            if let Ok(ip) = s.parse::<std::net::IpAddr>() {
                return Ok(ipnet::IpNet::from(ip));
            }
            Err(serde::de::Error::custom(format!(
                "`{s}` is not a network: write IP/prefix (prefix at most 32 for IPv4, 128 for \
                 IPv6), e.g. \"192.0.2.0/24\", or a single address, e.g. \"192.0.2.10\""
            )))
        })
        .collect()
}

impl std::fmt::Display for SipAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file and its text, for errors found after parsing.
    #[serde(skip)]
    source: Source,
    pub sip: Sip,
    #[serde(default, rename = "carrier")]
    pub carriers: Vec<CarrierConfig>,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub state: State,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    #[serde(default, rename = "dnc_list")]
    pub dnc_lists: Vec<ListConfig>,
    #[serde(default, rename = "consent_list")]
    pub consent_lists: Vec<ListConfig>,
    /// The operator's rule files, over the built-in rule library.
    #[serde(default)]
    pub rules: RulesConfig,
    /// Custom rule sets, by name: a library set with some values replaced.
    #[serde(default, rename = "rule_set")]
    pub rule_sets: std::collections::BTreeMap<String, RuleSetConfig>,
    /// Status and reason phrase per rule code.
    #[serde(default)]
    pub responses: std::collections::BTreeMap<String, ResponseConfig>,
}

/// `[rules]`: the operator's own rule files (`callguard rules check`
/// validates one), read from the config file's directory when relative.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

/// What a tenant's call to a country none of its rule sets covers gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownJurisdiction {
    /// `403`, reason `no_rule_set`.
    #[default]
    Reject,
    /// The tenant's first rule set applies, in the callee's zones.
    Allow,
}

#[derive(Debug, Clone, Default)]
struct Source {
    path: PathBuf,
    text: Arc<str>,
}

/// SIP over TLS. Relative paths are read from the config file's directory.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Our certificate chain (PEM): presented on `tls:` listeners, and to
    /// carriers that ask for a client certificate.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// A CA (PEM) whose certificates dialers may present: a verified one
    /// names its tenant (`tenant.tls_names`). Absent: none is asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// A CA (PEM) carriers' certificates must chain to. Absent: the
    /// system's trust store.
    #[serde(default)]
    pub carrier_ca: Option<PathBuf>,
}

/// Where carrier domains are resolved.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// `IP:PORT` of the DNS servers; empty: the system's resolv.conf.
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
}

/// OPTIONS health checks of the carriers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Time between two pings of each carrier; 0 (the default) turns them
    /// off.
    #[serde(default = "d_ping_interval")]
    pub options_interval_ms: u64,
    /// Unanswered pings in a row that take a carrier out of rotation.
    #[serde(default = "d_down_after")]
    pub down_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            options_interval_ms: d_ping_interval(),
            down_after: d_down_after(),
        }
    }
}

// Off unless asked for: a carrier (or a SIPp UAS standing in for one)
// that does not expect OPTIONS should not get them by surprise.
fn d_ping_interval() -> u64 {
    0
}
fn d_down_after() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    pub name: String,
    /// Relative paths are read from the config file's directory. A text
    /// list or an index from `callguard dnc compile` (told apart by its
    /// first bytes).
    pub file: PathBuf,
    /// Country for numbers written in national format (default FR).
    #[serde(default)]
    pub country: Option<Country>,
    /// Date of the list's data (`YYYY-MM-DD`), when neither the index nor
    /// the file's modification time gives it right (a copied file).
    #[serde(default)]
    pub date: Option<String>,
    /// How old the data may be (the law's scrub age: US and Canada 31,
    /// Australia 30). Older, the calls the list covers are refused
    /// `dnc_list_stale`.
    #[serde(default)]
    pub max_age_days: Option<u32>,
    /// The registry's change lists since the full list (`file`), applied
    /// in order on top of it without rebuilding it.
    #[serde(default)]
    pub changes: Vec<PathBuf>,
    /// The callee countries (ISO codes) the list covers when it is stale;
    /// default: every call of the tenants that use it.
    #[serde(default)]
    pub countries: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeekConfig {
    pub mon: Option<Vec<String>>,
    pub tue: Option<Vec<String>>,
    pub wed: Option<Vec<String>>,
    pub thu: Option<Vec<String>>,
    pub fri: Option<Vec<String>>,
    pub sat: Option<Vec<String>>,
    pub sun: Option<Vec<String>>,
    /// `closed` (default) or `open`: days not listed.
    pub unlisted_days: Option<String>,
    /// A daily blocked window (`21:00-08:00`), instead of day blocks.
    pub quiet_hours: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSetConfig {
    /// Built-in set this one starts from (`fr` or `us`).
    pub base: String,
    /// Legal contact hours replacing the base set's.
    #[serde(default)]
    pub hours: Option<WeekConfig>,
    /// `fr` or `none`.
    #[serde(default)]
    pub holidays: Option<String>,
    /// `fr` or `none`.
    #[serde(default)]
    pub caller_id: Option<String>,
    /// Prospecting calls need consent from this date; `none` to drop it.
    #[serde(default)]
    pub consent_required_since: Option<String>,
    /// Full days after a refusal during which the callee may not be
    /// called; 0 drops the rule.
    #[serde(default)]
    pub refusal_cooloff_days: Option<u32>,
    /// Attempts per tenant and callee in a rolling window; `attempts = 0`
    /// drops the rule.
    #[serde(default)]
    pub frequency_cap: Option<CapConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapConfig {
    pub attempts: u32,
    pub window_hours: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    pub status: u16,
    #[serde(default)]
    pub phrase: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnforcementConfig {
    #[serde(default)]
    pub automated: std::collections::BTreeMap<String, Enforce>,
    #[serde(default)]
    pub manual: std::collections::BTreeMap<String, Enforce>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sip {
    pub listen: Vec<SipAddr>,
    /// Host written in Via and Record-Route; defaults to the listen
    /// address, or the local address that routes to the first carrier when
    /// listening on a wildcard.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Extra names under which dialers and carriers may address us in Route.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Worker threads; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "d_t1")]
    pub t1_ms: u64,
    #[serde(default = "d_t2")]
    pub t2_ms: u64,
    #[serde(default = "d_t4")]
    pub t4_ms: u64,
    #[serde(default = "d_carrier_timeout")]
    pub carrier_timeout_ms: u64,
    #[serde(default = "d_timer_c")]
    pub timer_c_s: u64,
    #[serde(default = "d_max_message")]
    pub max_message_bytes: usize,
    #[serde(default = "d_tcp_idle")]
    pub tcp_idle_timeout_s: u64,
    /// Messages a second that a source of no tenant and no carrier may
    /// send (twice that at once) before the rest are dropped unparsed; 0
    /// drops them all unanswered.
    #[serde(default = "d_stranger_rate")]
    pub stranger_rate_per_s: u32,
    /// TCP/TLS connections one such source may hold open.
    #[serde(default = "d_stranger_conns_per_source")]
    pub stranger_connections_per_source: usize,
    /// TCP/TLS connections all such sources together may hold open.
    #[serde(default = "d_stranger_conns")]
    pub stranger_connections: usize,
    /// Idle time after which a stranger's connection is closed.
    #[serde(default = "d_stranger_idle")]
    pub stranger_idle_timeout_s: u64,
    /// On SIGTERM, how long calls still waiting for a final response may
    /// take before the process stops anyway.
    #[serde(default = "d_drain")]
    pub drain_timeout_s: u64,
}

fn d_t1() -> u64 {
    500
}
fn d_t2() -> u64 {
    4000
}
fn d_t4() -> u64 {
    5000
}
fn d_carrier_timeout() -> u64 {
    5000
}
fn d_timer_c() -> u64 {
    180
}
fn d_max_message() -> usize {
    65535
}
fn d_tcp_idle() -> u64 {
    600
}
fn d_stranger_rate() -> u32 {
    20
}
fn d_stranger_conns_per_source() -> usize {
    32
}
fn d_stranger_conns() -> usize {
    1024
}
fn d_stranger_idle() -> u64 {
    10
}
fn d_drain() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierConfig {
    pub name: String,
    /// A static target, `udp:IP:PORT` / `tcp:IP:PORT`...
    #[serde(default)]
    pub address: Option<SipAddr>,
    /// ...or a SIP domain located per RFC 3263 (NAPTR, SRV, A/AAAA).
    #[serde(default)]
    pub domain: Option<String>,
    /// Lower is tried first; default: the carrier's place in the list, so
    /// a plain list means serial failover in that order.
    #[serde(default)]
    pub priority: Option<u32>,
    /// Share of the calls among carriers of the same priority (RFC 2782
    /// style weighted choice).
    #[serde(default = "d_weight")]
    pub weight: u32,
    /// The name the carrier's TLS certificate must carry (a `tls:` address);
    /// default the address itself. A domain carrier's is its domain.
    #[serde(default)]
    pub tls_name: Option<String>,
}

fn d_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "d_admin")]
    pub listen: SocketAddr,
    /// Name of the environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
}

fn d_admin() -> SocketAddr {
    ([127, 0, 0, 1], 9090).into()
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: d_admin(),
            token_env: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    #[serde(default = "d_data_dir")]
    pub data_dir: PathBuf,
    /// Header on a BYE from a dialer that says the callee refused further
    /// calls (rule 6), e.g. `X-Disposition: refused`; empty to ignore.
    #[serde(default = "d_refusal_header")]
    pub refusal_header: String,
    /// Values of that header that mean a refusal (case-insensitive).
    #[serde(default = "d_refusal_values")]
    pub refusal_values: Vec<String>,
    /// Where refusals and attempt counts live: `embedded` (this process's
    /// data directory) or `redis` (shared by every instance on the trunk).
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub redis: RedisConfig,
    /// When the shared state cannot be read, a call this instance's own
    /// view allows is forwarded and counted here (`true`) or refused `503
    /// policy_unavailable` (`false`, the default).
    #[serde(default)]
    pub fail_open: bool,
    /// `Retry-After` on `503 policy_unavailable`.
    #[serde(default = "d_unavailable_retry")]
    pub unavailable_retry_after_s: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Embedded,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port/db` (or `rediss://` for TLS).
    #[serde(default = "d_redis_url")]
    pub url: String,
    /// Prefix of every key, so several deployments can share a server.
    #[serde(default = "d_redis_prefix")]
    pub key_prefix: String,
    /// Multiplexed connections, used in turn.
    #[serde(default = "d_redis_connections")]
    pub connections: usize,
    /// Bound on one state operation; past it the call is decided as if the
    /// state were unavailable.
    #[serde(default = "d_redis_timeout")]
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: d_redis_url(),
            key_prefix: d_redis_prefix(),
            connections: d_redis_connections(),
            timeout_ms: d_redis_timeout(),
        }
    }
}

fn d_redis_url() -> String {
    "redis://127.0.0.1:6379/0".into()
}
fn d_redis_prefix() -> String {
    "callguard".into()
}
fn d_redis_connections() -> usize {
    2
}
fn d_redis_timeout() -> u64 {
    200
}
fn d_unavailable_retry() -> u64 {
    60
}

fn d_refusal_header() -> String {
    "X-Disposition".into()
}

fn d_refusal_values() -> Vec<String> {
    vec!["refused".into()]
}

fn d_data_dir() -> PathBuf {
    PathBuf::from("data")
}

impl Default for State {
    fn default() -> Self {
        State {
            data_dir: d_data_dir(),
            refusal_header: d_refusal_header(),
            refusal_values: d_refusal_values(),
            backend: Backend::default(),
            redis: RedisConfig::default(),
            fail_open: false,
            unavailable_retry_after_s: d_unavailable_retry(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of the JSON-lines files; default `DATA_DIR/audit`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// A file larger than this is rotated.
    #[serde(default = "d_audit_mb")]
    pub max_file_mb: u64,
    /// Strangers' messages are written as one line per source per this
    /// many seconds.
    #[serde(default = "d_stranger_interval")]
    pub stranger_interval_s: u64,
    /// Audit files of days more than this many days before the day being
    /// written are deleted; none: kept for ever (the default: how long the
    /// proof must be kept is the operator's legal call).
    #[serde(default)]
    pub retention_days: Option<u32>,
}

fn d_stranger_interval() -> u64 {
    60
}

fn d_audit_mb() -> u64 {
    256
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: None,
            max_file_mb: d_audit_mb(),
            stranger_interval_s: d_stranger_interval(),
            retention_days: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: toml::Spanned<String>,
    /// Dialer source networks (CIDR).
    #[serde(default)]
    #[serde(deserialize_with = "networks")]
    pub sources: Vec<ipnet::IpNet>,
    /// Names in a dialer's TLS client certificate (DNS SAN or CN, verified
    /// against `tls.client_ca`) that identify this tenant, whatever the
    /// source address.
    #[serde(default)]
    pub tls_names: Vec<String>,
    #[serde(default = "d_country")]
    pub country: Country,
    /// One rule set (the older form of `rule_sets`).
    #[serde(default)]
    pub rule_set: Option<String>,
    /// The rule sets the tenant calls under (`["us", "ca"]`); the
    /// callee's number picks the jurisdiction. Default `["fr"]`.
    #[serde(default)]
    pub rule_sets: Vec<String>,
    #[serde(default)]
    pub unknown_jurisdiction: UnknownJurisdiction,
    #[serde(default = "d_mode")]
    pub default_mode: Mode,
    /// Header that may state the dialing mode per call.
    #[serde(default = "d_mode_header")]
    pub mode_header: String,
    /// `contract` (calls linked to a contract in progress) or `prospecting`.
    #[serde(default = "d_campaign")]
    pub campaign: Campaign,
    #[serde(default)]
    pub dnc_lists: Vec<String>,
    #[serde(default)]
    pub consent_lists: Vec<String>,
    /// Caller IDs the tenant may present (numbers, or prefixes ending `*`);
    /// empty = any.
    #[serde(default)]
    pub caller_ids: Vec<String>,
    /// Add the Alsace-Moselle holidays (26 Dec, Good Friday).
    #[serde(default)]
    pub alsace_moselle: bool,
    /// The tenant's own contact schedule, intersected with the legal one.
    #[serde(default)]
    pub schedule: Option<WeekConfig>,
    #[serde(default)]
    pub enforcement: EnforcementConfig,
}

fn d_country() -> Country {
    Country::FR
}
impl TenantConfig {
    /// The rule sets, in order: `rule_sets`, else `rule_set`, else `fr`.
    pub fn rule_set_names(&self) -> Vec<String> {
        if !self.rule_sets.is_empty() {
            self.rule_sets.clone()
        } else {
            vec![self.rule_set.clone().unwrap_or_else(|| "fr".into())]
        }
    }
}
fn d_mode() -> Mode {
    Mode::Automated
}
fn d_mode_header() -> String {
    "X-Dial-Mode".into()
}
fn d_campaign() -> Campaign {
    Campaign::Contract
}

impl Sip {
    pub fn t1(&self) -> Duration {
        Duration::from_millis(self.t1_ms)
    }
}

impl Config {
    /// The first carrier whose address is one of callguard's own SIP
    /// listeners, as an error message: every call sent there would come
    /// back through the gate (answered 482 at run time, see
    /// `Core::has_looped`). A listener on `0.0.0.0` or `::` is reached
    /// through the loopback and the unspecified address; other addresses
    /// of this host are not known here.
    pub fn self_routed_carrier(&self) -> Option<String> {
        self.carriers
            .iter()
            .find_map(|c| self.carrier_is_a_listener(c))
    }

    fn carrier_is_a_listener(&self, c: &CarrierConfig) -> Option<String> {
        let a = c.address?;
        let here = |ip: std::net::IpAddr| ip.is_loopback() || ip.is_unspecified();
        let l = self.sip.listen.iter().find(|l| {
            l.transport == a.transport
                && l.addr.port() == a.addr.port()
                && (l.addr.ip() == a.addr.ip()
                    || (l.addr.ip().is_unspecified()
                        && l.addr.is_ipv4() == a.addr.is_ipv4()
                        && here(a.addr.ip())))
        })?;
        Some(format!(
            "carrier `{}` at `{a}` is callguard's own listener `{l}`: every call sent there would come back to it",
            c.name
        ))
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        cfg.source = Source {
            path: path.to_owned(),
            text: text.into(),
        };
        cfg.validate(text, path)?;
        Ok(cfg)
    }

    /// An error at key `at` of this config, with its line.
    pub fn invalid(&self, at: &[Seg<'_>], message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.path.clone(),
            line: Locator::new(&self.source.text).line(at),
            key: locate::display(at),
            message,
        }
    }

    /// The file this config was read from.
    pub fn path(&self) -> &Path {
        &self.source.path
    }

    fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        use locate::Seg::{Index, Key};
        let locator = locate::Locator::new(text);
        let invalid = |at: &[locate::Seg<'_>], message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: locator.line(at),
            key: locate::display(at),
            message,
        };
        if self.sip.listen.is_empty() {
            return Err(invalid(
                &[Key("sip"), Key("listen")],
                "at least one listener is required".into(),
            ));
        }
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms {
            return Err(invalid(
                &[Key("sip"), Key("t2_ms")],
                "timers need 0 < t1_ms <= t2_ms".into(),
            ));
        }
        if self.sip.carrier_timeout_ms == 0 {
            return Err(invalid(
                &[Key("sip"), Key("carrier_timeout_ms")],
                "must be positive".into(),
            ));
        }
        if !(1024..=1 << 20).contains(&self.sip.max_message_bytes) {
            return Err(invalid(
                &[Key("sip"), Key("max_message_bytes")],
                "must be between 1024 and 1048576".into(),
            ));
        }
        for (key, v) in [
            ("stranger_idle_timeout_s", self.sip.stranger_idle_timeout_s),
            ("tcp_idle_timeout_s", self.sip.tcp_idle_timeout_s),
        ] {
            if v == 0 {
                return Err(invalid(
                    &[Key("sip"), Key(key)],
                    "must be at least 1".into(),
                ));
            }
        }
        if self.audit.stranger_interval_s == 0 {
            return Err(invalid(
                &[Key("audit"), Key("stranger_interval_s")],
                "must be at least 1".into(),
            ));
        }
        if self.audit.retention_days == Some(0) {
            return Err(invalid(
                &[Key("audit"), Key("retention_days")],
                "must be at least 1 (leave it out to keep every file)".into(),
            ));
        }
        if self.health.options_interval_ms != 0 && self.health.options_interval_ms < 100 {
            return Err(invalid(
                &[Key("health"), Key("options_interval_ms")],
                "must be 0 (off) or at least 100".into(),
            ));
        }
        if self.health.down_after == 0 {
            return Err(invalid(
                &[Key("health"), Key("down_after")],
                "must be at least 1".into(),
            ));
        }
        let r = &self.state.redis;
        if !(1..=64).contains(&r.connections) {
            return Err(invalid(
                &[Key("state"), Key("redis"), Key("connections")],
                "must be between 1 and 64".into(),
            ));
        }
        if !(1..=10_000).contains(&r.timeout_ms) {
            return Err(invalid(
                &[Key("state"), Key("redis"), Key("timeout_ms")],
                "must be between 1 and 10000".into(),
            ));
        }
        if !(r.url.starts_with("redis://")
            || r.url.starts_with("rediss://")
            || r.url.starts_with("unix://"))
        {
            return Err(invalid(
                &[Key("state"), Key("redis"), Key("url")],
                "must start with redis://, rediss:// or unix://".into(),
            ));
        }
        for (i, l) in self.sip.listen.iter().enumerate() {
            if l.transport == Transport::Tls && self.tls.certificate.is_none() {
                return Err(invalid(
                    &[Key("sip"), Key("listen"), Index(i)],
                    format!("`{l}`: a TLS listener needs `tls.certificate` and `tls.private_key`"),
                ));
            }
        }
        if self.tls.certificate.is_some() != self.tls.private_key.is_some() {
            return Err(invalid(
                &[Key("tls"), Key("private_key")],
                "`tls.certificate` and `tls.private_key` go together".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.carriers.iter().enumerate() {
            let at = |k| [Key("carrier"), Index(i), Key(k)];
            // The name goes into Record-Route (`cgc=`) and metric labels.
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
            {
                return Err(invalid(
                    &at("name"),
                    format!(
                        "carrier `{}`: use letters, digits, `-`, `_` and `.`",
                        c.name
                    ),
                ));
            }
            if c.address.is_some() == c.domain.is_some() {
                return Err(invalid(
                    &at("address"),
                    format!("carrier `{}`: set either `address` or `domain`", c.name),
                ));
            }
            if c.priority.is_some_and(|p| p > 65_535) {
                return Err(invalid(
                    &at("priority"),
                    format!("carrier `{}`: priority must be at most 65535", c.name),
                ));
            }
            if c.weight > 65_535 {
                return Err(invalid(
                    &at("weight"),
                    format!("carrier `{}`: weight must be at most 65535", c.name),
                ));
            }
            if !names.insert(c.name.as_str()) {
                return Err(invalid(
                    &at("name"),
                    format!("carrier `{}` is defined twice", c.name),
                ));
            }
            if let Some(e) = self.carrier_is_a_listener(c) {
                return Err(invalid(&at("address"), e));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let id = t.id.get_ref();
            let at = |k| [Key("tenant"), Index(i), Key(k)];
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    &at("id"),
                    format!("`{id}`: use letters, digits, `-` and `_`"),
                ));
            }
            if !ids.insert(id.clone()) {
                return Err(invalid(
                    &at("id"),
                    format!("tenant `{id}` is defined twice"),
                ));
            }
            if t.sources.is_empty() && t.tls_names.is_empty() {
                return Err(invalid(
                    &at("sources"),
                    format!(
                        "tenant `{id}` has no `sources` and no `tls_names`: no dialer could use it"
                    ),
                ));
            }
            if !t.tls_names.is_empty() && self.tls.client_ca.is_none() {
                return Err(invalid(
                    &at("tls_names"),
                    format!("tenant `{id}`: `tls_names` need `tls.client_ca` to verify dialers' certificates"),
                ));
            }
            if t.rule_set.is_some() && !t.rule_sets.is_empty() {
                return Err(invalid(
                    &at("rule_sets"),
                    format!("tenant `{id}`: give `rule_sets` or `rule_set`, not both"),
                ));
            }
            for (j, l) in t.dnc_lists.iter().enumerate() {
                if !self.dnc_lists.iter().any(|d| &d.name == l) {
                    return Err(invalid(
                        &[Key("tenant"), Index(i), Key("dnc_lists"), Index(j)],
                        format!("tenant `{id}`: no [[dnc_list]] named `{l}`"),
                    ));
                }
            }
            for (j, l) in t.consent_lists.iter().enumerate() {
                if !self.consent_lists.iter().any(|d| &d.name == l) {
                    return Err(invalid(
                        &[Key("tenant"), Index(i), Key("consent_lists"), Index(j)],
                        format!("tenant `{id}`: no [[consent_list]] named `{l}`"),
                    ));
                }
            }
            for (j, c) in t.caller_ids.iter().enumerate() {
                if crate::policy::caller_prefix(c, t.country).is_none() {
                    return Err(invalid(
                        &[Key("tenant"), Index(i), Key("caller_ids"), Index(j)],
                        format!("tenant `{id}`: `{c}` is not a number or a prefix ending in *"),
                    ));
                }
            }
            for (mode, table) in [
                ("automated", &t.enforcement.automated),
                ("manual", &t.enforcement.manual),
            ] {
                for rule in table.keys() {
                    if crate::policy::Rule::from_code(rule).is_none() {
                        return Err(invalid(
                            &[
                                Key("tenant"),
                                Index(i),
                                Key("enforcement"),
                                Key(mode),
                                Key(rule),
                            ],
                            format!(
                                "tenant `{id}`: enforcement.{mode}: unknown rule code `{rule}`"
                            ),
                        ));
                    }
                }
            }
        }
        for (code, r) in &self.responses {
            let at = [Key("responses"), Key(code.as_str())];
            if crate::policy::Rule::from_code(code).is_none() {
                return Err(invalid(
                    &at,
                    format!("responses: unknown rule code `{code}`"),
                ));
            }
            if !(400..700).contains(&r.status) {
                return Err(invalid(
                    &at,
                    format!(
                        "responses.{code}: status {} is not a 4xx-6xx rejection",
                        r.status
                    ),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        let lists = self
            .dnc_lists
            .iter()
            .enumerate()
            .map(|(i, l)| ("dnc_list", i, l))
            .chain(
                self.consent_lists
                    .iter()
                    .enumerate()
                    .map(|(i, l)| ("consent_list", i, l)),
            );
        for (table, i, l) in lists {
            if !names.insert(l.name.as_str()) {
                return Err(invalid(
                    &[Key(table), Index(i), Key("name")],
                    format!("list `{}` is defined twice", l.name),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[sip]
listen = ["udp:127.0.0.1:5060", "tcp:[::1]:5060"]

[[carrier]]
name = "a"
address = "udp:127.0.0.1:5080"

[[tenant]]
id = "demo"
sources = ["127.0.0.0/8"]
"#;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn parses_a_valid_config() {
        let c = parse(OK).unwrap();
        assert_eq!(c.sip.listen[1].transport, Transport::Tcp);
        assert_eq!(c.sip.t1_ms, 500);
        assert_eq!(c.tenants[0].id.get_ref(), "demo");
        assert_eq!(c.admin.listen.port(), 9090);
    }

    #[test]
    fn errors_name_key_and_line() {
        let bad = OK.replace("127.0.0.0/8", "127.0.0.0/33");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("line 11") && e.contains("sources"), "{e}");

        let bad = OK.replace("udp:127.0.0.1:5080", "carrier.example");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("line 7") && e.contains("address"), "{e}");

        let bad = OK.replace("[[tenant]]", "[[tenant]]\ncolour = 1");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");

        let bad = format!("{OK}\n[[tenant]]\nid = \"demo\"\nsources = [\"10.0.0.0/8\"]\n");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("line 14") && e.contains("twice"), "{e}");

        let bad = OK.replace("[\"udp:127.0.0.1:5060\", \"tcp:[::1]:5060\"]", "[]");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("sip.listen"), "{e}");
        let e = parse(&format!("{OK}\n[audit]\nretention_days = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("audit.retention_days") && e.contains("at least 1"),
            "{e}"
        );
        let c = parse(&format!("{OK}\n[audit]\nretention_days = 400\n")).unwrap();
        assert_eq!(c.audit.retention_days, Some(400));
    }

    #[test]
    fn a_carrier_at_one_of_our_own_listeners_is_refused() {
        let at = |listen: &str, carrier: &str| {
            OK.replace("udp:127.0.0.1:5060", listen)
                .replace("udp:127.0.0.1:5080", carrier)
        };
        let e = parse(&at("udp:127.0.0.1:5060", "udp:127.0.0.1:5060"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 7") && e.contains("carrier `a`") && e.contains("own listener"),
            "{e}"
        );
        // Every address of the host reaches a listener on 0.0.0.0.
        for carrier in [
            "udp:127.0.0.1:5060",
            "udp:127.0.0.2:5060",
            "udp:0.0.0.0:5060",
        ] {
            assert!(
                parse(&at("udp:0.0.0.0:5060", carrier)).is_err(),
                "{carrier}"
            );
        }
        // tcp:[::1]:5060 listens too.
        assert!(parse(&at("udp:127.0.0.1:5060", "tcp:[::1]:5060")).is_err());
        // Another port, transport or address is another element.
        for carrier in [
            "udp:127.0.0.1:5061",
            "tcp:127.0.0.1:5060",
            "udp:192.0.2.20:5060",
            "udp:[::1]:5060",
        ] {
            parse(&at("udp:0.0.0.0:5060", carrier)).unwrap();
        }
        let mut c = parse(OK).unwrap();
        assert!(c.self_routed_carrier().is_none());
        c.carriers[0].address = Some("udp:127.0.0.1:5060".parse().unwrap());
        assert!(c.self_routed_carrier().unwrap().contains("own listener"));
    }
}
