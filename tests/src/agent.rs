//! `hav-agent` as a process under test: node configs written from a small spec, the agent
//! started in a lab host, signals, its status socket, and waits on its state.
//!
//! The binary is `HAV_AGENT_BIN` if set, else `hav-agent` next to the test executable (cargo and
//! nextest build every workspace binary before running tests); a missing binary is an error that
//! says so. Waits are event-driven: VIP changes are awaited through netlink
//! ([`crate::topology::Lab::wait_address`]); a state is awaited by re-reading the status socket
//! each time the agent's log grows, watched with inotify (the agent logs `status published` at
//! debug level after each change of its status, so the change is on the socket by then). The
//! timeout of a wait is a safety net only. Each node keeps its config, state dir (VIP journal)
//! and status socket in `<lab log dir>/agent-<host>/`, so a restarted agent finds its journal.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::netns::{ExecOutput, NetnsError, NsProcess, SpawnSpec, poll_readable};
use crate::topology::Lab;

/// Environment variable naming the hav-agent binary to test.
pub const AGENT_BIN_ENV: &str = "HAV_AGENT_BIN";

/// Errors of the agent runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(
        "hav-agent binary not found: {0}; build it (`cargo build -p hav-agent`) or set HAV_AGENT_BIN"
    )]
    BinaryMissing(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("status of {node}: {reason}")]
    Status { node: String, reason: String },
    #[error(
        "{node}: timed out after {timeout:?} waiting for {what}; last status: {last}; log {log}"
    )]
    Timeout {
        node: String,
        what: String,
        timeout: Duration,
        last: String,
        log: String,
    },
    #[error("{node}: hav-agent exited ({exit}) while waiting for {what}; log:\n{log}")]
    Exited {
        node: String,
        what: String,
        exit: String,
        log: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

/// The hav-agent binary: `HAV_AGENT_BIN`, else `hav-agent` beside the running test executable.
pub fn agent_binary() -> Result<PathBuf, AgentError> {
    if let Some(path) = std::env::var_os(AGENT_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(AgentError::BinaryMissing(format!(
                "{AGENT_BIN_ENV}={} is not a file",
                path.display()
            )))
        };
    }
    crate::bench::sibling_binary("hav-agent").map_err(|e| AgentError::BinaryMissing(e.to_string()))
}

/// One `[[instance]]` of a node config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    pub priority: u8,
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// `accept = ...` (RFC 5798 Accept_Mode); `None` keeps the default (true).
    pub accept: Option<bool>,
    /// `checksum = "..."` (v3 over IPv4 only); `None` keeps the default.
    pub checksum: Option<String>,
    /// Unicast peers with their priority if known; empty = multicast.
    pub unicast_peers: Vec<(IpAddr, Option<u8>)>,
    /// `source_address`; `None` = the interface's primary (IPv6: link-local) address.
    pub source_address: Option<IpAddr>,
    /// `"address/prefix"` strings.
    pub vips: Vec<String>,
    /// Raw `track_*` lines, e.g. `track_process = [{ name = "worker", weight = 0 }]`.
    pub track: Vec<String>,
    pub auth_pass: Option<String>,
    /// `connection_drain`; `None` keeps the default (off).
    pub connection_drain: Option<Duration>,
}

impl InstanceSpec {
    /// `VI_1`, v3, 100 ms adverts, preempt without delay, multicast.
    pub fn new(interface: &str, vrid: u8, priority: u8, vips: &[&str]) -> Self {
        InstanceSpec {
            name: "VI_1".into(),
            interface: interface.to_owned(),
            vrid,
            version: 3,
            priority,
            advert_interval: Duration::from_millis(100),
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept: None,
            checksum: None,
            unicast_peers: Vec::new(),
            source_address: None,
            vips: vips.iter().map(|v| (*v).to_owned()).collect(),
            track: Vec::new(),
            auth_pass: None,
            connection_drain: None,
        }
    }

