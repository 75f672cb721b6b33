//! Helpers shared by the tracker and hook tests: unique names, self-removing temporary
//! directories, awaiting events with a safety-net timeout, awaiting a process's exit by pidfd.
#![allow(dead_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hav_agent::track::{Health, TrackEvent};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// Safety net for every await in these tests; never reached when the code works.
pub const SAFETY_NET: Duration = Duration::from_secs(20);

/// `prefix` followed by 5 lowercase alphanumerics, different for every call in a run.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut seed = u64::from(nanos)
        ^ (u64::from(std::process::id()) << 32)
        ^ u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut name = prefix.to_owned();
    for _ in 0..5 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        name.push(char::from(
            ALPHABET[((seed >> 33) % ALPHABET.len() as u64) as usize],
        ));
    }
    name
}

/// A directory under the system temp dir, removed on drop (also when a test fails).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(unique("hav-track-"));
        std::fs::create_dir(&path).expect("create temp dir");
        // Readable and searchable by `nobody` for the run-as tests.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
            .expect("chmod temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes an executable script.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, body).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
        path
    }

    /// Creates a FIFO a script can report to (see [`read_fifo`]).
    pub fn fifo(&self, name: &str) -> PathBuf {
        let path = self.join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o666))
            .expect("mkfifo");
        // mkfifo applies the umask; `nobody` must be able to write too.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .expect("chmod fifo");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The next health a tracker reports.
pub async fn next_health(events: &mut mpsc::Receiver<TrackEvent>) -> Health {
    tokio::time::timeout(SAFETY_NET, events.recv())
        .await
        .expect("no track event within the safety net")
        .expect("tracker channel closed")
        .health
}

pub fn is_down(health: &Health) -> bool {
    matches!(health, Health::Down { .. })
}

pub fn down_reason(health: &Health) -> &str {
    match health {
        Health::Down { reason } => reason,
        other => panic!("expected Down, got {other:?}"),
    }
}

/// Reads what a writer puts into the FIFO until it closes it: blocks (off the runtime) until a
/// writer has opened and closed it, so it is an event, not a poll.
pub async fn read_fifo(path: &Path) -> String {
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(owned));
    match tokio::time::timeout(SAFETY_NET, read).await {
        Ok(read) => read.expect("FIFO reader task").expect("read FIFO"),
        Err(_) => {
            // Release the blocked reader (the runtime would wait for it forever), then fail.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path);
            panic!(
                "nothing written to {} within the safety net",
                path.display()
            );
        }
    }
}

/// Waits until process `pid` has exited (it may stay a zombie), through a pidfd.
pub async fn await_exit(pid: i32) {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(error) if error.raw_os_error() == Some(libc::ESRCH) => return,
        Err(error) => panic!("pidfd_open({pid}): {error}"),
    };
    // SAFETY: `Fd` owns the descriptor and always returns it.
    let fd = unsafe { AsyncFd::register_with_interest(Fd(fd), Interest::READABLE) }
        .expect("register pidfd");
    let ready = tokio::time::timeout(SAFETY_NET, fd.readable())
        .await
        .unwrap_or_else(|_| panic!("process {pid} still alive after the safety net"));
    drop(ready.expect("poll pidfd"));
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: the syscall takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

struct Fd(OwnedFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
