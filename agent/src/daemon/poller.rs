//! The event loop's own `epoll`: the VRRP sockets and a doorbell, and the engine's deadline as
//! the wait's limit.
//!
//! The daemon's thread blocks here, not in the async runtime: a turn that hears an advert or
//! meets the engine's deadline costs one `epoll_pwait2` and runs no scheduler, no reactor and no
//! timer wheel. The deadline is the wait's own limit, in nanoseconds, so a new deadline costs
//! no system call: a master's advert cycle is the wait and the send. The runtime drives
//! everything else (the control link, trackers, signals, netlink, hooks) on a worker thread of
//! its own. Whatever it has for the loop wakes the loop's [`Waker`], which rings the doorbell (an
//! `eventfd`); the loop then polls what can have woken it.
//!
//! Without `epoll_pwait2` (a kernel before 5.11, or a seccomp filter that predates it) the
//! wait falls back to `epoll_wait`'s milliseconds, rounded up: a deadline is then met up to a
//! millisecond late, never early.
//!
//! The sockets are level-triggered (each reported socket is read once, so a datagram costs no
//! second read that finds the socket drained), and so is the doorbell, read empty when it rang.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

/// What one wait found ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Something woke the loop's waker.
    Doorbell,
    /// The socket with this descriptor has datagrams.
    Socket(RawFd),
}

/// The loop's `epoll` and the doorbell its waker rings.
pub struct Poller {
    epoll: OwnedFd,
    doorbell: Arc<Doorbell>,
    waker: Waker,
    /// Whether the kernel has `epoll_pwait2`; false after it refused it once.
    precise: bool,
    /// The sockets registered, by [`crate::net::VrrpSocket::id`], and the generation of the
    /// socket set they were taken from.
    sockets: HashMap<u64, RawFd>,
    generation: Option<u64>,
    events: Vec<libc::epoll_event>,
}

/// The `eventfd` behind the loop's waker. A ring while one is pending writes nothing.
struct Doorbell {
    fd: OwnedFd,
    rung: AtomicBool,
}

impl Wake for Doorbell {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to the eventfd this struct owns. A full
            // counter (EAGAIN) means it is readable already, which is all a ring is for.
            unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }
}