    /// The RFC 5798 master-down interval a backup of `priority` uses with this interval.
    pub fn master_down_interval(&self, priority: u8) -> Duration {
        let skew = self.advert_interval * (256 - u32::from(priority)) / 256;
        self.advert_interval * 3 + skew
    }

    fn render(&self, out: &mut String) {
        // Writing into a String cannot fail; the results are ignored for that reason.
        let _ = writeln!(out, "\n[[instance]]");
        let _ = writeln!(out, "name = {:?}", self.name);
        let _ = writeln!(out, "interface = {:?}", self.interface);
        let _ = writeln!(out, "vrid = {}", self.vrid);
        let _ = writeln!(out, "version = {}", self.version);
        let _ = writeln!(out, "priority = {}", self.priority);
        let _ = writeln!(
            out,
            "advert_interval = \"{}ms\"",
            self.advert_interval.as_millis()
        );
        let _ = writeln!(out, "preempt = {}", self.preempt);
        let _ = writeln!(
            out,
            "preempt_delay = \"{}ms\"",
            self.preempt_delay.as_millis()
        );
        if let Some(accept) = self.accept {
            let _ = writeln!(out, "accept = {accept}");
        }
        if let Some(checksum) = &self.checksum {
            let _ = writeln!(out, "checksum = {checksum:?}");
        }
        if let Some(source) = &self.source_address {
            let _ = writeln!(out, "source_address = \"{source}\"");
        }
        if let Some(pass) = &self.auth_pass {
            let _ = writeln!(out, "auth_pass = {pass:?}");
        }
        if let Some(drain) = self.connection_drain {
            let _ = writeln!(out, "connection_drain = \"{}ms\"", drain.as_millis());
        }
        if !self.unicast_peers.is_empty() {
            let peers: Vec<String> = self
                .unicast_peers
                .iter()
                .map(|(address, priority)| match priority {
                    Some(p) => format!("{{ address = \"{address}\", priority = {p} }}"),
                    None => format!("\"{address}\""),
                })
                .collect();
            let _ = writeln!(out, "unicast_peers = [{}]", peers.join(", "));
        }
        let vips: Vec<String> = self.vips.iter().map(|v| format!("{v:?}")).collect();
        let _ = writeln!(out, "vips = [{}]", vips.join(", "));
        for line in &self.track {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// A whole node config: `[node]`, the instances, and raw TOML for the rest (`[[script]]`,
/// `[[process]]`, `[[sync_group]]`, ...), appended as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub node: String,
    pub instances: Vec<InstanceSpec>,
    pub extra: String,
}

impl AgentConfig {
    pub fn new(node: &str, instances: Vec<InstanceSpec>) -> Self {
        AgentConfig {
            node: node.to_owned(),
            instances,
            extra: String::new(),
        }
    }

    /// The TOML text, with the node's state dir and status socket under `dir`.
    pub fn render(&self, dir: &Path) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "[node]");
        let _ = writeln!(out, "name = {:?}", self.node);
        let _ = writeln!(
            out,
            "state_dir = {:?}",
            dir.join("state").display().to_string()
        );
        let _ = writeln!(
            out,
            "status_socket = {:?}",
            dir.join("status.sock").display().to_string()
        );
        out.push('\n');
        out.push_str(&self.extra);
        for instance in &self.instances {
            instance.render(&mut out);
        }
        out
    }
}

/// How a start-up of hav-agent ended: it sent systemd's `READY=1`, or it exited first.
#[derive(Debug)]
pub enum Startup {
    Ready(Agent),
    Exited { exit: String, log: String },
}

/// `hav-agent --check <config>` run to completion in `host`.
pub fn check_config(lab: &Lab, host: &str, config: &Path) -> Result<ExecOutput, AgentError> {
    let binary = agent_binary()?;
    let binary = binary.display().to_string();
    let config = config.display().to_string();
    Ok(lab.exec(host, &[&binary, "--check", &config])?)
}

