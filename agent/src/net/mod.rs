//! The agent's network IO: VRRP raw sockets, VIPs through rtnetlink, the crash-safe VIP journal,
//! gratuitous ARP / unsolicited neighbour advertisements, and hav's nftables table.
//!
//! Everything here acts on the network namespace of the thread that created it (for [`nft`]: of
//! the thread that runs the `nft` program), never parses VRRP (the `hav-vrrp` codec does), and
//! reports malformed input as values to count rather than errors or panics. Idempotence is the rule for VIPs: adding a present address or removing an
//! absent one succeeds.
//!
//! How the daemon uses it: on start, [`JournaledVips::recover`] (before any VRRP instance runs);
//! one [`VrrpSocket`] per (interface, family, mode), shared by the instances on it and read in a
//! loop that hands [`Received::Datagram`] payloads to the codec by VRID and counts the rest; the
//! engine's "add/remove VIPs" actions go to [`JournaledVips::add`] / [`JournaledVips::remove`],
//! its "announce" actions to [`Announcer::announce`]; the VIPs of instances without accept mode
//! are filtered ahead of need with [`Firewall::block`] / [`Firewall::unblock`] (hav's own
//! nftables tables, [`nft`]), and the virtual servers of the instances this node is master of
//! are programmed with [`Firewall::set_virtual_servers`].

pub mod announce;
pub mod batch;
pub mod hold;
pub mod journal;
pub mod nft;
pub mod routes;
pub mod rtnl;
pub mod sockdiag;
pub mod socket;
pub mod vip;
pub mod vmac;

pub use announce::{AnnounceError, Announcer};
pub use journal::{Corruption, JournalError, JournaledVips, NetworkEntries, Recovery, VipJournal};
pub use nft::{Firewall, HandoverApplier, NftError, TableName, TableRemoval};
pub use routes::{RouteError, RouteManager, RouteSpec, RuleSpec};
pub use socket::{
    Datagram, MalformedReason, Mode, Received, SocketError, SocketSpec, Stamped, VrrpSocket,
};
pub use vip::{Vip, VipError, VipManager};
pub use vmac::{Ensured, VmacError, VmacManager, VmacSpec};

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The index of interface `name` in the calling thread's network namespace.
pub(crate) fn interface_index(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(io::Error::from)
}

/// The index of interface `name` in the namespace of `socket` (any socket of a family that
/// leaves interface requests to the kernel's generic handler: packet, netlink, inet): one
/// `SIOCGIFINDEX`, where [`interface_index`] opens and closes a socket around it.
pub(crate) fn interface_index_on(socket: &impl AsRawFd, name: &str) -> io::Result<u32> {
    let mut request = interface_request(name)?;
    // SAFETY: SIOCGIFINDEX reads the NUL-terminated name of `request` and writes its
    // `ifru_ifindex`; `request` is live and exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFINDEX, &mut request) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful SIOCGIFINDEX wrote `ifru_ifindex`, the member read here.
    let index = unsafe { request.ifr_ifru.ifru_ifindex };
    u32::try_from(index).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// An interface request (`struct ifreq`) naming `name`, the rest zero; `ENODEV` for a name the
/// kernel cannot hold (too long, or with a NUL).
pub(crate) fn interface_request(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: `ifreq` is a plain C struct of integers, arrays and a union of them; all-zero is
    // valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    // The name must leave room for its terminating NUL.
    if bytes.len() >= request.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    for (to, from) in request.ifr_name.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    Ok(request)
}

/// A netlink socket of `protocol` (`NETLINK_ROUTE`, `NETLINK_SOCK_DIAG`, ...) in the calling
/// thread's network namespace, talking to the kernel (an unconnected netlink socket's default
/// destination).
pub(crate) fn netlink_socket(protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Registers `socket` with the tokio reactor of the current runtime.
pub(crate) fn register(
    socket: socket2::Socket,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<socket2::Socket>> {
    // SAFETY: `Socket` owns its file descriptor, and nothing here or in the callers replaces or
    // closes it while the `AsyncFd` owns the socket (it is only dropped together with it).
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(socket, interest) }
        .map_err(io::Error::from)
}

/// `setsockopt` for an option socket2 does not wrap.
pub(crate) fn setsockopt_raw<T>(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` is a live, initialised `T` for the duration of the call and `len` is its
    // exact size; the kernel only reads `len` bytes from it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
