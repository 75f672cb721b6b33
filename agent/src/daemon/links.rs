//! Watches the host's links and addresses so that instances follow interfaces that come and go.
//!
//! Guarantees: event-driven (rtnetlink `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR` and
//! `RTNLGRP_IPV6_IFADDR`); every link or address notification, and every lost batch of them
//! (overrun, a failed socket), wakes [`HostWatch::changed`] at least once after it happened, so
//! the loop re-reads the host after the last change. Wake-ups coalesce: a burst of
//! notifications costs the loop one re-read.

use std::time::Duration;

use futures::StreamExt;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Wait before subscribing again after the netlink socket failed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// The running watch; it stops when dropped.
pub struct HostWatch {
    /// One pending wake-up at most: a change while one is pending is covered by its re-read.
    changed: mpsc::Receiver<()>,
    task: JoinHandle<()>,
}

/// The watch's side: wakes the loop, or finds a wake-up already pending.
#[derive(Clone)]
struct Changed(mpsc::Sender<()>);

impl Changed {
    fn notify(&self) {
        // Full: a wake-up is pending and the re-read it causes comes after this change.
        let _ = self.0.try_send(());
    }
}

impl HostWatch {
    /// Subscribes in the background (in the calling thread's network namespace).
    pub fn spawn() -> Self {
        let (sender, changed) = mpsc::channel(1);
        let task = tokio::spawn(watch(Changed(sender)));
        Self { changed, task }
    }

    /// Resolves once a link or address changed since the last call returned.
    pub async fn changed(&mut self) {
        if self.changed.recv().await.is_none() {
            // The watch task is gone (only at drop): nothing will change any more.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for HostWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(changed: Changed) {
    loop {
        let reason = subscribe(&changed).await;
        tracing::warn!(%reason, "link watch interrupted; subscribing again");
        // Whatever happened meanwhile is seen by the re-read this wake-up causes.
        changed.notify();
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

/// Forwards notifications until netlink fails; the reason.
async fn subscribe(changed: &Changed) -> String {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ];
    let (connection, _handle, mut notifications) =
        match rtnetlink::new_multicast_connection(&groups) {
            Ok(parts) => parts,
            Err(error) => return format!("netlink subscription failed: {error}"),
        };
    let connection = tokio::spawn(connection);
    // Subscribed: anything before this point is in the first re-read.
    changed.notify();
    while let Some((message, _)) = notifications.next().await {
        match message.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewLink(_)
                | RouteNetlinkMessage::DelLink(_)
                | RouteNetlinkMessage::NewAddress(_)
                | RouteNetlinkMessage::DelAddress(_),
            )
            | NetlinkPayload::Overrun(_) => changed.notify(),
            _ => {}
        }
    }
    connection.abort();
    "netlink connection closed".to_owned()
}
