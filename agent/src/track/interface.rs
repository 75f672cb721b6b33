//! Interface tracker: a link, by name, is up when it is administratively up (`IFF_UP`) and has
//! carrier (`IFF_LOWER_UP` and `IFF_RUNNING`); down otherwise, and down while it does not exist.
//!
//! Guarantees: event-driven, no polling. The tracker subscribes to `RTNLGRP_LINK` before it dumps
//! the links, and applies the dump and then every notification in order, so the last state it
//! reports is the kernel's current one (any change after the dump snapshot produces a later
//! notification). A link renamed away counts as gone; a link renamed to the tracked name is
//! picked up. If notifications are lost (socket buffer overrun), the links are dumped again; if
//! the netlink socket fails, the tracker subscribes again after a second, keeping its last
//! reported health meanwhile. It watches the network namespace of the runtime thread that runs
//! it (the daemon's threads all share one; tests use a current-thread runtime in a namespace).

use std::time::Duration;

use futures::StreamExt;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

use super::{Health, Reporter};

/// Configuration of an interface tracker.
#[derive(Debug, Clone)]
pub struct InterfaceSpec {
    /// Link name, e.g. `eth0`.
    pub name: String,
}

/// Longest link name the kernel accepts (`IFNAMSIZ` - 1).
const MAX_NAME: usize = 15;

impl InterfaceSpec {
    /// Rejects names the kernel could never give a link, which would otherwise be down forever.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(format!("link name {name:?} must be 1 to {MAX_NAME} bytes"));
        }
        if name == "."
            || name == ".."
            || name.contains(['/', ':'])
            || name.contains(char::is_whitespace)
        {
            return Err(format!("{name:?} is not a valid link name"));
        }
        Ok(())
    }
}

/// Health of a link from its flags.
pub fn link_health(flags: LinkFlags) -> Health {
    if !flags.contains(LinkFlags::Up) {
        Health::down("administratively down")
    } else if !flags.contains(LinkFlags::LowerUp) {
        Health::down("no carrier")
    } else if !flags.contains(LinkFlags::Running) {
        Health::down("not running (operational state not up)")
    } else {
        Health::Up
    }
}

/// Wait before subscribing again after the netlink socket failed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

