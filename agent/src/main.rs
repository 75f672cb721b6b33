//! `hav-agent`: VRRP for the VIPs in front of a proxy node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hav_agent::{daemon, telemetry};
use hav_proto::logging::{self, LogFormat, LogOptions, Logging};

#[derive(Parser)]
#[command(
    name = "hav-agent",
    version,
    about = "VRRP v2/v3 for the virtual IPs in front of proxy servers",
    after_help = "The node config is described in hav-agent.toml(5)."
)]
struct Args {
    /// The node config (TOML).
    #[arg(
        long,
        short,
        default_value = "/etc/hav/agent.toml",
        env = "HAV_AGENT_CONFIG"
    )]
    config: PathBuf,
    /// Validate CONFIG as start-up does and exit: 0 if it would run (with a warning for each thing
    /// this host lacks), 1 with every error (file: key path: reason).
    #[arg(long, value_name = "CONFIG")]
    check: Option<PathBuf>,
    /// Take over the VIPs another VRRP daemon left on this node: an instance whose addresses are
    /// already on its interface starts as master and keeps them, instead of waiting a
    /// master-down interval as backup while nobody owns them. For moving a keepalived master to
    /// hav with no gap: stop keepalived with SIGKILL (so it removes nothing), then start the
    /// agent with --adopt before the peer's master-down interval passes.
    #[arg(long, conflicts_with = "check")]
    adopt: bool,
    /// Write this program's man page (hav-agent.8) into DIR and exit (for packaging).
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    write_man: Option<PathBuf>,
    #[command(flatten)]
    log: LogOptions,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Show a running agent's instances, states, priorities and trackers.
    Status {
        /// The agent's status socket (default: `<state_dir>/hav-agent.sock` of --config).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.write_man {
        return match write_man(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("hav-agent: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(path) = &args.check {
        return match daemon::check(path) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                // Under systemd (ExecStartPre, ExecReload) journald reads a `<3>` line prefix on
                // its stream as the err level, so `journalctl -p err` shows why a start failed.
                let prefix = if logging::stderr_is_journal_stream() {
                    "<3>"
                } else {
                    ""
                };
                for line in errors.lines() {
                    eprintln!("{prefix}{line}");
                }
                ExitCode::FAILURE
            }
        };
    }
    // The daemon's loop runs on this thread and waits in an `epoll` of its own (its VRRP
    // sockets and timer); the runtime's one worker drives everything else beside it.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("hav-agent-rt")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hav-agent: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's connection lives on this runtime, so it is built inside it.
    let pipeline = match &args.command {
        None => {
            let _entered = runtime.enter();
            trace_pipeline(&args.config)
        }
        Some(_) => None,
    };
    let logging = init_logging(&args.log, pipeline.as_ref());
    unblock_handled_signals();
    let result = runtime.block_on(async {
        let result = match args.command {
            Some(Command::Status { socket, json }) => status(&args.config, socket, json).await,
            None => daemon::run(args.config, daemon::StartOptions { adopt: args.adopt }).await,
        };
        // Stop flushes the failover traces still buffered.
        if let Some(pipeline) = pipeline {
            pipeline.shutdown().await;
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match logging.format() {
                LogFormat::Text => {
                    // After every line logged before it.
                    logging.flush();
                    eprintln!("hav-agent: {error:#}")
                }
                _ => tracing::error!("{error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Writes `DIR/hav-agent.8`, rendered from the command line's own definition.
fn write_man(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use clap::CommandFactory as _;
    let mut page = Vec::new();
    clap_mangen::Man::new(Args::command())
        .section("8")
        .render(&mut page)?;
    let path = dir.join("hav-agent.8");
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    std::fs::write(&path, page).with_context(|| path.display().to_string())
}

async fn status(
    config: &std::path::Path,
    socket: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let socket = match socket {
        Some(socket) => socket,
        None => {
            let config = hav_proto::config::load_node_config(config)
                .map_err(|errors| anyhow::anyhow!("{}", errors.lines().join("\n")))?;
            config
                .node
                .status_socket
                .unwrap_or_else(|| config.node.state_dir.join("hav-agent.sock"))
        }
    };
    let snapshot = daemon::status::query(&socket).await.map_err(|error| {
        anyhow::anyhow!(
            "cannot read {}: {error} (is hav-agent running?)",
            socket.display()
        )
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", daemon::status::render(&snapshot));
    }
    Ok(())
}

/// The OpenTelemetry pipeline when the config's `[telemetry] otlp_endpoint` is set. A config
/// that does not load is reported by the daemon itself; here it only means no traces.
fn trace_pipeline(config: &std::path::Path) -> Option<telemetry::otel::Pipeline> {
    let config = hav_proto::config::load_node_config(config).ok()?;
    match telemetry::otel::init(&config.telemetry, &config.node.name) {
        Ok(pipeline) => pipeline,
        Err(error) => {
            eprintln!("hav-agent: no trace export: {error}");
            None
        }
    }
}

/// Logs as `--log-level` and `--log-format` say (`hav_proto::logging`); the failover and command
/// spans also go to the OTLP exporter when one is configured, at `info` whatever the log level.
fn init_logging(options: &LogOptions, pipeline: Option<&telemetry::otel::Pipeline>) -> Logging {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::LevelFilter;
    let otel = pipeline.map(|pipeline| {
        tracing_opentelemetry::layer()
            .with_tracer(pipeline.tracer())
            .with_filter(LevelFilter::INFO)
            .boxed()
    });
    logging::init(options, "hav-agent", otel.into_iter().collect())
}

/// A parent may have left signals blocked (the mask survives exec); the agent must see the ones
/// it acts on, or a SIGTERM would never start the graceful stop.
fn unblock_handled_signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for number in daemon::HANDLED_SIGNALS {
        if let Ok(signal) = Signal::try_from(number) {
            set.add(signal);
        }
    }
    if let Err(error) = set.thread_unblock() {
        tracing::warn!(%error, "cannot unblock signals");
    }
}
