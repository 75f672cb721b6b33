//! Dialling the coordinator's `FleetService` with the operator's certificate, and havctl's errors:
//! each prints as one line saying what went wrong and what to do.

use std::path::PathBuf;

use hav_proto::transport::{self, ClientTlsFiles, TransportError};
use hav_proto::v1::fleet_service_client::FleetServiceClient;
use hav_proto::v1::{AboutRequest, MAX_MESSAGE_BYTES};
use tonic::transport::Channel;

use crate::certs::CertError;

/// Everything havctl can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error("cannot reach the coordinator at {address}: {source}")]
    Connect {
        address: String,
        source: TransportError,
    },
    /// Our own TLS files could not be loaded: nothing was dialled.
    #[error("{0}")]
    Tls(TransportError),
    #[error("{}", transport::explain_status(.0))]
    Call(#[from] tonic::Status),
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("missing {flag} (or ${env}): {hint}")]
    Missing {
        flag: &'static str,
        env: &'static str,
        hint: &'static str,
    },
    #[error("{0}")]
    Usage(String),
    #[error("config rejected: {0}")]
    Invalid(String),
    /// The coordinator answered and said no (a drain, a rollout): its reason as it is.
    #[error("{0}")]
    Refused(String),
}

/// Where the coordinator is and who we are.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// One coordinator address, or several separated by commas (tried in order).
    pub coordinator: String,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

impl Target {
    fn files(&self) -> Result<ClientTlsFiles, CliError> {
        let missing = |flag, env| CliError::Missing {
            flag,
            env,
            hint: "havctl talks to the coordinator over mTLS only: issue a certificate with \
                   `havctl certs issue --kind operator`, then name it once with \
                   `havctl config set-context`",
        };
        Ok(ClientTlsFiles {
            ca: self
                .ca
                .clone()
                .ok_or_else(|| missing("--ca", "HAVCTL_CA"))?,
            cert: self
                .cert
                .clone()
                .ok_or_else(|| missing("--cert", "HAVCTL_CERT"))?,
            key: self
                .key
                .clone()
                .ok_or_else(|| missing("--key", "HAVCTL_KEY"))?,
        })
    }
}

/// Connects to the coordinator's fleet API. Given several coordinators (sharing a store), the
/// leader among those that answer, asked in order, else the first that answers (a follower
/// serves reads and names the leader in its refusals); the error is the last one's.
pub async fn connect(target: &Target) -> Result<FleetServiceClient<Channel>, CliError> {
    let tls = transport::client_config(&target.files()?).map_err(CliError::Tls)?;
    let several = crate::contexts::addresses(&target.coordinator).count() > 1;
    let mut fallback = None;
    let mut failed = None;
    for address in crate::contexts::addresses(&target.coordinator) {
        let channel = match transport::connect(address, tls.clone()).await {
            Ok(channel) => channel,
            Err(source) => {
                failed = Some(source);
                continue;
            }
        };
        let mut client = FleetServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        if !several {
            return Ok(client);
        }
        match client.about(AboutRequest {}).await {
            // A coordinator alone with its store, or one from before leadership, leads.
            Ok(about) if about.get_ref().leader || !about.get_ref().shared_store => {
                return Ok(client);
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(client),
            _ => {
                fallback.get_or_insert(client);
            }
        }
    }
    fallback.ok_or_else(|| CliError::Connect {
        address: target.coordinator.clone(),
        source: failed.unwrap_or_else(|| TransportError::Address(target.coordinator.clone())),
    })
}
