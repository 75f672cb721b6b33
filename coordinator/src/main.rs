//! `hav-coordinator`: the fleet control plane daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hav_coordinator::orchestrate::DEFAULT_PRESENCE_TTL;
use hav_coordinator::telemetry::trace;
use hav_coordinator::tls::ServerTlsFiles;
use hav_coordinator::{CoordinatorConfig, start};
use hav_proto::config::{OtlpEndpoint, SamplingRatio, duration};
use hav_proto::logging::{self, LogFormat, LogOptions, Logging};

/// The hav fleet control plane (mTLS gRPC). Never on the failover path.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "HAV_LISTEN", default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// This coordinator's certificate (PEM), issued with `havctl certs issue --kind coordinator`.
    #[arg(long, env = "HAV_CERT")]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long, env = "HAV_KEY")]
    key: PathBuf,
    /// The fleet CA certificate (PEM); clients must present certificates it signed.
    #[arg(long, env = "HAV_CA")]
    ca: PathBuf,
    /// Directory for the embedded database.
    #[arg(long, env = "HAV_DATA", default_value = "/var/lib/hav-coordinator")]
    data: PathBuf,
    /// Seconds between checks of the certificate files for a reload.
    #[arg(long, default_value_t = 5)]
    reload_interval: u64,
    /// The authoritative DNS server that receives the groups' records (RFC 2136 updates).
    #[arg(long, env = "HAV_DNS_SERVER", requires_all = ["dns_zone", "dns_key"])]
    dns_server: Option<SocketAddr>,
    /// The zone the groups' DNS names are in.
    #[arg(long, env = "HAV_DNS_ZONE")]
    dns_zone: Option<String>,
    /// The TSIG key file (BIND `key` statement, as tsig-keygen writes it).
    #[arg(long, env = "HAV_DNS_KEY")]
    dns_key: Option<PathBuf>,
    /// TTL of the published records, in seconds.
    #[arg(long, default_value_t = 30)]
    dns_ttl: u32,
    /// Resolve split brains: demote the lower-priority master (default: only report them).
    #[arg(long)]
    resolve_split_brain: bool,
    /// How long the last report of a node whose session ended is believed (e.g. 5s, 1500ms):
    /// then it is `unknown`, and what it reported counts for nothing (SLA, DNS).
    #[arg(long, env = "HAV_PRESENCE_TTL", value_name = "DURATION",
          default_value = duration::format(DEFAULT_PRESENCE_TTL), value_parser = presence_ttl)]
    presence_ttl: Duration,
    /// Serve Prometheus metrics on http://ADDRESS/metrics (not served unless set).
    #[arg(long, env = "HAV_METRICS_LISTEN", value_name = "ADDRESS")]
    metrics_listen: Option<SocketAddr>,
    /// Export the fleet operations' spans to this OTLP/gRPC collector (http:// or https://).
    #[arg(long, env = "HAV_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<OtlpEndpoint>,
    /// The share of new traces exported, 0.0 to 1.0.
    #[arg(long, env = "HAV_SAMPLING_RATIO", default_value = "1.0", value_parser = sampling_ratio)]
    sampling_ratio: SamplingRatio,
    #[command(flatten)]
    log: LogOptions,
}

/// This coordinator in its spans' resource: the host name, else the listen address.
fn instance_name(listen: &SocketAddr) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| listen.to_string())
}

fn presence_ttl(text: &str) -> Result<Duration, String> {
    match duration::parse(text)? {
        ttl if ttl.is_zero() => Err("a presence TTL must be longer than 0".into()),
        ttl => Ok(ttl),
    }
}

fn sampling_ratio(text: &str) -> Result<SamplingRatio, String> {
    text.parse::<f64>()
        .ok()
        .and_then(SamplingRatio::new)
        .ok_or_else(|| format!("{text:?} is not a ratio between 0.0 and 1.0"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Built inside the runtime, which drives the exporter's gRPC connection.
    let pipeline = args
        .otlp_endpoint
        .as_ref()
        .map(|endpoint| {
            trace::init(endpoint, args.sampling_ratio, &instance_name(&args.listen))
                .context("cannot export traces")
        })
        .transpose();
    let (pipeline, result) = match pipeline {
        Ok(pipeline) => (pipeline, Ok(())),
        Err(error) => (None, Err(error)),
    };
    let logging = init_logging(&args.log, pipeline.as_ref());
    let result = match result {
        Ok(()) => run(args, pipeline).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match logging.format() {
                // What returning the error from `main` printed.
                LogFormat::Text => eprintln!("Error: {error:?}"),
                _ => tracing::error!("{error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, pipeline: Option<trace::Pipeline>) -> anyhow::Result<()> {
    let mut config = CoordinatorConfig::new(
        args.listen,
        ServerTlsFiles {
            cert: args.cert,
            key: args.key,
            ca: args.ca,
        },
        args.data,
    );
    config.reload_interval = Duration::from_secs(args.reload_interval.max(1));
    config.orchestration.resolve_split_brain = args.resolve_split_brain;
    config.orchestration.presence_ttl = args.presence_ttl;
    if let (Some(server), Some(zone), Some(key_file)) =
        (args.dns_server, args.dns_zone, args.dns_key)
    {
        config.orchestration.dns = Some(hav_coordinator::orchestrate::DnsSettings {
            server,
            zone,
            key_file,
            ttl: args.dns_ttl,
        });
    }
    config.metrics_listen = args.metrics_listen;
    let running = start(config)
        .await
        .context("hav-coordinator could not start")?;
    let local = running.local_addr;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!(%local, "shutting down");
    running.shutdown().await?;
    if let Some(pipeline) = pipeline {
        pipeline.shutdown().await;
    }
    Ok(())
}

/// Logs as `--log-level` and `--log-format` say (`hav_proto::logging`); the fleet operations'
/// spans also go to the collector when `pipeline` is set, at `info` whatever the log level.
fn init_logging(options: &LogOptions, pipeline: Option<&trace::Pipeline>) -> Logging {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::LevelFilter;
    let otel = pipeline.map(|pipeline| {
        tracing_opentelemetry::layer()
            .with_tracer(pipeline.tracer())
            .with_filter(LevelFilter::INFO)
            .boxed()
    });
    logging::init(options, "hav-coordinator", otel.into_iter().collect())
}
