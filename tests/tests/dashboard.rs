//! `havctl dashboard` end to end: a real fleet (hav-coordinator and a pair of hav-agents in
//! namespaces, real certificates, a fleet file pushed), the dashboard as a real havctl process in
//! the coordinator's namespace, and headless Chromium loading its page there. The page shows the
//! VIP's holder; when the master agent is killed it shows the new holder pushed over its event
//! stream (the page is never reloaded); a viewer's drain is refused by the coordinator and the
//! page says so.
//!
//! Screenshots (a steady fleet, the failover, the viewer's refusal) are written to the lab's log
//! dir and copied to `target/test-artifacts/dashboard/`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hav_tests::bench::sibling_binary;
use hav_tests::browser::Browser;
use hav_tests::fleet::{COORDINATOR_HOST, Error, FleetLab, wait_file_count};
use hav_tests::netns::{NsProcess, SpawnSpec};
use hav_tests::topology::LanSpec;

const NODES: [(&str, u8); 2] = [("a1", 11), ("a2", 12)];
const VIP: &str = "198.51.100.100";
const INSTANCE: &str = "alpha-vip0";
/// Where the timeline's failover links point (nothing listens there: only the href is checked).
const TRACE_URL: &str =
    "http://127.0.0.1:16686/search?node={node}&instance={instance}&vrid={vrid}&start={start_us}";
/// Safety net of every wait on the page (never reached when things work).
const WAIT: Duration = Duration::from_secs(15);
/// The new holder must be on the page this soon after the VIP moved.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

fn vip() -> IpAddr {
    VIP.parse().expect("literal address")
}

fn fleet_file(lab: &FleetLab) -> String {
    let iface = &lab.nodes["a1"].1;
    let mut text = format!(
        "[[group]]\nname = \"alpha\"\ninterface = \"{iface}\"\nvips = [\"{VIP}/24\"]\n\
         first_vrid = 10\nadvert_interval = \"200ms\"\n"
    );
    for (name, octet) in NODES {
        text.push_str(&format!(
            "[[group.node]]\nname = \"{name}\"\naddress = \"{}\"\n",
            LanSpec::PRIMARY.ipv4(octet)
        ));
    }
    text
}

/// Coordinator, both agents, the fleet pushed; a1 master holding the VIP, as the coordinator
/// sees it too.
fn up(lab: &mut FleetLab) -> Result<(), Error> {
    lab.start_coordinator()?;
    for (node, _) in NODES {
        lab.start_agent(node)?;
    }
    for (node, _) in NODES {
        lab.wait_link_up(node, 1)?;
    }
    let path = lab.write("fleet.toml", &fleet_file(lab))?;
    let out = lab.havctl(&["push-config", "--fleet", &path])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    lab.wait_vip("a1", vip(), true)?;
    lab.wait_masters(&[(INSTANCE, "a1")])?;
    Ok(())
}

/// `havctl dashboard` with the certificate `<stem>.pem`, in the coordinator's namespace; the
/// process and the URL it printed.
fn start_dashboard(lab: &FleetLab, stem: &str) -> Result<(NsProcess, String), Error> {
    let certs = lab.lab.log_dir().join("certs");
    let file = |name: String| certs.join(name).display().to_string();
    let spec = SpawnSpec::new(format!("dashboard-{stem}"), sibling_binary("havctl")?).args([
        "--coordinator".to_owned(),
        lab.coordinator_address(),
        "--cert".into(),
        file(format!("{stem}.pem")),
        "--key".into(),
        file(format!("{stem}.key")),
        "--ca".into(),
        file("ca.pem".into()),
        "dashboard".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--refresh".into(),
        "2".into(),
        "--trace-url".into(),
        TRACE_URL.into(),
    ]);
    let process = lab.lab.spawn(COORDINATOR_HOST, spec)?;
    let log = process.log_path().to_owned();
    wait_file_count(
        &log,
        "havctl dashboard: http://",
        1,
        Duration::from_secs(20),
    )?;
    let text = std::fs::read_to_string(&log)?;
    let url = text
        .lines()
        .find_map(|line| line.strip_prefix("havctl dashboard: "))
        .ok_or_else(|| format!("no URL in {}", log.display()))?
        .trim()
        .to_owned();
    Ok((process, url))
}

/// The JavaScript condition "the VIP's row names `holder`".
fn holder_is(holder: &str) -> String {
    format!(
        "document.querySelector('[data-instance=\"{INSTANCE}\"]')?.dataset.holders === '{holder}'"
    )
}

/// `target/test-artifacts/dashboard/` (the test binary is `target/<profile>/deps/…`).
fn artifacts_dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or("the test binary is not under target/<profile>/deps")?;
    let dir = target.join("test-artifacts").join("dashboard");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A screenshot in the lab's log dir, copied to the artifacts dir.
