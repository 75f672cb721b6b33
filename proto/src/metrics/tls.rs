//! The metrics endpoint's TLS: its own certificate, and optionally the CA whose certificates
//! scrapers must present. TLS 1.2 and 1.3 (scrapers are not all hav's), HTTP/1.1 only.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;

use crate::config::MetricsTls;
use crate::transport::{TransportError, load_certs, load_key, root_store};

/// Loads the files named by `tls` into a server config.
pub fn server_config(tls: &MetricsTls) -> Result<Arc<ServerConfig>, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca)?), provider)
                    .build()
                    .map_err(|e| TransportError::Tls(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_single_cert(load_certs(&tls.cert, "certificate")?, load_key(&tls.key)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
