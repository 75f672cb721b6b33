//! Round-robin DNS for a group's VIPs: RFC 2136 dynamic updates signed with TSIG (RFC 8945) to
//! the zone's authoritative server, and a read-back that finds and repairs drift.
//!
//! Guarantees: the published record set of a name is exactly the group's VIPs that some node
//! holds ([`desired_records`]); a VIP nobody holds is withdrawn and re-added when held again; the
//! set is never emptied: when no VIP of the group is held at all (the whole group is down or
//! drained), the records are left as they are, because an empty answer turns a partial outage
//! into a total one for every client and the last addresses are the likeliest to come back.
//! Each change is one UPDATE message, which the server applies atomically (RFC 2136 section 3).
//!
//! hickory-proto builds and signs the messages (its `update_message` helpers and `TSigner`); the
//! exchange is ours ([`transport`]) because hickory's networked client for 0.26 is an alpha
//! release, and one request/response over UDP with a TCP retry is small.

mod message;
pub mod transport;
mod tsig;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::{Name, TSigner};

pub use tsig::{TsigKeyError, parse_bind_key};

/// Why a DNS operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    #[error("`{name}` is not a valid DNS name: {reason}")]
    BadName { name: String, reason: String },
    #[error("`{name}` is not inside zone `{zone}`")]
    OutsideZone { name: String, zone: String },
    #[error("TSIG key: {0}")]
    Key(#[from] TsigKeyError),
    #[error("cannot encode DNS message: {0}")]
    Encode(String),
    #[error("DNS server {server}: {source}")]
    Io {
        server: SocketAddr,
        source: std::io::Error,
    },
    #[error("DNS server {server} did not answer within {timeout:?}")]
    Timeout {
        server: SocketAddr,
        timeout: Duration,
    },
    #[error("DNS server {server} sent a malformed or unsigned answer: {reason}")]
    BadResponse { server: SocketAddr, reason: String },
    #[error("DNS server {server} refused the {what}: {rcode}")]
    Refused {
        server: SocketAddr,
        what: &'static str,
        rcode: String,
    },
}

/// The authoritative server of one zone and the key allowed to update it.
#[derive(Clone)]
pub struct DnsClient {
    server: SocketAddr,
    zone: Name,
    signer: TSigner,
    timeout: Duration,
}

/// One round-robin name: the group's DNS name and the TTL of its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordName {
    pub name: Name,
    pub ttl: u32,
}

/// What the DNS should hold for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    /// Exactly these addresses (never empty).
    Records(BTreeSet<IpAddr>),
    /// No VIP of the group is held: leave the record set as it is (never empty it).
    KeepAsIs,
}

/// The outcome of one [`reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsReport {
    pub name: String,
    pub desired: Desired,
    /// What the server answered before any repair.
    pub found: BTreeSet<IpAddr>,
    /// Whether `found` differed from what is desired.
    pub drift: bool,
    /// Whether an update was sent (and accepted).
    pub updated: bool,
}

/// The record set for a group: its VIPs that some node holds, or [`Desired::KeepAsIs`] when none
/// is held. VIPs held but not declared by the group are ignored (they are another group's).
pub fn desired_records(group_vips: &[IpAddr], held: &BTreeSet<IpAddr>) -> Desired {
    let records: BTreeSet<IpAddr> = group_vips
        .iter()
        .filter(|vip| held.contains(vip))
        .copied()
        .collect();
    if records.is_empty() {
        Desired::KeepAsIs
    } else {
        Desired::Records(records)
    }
}

/// Reads what the server holds for `record`, compares it with what `desired` says and, if they
/// differ, replaces the record set in one signed update.
pub async fn reconcile(
    client: &DnsClient,
    record: &RecordName,
    desired: &Desired,
) -> Result<DnsReport, DnsError> {
    let found = client.lookup(&record.name).await?;
    let (drift, updated) = match desired {
        Desired::Records(want) if *want != found => {
            client.replace(record, want).await?;
            (true, true)
        }
        Desired::Records(_) | Desired::KeepAsIs => (false, false),
    };
    Ok(DnsReport {
        name: record.name.to_ascii(),
        desired: desired.clone(),
        found,
        drift,
        updated,
    })
}

impl DnsClient {
    /// A client for `zone` on `server`, signing updates with `signer`.
    pub fn new(server: SocketAddr, zone: &str, signer: TSigner) -> Result<DnsClient, DnsError> {
        Ok(DnsClient {
            server,
            zone: parse_name(zone)?,
            signer,
            timeout: Duration::from_secs(3),
        })
    }