fn screenshot(browser: &mut Browser, lab: &FleetLab, name: &str) -> Result<PathBuf, Error> {
    let path = lab.lab.log_dir().join(name);
    browser.screenshot(&path)?;
    let copy = artifacts_dir()?.join(name);
    std::fs::copy(&path, &copy)?;
    assert!(is_png(&copy), "{} is a PNG", copy.display());
    Ok(copy)
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path)
        .is_ok_and(|bytes| bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000)
}

#[test]
fn the_dashboard_follows_a_failover_live_and_shows_a_viewers_drain_refused() -> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    up(&mut lab)?;
    let (dashboard, url) = start_dashboard(&lab, "operator-olga")?;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    // Without the token the server answers nothing but a refusal.
    let bare = url.split('?').next().unwrap_or_default().to_owned();
    let refused = lab.lab.exec(
        COORDINATOR_HOST,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{bare}api/status"),
        ],
    )?;
    assert_eq!(refused.stdout.trim(), "401", "{}", refused.stderr);

    let mut browser = Browser::start(&lab.lab, COORDINATOR_HOST, "chromium")?;
    browser.navigate(&url)?;
    // The steady fleet: a1 holds the VIP, both nodes connected on config 1, SLA for the group.
    browser.wait_for(&holder_is("a1"), WAIT)?;
    browser.wait_for("document.querySelector('[data-sla=\"group:alpha\"]')", WAIT)?;
    let vip_cell = browser.text(&format!("[data-instance=\"{INSTANCE}\"] td.vip"))?;
    assert!(
        vip_cell
            .as_deref()
            .unwrap_or_default()
            .contains(&format!("{VIP}/24")),
        "{vip_cell:?}"
    );
    for (node, _) in NODES {
        let card = browser.text(&format!("[data-node=\"{node}\"][data-connected=\"true\"]"))?;
        assert!(
            card.as_deref().unwrap_or_default().contains("config 1/1"),
            "{node}: {card:?}"
        );
    }
    assert_eq!(
        browser.text("[data-role=\"alarms\"]")?.as_deref(),
        Some("No alarms")
    );
    assert_eq!(
        browser.text("[data-role=\"link-text\"]")?.as_deref(),
        Some("live")
    );
    let who = browser.text("[data-role=\"who\"]")?.unwrap_or_default();
    assert!(who.contains("olga") && who.contains("operator"), "{who}");
    let steady = screenshot(&mut browser, &lab, "dashboard-steady.png")?;
    let loaded_at = browser.evaluate("document.body.dataset.loadedAt")?;

    // An operator's priority override from the page moves the VIP (a2 preempts), the card
    // says so, and clearing it gives the VIP back.
    browser.evaluate(
        "(() => { const i = document.querySelector('[data-node=\"a1\"] [data-role=\"priority-input\"]'); \
         i.value = '40'; i.dispatchEvent(new Event('input', { bubbles: true })); })()",
    )?;
    browser.click("[data-node=\"a1\"] button[data-action=\"priority\"]")?;
    browser.wait_for(&holder_is("a2"), WAIT)?;
    browser.wait_for(
        "document.querySelector('[data-node=\"a1\"] [data-role=\"overridden\"]')",
        WAIT,
    )?;
    let intents = lab.havctl(&["priority", "list", "-o", "json"])?;
    assert!(
        intents.stdout.contains("\"priority\": 40"),
        "{}",
        intents.stdout
    );
    browser.click("[data-node=\"a1\"] button[data-action=\"priority-clear\"]")?;
    browser.wait_for(&holder_is("a1"), WAIT)?;
    lab.wait_vip("a1", vip(), true)?;
    browser.wait_for(
        "!document.querySelector('[data-node=\"a1\"] [data-role=\"overridden\"]')",
        WAIT,
    )?;

    // The master dies without a word; VRRP moves the VIP; the page follows over /events.
    lab.agent("a1")?.kill()?;
    lab.wait_vip("a2", vip(), true)?;
    let moved = Instant::now();
    browser.wait_for(&holder_is("a2"), WAIT)?;
    let lag = moved.elapsed();
    eprintln!("the page showed the new holder {lag:?} after the VIP moved");
    assert!(
        lag <= LIVE_WITHIN,
        "the page took {lag:?} to show a2 holding the VIP"
    );
    // The timeline has the takeover with its cause and a link to its trace.
    let takeover = format!(
        "[...document.querySelectorAll('[data-kind=\"transition\"][data-node=\"a2\"]')]\
         .find(e => e.textContent.includes('{INSTANCE}: backup → master'))"
    );
    browser.wait_for(&takeover, WAIT)?;
    let cause = browser.evaluate(&format!("{takeover}.querySelector('.cause')?.textContent"))?;
    assert!(
        cause.as_str().is_some_and(|c| !c.is_empty()),
        "a cause: {cause}"
    );
    let href = browser.evaluate(&format!(
        "{takeover}.querySelector('a')?.getAttribute('href')"
    ))?;
    let href = href.as_str().unwrap_or_default();
    assert!(
        href.starts_with(
            "http://127.0.0.1:16686/search?node=a2&instance=alpha-vip0&vrid=10&start="
        ),
        "trace link: {href}"
    );
    // a1's link went with it: an alarm, and its card says so.
    browser.wait_for(
        "document.querySelector('[data-kind=\"disconnected\"][data-subject=\"a1\"]')",
        WAIT,
    )?;
    browser.wait_for(
        "document.querySelector('[data-node=\"a1\"][data-connected=\"false\"]')",
        WAIT,
    )?;
    let failover = screenshot(&mut browser, &lab, "dashboard-failover.png")?;
    assert_eq!(
        browser.evaluate("document.body.dataset.loadedAt")?,
        loaded_at,
        "never reloaded"
    );

    // A viewer's dashboard offers the button; the coordinator refuses and the page says why.
    let (_viewer_dashboard, viewer_url) = start_dashboard(&lab, "operator-vera")?;
    browser.navigate(&viewer_url)?;
    browser.wait_for(&holder_is("a2"), WAIT)?;
    let who = browser.text("[data-role=\"who\"]")?.unwrap_or_default();
    assert!(who.contains("vera") && who.contains("viewer"), "{who}");
    browser.click("[data-node=\"a2\"] button[data-action=\"drain\"]")?;
    browser.click("[data-node=\"a2\"] button[data-action=\"confirm\"]")?;
    browser.wait_for(
        "document.querySelector('[data-role=\"notice\"]')?.textContent.includes('refused')",
        WAIT,
    )?;
    let notice = browser.text("[data-role=\"notice\"]")?.unwrap_or_default();
    assert!(notice.contains("viewer vera"), "{notice}");
    let card = browser.text("[data-node=\"a2\"] [data-role=\"node-message\"]")?;
    assert_eq!(card.as_deref(), Some(notice.as_str()));
    let refused = screenshot(&mut browser, &lab, "dashboard-viewer-refused.png")?;
    // Nothing moved.
    assert!(
        lab.lab
            .addresses("a2", &lab.nodes["a2"].1)?
            .contains(&vip())
    );
    let status = lab.status()?;
    let a2 = (status.as_array().into_iter().flatten())
        .find(|node| node["name"] == "a2")
        .ok_or("a2 missing")?;
    assert_eq!(a2["drained"], false, "{a2}");

    assert!(
        browser.exceptions().is_empty(),
        "page errors: {:?}",
        browser.exceptions()
    );
    assert!(
        dashboard.log().contains("as operator olga"),
        "{}",
        dashboard.log()
    );
    eprintln!(
        "screenshots: {}, {}, {}",
        steady.display(),
        failover.display(),
        refused.display()
    );
    Ok(())
}