/// A hav-agent running in a lab host; SIGKILLed on drop (via its [`NsProcess`]).
#[derive(Debug)]
pub struct Agent {
    host: String,
    dir: PathBuf,
    process: NsProcess,
    starts: u32,
    /// Extra environment of every start (e.g. a `PATH` without some program).
    env: Vec<(String, String)>,
    /// The `$NOTIFY_SOCKET` of [`Agent::start_until_ready`], kept so the agent's later
    /// notifications (`STOPPING=1`) find a listener.
    _notify: Option<std::os::unix::net::UnixDatagram>,
}

impl Agent {
    /// Writes `config` to `<log dir>/agent-<host>/agent.toml` and starts hav-agent on it.
    pub fn start(lab: &Lab, host: &str, config: &AgentConfig) -> Result<Agent, AgentError> {
        Self::start_with_env(lab, host, config, &[])
    }

    /// Like [`Agent::start`] with extra environment variables, kept for restarts.
    pub fn start_with_env(
        lab: &Lab,
        host: &str,
        config: &AgentConfig,
        env: &[(&str, &str)],
    ) -> Result<Agent, AgentError> {
        let dir = lab.log_dir().join(format!("agent-{host}"));
        fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
        write_config_file(&dir, &config.render(&dir))?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Ok(Agent {
            host: host.to_owned(),
            process: spawn(lab, host, &dir, 0, &env)?,
            dir,
            starts: 1,
            env,
            _notify: None,
        })
    }

    /// Like [`Agent::start`], with `launch` adjusting how the agent is started: flags,
    /// environment, a wrapper program. [`Agent::restart`] starts it the plain way.
    pub fn start_with(
        lab: &Lab,
        host: &str,
        config: &AgentConfig,
        launch: impl FnOnce(SpawnSpec) -> SpawnSpec,
    ) -> Result<Agent, AgentError> {
        let dir = lab.log_dir().join(format!("agent-{host}"));
        fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
        write_config_file(&dir, &config.render(&dir))?;
        let spec = agent_spec(host, &dir, 0, "info,hav_agent=debug")?;
        Ok(Agent {
            host: host.to_owned(),
            process: lab.spawn(host, launch(spec))?,
            dir,
            starts: 1,
            env: Vec::new(),
            _notify: None,
        })
    }

    /// Writes `text` as the config (it names its own state dir and status socket; put them in
    /// [`Agent::dir_of`]) and starts hav-agent on it with `launch` adjusting the start (flags
    /// such as `--adopt`). [`Agent::restart`] starts it the plain way.
    pub fn start_text_with(
        lab: &Lab,
        host: &str,
        text: &str,
        launch: impl FnOnce(SpawnSpec) -> SpawnSpec,
    ) -> Result<Agent, AgentError> {
        let dir = Self::dir_of(lab, host);
        fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
        write_config_file(&dir, text)?;
        let spec = agent_spec(host, &dir, 0, "info,hav_agent=debug")?;
        Ok(Agent {
            host: host.to_owned(),
            process: lab.spawn(host, launch(spec))?,
            dir,
            starts: 1,
            env: Vec::new(),
            _notify: None,
        })
    }

    /// Like [`Agent::start`] with the agent logging at `info` only, as in production (the
    /// benchmark measures its idle cost).
    pub fn start_quiet(lab: &Lab, host: &str, config: &AgentConfig) -> Result<Agent, AgentError> {
        Self::start_quiet_as(lab, host, config, &agent_binary()?)
    }

