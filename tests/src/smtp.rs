//! A real SMTP server for the agent's mail alerts: Debian's aiosmtpd (`python3-aiosmtpd`) in a
//! lab host, keeping every message it accepts in a Maildir under the lab's log directory, with
//! the envelope in `X-MailFrom` and `X-RcptTo` headers. Killed on drop (its [`NsProcess`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::netns::{NetnsError, NsProcess, SpawnSpec};
use crate::topology::Lab;

/// Debian's Python, where `python3-aiosmtpd` installs (a `python3` earlier on `PATH` may lack it).
const PYTHON: &str = "/usr/bin/python3";

#[derive(Debug)]
pub struct SmtpSink {
    process: NsProcess,
    maildir: PathBuf,
    pub address: SocketAddr,
}

impl SmtpSink {
    /// Starts aiosmtpd in `host` listening on `address`; returns once it listens.
    pub fn start(
        lab: &Lab,
        host: &str,
        address: SocketAddr,
        timeout: Duration,
    ) -> Result<SmtpSink, NetnsError> {
        let maildir = lab.log_dir().join(format!("smtp-{host}"));
        let spec = SpawnSpec::new(format!("smtp-{host}"), PYTHON).args([
            "-m".to_owned(),
            "aiosmtpd".to_owned(),
            "-n".to_owned(),
            "-d".to_owned(),
            "-l".to_owned(),
            address.to_string(),
            "-c".to_owned(),
            "aiosmtpd.handlers.Mailbox".to_owned(),
            maildir.display().to_string(),
        ]);
        let mut process = lab.spawn(host, spec)?;
        let log = process.log_path().to_owned();
        wait_until(&log, AddWatchFlags::IN_MODIFY, timeout, || {
            Ok(std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Server is listening"))
        })
        .map_err(|error| {
            let _ = process.kill();
            NetnsError::io(
                format!("aiosmtpd listening on {address}: {}", process.log()),
                error,
            )
        })?;
        Ok(SmtpSink {
            process,
            maildir,
            address,
        })
    }

    /// The messages received so far, as stored (headers, a blank line, the body).
    pub fn messages(&self) -> Vec<String> {
        let mut messages: Vec<(std::time::SystemTime, String)> =
            std::fs::read_dir(self.maildir.join("new"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|entry| {
                    let modified = entry.metadata().ok()?.modified().ok()?;
                    Some((modified, std::fs::read_to_string(entry.path()).ok()?))
                })
                .collect();
        messages.sort();
        messages.into_iter().map(|(_, text)| text).collect()
    }

    /// Waits until a received message satisfies `accept`; returns it.
    pub fn wait_message(
        &self,
        timeout: Duration,
        accept: impl Fn(&str) -> bool,
    ) -> Result<String, NetnsError> {
        let new = self.maildir.join("new");
        let mut found = None;
        wait_until(
            &new,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE,
            timeout,
            || {
                found = self.messages().into_iter().find(|text| accept(text));
                Ok(found.is_some())
            },
        )
        .map_err(|error| {
            NetnsError::io(
                format!(
                    "no such message among {:#?}\n(aiosmtpd log: {})",
                    self.messages(),
                    self.process.log()
                ),
                error,
            )
        })?;
        found.ok_or_else(|| NetnsError::io("message", std::io::ErrorKind::NotFound.into()))
    }
}

/// Checks `done` at once and after each `events` on `path`, until it holds or `timeout` passes.
fn wait_until(
    path: &Path,
    events: AddWatchFlags,
    timeout: Duration,
    mut done: impl FnMut() -> std::io::Result<bool>,
) -> std::io::Result<()> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(path, events)?;
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&inotify),
            nix::poll::PollFlags::POLLIN,
        )];
        let wait = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait))?;
        // Drained so that the next poll waits for a new event.
        while inotify.read_events().is_ok_and(|events| !events.is_empty()) {}
    }
}
