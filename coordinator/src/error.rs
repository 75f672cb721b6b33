//! The coordinator's domain errors and their single conversion to `tonic::Status`.

use hav_proto::identity::IdentityError;

use crate::store::StoreError;

/// Everything a coordinator call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("no verified client certificate on this connection")]
    NoPeerCertificate,
    #[error("client certificate carries no usable hav identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("{who} may not {action}: {why}")]
    PermissionDenied {
        who: String,
        action: &'static str,
        why: &'static str,
    },
    #[error("certificate identifies node `{certified}` but Hello names `{claimed}`")]
    NodeNameMismatch { certified: String, claimed: String },
    #[error(
        "agent speaks protocol version {agent}, this coordinator speaks {min} to {ours}: upgrade the coordinator before its agents",
        min = hav_proto::v1::MIN_PROTOCOL_VERSION
    )]
    ProtocolVersion { agent: u32, ours: u32 },
    #[error("the agent stream must start with Hello")]
    NoHello,
    #[error("node `{0}` is not connected")]
    NotConnected(String),
    #[error("node `{0}` did not answer the command in time")]
    CommandTimeout(String),
    #[error("node `{0}` has too many commands queued")]
    CommandQueueFull(String),
    #[error("config version {0} does not exist")]
    NoSuchVersion(u64),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid {argument}: {reason}")]
    InvalidArgument {
        argument: &'static str,
        reason: String,
    },
    /// A command for a node connected to another coordinator could not be passed to it.
    #[error(
        "node `{node}` is connected to coordinator {coordinator}; the command could not be passed on: {why}"
    )]
    Relay {
        node: String,
        coordinator: String,
        why: String,
    },
    /// This coordinator has lost its membership in the store: it serves no agent until back.
    #[error("coordinator {this} cannot reach its store and serves no agent now; try another")]
    NotServing { this: String },
    /// What only the leading coordinator does (rollouts), asked of another.
    #[error("coordinator {this} does not lead; ask the leader ({})", leader.as_deref().unwrap_or("none elected yet"))]
    NotLeader {
        this: String,
        leader: Option<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ControlError> for tonic::Status {
    fn from(error: ControlError) -> tonic::Status {
        use ControlError as E;
        let message = error.to_string();
        match error {
            E::NoPeerCertificate | E::Identity(_) => tonic::Status::unauthenticated(message),
            E::PermissionDenied { .. } | E::NodeNameMismatch { .. } => {
                tonic::Status::permission_denied(message)
            }
            E::ProtocolVersion { .. } => tonic::Status::failed_precondition(message),
            E::NoHello | E::InvalidConfig(_) | E::InvalidArgument { .. } => {
                tonic::Status::invalid_argument(message)
            }
            E::NotConnected(_) | E::NotLeader { .. } | E::Relay { .. } | E::NotServing { .. } => {
                tonic::Status::unavailable(message)
            }
            E::CommandTimeout(_) => tonic::Status::deadline_exceeded(message),
            E::CommandQueueFull(_) => tonic::Status::resource_exhausted(message),
            E::NoSuchVersion(_) => tonic::Status::not_found(message),
            E::Store(StoreError::Conflict { .. }) => tonic::Status::aborted(message),
            E::Store(_) => tonic::Status::internal(message),
        }
    }
}
