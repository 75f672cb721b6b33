//! DNS messages: the A/AAAA queries of the read-back and the UPDATE that replaces a name's
//! record sets (RFC 2136 section 2.5: "delete an RRset" for A and AAAA, then "add to an RRset"
//! for each address; the server applies the whole message or nothing).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Message, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::{DnsError, RecordName};

/// A plain (unsigned, non-recursive) query for `name`/`record_type`.
pub(super) fn query(name: &Name, record_type: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = false;
    let mut query = Query::new();
    query
        .set_name(name.clone())
        .set_query_type(record_type)
        .set_query_class(DNSClass::IN);
    message.add_query(query);
    message
}

/// One UPDATE for `zone` that leaves exactly `addresses` at `record.name` (A and AAAA).
pub(super) fn replace(zone: &Name, record: &RecordName, addresses: &BTreeSet<IpAddr>) -> Message {
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    // RFC 2136 section 2.3: the zone section names the zone, type SOA.
    let mut zone_section = Query::new();
    zone_section
        .set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    message.add_zone(zone_section);
    for record_type in [RecordType::A, RecordType::AAAA] {
        // Section 2.5.2: CLASS ANY, TTL 0, empty RDATA deletes the whole RRset.
        let mut delete = Record::update0(record.name.clone(), 0, record_type);
        delete.dns_class = DNSClass::ANY;
        message.add_update(delete.into_record_of_rdata());
    }
    for address in addresses {
        let data = match address {
            IpAddr::V4(v4) => RData::A(A(*v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
        };
        // Section 2.5.1: CLASS is the zone's class.
        message.add_update(Record::from_rdata(record.name.clone(), record.ttl, data));
    }
    message
}

/// Fails unless the answer's response code is NOERROR (or NXDOMAIN for a query, which just means
/// no records).
pub(super) fn check_rcode(
    server: SocketAddr,
    what: &'static str,
    answer: &Message,
    nxdomain_ok: bool,
) -> Result<(), DnsError> {
    match answer.metadata.response_code {
        ResponseCode::NoError => Ok(()),
        ResponseCode::NXDomain if nxdomain_ok => Ok(()),
        other => Err(DnsError::Refused {
            server,
            what,
            rcode: other.to_string(),
        }),
    }
}

/// The A and AAAA addresses for `name` in the answer section.
pub(super) fn addresses(answer: &Message, name: &Name) -> Vec<IpAddr> {
    answer
        .answers
        .iter()
        .filter(|r| r.name.eq_case(name) || r.name == *name)
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_deletes_both_rrsets_then_adds_each_address() {
        let zone = Name::from_ascii("example.test.").expect("name");
        let record = RecordName {
            name: Name::from_ascii("www.example.test.").expect("name"),
            ttl: 30,
        };
        let addresses = BTreeSet::from([
            "198.51.100.10".parse().expect("ip"),
            "2001:db8::10".parse().expect("ip"),
        ]);
        let message = replace(&zone, &record, &addresses);
        assert_eq!(message.metadata.op_code, OpCode::Update);
        assert_eq!(message.queries.len(), 1);
        assert_eq!(message.queries[0].query_type(), RecordType::SOA);
        let updates = &message.authorities;
        assert_eq!(updates.len(), 4);
        assert!(
            updates[..2]
                .iter()
                .all(|r| r.dns_class == DNSClass::ANY && r.ttl == 0)
        );
        assert_eq!(updates[0].record_type(), RecordType::A);
        assert_eq!(updates[1].record_type(), RecordType::AAAA);
        assert!(
            updates[2..]
                .iter()
                .all(|r| r.dns_class == DNSClass::IN && r.ttl == 30)
        );
        // It survives the wire: encode, decode, same updates.
        let bytes = message.to_vec().expect("encodes");
        let decoded = Message::from_vec(&bytes).expect("decodes");
        assert_eq!(decoded.authorities, message.authorities);
    }
}
