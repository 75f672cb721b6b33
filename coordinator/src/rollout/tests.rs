//! Drains and rollout jobs against the simulated fleet.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::job::{self, JobRecord, JobSpec, Status, Step};
use super::plan::{Group, plan};
use super::sim::SimFleet;
use super::{
    Connections, DrainError, DrainSettings, Fleet, drain_node, settle_connections, undrain_node,
};

fn holders(fleet: &SimFleet) -> Vec<(String, Vec<String>)> {
    fleet
        .views()
        .into_iter()
        .map(|v| {
            let vips = v
                .snapshot
                .map(|s| s.instances.into_iter().flat_map(|i| i.vips_held).collect())
                .unwrap_or_default();
            (v.name, vips)
        })
        .collect()
}

#[tokio::test]
async fn drain_moves_the_vip_then_marks_the_node_and_undrain_restores_the_layout() {
    let fleet = SimFleet::pairs(1);
    let before = holders(&fleet);
    let moves = drain_node(&fleet, "lb-0a", DrainSettings::default())
        .await
        .expect("drained");
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].peer, "lb-0b");
    // The peer was raised before the node was marked drained (make-before-break).
    let log = fleet.with(|s| s.log.clone());
    assert_eq!(
        log,
        vec![
            ("lb-0b".to_owned(), "override vip-10 254".to_owned()),
            ("lb-0a".to_owned(), "drain".to_owned()),
        ]
    );
    let during = holders(&fleet);
    assert_eq!(during[0].1, Vec::<String>::new());
    assert_eq!(during[1].1.len(), 2, "the peer holds both VIPs");

    undrain_node(&fleet, "lb-0a", &moves, DrainSettings::default())
        .await
        .expect("undrained");
    assert_eq!(holders(&fleet), before, "the balanced layout is back");
}

#[tokio::test]
async fn a_drain_that_would_leave_a_vip_without_a_healthy_holder_is_refused() {
    let fleet = SimFleet::pairs(1);
    fleet.with(|s| s.nodes.get_mut("lb-0b").expect("node").fault = true);
    let error = drain_node(&fleet, "lb-0a", DrainSettings::default())
        .await
        .expect_err("refused");
    assert!(matches!(error, DrainError::Refused { .. }), "{error}");
    assert!(error.to_string().contains("peer lb-0b is FAULT"), "{error}");
    assert!(fleet.with(|s| s.log.is_empty()), "nothing was sent");
}

fn spec(exec: &[&str]) -> JobSpec {
    JobSpec {
        max_parallel: 2,
        canary: 0,
        exec: exec.iter().map(|s| s.to_string()).collect(),
        health_timeout_seconds: 5,
        connection_deadline_seconds: 0,
    }
}

fn groups(n: usize) -> Vec<Group> {
    (0..n)
        .map(|p| Group {
            name: format!("g{p}"),
            nodes: vec![format!("lb-{p}a"), format!("lb-{p}b")],
        })
        .collect()
}

fn recorder() -> (job::OnChange, Arc<Mutex<Vec<JobRecord>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let on_change: job::OnChange = Arc::new(move |j: &JobRecord| {
        sink.lock().expect("lock").push(j.clone());
    });
    (on_change, seen)
}

#[tokio::test]
async fn a_rollout_over_three_pairs_never_drains_both_nodes_of_a_pair() {
    let fleet = Arc::new(SimFleet::pairs(3));
    let waves = plan(&groups(3), 2, 0).expect("plan");
    let job = JobRecord::new(
        1,
        "ana".into(),
        "upgrade".into(),
        spec(&["apt-get", "upgrade"]),
        waves,
        0,
    );
    let (on_change, seen) = recorder();
    let (_abort, abort_rx) = watch::channel(false);
    let done = job::run(
        fleet.clone(),
        job,
        DrainSettings::default(),
        abort_rx,
        on_change,
    )
    .await;
    assert_eq!(done.status, Status::Done, "{}", done.error);
    assert!(done.nodes.values().all(|n| n.step == Step::Done));
    let drained_sets = fleet.with(|s| s.drained_sets.clone());
    for set in &drained_sets {
        for p in 0..3 {
            let pair: BTreeSet<String> = [format!("lb-{p}a"), format!("lb-{p}b")].into();
            assert!(
                set.intersection(&pair).count() < 2,
                "both of pair {p} drained: {set:?}"
            );
        }
        assert!(set.len() <= 2, "more than max-parallel drained: {set:?}");
    }
    // Every node ran the command once.
    let execs = fleet.with(|s| s.log.iter().filter(|(_, w)| w.starts_with("exec")).count());
    assert_eq!(execs, 6);
    // Its output, sent before the ack, is in the record even though the ack came at once.
    for (name, node) in &done.nodes {
        assert_eq!(node.output, [format!("ran on {name}")], "{name}");
    }
    // Progress was reported at every step.
    assert!(seen.lock().expect("lock").len() > 6 * 4);
}

