//! `hav-coordinator`: the fleet control plane daemon.
//!
//! Signals: SIGTERM and SIGINT stop it gracefully (streams closed with a reason, agents' reports
//! written, exit 0); SIGHUP re-reads the TLS certificate, key and CA at once. Under systemd
//! (`Type=notify`) it sends `READY=1` once it listens, `WATCHDOG=1` from its main loop when
//! `WatchdogSec=` is set, and `STOPPING=1` when a stop begins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hav_coordinator::leader::DEFAULT_LEADER_TTL;
use hav_coordinator::orchestrate::DEFAULT_PRESENCE_TTL;
use hav_coordinator::store_etcd::{EtcdConfig, EtcdTls};
use hav_coordinator::telemetry::trace;
use hav_coordinator::tls::ServerTlsFiles;
use hav_coordinator::{CoordinatorConfig, RunningCoordinator, StoreConfig, start};
use hav_proto::config::{OtlpEndpoint, SamplingRatio, duration};
use hav_proto::logging::{self, LogFormat, LogOptions, Logging};
use hav_proto::sd_notify::{self, Notifier, NotifyError};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The hav fleet control plane (mTLS gRPC). Never on the failover path.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Fleet files (havctl push-config --fleet) are described in hav-fleet.toml(5)."
)]
struct Args {
    /// Write this program's man page (hav-coordinator.8) into DIR and exit (for packaging).
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    #[allow(
        dead_code,
        reason = "read from the matches before the daemon's arguments"
    )]
    write_man: Option<PathBuf>,
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
    /// Directory for the embedded database (unused with --etcd).
    #[arg(long, env = "HAV_DATA", default_value = "/var/lib/hav-coordinator")]
    data: PathBuf,
    /// Keep the state in this etcd v3 cluster instead of --data: its client URLs, comma-separated
    /// (http://HOST:PORT, or https:// with --etcd-ca).
    #[arg(
        long,
        env = "HAV_ETCD",
        value_name = "URL[,URL...]",
        value_delimiter = ','
    )]
    etcd: Vec<String>,
    /// The CA of the etcd members' certificates (PEM), for https:// endpoints.
    #[arg(long, env = "HAV_ETCD_CA", value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// A client certificate for etcd (PEM), for a cluster that requires one.
    #[arg(long, env = "HAV_ETCD_CERT", value_name = "FILE", requires_all = ["etcd_key", "etcd_ca"])]
    etcd_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long,
        env = "HAV_ETCD_KEY",
        value_name = "FILE",
        requires = "etcd_cert"
    )]
    etcd_key: Option<PathBuf>,
    /// How long a leading coordinator on etcd keeps leading without renewing its lease (e.g. 3s):
    /// when it dies, another takes over the rollouts, SLA, DNS and split-brain resolution within
    /// about this. Whole seconds, at least 1 s.
    #[arg(long, env = "HAV_LEADER_TTL", value_name = "DURATION",
          default_value = duration::format(DEFAULT_LEADER_TTL), value_parser = leader_ttl)]
    leader_ttl: Duration,
    /// How often the leading coordinator on etcd compacts etcd's history, keeping the last
    /// interval of it (so a watcher up to that far behind misses nothing); 0s: never (when the
    /// cluster compacts itself, `--auto-compaction-retention`).
    #[arg(long, env = "HAV_ETCD_COMPACTION_INTERVAL", value_name = "DURATION",
          default_value = duration::format(hav_coordinator::store_etcd::DEFAULT_COMPACTION_INTERVAL),
          value_parser = duration::parse)]
    etcd_compaction_interval: Duration,
    /// Send the fleet's alerts (node gone, VIP without a holder, split brain, rollout failed,
    /// certificate near expiry) to this webhook, in Alertmanager's format; repeat for several.
    #[arg(long = "alert-webhook", env = "HAV_ALERT_WEBHOOK", value_name = "URL",
          value_delimiter = ',', value_parser = webhook)]
    alert_webhooks: Vec<hav_coordinator::alerts::sender::Webhook>,
    /// How long a VIP may have no holder before it is an alert (e.g. 10s).
    #[arg(long, env = "HAV_ALERT_HOLD", value_name = "DURATION", default_value = "10s",
          value_parser = duration::parse)]
    alert_hold: Duration,
    /// Alert when the coordinator's certificate or the fleet CA expires within this many days.
    #[arg(long, env = "HAV_ALERT_CERTIFICATE_DAYS", default_value_t = 30)]
    alert_certificate_days: u32,
    /// This coordinator's name among those sharing an etcd prefix, shown as the leader in status
    /// and logs (default: the host name and the listen port, HOST:PORT).
    #[arg(long, env = "HAV_NAME")]
    name: Option<String>,
    /// Everything this coordinator keeps in etcd is under this key prefix.
    #[arg(long, env = "HAV_ETCD_PREFIX", default_value = hav_coordinator::store_etcd::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// Seconds between checks of the certificate files for a reload (SIGHUP reloads at once).
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
    /// Serve the metrics over TLS with this certificate (PEM; with --metrics-key).
    #[arg(long, env = "HAV_METRICS_CERT", value_name = "PEM", requires_all = ["metrics_key", "metrics_listen"])]
    metrics_cert: Option<PathBuf>,
    /// The metrics certificate's private key (PEM).
    #[arg(
        long,
        env = "HAV_METRICS_KEY",
        value_name = "PEM",
        requires = "metrics_cert"
    )]
    metrics_key: Option<PathBuf>,
    /// Scrapers must present a certificate from this CA (PEM).
    #[arg(
        long,
        env = "HAV_METRICS_CLIENT_CA",
        value_name = "PEM",
        requires = "metrics_cert"
    )]
    metrics_client_ca: Option<PathBuf>,
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

