//! hav-coordinator on etcd (`--etcd`), the real binary against a real three-member cluster on
//! loopback: it serves a push, keeps nothing in `--data`, and a restarted coordinator (with one
//! etcd member gone meanwhile) has the history. Needs `havctl` and `hav-coordinator` built, and
//! etcd (Debian `etcd-server`, `etcd-client`).

use std::time::Duration;

use hav_proto::v1::fleet_service_client::FleetServiceClient;
use hav_proto::v1::{ApplyOutcome, HistoryRequest, NodeConfigEntry, PushConfigRequest};
use hav_tests::coordinator::{CoordinatorProcess, Error};
use hav_tests::etcd::EtcdCluster;
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(20);
const PREFIX: &str = "/fleet-under-test/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_on_etcd_serves_a_push_and_its_history_survives_a_restart()
-> Result<(), Error> {
    let mut cluster = EtcdCluster::start()?;
    let mut coordinator = CoordinatorProcess::new()?;
    coordinator.args = vec![
        "--etcd".into(),
        cluster.endpoints().join(","),
        "--etcd-prefix".into(),
        PREFIX.into(),
    ];
    coordinator.start()?;
    let mut fleet = FleetServiceClient::new(coordinator.channel("operator-olga").await?);
    let pushed = fleet
        .push_config(PushConfigRequest {
            configs: vec![NodeConfigEntry {
                node: "lb-9".into(),
                toml: node_toml("lb-9", 9),
            }],
            comment: "first push, kept in etcd".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(pushed.version, 1);
    // lb-9 is not connected: stored, sent when it connects.
    assert_eq!(pushed.nodes[0].outcome, ApplyOutcome::Offline as i32);
    assert!(
        !coordinator.data().exists(),
        "nothing is kept in --data with --etcd"
    );
    let keys = etcdctl(&cluster, &["get", "--prefix", "--keys-only", PREFIX])?;
    assert!(
        keys.contains(&format!("{PREFIX}config/00000000000000000001")),
        "the version is in etcd under the prefix: {keys}"
    );

    coordinator.signal(Signal::SIGTERM)?;
    let exit = coordinator.wait_exit(WAIT)?;
    assert_eq!(exit.code(), Some(0), "{}", coordinator.log());

    // One member of three goes away; a new coordinator finds everything through the others.
    let gone = cluster.leader()?;
    cluster.kill(gone)?;
    coordinator.args[1] = (0..cluster.len())
        .map(|index| cluster.endpoint(index))
        .collect::<Vec<_>>()
        .join(",");
    coordinator.start()?;
    let mut fleet = FleetServiceClient::new(coordinator.channel("operator-olga").await?);
    let history = fleet
        .history(HistoryRequest { limit: 10 })
        .await?
        .into_inner();
    let versions: Vec<(u64, &str)> = history
        .versions
        .iter()
        .map(|v| (v.version, v.comment.as_str()))
        .collect();
    assert_eq!(versions, vec![(1, "first push, kept in etcd")]);
    assert!(
        history
            .audit
            .iter()
            .any(|entry| entry.who == "olga" && entry.allowed),
        "the push is in the audit log: {:?}",
        history.audit
    );
    // And the next push is version 2: the compare-and-swap guard carried over.
    let pushed = fleet
        .push_config(PushConfigRequest {
            configs: vec![NodeConfigEntry {
                node: "lb-9".into(),
                toml: node_toml("lb-9", 10),
            }],
            comment: "second push".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(pushed.version, 2);
    Ok(())
}

fn etcdctl(cluster: &EtcdCluster, args: &[&str]) -> Result<String, Error> {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &cluster.endpoints().join(",")])
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!("etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn node_toml(node: &str, vrid: u8) -> String {
    format!(
        "[node]\nname = \"{node}\"\n[[instance]]\nname = \"web\"\ninterface = \"eth0\"\n\
         vrid = {vrid}\nvips = [\"198.51.100.100/24\"]\n"
    )
}
