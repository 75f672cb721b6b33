//! Test fixtures: a real fleet CA and certificates in a temp dir, a coordinator on 127.0.0.1:0,
//! agent links and havctl targets using those certificates.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hav_agent::control::{self, Backoff, ControlConfig, DaemonSide, LinkState};
use hav_coordinator::tls::ServerTlsFiles;
use hav_coordinator::{CoordinatorConfig, RunningCoordinator};
use hav_proto::identity::Role;
use hav_proto::transport::ClientTlsFiles;
use havctl::certs::{self, IssueRequest, Kind, Written};
use havctl::client::Target;
use tempfile::TempDir;

/// Safety net for awaiting an event; never a synchronisation device.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path(), "test fleet CA").unwrap();
        let pki = Pki { dir };
        pki.issue(IssueRequest::new(Kind::Coordinator, "coord", 30));
        pki
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca(&self) -> PathBuf {
        self.path().join(certs::CA_CERT)
    }

    pub fn issue(&self, request: IssueRequest) -> Written {
        certs::issue(self.path(), &request, self.path()).unwrap()
    }

    pub fn server_files(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.path().join("coordinator-coord.pem"),
            key: self.path().join("coordinator-coord.key"),
            ca: self.ca(),
        }
    }

    /// An operator target with a freshly issued certificate.
    pub fn operator(&self, coordinator: &RunningCoordinator, name: &str, role: Role) -> Target {
        let mut request = IssueRequest::new(Kind::Operator, name, 30);
        request.role = Some(role);
        let written = self.issue(request);
        self.target(coordinator, &written)
    }

    pub fn target(&self, coordinator: &RunningCoordinator, written: &Written) -> Target {
        Target {
            coordinator: coordinator.local_addr.to_string(),
            cert: Some(written.cert.clone()),
            key: Some(written.key.clone()),
            ca: Some(self.ca()),
        }
    }

    /// An agent link for node `cert_name` whose Hello claims `claimed_name`.
    pub fn agent(
        &self,
        coordinator: &RunningCoordinator,
        cert_name: &str,
        claimed_name: &str,
    ) -> DaemonSide {
        self.agent_of(
            vec![coordinator.local_addr.to_string()],
            cert_name,
            claimed_name,
        )
    }

    /// An agent link to `coordinators` (tried in order) for node `cert_name` whose Hello claims
    /// `claimed_name`.
    pub fn agent_of(
        &self,
        coordinators: Vec<String>,
        cert_name: &str,
        claimed_name: &str,
    ) -> DaemonSide {
        let written = self.issue(IssueRequest::new(Kind::Agent, cert_name, 30));
        let config = ControlConfig {
            coordinators,
            node_name: claimed_name.to_owned(),
            tls: ClientTlsFiles {
                ca: self.ca(),
                cert: written.cert,
                key: written.key,
            },
            software_version: "test-0.1".into(),
            capabilities: vec!["vrrp3".into()],
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(200)),
        };
        control::spawn(config).0
    }
}

pub async fn start(pki: &Pki, data: &Path) -> RunningCoordinator {
    start_with(pki, data, |_| {}).await
}

/// [`start`], with `adjust` applied to the config first.
pub async fn start_with(
    pki: &Pki,
    data: &Path,
    adjust: impl FnOnce(&mut CoordinatorConfig),
) -> RunningCoordinator {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("hav_coordinator=debug,hav_agent=debug")
        .try_init();
    let mut config = CoordinatorConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        pki.server_files(),
        data.to_owned(),
    );
    config.reload_interval = Duration::from_millis(50);
    config.command_timeout = Duration::from_secs(5);
    adjust(&mut config);
    hav_coordinator::start(config).await.unwrap()
}

/// Waits until the link state satisfies `want`; returns that state.
pub async fn await_link(side: &mut DaemonSide, want: impl Fn(&LinkState) -> bool) -> LinkState {
    let state = tokio::time::timeout(TIMEOUT, side.link.wait_for(|s| want(s)))
        .await
        .expect("link state in time")
        .expect("link task alive");
    state.clone()
}
