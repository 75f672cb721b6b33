//! The fleet's certificate authority: `havctl certs init` creates it, `havctl certs issue` signs
//! agent, coordinator and operator certificates. Every issued certificate carries its hav identity
//! as one URI subject-alternative name (see `hav_proto::identity`). Private keys are written with
//! mode 0600 and the CA key is never overwritten.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hav_proto::identity::{Identity, Role, valid_name};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// File name of the CA certificate inside the CA directory.
pub const CA_CERT: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const CA_KEY: &str = "ca.key";

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// hav-agent on a node (client certificate).
    Agent,
    /// hav-coordinator (server certificate).
    Coordinator,
    /// A havctl user (client certificate).
    Operator,
}

/// Errors of the certificate tooling.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists: refusing to overwrite a CA (remove it first if you mean it)")]
    CaExists(PathBuf),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid name `{0}`: use 1-63 characters of a-z, 0-9, '-', '_', '.'")]
    Name(String),
    #[error("invalid --san `{0}`: expected a DNS name or an IP address")]
    San(String),
    #[error("--role is only for operator certificates")]
    RoleNotOperator,
}

/// Paths of a written certificate and its key.
#[derive(Debug, Clone)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub kind: Kind,
    pub name: String,
    /// Operator role; default viewer. Only for operators.
    pub role: Option<Role>,
    /// Extra DNS names / IP addresses. A coordinator without any gets localhost, 127.0.0.1, ::1.
    pub sans: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl IssueRequest {
    /// A request valid from an hour ago for `days` days.
    pub fn new(kind: Kind, name: &str, days: i64) -> IssueRequest {
        let now = OffsetDateTime::now_utc();
        IssueRequest {
            kind,
            name: name.to_owned(),
            role: None,
            sans: Vec::new(),
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }

    /// The identity this request encodes.
    pub fn identity(&self) -> Result<Identity, CertError> {
        if !valid_name(&self.name) {
            return Err(CertError::Name(self.name.clone()));
        }
        let name = self.name.clone();
        match (self.kind, self.role) {
            (Kind::Agent, None) => Ok(Identity::Node { name }),
            (Kind::Coordinator, None) => Ok(Identity::Coordinator { name }),
            (Kind::Operator, role) => Ok(Identity::Operator {
                name,
                role: role.unwrap_or(Role::Viewer),
            }),
            (_, Some(_)) => Err(CertError::RoleNotOperator),
        }
    }
}

/// Creates a fleet CA (valid 10 years) in `dir`: `ca.pem` and `ca.key` (0600).
pub fn init_ca(dir: &Path, common_name: &str) -> Result<Written, CertError> {
    fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(CertError::CaExists(path.clone()));
        }
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "hav fleet");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    let cert = params.self_signed(&key)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&cert_path, cert.pem().as_bytes(), false)?;
    Ok(Written {
        cert: cert_path,
        key: key_path,
    })
}

/// Signs a certificate for `request` with the CA in `ca_dir`, writing `<kind>-<name>.pem` and
/// `<kind>-<name>.key` (0600) into `out_dir`.
pub fn issue(ca_dir: &Path, request: &IssueRequest, out_dir: &Path) -> Result<Written, CertError> {
    let identity = request.identity()?;
    let ca_cert = read(&ca_dir.join(CA_CERT))?;
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join(CA_KEY))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.to_uri());
    params.distinguished_name = dn;
    params.subject_alt_names = sans(request, &identity)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match request.kind {
        Kind::Coordinator => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Kind::Agent | Kind::Operator => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = request.not_before;
    params.not_after = request.not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    fs::create_dir_all(out_dir).map_err(|source| io(out_dir, source))?;
    let stem = format!("{}-{}", kind_name(request.kind), request.name);
    let written = Written {
        cert: out_dir.join(format!("{stem}.pem")),
        key: out_dir.join(format!("{stem}.key")),
    };
    write_file(&written.key, key.serialize_pem().as_bytes(), true)?;
    write_file(&written.cert, cert.pem().as_bytes(), false)?;
    Ok(written)
}

fn sans(request: &IssueRequest, identity: &Identity) -> Result<Vec<SanType>, CertError> {
    let mut sans = vec![SanType::URI(identity.to_uri().try_into()?)];
    let mut extra = request.sans.clone();
    if request.kind == Kind::Coordinator && extra.is_empty() {
        extra = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    }
    for san in extra {
        if let Ok(ip) = san.parse::<IpAddr>() {
            sans.push(SanType::IpAddress(ip));
        } else if !san.is_empty()
            && san
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            sans.push(SanType::DnsName(san.try_into()?));
        } else {
            return Err(CertError::San(san));
        }
    }
    Ok(sans)
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Agent => "agent",
        Kind::Coordinator => "coordinator",
        Kind::Operator => "operator",
    }
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| io(path, source))
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertError> {
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|source| io(path, source))?;
    // `mode` applies only on creation: tighten an existing file too.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|source| io(path, source))?;
    file.write_all(contents).map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> CertError {
    CertError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_carries_identity_and_private_key_is_0600() {
        let dir = tempfile::tempdir().expect("temp dir");
        init_ca(dir.path(), "test CA").expect("CA");
        let mut request = IssueRequest::new(Kind::Operator, "ana", 1);
        request.role = Some(Role::Operator);
        let written = issue(dir.path(), &request, dir.path()).expect("issue");
        let pem = fs::read(&written.cert).expect("cert");
        let der = rustls_pem_to_der(&pem);
        assert_eq!(
            Identity::from_cert_der(&der),
            Ok(Identity::Operator {
                name: "ana".into(),
                role: Role::Operator
            })
        );
        let mode = fs::metadata(&written.key)
            .expect("key")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let ca_mode = fs::metadata(dir.path().join(CA_KEY))
            .expect("ca key")
            .permissions();
        assert_eq!(ca_mode.mode() & 0o777, 0o600);
        assert!(matches!(
            init_ca(dir.path(), "again"),
            Err(CertError::CaExists(_))
        ));
    }

    fn rustls_pem_to_der(pem: &[u8]) -> Vec<u8> {
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem).expect("pem");
        parsed.contents
    }
}
