//! A stand-in for journald: a native-protocol socket bound by the test, and a way to start a
//! program (in a lab host) that finds that socket at `/run/systemd/journal/socket`.
//!
//! The program runs in a private mount namespace (`unshare --mount --propagation private`) where
//! a tmpfs covers `/run/systemd/journal` (or `/run/systemd`, or `/run`, whichever exists first)
//! and the test's socket is bind-mounted onto `/run/systemd/journal/socket`. Nothing is mounted
//! in the host's namespace and the host's journal socket is never reached. Entries are decoded
//! with [`hav_proto::logging::journald::decode`]; an entry passed as a memfd (`SCM_RIGHTS`) is
//! read from it.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::netns::SpawnSpec;

/// Mounts the journal socket `$1` at `/run/systemd/journal/socket`, then runs the rest.
const MOUNT_SCRIPT: &str = r#"set -e
socket="$1"; shift
if [ -d /run/systemd/journal ]; then top=/run/systemd/journal
elif [ -d /run/systemd ]; then top=/run/systemd
else top=/run; fi
mount -t tmpfs -o mode=0755 hav-test-journal "$top"
mkdir -p /run/systemd/journal
: > /run/systemd/journal/socket
mount --bind "$socket" /run/systemd/journal/socket
exec "$@"
"#;

/// One journal entry as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The fields in order (a name may repeat).
    pub fields: Vec<(String, Vec<u8>)>,
    /// Whether it came in a memfd rather than in the datagram.
    pub via_memfd: bool,
}

impl JournalEntry {
    /// The first value of `name`, as text.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// How many times `name` occurs.
    pub fn count(&self, name: &str) -> usize {
        self.fields.iter().filter(|(n, _)| n == name).count()
    }

    /// `MESSAGE`, or "".
    pub fn message(&self) -> &str {
        self.get("MESSAGE").unwrap_or_default()
    }

    /// `PRIORITY` as a number.
    pub fn priority(&self) -> Option<u8> {
        self.get("PRIORITY")?.parse().ok()
    }
}

/// The socket a program under test logs to instead of journald.
#[derive(Debug)]
pub struct FakeJournal {
    path: PathBuf,
    socket: UnixDatagram,
}

impl FakeJournal {
    /// Binds `dir/journal.socket`.
    pub fn bind(dir: &Path) -> io::Result<FakeJournal> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("journal.socket");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path)?;
        Ok(FakeJournal { path, socket })
    }

    /// Wraps `spec` so that its program runs where `/run/systemd/journal/socket` is this socket.
    pub fn wrap(&self, spec: SpawnSpec) -> SpawnSpec {
        let mut args = vec![
            "--mount".to_owned(),
            "--propagation".to_owned(),
            "private".to_owned(),
            "sh".to_owned(),
            "-c".to_owned(),
            MOUNT_SCRIPT.to_owned(),
            "sh".to_owned(),
            self.path.display().to_string(),
            spec.program.display().to_string(),
        ];
        args.extend(spec.args);
        SpawnSpec {
            program: PathBuf::from("unshare"),
            args,
            ..spec
        }
    }

    /// The next entry with at least one field (journald's empty probes are skipped), or `None`
    /// if none came within `timeout`.
    pub fn next(&self, timeout: Duration) -> io::Result<Option<JournalEntry>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left))?;
            match self.receive()? {
                Some(entry) if entry.fields.is_empty() => continue,
                other => return Ok(other),
            }
        }
    }

    /// Receives entries until one satisfies `accept`; returns every entry received, that one
    /// last. A timeout is an error that lists what did arrive.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&JournalEntry) -> bool,
    ) -> io::Result<Vec<JournalEntry>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left)? {
                Some(entry) => {
                    let done = accept(&entry);
                    seen.push(entry);
                    if done {
                        return Ok(seen);
                    }
                }
                None => {
                    let messages: Vec<&str> = seen.iter().map(JournalEntry::message).collect();
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no journal entry {what} within {timeout:?}; got {messages:#?}"),
                    ));
                }
            }
        }
    }

    /// The entries already queued (with fields), without waiting.
    pub fn drain(&self) -> io::Result<Vec<JournalEntry>> {
        self.socket.set_nonblocking(true)?;
        let mut entries = Vec::new();
        let result = loop {
            match self.receive() {
                Ok(Some(entry)) if entry.fields.is_empty() => {}
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => break Ok(entries),
                Err(error) => break Err(error),
            }
        };
        self.socket.set_nonblocking(false)?;
        result
    }

    /// One datagram, `None` when none is there (timeout or non-blocking).
    fn receive(&self) -> io::Result<Option<JournalEntry>> {
        // The agent's datagrams are far smaller; a larger entry comes as a memfd.
        let mut buf = vec![0u8; 256 * 1024];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let (len, fd) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let message = match recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(message) => message,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(errno) => return Err(errno.into()),
            };
            let fd = message
                .cmsgs()
                .map_err(io::Error::from)?
                .find_map(|cmsg| match cmsg {
                    ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                    _ => None,
                });
            (message.bytes, fd)
        };
        let (payload, via_memfd) = match fd {
            Some(fd) => {
                // SAFETY: the kernel just installed this descriptor in our table; nothing else
                // owns it.
                let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                let size = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
                let mut payload = vec![0u8; size];
                file.read_exact_at(&mut payload, 0)?;
                (payload, true)
            }
            None => (buf[..len].to_vec(), false),
        };
        let fields = hav_proto::logging::journald::decode(&payload)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        Ok(Some(JournalEntry { fields, via_memfd }))
    }
}

impl Drop for FakeJournal {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