pub(crate) async fn run(spec: InterfaceSpec, mut reporter: Reporter) {
    loop {
        let Err(reason) = track(&spec, &mut reporter).await else {
            return; // The receiver is gone.
        };
        tracing::warn!(tracker = %reporter.name(), %reason, "interface tracking interrupted; subscribing again");
        // Keep the last reported health (it was true when netlink failed) unless there is none.
        if !reporter.has_reported() && reporter.report(Health::down(reason)).await.is_err() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

/// Tracks until the receiver is gone (`Ok`) or netlink fails (`Err` with the reason).
async fn track(spec: &InterfaceSpec, reporter: &mut Reporter) -> Result<(), String> {
    let (connection, handle, mut notifications) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
            .map_err(|error| format!("netlink subscription failed: {error}"))?;
    // The connection task is aborted when this future is dropped (tracker stopped).
    let _connection = AbortOnDrop(tokio::spawn(connection));

    let mut link = TrackedLink::new(&spec.name);
    resync(&handle, &mut link).await?;
    if reporter.report(link.health()).await.is_err() {
        return Ok(());
    }
    while let Some((message, _)) = notifications.next().await {
        match message.payload {
            NetlinkPayload::InnerMessage(message) => link.apply(&message),
            NetlinkPayload::Overrun(_) => {
                // Notifications were lost: the dump tells the current state.
                tracing::warn!(tracker = %reporter.name(), "netlink notifications overran; dumping links again");
                link = TrackedLink::new(&spec.name);
                resync(&handle, &mut link).await?;
            }
            _ => continue,
        }
        if reporter.report(link.health()).await.is_err() {
            return Ok(());
        }
    }
    Err("netlink connection closed".to_owned())
}

/// Applies a dump of all links (notifications queue up meanwhile and are applied after).
async fn resync(handle: &rtnetlink::Handle, link: &mut TrackedLink<'_>) -> Result<(), String> {
    let mut dump = handle.link().get().execute();
    while let Some(message) = dump.next().await {
        let message = message.map_err(|error| format!("netlink link dump failed: {error}"))?;
        link.apply(&RouteNetlinkMessage::NewLink(message));
    }
    Ok(())
}

/// What the tracker knows about the link with the tracked name.
#[derive(Debug)]
struct TrackedLink<'a> {
    name: &'a str,
    /// Index and flags of the link that has the name, if one has.
    present: Option<(u32, LinkFlags)>,
    gone_reason: String,
}

impl<'a> TrackedLink<'a> {
    fn new(name: &'a str) -> Self {
        Self {
            name,
            present: None,
            gone_reason: format!("no link named {name}"),
        }
    }

    fn health(&self) -> Health {
        match self.present {
            Some((_, flags)) => link_health(flags),
            None => Health::down(self.gone_reason.clone()),
        }
    }

    fn apply(&mut self, message: &RouteNetlinkMessage) {
        let tracked_index = self.present.map(|(index, _)| index);
        match message {
            RouteNetlinkMessage::NewLink(link) => {
                let index = link.header.index;
                match link_name(link) {
                    Some(name) if name == self.name => {
                        self.present = Some((index, link.header.flags));
                    }
                    Some(other) if tracked_index == Some(index) => {
                        self.present = None;
                        self.gone_reason = format!("{} renamed to {other}", self.name);
                    }
                    // A message without a name only ever comes for an existing index.
                    None if tracked_index == Some(index) => {
                        self.present = Some((index, link.header.flags));
                    }
                    _ => {}
                }
            }
            RouteNetlinkMessage::DelLink(link) if tracked_index == Some(link.header.index) => {
                self.present = None;
                self.gone_reason = format!("{} deleted", self.name);
            }
            _ => {}
        }
    }
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::IfName(name) => Some(name.as_str()),
            _ => None,
        })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_link(index: u32, name: &str, flags: LinkFlags) -> RouteNetlinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = flags;
        link.attributes.push(LinkAttribute::IfName(name.to_owned()));
        RouteNetlinkMessage::NewLink(link)
    }

    fn is_up(health: Health) -> bool {
        health == Health::Up
    }

    #[test]
    fn impossible_link_names_are_rejected() {
        let spec = |name: &str| InterfaceSpec {
            name: name.to_owned(),
        };
        assert!(spec("eth0").validate().is_ok());
        assert!(spec("a-fifteen-bytes").validate().is_ok());
        for bad in ["", "sixteen-bytes-xx", "a/b", "a b", "..", "eth0:1"] {
            assert!(spec(bad).validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_decide_health() {
        let up = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running;
        assert!(is_up(link_health(up)));
        assert!(!is_up(link_health(LinkFlags::LowerUp | LinkFlags::Running)));
        assert!(!is_up(link_health(LinkFlags::Up | LinkFlags::Running)));
        assert!(!is_up(link_health(LinkFlags::Up | LinkFlags::LowerUp)));
    }

    #[test]
    fn rename_and_delete_take_the_link_away() {
        let up = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running;
        let mut link = TrackedLink::new("eth9");
        assert!(!is_up(link.health()));
        link.apply(&new_link(7, "other", up));
        assert!(!is_up(link.health()));
        link.apply(&new_link(7, "eth9", up));
        assert!(is_up(link.health()));
        link.apply(&new_link(7, "eth10", up));
        assert_eq!(link.health(), Health::down("eth9 renamed to eth10"));
        link.apply(&new_link(8, "eth9", up));
        assert!(is_up(link.health()));
        let mut deleted = LinkMessage::default();
        deleted.header.index = 8;
        link.apply(&RouteNetlinkMessage::DelLink(deleted));
        assert!(!is_up(link.health()));
    }
}
