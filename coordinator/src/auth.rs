//! Who is calling, from the verified client certificate of the connection only (never from a
//! message), and what an operator may do.
//!
//! Authorisation of the fleet API: every call needs an operator certificate; viewers may read
//! (node status, events, validation, history, dry-run pushes, SLA, DNS, rollout status); every
//! change needs the operator role. A refused change is written to the audit log.

use hav_proto::identity::{Identity, Role};
use tonic::Request;

use crate::error::ControlError;
use crate::state::Shared;
use crate::tls::Peer;

/// The identity in the verified client certificate of this call's connection, which must be
/// valid now: a connection that resumed a TLS session had its certificate checked when the
/// session began, possibly before the certificate expired.
pub fn peer_identity<T>(request: &Request<T>) -> Result<Identity, ControlError> {
    let certified = Peer::of(request)
        .and_then(|peer| peer.identity.as_deref())
        .ok_or(ControlError::NoPeerCertificate)?;
    Ok(certified.current()?)
}

/// The calling operator's name, after checking it holds an operator certificate and, if `change`
/// names a change, that it has the operator role (a refusal is audited).
pub async fn operator<T>(
    shared: &Shared,
    request: &Request<T>,
    change: Option<&'static str>,
) -> Result<String, ControlError> {
    match peer_identity(request)? {
        Identity::Operator { name, role } => match (change, role) {
            (Some(action), Role::Viewer) => {
                let who = format!("viewer {name}");
                shared
                    .audit(&who, action, "refused: viewer role".into(), false)
                    .await;
                Err(ControlError::PermissionDenied {
                    who,
                    action,
                    why: "this needs an operator certificate (havctl certs issue --kind \
                          operator --role operator)",
                })
            }
            _ => Ok(name),
        },
        other => Err(ControlError::PermissionDenied {
            who: other.to_string(),
            action: "use the fleet API",
            why: "only hav://operator/ certificates may",
        }),
    }
}
