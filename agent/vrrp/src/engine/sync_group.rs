//! Sync groups (keepalived `vrrp_sync_group`): virtual routers of one node that fail over
//! together.
//!
//! The rules, applied by [`super::Engine`] after every event, in this order:
//! 1. **Fault is level-triggered.** While any member has a fault of its own (a tracker), every
//!    other member is held in Fault too; when no member has one, the held members go to Backup.
//! 2. **Master leads.** When a member becomes Master by its own right (master-down timer,
//!    preemption, owner start-up), every member in Backup becomes Master at once.
//! 3. **Backup leads.** When a member that was Master by its own right goes to Backup (a better
//!    master, or it resigned), every member in Master resigns (priority 0, make-before-break).
//!
//! Loops are impossible by construction: a change imposed by rules 2 and 3 is marked induced and
//! never triggers rules 2 or 3 again, a member forced into Master that later loses to a better
//! master goes to Backup alone, and rule 1 depends only on the trackers. The rules assume that
//! the members' priorities order the nodes the same way (apply trackers to every member); if
//! they do not, the per-router RFC rules win and the group may end split.

use super::State;

/// A sync group as the engine runs it: members by router index.
#[derive(Debug, Clone)]
pub(crate) struct SyncGroup {
    pub(crate) name: String,
    pub(crate) members: Vec<usize>,
    pub(crate) state: State,
}

/// The group's state from its members': Fault if any is, else Master if any is, else
/// Initialize if all are, else Backup.
pub(crate) fn group_state(members: impl IntoIterator<Item = State>) -> State {
    let mut any_master = false;
    let mut all_initialize = true;
    for state in members {
        match state {
            State::Fault => return State::Fault,
            State::Master => any_master = true,
            State::Backup => {}
            State::Initialize => continue,
        }
        all_initialize = false;
    }
    if any_master {
        State::Master
    } else if all_initialize {
        State::Initialize
    } else {
        State::Backup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_state_precedence() {
        use State::*;
        assert_eq!(group_state([Master, Fault, Backup]), Fault);
        assert_eq!(group_state([Master, Backup]), Master);
        assert_eq!(group_state([Initialize, Initialize]), Initialize);
        assert_eq!(group_state([Initialize, Backup]), Backup);
        assert_eq!(group_state([]), Initialize);
    }
}
