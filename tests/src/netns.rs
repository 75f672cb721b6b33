//! Named network namespaces, processes started inside them, and netlink address waits.
//!
//! Every name this module creates starts with a per-run [`RunPrefix`] (`h` + 5 random
//! lowercase alphanumerics), so `<prefix>-<name>` fits IFNAMSIZ and runs never collide. Nothing
//! here runs `ip` without `-n <namespace>` or `ip netns exec <namespace>`: the root namespace's
//! interfaces are never touched. A [`NsProcess`] is SIGKILLed and reaped on drop; a
//! [`Namespace`] is deleted (after killing what still runs in it) by its owner, see
//! [`crate::topology::Lab`]. Waits on addresses subscribe to netlink inside the namespace before
//! dumping the current state, so no event is lost and nothing sleeps.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};

/// Directory holding one marker file per live (or crashed) run: `<prefix>.pid`.
pub const MARKER_DIR: &str = "/run/hav-tests";
/// Directory under which each run keeps the logs of the processes it started.
pub const LOG_ROOT: &str = "/tmp/hav-tests";
/// The file descriptor number on which a process started with [`SpawnSpec::ready_pipe`] finds
/// the write end of its readiness pipe (also given in `HAV_READY_FD`).
pub const READY_FD: i32 = 3;

/// Errors of the namespace layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink in namespace {namespace}: {reason}")]
    Netlink { namespace: String, reason: String },
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },
    #[error("name `{0}` is longer than 15 bytes (IFNAMSIZ)")]
    NameTooLong(String),
    #[error("invalid name `{name}`: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("no {kind} `{name}` in this lab")]
    NotFound { kind: &'static str, name: String },
    #[error("{name} did not report ready: {reason}; log {log}")]
    NotReady {
        name: String,
        reason: &'static str,
        log: PathBuf,
    },
}

impl NetnsError {
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        NetnsError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The per-run name prefix: `h` followed by 5 random characters from `[a-z0-9]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPrefix(String);

impl RunPrefix {
    /// A fresh random prefix (from the kernel's CSPRNG).
    pub fn generate() -> Result<Self, NetnsError> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut random = [0u8; 5];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .map_err(|e| NetnsError::io("reading /dev/urandom", e))?;
        let mut prefix = String::from("h");
        prefix.extend(
            random
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])),
        );
        Ok(RunPrefix(prefix))
    }

    /// Whether `s` has the shape of a prefix this harness generates.
    pub fn is_harness_prefix(s: &str) -> bool {
        s.len() == 6
            && s.starts_with('h')
            && s[1..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<prefix>-<suffix>`, checked to fit IFNAMSIZ (15 bytes) and to be a plain name.
    pub fn name(&self, suffix: &str) -> Result<String, NetnsError> {
        if suffix.is_empty()
            || !suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NetnsError::InvalidName {
                name: suffix.to_owned(),
                reason: "use [A-Za-z0-9_-], at least one character",
            });
        }
        let name = format!("{}-{suffix}", self.0);
        if name.len() > 15 {
            return Err(NetnsError::NameTooLong(name));
        }
        Ok(name)
    }
}

impl fmt::Display for RunPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Output of a command run to completion in a namespace.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Whether an address wait expects the address to be there or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Present,
    Absent,
}

/// A named network namespace (`/run/netns/<name>`). Deleting it is the owner's job
/// ([`Namespace::delete`]); this type has no `Drop` so that a topology controls the order.
#[derive(Debug)]
pub struct Namespace {
    name: String,
    log_dir: PathBuf,
}

