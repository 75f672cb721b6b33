//! The relay's keys and values under the store's prefix `P`:
//!
//! ```text
//! P relay/sessions/<node>             the session of `node` a coordinator holds (JSON), under
//!                                     that coordinator's membership lease
//! P relay/commands/<to>/<from>/<id>   a command `from` sends through `to` (binary), under
//!                                     `from`'s lease
//! P relay/replies/<from>/<id>         the answer to it, under `to`'s lease
//! P relay/events/<from>/<slot>        an event `from` published (protobuf), under its lease;
//!                                     slots are reused in turn, so the space stays bounded
//! P nodes/<node>                      (the store's) the state a node last reported
//! ```
//!
//! Names in keys are escaped (`%` and `/`), so any node or coordinator name is one segment.
//! Guarantees: every value decodes back to what was encoded, and a value that does not is
//! refused (`None`), never half read.

use std::time::Duration;

use hav_proto::v1::{Command, CommandAck, Hello};
use prost::Message;
use serde::{Deserialize, Serialize};

/// Event slots per coordinator: a watcher further behind than this many events has lost some
/// (etcd's watch delivers every revision, so only a relay down that long loses any).
pub(crate) const EVENT_SLOTS: u64 = 4096;

/// The relay's keys under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct RelayKeys {
    prefix: String,
}

/// What a key under the prefix is, for the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Session(String),
    Command { to: String, from: String, id: u64 },
    Reply { to: String, id: u64 },
    Event { from: String },
    NodeState(String),
}

impl RelayKeys {
    pub(crate) fn new(prefix: &str) -> RelayKeys {
        RelayKeys {
            prefix: prefix.to_owned(),
        }
    }

    /// Everything the relay follows: the whole prefix (sessions and node states in one order).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn sessions(&self) -> String {
        format!("{}relay/sessions/", self.prefix)
    }

    pub(crate) fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    pub(crate) fn session(&self, node: &str) -> String {
        format!("{}{}", self.sessions(), escape(node))
    }

    pub(crate) fn command(&self, to: &str, from: &str, id: u64) -> String {
        format!(
            "{}relay/commands/{}/{}/{id}",
            self.prefix,
            escape(to),
            escape(from)
        )
    }

    /// The reply to command `id` of `to` (the coordinator that sent it).
    pub(crate) fn reply(&self, to: &str, id: u64) -> String {
        format!("{}relay/replies/{}/{id}", self.prefix, escape(to))
    }

    pub(crate) fn event(&self, from: &str, seq: u64) -> String {
        format!(
            "{}relay/events/{}/{}",
            self.prefix,
            escape(from),
            seq % EVENT_SLOTS
        )
    }

    /// What `key` is (`None`: nothing the relay follows).
    pub(crate) fn parse(&self, key: &[u8]) -> Option<Key> {
        let rest = std::str::from_utf8(key.strip_prefix(self.prefix.as_bytes())?).ok()?;
        if let Some(node) = rest.strip_prefix("nodes/") {
            return Some(Key::NodeState(node.to_owned()));
        }
        let rest = rest.strip_prefix("relay/")?;
        let (kind, rest) = rest.split_once('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        match (kind, parts.as_slice()) {
            ("sessions", [node]) => Some(Key::Session(unescape(node)?)),
            ("commands", [to, from, id]) => Some(Key::Command {
                to: unescape(to)?,
                from: unescape(from)?,
                id: id.parse().ok()?,
            }),
            ("replies", [to, id]) => Some(Key::Reply {
                to: unescape(to)?,
                id: id.parse().ok()?,
            }),
            ("events", [from, _slot]) => Some(Key::Event {
                from: unescape(from)?,
            }),
            _ => None,
        }
    }
}

fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

fn unescape(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3)? {
            "%25" => out.push('%'),
            "%2F" => out.push('/'),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The session of a node, as the coordinator holding it announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub coordinator: String,
    pub peer: String,
    pub connected_unix_ms: u64,
    /// The agent's Hello, protobuf-encoded.
    pub hello: Vec<u8>,
}

impl SessionRecord {
    pub(crate) fn hello(&self) -> Option<Hello> {
        Hello::decode(self.hello.as_slice()).ok()
    }
}

/// A command on its way to the coordinator holding `node`'s session: the node, how long the
/// sender waits for the answer, and the command (binary: timeout in ms, u64 big-endian; the
/// node's length, u16 big-endian; the node; the protobuf command).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Envelope {
    pub node: String,
    pub timeout: Duration,
    pub command: Command,
}

