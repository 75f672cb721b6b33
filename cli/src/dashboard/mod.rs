//! `havctl dashboard`: a live web page for the fleet, served on loopback by havctl itself.
//!
//! The `kubectl proxy` pattern: the page talks only to this process, which talks to the
//! coordinator with the operator's own certificate, so no new credential exists and the
//! coordinator's role check decides what the page may do (a viewer's drain is refused there,
//! and the page shows the refusal). One `WatchEvents` stream and a periodic `ListNodes` feed a
//! bounded model ([`model`]) that is pushed to the pages as server-sent events ([`feed`],
//! [`http`]); a slow page lags and is resynchronised, it never holds the coordinator stream.
//! The page (HTML, CSS, JS, hand-written) is compiled into the binary and loads nothing from
//! anywhere but this server.

pub mod feed;
pub mod http;
pub mod model;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hav_proto::identity::Identity;
use hav_proto::v1::ListNodesRequest;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::client::{self, CliError, Target};
use model::{FleetModel, TraceTemplate};

/// The page, compiled in.
pub mod assets {
    pub const INDEX_HTML: &str = include_str!("assets/index.html");
    pub const APP_JS: &str = include_str!("assets/app.js");
    pub const STYLE_CSS: &str = include_str!("assets/style.css");
}

/// `havctl dashboard`'s flags.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Serve the page here: a loopback address and port (port 0: any free one). The URL
    /// printed carries a token; only a browser that opened it is served.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Link each failover in the timeline to its trace: an http(s) URL in which {node},
    /// {instance}, {vrid}, {unix_ms}, {start_ms}, {end_ms}, {start_us} and {end_us} (a minute
    /// around the transition) are replaced, e.g. Jaeger's search:
    /// 'http://jaeger:16686/search?service=hav-agent&tags={"hav.node":"{node}"}&start={start_us}&end={end_us}'.
    #[arg(long, value_name = "TEMPLATE", value_parser = TraceTemplate::parse)]
    pub trace_url: Option<TraceTemplate>,
    /// Seconds between status refreshes (each event that changes a node also refreshes).
    #[arg(long, value_name = "SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub refresh: u64,
}

/// Serves the dashboard until interrupted.
pub async fn run(args: DashboardArgs, target: &Target) -> Result<(), CliError> {
    if !args.listen.ip().is_loopback() {
        return Err(CliError::Usage(format!(
            "--listen {}: the dashboard acts with your certificate, so it listens on loopback \
             only (127.0.0.1 or [::1]); reach it from elsewhere through an SSH tunnel",
            args.listen
        )));
    }
    let mut fleet = client::connect(target).await?;
    // Fail now, with havctl's usual message, if the coordinator will not talk to us.
    let nodes = (fleet.list_nodes(ListNodesRequest {}).await?)
        .into_inner()
        .nodes;
    let about = about_json(target);
    let mut model = FleetModel::new(about.clone(), args.trace_url);
    model.set_nodes(nodes);
    let hub = Arc::new(feed::Hub::new(model));

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::Usage(format!("--listen {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Usage(format!("--listen {}: {e}", args.listen)))?;
    let token = http::new_token().map_err(|source| CliError::Io {
        path: "/dev/urandom".into(),
        source,
    })?;
    let access = http::Access::new(local, token);
    println!("havctl dashboard: {}", access.login_url());
    println!(
        "as {} {} through {}; Ctrl-C stops",
        about["role"].as_str().unwrap_or("operator"),
        about["operator"].as_str().unwrap_or("?"),
        target.coordinator
    );

    tokio::spawn(feed::follow_events(hub.clone(), fleet.clone()));
    tokio::spawn(feed::refresh_status(
        hub.clone(),
        fleet.clone(),
        Duration::from_secs(args.refresh),
    ));
    let app = Arc::new(http::App::new(hub, fleet, access));
    tokio::select! {
        served = http::serve(listener, app) => {
            served.map_err(|e| CliError::Usage(format!("dashboard server: {e}")))
        }
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Who we are (from our own certificate) and whom we ask, for the page's header.
fn about_json(target: &Target) -> Value {
    let identity = target
        .cert
        .as_ref()
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|pem| {
            let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
            Identity::from_cert_der(&pem.contents).ok()
        });
    let (operator, role) = match identity {
        Some(Identity::Operator { name, role }) => (name, role.as_str().to_owned()),
        Some(other) => (other.name().to_owned(), "not an operator".to_owned()),
        None => ("?".to_owned(), "unknown".to_owned()),
    };
    json!({
        "coordinator": target.coordinator,
        "operator": operator,
        "role": role,
        "havctl": env!("CARGO_PKG_VERSION"),
    })
}
