//! `hav-agent`: VRRP for the VIPs in front of a proxy node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hav_agent::{daemon, telemetry};

#[derive(Parser)]
#[command(
    name = "hav-agent",
    version,
    about = "VRRP v2/v3 for the virtual IPs in front of proxy servers"
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
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check {
        return match daemon::check(path) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
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
    init_logging(args.log_format, pipeline.as_ref());
    unblock_handled_signals();
    let result = runtime.block_on(async {
        let result = match args.command {
            Some(Command::Status { socket, json }) => status(&args.config, socket, json).await,
            None => daemon::run(args.config).await,
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
            eprintln!("hav-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
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

fn init_logging(format: LogFormat, pipeline: Option<&telemetry::otel::Pipeline>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Under systemd, journald stamps each line itself.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = match (format, under_journald) {
        (LogFormat::Json, _) => fmt.json().boxed(),
        (LogFormat::Text, true) => fmt.without_time().boxed(),
        (LogFormat::Text, false) => fmt.boxed(),
    };
    // Absent (`None`) unless an exporter is configured.
    let otel =
        pipeline.map(|pipeline| tracing_opentelemetry::layer().with_tracer(pipeline.tracer()));
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(filter)
        .init();
}

/// A parent may have left signals blocked (the mask survives exec); the agent must see the ones
/// it acts on, or a SIGTERM would never start the graceful stop.
fn unblock_handled_signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        set.add(signal);
    }
    if let Err(error) = set.thread_unblock() {
        tracing::warn!(%error, "cannot unblock signals");
    }
}
