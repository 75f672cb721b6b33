//! journald's native protocol: a `tracing` layer that sends each event as one journal entry to
//! `/run/systemd/journal/socket`, and the decoder of such entries (for tests and tools).
//!
//! Guarantees: every entry carries `PRIORITY` (syslog: ERROR 3, WARN 4, INFO 6, DEBUG and TRACE
//! 7), `MESSAGE` (the event as the text format renders it, after the span context),
//! `SYSLOG_IDENTIFIER`, `TARGET`, `CODE_FILE` and `CODE_LINE`, and each field of the event and
//! of its spans under its own name, upper-cased (`instance` → `INSTANCE`, `command.kind` →
//! `COMMAND_KIND`). A field whose name journald or this layer already uses (`priority`,
//! `message_id`, …) is sent with an `F_` prefix, so it can never change an entry's priority.
//! An entry too large for one datagram goes in a sealed memfd passed with `SCM_RIGHTS`, as the
//! protocol prescribes. If the socket refuses an entry, the event is written as a text line to
//! stderr instead (under systemd: the journal's stream), never dropped in silence. Entries are
//! sent by the output thread ([`super::output`]): a stalled journald never holds up the thread
//! that logs.
//!
//! The wire format (systemd's `JOURNAL_NATIVE_PROTOCOL`): a datagram is a list of fields, each
//! either `NAME=value\n` or, for a value holding a newline, `NAME\n`, the value's length as a
//! little-endian `u64`, the value, `\n`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::output::{Output, QUEUE_ENTRIES, Sink};

/// Where journald receives native-protocol datagrams.
pub const SOCKET_PATH: &str = "/run/systemd/journal/socket";

/// Longest field name journald accepts.
const MAX_NAME_LEN: usize = 64;

/// Names this layer writes itself, and the user fields journald gives a meaning to: an event
/// field of one of these names is sent as `F_<NAME>`.
const RESERVED_NAMES: &[&str] = &[
    "MESSAGE",
    "MESSAGE_ID",
    "PRIORITY",
    "CODE_FILE",
    "CODE_LINE",
    "CODE_FUNC",
    "ERRNO",
    "INVOCATION_ID",
    "USER_INVOCATION_ID",
    "SYSLOG_FACILITY",
    "SYSLOG_IDENTIFIER",
    "SYSLOG_PID",
    "SYSLOG_TIMESTAMP",
    "SYSLOG_RAW",
    "DOCUMENTATION",
    "TID",
    "UNIT",
    "USER_UNIT",
    "TARGET",
];
/// Prefixes of field families journald reserves (core dumps, fields about another process).
const RESERVED_PREFIXES: &[&str] = &["COREDUMP_", "OBJECT_"];

/// The syslog priority of a tracing level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        // DEBUG and TRACE: syslog has nothing below debug.
        _ => 7,
    }
}

/// The journal field name for a tracing field name, or `None` if nothing of it is usable.
pub fn field_name(name: &str) -> Option<String> {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    // A leading underscore marks fields only journald may set; a name may not start with a digit.
    let trimmed = upper.trim_start_matches(|c: char| c == '_' || c.is_ascii_digit());
    if trimmed.is_empty() {
        return None;
    }
    let mut name = if RESERVED_NAMES.contains(&trimmed)
        || RESERVED_PREFIXES.iter().any(|p| trimmed.starts_with(p))
    {
        format!("F_{trimmed}")
    } else {
        trimmed.to_owned()
    };
    name.truncate(MAX_NAME_LEN);
    Some(name)
}

/// Appends one field in the native format: `NAME=value\n`, or the length-prefixed form when the
/// value holds a newline.
pub fn encode_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A native-protocol entry that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A field ends without its newline, or its length runs past the entry.
    #[error("field {name:?} is truncated")]
    Truncated {
        /// The field's name.
        name: String,
    },
    /// A field name that is not UTF-8.
    #[error("a field name is not UTF-8")]
    Name,
}

