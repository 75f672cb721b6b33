//! The VIP journal against real interfaces: a "crashed" agent's VIPs are removed on recovery
//! (needs root).
// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod net_support;

use std::net::IpAddr;

use hav_agent::net::journal::JOURNAL_FILE;
use hav_agent::net::{JournaledVips, Vip, VipJournal, VipManager};
use net_support::*;

fn vips() -> Vec<Vip> {
    vec![
        Vip::new(IpAddr::from([198, 51, 100, 100]), 24, IFACE_A).with_label("hva:vip"),
        Vip::new(IpAddr::from([203, 0, 113, 10]), 32, IFACE_A),
        Vip::new("2001:db8::100".parse().unwrap(), 64, IFACE_A),
    ]
}

#[test]
fn vips_of_a_killed_agent_are_removed_on_recovery() {
    run(|_lab| async move {
        let state = TempDir::new("journal-crash");
        let set = vips();
        {
            let mut agent = JournaledVips::new(VipManager::new().unwrap(), state.path()).unwrap();
            let nothing = agent.recover(&[], &Default::default()).await.unwrap();
            assert_eq!(
                nothing.removed,
                vec![],
                "a fresh state dir has nothing to recover"
            );
            agent.add(&set).await.unwrap();
            assert_eq!(agent.manager().present(&set).await.unwrap(), set);
            // Dropped here without removing anything: what kill -9 leaves behind.
        }
        let manager = VipManager::new().unwrap();
        assert_eq!(
            manager.present(&set).await.unwrap(),
            set,
            "still held after the crash"
        );

        let mut restarted = JournaledVips::new(manager.clone(), state.path()).unwrap();
        let recovery = restarted.recover(&[], &Default::default()).await.unwrap();
        let mut removed = recovery.removed.clone();
        removed.sort();
        let mut expected = set.clone();
        expected.sort();
        assert_eq!(removed, expected);
        assert_eq!(recovery.corrupt, None);
        assert_eq!(
            manager.present(&set).await.unwrap(),
            vec![],
            "recovery removed them"
        );
        assert_eq!(
            restarted.journal().load().unwrap(),
            Ok(vec![]),
            "journal reset"
        );
    });
}

#[test]
fn removed_vips_leave_the_journal_and_are_not_touched_again() {
    run(|_lab| async move {
        let state = TempDir::new("journal-remove");
        let set = vips();
        let mut agent = JournaledVips::new(VipManager::new().unwrap(), state.path()).unwrap();
        agent.add(&set).await.unwrap();
        agent.remove(&set[..1]).await.unwrap();
        let journaled = agent.journal().load().unwrap().unwrap();
        assert_eq!(journaled.len(), 2);
        assert!(!journaled.contains(&set[0]));
        assert_eq!(
            agent.manager().present(&set).await.unwrap(),
            set[1..].to_vec()
        );
    });
}

#[test]
fn crash_between_journal_and_netlink_is_harmless() {
    run(|_lab| async move {
        let state = TempDir::new("journal-intent");
        let set = vips();
        // Journaled, then "killed" before the netlink add: the VIPs are listed but absent.
        VipJournal::new(state.path()).unwrap().record(&set).unwrap();
        let mut restarted = JournaledVips::new(VipManager::new().unwrap(), state.path()).unwrap();
        let recovery = restarted.recover(&[], &Default::default()).await.unwrap();
        assert_eq!(recovery.cleared.len(), set.len());
        assert_eq!(
            recovery.removed,
            vec![],
            "none was on an interface: nothing was left behind"
        );
        assert_eq!(restarted.journal().load().unwrap(), Ok(vec![]));
    });
}

#[test]
fn recovery_reports_only_the_vips_that_were_still_on_an_interface() {
    run(|_lab| async move {
        let state = TempDir::new("journal-stop");
        let set = vips();
        let mut agent = JournaledVips::new(VipManager::new().unwrap(), state.path()).unwrap();
        agent.recover(&[], &Default::default()).await.unwrap();
        // A clean run: reserve at start, take over, release; then the stop clears the journal.
        agent.reserve(&set).unwrap();
        agent.add(&set).await.unwrap();
        agent.remove(&set).await.unwrap();
        let stop = agent.recover(&[], &Default::default()).await.unwrap();
        let mut cleared = stop.cleared.clone();
        cleared.sort();
        let mut expected = set.clone();
        expected.sort();
        assert_eq!(cleared, expected, "every reservation is struck");
        assert_eq!(stop.removed, vec![], "nothing was left on an interface");
        assert_eq!(agent.journal().load().unwrap(), Ok(vec![]));

        // One VIP not released (a removal that failed, an engine that kept it): reported.
        agent.reserve(&set).unwrap();
        agent.add(&set).await.unwrap();
        agent.remove(&set[1..]).await.unwrap();
        let stop = agent.recover(&[], &Default::default()).await.unwrap();
        assert_eq!(stop.cleared.len(), set.len());
        assert_eq!(stop.removed, set[..1].to_vec());
        assert_eq!(agent.manager().present(&set).await.unwrap(), vec![]);
        assert_eq!(agent.journal().load().unwrap(), Ok(vec![]));
    });
}

