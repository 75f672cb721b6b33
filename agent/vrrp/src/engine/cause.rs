//! Why a virtual router or sync group changed state.
//!
//! Every [`super::Action::StateChanged`] and [`super::Action::SyncGroupChanged`] carries a
//! [`Cause`]; its `Display` is the operator-readable reason that logs and notify hooks show.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::State;
use crate::types::Priority;

/// The reason for a transition, with the detail an operator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// The engine started (Initialize → Backup).
    Startup,
    /// The engine started and we own the addresses (RFC 5798 section 6.4.1).
    StartupOwner,
    /// The engine started and the router's VIPs were already on its interface, left there by
    /// another VRRP daemon this one replaces: it keeps them as master instead of waiting as
    /// backup (only when asked, see [`crate::Engine::adopt`]).
    StartupAdopted,
    /// No advert from the master within the master-down interval.
    MasterDown {
        /// The master last heard, if any.
        master: Option<IpAddr>,
        /// How long it was silent (since its last advert, or since we started listening).
        silent_for: Duration,
    },
    /// The master resigned with a priority-0 advert and skew time passed.
    MasterResigned {
        master: IpAddr,
    },
    /// A master heard a better master.
    HigherPriority {
        from: IpAddr,
        priority: Priority,
    },
    /// A master heard a master of equal priority with a higher primary address.
    EqualPriorityHigherAddress {
        from: IpAddr,
        priority: Priority,
    },
    /// We ignored a lower-priority master's adverts in order to take over.
    Preempt {
        ours: Priority,
        master: IpAddr,
        theirs: Priority,
    },
    /// A tracker reported a fault.
    TrackerFault {
        tracker: String,
    },
    /// A tracker changed our priority.
    TrackerWeight {
        tracker: String,
        priority: Priority,
    },
    /// The last fault cleared.
    FaultCleared {
        tracker: String,
    },
    /// Our priority fell below a peer's: the master resigns so the peer takes over at once.
    Resign {
        ours: Priority,
        peer: IpAddr,
        peer_priority: Priority,
    },
    /// The operator's (or coordinator's) priority override changed.
    PriorityOverride {
        priority: Option<Priority>,
    },
    /// A sync-group member changed state and this router followed.
    SyncGroup {
        group: String,
        member: String,
        to: State,
    },
    /// No member of the sync group is faulty any more.
    SyncGroupFaultCleared {
        group: String,
    },
    Shutdown,
    Reconfigured,
    /// The router was removed from the configuration.
    Removed,
}

impl Cause {
    /// A short fixed name for the kind of cause (`master-down`, `shutdown`, …), without its
    /// detail: a bounded set, for metric labels and trace attributes. Names are never reused.
    pub const fn kind(&self) -> &'static str {
        match self {
            Cause::Startup => "startup",
            Cause::StartupOwner => "startup-owner",
            Cause::StartupAdopted => "startup-adopted",
            Cause::MasterDown { .. } => "master-down",
            Cause::MasterResigned { .. } => "master-resigned",
            Cause::HigherPriority { .. } => "higher-priority",
            Cause::EqualPriorityHigherAddress { .. } => "equal-priority-higher-address",
            Cause::Preempt { .. } => "preempt",
            Cause::TrackerFault { .. } => "tracker-fault",
            Cause::TrackerWeight { .. } => "tracker-weight",
            Cause::FaultCleared { .. } => "fault-cleared",
            Cause::Resign { .. } => "resign",
            Cause::PriorityOverride { .. } => "priority-override",
            Cause::SyncGroup { .. } => "sync-group",
            Cause::SyncGroupFaultCleared { .. } => "sync-group-fault-cleared",
            Cause::Shutdown => "shutdown",
            Cause::Reconfigured => "reconfigured",
            Cause::Removed => "removed",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Startup => f.write_str("startup"),
            Cause::StartupOwner => f.write_str("startup as address owner (priority 255)"),
            Cause::StartupAdopted => {
                f.write_str("startup holding the VIPs found on the interface (adopted)")
            }
            Cause::MasterDown {
                master: Some(master),
                silent_for,
            } => write!(
                f,
                "master-down timer expired (no advert from {master} for {} ms)",
                silent_for.as_millis()
            ),
            Cause::MasterDown {
                master: None,
                silent_for,
            } => write!(
                f,
                "master-down timer expired (no advert heard for {} ms)",
                silent_for.as_millis()
            ),
            Cause::MasterResigned { master } => {
                write!(
                    f,
                    "priority-0 advert from {master}: master resigned, skew time passed"
                )
            }
            Cause::HigherPriority { from, priority } => {
                write!(
                    f,
                    "higher priority advert from {from} (priority {priority})"
                )
            }
            Cause::EqualPriorityHigherAddress { from, priority } => write!(
                f,
                "equal priority advert from higher address {from} (priority {priority})"
            ),
            Cause::Preempt {
                ours,
                master,
                theirs,
            } => {
                write!(
                    f,
                    "preempt: our priority {ours} > master's {theirs} ({master})"
                )
            }
            Cause::TrackerFault { tracker } => write!(f, "tracker {tracker} failed"),
            Cause::TrackerWeight { tracker, priority } => {
                write!(f, "tracker {tracker} changed our priority to {priority}")
            }
            Cause::FaultCleared { tracker } => {
                write!(f, "tracker {tracker} recovered: no fault left")
            }
            Cause::Resign {
                ours,
                peer,
                peer_priority,
            } => write!(
                f,
                "priority {ours} fell below peer {peer} ({peer_priority}): resigning"
            ),
            Cause::PriorityOverride {
                priority: Some(priority),
            } => {
                write!(f, "priority override set to {priority}")
            }
            Cause::PriorityOverride { priority: None } => f.write_str("priority override cleared"),
            Cause::SyncGroup { group, member, to } => {
                write!(f, "sync group {group}: member {member} went to {to}")
            }
            Cause::SyncGroupFaultCleared { group } => {
                write!(f, "sync group {group}: no member is faulty any more")
            }
            Cause::Shutdown => f.write_str("shutdown"),
            Cause::Reconfigured => f.write_str("reconfigured"),
            Cause::Removed => f.write_str("removed from the configuration"),
        }
    }
}