#[tokio::test]
async fn a_failing_command_stops_the_job_and_resume_finishes_it() {
    let fleet = Arc::new(SimFleet::pairs(3));
    fleet.with(|s| s.nodes.get_mut("lb-1a").expect("node").exec_fails = true);
    let waves = plan(&groups(3), 2, 0).expect("plan");
    let job = JobRecord::new(1, "ana".into(), String::new(), spec(&["upgrade"]), waves, 0);
    let (on_change, _) = recorder();
    let (_abort, abort_rx) = watch::channel(false);
    let failed = job::run(
        fleet.clone(),
        job,
        DrainSettings::default(),
        abort_rx.clone(),
        on_change.clone(),
    )
    .await;
    assert_eq!(failed.status, Status::Failed);
    assert!(failed.error.contains("lb-1a"), "{}", failed.error);
    assert_eq!(failed.nodes["lb-1a"].step, Step::Failed);
    // The wave's other node finished; the later waves did not start.
    assert_eq!(failed.nodes["lb-0a"].step, Step::Done);
    assert_eq!(failed.nodes["lb-2a"].step, Step::Pending);
    assert_eq!(failed.nodes["lb-1b"].step, Step::Pending);
    // The failed node stays drained for the operator.
    assert!(fleet.with(|s| s.nodes["lb-1a"].drained));

    // The operator fixes it and resumes (as after a coordinator restart: from the record).
    fleet.with(|s| s.nodes.get_mut("lb-1a").expect("node").exec_fails = false);
    let resumed: JobRecord =
        serde_json::from_slice(&serde_json::to_vec(&failed).expect("encode")).expect("decode");
    let done = job::run(
        fleet.clone(),
        resumed,
        DrainSettings::default(),
        abort_rx,
        on_change,
    )
    .await;
    assert_eq!(done.status, Status::Done, "{}", done.error);
    // lb-0a was not done twice.
    let drains_of_0a = fleet.with(|s| {
        s.log
            .iter()
            .filter(|(n, w)| n == "lb-0a" && w == "drain")
            .count()
    });
    assert_eq!(drains_of_0a, 1);
    assert!(fleet.with(|s| {
        s.nodes
            .values()
            .all(|n| !n.drained && n.overrides.is_empty())
    }));
}

#[tokio::test]
async fn an_aborted_job_starts_no_further_wave() {
    let fleet = Arc::new(SimFleet::pairs(2));
    let waves = plan(&groups(2), 1, 0).expect("plan");
    let job = JobRecord::new(1, "ana".into(), String::new(), spec(&[]), waves, 0);
    let (abort, abort_rx) = watch::channel(false);
    // Abort as soon as the first node is done.
    let on_change: job::OnChange = Arc::new(move |j: &JobRecord| {
        if j.nodes.values().any(|n| n.step == Step::Done) {
            abort.send_replace(true);
        }
    });
    let stopped = job::run(
        fleet.clone(),
        job,
        DrainSettings::default(),
        abort_rx,
        on_change,
    )
    .await;
    assert_eq!(stopped.status, Status::Aborted);
    let done = stopped
        .nodes
        .values()
        .filter(|n| n.step == Step::Done)
        .count();
    assert_eq!(done, 1);
    assert!(fleet.with(|s| s.nodes.values().all(|n| !n.drained)));
}

fn end_drains(fleet: &SimFleet) -> usize {
    fleet.with(|s| s.log.iter().filter(|(_, w)| w == "end drain").count())
}

#[tokio::test]
async fn a_drain_waits_for_the_connections_the_node_still_serves_and_breaks_none_that_end() {
    let fleet = Arc::new(SimFleet::pairs(1));
    fleet.with(|s| s.nodes.get_mut("lb-0a").expect("node").connections = 7);
    drain_node(fleet.as_ref(), "lb-0a", DrainSettings::default())
        .await
        .expect("drained");
    // The last connections end once the settle is under way: on this single-threaded
    // runtime the task runs only when the settle, having read its count, waits.
    let ending = fleet.clone();
    let end = tokio::spawn(async move {
        ending.with(|s| s.nodes.get_mut("lb-0a").expect("node").connections = 0);
    });
    let settled = settle_connections(fleet.as_ref(), "lb-0a", false, DrainSettings::default())
        .await
        .expect("settled");
    end.await.expect("ended");
    assert_eq!(
        settled,
        Connections {
            at_move: 7,
            broken: 0
        }
    );
    assert_eq!(end_drains(&fleet), 0, "nothing was broken");
}

#[tokio::test]
async fn connections_outliving_the_deadline_are_broken_and_counted_and_force_breaks_at_once() {
    let fleet = SimFleet::pairs(1);
    fleet.with(|s| s.nodes.get_mut("lb-0a").expect("node").connections = 3);
    let settings = DrainSettings {
        connection_deadline: std::time::Duration::from_millis(100),
        ..DrainSettings::default()
    };
    drain_node(&fleet, "lb-0a", settings)
        .await
        .expect("drained");
    let settled = settle_connections(&fleet, "lb-0a", false, settings)
        .await
        .expect("settled");
    assert_eq!(
        settled,
        Connections {
            at_move: 3,
            broken: 3
        }
    );
    assert_eq!(end_drains(&fleet), 1);

    let fleet = SimFleet::pairs(1);
    fleet.with(|s| s.nodes.get_mut("lb-0a").expect("node").connections = 2);
    let settings = DrainSettings::default(); // five minutes: force must not wait for them
    drain_node(&fleet, "lb-0a", settings)
        .await
        .expect("drained");
    let forced = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        settle_connections(&fleet, "lb-0a", true, settings),
    )
    .await
    .expect("force does not wait")
    .expect("settled");
    assert_eq!(
        forced,
        Connections {
            at_move: 2,
            broken: 2
        }
    );
    // A node that served nothing is done at once, and is told nothing.
    let fleet = SimFleet::pairs(1);
    drain_node(&fleet, "lb-0a", settings)
        .await
        .expect("drained");
    let none = settle_connections(&fleet, "lb-0a", false, settings)
        .await
        .expect("settled");
    assert_eq!(none, Connections::default());
    assert_eq!(end_drains(&fleet), 0);
}