    /// [`Agent::start_quiet`] with another build of hav-agent (a benchmark's reference); later
    /// starts of this agent run the usual binary.
    pub fn start_quiet_as(
        lab: &Lab,
        host: &str,
        config: &AgentConfig,
        binary: &Path,
    ) -> Result<Agent, AgentError> {
        let dir = lab.log_dir().join(format!("agent-{host}"));
        fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
        write_config_file(&dir, &config.render(&dir))?;
        let spec = binary_spec(binary.to_owned(), host, &dir, 0, "info");
        Ok(Agent {
            host: host.to_owned(),
            process: lab.spawn(host, spec)?,
            dir,
            starts: 1,
            env: Vec::new(),
            _notify: None,
        })
    }

    /// The directory of `host`'s agent: its config, and the state dir and status socket that
    /// [`AgentConfig::render`] places there.
    pub fn dir_of(lab: &Lab, host: &str) -> PathBuf {
        lab.log_dir().join(format!("agent-{host}"))
    }

    /// Writes `text` as the config (it names its own state dir and status socket; put them in
    /// [`Agent::dir_of`]) and starts hav-agent on it as systemd starts a `Type=notify` service,
    /// with `$NOTIFY_SOCKET` set; waits until it sends `READY=1` or exits.
    pub fn start_until_ready(
        lab: &Lab,
        host: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Startup, AgentError> {
        let dir = Self::dir_of(lab, host);
        fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
        write_config_file(&dir, text)?;
        let socket_path = dir.join("notify.sock");
        match fs::remove_file(&socket_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_error(format!("remove {}", socket_path.display()))(e));
            }
            _ => {}
        }
        let notify = std::os::unix::net::UnixDatagram::bind(&socket_path)
            .map_err(io_error(format!("bind {}", socket_path.display())))?;
        notify
            .set_nonblocking(true)
            .map_err(io_error("non-blocking notify socket"))?;
        // A log of its own per start-up, so an exit's log is this run's alone.
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let spec = SpawnSpec::new(format!("hav-agent-{host}-ready-{start}"), agent_binary()?)
            .arg("--config")
            .arg(dir.join("agent.toml").display().to_string())
            .env("RUST_LOG", "info,hav_agent=debug")
            .env("RUST_BACKTRACE", "1")
            .env("NOTIFY_SOCKET", socket_path.display().to_string());
        let mut process = lab.spawn(host, spec)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AgentError::Timeout {
                    node: host.to_owned(),
                    what: "READY=1 on $NOTIFY_SOCKET".into(),
                    timeout,
                    last: String::new(),
                    log: process.log_path().display().to_string(),
                });
            }
            let (readable, exited) = process.wait_readable_or_exit(notify.as_raw_fd(), left)?;
            // Every datagram queued, until the socket would block.
            let mut buf = [0u8; 4096];
            if readable {
                loop {
                    let n = match notify.recv(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(io_error("read the notify socket")(e)),
                    };
                    let message = String::from_utf8_lossy(&buf[..n]);
                    if message.lines().any(|line| line == "READY=1") {
                        return Ok(Startup::Ready(Agent {
                            host: host.to_owned(),
                            dir,
                            process,
                            starts: 1,
                            env: Vec::new(),
                            _notify: Some(notify),
                        }));
                    }
                }
            }
            if exited {
                return Ok(Startup::Exited {
                    exit: process.describe_exit(),
                    log: process.log(),
                });
            }
        }
    }

    /// Starts the agent again on the same config and state dir (after a kill or a stop).
    pub fn restart(&mut self, lab: &Lab) -> Result<(), AgentError> {
        if self.process.is_running() {
            self.process.kill()?;
        }
        self.process = spawn(lab, &self.host, &self.dir, self.starts, &self.env)?;
        self.starts += 1;
        Ok(())
    }

    /// Replaces the config file (takes effect on [`Agent::reload`] or restart).
    pub fn write_config(&self, config: &AgentConfig) -> Result<(), AgentError> {
        write_config_file(&self.dir, &config.render(&self.dir))
    }

    /// Replaces the config file with raw text (e.g. an invalid one).
    pub fn write_config_text(&self, text: &str) -> Result<(), AgentError> {
        write_config_file(&self.dir, text)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    pub fn status_socket(&self) -> PathBuf {
        self.dir.join("status.sock")
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn process(&mut self) -> &mut NsProcess {
        &mut self.process
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Everything the current process logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn signal(&self, signal: Signal) -> Result<(), AgentError> {
        Ok(self.process.signal(signal)?)
    }

    /// SIGHUP: reload the config file.
    pub fn reload(&self) -> Result<(), AgentError> {
        self.signal(Signal::SIGHUP)
    }

    /// SIGKILL and reap: a crash, VIPs left in place.
    pub fn kill(&mut self) -> Result<(), AgentError> {
        self.process.kill()?;
        Ok(())
    }

    /// SIGTERM (graceful stop); returns at once.
    pub fn terminate(&self) -> Result<(), AgentError> {
        self.signal(Signal::SIGTERM)
    }

    /// Waits for the process to exit; its exit status description.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<String, AgentError> {
        match self.process.wait_timeout(timeout)? {
            Some(_) => Ok(self.process.describe_exit()),
            None => Err(self.timeout("the process to exit", timeout, String::new())),
        }
    }

    /// The status document (the JSON of `hav-agent status --json`).
    pub fn status(&self) -> Result<serde_json::Value, AgentError> {
        let path = self.status_socket();
        let status_error = |reason: String| AgentError::Status {
            node: self.host.clone(),
            reason,
        };
        let mut stream = UnixStream::connect(&path)
            .map_err(|e| status_error(format!("connect {}: {e}", path.display())))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| status_error(e.to_string()))?;
        let mut body = Vec::new();
        stream
            .read_to_end(&mut body)
            .map_err(|e| status_error(format!("read: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| status_error(format!("bad JSON: {e}")))
    }

    /// The status of one instance.
    pub fn instance(&self, name: &str) -> Result<serde_json::Value, AgentError> {
        let status = self.status()?;
        find_instance(&status, name)
            .cloned()
            .ok_or_else(|| AgentError::Status {
                node: self.host.clone(),
                reason: format!("no instance {name} in {status}"),
            })
    }

    /// Waits until `accept` holds for the status document. The status is read at once and then
    /// each time the agent's log grows (the agent logs every transition and tracker change).
    pub fn wait_status(
        &mut self,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value, AgentError> {
        let watch = LogWatch::new(self.process.log_path())?;
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.status() {
                Ok(status) if accept(&status) => return Ok(status),
                Ok(status) => last = status.to_string(),
                // Not listening yet (starting up): the log will grow when it is.
                Err(e) => last = e.to_string(),
            }
            if !self.process.is_running() {
                return Err(AgentError::Exited {
                    node: self.host.clone(),
                    what: what.to_owned(),
                    exit: self.process.describe_exit(),
                    log: self.log(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout(what, timeout, last));
            }
            watch.wait(left)?;
        }
    }

    /// Waits until instance `name` is in `state` (`Master`, `Backup`, `Fault`, ...).
    pub fn wait_state(
        &mut self,
        name: &str,
        state: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, AgentError> {
        let what = format!("instance {name} in state {state}");
        let status = self.wait_status(&what, timeout, |status| {
            find_instance(status, name).and_then(|i| i["state"].as_str()) == Some(state)
        })?;
        Ok(find_instance(&status, name).cloned().unwrap_or_default())
    }

    /// Waits until the log contains `needle`; returns the whole log.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<String, AgentError> {
        let watch = LogWatch::new(self.process.log_path())?;
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(log);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout(&format!("log line `{needle}`"), timeout, String::new()));
            }
            watch.wait(left)?;
        }
    }

    fn timeout(&self, what: &str, timeout: Duration, last: String) -> AgentError {
        AgentError::Timeout {
            node: self.host.clone(),
            what: what.to_owned(),
            timeout,
            last,
            log: self.process.log_path().display().to_string(),
        }
    }
}

/// The entry of instance `name` in a status document.
pub fn find_instance<'a>(
    status: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    status["instances"]
        .as_array()?
        .iter()
        .find(|i| i["name"].as_str() == Some(name))
}

fn write_config_file(dir: &Path, text: &str) -> Result<(), AgentError> {
    let path = dir.join("agent.toml");
    // Write then rename, so a reload never reads half a file.
    let tmp = dir.join("agent.toml.new");
    fs::write(&tmp, text).map_err(io_error(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io_error(format!("rename to {}", path.display())))
}

fn spawn(
    lab: &Lab,
    host: &str,
    dir: &Path,
    start: u32,
    env: &[(String, String)],
) -> Result<NsProcess, AgentError> {
    spawn_with_log(lab, host, dir, start, "info,hav_agent=debug", env)
}

fn spawn_with_log(
    lab: &Lab,
    host: &str,
    dir: &Path,
    start: u32,
    log: &str,
    env: &[(String, String)],
) -> Result<NsProcess, AgentError> {
    let mut spec = agent_spec(host, dir, start, log)?;
    for (key, value) in env {
        spec = spec.env(key.as_str(), value.as_str());
    }
    Ok(lab.spawn(host, spec)?)
}

/// How `host`'s agent is started for the `start`th time: `--config <dir>/agent.toml`,
/// `RUST_LOG=log`; its output goes to `<lab log dir>/<spec name>.log`.
fn agent_spec(host: &str, dir: &Path, start: u32, log: &str) -> Result<SpawnSpec, AgentError> {
    Ok(binary_spec(agent_binary()?, host, dir, start, log))
}

/// [`agent_spec`] for a given binary.
fn binary_spec(binary: PathBuf, host: &str, dir: &Path, start: u32, log: &str) -> SpawnSpec {
    let config = dir.join("agent.toml");
    SpawnSpec::new(format!("hav-agent-{host}-{start}"), binary)
        .arg("--config")
        .arg(config.display().to_string())
        .env("RUST_LOG", log)
        .env("RUST_BACKTRACE", "1")
}

/// An inotify watch on a log file: [`LogWatch::wait`] returns when the file was written to.
struct LogWatch {
    fd: OwnedFd,
}

impl LogWatch {
    fn new(path: &Path) -> Result<Self, AgentError> {
        // SAFETY: plain syscall; on success the fd is ours alone.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(io_error("inotify_init1")(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| io_error("log path")(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        // SAFETY: a valid fd and a NUL-terminated path.
        let rc = unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                c_path.as_ptr(),
                libc::IN_MODIFY | libc::IN_CLOSE_WRITE,
            )
        };
        if rc < 0 {
            return Err(io_error(format!("inotify watch {}", path.display()))(
                io::Error::last_os_error(),
            ));
        }
        Ok(LogWatch { fd })
    }

    /// Waits for a write (or the timeout), then drains the queued events.
    fn wait(&self, timeout: Duration) -> Result<(), AgentError> {
        poll_readable(self.fd.as_raw_fd(), timeout).map_err(io_error("poll inotify"))?;
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a buffer we own, of the given length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return Ok(());
            }
        }
    }
}

