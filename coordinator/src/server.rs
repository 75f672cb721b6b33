//! Starting and stopping a coordinator: open the store, load TLS, bind, serve both services over
//! mTLS only, with message size limits, until shut down.
//!
//! A shutdown stops accepting, ends the long-lived streams with a reason ([`crate::closing`]),
//! lets in-flight calls finish, and flushes what agents reported (the write-behind writers) into
//! the store before it returns: nothing acknowledged or received before it is lost.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hav_proto::v1::MAX_MESSAGE_BYTES;
use hav_proto::v1::agent_service_server::AgentServiceServer;
use hav_proto::v1::fleet_service_server::FleetServiceServer;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::agent_service::AgentServiceImpl;
use crate::closing::EndStreamsOnStop;
use crate::leader::{Leadership, Resign, Role};
use crate::node_state_writer::{NodeStateWriter, TransitionWriter};
use crate::registry::Registry;
use crate::service::FleetServiceImpl;
use crate::state::Shared;
use crate::store::{RedbStore, Store, StoreError};
use crate::store_etcd::{EtcdConfig, EtcdStore};
use crate::telemetry::Metrics;
use crate::tls::{self, ServerTlsFiles, TlsReloadError, TlsReloader};

/// Everything a coordinator needs to start.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    pub tls: ServerTlsFiles,
    /// Where the state is kept.
    pub store: StoreConfig,
    /// How often certificate files are checked for changes.
    pub reload_interval: Duration,
    /// How long to wait for an agent to acknowledge a command.
    pub command_timeout: Duration,
    /// DNS publishing, split-brain policy, drain timing.
    pub orchestration: crate::orchestrate::OrchestrationConfig,
    /// Where `GET /metrics` is served (Prometheus text or OpenMetrics); not served when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve it over TLS (asking scrapers for certificates when a client CA is set).
    pub metrics_tls: Option<hav_proto::config::MetricsTls>,
    /// This coordinator's name among those sharing a store (what status and the other
    /// coordinators show as the leader).
    pub name: String,
    /// The lease of the leader key on etcd (`--leader-ttl`); unused on redb.
    pub leader_ttl: Duration,
    /// How often the leader compacts etcd's history (zero: never); unused on redb.
    pub etcd_compaction: Duration,
    /// Webhook receivers of the fleet's alerts (none: no alerts).
    pub alerts: Option<crate::alerts::AlertSettings>,
}

impl CoordinatorConfig {
    /// A coordinator keeping its state in a redb file in `data_dir`.
    pub fn new(listen: SocketAddr, tls: ServerTlsFiles, data_dir: PathBuf) -> CoordinatorConfig {
        CoordinatorConfig {
            listen,
            tls,
            store: StoreConfig::Redb { dir: data_dir },
            reload_interval: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            orchestration: crate::orchestrate::OrchestrationConfig::default(),
            metrics_listen: None,
            metrics_tls: None,
            name: listen.to_string(),
            leader_ttl: crate::leader::DEFAULT_LEADER_TTL,
            etcd_compaction: crate::store_etcd::DEFAULT_COMPACTION_INTERVAL,
            alerts: None,
        }
    }
}

/// Where the coordinator keeps its state ([`Store`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreConfig {
    /// The embedded redb file `coordinator.redb` in this directory.
    Redb { dir: PathBuf },
    /// An etcd v3 cluster.
    Etcd(EtcdConfig),
}

impl StoreConfig {
    /// Opens the store (blocking: run it off the async runtime) and joins the coordinators
    /// sharing it as `name`: their election and their relay, each with leases of `ttl`, the
    /// leader compacting etcd's history every `compaction` (on redb, alone: always the leader,
    /// no relay, nothing to compact).
    pub fn open(
        &self,
        name: String,
        ttl: Duration,
        compaction: Duration,
    ) -> Result<OpenStore, StoreError> {
        Ok(match self {
            StoreConfig::Redb { dir } => OpenStore {
                store: Arc::new(RedbStore::open(dir)?),
                leadership: Leadership::sole(name),
                resign: Resign::none(),
                relay: None,
            },
            StoreConfig::Etcd(config) => {
                let store = EtcdStore::connect(config.clone())?;
                let relay = store.relay(name.clone(), ttl);
                let (leadership, resign) = store.elect(name, ttl);
                if !compaction.is_zero() {
                    store.compact_history(leadership.clone(), compaction);
                }
                OpenStore {
                    store: Arc::new(store),
                    leadership,
                    resign,
                    relay: Some(relay),
                }
            }
        })
    }
}

