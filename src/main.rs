use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use callguard::app::{self as service, Overrides};
use callguard::config::{Config, SipAddr};
use callguard::numbering::Country;

// glibc's malloc spent 6–9 % of the reject path's samples in `_int_malloc`
// and `malloc_consolidate`: records and transactions are allocated on the
// UDP thread and freed on the audit writer and timer threads, which glibc
// handles by moving chunks between arenas. jemalloc returns them to their
// thread cache's arena without that work (figures in benches/RESULTS.md).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "callguard",
    version,
    about = "SIP gatekeeper proxy for outbound dialers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Exit status of a command line that could not be understood (BSD
/// sysexits' EX_USAGE): apart from 2, which `check` means "rejected".
const EXIT_USAGE: u8 = 64;

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, default_value = "config/callguard.toml")]
        config: PathBuf,
        /// SIP listener (`udp:IP:PORT`, `tcp:IP:PORT`, `tls:IP:PORT`, or `IP:PORT` for UDP and TCP); repeatable.
        #[arg(long = "sip-listen")]
        sip_listen: Vec<String>,
        /// Carrier (`udp:IP:PORT`, `tcp:IP:PORT`); repeatable, in priority order.
        #[arg(long = "carrier")]
        carrier: Vec<SipAddr>,
        #[arg(long = "admin-listen")]
        admin_listen: Option<SocketAddr>,
        #[arg(long = "data-dir")]
        data_dir: Option<PathBuf>,
        /// Start the policy clock at this instant (RFC 3339) and let it run
        /// on. For testers exercising the hour rules; never in production.
        #[arg(long)]
        at: Option<chrono::DateTime<chrono::FixedOffset>>,
    },
    /// The decision the proxy would take for one call, with its explanation.
    /// Exit status: 0 forwarded, 2 rejected, 1 error, 64 usage error.
    Check {
        #[arg(long, default_value = "config/callguard.toml")]
        config: PathBuf,
        #[arg(long)]
        tenant: String,
        /// Caller ID (E.164, national, or a sip:/tel: URI).
        #[arg(long)]
        from: String,
        /// Callee.
        #[arg(long)]
        to: String,
        /// Instant to decide at (RFC 3339); default now.
        #[arg(long)]
        at: Option<chrono::DateTime<chrono::FixedOffset>>,
        /// Dialing mode, as the `X-Dial-Mode` header gives it; default the
        /// tenant's.
        #[arg(long, value_parser = ["automated", "predictive", "progressive", "manual", "preview"])]
        mode: Option<String>,
        /// Print the decision as JSON (the `POST /v1/check` object).
        #[arg(long)]
        json: bool,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The rule library: what is enforced, per jurisdiction, with sources.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Do-not-call lists at national scale: compiled indexes.
    Dnc {
        #[command(subcommand)]
        command: DncCommand,
    },
    /// The audit trail: prove it unedited, read it back.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Shell completions on standard output, e.g.
    /// `callguard completions bash > /etc/bash_completion.d/callguard`.
    Completions { shell: clap_complete::Shell },
    /// The manual page (roff) on standard output: `callguard man | man -l -`.
    Man {
        /// Write every page instead (`callguard.1`, `callguard-serve.1`, …)
        /// into this directory.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files: every line unedited, none
    /// inserted or removed, each file continuing the one before it.
    /// Exit status: 0 intact, 2 a defect found, 1 error.
    Verify {
        /// Audit files, or directories (every audit file in them, oldest
        /// first); files are checked in the order the writer made them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Every decision on a number (as caller or callee), with each
    /// forwarded call's outcome and duration.
    Search {
        /// The number, in E.164 (`+33612345678`; spaces and dashes allowed).
        #[arg(long)]
        number: String,
        #[arg(long)]
        tenant: Option<String>,
        /// From this day (YYYY-MM-DD, UTC) or instant (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// To this day (included) or instant.
        #[arg(long)]
        to: Option<String>,
        /// CSV with a header line instead of JSON lines.
        #[arg(long)]
        csv: bool,
        /// The audit directory; default the config's (`audit.dir`, or
        /// `state.data_dir/audit`).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "config/callguard.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum DncCommand {
    /// Build the compact index of one or more lists (text or indexes),
    /// with change lists applied, for `[[dnc_list]] file` to map.
    Compile {
        /// Lists to merge: text (one number per line, CSV, `areacode,number`)
        /// or indexes.
        #[arg(required = true)]
        lists: Vec<PathBuf>,
        /// Change lists (additions and deletions) applied in order.
        #[arg(long = "changes")]
        changes: Vec<PathBuf>,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Country for numbers in national format.
        #[arg(long, default_value = "FR", value_parser = Country::NAMES)]
        country: String,
        /// Date of the data (YYYY-MM-DD); default the newest input's
        /// modification date (or the indexes' dates).
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
    },
    /// What an index holds: numbers, date, size; its checksum is verified.
    Info { index: PathBuf },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Every rule set and jurisdiction.
    List {
        /// Include the operator's rule files of this config.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A jurisdiction's hours, holidays with their dates, caps, cool-offs
    /// and sources (`US-FL`, `CA`, `FR`…).
    Show {
        jurisdiction: String,
        /// The year whose holiday dates are printed; default this year.
        #[arg(long)]
        year: Option<i32>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate an operator's rule file (errors name the key and line).
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file.
    Check {
        #[arg(long, default_value = "config/callguard.toml")]
        config: PathBuf,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line the output refuses (a full disk, a closed pipe) is
    // dropped. By default the subscriber reports that with `eprintln!`,
    // which panics when stderr fails: every thread that logged would die,
    // the call path's included.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    if format == LogFormat::Json {
        b.json().init();
    } else {
        b.init();
    }
}

fn parse_listen(v: &[String]) -> anyhow::Result<Vec<SipAddr>> {
    let mut out = Vec::new();
    for s in v {
        if s.starts_with("udp:") || s.starts_with("tcp:") || s.starts_with("tls:") {
            out.push(s.parse().with_context(|| format!("--sip-listen {s}"))?);
        } else {
            let addr: SocketAddr = s
                .parse()
                .with_context(|| format!("--sip-listen {s}: expected IP:PORT"))?;
            out.push(SipAddr {
                transport: callguard::proxy::Transport::Udp,
                addr,
            });
            out.push(SipAddr {
                transport: callguard::proxy::Transport::Tcp,
                addr,
            });
        }
    }
    Ok(out)
}

fn library(config: Option<&std::path::Path>) -> anyhow::Result<callguard::rules::Library> {
    match config {
        None => Ok(callguard::rules::Library::builtin()?),
        Some(c) => {
            let cfg = Config::load(c)?;
            Ok(service::compile::library(&cfg)?)
        }
    }
}

fn dnc(command: DncCommand) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use callguard::dnc::{self, CompactSet};
    match command {
        DncCommand::Compile {
            lists,
            changes,
            output,
            country,
            date,
        } => {
            let country: Country = country.parse()?;
            let started = std::time::Instant::now();
            let modified = |p: &std::path::Path| -> Option<chrono::NaiveDate> {
                let t = std::fs::metadata(p).ok()?.modified().ok()?;
                Some(chrono::DateTime::<chrono::Utc>::from(t).date_naive())
            };
            let mut sets = Vec::new();
            let mut newest = None;
            for l in &lists {
                let (set, report) = dnc::load_numbers_dated(l, country, modified(l))?;
                eprintln!("{}: {report}", l.display());
                newest = newest.max(set.date());
                sets.push(set);
            }
            let mut all = dnc::Changes::default();
            for c in &changes {
                let (ch, report) = dnc::load_changes(c, country)?;
                eprintln!("{}: {report} changed", c.display());
                newest = newest.max(modified(c));
                all = all.then(ch);
            }
            let date = date.or(newest);
            let merged = dnc::compact::merge(sets.iter().map(|s| s.iter()).collect());
            let changed =
                dnc::NumberSet::from_set(CompactSet::from_sorted(merged, date)).with_changes(&all);
            let index = CompactSet::from_sorted(changed.iter(), date);
            index
                .write(&output)
                .with_context(|| format!("writing {}", output.display()))?;
            println!(
                "{}: {} numbers, {} bytes ({:.3} bytes a number), data of {}, in {:.1} s",
                output.display(),
                index.len(),
                index.bytes(),
                index.bytes() as f64 / index.len().max(1) as f64,
                date.map_or("an unknown date".to_owned(), |d| d.to_string()),
                started.elapsed().as_secs_f64()
            );
        }
        DncCommand::Info { index } => {
            let set = CompactSet::open(&index)?;
            println!(
                "{}: {} numbers, {} bytes ({:.3} bytes a number), data of {}, checksum ok",
                index.display(),
                set.len(),
                set.bytes(),
                set.bytes() as f64 / set.len().max(1) as f64,
                set.date()
                    .map_or("an unknown date".to_owned(), |d| d.to_string()),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A day (`YYYY-MM-DD`: its first or, with `end`, its last millisecond,
/// UTC) or an RFC 3339 instant.
fn day_or_instant(text: &str, end: bool) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_utc());
    }
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .with_context(|| format!("`{text}`: expected a day (YYYY-MM-DD) or an RFC 3339 instant"))?;
    let t = if end {
        day.and_hms_milli_opt(23, 59, 59, 999)
    } else {
        day.and_hms_opt(0, 0, 0)
    };
    Ok(t.context("no such time")?.and_utc())
}

fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    use callguard::audit::chain::{self, Link};
    use callguard::audit::search;
    match command {
        AuditCommand::Verify { paths } => {
            let mut files = Vec::new();
            for p in paths {
                if p.is_dir() {
                    let found =
                        chain::files_in(&p).with_context(|| format!("listing {}", p.display()))?;
                    if found.is_empty() {
                        anyhow::bail!("{}: no audit files (audit-YYYY-MM-DD.jsonl)", p.display());
                    }
                    files.extend(found);
                } else {
                    files.push(p);
                }
            }
            // In the writer's order, whatever order the shell gave.
            files.sort_by_cached_key(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(chain::file_key)
            });
            let reports = chain::verify(&files)?;
            let mut intact = true;
            for r in &reports {
                let link = match &r.link {
                    Link::Genesis => "starts the chain".to_owned(),
                    Link::Continues => "continues the file before".to_owned(),
                    Link::From(f) => format!("continues {f} (not checked: not given)"),
                    Link::Broken(f) => {
                        intact = false;
                        format!("does NOT continue {f}: lines were removed from its end, or this file was forged")
                    }
                };
                match &r.defect {
                    None => println!(
                        "{}: intact, {} lines, {link}; last hash {}",
                        r.path.display(),
                        r.lines,
                        r.last.as_deref().unwrap_or("-")
                    ),
                    Some((line, why)) => {
                        intact = false;
                        println!("{}: line {line}: {why}", r.path.display());
                    }
                }
            }
            Ok(if intact {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        AuditCommand::Search {
            number,
            tenant,
            from,
            to,
            csv,
            dir,
            config,
        } => {
            let number = search::normalize_number(&number).with_context(|| {
                format!("--number `{number}`: expected an E.164 number (+33612345678)")
            })?;
            let from = from
                .map(|t| day_or_instant(&t, false))
                .transpose()
                .context("--from")?;
            let to = to
                .map(|t| day_or_instant(&t, true))
                .transpose()
                .context("--to")?;
            let dir = match dir {
                Some(d) => d,
                None => {
                    let cfg = Config::load(&config)?;
                    cfg.audit
                        .dir
                        .unwrap_or_else(|| cfg.state.data_dir.join("audit"))
                }
            };
            if !dir.is_dir() {
                anyhow::bail!("{}: no such audit directory", dir.display());
            }
            let q = search::Query {
                number,
                tenant,
                from,
                to,
            };
            let results = search::search(&dir, &q)?;
            let mut out = std::io::stdout().lock();
            use std::io::Write;
            if csv {
                writeln!(out, "{}", search::CSV_HEADER)?;
            }
            for f in &results.found {
                if csv {
                    writeln!(out, "{}", search::csv_row(f))?;
                } else {
                    serde_json::to_writer(&mut out, f)?;
                    writeln!(out)?;
                }
            }
            let n = results.found.len();
            let noun = if n == 1 { "decision" } else { "decisions" };
            eprintln!("{n} {noun} found in {}", dir.display());
            if results.unreadable > 0 {
                eprintln!(
                    "warning: {} lines that may concern the number are not valid JSON (run `callguard audit verify`)",
                    results.unreadable
                );
            }
            for g in &results.gaps {
                eprintln!(
                    "warning: the trail has a gap from {} to {}: {} calls' decisions and {} outcome or end lines were not written (the audit queue was full); some may concern this number",
                    g.since, g.until, g.calls, g.outcomes_and_ends
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn rules(command: RulesCommand) -> anyhow::Result<ExitCode> {
    use callguard::rules::report;
    match command {
        RulesCommand::List { config } => {
            print!("{}", report::list(&library(config.as_deref())?));
        }
        RulesCommand::Show {
            jurisdiction,
            year,
            config,
        } => {
            let lib = library(config.as_deref())?;
            let year = year.unwrap_or_else(|| chrono::Datelike::year(&chrono::Utc::now()));
            if !(callguard::rules::calendar::FIRST_YEAR..=callguard::rules::calendar::LAST_YEAR)
                .contains(&year)
            {
                anyhow::bail!(
                    "--year {year}: holidays are computed for {} to {}",
                    callguard::rules::calendar::FIRST_YEAR,
                    callguard::rules::calendar::LAST_YEAR
                );
            }
            match report::show(&lib, &jurisdiction, year) {
                Some(text) => print!("{text}"),
                None => {
                    anyhow::bail!("no jurisdiction `{jurisdiction}` (see `callguard rules list`)")
                }
            }
        }
        RulesCommand::Check { file } => {
            let lib = callguard::rules::Library::check_file(&file)?;
            let sets: Vec<&str> = lib
                .sets
                .values()
                .filter(|s| s.origin.iter().any(|o| *o == file.display().to_string()))
                .map(|s| s.name.as_str())
                .collect();
            println!("{}: ok (rule sets: {})", file.display(), sets.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn base_dir(config: &std::path::Path) -> PathBuf {
    config
        .parent()
        .map(|p| p.to_path_buf())
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

fn check(
    config: PathBuf,
    tenant: String,
    from: String,
    to: String,
    at: Option<chrono::DateTime<chrono::FixedOffset>>,
    mode: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&config)?;
    // Stateless: the state belongs to the running proxy (which holds its
    // lock); `POST /v1/check` answers with refusals and counts included.
    let (tenants, _) = callguard::app::compile::tenants(&cfg, &base_dir(&config), None)?;
    let t = tenants
        .by_id(&tenant)
        .with_context(|| format!("no tenant `{tenant}` in {}", config.display()))?;
    let facts = callguard::policy::Facts::new(&from, &to, mode.as_deref());
    let now = at
        .map(|a| a.with_timezone(&chrono::Utc))
        .unwrap_or_else(chrono::Utc::now);
    let d = t.decide(&facts, &callguard::policy::History::default(), now);
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        let verdict = match d.decision {
            callguard::policy::Outcome::Reject => format!(
                "reject: {} {} [{}]",
                d.status,
                d.phrase,
                d.reason_str().unwrap_or("")
            ),
            callguard::policy::Outcome::Warn => {
                format!("forward with warning [{}]", d.reason_str().unwrap_or(""))
            }
            callguard::policy::Outcome::Allow => "forward".to_owned(),
        };
        println!("decision: {verdict}");
        println!("why: {}", d.explanation);
        if let Some(r) = d.retry_after {
            println!("retry after: {r} s");
        }
        println!("mode: {:?}", d.mode);
        println!(
            "caller: {}",
            d.caller
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into())
        );
        println!(
            "callee: {}",
            d.callee
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into())
        );
        for (z, t) in d.zones.iter().zip(d.callee_local_time()) {
            println!("callee local time: {t} ({})", z.name());
        }
        for f in &d.failed_rules {
            println!(
                "failed: {} ({}): {}",
                f.rule.code(),
                f.enforcement.as_str(),
                f.explanation
            );
        }
        println!("not checked here: refusals and attempt counts (the running proxy's state; ask it with POST /v1/check)");
    }
    Ok(if d.decision == callguard::policy::Outcome::Reject {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn serve(
    config: PathBuf,
    overrides: Overrides,
    at: Option<chrono::DateTime<chrono::FixedOffset>>,
) -> anyhow::Result<()> {
    let mut cfg = Config::load(&config)?;
    overrides.apply(&mut cfg)?;
    let workers = match cfg.sip.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    // Sockets, connections and mapped lists all hold descriptors; the
    // usual soft limit (1,024) is what a few hundred connections exhaust.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "file descriptor limit"),
        Err(e) => tracing::warn!("could not raise the file descriptor limit: {e}"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("callguard")
        .build()?;
    rt.block_on(async move {
        let clock = match at {
            Some(a) => callguard::clock::Clock::starting_at(a.with_timezone(&chrono::Utc)),
            None => callguard::clock::Clock::System,
        };
        let origin = service::Origin {
            path: config,
            overrides,
        };
        let running = service::start(cfg, origin, clock, workers).await?;
        run_until_stopped(&running).await;
        shut_down(&running).await
    })
}

/// Serves until SIGTERM or Ctrl-C; SIGHUP reloads the configuration.
async fn run_until_stopped(running: &service::Running) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {
                let r = running.reloader.clone();
                // The outcome is logged, counted and audited by the reloader.
                let _ = tokio::task::spawn_blocking(move || r.reload_on_signal()).await;
            }
        }
    }
}

/// Graceful shutdown: refuse new calls, let those in progress get their
/// final response (bounded by `sip.drain_timeout_s`; a second signal cuts
/// the wait), then flush the audit trail and the state.
async fn shut_down(running: &service::Running) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    running.drain();
    let waiting = running.unfinished();
    tracing::info!(
        waiting,
        "shutting down: new INVITEs get 503, waiting for calls in progress"
    );
    let started = std::time::Instant::now();
    let left = tokio::select! {
        left = running.drained() => left,
        _ = term.recv() => running.unfinished(),
        _ = tokio::signal::ctrl_c() => running.unfinished(),
    };
    if left > 0 {
        tracing::warn!(
            left,
            "stopping with transactions still waiting for a final response"
        );
    }
    tokio::task::block_in_place(|| running.flush())?;
    tracing::info!(
        waited_ms = started.elapsed().as_millis() as u64,
        "audit trail and state flushed; stopped"
    );
    Ok(())
}

fn config_check(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let c = Config::load(config)?;
    let (_, lists) = callguard::app::compile::tenants(&c, &base_dir(config), None)?;
    println!(
        "{}: OK (listeners: {}, carriers: {}, tenants: {})",
        config.display(),
        c.sip.listen.len(),
        c.carriers.len(),
        c.tenants.len()
    );
    for l in lists {
        println!("  {} list `{}`: {}", l.kind, l.name, l.report);
    }
    Ok(ExitCode::SUCCESS)
}

/// A write past a file size limit (`ulimit -f`) then fails with `EFBIG`,
/// which the audit writer and the list compiler report and handle, instead
/// of `SIGXFSZ` killing the proxy with its calls in flight.
fn ignore_file_size_signal() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: sets the disposition to "ignore", installs no handler, and
    // runs before any other thread of ours exists.
    if let Err(e) = unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) } {
        tracing::warn!(error = %e, "SIGXFSZ could not be ignored");
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                // --help, --version
                ExitCode::SUCCESS
            };
        }
    };
    init_logs(cli.log_format);
    ignore_file_size_signal();
    let result = match cli.command {
        Command::Serve {
            config,
            sip_listen,
            carrier,
            admin_listen,
            data_dir,
            at,
        } => parse_listen(&sip_listen)
            .and_then(|sip_listen| {
                serve(
                    config,
                    Overrides {
                        sip_listen,
                        carriers: carrier,
                        admin_listen,
                        data_dir,
                    },
                    at,
                )
            })
            .map(|()| ExitCode::SUCCESS),
        Command::Check {
            config,
            tenant,
            from,
            to,
            at,
            mode,
            json,
        } => check(config, tenant, from, to, at, mode, json),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => config_check(&config),
        Command::Rules { command } => rules(command),
        Command::Dnc { command } => dnc(command),
        Command::Audit { command } => audit(command),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "callguard", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out_dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match out_dir {
                Some(dir) => clap_mangen::generate_to(cmd, &dir)
                    .with_context(|| format!("writing the manual pages into {}", dir.display())),
                None => clap_mangen::Man::new(cmd)
                    .render(&mut std::io::stdout())
                    .context("writing the manual page"),
            }
            .map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