/// Starts `hav-test-httpd` in `host`, answering its host name on port 8080 of every IPv4 and
/// IPv6 address (a dual-stack `[::]` socket), and waits until it listens.
pub fn start_httpd(lab: &Lab, host: &str) -> Result<NsProcess, AgentError> {
    start_httpd_with(lab, host, &[])
}

/// The port of the echo service of [`start_echo_httpd`].
pub const ECHO_PORT: u16 = 7000;

/// [`start_httpd`], also running a TCP echo service on [`ECHO_PORT`]: each connection is
/// greeted with `<host>\n`, then every byte it sends comes back.
pub fn start_echo_httpd(lab: &Lab, host: &str) -> Result<NsProcess, AgentError> {
    start_httpd_with(lab, host, &["--echo", "[::]:7000"])
}

fn start_httpd_with(lab: &Lab, host: &str, extra: &[&str]) -> Result<NsProcess, AgentError> {
    let binary = crate::bench::sibling_binary("hav-test-httpd")
        .map_err(|e| AgentError::BinaryMissing(e.to_string()))?;
    let mut httpd = lab.spawn(
        host,
        SpawnSpec::new(format!("httpd-{host}"), binary)
            .args(["--node", host, "--listen", "[::]:8080"])
            .args(extra.iter().copied())
            .ready_pipe(),
    )?;
    httpd.wait_ready(Duration::from_secs(10))?;
    Ok(httpd)
}