#[test]
fn corrupt_journal_falls_back_to_the_configured_vips_and_is_kept_aside() {
    run(|_lab| async move {
        let state = TempDir::new("journal-corrupt");
        let set = vips();
        let manager = VipManager::new().unwrap();
        manager.add(&set).await.unwrap();
        let journal_path = state.path().join(JOURNAL_FILE);
        std::fs::write(
            &journal_path,
            b"{\"version\":1,\"vips\":[{\"addr\":\"198.51",
        )
        .unwrap();

        let mut restarted = JournaledVips::new(manager.clone(), state.path()).unwrap();
        let recovery = restarted
            .recover(&set[..2], &Default::default())
            .await
            .unwrap();
        let corrupt = recovery.corrupt.expect("reported as corrupt");
        assert!(
            corrupt.reason.contains("not a valid journal"),
            "{}",
            corrupt.reason
        );
        assert_eq!(
            std::fs::read(&corrupt.kept_as).unwrap(),
            b"{\"version\":1,\"vips\":[{\"addr\":\"198.51",
            "the bad file is kept for the operator"
        );
        assert_eq!(
            recovery.removed,
            set[..2].to_vec(),
            "the fallback was removed"
        );
        assert_eq!(manager.present(&set).await.unwrap(), set[2..].to_vec());
        assert_eq!(
            restarted.journal().load().unwrap(),
            Ok(vec![]),
            "a fresh, valid journal"
        );
    });
}

/// Set in the environment of the child process of `sigkilled_agent_leaves_a_journal_that_covers_its_vips`.
const CHILD_STATE_DIR: &str = "HAV_NET_JOURNAL_CHILD_STATE_DIR";

#[test]
fn sigkilled_agent_leaves_a_journal_that_covers_its_vips() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    run(|_lab| async move {
        let state = TempDir::new("journal-sigkill");
        // The child is forked from this thread, so it lives in this test's namespace.
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "journal_child_adds_vips_then_waits",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_STATE_DIR, state.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let added = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line == "vips added" {
                    return;
                }
            }
            panic!("child exited before adding its VIPs");
        };
        tokio::time::timeout(TIMEOUT, added)
            .await
            .expect("child did not add its VIPs");
        child.start_kill().unwrap(); // SIGKILL
        let status = child.wait().await.unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );

        let set = vips();
        let manager = VipManager::new().unwrap();
        assert_eq!(
            manager.present(&set).await.unwrap(),
            set,
            "held by the killed agent"
        );
        let mut restarted = JournaledVips::new(manager.clone(), state.path()).unwrap();
        let recovery = restarted.recover(&[], &Default::default()).await.unwrap();
        assert_eq!(recovery.removed.len(), set.len());
        assert_eq!(manager.present(&set).await.unwrap(), vec![]);
    });
}

/// The "agent" killed by `sigkilled_agent_leaves_a_journal_that_covers_its_vips`: adds the VIPs
/// through the journal, says so, and waits for stdin to close. Does nothing when run directly.
#[test]
#[ignore = "child process of sigkilled_agent_leaves_a_journal_that_covers_its_vips"]
fn journal_child_adds_vips_then_waits() {
    let Some(state_dir) = std::env::var_os(CHILD_STATE_DIR) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let manager = VipManager::new().unwrap();
        let mut agent = JournaledVips::new(manager, std::path::Path::new(&state_dir)).unwrap();
        agent.add(&vips()).await.unwrap();
        println!("vips added");
        let mut stdin = tokio::io::stdin();
        let mut sink = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stdin, &mut sink)
            .await
            .unwrap();
    });
}

#[test]
fn reserved_vips_are_journaled_before_any_takeover_which_then_writes_nothing() {
    run(|_lab| async move {
        let state = TempDir::new("journal-reserve");
        let set = vips();
        let journal = state.path().join(JOURNAL_FILE);
        {
            let mut agent = JournaledVips::new(VipManager::new().unwrap(), state.path()).unwrap();
            agent.recover(&[], &Default::default()).await.unwrap();
            agent.reserve(&set).unwrap();
            let reserved = std::fs::read(&journal).expect("journal written at reserve");
            let written = std::fs::metadata(&journal).unwrap().modified().unwrap();
            // Take over, release, take over again: the journal file is never rewritten.
            agent.add(&set).await.unwrap();
            agent.remove(&set).await.unwrap();
            agent.add(&set).await.unwrap();
            assert_eq!(std::fs::read(&journal).unwrap(), reserved);
            assert_eq!(
                std::fs::metadata(&journal).unwrap().modified().unwrap(),
                written
            );
            // Dropped while holding the VIPs: kill -9.
        }
        let manager = VipManager::new().unwrap();
        let mut restarted = JournaledVips::new(manager.clone(), state.path()).unwrap();
        let recovery = restarted.recover(&[], &Default::default()).await.unwrap();
        assert_eq!(recovery.removed.len(), set.len());
        assert_eq!(manager.present(&set).await.unwrap(), vec![]);
    });
}

