//! Datagrams of a holding socket read many at a time: one `recvmmsg(2)` takes what a backup's
//! kernel held since the last turn (a few adverts), and each comes with its arrival stamp and
//! the socket's drop count, read from its control messages here rather than through a
//! control-message iterator that decodes every kind.
//!
//! Nothing read can make this panic: a control message that is short, or runs past what the
//! kernel wrote, ends the walk; a datagram longer than its slot is reported truncated.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime};

use hav_vrrp::Family;

use super::socket::{MalformedReason, RawReceived, ipv4_source, raw_v4, raw_v6};

/// Datagrams one read takes at most; a fuller queue takes more reads.
pub const BATCH: usize = 8;
/// Room for one datagram: any advert a filter can hold is shorter.
const DATAGRAM_LEN: usize = 1536;
/// Room for one datagram's control messages: a stamp, a drop count, a hop limit and a packet
/// info, each aligned.
const CONTROL_LEN: usize = 128;

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL_LEN]);

/// What the kernel said of one datagram of the last read.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    len: usize,
    flags: libc::c_int,
    control_len: usize,
    name_len: libc::socklen_t,
}

/// The buffers of one `recvmmsg(2)`, reused from read to read.
pub struct Batch {
    data: Box<[[u8; DATAGRAM_LEN]; BATCH]>,
    control: Box<[Control; BATCH]>,
    names: Box<[libc::sockaddr_in6; BATCH]>,
    slots: [Slot; BATCH],
    count: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            data: Box::new([[0; DATAGRAM_LEN]; BATCH]),
            control: Box::new([Control([0; CONTROL_LEN]); BATCH]),
            // SAFETY: sockaddr_in6 is plain data; all zeroes is a valid value.
            names: Box::new(unsafe { std::mem::zeroed() }),
            slots: [Slot::default(); BATCH],
            count: 0,
        }
    }
}

/// One datagram taken from a [`Batch`].
pub(crate) struct Taken {
    pub(crate) raw: RawReceived,
    pub arrived: Option<SystemTime>,
    pub dropped: Option<u32>,
}

impl Batch {
    /// How many datagrams the last read took.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last read took none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Reads up to `limit` (at most [`BATCH`]) queued datagrams of `fd` without waiting; how
    /// many (0 when none was queued).
    pub fn recv(&mut self, fd: RawFd, limit: usize) -> io::Result<usize> {
        let wanted = limit.clamp(1, BATCH);
        // SAFETY: iovec and mmsghdr are plain data; all zeroes is a valid value of each.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for index in 0..wanted {
            iov[index] = libc::iovec {
                iov_base: self.data[index].as_mut_ptr().cast(),
                iov_len: DATAGRAM_LEN,
            };
            let header = &mut headers[index].msg_hdr;
            header.msg_name = std::ptr::from_mut(&mut self.names[index]).cast();
            header.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            header.msg_iov = &mut iov[index];
            header.msg_iovlen = 1;
            header.msg_control = self.control[index].0.as_mut_ptr().cast();
            header.msg_controllen = CONTROL_LEN as _;
        }
        self.count = 0;
        // SAFETY: each header points at buffers of this batch that live through the call, with
        // their lengths; the kernel writes no more than those, and a null timeout is allowed.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_recvmmsg,
                libc::c_long::from(fd),
                headers.as_mut_ptr(),
                wanted,
                libc::c_long::from(libc::MSG_DONTWAIT),
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        let count = match usize::try_from(ret) {
            Ok(count) => count.min(wanted),
            Err(_) => {
                let error = io::Error::last_os_error();
                return match error.kind() {
                    io::ErrorKind::WouldBlock => Ok(0),
                    _ => Err(error),
                };
            }
        };
        // `msg_controllen` is a `size_t` in glibc and a `socklen_t` in other C libraries.
        #[allow(clippy::unnecessary_cast)]
        for (slot, header) in self.slots.iter_mut().zip(&headers).take(count) {
            *slot = Slot {
                len: header.msg_len as usize,
                flags: header.msg_hdr.msg_flags,
                control_len: (header.msg_hdr.msg_controllen as usize).min(CONTROL_LEN),
                name_len: header.msg_hdr.msg_namelen,
            };
        }
        self.count = count;
        Ok(count)
    }

    /// The datagram at `index` of the last read, for a socket of `family`: its bytes copied to
    /// the front of `buf` (the payload range of a datagram points there), its addresses, and
    /// what its control messages said.
    pub(crate) fn take(&self, index: usize, family: Family, buf: &mut [u8]) -> Option<Taken> {
        let slot = self.slots.get(index).filter(|_| index < self.count)?;
        let copied = slot.len.min(DATAGRAM_LEN).min(buf.len());
        buf[..copied].copy_from_slice(&self.data[index][..copied]);
        let packet = &buf[..copied];
        let mut control = Decoded::default();
        for (level, kind, data) in messages(&self.control[index].0[..slot.control_len]) {
            control.read(level, kind, data);
        }
        let truncated = slot.flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || copied < slot.len;
        let v6_src = (slot.name_len as usize >= size_of::<libc::sockaddr_in6>())
            .then(|| IpAddr::V6(Ipv6Addr::from(self.names[index].sin6_addr.s6_addr)));
        let raw = match family {
            _ if truncated => RawReceived::Malformed {
                src: match family {
                    Family::V4 => ipv4_source(packet).map(IpAddr::V4),
                    Family::V6 => v6_src,
                },
                reason: MalformedReason::Truncated,
            },
            Family::V4 => raw_v4(packet),
            Family::V6 => raw_v6(v6_src, control.destination, control.hop_limit, copied),
        };
        Some(Taken {
            raw,
            arrived: control.arrived,
            dropped: control.dropped,
        })
    }
}

