//! Who a peer is, as written in its certificate. A hav certificate carries exactly one URI
//! subject-alternative name of the form
//!
//! - `hav://node/<name>`: an agent on node `<name>`;
//! - `hav://coordinator/<name>`: a coordinator;
//! - `hav://operator/<name>?role=viewer` or `?role=operator`: a person or tool using havctl.
//!
//! Names are 1 to 63 characters of `a-z`, `0-9`, `-`, `_` and `.`. The coordinator takes a peer's
//! identity from the verified certificate only, never from a message.

use std::fmt;

use x509_parser::certificate::Validity;

/// The URI scheme prefix of every hav identity.
pub const SCHEME: &str = "hav://";

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Read-only: status, watch, validate, history.
    Viewer,
    /// Everything a viewer may do, plus push, rollback and drain.
    Operator,
}

/// A peer's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Identity {
    Node { name: String },
    Coordinator { name: String },
    Operator { name: String, role: Role },
}

/// Why a certificate or URI does not carry a usable hav identity.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("certificate is not valid X.509: {0}")]
    Certificate(String),
    #[error("certificate has no hav:// URI subject-alternative name")]
    Missing,
    #[error("certificate has {0} hav:// URI subject-alternative names; exactly one is allowed")]
    Ambiguous(usize),
    #[error("`{uri}` is not a hav identity: {reason}")]
    Malformed { uri: String, reason: &'static str },
    /// Outside its validity period now (a resumed TLS session does not check it again).
    #[error("certificate is not valid now (valid {not_before} to {not_after})")]
    NotValidNow {
        not_before: String,
        not_after: String,
    },
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

impl Identity {
    /// The name part (node, coordinator or operator name).
    pub fn name(&self) -> &str {
        match self {
            Identity::Node { name } | Identity::Coordinator { name } => name,
            Identity::Operator { name, .. } => name,
        }
    }

    /// The URI SAN that encodes this identity.
    pub fn to_uri(&self) -> String {
        match self {
            Identity::Node { name } => format!("{SCHEME}node/{name}"),
            Identity::Coordinator { name } => format!("{SCHEME}coordinator/{name}"),
            Identity::Operator { name, role } => {
                format!("{SCHEME}operator/{name}?role={}", role.as_str())
            }
        }
    }

    /// Parses a `hav://` URI.
    pub fn from_uri(uri: &str) -> Result<Identity, IdentityError> {
        let malformed = |reason| IdentityError::Malformed {
            uri: uri.to_owned(),
            reason,
        };
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or(malformed("no hav:// prefix"))?;
        let (kind, rest) = rest.split_once('/').ok_or(malformed("no kind/name"))?;
        let (name, query) = match rest.split_once('?') {
            Some((name, query)) => (name, Some(query)),
            None => (rest, None),
        };
        if !valid_name(name) {
            return Err(malformed(
                "name must be 1-63 characters of a-z, 0-9, '-', '_', '.'",
            ));
        }
        let name = name.to_owned();
        match (kind, query) {
            ("node", None) => Ok(Identity::Node { name }),
            ("coordinator", None) => Ok(Identity::Coordinator { name }),
            ("operator", Some(query)) => {
                let role = query
                    .strip_prefix("role=")
                    .and_then(Role::parse)
                    .ok_or(malformed(
                        "operator role must be ?role=viewer or ?role=operator",
                    ))?;
                Ok(Identity::Operator { name, role })
            }
            ("operator", None) => Err(malformed("operator identity lacks ?role=")),
            ("node" | "coordinator", Some(_)) => Err(malformed("unexpected query")),
            _ => Err(malformed("kind must be node, coordinator or operator")),
        }
    }

    /// Reads the identity from a DER certificate (which the caller has already verified),
    /// whatever its validity period; [`CertifiedIdentity`] also checks that.
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, IdentityError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let uris: Vec<&str> = san
            .map(|ext| ext.value.general_names.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(SCHEME) => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(IdentityError::Missing),
            [uri] => Identity::from_uri(uri),
            many => Err(IdentityError::Ambiguous(many.len())),
        }
    }
}

/// A certificate's identity and validity period, read once for a connection that outlives the
/// moment: [`CertifiedIdentity::current`] answers at any time whether the certificate is valid
/// then and whose it is, without keeping the certificate or parsing it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedIdentity(Result<(Validity, Result<Identity, IdentityError>), IdentityError>);

impl CertifiedIdentity {
    /// Reads the identity and validity period of a DER certificate.
    pub fn from_cert_der(der: &[u8]) -> CertifiedIdentity {
        let validity = x509_parser::parse_x509_certificate(der)
            .map(|(_, cert)| cert.validity().clone())
            .map_err(|e| IdentityError::Certificate(e.to_string()));
        CertifiedIdentity(validity.map(|validity| (validity, Identity::from_cert_der(der))))
    }

    /// The identity, if the certificate is within its validity period now.
    pub fn current(&self) -> Result<Identity, IdentityError> {
        let (validity, identity) = self.0.as_ref().map_err(Clone::clone)?;
        if !validity.is_valid() {
            return Err(IdentityError::NotValidNow {
                not_before: validity.not_before.to_string(),
                not_after: validity.not_after.to_string(),
            });
        }
        identity.clone()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node { name } => write!(f, "node {name}"),
            Identity::Coordinator { name } => write!(f, "coordinator {name}"),
            Identity::Operator { name, role } => write!(f, "{} {name}", role.as_str()),
        }
    }
}

/// Whether `name` is a valid node/coordinator/operator name.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        for identity in [
            Identity::Node {
                name: "lb-1".into(),
            },
            Identity::Coordinator {
                name: "coord".into(),
            },
            Identity::Operator {
                name: "ana".into(),
                role: Role::Viewer,
            },
            Identity::Operator {
                name: "bo".into(),
                role: Role::Operator,
            },
        ] {
            assert_eq!(Identity::from_uri(&identity.to_uri()), Ok(identity));
        }
    }

    #[test]
    fn rejects_malformed() {
        for uri in [
            "https://node/a",
            "hav://node/",
            "hav://node/A",
            "hav://node/a?role=operator",
            "hav://operator/a",
            "hav://operator/a?role=root",
            "hav://admin/a",
            "hav://node/a/b",
        ] {
            assert!(Identity::from_uri(uri).is_err(), "{uri} accepted");
        }
    }
}