    /// How long to wait for each answer.
    pub fn with_timeout(mut self, timeout: Duration) -> DnsClient {
        self.timeout = timeout;
        self
    }

    /// `name` as a record name of this zone: a name ending in the zone's name (with or without
    /// the final dot) is taken as it is, any other name without a final dot inside the zone.
    pub fn record_name(&self, name: &str, ttl: u32) -> Result<RecordName, DnsError> {
        let zone = self.zone.to_ascii();
        let zone = zone.trim_end_matches('.');
        let bare = name.trim_end_matches('.');
        let absolute = name.ends_with('.')
            || bare.eq_ignore_ascii_case(zone)
            || bare
                .to_ascii_lowercase()
                .ends_with(&format!(".{}", zone.to_ascii_lowercase()));
        let name = if absolute && !name.ends_with('.') {
            format!("{name}.")
        } else {
            name.to_owned()
        };
        let name = name.as_str();
        let parsed = Name::parse(name, Some(&self.zone)).map_err(|e| DnsError::BadName {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        if !self.zone.zone_of(&parsed) {
            return Err(DnsError::OutsideZone {
                name: name.to_owned(),
                zone: self.zone.to_ascii(),
            });
        }
        Ok(RecordName { name: parsed, ttl })
    }

    /// The A and AAAA addresses the server holds for `name` (an unsigned query).
    pub async fn lookup(&self, name: &Name) -> Result<BTreeSet<IpAddr>, DnsError> {
        let mut out = BTreeSet::new();
        for record_type in [
            hickory_proto::rr::RecordType::A,
            hickory_proto::rr::RecordType::AAAA,
        ] {
            let query = message::query(name, record_type);
            let answer = transport::exchange(self.server, &query, None, self.timeout).await?;
            message::check_rcode(self.server, "query", &answer, true)?;
            out.extend(message::addresses(&answer, name));
        }
        Ok(out)
    }

    /// Replaces the A and AAAA record sets of `record` with `addresses`, atomically.
    pub async fn replace(
        &self,
        record: &RecordName,
        addresses: &BTreeSet<IpAddr>,
    ) -> Result<(), DnsError> {
        if !self.zone.zone_of(&record.name) {
            return Err(DnsError::OutsideZone {
                name: record.name.to_ascii(),
                zone: self.zone.to_ascii(),
            });
        }
        let update = message::replace(&self.zone, record, addresses);
        let answer =
            transport::exchange(self.server, &update, Some(&self.signer), self.timeout).await?;
        message::check_rcode(self.server, "update", &answer, false)
    }
}

fn parse_name(name: &str) -> Result<Name, DnsError> {
    let mut parsed = Name::from_ascii(name).map_err(|e| DnsError::BadName {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn names_in_the_zone_are_absolute_others_relative() {
        let key = "key k { algorithm hmac-sha256; secret \"AAAA\"; };";
        let client = DnsClient::new(
            "127.0.0.1:53".parse().expect("addr"),
            "example.test.",
            parse_bind_key(key).expect("key"),
        )
        .expect("client");
        for (given, want) in [
            ("web", "web.example.test."),
            ("web.example.test", "web.example.test."),
            ("Web.Example.Test.", "web.example.test."),
            ("web.dc1", "web.dc1.example.test."),
        ] {
            let name = client.record_name(given, 30).expect(given).name.to_ascii();
            assert_eq!(name, want, "{given}");
        }
        assert!(matches!(
            client.record_name("web.example.org.", 30),
            Err(DnsError::OutsideZone { .. })
        ));
    }

    #[test]
    fn desired_is_the_held_vips_of_the_group_and_never_empty() {
        let vips = [ip("198.51.100.10"), ip("198.51.100.11"), ip("2001:db8::10")];
        let held = BTreeSet::from([ip("198.51.100.11"), ip("2001:db8::10"), ip("203.0.113.9")]);
        assert_eq!(
            desired_records(&vips, &held),
            Desired::Records(BTreeSet::from([ip("198.51.100.11"), ip("2001:db8::10")]))
        );
        // Only another group's VIP is held: this group is down, its records stay.
        let other = BTreeSet::from([ip("203.0.113.9")]);
        assert_eq!(desired_records(&vips, &other), Desired::KeepAsIs);
        assert_eq!(desired_records(&vips, &BTreeSet::new()), Desired::KeepAsIs);
    }
}
