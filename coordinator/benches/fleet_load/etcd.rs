//! etcd's own counters, read from one member's Prometheus `/metrics` on its client URL (every
//! member applies the same raft log, so one member's counts are the cluster's): keys written
//! (`etcd_mvcc_put_total` + `etcd_mvcc_delete_total`, those inside transactions included), write
//! transactions (the growth of `etcd_debugging_mvcc_current_revision`: one revision per
//! transaction that changed something) and raft proposals committed
//! (`etcd_server_proposals_committed_total`: the writes plus lease grants and revocations).

use std::time::Instant;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One reading of the counters.
#[derive(Debug, Clone, Copy)]
pub struct EtcdCounters {
    at: Instant,
    keys_written: f64,
    revision: f64,
    proposals: f64,
}

/// Writes per second between two readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct EtcdRates {
    pub keys_per_second: f64,
    pub revisions_per_second: f64,
    pub proposals_per_second: f64,
}

impl EtcdCounters {
    /// Reads the counters of the member at `endpoint` (`http://HOST:PORT`).
    pub async fn read(endpoint: &str) -> anyhow::Result<EtcdCounters> {
        let host = endpoint
            .strip_prefix("http://")
            .with_context(|| format!("{endpoint}: only http:// members are read"))?;
        let mut stream = TcpStream::connect(host).await?;
        // HTTP/1.0: the member closes the connection after the response.
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let (_, body) = response
            .split_once("\r\n\r\n")
            .with_context(|| format!("{endpoint}/metrics: no HTTP body"))?;
        let value = |name: &str| -> anyhow::Result<f64> {
            body.lines()
                .find_map(|line| {
                    let (key, value) = line.split_once(' ')?;
                    (key == name).then(|| value.trim().parse::<f64>().ok())?
                })
                .with_context(|| format!("{endpoint}/metrics: no {name}"))
        };
        Ok(EtcdCounters {
            at: Instant::now(),
            keys_written: value("etcd_mvcc_put_total")? + value("etcd_mvcc_delete_total")?,
            revision: value("etcd_debugging_mvcc_current_revision")?,
            proposals: value("etcd_server_proposals_committed_total")?,
        })
    }

    /// The rates from `start` to this reading.
    pub fn since(&self, start: &EtcdCounters) -> EtcdRates {
        let seconds = self.at.duration_since(start.at).as_secs_f64().max(1e-9);
        EtcdRates {
            keys_per_second: (self.keys_written - start.keys_written) / seconds,
            revisions_per_second: (self.revision - start.revision) / seconds,
            proposals_per_second: (self.proposals - start.proposals) / seconds,
        }
    }
}
