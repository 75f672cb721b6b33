//! A real hav-coordinator process on loopback, as systemd runs it: its certificates made with
//! `havctl certs`, a `$NOTIFY_SOCKET` the test reads, signals, its exit status and its log.
//! Everything lives in a temp dir removed on drop (kept, and named, when the test panics); a
//! process still running on drop is killed.
//!
//! The coordinator listens on 127.0.0.1 port 0 and says where in the `STATUS=` that comes with
//! `READY=1`: no port is guessed, and a client that connects as soon as `READY=1` arrives
//! checks that the port was listening by then.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hav_proto::transport::{self, ClientTlsFiles};
use nix::sys::signal::Signal;

use crate::bench::sibling_binary;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The coordinator's certificate files, as `havctl certs issue` names them.
pub const CERT: &str = "coordinator-coord.pem";
pub const KEY: &str = "coordinator-coord.key";

/// A coordinator's directory (certificates, data, log, notify socket) and its process.
pub struct CoordinatorProcess {
    dir: PathBuf,
    notify: UnixDatagram,
    child: Option<Child>,
    starts: u32,
    /// Where the running coordinator listens (from its `READY=1` status).
    pub address: Option<SocketAddr>,
    /// Arguments of every start after the TLS files and `--data` (e.g. `--etcd URL`).
    pub args: Vec<String>,
    /// Environment of every start (e.g. `WATCHDOG_USEC`).
    pub env: Vec<(String, String)>,
}

impl CoordinatorProcess {
    /// A fleet CA, a coordinator certificate for 127.0.0.1, an operator (`olga`, role operator)
    /// and an agent (`lb-1`).
    pub fn new() -> Result<CoordinatorProcess, Error> {
        let dir = tempfile::Builder::new()
            .prefix("hav-coordinator-")
            .tempdir()?
            .keep();
        let notify = UnixDatagram::bind(dir.join("notify.sock"))?;
        let process = CoordinatorProcess {
            dir,
            notify,
            child: None,
            starts: 0,
            address: None,
            args: Vec::new(),
            env: Vec::new(),
        };
        std::fs::create_dir_all(process.certs())?;
        process.havctl_certs(&["init"])?;
        process.issue(&[
            "--kind",
            "coordinator",
            "--name",
            "coord",
            "--san",
            "127.0.0.1",
        ])?;
        process.issue(&["--kind", "operator", "--name", "olga", "--role", "operator"])?;
        process.issue(&["--kind", "agent", "--name", "lb-1"])?;
        Ok(process)
    }

    /// `havctl certs issue --dir <certs> ARGS`.
    pub fn issue(&self, args: &[&str]) -> Result<(), Error> {
        let mut all = vec!["issue"];
        all.extend_from_slice(args);
        self.havctl_certs(&all)
    }

    fn havctl_certs(&self, args: &[&str]) -> Result<(), Error> {
        let certs = self.certs();
        let out = Command::new(sibling_binary("havctl")?)
            .arg("certs")
            .arg(args[0])
            .arg("--dir")
            .arg(&certs)
            .args(&args[1..])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "havctl certs {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(())
    }

    /// The directory of the certificates (`ca.pem`, `<kind>-<name>.pem`/`.key`).
    pub fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// The run's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The redb data directory (`--data`).
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The log of start number `start` (0 is the first).
    pub fn log_path(&self, start: u32) -> PathBuf {
        self.dir.join(format!("coordinator-{start}.log"))
    }

    /// The log of the current (or last) start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts.saturating_sub(1))).unwrap_or_default()
    }

    /// Starts hav-coordinator on 127.0.0.1 port 0 with `$NOTIFY_SOCKET` set and waits for its
    /// `READY=1`, which must carry `STATUS=serving on ADDRESS`.
    pub fn start(&mut self) -> Result<SocketAddr, Error> {
        // Notifications of an earlier run are not this one's.
        self.notify.set_nonblocking(true)?;
        let mut buffer = [0u8; 512];
        while self.notify.recv(&mut buffer).is_ok() {}
        self.notify.set_nonblocking(false)?;

        let log = std::fs::File::create(self.log_path(self.starts))?;
        let certs = self.certs();
        let child = Command::new(sibling_binary("hav-coordinator")?)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--cert")
            .arg(certs.join(CERT))
            .arg("--key")
            .arg(certs.join(KEY))
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .arg("--data")
            .arg(self.data())
            .args(&self.args)
            .env("NOTIFY_SOCKET", self.dir.join("notify.sock"))
            .env("RUST_LOG", "info,hav_coordinator=debug")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        self.starts += 1;
        let ready = self.notification(Duration::from_secs(30))?;
        let address = ready
            .lines()
            .find_map(|line| line.strip_prefix("STATUS=serving on "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|address| address.parse().ok())
            .filter(|_| ready.lines().any(|line| line == "READY=1"))
            .ok_or_else(|| {
                format!(
                    "expected READY=1 with STATUS=serving on ADDRESS, got {ready:?}\n{}",
                    self.log()
                )
            })?;
        self.address = Some(address);
        Ok(address)
    }

    /// The next datagram on the notify socket, within `timeout`.
    pub fn notification(&self, timeout: Duration) -> Result<String, Error> {
        self.notify.set_read_timeout(Some(timeout))?;
        let mut buffer = [0u8; 512];
        let length = self.notify.recv(&mut buffer).map_err(|e| {
            format!(
                "no notification within {timeout:?} ({e}); log:\n{}",
                self.log()
            )
        })?;
        Ok(String::from_utf8_lossy(&buffer[..length]).into_owned())
    }

    /// Sends `signal` to the running coordinator.
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        let child = self
            .child
            .as_ref()
            .ok_or("the coordinator is not running")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, signal)?;
        Ok(())
    }

    /// The running coordinator's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for the coordinator to exit (at most `timeout`; then it is killed and that is an
    /// error).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let mut child = self.child.take().ok_or("the coordinator is not running")?;
        let pidfd = crate::netns::pidfd_open(child.id())?;
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&pidfd),
            nix::poll::PollFlags::POLLIN,
        )];
        let wait = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait))?;
        match child.try_wait()? {
            Some(status) => Ok(status),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "the coordinator did not exit within {timeout:?}; log:\n{}",
                    self.log()
                )
                .into())
            }
        }
    }

    /// Waits until the current log contains `needle` `count` times (re-read every 20 ms).
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> Result<(), Error> {
        let path = self.log_path(self.starts.saturating_sub(1));
        crate::fleet::wait_file_count(&path, needle, count, timeout)
    }

    /// A client TLS config with the certificate `<stem>.pem` (e.g. `operator-olga`).
    pub fn client_tls(&self, stem: &str) -> Result<Arc<rustls::ClientConfig>, Error> {
        let certs = self.certs();
        Ok(transport::client_config(&ClientTlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join(format!("{stem}.pem")),
            key: certs.join(format!("{stem}.key")),
        })?)
    }

    /// A gRPC channel to the running coordinator with the certificate `<stem>.pem`.
    pub async fn channel(&self, stem: &str) -> Result<tonic::transport::Channel, Error> {
        let address = self.address.ok_or("the coordinator is not running")?;
        Ok(transport::connect(&address.to_string(), self.client_tls(stem)?).await?)
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() || std::env::var_os("HAV_TESTS_KEEP_LOGS").is_some() {
            eprintln!("coordinator run kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