/// What one datagram's control messages said.
#[derive(Debug, Default)]
struct Decoded {
    arrived: Option<SystemTime>,
    dropped: Option<u32>,
    hop_limit: Option<u8>,
    destination: Option<Ipv6Addr>,
}

impl Decoded {
    fn read(&mut self, level: libc::c_int, kind: libc::c_int, data: &[u8]) {
        match (level, kind) {
            (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS) => {
                if let Some(stamp) = value::<libc::timespec>(data) {
                    let since = u64::try_from(stamp.tv_sec)
                        .ok()
                        .zip(u32::try_from(stamp.tv_nsec).ok())
                        .map(|(seconds, nanos)| Duration::new(seconds, nanos));
                    self.arrived =
                        since.and_then(|since| SystemTime::UNIX_EPOCH.checked_add(since));
                }
            }
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => self.dropped = value::<u32>(data),
            (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                self.hop_limit =
                    value::<libc::c_int>(data).and_then(|limit| u8::try_from(limit).ok());
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                self.destination = value::<libc::in6_pktinfo>(data)
                    .map(|info| Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            _ => {}
        }
    }
}

/// A `T` read from the front of `data`, if it holds one.
fn value<T: Copy>(data: &[u8]) -> Option<T> {
    // SAFETY: `data` holds at least `size_of::<T>()` bytes (checked), read unaligned; the `T`s
    // read here are plain C data, valid for any bytes.
    (data.len() >= size_of::<T>()).then(|| unsafe { data.as_ptr().cast::<T>().read_unaligned() })
}

/// The control messages in `control`: level, type and data of each, until one does not fit.
fn messages(control: &[u8]) -> impl Iterator<Item = (libc::c_int, libc::c_int, &[u8])> {
    const ALIGN: usize = size_of::<usize>();
    let header = size_of::<libc::cmsghdr>();
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = control.get(at..)?;
        let head = rest.get(..header)?;
        let len = usize::from_ne_bytes(head.get(..ALIGN)?.try_into().ok()?);
        let level = libc::c_int::from_ne_bytes(head.get(ALIGN..ALIGN + 4)?.try_into().ok()?);
        let kind = libc::c_int::from_ne_bytes(head.get(ALIGN + 4..ALIGN + 8)?.try_into().ok()?);
        let data = rest.get(header..len.max(header))?;
        at += len.checked_next_multiple_of(ALIGN)?.max(header);
        Some((level, kind, data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control message as the kernel lays it out: header, data, padding to the alignment.
    fn message(level: libc::c_int, kind: libc::c_int, data: &[u8]) -> Vec<u8> {
        let header = size_of::<libc::cmsghdr>();
        let len = header + data.len();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&len.to_ne_bytes());
        bytes.extend_from_slice(&level.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.resize(header, 0);
        bytes.extend_from_slice(data);
        bytes.resize(len.next_multiple_of(size_of::<usize>()), 0);
        bytes
    }

    #[test]
    fn control_messages_are_read_in_order_with_their_data() {
        let mut control = message(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &7u32.to_ne_bytes());
        control.extend(message(
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPLIMIT,
            &255i32.to_ne_bytes(),
        ));
        let read: Vec<_> = messages(&control).collect();
        assert_eq!(read.len(), 2);
        assert_eq!(
            read[0],
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &7u32.to_ne_bytes()[..])
        );
        let mut decoded = Decoded::default();
        for (level, kind, data) in read {
            decoded.read(level, kind, data);
        }
        assert_eq!(decoded.dropped, Some(7));
        assert_eq!(decoded.hop_limit, Some(255));
    }

    #[test]
    fn a_message_that_runs_past_the_end_or_is_cut_ends_the_walk() {
        let mut control = message(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &7u32.to_ne_bytes());
        let whole = control.len();
        control.extend(message(
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            &8u32.to_ne_bytes(),
        ));
        // The second message's length says more than there is.
        control[whole..whole + size_of::<usize>()].copy_from_slice(&999usize.to_ne_bytes());
        assert_eq!(messages(&control).count(), 1);
        // A header cut short.
        assert_eq!(messages(&control[..whole + 4]).count(), 1);
        // A length shorter than the header: read as no data, and the walk moves on.
        let mut short = message(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &[]);
        short[..size_of::<usize>()].copy_from_slice(&0usize.to_ne_bytes());
        assert_eq!(
            messages(&short).next().map(|(_, _, data)| data.len()),
            Some(0)
        );
        // Data too short for its kind is no value.
        let mut decoded = Decoded::default();
        decoded.read(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &[1, 2, 3]);
        assert_eq!(decoded.arrived, None);
    }
}