#[test]
fn a_killed_agent_s_macvlan_routes_and_rules_are_removed_on_recovery_and_only_macvlans_deleted() {
    use hav_agent::net::{
        Ensured, NetworkEntries, RouteManager, RouteSpec, RuleSpec, VmacManager, VmacSpec,
    };
    run(|_lab| async move {
        let state = TempDir::new("journal-network");
        let vmac = VmacSpec {
            name: "hvvmac.7".into(),
            base: IFACE_A.into(),
            mac: [0, 0, 0x5e, 0, 1, 7],
            ipv6: false,
        };
        let route = RouteSpec {
            to: IpAddr::from([203, 0, 113, 0]),
            prefix_len: 24,
            kind: "unicast".into(),
            via: Some(IpAddr::from(V4_B)),
            dev: None,
            src: None,
            table: 100,
            metric: Some(7),
        };
        let blackhole = RouteSpec {
            kind: "blackhole".into(),
            via: None,
            table: 101,
            metric: None,
            ..route.clone()
        };
        let rule = RuleSpec {
            ipv6: false,
            from: Some((IpAddr::from([198, 51, 100, 10]), 32)),
            to: None,
            table: 100,
            priority: Some(1000),
            fwmark: None,
            iif: None,
            oif: None,
        };
        let route6 = RouteSpec {
            to: "2001:db8:1::".parse().unwrap(),
            prefix_len: 64,
            kind: "unicast".into(),
            via: Some(IpAddr::from(V6_B)),
            dev: Some(IFACE_A.into()),
            src: None,
            table: 100,
            metric: None,
        };
        let rule6 = RuleSpec {
            ipv6: true,
            from: Some(("2001:db8::10".parse().unwrap(), 128)),
            fwmark: Some(7),
            ..rule.clone()
        };
        let mut entries = NetworkEntries::default();
        entries.vmacs.insert(vmac.clone());
        entries
            .routes
            .extend([route.clone(), blackhole.clone(), route6.clone()]);
        entries.rules.extend([rule.clone(), rule6.clone()]);
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        {
            let manager = VipManager::new().unwrap();
            let mut agent = JournaledVips::new(manager.clone(), state.path()).unwrap();
            agent.recover(&[], &Default::default()).await.unwrap();
            agent.reserve_network(&entries).unwrap();
            let vmacs = VmacManager::new(manager.handle().clone());
            assert_eq!(vmacs.ensure(&vmac).await.unwrap(), Ensured::Created);
            assert_eq!(vmacs.ensure(&vmac).await.unwrap(), Ensured::Present);
            let routes = RouteManager::new(manager.handle().clone());
            let (rules, all_routes) = (
                vec![rule.clone(), rule6.clone()],
                vec![route.clone(), blackhole.clone(), route6.clone()],
            );
            routes.add(&rules, &all_routes).await.unwrap();
            routes.add(&rules, &all_routes).await.unwrap();
            // Dropped here holding all of it: kill -9.
        }
        let link = ip(&["-o", "link", "show", "dev", "hvvmac.7"]);
        assert!(link.contains("00:00:5e:00:01:07"), "{link}");
        assert!(ip(&["route", "show", "table", "100"]).contains("203.0.113.0/24 via 198.51.100.2"));
        assert!(ip(&["route", "show", "table", "101"]).contains("blackhole 203.0.113.0/24"));
        assert!(ip(&["rule", "show"]).contains("1000:\tfrom 198.51.100.10 lookup 100"));
        assert!(
            ip(&["-6", "route", "show", "table", "100"])
                .contains("2001:db8:1::/64 via 2001:db8::2")
        );
        assert!(ip(&["-6", "rule", "show"]).contains("from 2001:db8::10 fwmark 0x7 lookup 100"));

        let mut restarted = JournaledVips::new(VipManager::new().unwrap(), state.path()).unwrap();
        let recovery = restarted.recover(&[], &Default::default()).await.unwrap();
        assert_eq!(
            recovery.removed_network.len(),
            6,
            "{:?}",
            recovery.removed_network
        );
        assert_eq!(ip(&["-o", "link", "show", "dev", "hvvmac.7"]), "");
        assert!(!ip(&["route", "show", "table", "all"]).contains("203.0.113.0"));
        assert!(!ip(&["rule", "show"]).contains("lookup 100"));
        assert!(!ip(&["-6", "route", "show", "table", "all"]).contains("2001:db8:1::"));
        assert!(!ip(&["-6", "rule", "show"]).contains("lookup 100"));
        // A link of a journaled macvlan's name that is no macvlan is never deleted.
        let not_ours = VmacSpec {
            name: IFACE_A.into(),
            ..vmac
        };
        let vmacs = VmacManager::new(VipManager::new().unwrap().handle().clone());
        assert!(vmacs.remove(&not_ours).await.is_err());
        assert!(!ip(&["-o", "link", "show", "dev", IFACE_A]).is_empty());
    });
}
