//! hav-coordinator: the fleet control plane. It holds the desired config of every node and its
//! history, the audit log and the last state each node reported, and talks mTLS gRPC to agents
//! (`AgentService`) and to havctl (`FleetService`).
//!
//! Invariant: the coordinator is never on the failover path. Agents dial it, and an agent that
//! cannot reach it keeps running VRRP with the config it has.
//!
//! Identity and authorisation come only from verified client certificates (see
//! `hav_proto::identity`); every domain error becomes a `tonic::Status` in one place
//! ([`error::ControlError`]).

pub mod agent_service;
pub mod alerts;
pub mod auth;
pub mod closing;
pub mod command_queue;
pub mod diff;
pub mod dns;
pub mod error;
pub mod leader;
pub mod node_state_writer;
pub mod orchestrate;
pub mod presence;
pub mod priority;
pub mod push;
pub mod registry;
pub mod relay;
pub mod rollout;
pub mod server;
pub mod service;
pub mod sla;
pub mod splitbrain;
pub mod state;
pub mod store;
pub mod store_etcd;
pub mod telemetry;
pub mod tls;

pub use server::{CoordinatorConfig, RunningCoordinator, ServerError, StoreConfig, start};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