/// Decodes one entry into its fields, in order (a name may occur more than once). An empty
/// payload is an entry without fields.
pub fn decode(mut payload: &[u8]) -> Result<Vec<(String, Vec<u8>)>, DecodeError> {
    let mut fields = Vec::new();
    while !payload.is_empty() {
        let line_end = payload.iter().position(|&b| b == b'\n');
        let simple = payload.iter().position(|&b| b == b'=');
        match (simple, line_end) {
            // `NAME=value\n`: the `=` comes before the newline.
            (Some(eq), Some(end)) if eq < end => {
                let name = std::str::from_utf8(&payload[..eq]).map_err(|_| DecodeError::Name)?;
                fields.push((name.to_owned(), payload[eq + 1..end].to_vec()));
                payload = &payload[end + 1..];
            }
            // `NAME\n` + u64 LE length + value + `\n`.
            (_, Some(end)) => {
                let name = std::str::from_utf8(&payload[..end]).map_err(|_| DecodeError::Name)?;
                let truncated = || DecodeError::Truncated {
                    name: name.to_owned(),
                };
                let rest = &payload[end + 1..];
                let length: [u8; 8] = rest
                    .get(..8)
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(truncated)?;
                let length =
                    usize::try_from(u64::from_le_bytes(length)).map_err(|_| truncated())?;
                let value = rest.get(8..8 + length).ok_or_else(truncated)?;
                if rest.get(8 + length) != Some(&b'\n') {
                    return Err(truncated());
                }
                fields.push((name.to_owned(), value.to_vec()));
                payload = &rest[8 + length + 1..];
            }
            (_, None) => {
                return Err(DecodeError::Truncated {
                    name: String::from_utf8_lossy(payload).into_owned(),
                });
            }
        }
    }
    Ok(fields)
}

/// The `tracing` layer that writes to journald: it renders each event into an entry and hands
/// it to the output thread ([`super::output`]), which sends it.
#[derive(Debug)]
pub struct JournaldLayer {
    output: Output,
    identifier: String,
}

impl JournaldLayer {
    /// A layer sending to journald's socket, its entries tagged `SYSLOG_IDENTIFIER=identifier`.
    /// Fails if nothing listens there.
    pub fn connect(identifier: &str) -> io::Result<Self> {
        Self::connect_to(Path::new(SOCKET_PATH), identifier)
    }

    /// The same with another socket path.
    pub fn connect_to(path: &Path, identifier: &str) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        // journald ignores an empty datagram; sending one proves that it listens.
        socket.send_to(&[], path)?;
        let sink = JournalSocket {
            socket,
            path: path.to_owned(),
            refusal_reported: false,
        };
        Ok(Self {
            output: Output::start(sink, QUEUE_ENTRIES)?,
            identifier: identifier.to_owned(),
        })
    }

    /// The output this layer's entries go through (for a flush before the process exits).
    pub fn output(&self) -> &Output {
        &self.output
    }
}

/// The output thread's end: journald's socket.
struct JournalSocket {
    socket: UnixDatagram,
    path: PathBuf,
    /// Set once the first refused entry has been explained on stderr.
    refusal_reported: bool,
}

impl Sink for JournalSocket {
    fn write_entry(&mut self, entry: &[u8]) {
        let Err(error) = self.send(entry) else {
            return;
        };
        let mut stderr = io::stderr().lock();
        if !std::mem::replace(&mut self.refusal_reported, true) {
            let _ = writeln!(
                stderr,
                "journald at {} refused an entry ({error}); such entries follow as text",
                self.path.display()
            );
        }
        let _ = writeln!(stderr, "{}", text_line(entry));
    }
}

impl JournalSocket {
    /// Sends one entry: a datagram, or a memfd when it is too large for one. Blocks (the output
    /// thread only) while the journal's queue is full, like libsystemd's `sd_journal_send`.
    fn send(&self, entry: &[u8]) -> io::Result<()> {
        match self.socket.send_to(entry, &self.path) {
            Ok(_) => Ok(()),
            Err(error)
                if matches!(
                    error.raw_os_error().map(Errno::from_raw),
                    Some(Errno::EMSGSIZE | Errno::ENOBUFS)
                ) =>
            {
                self.send_memfd(entry)
            }
            Err(error) => Err(error),
        }
    }

    /// The protocol's way for a large entry: write it to a memfd, seal it, pass the descriptor.
    fn send_memfd(&self, entry: &[u8]) -> io::Result<()> {
        let fd = memfd_create(
            "journal-entry",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let mut file = File::from(fd);
        file.write_all(entry)?;
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let address = UnixAddr::new(&self.path)?;
        sendmsg(
            self.socket.as_raw_fd(),
            &[],
            &[ControlMessage::ScmRights(&[file.as_raw_fd()])],
            MsgFlags::empty(),
            Some(&address),
        )?;
        Ok(())
    }
}

/// An entry as a text line (`LEVEL target: message`), for when journald refuses it.
fn text_line(entry: &[u8]) -> String {
    let fields = decode(entry).unwrap_or_default();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
            .unwrap_or_default()
    };
    let level = match field("PRIORITY").as_str() {
        "3" => "ERROR",
        "4" => "WARN",
        "6" => "INFO",
        _ => "DEBUG",
    };
    format!("{level:>5} {}: {}", field("TARGET"), field("MESSAGE"))
}