/// A store opened, with this coordinator's place among those sharing it.
pub struct OpenStore {
    pub store: Arc<dyn Store>,
    pub leadership: Leadership,
    pub resign: Resign,
    /// The other coordinators sharing the store (etcd only).
    pub relay: Option<Arc<crate::relay::Relay>>,
}

/// Why a coordinator could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("TLS: {0}")]
    Tls(#[from] hav_proto::transport::TransportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("orchestration: {0}")]
    Orchestration(#[from] crate::orchestrate::OrchestrationError),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the gRPC server task failed: {0}")]
    Task(String),
}

/// A coordinator serving in the background.
pub struct RunningCoordinator {
    /// The address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    /// The TLS config in force; changes when the certificate files are reloaded.
    pub tls_config: watch::Receiver<Arc<ServerConfig>>,
    tls_reloader: TlsReloader,
    /// Where `GET /metrics` is served, if it is.
    pub metrics_addr: Option<SocketAddr>,
    /// The counters of the fleet operations (the rollout module reports through these).
    pub metrics: Arc<Metrics>,
    metrics_server: Option<hav_proto::metrics::http::ServerGuard>,
    shutdown: oneshot::Sender<()>,
    stopping: watch::Sender<bool>,
    shared: Arc<Shared>,
    node_states: Arc<NodeStateWriter>,
    transitions: Arc<TransitionWriter>,
    /// The gRPC server; `None` once [`RunningCoordinator::ended`] has seen it end.
    task: Option<JoinHandle<Result<(), ServerError>>>,
    orchestrator: Arc<crate::orchestrate::Orchestrator>,
    /// Follows the config versions other coordinators write ([`crate::state::follow_config_versions`]).
    config_follower: JoinHandle<()>,
    /// Follows the priority intents written anywhere ([`crate::priority::follow_intents`]).
    intents_follower: JoinHandle<()>,
    resign: Resign,
    relay: Option<Arc<crate::relay::Relay>>,
    /// This coordinator's part in the election of the coordinators sharing its store.
    pub leadership: Leadership,
}

impl RunningCoordinator {
    /// Ends agent and watch streams (status `UNAVAILABLE`, [`crate::closing::SHUTTING_DOWN`]),
    /// stops accepting, lets in-flight calls finish, waits for the server to end and writes what
    /// agents reported before. Agents reconnect with backoff to whatever comes up next.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        // First end the long-lived streams (agents, watchers), then stop the server, which
        // waits for in-flight calls. The watchers get what was published before, nothing after.
        self.shared.registry.close();
        self.stopping.send_replace(true);
        drop(self.metrics_server);
        let _ = self.shutdown.send(());
        let result = match self.task {
            Some(task) => join(task).await,
            None => Ok(()),
        };
        self.orchestrator.shutdown().await;
        self.config_follower.abort();
        self.intents_follower.abort();
        // The singletons have stopped: another coordinator may take over now, not a TTL later.
        self.resign.resign(Duration::from_secs(2)).await;
        // The sessions have ended: every announcement of them goes at once.
        if let Some(relay) = &self.relay {
            relay.shutdown().await;
        }
        // Last: the streams have ended, so no snapshot arrives after this flush.
        self.node_states.close().await;
        self.transitions.close().await;
        tracing::info!("agents' reports written; store flushed");
        result
    }

    /// Reads the certificate files now (as SIGHUP asks) and serves them to the next connection;
    /// on an error the certificates in force stay.
    pub async fn reload_tls(&self) -> Result<(), TlsReloadError> {
        self.tls_reloader.reload().await
    }

    /// Resolves if the gRPC server ends by itself, which only an error makes it do; pending
    /// forever after that. [`RunningCoordinator::shutdown`] must still be called to flush.
    pub async fn ended(&mut self) -> Result<(), ServerError> {
        match self.task.as_mut() {
            Some(task) => {
                let result = match task.await {
                    Ok(result) => result,
                    Err(e) => Err(ServerError::Task(e.to_string())),
                };
                self.task = None;
                result
            }
            None => std::future::pending().await,
        }
    }
}

async fn join(task: JoinHandle<Result<(), ServerError>>) -> Result<(), ServerError> {
    match task.await {
        Ok(result) => result,
        Err(e) => Err(ServerError::Task(e.to_string())),
    }
}