fn webhook(text: &str) -> Result<hav_coordinator::alerts::sender::Webhook, String> {
    hav_coordinator::alerts::sender::Webhook::parse(text)
}

fn leader_ttl(text: &str) -> Result<Duration, String> {
    let ttl = duration::parse(text)?;
    if ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0 {
        return Err("a leader TTL is a whole number of seconds, at least 1s (etcd's leases count in seconds)".into());
    }
    Ok(ttl)
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

/// Writes `DIR/hav-coordinator.8`, rendered from the command line's own definition.
fn write_man(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    let mut page = Vec::new();
    clap_mangen::Man::new(Args::command())
        .section("8")
        .render(&mut page)?;
    let path = dir.join("hav-coordinator.8");
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    std::fs::write(&path, page).with_context(|| path.display().to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    // `--write-man` comes alone: it is answered before the daemon's own arguments are read.
    let matches = <Args as clap::CommandFactory>::command().get_matches();
    if let Some(dir) = matches.get_one::<PathBuf>("write_man") {
        return match write_man(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("hav-coordinator: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match <Args as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
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
                LogFormat::Text => {
                    // After every line logged before it.
                    logging.flush();
                    eprintln!("Error: {error:?}")
                }
                _ => tracing::error!("{error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, pipeline: Option<trace::Pipeline>) -> anyhow::Result<()> {
    let store = store_config(&args)?;
    let alerts =
        (!args.alert_webhooks.is_empty()).then(|| hav_coordinator::alerts::AlertSettings {
            webhooks: args.alert_webhooks.clone(),
            hold: args.alert_hold,
            certificate_days: args.alert_certificate_days,
            certificates: vec![
                ("coordinator".to_owned(), args.cert.clone()),
                ("ca".to_owned(), args.ca.clone()),
            ],
            external_url: format!("https://{}", args.listen),
        });
    let mut config = CoordinatorConfig::new(
        args.listen,
        ServerTlsFiles {
            cert: args.cert,
            key: args.key,
            ca: args.ca,
        },
        args.data,
    );
    config.store = store;
    config.reload_interval = Duration::from_secs(args.reload_interval.max(1));
    config.orchestration.resolve_split_brain = args.resolve_split_brain;
    config.orchestration.presence_ttl = args.presence_ttl;
    config.leader_ttl = args.leader_ttl;
    config.etcd_compaction = args.etcd_compaction_interval;
    config.alerts = alerts;
    config.name = args.name.clone().unwrap_or_else(|| {
        let host = instance_name(&args.listen);
        match host.parse::<SocketAddr>() {
            Ok(_) => host,
            Err(_) => format!("{host}:{}", args.listen.port()),
        }
    });
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
    config.metrics_tls = match (args.metrics_cert, args.metrics_key) {
        (Some(cert), Some(key)) => Some(hav_proto::config::MetricsTls {
            cert,
            key,
            client_ca: args.metrics_client_ca,
        }),
        _ => None,
    };
    // Before start-up: a SIGTERM that arrives while the store opens is a graceful stop too.
    let mut signals = Signals::install()?;
    let notifier = Notifier::from_env().unwrap_or_else(|error| {
        tracing::warn!(%error, "not notifying systemd");
        None
    });
    let mut running = start(config)
        .await
        .context("hav-coordinator could not start")?;
    let local = running.local_addr;
    notify(notifier.as_ref(), |n| {
        n.send(&format!("READY=1\nSTATUS=serving on {local} (mTLS)"))
    });
    let outcome = serve(&mut running, &mut signals, notifier.as_ref()).await;
    notify(notifier.as_ref(), Notifier::stopping);
    match &outcome {
        Ok(signal) => tracing::info!(%local, "{signal}: shutting down"),
        Err(error) => tracing::error!(%local, "shutting down: {error:#}"),
    }
    running.shutdown().await?;
    if let Some(pipeline) = pipeline {
        pipeline.shutdown().await;
    }
    outcome?;
    tracing::info!("hav-coordinator stopped");
    Ok(())
}

/// The main loop: signals, the watchdog, and the server's health. Returns the signal that asked
/// for a stop, or the error the server ended with.
async fn serve(
    running: &mut RunningCoordinator,
    signals: &mut Signals,
    notifier: Option<&Notifier>,
) -> anyhow::Result<&'static str> {
    // Fed from this loop, so a wedged loop is what systemd restarts.
    let mut watchdog = sd_notify::watchdog_interval().map(tokio::time::interval);
    loop {
        let watchdog_tick = async {
            match watchdog.as_mut() {
                Some(interval) => interval.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = signals.terminate.recv() => return Ok("SIGTERM"),
            _ = signals.interrupt.recv() => return Ok("SIGINT"),
            _ = signals.hangup.recv() => match running.reload_tls().await {
                Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded; new connections get them"),
                Err(error) => tracing::warn!("SIGHUP: TLS reload failed, keeping the certificates in force: {error}"),
            },
            _ = watchdog_tick => notify(notifier, Notifier::watchdog),
            ended = running.ended() => {
                ended.context("the gRPC server stopped")?;
                anyhow::bail!("the gRPC server stopped");
            }
        }
    }
}

/// The signals the coordinator handles, installed once.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot handle {name}"))
        };
        Ok(Signals {
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

/// Sends one notification to systemd, if it is listening; a failure is only logged.
fn notify(notifier: Option<&Notifier>, send: impl FnOnce(&Notifier) -> Result<(), NotifyError>) {
    if let Some(notifier) = notifier
        && let Err(error) = send(notifier)
    {
        tracing::warn!(%error, "systemd notification failed");
    }
}

/// redb in `--data`, or etcd with `--etcd`.
fn store_config(args: &Args) -> anyhow::Result<StoreConfig> {
    if args.etcd.is_empty() {
        if args.etcd_ca.is_some() || args.etcd_cert.is_some() {
            anyhow::bail!("--etcd-ca and --etcd-cert need --etcd");
        }
        return Ok(StoreConfig::Redb {
            dir: args.data.clone(),
        });
    }
    let tls = args.etcd_ca.as_ref().map(|ca| EtcdTls {
        ca: ca.clone(),
        identity: args.etcd_cert.clone().zip(args.etcd_key.clone()),
    });
    let config = EtcdConfig::new(args.etcd.clone(), tls)
        .and_then(|config| config.with_prefix(&args.etcd_prefix))
        .context("--etcd")?;
    Ok(StoreConfig::Etcd(config))
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