/// What the layer keeps of each span: its fields as the text format shows them, and encoded.
struct SpanFields {
    text: String,
    encoded: Vec<u8>,
}

impl<S> tracing_subscriber::Layer<S> for JournaldLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields {
            text: String::new(),
            encoded: Vec::new(),
        };
        attrs.record(&mut FieldEncoder(&mut fields.encoded));
        let _ = DefaultFields::new().format_fields(Writer::new(&mut fields.text), attrs);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let Some(fields) = extensions.get_mut::<SpanFields>() else {
            return;
        };
        values.record(&mut FieldEncoder(&mut fields.encoded));
        if !fields.text.is_empty() {
            fields.text.push(' ');
        }
        let _ = DefaultFields::new().format_fields(Writer::new(&mut fields.text), values);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        // The span context first, as the text format writes it: `span{fields}: `.
        let mut message = String::new();
        let mut span_fields = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                message.push_str(span.name());
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    if !fields.text.is_empty() {
                        let _ = write!(message, "{{{}}}", fields.text);
                    }
                    span_fields.extend_from_slice(&fields.encoded);
                }
                message.push_str(": ");
            }
        }
        let _ = DefaultFields::new().format_fields(Writer::new(&mut message), event);

        let mut entry = Vec::with_capacity(256 + message.len() + span_fields.len());
        encode_field(&mut entry, "MESSAGE", message.as_bytes());
        encode_field(
            &mut entry,
            "PRIORITY",
            priority(metadata.level()).to_string().as_bytes(),
        );
        encode_field(&mut entry, "SYSLOG_IDENTIFIER", self.identifier.as_bytes());
        encode_field(&mut entry, "TARGET", metadata.target().as_bytes());
        if let Some(file) = metadata.file() {
            encode_field(&mut entry, "CODE_FILE", file.as_bytes());
        }
        if let Some(line) = metadata.line() {
            encode_field(&mut entry, "CODE_LINE", line.to_string().as_bytes());
        }
        entry.extend_from_slice(&span_fields);
        event.record(&mut FieldEncoder(&mut entry));

        self.output.submit(entry);
    }
}

/// Encodes the fields it visits, except `message` (that is `MESSAGE`).
struct FieldEncoder<'a>(&'a mut Vec<u8>);

impl FieldEncoder<'_> {
    fn put(&mut self, field: &Field, value: &[u8]) {
        if field.name() == "message" {
            return;
        }
        if let Some(name) = field_name(field.name()) {
            encode_field(self.0, &name, value);
        }
    }
}

