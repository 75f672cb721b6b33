//! The generated `hav.v1` messages and services (see `proto/hav/v1/*.proto` for the contract and its
//! evolution rules). Everything here is produced at build time by `protox` + `tonic-prost-build`.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("hav.v1");

/// The protocol version this build speaks, sent in `Hello` and `Welcome`. Bumped only for a change
/// that an older peer cannot ignore; additive changes (new fields, new oneof arms) keep it.
pub const PROTOCOL_VERSION: u32 = 1;

/// The oldest agent protocol this build's coordinator still speaks. Agents are upgraded after
/// the coordinator: an agent from `MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION` is served in its own
/// version (echoed in `Welcome`); a newer agent is refused with both versions named.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// The version a coordinator uses with an agent that said `agent`, or `None` if it cannot.
pub fn session_version(agent: u32) -> Option<u32> {
    (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION)
        .contains(&agent)
        .then_some(agent)
}

/// The longest an agent waits between two attempts to reach the coordinator (its jittered
/// backoff grows to this and stays there). A coordinator that starts hears again from every live
/// agent within about this long, so it keeps believing what agents last reported at least that
/// long before it calls them unknown.
pub const AGENT_RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest gRPC message either side accepts or sends (4 MiB): a node config or a snapshot is
/// a few kilobytes; anything near this size is a bug or an attack.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_agent_is_served_in_its_version_and_a_newer_one_refused() {
        assert_eq!(
            session_version(MIN_PROTOCOL_VERSION),
            Some(MIN_PROTOCOL_VERSION)
        );
        assert_eq!(session_version(PROTOCOL_VERSION), Some(PROTOCOL_VERSION));
        assert_eq!(session_version(PROTOCOL_VERSION + 1), None);
        assert_eq!(session_version(0), None);
    }
}
