//! The system calls the event loop makes for every advert, made with `syscall(2)` rather than
//! through glibc's wrappers of the same name.
//!
//! glibc's `recv`, `sendmsg` and `epoll_wait` are thread-cancellation points: each switches the
//! thread to asynchronous cancellation and back around the call, for `pthread_cancel`, which
//! nothing in this process uses. For an idle agent that was as many instructions per advert as
//! the wrappers themselves. The calls, their arguments and their errors are the kernel's own;
//! only the wrapper differs.

use std::io;
use std::os::fd::RawFd;
use std::ptr;

/// A raw return value: the count, or the error `errno` holds.
fn count(ret: libc::c_long) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// `recv(2)` into `buf` (as `recvfrom(2)` with no address, which is what `recv` is). With
/// `MSG_TRUNC` the count is the datagram's real length, which may exceed `buf`.
pub fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the call; no address is asked
    // for, so the two null pointers are never written.
    count(unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            libc::c_long::from(fd),
            buf.as_mut_ptr(),
            buf.len(),
            libc::c_long::from(flags),
            ptr::null_mut::<libc::sockaddr>(),
            ptr::null_mut::<libc::socklen_t>(),
        )
    })
}

/// `sendmsg(2)`.
///
/// # Safety
/// Every pointer in `msg` (name, iovecs and their buffers, control data) is valid for reads of
/// its length for the call.
pub unsafe fn sendmsg(fd: RawFd, msg: &libc::msghdr, flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: the kernel only reads `msg` and what it points to, which the caller vouches for.
    count(unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            libc::c_long::from(fd),
            ptr::from_ref(msg),
            libc::c_long::from(flags),
        )
    })
}

/// `epoll_wait(2)` (as `epoll_pwait(2)` with no signal mask, which every architecture has):
/// fills the front of `events`, and returns how many it filled. `timeout_ms` -1 waits without
/// a limit.
pub fn epoll_wait(
    epfd: RawFd,
    events: &mut [libc::epoll_event],
    timeout_ms: libc::c_int,
) -> io::Result<usize> {
    let capacity = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `events` holds `capacity` entries for the kernel to write; a null mask leaves the
    // signal mask alone.
    count(unsafe {
        libc::syscall(
            libc::SYS_epoll_pwait,
            libc::c_long::from(epfd),
            events.as_mut_ptr(),
            libc::c_long::from(capacity),
            libc::c_long::from(timeout_ms),
            ptr::null::<libc::sigset_t>(),
            0usize,
        )
    })
}

/// `epoll_pwait2(2)` with no signal mask: as [`epoll_wait`], with the limit in nanoseconds
/// (`None` waits without one). The kernel lets a sleep end up to its timer slack late (0.1 % of
/// the wait, at least the thread's slack of 50 µs; none under a real-time class), as every timed
/// sleep may. Kernels before 5.11 lack it (`ENOSYS`), and a seccomp filter written before it may
/// refuse it (`EPERM`).
pub fn epoll_pwait2(
    epfd: RawFd,
    events: &mut [libc::epoll_event],
    timeout: Option<std::time::Duration>,
) -> io::Result<usize> {
    let capacity = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
    let limit = timeout.map(|timeout| libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    });
    let limit = limit.as_ref().map_or(ptr::null(), ptr::from_ref);
    // SAFETY: `events` holds `capacity` entries for the kernel to write; `limit` is null or
    // points to a timespec that outlives the call; a null mask leaves the signal mask alone.
    count(unsafe {
        libc::syscall(
            libc::SYS_epoll_pwait2,
            libc::c_long::from(epfd),
            events.as_mut_ptr(),
            libc::c_long::from(capacity),
            limit,
            ptr::null::<libc::sigset_t>(),
            0usize,
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    use super::*;

    #[test]
    fn recv_reports_the_real_length_of_a_truncated_datagram_and_errors_from_errno() {
        let (a, b) = UnixDatagram::pair().expect("socketpair");
        b.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 4];
        let error = recv(b.as_raw_fd(), &mut buf, 0).expect_err("nothing queued");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        a.send(b"abcdefgh").expect("send");
        assert_eq!(
            recv(b.as_raw_fd(), &mut buf, libc::MSG_TRUNC).expect("recv"),
            8
        );
        assert_eq!(&buf, b"abcd");
    }

    #[test]
    fn sendmsg_gathers_and_epoll_wait_reports_the_readable_descriptor() {
        let (a, b) = UnixDatagram::pair().expect("socketpair");
        // SAFETY: plain descriptor calls on an epoll instance this test owns.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epoll >= 0);
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        // SAFETY: as above; `event` outlives the call.
        let added =
            unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, b.as_raw_fd(), &mut event) };
        assert_eq!(added, 0);
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        assert_eq!(
            epoll_wait(epoll, &mut events, 0).expect("wait"),
            0,
            "nothing yet"
        );
        let (head, tail) = (*b"ab", *b"cde");
        let mut iov = [
            libc::iovec {
                iov_base: head.as_ptr().cast_mut().cast(),
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: tail.as_ptr().cast_mut().cast(),
                iov_len: tail.len(),
            },
        ];
        // SAFETY: zeroed is a valid empty message header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        // SAFETY: the iovecs and their buffers outlive the call.
        assert_eq!(
            unsafe { sendmsg(a.as_raw_fd(), &msg, 0) }.expect("sendmsg"),
            5
        );
        assert_eq!(epoll_wait(epoll, &mut events, 1000).expect("wait"), 1);
        let ready = events[0].u64;
        assert_eq!(ready, 7);
        let mut buf = [0u8; 8];
        assert_eq!(recv(b.as_raw_fd(), &mut buf, 0).expect("recv"), 5);
        assert_eq!(&buf[..5], b"abcde");
        // SAFETY: the descriptor is this test's and closed once.
        unsafe { libc::close(epoll) };
    }
}
