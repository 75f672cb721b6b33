//! The load test's certificates, kept in a cache directory across runs: a fleet CA, the
//! coordinator's server certificate, one operator certificate (role operator) and one agent
//! certificate per simulated node (identity comes only from the certificate, so every simulated
//! agent needs its own). Missing agent certificates are issued in parallel on every core.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hav_coordinator::tls::ServerTlsFiles;
use hav_proto::identity::Role;
use hav_proto::transport::{ClientTlsFiles, client_config};
use havctl::certs::{CA_CERT, IssueRequest, Kind, init_ca, issue};
use rustls::ClientConfig;

/// Validity of issued certificates; a cache older than this must be removed by hand.
const DAYS: i64 = 365;

/// The cache directory and what was issued into it.
pub struct Pki {
    dir: PathBuf,
}

/// How the agent certificates were obtained for one run.
#[derive(Debug, Clone, Copy)]
pub struct Issued {
    /// Certificates issued now (the rest came from the cache).
    pub issued: usize,
    pub elapsed: Duration,
}

impl Pki {
    /// Opens the cache, creating the CA, coordinator and operator certificates if missing.
    pub fn open(dir: &Path) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if !dir.join(CA_CERT).exists() {
            init_ca(dir, "hav fleet-load CA").context("creating the load-test CA")?;
        }
        let pki = Pki {
            dir: dir.to_owned(),
        };
        if !pki.cert_path(Kind::Coordinator, COORDINATOR).exists() {
            issue(
                dir,
                &IssueRequest::new(Kind::Coordinator, COORDINATOR, DAYS),
                dir,
            )?;
        }
        if !pki.cert_path(Kind::Operator, OPERATOR).exists() {
            let mut request = IssueRequest::new(Kind::Operator, OPERATOR, DAYS);
            request.role = Some(Role::Operator);
            issue(dir, &request, dir)?;
        }
        Ok(pki)
    }

    /// Issues the agent certificates `0..count` that the cache lacks, on `threads` threads.
    pub fn ensure_agents(&self, count: usize, threads: usize) -> anyhow::Result<Issued> {
        let missing: Vec<usize> = (0..count)
            // havctl::certs::issue writes the key first, so a certificate means a complete pair.
            .filter(|&i| !self.cert_path(Kind::Agent, &agent_name(i)).exists())
            .collect();
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    let next = next.clone();
                    let missing = &missing;
                    scope.spawn(move || -> anyhow::Result<()> {
                        loop {
                            let slot = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&index) = missing.get(slot) else {
                                return Ok(());
                            };
                            let request = IssueRequest::new(Kind::Agent, &agent_name(index), DAYS);
                            issue(&self.dir, &request, &self.dir)?;
                        }
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("issuer thread panicked"))?
            })
        })?;
        Ok(Issued {
            issued: missing.len(),
            elapsed: started.elapsed(),
        })
    }

    /// The coordinator's TLS files.
    pub fn coordinator(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.cert_path(Kind::Coordinator, COORDINATOR),
            key: self.key_path(Kind::Coordinator, COORDINATOR),
            ca: self.dir.join(CA_CERT),
        }
    }

    /// The operator's client TLS config.
    pub fn operator(&self) -> anyhow::Result<Arc<ClientConfig>> {
        Ok(client_config(&self.client_files(Kind::Operator, OPERATOR))?)
    }

    /// Agent `index`'s client TLS config.
    pub fn agent(&self, index: usize) -> anyhow::Result<Arc<ClientConfig>> {
        Ok(client_config(
            &self.client_files(Kind::Agent, &agent_name(index)),
        )?)
    }

    fn client_files(&self, kind: Kind, name: &str) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: self.dir.join(CA_CERT),
            cert: self.cert_path(kind, name),
            key: self.key_path(kind, name),
        }
    }

    fn cert_path(&self, kind: Kind, name: &str) -> PathBuf {
        self.dir.join(format!("{}-{name}.pem", prefix(kind)))
    }

    fn key_path(&self, kind: Kind, name: &str) -> PathBuf {
        self.dir.join(format!("{}-{name}.key", prefix(kind)))
    }
}

const COORDINATOR: &str = "coordinator";
const OPERATOR: &str = "load-operator";

/// The node name of simulated agent `index`.
pub fn agent_name(index: usize) -> String {
    format!("load-{index:05}")
}

fn prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Agent => "agent",
        Kind::Coordinator => "coordinator",
        Kind::Operator => "operator",
    }
}
