//! DNS publishing against a real BIND 9: signed updates land, a real resolver (`dig`) sees them,
//! unheld VIPs are withdrawn and come back, the set is never emptied, and drift made behind
//! hav's back with `nsupdate` is found and repaired. Wrong keys are refused by the server.

#![allow(clippy::unwrap_used)]

mod bind;

use std::collections::BTreeSet;
use std::net::IpAddr;

use bind::{Bind, ZONE};
use hav_coordinator::dns::{self, Desired, DnsClient, DnsError, desired_records, reconcile};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set(items: &[&str]) -> BTreeSet<IpAddr> {
    items.iter().map(|s| ip(s)).collect()
}

fn client(bind: &Bind) -> DnsClient {
    let signer = dns::parse_bind_key(&bind.key_text).unwrap();
    DnsClient::new(bind.address, ZONE, signer).unwrap()
}

#[tokio::test]
async fn layout_changes_reach_a_real_resolver_and_the_set_is_never_emptied() {
    let bind = Bind::start();
    let client = client(&bind);
    let www = client.record_name("www", 30).unwrap();
    let vips = [ip("198.51.100.10"), ip("198.51.100.11"), ip("2001:db8::10")];

    // Both nodes up: every VIP is held.
    let desired = desired_records(
        &vips,
        &set(&["198.51.100.10", "198.51.100.11", "2001:db8::10"]),
    );
    let report = reconcile(&client, &www, &desired).await.unwrap();
    assert!(report.drift && report.updated);
    assert!(report.found.is_empty());
    assert_eq!(
        bind.dig("www.example.test"),
        ["198.51.100.10", "198.51.100.11", "2001:db8::10"]
    );

    // Nothing changed: no drift, no update.
    let again = reconcile(&client, &www, &desired).await.unwrap();
    assert!(!again.drift && !again.updated);

    // .11 is held by nobody: withdrawn.
    let desired = desired_records(&vips, &set(&["198.51.100.10", "2001:db8::10"]));
    reconcile(&client, &www, &desired).await.unwrap();
    assert_eq!(
        bind.dig("www.example.test"),
        ["198.51.100.10", "2001:db8::10"]
    );

    // Only .10 held.
    let desired = desired_records(&vips, &set(&["198.51.100.10"]));
    reconcile(&client, &www, &desired).await.unwrap();
    assert_eq!(bind.dig("www.example.test"), ["198.51.100.10"]);

    // The whole group is down: the last record stays.
    let desired = desired_records(&vips, &BTreeSet::new());
    assert_eq!(desired, Desired::KeepAsIs);
    let report = reconcile(&client, &www, &desired).await.unwrap();
    assert!(!report.updated);
    assert_eq!(bind.dig("www.example.test"), ["198.51.100.10"]);

    // .11 held again: re-added (and .10, still unheld in this step, withdrawn).
    let desired = desired_records(&vips, &set(&["198.51.100.11"]));
    reconcile(&client, &www, &desired).await.unwrap();
    assert_eq!(bind.dig("www.example.test"), ["198.51.100.11"]);
}

#[tokio::test]
async fn drift_made_behind_our_back_is_reported_and_repaired() {
    let bind = Bind::start();
    let client = client(&bind);
    let www = client.record_name("www.example.test.", 30).unwrap();
    let desired = Desired::Records(set(&["198.51.100.10", "198.51.100.11"]));
    reconcile(&client, &www, &desired).await.unwrap();

    bind.nsupdate(
        "update delete www.example.test. A 198.51.100.11\n\
         update add www.example.test. 30 A 203.0.113.66",
    );
    assert_eq!(
        bind.dig("www.example.test"),
        ["198.51.100.10", "203.0.113.66"]
    );

    let report = reconcile(&client, &www, &desired).await.unwrap();
    assert!(report.drift && report.updated);
    assert_eq!(report.found, set(&["198.51.100.10", "203.0.113.66"]));
    assert_eq!(
        bind.dig("www.example.test"),
        ["198.51.100.10", "198.51.100.11"]
    );
    // Other names in the zone are not touched.
    assert_eq!(bind.dig("ns.example.test"), ["127.0.0.1"]);
}

#[tokio::test]
async fn an_update_signed_with_another_key_is_refused_and_changes_nothing() {
    let bind = Bind::start();
    let wrong = "key \"hav-update\" { algorithm hmac-sha256; \
                 secret \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"; };";
    let client = DnsClient::new(bind.address, ZONE, dns::parse_bind_key(wrong).unwrap()).unwrap();
    let www = client.record_name("www", 30).unwrap();
    let error = client
        .replace(&www, &set(&["198.51.100.10"]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            DnsError::Refused { .. } | DnsError::BadResponse { .. }
        ),
        "{error}"
    );
    assert!(bind.dig("www.example.test").is_empty());
    // A name outside the zone is refused before anything is sent.
    assert!(matches!(
        client.record_name("www.example.org.", 30),
        Err(DnsError::OutsideZone { .. })
    ));
}
