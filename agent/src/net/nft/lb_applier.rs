//! Keeps the load balancer's virtual servers in hav's tables in line with the latest set asked
//! for, from a task of its own: the event loop asks and goes on, so a real server's health
//! change or a takeover never holds adverts back while `nft` runs (a loaded host can take
//! hundreds of milliseconds).
//!
//! Guarantees: transactions run one at a time, in the order asked; a set asked while one runs
//! supersedes any older one that has not started (each replaces the virtual servers whole, so
//! only the latest matters); a failed transaction is retried every [`VirtualServerApplier::RETRY`]
//! until it succeeds or a newer set is asked for; [`VirtualServerApplier::close`] returns once
//! the last set asked was tried and nothing runs. The tables' other sections (the accept-mode
//! filter, the virtual MACs' IGMP) go through the same [`Firewall`], behind the same lock, so no
//! two transactions on one table ever interleave.

use std::sync::Arc;

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use super::{Firewall, LbService};

/// The virtual servers asked for, and what asked.
#[derive(Debug, Clone, Default)]
struct Desired {
    services: Vec<LbService>,
    op: String,
}

/// Applies the latest virtual servers asked for in the background.
pub struct VirtualServerApplier {
    desired: Option<watch::Sender<Desired>>,
    task: Option<JoinHandle<()>>,
    asked: Vec<LbService>,
}

impl VirtualServerApplier {
    /// Between two tries of a failed transaction.
    pub const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

    /// Starts the applier of `firewall`'s virtual servers on the current runtime (nothing runs
    /// until a set is asked for).
    pub fn spawn(firewall: Arc<Mutex<Firewall>>) -> Self {
        let (sender, receiver) = watch::channel(Desired::default());
        Self {
            desired: Some(sender),
            task: Some(tokio::spawn(apply_latest(firewall, receiver))),
            asked: Vec::new(),
        }
    }

    /// Asks for exactly `services`; returns at once. Nothing is asked when they are the last
    /// asked.
    pub fn set(&mut self, services: Vec<LbService>, op: &str) {
        if services == self.asked {
            return;
        }
        self.asked = services.clone();
        if let Some(desired) = &self.desired {
            let _ = desired.send(Desired {
                services,
                op: op.to_owned(),
            });
        }
    }

    /// Stops the applier once it has tried the last set asked; later requests are ignored.
    pub async fn close(&mut self) {
        self.desired = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for VirtualServerApplier {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Applies each newest request; ends when the asking side is gone and nothing is left to try.
async fn apply_latest(firewall: Arc<Mutex<Firewall>>, mut desired: watch::Receiver<Desired>) {
    // An unseen request wins over the channel's close: the last one asked is always tried.
    while desired.changed().await.is_ok() {
        loop {
            let Desired { services, op } = desired.borrow_and_update().clone();
            let result = firewall
                .lock()
                .await
                .set_virtual_servers(&services, &op)
                .await;
            let Err(error) = result else {
                tracing::debug!(
                    "virtual servers programmed: {} services ({op})",
                    services.len()
                );
                break;
            };
            tracing::error!(%error, op, "virtual servers not programmed; trying again");
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(VirtualServerApplier::RETRY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::nft::{Forwarding, TableName, Target};
    use hav_proto::config::{LbAlgo, LbProtocol};

    fn service(real_server: &str) -> Vec<LbService> {
        vec![LbService {
            id: 0,
            name: "web".into(),
            address: "198.51.100.10".parse().expect("address"),
            protocol: LbProtocol::Tcp,
            ports: vec![80],
            algo: LbAlgo::Rr,
            forwarding: Forwarding::Nat,
            pool: vec![Target {
                address: real_server.parse().expect("address"),
                port: Some(8080),
                weight: 1,
                mark: 1,
            }],
        }]
    }

    #[tokio::test(flavor = "current_thread")]
    async fn asking_never_waits_for_nft_and_only_the_latest_set_is_applied_after_a_failure() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (nft, log, gate) = crate::net::nft::testing::fake_nft(dir.path());
        std::fs::write(dir.path().join("fail"), "").expect("fail marker");
        let name = TableName::new("havtest").expect("name");
        let firewall = Arc::new(Mutex::new(Firewall::with_nft(name, nft)));
        let mut applier = VirtualServerApplier::spawn(firewall.clone());
        applier.set(service("198.51.100.21"), "first");
        // The first run is under way (and held there) once the FIFO opens for writing.
        let writer = tokio::task::spawn_blocking(move || std::fs::File::create(gate))
            .await
            .expect("joined")
            .expect("gate opened by the first run");
        // The loop asks twice more while nft is held: neither call waits.
        applier.set(service("198.51.100.22"), "second");
        applier.set(service("198.51.100.23"), "third");
        assert!(firewall.try_lock().is_err(), "the applier holds the tables");
        drop(writer);
        applier.close().await;
        let ran = std::fs::read_to_string(&log).expect("log");
        assert!(ran.contains("198.51.100.21"), "{ran}");
        assert!(ran.contains("198.51.100.23"), "{ran}");
        assert!(
            !ran.contains("198.51.100.22"),
            "superseded before it started: {ran}"
        );
        // Closed: later requests run nothing.
        applier.set(service("198.51.100.24"), "late");
        assert!(
            !std::fs::read_to_string(&log)
                .expect("log")
                .contains("198.51.100.24")
        );
    }
}