impl Poller {
    /// An `epoll` with the doorbell in it.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscalls; each descriptor returned is owned from here on.
        let epoll = unsafe { owned(libc::epoll_create1(libc::EPOLL_CLOEXEC))? };
        let bell = unsafe { owned(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))? };
        let doorbell = Arc::new(Doorbell {
            fd: bell,
            rung: AtomicBool::new(false),
        });
        let poller = Self {
            epoll,
            waker: Waker::from(doorbell.clone()),
            doorbell,
            precise: true,
            sockets: HashMap::new(),
            generation: None,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 64],
        };
        poller.control(
            libc::EPOLL_CTL_ADD,
            poller.doorbell.fd.as_raw_fd(),
            libc::EPOLLIN,
        )?;
        Ok(poller)
    }

    /// A context whose waker rings the doorbell: for polling what the runtime drives.
    pub fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }

    /// Registers the sockets of `generation` (a no-op when it is the one registered): the new
    /// ones added, the ones gone removed.
    pub fn follow_sockets(
        &mut self,
        generation: u64,
        sockets: impl Iterator<Item = (u64, RawFd)>,
    ) -> io::Result<()> {
        if self.generation == Some(generation) {
            return Ok(());
        }
        let current: HashMap<u64, RawFd> = sockets.collect();
        // Removals first: a descriptor number freed by a closed socket may be a new one's.
        for (id, fd) in &self.sockets {
            if !current.contains_key(id) {
                // A closed descriptor left the set by itself (ENOENT, EBADF): nothing to undo.
                let _ = self.control(libc::EPOLL_CTL_DEL, *fd, 0);
            }
        }
        for (id, fd) in &current {
            if !self.sockets.contains_key(id) {
                self.control(libc::EPOLL_CTL_ADD, *fd, libc::EPOLLIN)?;
            }
        }
        self.sockets = current;
        self.generation = Some(generation);
        Ok(())
    }

    /// Blocks until something is ready or `timeout` passes (`None`: no limit); appends what is
    /// ready to `ready`, in the kernel's order. Never returns before `timeout` has passed
    /// unless something is ready or a signal's handler ran. A rung doorbell is reset here.
    pub fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<Ready>) -> io::Result<()> {
        let epoll = self.epoll.as_raw_fd();
        let mut waited = if self.precise {
            crate::sys::epoll_pwait2(epoll, &mut self.events, timeout)
        } else {
            crate::sys::epoll_wait(epoll, &mut self.events, milliseconds(timeout))
        };
        if self.precise
            && let Err(error) = &waited
            && matches!(error.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
        {
            tracing::debug!(%error, "no epoll_pwait2: deadlines are met to the millisecond");
            self.precise = false;
            waited = crate::sys::epoll_wait(epoll, &mut self.events, milliseconds(timeout));
        }
        let count = match waited {
            Ok(count) => count,
            // A signal's handler ran (the runtime's, on this thread): nothing is ready.
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(error) => return Err(error),
        };
        let found = &self.events[..count];
        for event in found {
            let fd = event.u64 as RawFd;
            ready.push(if fd == self.doorbell.fd.as_raw_fd() {
                self.reset_doorbell();
                Ready::Doorbell
            } else {
                Ready::Socket(fd)
            });
        }
        Ok(())
    }

    /// Whether waits are limited to the nanosecond (`epoll_pwait2`), not to the millisecond.
    #[cfg(test)]
    fn precise(&self) -> bool {
        self.precise
    }

    /// Drains the counter, then clears the ring flag. A ring up to the clear wrote nothing or
    /// was drained, but what it woke for happened before it, and the loop polls its sources
    /// after this; a ring after the clear writes again, so the next wait sees it. (Clearing
    /// first would let a ring between the two writes be drained with the flag left set: every
    /// later ring would then write nothing, and the doorbell would never sound again.)
    fn reset_doorbell(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from the eventfd we own; EAGAIN (a
        // ring that was already read) leaves it as it is.
        unsafe {
            libc::read(
                self.doorbell.fd.as_raw_fd(),
                count.as_mut_ptr().cast(),
                count.len(),
            )
        };
        self.doorbell.rung.store(false, Ordering::Release);
    }

    fn control(&self, op: libc::c_int, fd: RawFd, events: libc::c_int) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: fd as u64,
        };
        // SAFETY: the event outlives the call; the kernel checks the descriptors.
        let done = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if done < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// `epoll_wait`'s limit: milliseconds rounded up (waking before a deadline would only mean
/// waiting again), -1 for none.
fn milliseconds(timeout: Option<Duration>) -> libc::c_int {
    timeout.map_or(-1, |timeout| {
        libc::c_int::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
    })
}

/// Takes ownership of a descriptor a syscall returned, or its error.
///
/// # Safety
/// `fd` must be a fresh descriptor nothing else owns (or negative, for an error).
unsafe fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the caller passes a descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_waker_rings_the_doorbell_once_until_the_wait_resets_it() {
        let mut poller = Poller::new().expect("epoll");
        let waker = poller.context().waker().clone();
        let from_another_thread = std::thread::spawn(move || {
            waker.wake_by_ref();
            waker.wake_by_ref();
        });
        from_another_thread.join().expect("no panic");
        let mut ready = Vec::new();
        poller
            .wait(Some(Duration::from_secs(5)), &mut ready)
            .expect("wait");
        assert_eq!(ready, vec![Ready::Doorbell]);
        ready.clear();
        poller
            .wait(Some(Duration::from_millis(20)), &mut ready)
            .expect("wait");
        assert!(
            ready.is_empty(),
            "the doorbell rang twice for one wait: {ready:?}"
        );
        poller.context().waker().wake_by_ref();
        poller
            .wait(Some(Duration::from_secs(5)), &mut ready)
            .expect("wait");
        assert_eq!(
            ready,
            vec![Ready::Doorbell],
            "a ring after the reset is heard"
        );
    }

    #[test]
    fn a_ring_while_the_doorbell_is_reset_is_never_lost() {
        // Another thread rings without pause while this one waits and resets: whatever the
        // interleaving, every wait must see the doorbell. A ring swallowed by a reset that
        // also leaves the ring flag set would silence the doorbell for good.
        let mut poller = Poller::new().expect("epoll");
        let waker = poller.context().waker().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let ringer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    waker.wake_by_ref();
                }
            })
        };
        let mut ready = Vec::new();
        let mut lost = None;
        for round in 0..50_000 {
            ready.clear();
            poller
                .wait(Some(Duration::from_secs(1)), &mut ready)
                .expect("wait");
            if !ready.contains(&Ready::Doorbell) {
                lost = Some(round);
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        ringer.join().expect("no panic");
        assert_eq!(
            lost, None,
            "the doorbell went silent while it was being rung"
        );
    }

    #[test]
    fn a_limit_under_a_millisecond_is_waited_for_in_full_and_reports_nothing() {
        let mut poller = Poller::new().expect("epoll");
        let mut ready = Vec::new();
        for limit in [Duration::from_micros(1_500), Duration::from_millis(15)] {
            let start = Instant::now();
            poller.wait(Some(limit), &mut ready).expect("wait");
            assert!(ready.is_empty(), "{ready:?}");
            assert!(start.elapsed() >= limit, "woke before {limit:?}");
        }
        // This kernel (5.11 or later) has epoll_pwait2: the limit was not rounded.
        assert!(poller.precise(), "fell back to milliseconds");
    }

    #[test]
    fn the_fallback_rounds_a_limit_up_to_the_millisecond() {
        assert_eq!(milliseconds(None), -1);
        assert_eq!(milliseconds(Some(Duration::ZERO)), 0);
        assert_eq!(milliseconds(Some(Duration::from_nanos(1))), 1);
        assert_eq!(milliseconds(Some(Duration::from_micros(1_500))), 2);
        assert_eq!(milliseconds(Some(Duration::from_millis(7))), 7);
        assert_eq!(milliseconds(Some(Duration::MAX)), libc::c_int::MAX);
        let mut poller = Poller::new().expect("epoll");
        poller.precise = false;
        let mut ready = Vec::new();
        let start = Instant::now();
        poller
            .wait(Some(Duration::from_micros(1_500)), &mut ready)
            .expect("wait");
        assert!(ready.is_empty(), "{ready:?}");
        assert!(
            start.elapsed() >= Duration::from_millis(2),
            "not rounded up"
        );
    }
}