/// Opens the store, loads TLS, binds and serves.
pub async fn start(config: CoordinatorConfig) -> Result<RunningCoordinator, ServerError> {
    let store_config = config.store.clone();
    let (name, leader_ttl, compaction) = (
        config.name.clone(),
        config.leader_ttl,
        config.etcd_compaction,
    );
    let OpenStore {
        store,
        leadership,
        resign,
        relay,
    } = tokio::task::spawn_blocking(move || store_config.open(name, leader_ttl, compaction))
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
    // Serve once the first election is decided (this coordinator leads, or knows who does), so
    // that a push right after start-up is not refused for want of a leader; a cluster that
    // decides nothing within a TTL is waited for no longer.
    let mut role = leadership.subscribe();
    let decided = role.wait_for(|role| !matches!(role, Role::Follower { leader: None }));
    let _ = tokio::time::timeout(config.leader_ttl, decided).await;
    let initial = tls::server_config(&config.tls)?;
    let (tls_config, tls_reloader) =
        tls::watch_files(config.tls.clone(), initial, config.reload_interval);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            address: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        address: config.listen,
        source,
    })?;
    let (stopping, stopping_rx) = watch::channel(false);
    let node_states = Arc::new(NodeStateWriter::start(store.clone()));
    let transitions = Arc::new(TransitionWriter::start(store.clone()));
    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(Shared {
        store,
        registry: Registry::new(),
        node_states: node_states.clone(),
        transitions: transitions.clone(),
        latest: Default::default(),
        intents: Default::default(),
        command_timeout: config.command_timeout,
        stopping: stopping_rx,
        metrics: metrics.clone(),
        leadership: leadership.clone(),
        relay: relay.clone(),
    });
    if let Some(relay) = &relay {
        shared.registry.attach_relay(relay.clone());
        // Agents are served once this coordinator's announcements can live in the store.
        if !relay.await_serving(config.leader_ttl).await {
            tracing::warn!(
                "no membership lease within {:?}: serving agents once etcd grants one",
                config.leader_ttl
            );
        }
    }
    // Unlike the agent, a coordinator asked to serve metrics and unable to does not start: it is
    // not on the failover path, and a silently missing endpoint would go unnoticed.
    if let Some(alerts) = config.alerts.clone() {
        crate::alerts::spawn(shared.clone(), alerts);
    }
    let metrics_server = match config.metrics_listen {
        None => None,
        Some(address) => {
            let shared = shared.clone();
            let render = move |format| shared.metrics.render(&shared.registry, format);
            let tls = match &config.metrics_tls {
                Some(tls) => Some(hav_proto::metrics::tls::server_config(tls)?),
                None => None,
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            let server = hav_proto::metrics::http::serve(address, tls, render)
                .map_err(|source| ServerError::Metrics { address, source })?;
            tracing::info!(address = %server.local_addr(), "serving metrics on {scheme}://{}/metrics", server.local_addr());
            Some(server)
        }
    };
    let metrics_addr = metrics_server.as_ref().map(|server| server.local_addr());
    let agent = AgentServiceServer::new(AgentServiceImpl {
        shared: shared.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let orchestrator =
        crate::orchestrate::Orchestrator::start(shared.clone(), config.orchestration.clone())
            .await?;
    let config_follower = tokio::spawn(crate::state::follow_config_versions(shared.clone()));
    let intents_follower = tokio::spawn(crate::priority::follow_intents(shared.clone()));
    // After the fleet view subscribed to the registry's reports: it misses no remote session.
    if let Some(relay) = &relay {
        relay.follow(shared.clone());
    }
    let fleet = FleetServiceServer::new(FleetServiceImpl {
        shared: shared.clone(),
        orchestrator: orchestrator.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let end_streams = EndStreamsOnStop::new(stopping.subscribe());
    let incoming = tls::incoming(listener, tls_config.clone());
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .layer(end_streams)
            .add_service(agent)
            .add_service(fleet)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = shutdown_rx.await;
            })
            .await?;
        Ok(())
    });
    tracing::info!(%local_addr, "hav-coordinator listening (mTLS)");
    Ok(RunningCoordinator {
        local_addr,
        tls_config,
        tls_reloader,
        metrics_addr,
        metrics,
        metrics_server,
        shutdown,
        stopping,
        shared,
        node_states,
        transitions,
        task: Some(task),
        orchestrator,
        config_follower,
        intents_follower,
        resign,
        relay,
        leadership,
    })
}
