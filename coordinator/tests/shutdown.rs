//! A stop ends every long-lived stream with `UNAVAILABLE` and the reason, never with a clean end
//! that reads as "nothing more to say": the services end these streams on the same signal, so
//! the two race, and the stop must win every time. Many rounds, a real mTLS coordinator each.

#![allow(clippy::unwrap_used)]

mod support;

use hav_coordinator::closing::SHUTTING_DOWN;
use hav_proto::identity::Role;
use hav_proto::transport::{self, ClientTlsFiles};
use hav_proto::v1::agent_message::Body as AgentBody;
use hav_proto::v1::agent_service_client::AgentServiceClient;
use hav_proto::v1::{AgentMessage, Hello, PROTOCOL_VERSION, WatchEventsRequest};
use havctl::certs::{IssueRequest, Kind};
use support::{Pki, TIMEOUT, start};

const ROUNDS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_agent_and_watch_streams_with_the_reason_every_time() {
    let pki = Pki::new();
    let agent_cert = pki.issue(IssueRequest::new(Kind::Agent, "lb-1", 30));
    for round in 0..ROUNDS {
        let data = tempfile::tempdir().unwrap();
        let coordinator = start(&pki, data.path()).await;
        let tls = transport::client_config(&ClientTlsFiles {
            ca: pki.ca(),
            cert: agent_cert.cert.clone(),
            key: agent_cert.key.clone(),
        })
        .unwrap();
        let channel = transport::connect(&coordinator.local_addr.to_string(), tls)
            .await
            .unwrap();
        let (to_coordinator, outbound) = tokio::sync::mpsc::channel::<AgentMessage>(8);
        let hello = Hello {
            software_version: "test".into(),
            protocol_version: PROTOCOL_VERSION,
            node_name: "lb-1".into(),
            ..Hello::default()
        };
        to_coordinator
            .send(AgentMessage {
                body: Some(AgentBody::Hello(hello)),
            })
            .await
            .unwrap();
        let outbound = futures::stream::unfold(outbound, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        let mut agent = AgentServiceClient::new(channel)
            .connect(outbound)
            .await
            .unwrap()
            .into_inner();
        agent.message().await.unwrap();
        let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
        let mut watch = havctl::client::connect(&viewer)
            .await
            .unwrap()
            .watch_events(WatchEventsRequest::default())
            .await
            .unwrap()
            .into_inner();

        coordinator.shutdown().await.unwrap();
        let agent_end = tokio::time::timeout(TIMEOUT, agent.message())
            .await
            .unwrap();
        assert!(
            matches!(&agent_end, Err(s) if s.code() == tonic::Code::Unavailable && s.message() == SHUTTING_DOWN),
            "round {round}: the agent's stream ended with {agent_end:?}"
        );
        // The watcher may see lb-1 leave first.
        let watch_end = loop {
            match tokio::time::timeout(TIMEOUT, watch.message())
                .await
                .unwrap()
            {
                Ok(Some(_)) => continue,
                end => break end,
            }
        };
        assert!(
            matches!(&watch_end, Err(s) if s.code() == tonic::Code::Unavailable && s.message() == SHUTTING_DOWN),
            "round {round}: the watch ended with {watch_end:?}"
        );
        drop(to_coordinator);
    }
}
