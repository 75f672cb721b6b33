//! Watches the host's links and addresses so that instances follow interfaces that come and go.
//!
//! Guarantees: event-driven (rtnetlink `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR` and
//! `RTNLGRP_IPV6_IFADDR`); every link or address notification, and every lost batch of them
//! (overrun, a failed socket), wakes [`HostWatch::changed`] at least once after it happened, so
//! the loop re-reads the host after the last change. Wake-ups coalesce: a burst of
//! notifications costs the loop one re-read.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Wait before subscribing again after the netlink socket failed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// The running watch; it stops when dropped.
pub struct HostWatch {
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl HostWatch {
    /// Subscribes in the background (in the calling thread's network namespace).
    pub fn spawn() -> Self {
        let changed = Arc::new(Notify::new());
        let task = tokio::spawn(watch(changed.clone()));
        Self { changed, task }
    }

    /// Resolves once a link or address changed since the last call returned.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

impl Drop for HostWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(changed: Arc<Notify>) {
    loop {
        let reason = subscribe(&changed).await;
        tracing::warn!(%reason, "link watch interrupted; subscribing again");
        // Whatever happened meanwhile is seen by the re-read this wake-up causes.
        changed.notify_one();
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

/// Forwards notifications until netlink fails; the reason.
async fn subscribe(changed: &Notify) -> String {
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
    changed.notify_one();
    while let Some((message, _)) = notifications.next().await {
        match message.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewLink(_)
                | RouteNetlinkMessage::DelLink(_)
                | RouteNetlinkMessage::NewAddress(_)
                | RouteNetlinkMessage::DelAddress(_),
            )
            | NetlinkPayload::Overrun(_) => changed.notify_one(),
            _ => {}
        }
    }
    connection.abort();
    "netlink connection closed".to_owned()
}
