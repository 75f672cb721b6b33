//! Watching one file through inotify on its directory, so that an atomic replace (write a
//! temporary file, rename it over the old one) is seen as well as an in-place write.
//!
//! Guarantees: [`FileWatch::changed`] returns after anything that can change what the file reads
//! as (closed after writing, renamed in or away, deleted, attributes changed, event queue
//! overflowed); a spurious return is possible, a missed change is not while the directory exists.
//! If the directory itself goes away, the watch is re-established by retrying every
//! [`REWATCH_INTERVAL`] (the only periodic part), after which `changed` returns.
//!
//! `IN_MODIFY` and `IN_CREATE` are deliberately not watched: they fire before the writer is done,
//! and reading then would report a half-written file.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How often a watch whose directory vanished tries to watch it again.
pub(crate) const REWATCH_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct FileWatch {
    inotify: AsyncFd<InotifyFd>,
    directory: PathBuf,
    file_name: OsString,
    watching: bool,
}

/// The directory watched for `path`, and the file's name in it.
fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_owned();
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((directory, file_name))
}

/// Whether a watch on `path` can start on this host (its directory exists); the reason if not.
/// Reads the host, changes nothing.
pub(crate) fn check_watchable(path: &Path) -> Result<(), String> {
    let (directory, _) =
        split(path).map_err(|error| format!("cannot watch {}: {error}", path.display()))?;
    match std::fs::metadata(&directory) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "cannot watch {}: {} is not a directory",
            path.display(),
            directory.display()
        )),
        Err(error) => Err(format!(
            "cannot watch {}: directory {}: {error}",
            path.display(),
            directory.display()
        )),
    }
}

impl FileWatch {
    pub(crate) fn new(path: &Path) -> io::Result<Self> {
        let (directory, file_name) = split(path)?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // SAFETY: `InotifyFd` owns the descriptor, keeps it open for as long as the `AsyncFd`
        // lives and always returns that same descriptor.
        let inotify =
            unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }?;
        let mut watch = Self {
            inotify,
            directory,
            file_name,
            watching: false,
        };
        watch.add_watch()?;
        Ok(watch)
    }

    fn add_watch(&mut self) -> io::Result<()> {
        let flags = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        self.inotify.get_ref().0.add_watch(&self.directory, flags)?;
        self.watching = true;
        Ok(())
    }

    /// Waits until the file may have changed.
    pub(crate) async fn changed(&mut self) -> io::Result<()> {
        loop {
            if !self.watching {
                tokio::time::sleep(REWATCH_INTERVAL).await;
                if self.add_watch().is_ok() {
                    return Ok(());
                }
                continue;
            }
            let mut ready = self.inotify.readable().await?;
            let events = match ready
                .try_io(|inotify| inotify.get_ref().0.read_events().map_err(io::Error::from))
            {
                Ok(events) => events?,
                Err(_would_block) => continue,
            };
            let mut changed = false;
            for event in events {
                if event.mask.intersects(
                    AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF
                        | AddWatchFlags::IN_UNMOUNT,
                ) {
                    // The directory is gone (or moved: its old path no longer leads to it).
                    tracing::warn!(directory = %self.directory.display(), "watched directory went away");
                    self.watching = false;
                    changed = true;
                } else if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                    || event.name.as_deref() == Some(self.file_name.as_os_str())
                {
                    changed = true;
                }
            }
            if changed {
                return Ok(());
            }
        }
    }
}

/// Lets tokio poll the inotify descriptor (nix's `Inotify` is `AsFd` but not `AsRawFd`).
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}