impl Envelope {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let node = self.node.as_bytes();
        let timeout = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity(10 + node.len() + self.command.encoded_len());
        out.extend_from_slice(&timeout.to_be_bytes());
        out.extend_from_slice(&u16::try_from(node.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(node);
        self.command.encode(&mut out).unwrap_or_default();
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Envelope> {
        let timeout = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let length = usize::from(u16::from_be_bytes(bytes.get(8..10)?.try_into().ok()?));
        let node = std::str::from_utf8(bytes.get(10..10 + length)?).ok()?;
        let command = Command::decode(bytes.get(10 + length..)?).ok()?;
        Some(Envelope {
            node: node.to_owned(),
            timeout: Duration::from_millis(timeout),
            command,
        })
    }
}

/// The answer to a relayed command (binary: a tag byte, then the protobuf ack for `Ack`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Ack(CommandAck),
    /// The node has no session there (any more).
    NotConnected,
    /// The node did not answer within the sender's timeout.
    Timeout,
    /// The node's command queue there is full.
    QueueFull,
}

impl Reply {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Ack(ack) => {
                let mut out = vec![0];
                ack.encode(&mut out).unwrap_or_default();
                out
            }
            Reply::NotConnected => vec![1],
            Reply::Timeout => vec![2],
            Reply::QueueFull => vec![3],
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Reply> {
        match bytes.split_first()? {
            (0, ack) => CommandAck::decode(ack).ok().map(Reply::Ack),
            (1, []) => Some(Reply::NotConnected),
            (2, []) => Some(Reply::Timeout),
            (3, []) => Some(Reply::QueueFull),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hav_proto::v1::{SetPriorityOverride, command};

    #[test]
    fn every_key_parses_back_to_what_it_names() {
        let keys = RelayKeys::new("/hav/");
        let odd = "a/b%c";
        assert_eq!(
            keys.parse(keys.session(odd).as_bytes()),
            Some(Key::Session(odd.into()))
        );
        assert_eq!(
            keys.parse(keys.command("c1", odd, 7).as_bytes()),
            Some(Key::Command {
                to: "c1".into(),
                from: odd.into(),
                id: 7
            })
        );
        assert_eq!(
            keys.parse(keys.reply(odd, 9).as_bytes()),
            Some(Key::Reply {
                to: odd.into(),
                id: 9
            })
        );
        assert_eq!(
            keys.parse(keys.event("c2", EVENT_SLOTS + 3).as_bytes()),
            Some(Key::Event { from: "c2".into() })
        );
        assert_eq!(
            keys.parse(b"/hav/nodes/lb-1"),
            Some(Key::NodeState("lb-1".into()))
        );
        for other in [
            &b"/hav/leader"[..],
            b"/hav/config/00000000000000000001",
            b"/other/relay/sessions/x",
            b"/hav/relay/sessions/a/b",
            b"/hav/relay/sessions/bad%2",
            b"/hav/relay/replies/c1/not-a-number",
        ] {
            assert_eq!(
                keys.parse(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn envelopes_and_replies_round_trip_and_garbage_is_refused() {
        let envelope = Envelope {
            node: "lb-1".into(),
            timeout: Duration::from_millis(1500),
            command: Command {
                id: 42,
                action: Some(command::Action::SetPriorityOverride(SetPriorityOverride {
                    instance: "vi_1".into(),
                    priority: 250,
                    ..SetPriorityOverride::default()
                })),
                trace_context: Default::default(),
            },
        };
        assert_eq!(Envelope::decode(&envelope.encode()), Some(envelope.clone()));
        let encoded = envelope.encode();
        assert_eq!(Envelope::decode(&encoded[..9]), None);
        assert_eq!(Envelope::decode(&encoded[..12]), None);
        for reply in [
            Reply::Ack(CommandAck {
                id: 3,
                ok: false,
                error: "refused".into(),
            }),
            Reply::NotConnected,
            Reply::Timeout,
            Reply::QueueFull,
        ] {
            assert_eq!(Reply::decode(&reply.encode()), Some(reply));
        }
        assert_eq!(Reply::decode(&[]), None);
        assert_eq!(Reply::decode(&[1, 0]), None);
        assert_eq!(Reply::decode(&[9]), None);
    }
}
