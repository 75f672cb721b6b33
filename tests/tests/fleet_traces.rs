//! One trace across the fleet: a push from havctl is a `fleet.push` trace in hav-coordinator,
//! and the hav-agent that applies it continues that trace with its `agent.command` span, whose
//! parent is the coordinator's `fleet.apply_node` span. The W3C trace context crosses the real
//! mTLS gRPC stream between two real processes in their own namespaces; both export to one
//! OTLP/gRPC collector in this test, reached over the LAN.
//!
//! Needs root (namespaces) and built binaries: `cargo build -p hav-agent -p hav-coordinator -p
//! havctl` first.

use std::net::SocketAddr;

use hav_tests::fleet::{CLIENT_HOST, CLIENT_OCTET, Error, FleetLab};
use hav_tests::otlp::Collector;
use hav_tests::topology::{Lab, LanSpec};

const OTLP_PORT: u16 = 4317;
const NODES: [(&str, u8); 2] = [("a1", 11), ("a2", 12)];

/// A collector in `host`'s namespace; it stops with the test process.
fn collector_in(lab: &Lab, host: &str, address: SocketAddr) -> Collector {
    // Bound on a thread inside the namespace: the socket stays there.
    let listener = lab
        .host(host)
        .expect("host")
        .in_thread(move || Ok(std::net::TcpListener::bind(address)))
        .expect("thread")
        .join()
        .expect("no panic")
        .expect("in namespace")
        .expect("collector binds");
    Collector::serve(listener)
}

#[test]
fn a_push_is_one_trace_from_the_coordinator_into_the_agent() -> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    let address = SocketAddr::new(LanSpec::PRIMARY.ipv4(CLIENT_OCTET).into(), OTLP_PORT);
    let mut collector = collector_in(&lab.lab, CLIENT_HOST, address);
    lab.coordinator_args = vec!["--otlp-endpoint".into(), format!("http://{address}")];
    lab.agent_extra = format!("[telemetry]\notlp_endpoint = \"http://{address}\"\n");
    lab.start_coordinator()?;
    for (node, _) in NODES {
        lab.start_agent(node)?;
    }
    for (node, _) in NODES {
        lab.wait_link_up(node, 1)?;
    }

    let iface = &lab.nodes["a1"].1;
    let mut fleet = format!(
        "[[group]]\nname = \"alpha\"\ninterface = \"{iface}\"\nvips = [\"198.51.100.100/24\"]\n\
         first_vrid = 10\n"
    );
    for (name, octet) in NODES {
        fleet.push_str(&format!(
            "[[group.node]]\nname = \"{name}\"\naddress = \"{}\"\n",
            LanSpec::PRIMARY.ipv4(octet)
        ));
    }
    let path = lab.write("fleet.toml", &fleet)?;
    let out = lab.havctl(&["push-config", "--fleet", &path])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);

    let push = collector.wait_for("the coordinator's fleet.push", |s| {
        s.service == "hav-coordinator" && s.span.name == "fleet.push"
    });
    assert!(push.span.parent_span_id.is_empty(), "a root span");
    assert_eq!(push.string("fleet.operator"), "olga");
    assert_eq!(push.string("fleet.outcome"), "applied");
    // The pair is changed one node at a time, under one fleet.apply_pair span.
    let pair = collector.wait_for("fleet.apply_pair under fleet.push", |s| {
        s.span.name == "fleet.apply_pair" && s.is_child_of(&push)
    });
    assert_eq!(pair.string("fleet.nodes"), "a1,a2");
    for (node, _) in NODES {
        let apply = collector.wait_for("the coordinator's fleet.apply_node", |s| {
            s.service == "hav-coordinator"
                && s.span.name == "fleet.apply_node"
                && s.is_child_of(&pair)
                && s.string("fleet.node") == node
        });
        assert_eq!(apply.string("fleet.outcome"), "applied");
        let command = collector.wait_for("the agent's agent.command under fleet.apply_node", |s| {
            s.service == "hav-agent" && s.span.name == "agent.command" && s.is_child_of(&apply)
        });
        assert_eq!(command.host, node, "the agent that applied it");
        assert_eq!(command.string("command.kind"), "apply_config");
        // The agent acknowledged after its work: its span lies inside the coordinator's.
        assert!(command.span.start_time_unix_nano >= apply.span.start_time_unix_nano);
        assert!(command.span.end_time_unix_nano <= apply.span.end_time_unix_nano);
    }
    Ok(())
}
