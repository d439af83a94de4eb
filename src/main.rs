use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use callguard::config::{Config, SipAddr};
use callguard::service::{self, Overrides};

#[derive(Parser)]
#[command(
    name = "callguard",
    version,
    about = "SIP gatekeeper proxy for outbound dialers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: human or json.
    #[arg(long, global = true, default_value = "human")]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, default_value = "config/callguard.toml")]
        config: PathBuf,
        /// SIP listener (`udp:IP:PORT`, `tcp:IP:PORT`, or `IP:PORT` for both); repeatable.
        #[arg(long = "sip-listen")]
        sip_listen: Vec<String>,
        /// Carrier (`udp:IP:PORT`, `tcp:IP:PORT`); repeatable, in priority order.
        #[arg(long = "carrier")]
        carrier: Vec<SipAddr>,
        #[arg(long = "admin-listen")]
        admin_listen: Option<SocketAddr>,
        #[arg(long = "data-dir")]
        data_dir: Option<PathBuf>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn parse_listen(v: &[String]) -> anyhow::Result<Vec<SipAddr>> {
    let mut out = Vec::new();
    for s in v {
        if s.starts_with("udp:") || s.starts_with("tcp:") {
            out.push(s.parse().map_err(anyhow::Error::msg)?);
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

fn serve(config: PathBuf, overrides: Overrides) -> anyhow::Result<()> {
    let mut cfg = Config::load(&config)?;
    overrides.apply(&mut cfg);
    let workers = match cfg.sip.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("callguard")
        .build()?;
    rt.block_on(async move {
        let _running = service::start(cfg, workers).await?;
        shutdown_signal().await;
        tracing::info!("shutting down");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    let result = match cli.command {
        Command::Serve {
            config,
            sip_listen,
            carrier,
            admin_listen,
            data_dir,
        } => parse_listen(&sip_listen).and_then(|sip_listen| {
            serve(
                config,
                Overrides {
                    sip_listen,
                    carriers: carrier,
                    admin_listen,
                    data_dir,
                },
            )
        }),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => Config::load(&config)
            .map(|c| {
                println!(
                    "{}: OK ({} listeners, {} carriers, {} tenants)",
                    config.display(),
                    c.sip.listen.len(),
                    c.carriers.len(),
                    c.tenants.len()
                );
            })
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
