//! keepalived's notify FIFO: one line per state change, `INSTANCE "VI_1" MASTER 100` or
//! `GROUP "G1" BACKUP 0` (the state word is MASTER, BACKUP, FAULT or STOP; the last field is the
//! instance's priority, 0 for a group, as keepalived writes it).
//!
//! Guarantees: [`FifoWriter::write`] never blocks or awaits; lines are written in the order they
//! were given, each whole (a line is far below `PIPE_BUF`, so one `write` puts all of it in the
//! pipe or none). The agent holds the FIFO open for reading and writing, so a missing reader
//! never blocks the open, never raises `EPIPE` and never ends the agent: lines written while no
//! reader is attached wait in the pipe (64 KiB on Linux, some 1,500 lines) for the next reader,
//! then in the writer's queue ([`QUEUE_LINES`]); past that, new lines are dropped, counted and
//! logged once per run of drops.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::hooks::{HookState, StateChange};
use crate::track::Program;

/// Lines the writer holds beyond what the pipe holds.
pub const QUEUE_LINES: usize = 1024;

/// How long a stop waits for queued lines to reach the pipe (a FIFO nobody reads may never take
/// them).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How long the reader program has to exit after `SIGTERM` before its group is killed.
const SCRIPT_STOP_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FifoError {
    #[error("cannot create FIFO {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{path} exists and is not a FIFO")]
    NotAFifo { path: PathBuf },
    #[error("cannot open FIFO {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The line keepalived writes for `change`.
pub fn line(change: &StateChange) -> String {
    let state = match change.new {
        HookState::Master => "MASTER",
        HookState::Backup => "BACKUP",
        HookState::Fault => "FAULT",
        HookState::Stop | HookState::Init => "STOP",
    };
    format!(
        "{} \"{}\" {state} {}\n",
        change.kind.keyword(),
        change.name,
        change.priority.get()
    )
}

/// Creates the FIFO at `path` (mode 0600) unless one is there; refuses anything else there.
pub fn ensure_fifo(path: &Path) -> Result<(), FifoError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(FifoError::NotAFifo {
            path: path.to_owned(),
        }),
        Err(_) => match nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR) {
            // Created meanwhile by someone else: fine if it is a FIFO (checked at open).
            Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
            Err(source) => Err(FifoError::Create {
                path: path.to_owned(),
                source,
            }),
        },
    }
}

/// The writer: a task that owns the FIFO and writes what [`FifoWriter::write`] queues.
#[derive(Debug)]
pub struct FifoWriter {
    path: PathBuf,
    lines: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
    /// Set while lines are being dropped, so that a run of drops is logged once.
    dropping: AtomicBool,
    /// Gives the FIFO back once the queue is written.
    task: JoinHandle<Option<AsyncFd<Fd>>>,
    script: Option<ReaderScript>,
}

impl FifoWriter {
    /// Creates the FIFO if needed, opens it, starts the writer task and, if given, the reader
    /// program with the FIFO's path appended to its arguments (call from within a runtime).
    pub fn open(
        path: &Path,
        script: Option<&Program>,
        dropped: Arc<AtomicU64>,
    ) -> Result<Self, FifoError> {
        ensure_fifo(path)?;
        let open_error = |source| FifoError::Open {
            path: path.to_owned(),
            source,
        };
        // Read and write: the open never waits for a reader, and a write never meets EPIPE.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(open_error)?;
        let is_fifo = file.metadata().map_err(open_error)?.file_type().is_fifo();
        if !is_fifo {
            return Err(FifoError::NotAFifo {
                path: path.to_owned(),
            });
        }
        // SAFETY: `Fd` owns the descriptor, and nothing replaces or closes it while the
        // `AsyncFd` owns it (they are dropped together).
        let fd = unsafe {
            AsyncFd::register_with_interest(Fd(OwnedFd::from(file)), tokio::io::Interest::WRITABLE)
        }
        .map_err(|error| open_error(io::Error::from(error)))?;
        let (lines, queue) = mpsc::channel(QUEUE_LINES);
        let task = tokio::spawn(write_lines(fd, queue, path.to_owned()));
        let script = script.and_then(|program| ReaderScript::start(program, path));
        Ok(Self {
            path: path.to_owned(),
            lines,
            dropped,
            dropping: AtomicBool::new(false),
            task,
            script,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues the line for `change`; returns at once.
    pub fn write(&self, change: &StateChange) {
        match self.lines.try_send(line(change)) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!(fifo = %self.path.display(), "notify FIFO lines are written again");
                }
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        fifo = %self.path.display(),
                        "notify FIFO full (no reader?): lines dropped until it is read"
                    );
                }
            }
        }
    }

    /// Writes what is queued (waiting at most a second for a reader to make room); with a
    /// reader program, lets it read what the pipe holds (within the same second), then stops it.
    pub async fn close(self) {
        let Self {
            lines,
            mut task,
            script,
            path,
            ..
        } = self;
        drop(lines);
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        let fifo = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(fifo)) => fifo,
            Ok(Err(error)) => {
                tracing::error!(%error, "notify FIFO writer failed");
                None
            }
            Err(_) => {
                task.abort();
                tracing::warn!(fifo = %path.display(), "notify FIFO not read: lines still queued at stop were dropped");
                None
            }
        };
        if let Some(script) = script {
            if let Some(fifo) = fifo {
                wait_drained(&fifo, deadline).await;
            }
            script.stop().await;
        }
    }
}

