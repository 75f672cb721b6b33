//! systemd's service notification protocol (`sd_notify(3)`), without libsystemd: datagrams such as
//! `READY=1` sent to the Unix socket named by `$NOTIFY_SOCKET`.
//!
//! Both daemons speak it (hav-agent and hav-coordinator). A unit with `Type=notify` waits for
//! [`Notifier::ready`] before it counts as started, and with `WatchdogSec=` restarts the daemon
//! when [`Notifier::watchdog`] stops arriving; ping at [`watchdog_interval`], half of what systemd
//! allows. Outside systemd (`$NOTIFY_SOCKET` unset) there is no notifier and nothing to do. Both
//! path sockets and abstract ones (`@name`) work. Sending never blocks: the socket is
//! non-blocking, and a full or absent receiver is an error for the caller to log, never a reason
//! to stop the daemon.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    #[error("${NOTIFY_SOCKET} is {value:?}: expected an absolute path or @abstract-name")]
    InvalidSocket { value: OsString },
    #[error("cannot create a datagram socket: {source}")]
    Socket {
        #[source]
        source: io::Error,
    },
    #[error("cannot send {message:?} to ${NOTIFY_SOCKET} {socket:?}: {source}")]
    Send {
        message: String,
        socket: OsString,
        #[source]
        source: io::Error,
    },
}

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// As given in the environment, for error messages.
    name: OsString,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`; `None` when it is unset or empty (not started by systemd
    /// as a notify service).
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        Self::from_env_value(std::env::var_os(NOTIFY_SOCKET))
    }

    /// [`Notifier::from_env`] with the variable's value given.
    pub fn from_env_value(value: Option<OsString>) -> Result<Option<Self>, NotifyError> {
        match value {
            Some(value) if !value.is_empty() => Self::new(&value).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for the socket `name`: an absolute path, or `@` and an abstract name.
    pub fn new(name: &OsStr) -> Result<Self, NotifyError> {
        let invalid = || NotifyError::InvalidSocket {
            value: name.to_owned(),
        };
        let bytes = name.as_bytes();
        let address = match bytes.split_first() {
            Some((b'@', abstract_name)) => {
                SocketAddr::from_abstract_name(abstract_name).map_err(|_| invalid())?
            }
            Some((b'/', _)) => SocketAddr::from_pathname(name).map_err(|_| invalid())?,
            _ => return Err(invalid()),
        };
        let socket = UnixDatagram::unbound().map_err(|source| NotifyError::Socket { source })?;
        socket
            .set_nonblocking(true)
            .map_err(|source| NotifyError::Socket { source })?;
        Ok(Self {
            socket,
            address,
            name: name.to_owned(),
        })
    }

    /// `READY=1`: start-up is complete (the agent's instances run; the coordinator listens).
    pub fn ready(&self) -> Result<(), NotifyError> {
        self.send("READY=1")
    }

    /// `STOPPING=1`: shutdown has begun (the agent hands over its VIPs; the coordinator closes its
    /// streams and flushes its store).
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1")
    }

    /// `WATCHDOG=1`: the event loop is alive.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1")
    }

    /// `STATUS=...`: a one-line status shown by `systemctl status` (newlines become spaces).
    pub fn status(&self, text: &str) -> Result<(), NotifyError> {
        self.send(&format!("STATUS={}", text.replace('\n', " ")))
    }

    /// Sends `message` (newline-separated `KEY=VALUE` assignments) as one datagram.
    pub fn send(&self, message: &str) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.address)
            .map(drop)
            .map_err(|source| NotifyError::Send {
                message: message.to_owned(),
                socket: self.name.clone(),
                source,
            })
    }
}

/// How often to send [`Notifier::watchdog`]: half of `$WATCHDOG_USEC`, when systemd set it for
/// this process (`$WATCHDOG_PID` absent or equal to our pid); `None` when no watchdog is wanted.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] with the environment given.
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(listener: &UnixDatagram) -> String {
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap_or_else(|error| panic!("{error}"));
        let mut buffer = [0u8; 256];
        let length = listener
            .recv(&mut buffer)
            .unwrap_or_else(|error| panic!("{error}"));
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    }

    #[test]
    fn path_socket_receives_each_notification() {
        let dir = std::env::temp_dir().join(format!("hav-sd-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{error}"));
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap_or_else(|error| panic!("{error}"));
        let notifier = Notifier::from_env_value(Some(path.clone().into_os_string()))
            .unwrap_or_else(|error| panic!("{error}"))
            .unwrap_or_else(|| panic!("a notifier for a set variable"));
        for (send, expected) in [
            (
                Notifier::ready as fn(&Notifier) -> Result<(), NotifyError>,
                "READY=1",
            ),
            (Notifier::watchdog, "WATCHDOG=1"),
            (Notifier::stopping, "STOPPING=1"),
        ] {
            send(&notifier).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(receive(&listener), expected);
        }
        notifier
            .status("2 instances\nmaster")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(receive(&listener), "STATUS=2 instances master");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn abstract_socket_name_starts_with_at() {
        let name = format!("hav-sd-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes())
            .unwrap_or_else(|error| panic!("{error}"));
        let listener = UnixDatagram::bind_addr(&address).unwrap_or_else(|error| panic!("{error}"));
        let notifier = Notifier::new(OsStr::new(&format!("@{name}")))
            .unwrap_or_else(|error| panic!("{error}"));
        notifier.ready().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(receive(&listener), "READY=1");
    }

    #[test]
    fn unset_empty_and_invalid_variables() {
        assert!(matches!(Notifier::from_env_value(None), Ok(None)));
        assert!(matches!(
            Notifier::from_env_value(Some(OsString::new())),
            Ok(None)
        ));
        for bad in ["relative/path", "x"] {
            assert!(matches!(
                Notifier::new(OsStr::new(bad)),
                Err(NotifyError::InvalidSocket { .. })
            ));
        }
        // No one listening: an error to log, not a panic or a hang.
        let absent = Notifier::new(OsStr::new("/nonexistent/hav/notify.sock"))
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(matches!(absent.ready(), Err(NotifyError::Send { .. })));
    }

    #[test]
    fn watchdog_interval_is_half_of_what_systemd_allows_and_only_for_us() {
        assert_eq!(
            watchdog_interval_from(Some("10000000"), None, 42),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            watchdog_interval_from(Some("10000000"), Some("42"), 42),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            watchdog_interval_from(Some("10000000"), Some("7"), 42),
            None
        );
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("x"), None, 42), None);
        assert_eq!(watchdog_interval_from(None, None, 42), None);
    }
}