impl Namespace {
    /// Creates the namespace with `ip netns add` and brings its loopback up.
    pub fn create(name: &str, log_dir: &Path) -> Result<Self, NetnsError> {
        run("ip", &["netns", "add", name])?;
        let ns = Namespace {
            name: name.to_owned(),
            log_dir: log_dir.to_owned(),
        };
        if let Err(e) = ns.ip(&["link", "set", "lo", "up"]) {
            let _ = delete_namespace(name);
            return Err(e);
        }
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>` and returns its stdout; a non-zero exit is an error.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut argv = vec!["-n", self.name.as_str()];
        argv.extend_from_slice(args);
        run("ip", &argv).map(|out| out.stdout)
    }

    /// Runs `argv` inside the namespace to completion (`ip netns exec`). A non-zero exit is
    /// returned, not an error, so tests can assert on failures (e.g. a ping that must fail).
    pub fn exec(&self, argv: &[&str]) -> Result<ExecOutput, NetnsError> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(argv);
        output("ip", &full)
    }

    /// Writes a sysctl inside the namespace (`sysctl -qw key=value` via `ip netns exec`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        let setting = format!("{key}={value}");
        let out = self.exec(&["sysctl", "-qw", &setting])?;
        check(&format!("sysctl -w {setting} in {}", self.name), out).map(drop)
    }

    /// Starts a long-running process in the namespace. Its stdout and stderr go to
    /// `<log dir>/<spec.name>.log`; the returned guard SIGKILLs and reaps it on drop.
    pub fn spawn(&self, spec: SpawnSpec) -> Result<NsProcess, NetnsError> {
        NsProcess::spawn(self, spec)
    }

    /// Runs `f` on a new thread that has joined this namespace (setns CLONE_NEWNET). Sockets
    /// created on that thread live in the namespace, whichever thread uses them later.
    pub fn in_thread<T, F>(&self, f: F) -> Result<JoinHandle<Result<T, NetnsError>>, NetnsError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, NetnsError> + Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|e| NetnsError::io(format!("open {path}"), e))?;
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("ns-{name}"))
            .spawn(move || {
                nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                    NetnsError::io(format!("setns into {name}"), io::Error::from(e))
                })?;
                drop(file);
                f()
            })
            .map_err(|e| NetnsError::io("spawning a namespace thread", e))
    }

    /// The addresses on `iface` (any family), read over netlink inside the namespace.
    pub fn addresses(&self, iface: &str) -> Result<Vec<IpAddr>, NetnsError> {
        let namespace = self.name.clone();
        let iface = iface.to_owned();
        join(self.in_thread(move || {
            block_on(&namespace.clone(), async move {
                let (connection, handle, _) =
                    rtnetlink::new_connection().map_err(|e| NetnsError::io("netlink socket", e))?;
                tokio::spawn(connection);
                let index = link_index(&handle, &namespace, &iface).await?;
                let mut dump = handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute();
                let mut addresses = Vec::new();
                while let Some(message) = dump.next().await {
                    let message = message.map_err(|e| netlink_error(&namespace, e))?;
                    // The kernel ignores the filter on some dumps; apply it again.
                    if message.header.index == index {
                        addresses.extend(address_of(&message));
                    }
                }
                Ok(addresses)
            })
        })?)
    }

    /// Waits until `addr` is present on (or absent from) any interface of the namespace.
    /// Subscribes to address events first, then dumps the current state, then follows the
    /// events: no polling; `timeout` is a safety net only.
    pub fn wait_address(
        &self,
        addr: IpAddr,
        want: Presence,
        timeout: Duration,
    ) -> Result<(), NetnsError> {
        let namespace = self.name.clone();
        join(self.in_thread(move || {
            block_on(&namespace.clone(), async move {
                let what = format!("address {addr} {want:?} in {namespace}");
                tokio::time::timeout(timeout, wait_address_events(&namespace, addr, want))
                    .await
                    .map_err(|_| NetnsError::Timeout { what, timeout })?
            })
        })?)
    }

    /// Kills every process still in the namespace, then deletes it. Errors are returned but
    /// the deletion is attempted regardless.
    pub fn delete(self) -> Result<(), NetnsError> {
        delete_namespace(&self.name)
    }
}

/// What to start in a namespace.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Short name used for the log file and in diagnostics.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Give the process the write end of a pipe on fd [`READY_FD`] (and `HAV_READY_FD=3`);
    /// [`NsProcess::wait_ready`] reads the first line it writes there.
    pub ready_pipe: bool,
}

impl SpawnSpec {
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        SpawnSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            ready_pipe: false,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn ready_pipe(mut self) -> Self {
        self.ready_pipe = true;
        self
    }
}

/// A process running in a namespace; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct NsProcess {
    name: String,
    namespace: String,
    child: Child,
    pidfd: OwnedFd,
    log_path: PathBuf,
    ready: Option<File>,
    status: Option<ExitStatus>,
}

impl NsProcess {
    fn spawn(ns: &Namespace, spec: SpawnSpec) -> Result<Self, NetnsError> {
        fs::create_dir_all(&ns.log_dir)
            .map_err(|e| NetnsError::io(format!("create {}", ns.log_dir.display()), e))?;
        let log_path = ns.log_dir.join(format!("{}.log", spec.name));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| NetnsError::io(format!("open {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| NetnsError::io("dup log file", e))?;

        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns.name.as_str()])
            .arg(&spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own process group, so a Ctrl-C on the test run does not reach it first.
            .process_group(0);

        let mut ready = None;
        let mut ready_write = None;
        if spec.ready_pipe {
            let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| NetnsError::io("pipe2", io::Error::from(e)))?;
            let write_fd = write_end.as_raw_fd();
            command.env("HAV_READY_FD", READY_FD.to_string());
            // SAFETY: the closure only calls async-signal-safe functions (dup2, fcntl) on file
            // descriptors that stay open in the parent until spawn returns.
            unsafe {
                command.pre_exec(move || {
                    let result = if write_fd == READY_FD {
                        libc::fcntl(READY_FD, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(write_fd, READY_FD)
                    };
                    if result < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            ready = Some(File::from(read_end));
            ready_write = Some(write_end);
        }

        let command_line = format!("{} {}", spec.program.display(), spec.args.join(" "));
        let child = command.spawn().map_err(|e| NetnsError::Spawn {
            command: command_line.clone(),
            source: e,
        })?;
        drop(ready_write);
        let pidfd = pidfd_open(child.id())
            .map_err(|e| NetnsError::io(format!("pidfd_open for {command_line}"), e))?;
        Ok(NsProcess {
            name: spec.name,
            namespace: ns.name.clone(),
            child,
            pidfd,
            log_path,
            ready,
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The process id (`ip netns exec` execs the program, so this is the program's pid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Waits until `fd` is readable or the process has exited, at most `timeout`: whether `fd`
    /// is readable, and whether the process exited (reaped if so).
    pub fn wait_readable_or_exit(
        &mut self,
        fd: i32,
        timeout: Duration,
    ) -> Result<(bool, bool), NetnsError> {
        if self.status.is_some() {
            return Ok((false, true));
        }
        let (readable, exited) =
            poll_two(fd, self.pidfd.as_raw_fd(), timeout).map_err(|e| NetnsError::io("poll", e))?;
        if exited {
            self.wait()?;
        }
        Ok((readable, exited))
    }

    /// The captured stdout+stderr so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `signal` unless the process has already been reaped.
    pub fn signal(&self, signal: Signal) -> Result<(), NetnsError> {
        if self.status.is_some() {
            return Ok(());
        }
        // pidfd_send_signal cannot hit a recycled pid.
        // SAFETY: plain syscall on an fd we own; a null siginfo is allowed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(NetnsError::io(
                format!("signal {signal} to {}", self.name),
                err,
            ));
        }
        Ok(())
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) -> Result<ExitStatus, NetnsError> {
        self.signal(Signal::SIGKILL)?;
        self.wait()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, NetnsError> {
        self.signal(Signal::SIGTERM)?;
        match self.wait_timeout(grace)? {
            Some(status) => Ok(status),
            None => self.kill(),
        }
    }

    /// Blocks until the process exits.
    pub fn wait(&mut self) -> Result<ExitStatus, NetnsError> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self
            .child
            .wait()
            .map_err(|e| NetnsError::io(format!("wait for {}", self.name), e))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Waits for the exit (pidfd becomes readable) at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, NetnsError> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        if poll_readable(self.pidfd.as_raw_fd(), timeout)
            .map_err(|e| NetnsError::io("poll pidfd", e))?
        {
            return self.wait().map(Some);
        }
        Ok(None)
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.wait_timeout(Duration::ZERO), Ok(None))
    }

    /// The exit status if it exited, with the signal that killed it, for diagnostics.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Reads the first line the process writes to its readiness pipe (see
    /// [`SpawnSpec::ready_pipe`]). Fails if the process closes the pipe or exits first.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<String, NetnsError> {
        let Some(pipe) = self.ready.as_mut() else {
            return Err(NetnsError::NotReady {
                name: self.name.clone(),
                reason: "started without a readiness pipe",
                log: self.log_path.clone(),
            });
        };
        let deadline = Instant::now() + timeout;
        let mut line = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !poll_readable(pipe.as_raw_fd(), left).map_err(|e| NetnsError::io("poll", e))? {
                return Err(NetnsError::Timeout {
                    what: format!(
                        "{} to report ready (log {})",
                        self.name,
                        self.log_path.display()
                    ),
                    timeout,
                });
            }
            let mut buf = [0u8; 256];
            let n = pipe
                .read(&mut buf)
                .map_err(|e| NetnsError::io("read readiness pipe", e))?;
            if n == 0 {
                return Err(NetnsError::NotReady {
                    name: self.name.clone(),
                    reason: "closed its readiness pipe (or exited) first",
                    log: self.log_path.clone(),
                });
            }
            line.extend_from_slice(&buf[..n]);
            if let Some(end) = line.iter().position(|b| *b == b'\n') {
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
        }
    }

    /// Describes how the process ended, e.g. `killed by SIGKILL` or `exit 1`.
    pub fn describe_exit(&self) -> String {
        match self.status {
            None => "running".into(),
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exit {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => format!("{s}"),
            },
        }
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.signal(Signal::SIGKILL);
            let _ = self.wait();
        }
    }
}

/// Removes leftovers of this harness's earlier runs that crashed: for each marker
/// `/run/hav-tests/<prefix>.pid` whose prefix has the harness's shape and whose creating process
/// is gone (pid dead, or reused by a process with another start time), kills what runs in the
/// namespaces `<prefix>-*`, deletes them and the marker. Returns the deleted namespaces.
pub fn sweep_stale() -> Result<Vec<String>, NetnsError> {
    let entries = match fs::read_dir(MARKER_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetnsError::io(format!("read {MARKER_DIR}"), e)),
    };
    let mut removed = Vec::new();
    let existing = list_namespaces()?;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(prefix) = file_name.strip_suffix(".pid") else {
            continue;
        };
        if !RunPrefix::is_harness_prefix(prefix) {
            continue;
        }
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let Some(owner) = Marker::parse(&text) else {
            continue;
        };
        if owner.is_alive() {
            continue;
        }
        let start = format!("{prefix}-");
        for ns in existing.iter().filter(|ns| ns.starts_with(&start)) {
            delete_namespace(ns)?;
            removed.push(ns.clone());
        }
        let _ = fs::remove_file(entry.path());
    }
    Ok(removed)
}

/// Whether the run that owns `prefix` is alive: its marker exists and names a live process.
pub fn run_is_live(prefix: &str) -> bool {
    fs::read_to_string(Path::new(MARKER_DIR).join(format!("{prefix}.pid")))
        .ok()
        .and_then(|text| Marker::parse(&text))
        .is_some_and(|owner| owner.is_alive())
}

/// The names of all named namespaces (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>, NetnsError> {
    let out = run("ip", &["netns", "list"])?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The marker file content: the creating process's pid and its start time (field 22 of
/// `/proc/<pid>/stat`), so that a recycled pid is not mistaken for the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pid: u32,
    start_time: u64,
}

impl Marker {
    pub(crate) fn current() -> Result<Self, NetnsError> {
        let pid = std::process::id();
        let start_time = process_start_time(pid).ok_or_else(|| {
            NetnsError::io("read own /proc/self/stat", io::ErrorKind::NotFound.into())
        })?;
        Ok(Marker { pid, start_time })
    }

    pub(crate) fn render(&self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split_whitespace();
        let pid = fields.next()?.parse().ok()?;
        let start_time = fields.next()?.parse().ok()?;
        Some(Marker { pid, start_time })
    }

    fn is_alive(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }
}

fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3; the start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn delete_namespace(name: &str) -> Result<(), NetnsError> {
    if let Ok(out) = run("ip", &["netns", "pids", name]) {
        for pid in out
            .stdout
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    run("ip", &["netns", "del", name]).map(drop)
}

async fn wait_address_events(
    namespace: &str,
    addr: IpAddr,
    want: Presence,
) -> Result<(), NetnsError> {
    use rtnetlink::MulticastGroup;
    let (connection, handle, mut events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])
    .map_err(|e| NetnsError::io("netlink multicast socket", e))?;
    tokio::spawn(connection);
    // Subscribed before the dump: a change between dump and first event is still seen.
    let mut dump = handle.address().get().execute();
    let mut present = false;
    while let Some(message) = dump.next().await {
        let message = message.map_err(|e| netlink_error(namespace, e))?;
        present |= address_of(&message) == Some(addr);
    }
    if present == (want == Presence::Present) {
        return Ok(());
    }
    while let Some((message, _)) = events.next().await {
        let rtnetlink::packet_core::NetlinkPayload::InnerMessage(inner) = message.payload else {
            continue;
        };
        let now_present = match inner {
            RouteNetlinkMessage::NewAddress(m) if address_of(&m) == Some(addr) => true,
            RouteNetlinkMessage::DelAddress(m) if address_of(&m) == Some(addr) => false,
            _ => continue,
        };
        if now_present == (want == Presence::Present) {
            return Ok(());
        }
    }
    Err(NetnsError::Netlink {
        namespace: namespace.to_owned(),
        reason: "event stream ended".into(),
    })
}

async fn link_index(
    handle: &rtnetlink::Handle,
    namespace: &str,
    iface: &str,
) -> Result<u32, NetnsError> {
    let mut links = handle.link().get().match_name(iface.to_owned()).execute();
    match links.next().await {
        Some(Ok(link)) => Ok(link.header.index),
        Some(Err(e)) => Err(netlink_error(namespace, format!("link {iface}: {e}"))),
        None => Err(netlink_error(namespace, format!("no link {iface}"))),
    }
}

/// Whether an address is deprecated (preferred lifetime 0): a node that handed its VIP over keeps
/// it that way, serving its connections without claiming it.
pub(crate) fn is_deprecated(message: &AddressMessage) -> bool {
    use rtnetlink::packet_route::address::{AddressFlags, AddressHeaderFlags};
    message
        .header
        .flags
        .contains(AddressHeaderFlags::Deprecated)
        || message.attributes.iter().any(|attribute| {
            matches!(attribute, AddressAttribute::Flags(flags) if flags.contains(AddressFlags::Deprecated))
        })
}

/// The address an RTM_NEWADDR/RTM_DELADDR message is about: IFA_LOCAL for IPv4 (IFA_ADDRESS is
/// the peer on point-to-point links), IFA_ADDRESS for IPv6.
pub(crate) fn address_of(message: &AddressMessage) -> Option<IpAddr> {
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

fn netlink_error(namespace: &str, reason: impl fmt::Display) -> NetnsError {
    NetnsError::Netlink {
        namespace: namespace.to_owned(),
        reason: reason.to_string(),
    }
}

fn block_on<T>(
    namespace: &str,
    future: impl Future<Output = Result<T, NetnsError>>,
) -> Result<T, NetnsError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetnsError::io(format!("tokio runtime for {namespace}"), e))?
        .block_on(future)
}

fn join<T>(handle: JoinHandle<Result<T, NetnsError>>) -> Result<T, NetnsError> {
    handle.join().unwrap_or_else(|_| {
        Err(NetnsError::io(
            "namespace helper thread panicked",
            io::ErrorKind::Other.into(),
        ))
    })
}

pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success the returned fd is ours alone.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Polls one fd for readability; `Ok(false)` on timeout.
pub(crate) fn poll_readable(fd: i32, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up, so a sub-millisecond remainder still waits instead of spinning.
        let millis = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, millis) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(rc > 0);
    }
}

/// Waits until `a` or `b` is readable, at most `timeout`: whether each is.
fn poll_two(a: i32, b: i32, timeout: Duration) -> io::Result<(bool, bool)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        let mut fds = [a, b].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: two valid pollfds, count 2.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, millis) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let ready = |pfd: &libc::pollfd| pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0;
        return Ok((ready(&fds[0]), ready(&fds[1])));
    }
}

pub(crate) fn run(program: &str, args: &[&str]) -> Result<ExecOutput, NetnsError> {
    let out = output(program, args)?;
    check(&format!("{program} {}", args.join(" ")), out)
}

fn output(program: &str, args: &[&str]) -> Result<ExecOutput, NetnsError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetnsError::Spawn {
            command: format!("{program} {}", args.join(" ")),
            source: e,
        })?;
    Ok(ExecOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn check(command: &str, out: ExecOutput) -> Result<ExecOutput, NetnsError> {
    if out.success() {
        Ok(out)
    } else {
        Err(NetnsError::Command {
            command: command.to_owned(),
            status: out.status.to_string(),
            stderr: out.stderr.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_have_the_harness_shape_and_fit_ifnamsiz() {
        let prefix = RunPrefix::generate().expect("urandom readable");
        assert!(RunPrefix::is_harness_prefix(prefix.as_str()), "{prefix}");
        assert_eq!(prefix.name("12345678").expect("fits").len(), 15);
        assert!(matches!(
            prefix.name("123456789"),
            Err(NetnsError::NameTooLong(_))
        ));
        assert!(prefix.name("a b").is_err());
        assert!(!RunPrefix::is_harness_prefix("hABCDE"));
        assert!(!RunPrefix::is_harness_prefix("x12345"));
    }

    #[test]
    fn marker_round_trips_and_detects_own_process() {
        let me = Marker::current().expect("own stat readable");
        assert_eq!(Marker::parse(&me.render()), Some(me));
        assert!(me.is_alive());
        let recycled = Marker {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!recycled.is_alive());
    }
}
