//! The agent's status: a snapshot the event loop publishes after every change, served as one JSON
//! document per connection on a local Unix socket and logged on SIGUSR1.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hav_vrrp::engine::{Engine, RouterStatus};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// Everything `hav-agent status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub node: String,
    pub config: String,
    pub instances: Vec<InstanceStatus>,
    pub trackers: BTreeMap<String, String>,
    /// Router-wide RFC counters (checksum, version, VRID errors) and the socket layer's drops.
    pub counters: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    pub name: String,
    pub state: String,
    pub base_priority: u8,
    pub effective_priority: u8,
    pub master: Option<String>,
    pub master_priority: Option<u8>,
    /// Seconds in the current state.
    pub since_secs: Option<f64>,
    pub last_cause: Option<String>,
    pub holds_vips: bool,
    pub counters: BTreeMap<String, u64>,
}

impl InstanceStatus {
    fn of(status: &RouterStatus, now: Instant) -> Self {
        Self {
            name: status.name.clone(),
            state: status.state.to_string(),
            base_priority: status.base_priority.get(),
            effective_priority: status.effective_priority.get(),
            master: status.master.map(|m| m.address.to_string()),
            master_priority: status.master.map(|m| m.priority.get()),
            since_secs: status
                .since
                .map(|since| now.saturating_duration_since(since).as_secs_f64()),
            last_cause: status.last_cause.as_ref().map(ToString::to_string),
            holds_vips: status.holds_vips,
            // Every counter, zero or not: the statistics (SIGUSR2) list them all.
            counters: status
                .counters
                .named()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        }
    }
}

/// Builds the engine's part of a snapshot.
pub fn instances(engine: &Engine, now: Instant) -> Vec<InstanceStatus> {
    engine
        .status()
        .iter()
        .map(|status| InstanceStatus::of(status, now))
        .collect()
}

/// Asks the event loop for a snapshot; built only when someone asks, never per advert.
pub type Request = tokio::sync::oneshot::Sender<Snapshot>;

/// Serves snapshots on a Unix socket at `path` until the guard is dropped: each connection asks
/// the event loop through `requests` and gets one JSON document. A stale socket file from an
/// earlier run is replaced.
pub fn serve(path: &Path, requests: mpsc::Sender<Request>) -> io::Result<ServerGuard> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let listener = UnixListener::bind(path)?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let requests = requests.clone();
            tokio::spawn(async move {
                let (reply, snapshot) = tokio::sync::oneshot::channel();
                if requests.send(reply).await.is_err() {
                    return;
                }
                let Ok(snapshot) = snapshot.await else { return };
                let mut body = serde_json::to_vec_pretty(&snapshot).unwrap_or_default();
                body.push(b'\n');
                if let Err(error) = stream.write_all(&body).await {
                    tracing::debug!(%error, "status client went away");
                }
            });
        }
    });
    Ok(ServerGuard {
        path: path.to_path_buf(),
        task,
    })
}

/// Stops the status server and removes its socket file when dropped.
pub struct ServerGuard {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads a snapshot from a running agent's status socket.
pub async fn query(path: &Path) -> io::Result<Snapshot> {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::UnixStream::connect(path).await?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A table for people.
pub fn render(snapshot: &Snapshot) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "node {}  (config {})", snapshot.node, snapshot.config);
    let _ = writeln!(
        out,
        "{:<16} {:<7} {:>4} {:>4}  {:<22} {:>9}  cause",
        "INSTANCE", "STATE", "PRIO", "EFF", "MASTER", "SINCE"
    );
    for i in &snapshot.instances {
        let master = match (&i.master, i.master_priority) {
            (Some(address), Some(priority)) => format!("{address} ({priority})"),
            _ => "-".to_string(),
        };
        let since = i
            .since_secs
            .map(|s| format!("{s:.1}s"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<16} {:<7} {:>4} {:>4}  {:<22} {:>9}  {}",
            i.name,
            i.state,
            i.base_priority,
            i.effective_priority,
            master,
            since,
            i.last_cause.as_deref().unwrap_or("-")
        );
    }
    if !snapshot.trackers.is_empty() {
        let _ = writeln!(out, "trackers:");
        for (name, health) in &snapshot.trackers {
            let _ = writeln!(out, "  {name:<28} {health}");
        }
    }
    out
}

/// The statistics SIGUSR2 writes to the log: every counter of every instance, then the
/// router-wide ones and the socket layer's drops (the status socket serves the same numbers).
pub fn render_statistics(snapshot: &Snapshot) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for instance in &snapshot.instances {
        let _ = writeln!(out, "instance {} ({})", instance.name, instance.state);
        for (name, value) in &instance.counters {
            let _ = writeln!(out, "  {name:<32} {value}");
        }
    }
    let _ = writeln!(out, "router-wide");
    for (name, value) in &snapshot.counters {
        let _ = writeln!(out, "  {name:<32} {value}");
    }
    out
}