#[test]
fn a_rollout_shows_its_progress_and_its_drained_node_on_the_page() -> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    up(&mut lab)?;
    let (_dashboard, url) = start_dashboard(&lab, "operator-olga")?;
    let mut browser = Browser::start(&lab.lab, COORDINATOR_HOST, "chromium")?;
    browser.navigate(&url)?;
    browser.wait_for(&holder_is("a1"), WAIT)?;

    let out = lab.havctl(&[
        "maintenance",
        "rollout",
        "--group",
        "alpha",
        "--health-timeout",
        "30",
        "--detach",
        "-o",
        "json",
        // Each node stays drained long enough to be seen.
        "--exec",
        "/bin/sleep",
        "1.5",
    ])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    // Mid-way: the job is on the page with its progress, and a drained node is an alarm.
    browser.wait_for("document.querySelector('[data-kind=\"draining\"]')", WAIT)?;
    browser.wait_for(
        "document.querySelector('[data-rollout=\"1\"].running')",
        WAIT,
    )?;
    let rollout = screenshot(&mut browser, &lab, "dashboard-rollout.png")?;
    browser.wait_for(
        "document.querySelector('[data-rollout=\"1\"].done')",
        Duration::from_secs(30),
    )?;
    let job = browser.text("[data-rollout=\"1\"]")?.unwrap_or_default();
    assert!(job.contains("done · 2/2 nodes"), "{job}");
    assert!(
        job.contains("a1: done") && job.contains("a2: done"),
        "{job}"
    );
    // Undrained, preempt brings the VIP back to a1; no alarm is left.
    browser.wait_for(&holder_is("a1"), WAIT)?;
    browser.wait_for(
        "document.querySelector('[data-role=\"alarms\"]').textContent === 'No alarms'",
        WAIT,
    )?;
    assert!(
        browser.exceptions().is_empty(),
        "page errors: {:?}",
        browser.exceptions()
    );
    eprintln!("screenshot: {}", rollout.display());
    Ok(())
}