/// One change of an address seen by an [`AddressLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressEvent {
    pub at: Instant,
    /// `true`: added (RTM_NEWADDR); `false`: removed (RTM_DELADDR).
    pub present: bool,
}

/// Records every RTM_NEWADDR/RTM_DELADDR of one address in a namespace, from the moment
/// [`AddressLog::start`] returns (the netlink subscription is in place by then) until
/// [`AddressLog::stop`].
#[derive(Debug)]
pub struct AddressLog {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<Vec<AddressEvent>, NetnsError>>>,
}

impl AddressLog {
    /// Subscribes to address events in `host` and returns once subscribed.
    pub fn start(lab: &Lab, host: &str, addr: IpAddr) -> Result<AddressLog, AgentError> {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let namespace = lab.host(host)?.name().to_owned();
        let thread = lab.host(host)?.in_thread(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| NetnsError::Io {
                    what: format!("runtime in {namespace}"),
                    source: e,
                })?;
            runtime.block_on(async move {
                use futures::StreamExt;
                use rtnetlink::packet_route::RouteNetlinkMessage;
                let subscribed = rtnetlink::new_multicast_connection(&[
                    rtnetlink::MulticastGroup::Ipv4Ifaddr,
                    rtnetlink::MulticastGroup::Ipv6Ifaddr,
                ]);
                let (connection, _handle, mut events) = match subscribed {
                    Ok(parts) => parts,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Err(NetnsError::Netlink {
                            namespace,
                            reason: e.to_string(),
                        });
                    }
                };
                tokio::spawn(connection);
                let _ = ready_tx.send(Ok(()));
                let mut seen = Vec::new();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return Ok(seen),
                        event = events.next() => {
                            let Some((message, _)) = event else { return Ok(seen) };
                            let rtnetlink::packet_core::NetlinkPayload::InnerMessage(inner) =
                                message.payload
                            else {
                                continue;
                            };
                            match inner {
                                RouteNetlinkMessage::NewAddress(m) if address_of(&m) == Some(addr) => {
                                    seen.push(AddressEvent { at: Instant::now(), present: true });
                                }
                                RouteNetlinkMessage::DelAddress(m) if address_of(&m) == Some(addr) => {
                                    seen.push(AddressEvent { at: Instant::now(), present: false });
                                }
                                _ => {}
                            }
                        }
                    }
                }
            })
        })?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(AddressLog {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(reason)) => Err(AgentError::Status {
                node: host.to_owned(),
                reason: format!("netlink subscription: {reason}"),
            }),
            Err(_) => Err(AgentError::Status {
                node: host.to_owned(),
                reason: "netlink subscription did not report".into(),
            }),
        }
    }

    /// Stops recording; the events seen, in order.
    pub fn stop(mut self) -> Result<Vec<AddressEvent>, AgentError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => Ok(result?),
            Some(Err(_)) => Err(AgentError::Status {
                node: String::new(),
                reason: "address log thread panicked".into(),
            }),
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for AddressLog {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// IFA_LOCAL for IPv4 (IFA_ADDRESS is the peer on point-to-point links), else IFA_ADDRESS.
fn address_of(message: &rtnetlink::packet_route::address::AddressMessage) -> Option<IpAddr> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(a) => return Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    address
}
