//! A real three-member etcd cluster on loopback for the coordinator's etcd store: members on
//! 127.0.0.1 ports picked free at start, data and logs in a per-run directory under the temp dir,
//! everything killed and removed when the [`EtcdCluster`] is dropped (a panicking test keeps the
//! logs and says where; data directories always go).
//!
//! Members die with the thread that started them (`PR_SET_PDEATHSIG`), so a test process that is
//! killed leaves no etcd behind; the directories of such runs are removed by the next start
//! ([`sweep_stale`]). Needs `etcd` (Debian `etcd-server`) and `etcdctl` (`etcd-client`).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a member may take to serve clients (safety net; a healthy start takes a second).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The name every run directory starts with, then the pid of the test process.
const RUN_DIR_PREFIX: &str = "hav-etcd-";
/// What a member logs once it serves clients (etcd 3.4 and 3.5: "serving client traffic
/// insecurely", or "securely").
const SERVING: &str = "serving client traffic";

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A running etcd cluster.
pub struct EtcdCluster {
    dir: PathBuf,
    members: Vec<Member>,
    tls: Option<ServerTls>,
    /// `--initial-cluster` and `--initial-cluster-token` of every member (a member started again
    /// on its data directory ignores them).
    initial_cluster: String,
    token: String,
}

/// TLS for the members' client URLs (`https://`), with client certificates required
/// (`--client-cert-auth`); peers talk plain HTTP on loopback.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The CA that signed the members' and the clients' certificates (PEM).
    pub ca: PathBuf,
    /// The members' certificate, valid for 127.0.0.1, and its key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A client certificate and key the harness itself uses (etcdctl).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
    /// How many times the log said [`SERVING`] before the current run started.
    served_before: usize,
}

impl EtcdCluster {
    /// Starts a cluster of three members and waits until each serves clients (which an etcd
    /// member does only once the cluster has a leader). Call it from the test's own thread: the
    /// members die with the thread that started them.
    pub fn start() -> Result<EtcdCluster, Error> {
        Self::start_members(3)
    }

    /// [`EtcdCluster::start`] with `count` members.
    pub fn start_members(count: usize) -> Result<EtcdCluster, Error> {
        Self::start_with(count, None)
    }

    /// `count` members serving clients over TLS only, client certificates required.
    pub fn start_tls(count: usize, tls: ServerTls) -> Result<EtcdCluster, Error> {
        Self::start_with(count, Some(tls))
    }