/// tokio's `AsyncFd` wants `AsRawFd`.
#[derive(Debug)]
struct Fd(OwnedFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Waits until the pipe holds nothing more for its reader, or `deadline`. The kernel signals
/// no event for an emptied pipe, so this looks every 10 ms (only at stop, with a reader
/// program, for a second at most).
async fn wait_drained(fifo: &AsyncFd<Fd>, deadline: tokio::time::Instant) {
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one `c_int` through the pointer, which is valid for the call.
        let result =
            unsafe { libc::ioctl(fifo.get_ref().as_raw_fd(), libc::FIONREAD, &mut queued) };
        if result != 0 || queued == 0 || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn write_lines(
    fd: AsyncFd<Fd>,
    mut queue: mpsc::Receiver<String>,
    path: PathBuf,
) -> Option<AsyncFd<Fd>> {
    while let Some(line) = queue.recv().await {
        loop {
            let mut ready = match fd.writable().await {
                Ok(ready) => ready,
                Err(error) => {
                    tracing::error!(fifo = %path.display(), %error, "notify FIFO unusable; lines dropped");
                    return None;
                }
            };
            match ready.try_io(|fd| {
                nix::unistd::write(&fd.get_ref().0, line.as_bytes()).map_err(io::Error::from)
            }) {
                Ok(Ok(_)) => break,
                Ok(Err(error)) => {
                    tracing::warn!(fifo = %path.display(), %error, "notify FIFO line not written");
                    break;
                }
                // Full: wait until a reader makes room.
                Err(_would_block) => continue,
            }
        }
    }
    Some(fd)
}

/// keepalived's `notify_fifo_script`: a long-running program that reads the FIFO, in its own
/// process group, stopped with the agent.
#[derive(Debug)]
struct ReaderScript {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ReaderScript {
    fn start(program: &Program, fifo: &Path) -> Option<Self> {
        let prepared = match program.prepare() {
            Ok(prepared) => prepared,
            Err(error) => {
                tracing::error!(program = %program.path.display(), %error, "notify FIFO reader not started");
                return None;
            }
        };
        let fifo = fifo.display().to_string();
        let mut command = prepared.command([fifo.as_str()]);
        command
            .process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(program = %program.path.display(), %error, "notify FIFO reader not started");
                return None;
            }
        };
        let describe = prepared.describe();
        tracing::info!(program = %describe, %fifo, "notify FIFO reader started");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let group = child
                .id()
                .and_then(|pid| i32::try_from(pid).ok())
                .map(Pid::from_raw);
            tokio::select! {
                status = child.wait() => {
                    tracing::warn!(program = %describe, status = ?status, "notify FIFO reader exited; lines wait in the FIFO for another reader");
                }
                _ = stopped => {
                    if let Some(group) = group {
                        let _ = killpg(group, Signal::SIGTERM);
                    }
                    if tokio::time::timeout(SCRIPT_STOP_WAIT, child.wait()).await.is_err() {
                        if let Some(group) = group {
                            let _ = killpg(group, Signal::SIGKILL);
                        }
                        let _ = child.wait().await;
                    }
                }
            }
        });
        Some(Self { stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "notify FIFO reader task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::HookKind;
    use hav_vrrp::Priority;
    use std::io::Read;

    fn change(kind: HookKind, name: &str, new: HookState, priority: u8) -> StateChange {
        StateChange {
            kind,
            name: name.into(),
            old: HookState::Init,
            new,
            priority: Priority(priority),
            cause: "test".into(),
        }
    }

    #[test]
    fn lines_are_keepalived_s() {
        assert_eq!(
            line(&change(HookKind::Instance, "VI_1", HookState::Master, 100)),
            "INSTANCE \"VI_1\" MASTER 100\n"
        );
        assert_eq!(
            line(&change(HookKind::Group, "G1", HookState::Backup, 0)),
            "GROUP \"G1\" BACKUP 0\n"
        );
        assert_eq!(
            line(&change(HookKind::Instance, "VI_1", HookState::Fault, 0)),
            "INSTANCE \"VI_1\" FAULT 0\n"
        );
        assert_eq!(
            line(&change(HookKind::Instance, "VI_1", HookState::Stop, 100)),
            "INSTANCE \"VI_1\" STOP 100\n"
        );
    }

    #[tokio::test]
    async fn with_no_reader_lines_wait_then_drop_and_the_writer_never_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.fifo");
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = FifoWriter::open(&path, None, dropped.clone()).expect("open");
        let meta = std::fs::symlink_metadata(&path).expect("created");
        assert!(meta.file_type().is_fifo());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Far more than the pipe and the queue hold: `write` returns at once every time.
        let started = std::time::Instant::now();
        for index in 0..(QUEUE_LINES + 5_000) {
            writer.write(&change(
                HookKind::Instance,
                "VI_1",
                HookState::Backup,
                (index % 200) as u8,
            ));
            if index % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(dropped.load(Ordering::Relaxed) > 0, "nothing dropped");
        // A reader attaching later gets whole lines, the oldest first.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .expect("reader");
        let mut first = [0u8; 64];
        let read = reader.read(&mut first).expect("read");
        assert!(
            first[..read].starts_with(b"INSTANCE \"VI_1\" BACKUP 0\nINSTANCE \"VI_1\" BACKUP 1\n"),
            "{:?}",
            String::from_utf8_lossy(&first[..read])
        );
        writer.close().await;
    }

    #[test]
    fn a_file_in_the_way_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.fifo");
        std::fs::write(&path, b"").expect("file");
        assert!(matches!(
            ensure_fifo(&path),
            Err(FifoError::NotAFifo { .. })
        ));
    }
}
