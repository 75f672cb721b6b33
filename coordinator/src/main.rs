//! `hav-coordinator`: the fleet control plane daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hav_coordinator::tls::ServerTlsFiles;
use hav_coordinator::{CoordinatorConfig, start};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
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
    let running = start(config)
        .await
        .context("hav-coordinator could not start")?;
    let local = running.local_addr;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!(%local, "shutting down");
    running.shutdown().await?;
    Ok(())
}