    fn start_with(count: usize, tls: Option<ServerTls>) -> Result<EtcdCluster, Error> {
        sweep_stale();
        // A port picked free can be taken before etcd binds it: the member exits, and the
        // cluster starts again on other ports.
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::try_start(count, tls.clone()) {
                Ok(cluster) => return Ok(cluster),
                Err(StartError::Exited(e)) if tries < 3 => eprintln!("{e}; starting again"),
                Err(StartError::Exited(e) | StartError::Failed(e)) => return Err(e),
            }
        }
    }

    fn try_start(count: usize, tls: Option<ServerTls>) -> Result<EtcdCluster, StartError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{RUN_DIR_PREFIX}{}-", std::process::id()))
            .tempdir()?
            .keep();
        let addresses = free_addresses(2 * count)?;
        let members: Vec<Member> = addresses
            .chunks(2)
            .enumerate()
            .map(|(index, pair)| Member {
                name: format!("m{index}"),
                client: pair[0],
                peer: pair[1],
                child: None,
                log: dir.join(format!("m{index}.log")),
                served_before: 0,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let token = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cluster = EtcdCluster {
            dir,
            members,
            tls,
            initial_cluster,
            token,
        };
        for index in 0..count {
            cluster.spawn_member(index)?;
        }
        for index in 0..count {
            cluster.wait_serving(index)?;
        }
        Ok(cluster)
    }

    /// Starts member `index` on its data directory (new or kept), its log appended to.
    fn spawn_member(&mut self, index: usize) -> Result<(), StartError> {
        let scheme = self.scheme();
        let member = &self.members[index];
        let data = self.dir.join(format!("{}.data", member.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)?;
        let mut command = Command::new("etcd");
        command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &format!("{scheme}{}", member.client),
            ])
            .args([
                "--advertise-client-urls",
                &format!("{scheme}{}", member.client),
            ])
            .args(["--listen-peer-urls", &format!("http://{}", member.peer)])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{}", member.peer),
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let served_before = std::fs::read_to_string(&member.log)
            .unwrap_or_default()
            .matches(SERVING)
            .count();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start etcd (Debian package etcd-server): {e}"))?;
        let member = &mut self.members[index];
        member.served_before = served_before;
        member.child = Some(child);
        Ok(())
    }

    /// Starts again every member that is not running, on its data directory, and waits until
    /// each serves clients (which needs a quorum of them up: they are all started first). Call
    /// it from the thread that started the cluster.
    pub fn restart_stopped(&mut self) -> Result<(), Error> {
        let stopped: Vec<usize> = (0..self.members.len())
            .filter(|index| self.members[*index].child.is_none())
            .collect();
        for index in &stopped {
            self.spawn_member(*index).map_err(StartError::into_error)?;
        }
        for index in stopped {
            self.wait_serving(index).map_err(StartError::into_error)?;
        }
        Ok(())
    }

    /// The client URLs of the members still running, `http://127.0.0.1:PORT` (`https://` with
    /// TLS).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("{}{}", self.scheme(), m.client))
            .collect()
    }

    /// The client URL of member `index`, running or not.
    pub fn endpoint(&self, index: usize) -> String {
        format!("{}{}", self.scheme(), self.members[index].client)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https://"
        } else {
            "http://"
        }
    }

    /// How many members the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The index of the member that is the raft leader now, as the members report it.
    pub fn leader(&self) -> Result<usize, Error> {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints().join(",")]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        let out = command
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .map_err(|e| format!("cannot run etcdctl (Debian package etcd-client): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "etcdctl endpoint status: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let statuses: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        for status in statuses.as_array().into_iter().flatten() {
            let member = &status["Status"]["header"]["member_id"];
            let leader = &status["Status"]["leader"];
            if member.is_u64() && member == leader {
                let endpoint = status["Endpoint"].as_str().unwrap_or_default();
                if let Some(index) = (0..self.members.len()).find(|i| self.endpoint(*i) == endpoint)
                {
                    return Ok(index);
                }
            }
        }
        Err(format!(
            "no member says it leads: {}",
            String::from_utf8_lossy(&out.stdout)
        )
        .into())
    }

    /// SIGKILLs every running member (their data stays until the cluster is dropped).
    pub fn kill_all(&mut self) -> Result<(), Error> {
        for index in 0..self.members.len() {
            self.kill(index)?;
        }
        Ok(())
    }

    /// SIGKILLs member `index` (its data stays until the cluster is dropped).
    pub fn kill(&mut self, index: usize) -> Result<(), Error> {
        if let Some(mut child) = self.members[index].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// The run directory (logs, data directories).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits until member `index` logs that it serves clients; fails at once if it exits.
    fn wait_serving(&mut self, index: usize) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let member = &mut self.members[index];
        let log = member.log.clone();
        let child = member
            .child
            .as_mut()
            .ok_or_else(|| format!("member {} is not running", member.name))?;
        let watch = LogWatch::new(&log).map_err(StartError::Failed)?;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.matches(SERVING).count() > member.served_before {
                return Ok(());
            }
            if let Some(status) = child.try_wait().map_err(failed)? {
                return Err(StartError::Exited(
                    format!(
                        "etcd member {} exited ({status}) before serving:\n{}",
                        member.name,
                        tail(&text)
                    )
                    .into(),
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StartError::Failed(
                    format!(
                        "etcd member {} did not serve within {START_TIMEOUT:?}:\n{}",
                        member.name,
                        tail(&text)
                    )
                    .into(),
                ));
            }
            // Woken by the log growing; the bound also notices an exit that logs nothing.
            watch
                .wait(left.min(Duration::from_millis(200)))
                .map_err(StartError::Failed)?;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_dir_all(self.dir.join(format!("{}.data", member.name)));
        }
        let keep = std::thread::panicking() || std::env::var_os("HAV_TESTS_KEEP_LOGS").is_some();
        if keep {
            eprintln!("etcd logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Why a start failed: a member that exited may have lost a port race, and is worth another try.
enum StartError {
    Exited(Error),
    Failed(Error),
}

impl<E: Into<Error>> From<E> for StartError {
    fn from(error: E) -> StartError {
        StartError::Failed(error.into())
    }
}

impl StartError {
    fn into_error(self) -> Error {
        match self {
            StartError::Exited(e) | StartError::Failed(e) => e,
        }
    }
}

fn failed(error: impl Into<Error>) -> StartError {
    StartError::Failed(error.into())
}

/// `count` distinct loopback addresses whose ports were free a moment ago.
fn free_addresses(count: usize) -> Result<Vec<SocketAddr>, Error> {
    // All bound at once, so the kernel hands out distinct ports; released together just before
    // etcd binds them.
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()?)
}

/// Removes the run directories of test processes that no longer exist (killed before their
/// cluster was dropped). Their members died with them.
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(RUN_DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Wakes up when a log file grows (inotify).
struct LogWatch(nix::sys::inotify::Inotify);

impl LogWatch {
    fn new(path: &Path) -> Result<LogWatch, Error> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(path, AddWatchFlags::IN_MODIFY)?;
        Ok(LogWatch(inotify))
    }

    /// Returns when the file was written to, or after `timeout`.
    fn wait(&self, timeout: Duration) -> Result<(), Error> {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&self.0),
            nix::poll::PollFlags::POLLIN,
        )];
        let wait = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait))?;
        while let Ok(events) = self.0.read_events() {
            if events.is_empty() {
                break;
            }
        }
        Ok(())
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
