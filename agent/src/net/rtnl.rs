//! Route-netlink requests carried out on the calling thread, for the requests a takeover makes
//! by the hundred (adding and removing addresses).
//!
//! Guarantees: one request is one `send` and one `recv` on a socket of this module's own. The
//! kernel handles an address request inside the `send`, so its acknowledgement is already
//! queued when `recv` reads it: no task, no other thread woken, whatever the runtime is doing.
//! A request's answer is matched by sequence number (anything else on the socket, such as the
//! late answer of a request that timed out, is skipped), and a missing answer fails the
//! request after [`ANSWER_TIMEOUT`] rather than hanging its caller.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;

/// How long a request waits for its answer before it fails with `TimedOut`.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Length of a netlink message header (`struct nlmsghdr`).
const HEADER_LEN: usize = 16;

/// What the kernel answered a request with, when it did not acknowledge it.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// The kernel refused the request; the errno is in [`RtnlError::errno`].
    #[error(transparent)]
    Refused(rtnetlink::Error),
    /// Sending, receiving or decoding failed (or no answer came in time).
    #[error(transparent)]
    Io(io::Error),
}

impl RtnlError {
    /// The errno the kernel refused the request with, positive (`EEXIST`, not `-EEXIST`).
    pub fn errno(&self) -> Option<i32> {
        match self {
            RtnlError::Refused(error) => super::vip::errno(error),
            RtnlError::Io(_) => None,
        }
    }
}

/// A `NETLINK_ROUTE` socket of its own, bound to a port the kernel picks.
#[derive(Debug)]
pub struct RtnlSocket {
    fd: OwnedFd,
    sequence: u32,
    /// Reused for every request and answer.
    buffer: Vec<u8>,
}

impl RtnlSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let fd = super::netlink_socket(libc::NETLINK_ROUTE)?;
        let timeout = libc::timeval {
            tv_sec: ANSWER_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        super::setsockopt_raw(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
        // An acknowledgement of a refused request carries the request's header only.
        super::setsockopt_raw(&fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, &1i32)?;
        Ok(RtnlSocket {
            fd,
            sequence: 0,
            buffer: vec![0; 8192],
        })
    }

    /// The index of interface `name` in the socket's namespace (see
    /// [`super::interface_index_on`]).
    pub fn interface_index(&self, name: &str) -> io::Result<u32> {
        super::interface_index_on(&self.fd, name)
    }

    /// Sends `message` with `flags` (besides `NLM_F_REQUEST | NLM_F_ACK`) and returns once the
    /// kernel acknowledged it, or with what it answered instead.
    pub fn acknowledged(&mut self, message: RouteNetlinkMessage, flags: u16) -> Answer {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        request.finalize();
        let len = request.buffer_len();
        if self.buffer.len() < len {
            self.buffer.resize(len, 0);
        }
        request.serialize(&mut self.buffer[..len]);
        self.send(len).map_err(RtnlError::Io)?;
        loop {
            let received = self.recv().map_err(RtnlError::Io)?;
            if let Some(answer) = answer_to(&self.buffer[..received], sequence)? {
                return answer;
            }
        }
    }

    fn send(&self, len: usize) -> io::Result<()> {
        loop {
            // SAFETY: sends the first `len` initialised bytes of `buffer` on a netlink socket,
            // to the kernel (the default destination of an unconnected netlink socket).
            let sent =
                unsafe { libc::send(self.fd.as_raw_fd(), self.buffer.as_ptr().cast(), len, 0) };
            if sent >= 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    fn recv(&mut self) -> io::Result<usize> {
        loop {
            // SAFETY: receives into `buffer`, at most its length.
            let received = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buffer.as_mut_ptr().cast(),
                    self.buffer.len(),
                    0,
                )
            };
            if received >= 0 {
                return Ok(received as usize);
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel within {ANSWER_TIMEOUT:?}"),
                    ));
                }
                _ => return Err(error),
            }
        }
    }
}

/// What the kernel answered one request: acknowledged, or refused.
type Answer = Result<(), RtnlError>;

/// The answer to request `sequence` among the messages of `datagram`: `None` if none of them
/// answers it; an error if the datagram cannot be read.
fn answer_to(datagram: &[u8], sequence: u32) -> Result<Option<Answer>, RtnlError> {
    let mut rest = datagram;
    while rest.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < HEADER_LEN || len > rest.len() {
            return Err(RtnlError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a netlink message of {len} bytes in a datagram of {}",
                    rest.len()
                ),
            )));
        }
        // `nlmsg_seq`, read before anything is decoded: what answers another request is skipped.
        if u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]) == sequence {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
                .map_err(|e| RtnlError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            return Ok(Some(match message.payload {
                NetlinkPayload::Error(error) if error.code.is_none() => Ok(()),
                NetlinkPayload::Error(error) => {
                    Err(RtnlError::Refused(rtnetlink::Error::NetlinkError(error)))
                }
                other => Err(RtnlError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an unexpected answer: {other:?}"),
                ))),
            }));
        }
        // Messages are 4-byte aligned.
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `NLMSG_ERROR` message answering `sequence` with `code` (0: an acknowledgement).
    fn error_message(sequence: u32, code: i32) -> Vec<u8> {
        let len = (HEADER_LEN + 4 + HEADER_LEN) as u32;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&len.to_ne_bytes());
        bytes.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        bytes.extend_from_slice(&0u16.to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.extend_from_slice(&[0; HEADER_LEN]); // the request's header, capped
        bytes
    }

    #[test]
    fn an_acknowledgement_of_the_request_is_success() {
        assert!(matches!(
            answer_to(&error_message(7, 0), 7),
            Ok(Some(Ok(())))
        ));
    }

    #[test]
    fn a_refusal_carries_the_kernels_errno() {
        match answer_to(&error_message(7, -libc::EEXIST), 7) {
            Ok(Some(Err(error))) => assert_eq!(error.errno(), Some(libc::EEXIST)),
            other => panic!("not a refusal: {other:?}"),
        }
    }

    #[test]
    fn answers_to_other_requests_are_skipped() {
        let mut datagram = error_message(6, -libc::ENODEV);
        datagram.extend(error_message(7, 0));
        assert!(matches!(answer_to(&datagram, 7), Ok(Some(Ok(())))));
        assert!(matches!(answer_to(&error_message(6, 0), 7), Ok(None)));
    }

    #[test]
    fn an_interface_index_read_on_the_socket_is_the_one_its_namespace_gives() {
        let socket = RtnlSocket::open().expect("a netlink socket");
        let lo = super::super::interface_index("lo").expect("loopback");
        assert_eq!(socket.interface_index("lo").expect("loopback"), lo);
        let missing = socket
            .interface_index("hav-no-such0")
            .expect_err("no such link");
        assert_eq!(missing.raw_os_error(), Some(libc::ENODEV));
        let too_long = socket
            .interface_index("a-name-of-16-byt")
            .expect_err("too long a name");
        assert_eq!(too_long.raw_os_error(), Some(libc::ENODEV));
    }

    #[test]
    fn a_message_longer_than_its_datagram_is_an_error_not_a_panic() {
        let mut datagram = error_message(7, 0);
        datagram[0] = 200;
        assert!(matches!(answer_to(&datagram, 7), Err(RtnlError::Io(_))));
        // Shorter than a header: nothing to read.
        assert!(matches!(answer_to(&datagram[..10], 7), Ok(None)));
    }
}