impl Visit for FieldEncoder<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.as_bytes());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    // A failed unwrap is a failed test here.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::IoSliceMut;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    use std::os::unix::fs::FileExt;

    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    use tracing_subscriber::layer::SubscriberExt;

    fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn fields_are_written_plain_or_length_prefixed_and_decode_back() {
        let mut entry = Vec::new();
        encode_field(&mut entry, "MESSAGE", b"Backup -> Master");
        encode_field(&mut entry, "STATUS", b"line one\nline two");
        encode_field(&mut entry, "EMPTY", b"");
        let mut expected = b"MESSAGE=Backup -> Master\nSTATUS\n".to_vec();
        expected.extend_from_slice(&17u64.to_le_bytes());
        expected.extend_from_slice(b"line one\nline two\nEMPTY=\n");
        assert_eq!(entry, expected);
        assert_eq!(
            decode(&entry).unwrap(),
            vec![
                ("MESSAGE".into(), b"Backup -> Master".to_vec()),
                ("STATUS".into(), b"line one\nline two".to_vec()),
                ("EMPTY".into(), Vec::new()),
            ]
        );
        assert_eq!(decode(b"").unwrap(), vec![]);
        assert!(decode(b"MESSAGE=no newline").is_err());
        assert!(decode(b"STATUS\n\x09\0\0\0\0\0\0\0short\n").is_err());
    }

    #[test]
    fn field_names_are_upper_cased_and_never_take_a_journald_name() {
        assert_eq!(field_name("instance").as_deref(), Some("INSTANCE"));
        assert_eq!(field_name("command.kind").as_deref(), Some("COMMAND_KIND"));
        assert_eq!(field_name("kept_as").as_deref(), Some("KEPT_AS"));
        assert_eq!(field_name("priority").as_deref(), Some("F_PRIORITY"));
        assert_eq!(field_name("message_id").as_deref(), Some("F_MESSAGE_ID"));
        assert_eq!(
            field_name("object.pid").as_deref(),
            Some("F_OBJECT_PID"),
            "a reserved prefix"
        );
        assert_eq!(field_name("_pid").as_deref(), Some("PID"), "never trusted");
        assert_eq!(field_name("2fa").as_deref(), Some("FA"));
        assert_eq!(field_name("__"), None);
        assert_eq!(field_name(&"x".repeat(100)).map(|n| n.len()), Some(64));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }

    /// A socket standing in for journald, in a scratch directory.
    struct Journal {
        dir: PathBuf,
        socket: UnixDatagram,
    }

    impl Journal {
        fn bind(name: &str) -> Journal {
            let dir =
                std::env::temp_dir().join(format!("hav-journald-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let socket = UnixDatagram::bind(dir.join("socket")).unwrap();
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            Journal { dir, socket }
        }

        fn path(&self) -> PathBuf {
            self.dir.join("socket")
        }

        /// The next non-empty entry, read from the datagram or from the memfd passed with it.
        fn next(&self) -> (Vec<(String, Vec<u8>)>, bool) {
            loop {
                let mut buf = vec![0u8; 256 * 1024];
                let mut space = nix::cmsg_space!([RawFd; 1]);
                let (len, fd) = {
                    let mut iov = [IoSliceMut::new(&mut buf)];
                    let message = recvmsg::<()>(
                        self.socket.as_raw_fd(),
                        &mut iov,
                        Some(&mut space),
                        MsgFlags::empty(),
                    )
                    .unwrap();
                    let fd = message.cmsgs().unwrap().find_map(|cmsg| match cmsg {
                        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                        _ => None,
                    });
                    (message.bytes, fd)
                };
                let (payload, via_memfd) = match fd {
                    Some(fd) => {
                        // SAFETY: the kernel just installed this descriptor for us alone.
                        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                        let size = file.metadata().unwrap().len() as usize;
                        let mut payload = vec![0u8; size];
                        file.read_exact_at(&mut payload, 0).unwrap();
                        (payload, true)
                    }
                    None => (buf[..len].to_vec(), false),
                };
                if !payload.is_empty() {
                    return (decode(&payload).unwrap(), via_memfd);
                }
            }
        }
    }

    impl Drop for Journal {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn events_arrive_with_priority_message_and_fields() {
        let journal = Journal::bind("events");
        let layer = JournaldLayer::connect_to(&journal.path(), "hav-test").unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("agent.command", command.kind = "drain");
            let _entered = span.enter();
            tracing::error!(instance = %"VI_1", priority = 150, "VI_1: Backup -> Master");
            tracing::info!(status = "a\nb", "status");
        });
        let (error, _) = journal.next();
        assert_eq!(field(&error, "PRIORITY"), Some("3"));
        assert_eq!(
            field(&error, "MESSAGE"),
            Some(
                "agent.command{command.kind=\"drain\"}: VI_1: Backup -> Master instance=VI_1 priority=150"
            )
        );
        assert_eq!(field(&error, "INSTANCE"), Some("VI_1"));
        assert_eq!(field(&error, "F_PRIORITY"), Some("150"));
        assert_eq!(field(&error, "COMMAND_KIND"), Some("drain"));
        assert_eq!(field(&error, "SYSLOG_IDENTIFIER"), Some("hav-test"));
        assert_eq!(
            error.iter().filter(|(name, _)| name == "PRIORITY").count(),
            1,
            "one priority per entry"
        );
        let (info, _) = journal.next();
        assert_eq!(field(&info, "PRIORITY"), Some("6"));
        assert_eq!(field(&info, "STATUS"), Some("a\nb"));
    }

    #[test]
    fn an_entry_too_large_for_a_datagram_goes_in_a_memfd() {
        let journal = Journal::bind("memfd");
        let layer = JournaldLayer::connect_to(&journal.path(), "hav-test").unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        let big = "x".repeat(1024 * 1024);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(big = %big, "large");
        });
        let (entry, via_memfd) = journal.next();
        assert!(via_memfd, "1 MiB does not fit a datagram");
        assert_eq!(field(&entry, "PRIORITY"), Some("4"));
        assert_eq!(field(&entry, "BIG").map(str::len), Some(big.len()));
    }
}
