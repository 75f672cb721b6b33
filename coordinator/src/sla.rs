//! Availability accounting per VIP, from the agents' own reports (transition events and
//! snapshots, stamped with the agents' clocks).
//!
//! For every VIP the [`Ledger`] keeps the set of nodes that hold it and, per calendar month
//! (UTC), how long it had exactly one holder, none, or two or more (split brain), and how many
//! failovers it saw (a node becoming the sole holder after another node was). The figure
//! operators report is `availability = (period − time with no holder) × 100 / period`, computed
//! exactly in milliseconds (the same ratio as in minutes). A group's availability is the same
//! formula over the sum of its VIPs' periods (so the mean over its VIPs).
//!
//! A holder is a node whose report lists the VIP in `vips_held`, whatever its VRRP state (a
//! master that resigns keeps its VIPs until it hears the new one: make-before-break). What a node
//! whose session ended last reported stays believed until its fate is known: if it comes back
//! still holding the VIP it held it all along; if it comes back without it, or never comes back
//! before its presence lease runs out, it stopped holding it when its session ended. Changes in
//! between wait in the ledger ([`Ledger::pending`]) and are accounted in order once the fate is
//! known, so a dead node neither shares a VIP with its successor (no false split brain) nor
//! leaves a VIP no one holds counted as held.
//!
//! Guarantees: time before a VIP was first observed is "unobserved", never counted as an
//! outage; an observation stamped earlier than the ledger's last change (clock skew between
//! agents) takes effect at the last change, so time is never counted twice or negatively;
//! ledgers are plain serde values (pending changes included), persisted by the caller after
//! each change.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

const MS_PER_DAY: u64 = 86_400_000;

/// A calendar month in UTC, e.g. `2026-11`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Month {
    pub year: u16,
    /// 1-12.
    pub month: u8,
}

/// Time and failovers of one VIP in one month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub one_holder_ms: u64,
    pub no_holder_ms: u64,
    pub split_brain_ms: u64,
    pub failovers: u64,
}

/// One VIP's holders now and its history by month.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub holders: Holders,
    /// When the current holder set began (0: never observed).
    pub since_ms: u64,
    /// When the VIP was first observed.
    pub first_ms: u64,
    /// The node that last held the VIP alone.
    pub last_sole: Option<String>,
    pub months: BTreeMap<Month, Tally>,
    /// Changes not accounted yet, in the order they were seen: from the first session end whose
    /// fate is not known on. `holders` and `since_ms` are as of the last change accounted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Pending>,
}

/// The nodes holding a VIP: one nearly always, so a sorted list of exactly those rather than a
/// tree (whose first node is a few hundred bytes). Stored as a JSON array of names, as a set
/// was; one read back is sorted and rid of repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct Holders(Vec<String>);

impl Holders {
    pub fn contains(&self, node: &str) -> bool {
        self.find(node).is_ok()
    }

    /// Adds `node`; false if it was there already.
    pub fn insert(&mut self, node: &str) -> bool {
        match self.find(node) {
            Ok(_) => false,
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, node.to_owned());
                true
            }
        }
    }

    /// Removes `node`; false if it was not there.
    pub fn remove(&mut self, node: &str) -> bool {
        match self.find(node) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The holders in name order.
    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }

    fn find(&self, node: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|held| held.as_str().cmp(node))
    }
}

impl From<Vec<String>> for Holders {
    fn from(mut names: Vec<String>) -> Holders {
        names.sort_unstable();
        names.dedup();
        names.shrink_to_fit();
        Holders(names)
    }
}

impl From<Holders> for Vec<String> {
    fn from(holders: Holders) -> Vec<String> {
        holders.0
    }
}

/// A change of a ledger that waits for the fate of a holder whose session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Pending {
    /// `node` was reported holding (or no longer holding) the VIP at `at_ms`.
    Observed {
        node: String,
        holding: bool,
        at_ms: u64,
    },
    /// The session of `node`, a holder, ended at `at_ms`; whether it held on is not known yet.
    SessionEnded { node: String, at_ms: u64 },
}

/// One VIP's (or group's) figures for a month.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub name: String,
    /// The period considered: the month, up to `now` if the month is not over.
    pub period_ms: u64,
    /// Part of the period before the first observation (not counted as an outage).
    pub unobserved_ms: u64,
    pub tally: Tally,
    /// `None` when nothing of the period was observed: no figures, not 100 %.
    pub availability_percent: Option<f64>,
}

/// A month's report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub month: Month,
    pub vips: Vec<Figures>,
    pub groups: Vec<Figures>,
}

/// Why a month could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a month: expected YYYY-MM, e.g. 2026-11")]
pub struct MonthError(pub String);

impl std::str::FromStr for Month {
    type Err = MonthError;

    fn from_str(text: &str) -> Result<Month, MonthError> {
        let error = || MonthError(text.to_owned());
        let (year, month) = text.split_once('-').ok_or_else(error)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(error());
        }
        let year: u16 = year.parse().map_err(|_| error())?;
        let month: u8 = month.parse().map_err(|_| error())?;
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(error());
        }
        Ok(Month { year, month })
    }
}

impl From<Month> for String {
    fn from(month: Month) -> String {
        month.to_string()
    }
}

impl TryFrom<String> for Month {
    type Error = MonthError;

    fn try_from(text: String) -> Result<Month, MonthError> {
        text.parse()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl Month {
    /// The month containing `unix_ms`.
    pub fn containing(unix_ms: u64) -> Month {
        let (year, month, _) = civil_from_days((unix_ms / MS_PER_DAY) as i64);
        Month {
            year: year as u16,
            month: month as u8,
        }
    }

    /// Its first millisecond (Unix time).
    pub fn start_ms(self) -> u64 {
        days_from_civil(i64::from(self.year), u32::from(self.month), 1) as u64 * MS_PER_DAY
    }

    /// The first millisecond of the next month.
    pub fn end_ms(self) -> u64 {
        self.next().start_ms()
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }
}

impl Ledger {
    /// Records that `node` holds (or no longer holds) the VIP from `at_ms`. Returns whether the
    /// holders believed now changed.
    pub fn observe(&mut self, node: &str, holding: bool, at_ms: u64) -> bool {
        if self.believes(node) == holding {
            return false;
        }
        if self.pending.is_empty() {
            self.apply(node, holding, at_ms);
        } else {
            self.pending.push(Pending::Observed {
                node: node.to_owned(),
                holding,
                at_ms,
            });
        }
        true
    }

    /// Whether `node` is believed to hold the VIP now (pending changes included; a holder whose
    /// session ended still holds it until its fate is known).
    pub fn believes(&self, node: &str) -> bool {
        self.pending
            .iter()
            .rev()
            .find_map(|change| match change {
                Pending::Observed {
                    node: n, holding, ..
                } if n == node => Some(*holding),
                _ => None,
            })
            .unwrap_or_else(|| self.holders.contains(node))
    }

    /// The nodes believed to hold the VIP now.
    pub fn believed_holders(&self) -> BTreeSet<String> {
        let mut holders: BTreeSet<String> = self.holders.iter().cloned().collect();
        for change in &self.pending {
            if let Pending::Observed { node, holding, .. } = change {
                if *holding {
                    holders.insert(node.clone());
                } else {
                    holders.remove(node);
                }
            }
        }
        holders
    }

    /// The session of `node` ended at `at_ms`: if it holds the VIP, what follows waits until
    /// [`Ledger::settle`] says whether it held on. Returns whether the ledger changed.
    pub fn session_ended(&mut self, node: &str, at_ms: u64) -> bool {
        if !self.believes(node) || self.unsettled(node).is_some() {
            return false;
        }
        self.pending.push(Pending::SessionEnded {
            node: node.to_owned(),
            at_ms,
        });
        true
    }

    /// The fate of `node`, whose session ended: `held_on` if it came back still holding the VIP
    /// (it held it all along), else (back without it, or its lease ran out) it stopped holding
    /// it when its session ended. Then accounts every change no longer waiting for a fate.
    /// Returns whether the ledger changed.
    pub fn settle(&mut self, node: &str, held_on: bool) -> bool {
        let Some(index) = self.unsettled(node) else {
            return false;
        };
        if held_on {
            self.pending.remove(index);
        } else if let Pending::SessionEnded { at_ms, .. } = self.pending[index] {
            self.pending[index] = Pending::Observed {
                node: node.to_owned(),
                holding: false,
                at_ms,
            };
        }
        let ready = self
            .pending
            .iter()
            .position(|change| matches!(change, Pending::SessionEnded { .. }))
            .unwrap_or(self.pending.len());
        let ready: Vec<Pending> = self.pending.drain(..ready).collect();
        for change in ready {
            if let Pending::Observed {
                node,
                holding,
                at_ms,
            } = change
            {
                self.observe_now(&node, holding, at_ms);
            }
        }
        true
    }

    /// The ledger as it will be if every holder whose session ended held on: what the figures
    /// show until the fates are known.
    fn believed(&self) -> Ledger {
        let mut ledger = Ledger {
            pending: Vec::new(),
            ..self.clone()
        };
        for change in &self.pending {
            if let Pending::Observed {
                node,
                holding,
                at_ms,
            } = change
            {
                ledger.observe_now(node, *holding, *at_ms);
            }
        }
        ledger
    }

    /// Where the unsettled session end of `node` is in `pending`.
    fn unsettled(&self, node: &str) -> Option<usize> {
        self.pending
            .iter()
            .position(|change| matches!(change, Pending::SessionEnded { node: n, .. } if n == node))
    }

    /// Accounts a change of the settled holders, if it is one.
    fn observe_now(&mut self, node: &str, holding: bool, at_ms: u64) {
        if self.holders.contains(node) != holding {
            self.apply(node, holding, at_ms);
        }
    }

    /// Accounts the time up to `at_ms` and changes the holders.
    fn apply(&mut self, node: &str, holding: bool, at_ms: u64) {
        if self.since_ms == 0 {
            self.first_ms = at_ms;
            self.since_ms = at_ms;
        }
        // Clock skew: never account backwards.
        let at_ms = at_ms.max(self.since_ms);
        self.account_until(at_ms);
        if holding {
            self.holders.insert(node);
        } else {
            self.holders.remove(node);
        }
        if self.holders.len() == 1 {
            let sole = self.holders.iter().next().cloned();
            if self.last_sole.is_some() && self.last_sole != sole {
                self.months
                    .entry(Month::containing(at_ms))
                    .or_default()
                    .failovers += 1;
            }
            self.last_sole = sole;
        }
    }

    /// The VIP's figures for `month`, counting the believed holders up to `now_ms`.
    pub fn figures(&self, name: &str, month: Month, now_ms: u64) -> Figures {
        if !self.pending.is_empty() {
            return self.believed().figures(name, month, now_ms);
        }
        let start = month.start_ms();
        let end = month.end_ms().min(now_ms).max(start);
        let mut tally = self.months.get(&month).copied().unwrap_or_default();
        if self.since_ms != 0 {
            let open_from = self.since_ms.max(start);
            if end > open_from {
                *self.bucket(&mut tally) += end - open_from;
            }
        }
        let unobserved_ms = if self.since_ms == 0 {
            end - start
        } else {
            self.first_ms.clamp(start, end) - start
        };
        Figures::new(name.to_owned(), end - start, unobserved_ms, tally)
    }

    /// Adds `[since_ms, until_ms)` to the current state's bucket, month by month.
    fn account_until(&mut self, until_ms: u64) {
        let mut from = self.since_ms;
        while from < until_ms {
            let month = Month::containing(from);
            let to = month.end_ms().min(until_ms);
            let mut tally = self.months.get(&month).copied().unwrap_or_default();
            *self.bucket(&mut tally) += to - from;
            self.months.insert(month, tally);
            from = to;
        }
        self.since_ms = until_ms;
    }

    fn bucket<'t>(&self, tally: &'t mut Tally) -> &'t mut u64 {
        match self.holders.len() {
            0 => &mut tally.no_holder_ms,
            1 => &mut tally.one_holder_ms,
            _ => &mut tally.split_brain_ms,
        }
    }
}

impl Figures {
    fn new(name: String, period_ms: u64, unobserved_ms: u64, tally: Tally) -> Figures {
        let availability_percent = (unobserved_ms < period_ms).then(|| {
            (period_ms - tally.no_holder_ms.min(period_ms)) as f64 * 100.0 / period_ms as f64
        });
        Figures {
            name,
            period_ms,
            unobserved_ms,
            tally,
            availability_percent,
        }
    }
}

/// Every VIP's ledger, keyed by address (no prefix length).
///
/// A node's snapshot, session end or lease end costs the VIPs that node ever held, not the
/// fleet's: a ledger names a node (as a holder or in a pending change) only after the node was
/// seen holding that VIP, and `involved` keeps, per node, every VIP it was seen holding (a
/// superset of the ledgers naming it now). A ledger that does not name a node is unchanged by
/// anything that node reports, so skipping it changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounting {
    ledgers: BTreeMap<String, Ledger>,
    /// Node → the VIPs it was seen holding, sorted: a node holds one or two VIPs nearly always,
    /// so a list of exactly those rather than a tree per node.
    involved: HashMap<String, Vec<String>>,
}

impl Accounting {
    /// Every VIP's ledger, by address.
    pub fn ledgers(&self) -> &BTreeMap<String, Ledger> {
        &self.ledgers
    }

    /// Takes up a ledger read back from the store.
    pub fn restore(&mut self, vip: String, ledger: Ledger) {
        let named = ledger
            .holders
            .iter()
            .chain(ledger.pending.iter().map(|p| match p {
                Pending::Observed { node, .. } | Pending::SessionEnded { node, .. } => node,
            }));
        for node in named {
            self.involve(node, &vip);
        }
        self.ledgers.insert(vip, ledger);
    }

    fn involve(&mut self, node: &str, vip: &str) {
        if let Some(vips) = self.involved.get_mut(node) {
            if let Err(at) = vips.binary_search_by(|v| v.as_str().cmp(vip)) {
                vips.reserve_exact(1);
                vips.insert(at, vip.to_owned());
            }
        } else {
            self.involved.insert(node.to_owned(), vec![vip.to_owned()]);
        }
    }

    /// The VIPs whose ledgers may name `node`, in address order.
    fn involving(&self, node: &str) -> Vec<String> {
        (self.involved.get(node)).cloned().unwrap_or_default()
    }

    /// Records that `node` holds (or released) `vip` at `at_ms`; returns whether that VIP's
    /// ledger changed (and so should be persisted).
    pub fn observe(&mut self, vip: &str, node: &str, holding: bool, at_ms: u64) -> bool {
        let key = vip_key(vip);
        if !holding && !self.ledgers.contains_key(&key) {
            return false;
        }
        if holding {
            self.involve(node, &key);
        }
        self.ledgers
            .entry(key)
            .or_default()
            .observe(node, holding, at_ms)
    }

    /// Brings `node`'s holdings in line with a snapshot: it holds exactly `held` at `at_ms`.
    /// A node whose session had ended and that is back learns its fate first (it held on to
    /// what it still holds). Returns the VIPs whose ledgers changed.
    pub fn observe_snapshot(&mut self, node: &str, held: &[String], at_ms: u64) -> Vec<String> {
        let held: BTreeSet<String> = held.iter().map(|v| vip_key(v)).collect();
        let mut changed = BTreeSet::new();
        for vip in self.involving(node) {
            let Some(ledger) = self.ledgers.get_mut(&vip) else {
                continue;
            };
            if ledger.settle(node, held.contains(&vip)) {
                changed.insert(vip.clone());
            }
            if !held.contains(&vip) && ledger.observe(node, false, at_ms) {
                changed.insert(vip);
            }
        }
        for vip in held {
            if self.observe(&vip, node, true, at_ms) {
                changed.insert(vip);
            }
        }
        changed.into_iter().collect()
    }

    /// The session of `node` ended at `at_ms`; returns the VIPs whose ledgers changed.
    pub fn session_ended(&mut self, node: &str, at_ms: u64) -> Vec<String> {
        let ledgers = &mut self.ledgers;
        (self.involved.get(node).into_iter().flatten())
            .filter(|vip| {
                (ledgers.get_mut(*vip)).is_some_and(|ledger| ledger.session_ended(node, at_ms))
            })
            .cloned()
            .collect()
    }

    /// The lease of `node` ran out: it stopped holding everything when its session ended.
    /// Returns the VIPs whose ledgers changed.
    pub fn lease_ended(&mut self, node: &str) -> Vec<String> {
        let ledgers = &mut self.ledgers;
        (self.involved.get(node).into_iter().flatten())
            .filter(|vip| (ledgers.get_mut(*vip)).is_some_and(|ledger| ledger.settle(node, false)))
            .cloned()
            .collect()
    }

    /// The VIPs some node is believed to hold now.
    pub fn held(&self) -> BTreeSet<String> {
        self.ledgers
            .iter()
            .filter(|(_, ledger)| !ledger.believed_holders().is_empty())
            .map(|(vip, _)| vip.clone())
            .collect()
    }

    /// Every node believed to hold some VIP.
    pub fn holders(&self) -> BTreeSet<String> {
        self.ledgers
            .values()
            .flat_map(|ledger| ledger.believed_holders())
            .collect()
    }

    /// The report for `month`: every VIP, and every group in `groups` (group name → its VIPs).
    pub fn report(
        &self,
        month: Month,
        now_ms: u64,
        groups: &BTreeMap<String, Vec<String>>,
    ) -> Report {
        let vips: Vec<Figures> = self
            .ledgers
            .iter()
            .map(|(vip, ledger)| ledger.figures(vip, month, now_ms))
            .collect();
        let groups = groups
            .iter()
            .map(|(name, members)| {
                let mut period = 0;
                let mut unobserved = 0;
                let mut tally = Tally::default();
                for member in members {
                    let figures = match self.ledgers.get(&vip_key(member)) {
                        Some(ledger) => ledger.figures(member, month, now_ms),
                        None => Ledger::default().figures(member, month, now_ms),
                    };
                    period += figures.period_ms;
                    unobserved += figures.unobserved_ms;
                    tally.one_holder_ms += figures.tally.one_holder_ms;
                    tally.no_holder_ms += figures.tally.no_holder_ms;
                    tally.split_brain_ms += figures.tally.split_brain_ms;
                    tally.failovers += figures.tally.failovers;
                }
                Figures::new(name.clone(), period, unobserved, tally)
            })
            .collect();
        Report {
            month,
            vips,
            groups,
        }
    }
}

/// A VIP as reported (`198.51.100.10/24`) → its ledger key (`198.51.100.10`).
pub fn vip_key(vip: &str) -> String {
    vip.split('/').next().unwrap_or(vip).to_owned()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_stay_sorted_and_unique_and_read_back_as_the_set_did() {
        let mut holders = Holders::default();
        assert!(holders.insert("lb-2"));
        assert!(holders.insert("lb-1"));
        assert!(!holders.insert("lb-2"));
        assert_eq!(holders.iter().collect::<Vec<_>>(), ["lb-1", "lb-2"]);
        assert!(holders.contains("lb-1") && !holders.contains("lb-3"));
        assert!(holders.remove("lb-1") && !holders.remove("lb-1"));
        assert_eq!(holders.len(), 1);

        let json = serde_json::to_string(&holders).expect("encodes");
        assert_eq!(json, r#"["lb-2"]"#);
        let read: Holders = serde_json::from_str(r#"["lb-3","lb-1","lb-3"]"#).expect("reads");
        assert_eq!(read.iter().collect::<Vec<_>>(), ["lb-1", "lb-3"]);
    }

    const MINUTE: u64 = 60_000;

    fn nov() -> Month {
        "2026-11".parse().expect("month")
    }

    #[test]
    fn months_parse_and_have_the_right_length() {
        let nov = nov();
        // 2026-11-01T00:00:00Z
        assert_eq!(nov.start_ms(), 1_793_491_200_000);
        assert_eq!(nov.end_ms() - nov.start_ms(), 30 * MS_PER_DAY);
        let feb: Month = "2028-02".parse().expect("leap february");
        assert_eq!(feb.end_ms() - feb.start_ms(), 29 * MS_PER_DAY);
        let dec: Month = "2026-12".parse().expect("december");
        assert_eq!(dec.next(), "2027-01".parse().expect("january"));
        assert_eq!(Month::containing(nov.start_ms()), nov);
        assert_eq!(
            Month::containing(nov.start_ms() - 1),
            "2026-10".parse().expect("oct")
        );
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "", "2026-00"] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_known_outage_gives_exact_figures() {
        let start = nov().start_ms();
        let mut sla = Accounting::default();
        // lb-1 holds the VIP from the first instant of the month.
        sla.observe("198.51.100.10/24", "lb-1", true, start);
        // Day 10: lb-1 fails, nobody holds the VIP for 43 minutes 12 seconds, then lb-2 takes it.
        let fail = start + 9 * MS_PER_DAY;
        sla.observe("198.51.100.10/24", "lb-1", false, fail);
        sla.observe(
            "198.51.100.10/24",
            "lb-2",
            true,
            fail + 43 * MINUTE + 12_000,
        );
        // Day 20: a split brain of 5 minutes (lb-1 comes back as master too), then it resolves.
        let split = start + 19 * MS_PER_DAY;
        sla.observe("198.51.100.10", "lb-1", true, split);
        sla.observe("198.51.100.10", "lb-2", false, split + 5 * MINUTE);

        let report = sla.report(nov(), nov().end_ms() + 7, &BTreeMap::new());
        let vip = &report.vips[0];
        assert_eq!(vip.name, "198.51.100.10");
        assert_eq!(vip.period_ms, 30 * MS_PER_DAY);
        assert_eq!(vip.unobserved_ms, 0);
        assert_eq!(vip.tally.no_holder_ms, 43 * MINUTE + 12_000);
        assert_eq!(vip.tally.split_brain_ms, 5 * MINUTE);
        assert_eq!(
            vip.tally.one_holder_ms,
            30 * MS_PER_DAY - 43 * MINUTE - 12_000 - 5 * MINUTE
        );
        // lb-1 → lb-2, then lb-2 → lb-1 after the split brain.
        assert_eq!(vip.tally.failovers, 2);
        // 43.2 of 43 200 minutes: exactly 99.9 %.
        let availability = vip.availability_percent.expect("November was observed");
        assert!((availability - 99.9).abs() < 1e-9, "{availability}");
    }

    #[test]
    fn groups_sum_their_vips_and_months_split_at_the_boundary() {
        let nov = nov();
        let end = nov.end_ms();
        let mut sla = Accounting::default();
        sla.observe("198.51.100.10", "lb-1", true, nov.start_ms());
        sla.observe("198.51.100.11", "lb-2", true, nov.start_ms());
        // .11 is down across the month boundary: one hour in November, two in December.
        sla.observe("198.51.100.11", "lb-2", false, end - 60 * MINUTE);
        sla.observe("198.51.100.11", "lb-1", true, end + 120 * MINUTE);
        let groups = BTreeMap::from([(
            "web".to_owned(),
            vec!["198.51.100.10".to_owned(), "198.51.100.11/24".to_owned()],
        )]);
        let now = end + 10 * MS_PER_DAY;
        let report = sla.report(nov, now, &groups);
        assert_eq!(report.vips[1].tally.no_holder_ms, 60 * MINUTE);
        let group = &report.groups[0];
        assert_eq!(group.period_ms, 2 * 30 * MS_PER_DAY);
        assert_eq!(group.tally.no_holder_ms, 60 * MINUTE);
        let expected = (2.0 * 43_200.0 - 60.0) * 100.0 / (2.0 * 43_200.0);
        let availability = group.availability_percent.expect("November was observed");
        assert!((availability - expected).abs() < 1e-9);

        let dec = sla.report(nov.next(), now, &groups);
        assert_eq!(dec.vips[1].tally.no_holder_ms, 120 * MINUTE);
        // December is not over: its period ends now.
        assert_eq!(dec.vips[0].period_ms, 10 * MS_PER_DAY);
        assert_eq!(dec.vips[1].tally.failovers, 1);
    }

    #[test]
    fn unobserved_time_is_not_an_outage_and_skewed_clocks_never_count_backwards() {
        let nov = nov();
        let mut sla = Accounting::default();
        let first = nov.start_ms() + 15 * MS_PER_DAY;
        sla.observe("198.51.100.10", "lb-1", true, first);
        // lb-2's clock is 3 s behind: its takeover is stamped before lb-1's release.
        sla.observe("198.51.100.10", "lb-1", false, first + 10_000);
        sla.observe("198.51.100.10", "lb-2", true, first + 7_000);
        let report = sla.report(nov, nov.end_ms(), &BTreeMap::new());
        let vip = &report.vips[0];
        assert_eq!(vip.unobserved_ms, 15 * MS_PER_DAY);
        assert_eq!(vip.tally.no_holder_ms, 0);
        assert_eq!(vip.tally.one_holder_ms, 15 * MS_PER_DAY);
        assert_eq!(vip.availability_percent, Some(100.0));
        // A release of a VIP never seen creates nothing.
        assert!(!sla.observe("203.0.113.1", "lb-9", false, first));
        assert_eq!(sla.ledgers().len(), 1);
    }

    #[test]
    fn a_month_with_nothing_observed_has_no_figures() {
        let nov = nov();
        let mut sla = Accounting::default();
        sla.observe("198.51.100.10", "lb-1", true, nov.start_ms() + MS_PER_DAY);
        let groups = BTreeMap::from([
            ("web".to_owned(), vec!["198.51.100.10".to_owned()]),
            ("api".to_owned(), vec!["198.51.100.20".to_owned()]),
        ]);
        let now = nov.end_ms() + MS_PER_DAY;
        // October: before the first observation.
        let october: Month = "2026-10".parse().expect("a month");
        let report = sla.report(october, now, &groups);
        assert_eq!(report.vips[0].availability_percent, None);
        assert!(
            report
                .groups
                .iter()
                .all(|g| g.availability_percent.is_none())
        );
        // A month to come has no period at all.
        let report = sla.report(nov.next().next(), now, &groups);
        assert_eq!(report.vips[0].availability_percent, None);
        // November: the VIP was observed; the group of a VIP never seen was not.
        let report = sla.report(nov, now, &groups);
        assert_eq!(report.vips[0].availability_percent, Some(100.0));
        let api = report.groups.iter().find(|g| g.name == "api").expect("api");
        assert_eq!(api.availability_percent, None);
    }

    #[test]
    fn snapshots_set_a_nodes_exact_holdings() {
        let mut sla = Accounting::default();
        let t = nov().start_ms();
        sla.observe_snapshot(
            "lb-1",
            &["198.51.100.10/24".into(), "198.51.100.11/24".into()],
            t,
        );
        let changed = sla.observe_snapshot("lb-1", &["198.51.100.11/24".into()], t + 1000);
        assert_eq!(changed, vec!["198.51.100.10".to_owned()]);
        assert!(sla.ledgers()["198.51.100.10"].holders.is_empty());
        assert!(sla.ledgers()["198.51.100.11"].holders.contains("lb-1"));
        // Repeating the same snapshot changes nothing.
        assert!(
            sla.observe_snapshot("lb-1", &["198.51.100.11/24".into()], t + 2000)
                .is_empty()
        );
    }

    #[test]
    fn ledgers_round_trip_through_json() {
        let mut ledger = Ledger::default();
        ledger.observe("lb-1", true, nov().start_ms());
        ledger.observe("lb-1", false, nov().start_ms() + 5);
        let json = serde_json::to_vec(&ledger).expect("encode");
        let back: Ledger = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, ledger);
    }

    #[test]
    fn a_holder_that_never_comes_back_stopped_holding_when_its_session_ended() {
        let t = nov().start_ms();
        let mut sla = Accounting::default();
        sla.observe_snapshot("lb-1", &["198.51.100.10/24".into()], t);
        // lb-1 is killed at t + 1 min; lb-2 takes over 600 ms later and reports it at once.
        let killed = t + MINUTE;
        assert_eq!(sla.session_ended("lb-1", killed), vec!["198.51.100.10"]);
        sla.observe_snapshot("lb-2", &["198.51.100.10/24".into()], killed + 600);
        // While lb-1's lease runs it is believed: the figures show both.
        let vip = &sla.ledgers()["198.51.100.10"];
        assert_eq!(vip.believed_holders().len(), 2);
        let believed = vip.figures("vip", nov(), killed + 1_000);
        assert_eq!(believed.tally.split_brain_ms, 400);
        // Its lease runs out: it released the VIP when its session ended.
        assert_eq!(sla.lease_ended("lb-1"), vec!["198.51.100.10"]);
        let vip = &sla.ledgers()["198.51.100.10"];
        assert!(vip.pending.is_empty());
        assert_eq!(vip.holders.iter().collect::<Vec<_>>(), ["lb-2"]);
        let figures = vip.figures("vip", nov(), killed + 1_000);
        assert_eq!(figures.tally.split_brain_ms, 0);
        assert_eq!(figures.tally.no_holder_ms, 600);
        assert_eq!(figures.tally.one_holder_ms, MINUTE + 400);
        assert_eq!(figures.tally.failovers, 1);
        // Once.
        assert!(sla.lease_ended("lb-1").is_empty());
    }

    #[test]
    fn a_holder_back_with_its_vip_held_it_all_along_and_one_back_without_it_did_not() {
        let t = nov().start_ms();
        let mut sla = Accounting::default();
        sla.observe_snapshot("lb-1", &["198.51.100.10/24".into()], t);
        sla.observe_snapshot("lb-2", &["198.51.100.11/24".into()], t);
        // Both sessions end at t + 10 s (a network blip, or a crash).
        sla.session_ended("lb-1", t + 10_000);
        sla.session_ended("lb-2", t + 10_000);
        // lb-1 comes back still holding .10: it held it all along.
        sla.observe_snapshot("lb-1", &["198.51.100.10/24".into()], t + 12_000);
        // lb-2 was restarted: it comes back holding nothing (and takes .11 a second later).
        sla.observe_snapshot("lb-2", &[], t + 13_000);
        sla.observe_snapshot("lb-2", &["198.51.100.11/24".into()], t + 14_000);
        let now = t + 20_000;
        let ten = sla.ledgers()["198.51.100.10"].figures("ten", nov(), now);
        assert_eq!(ten.tally.one_holder_ms, 20_000);
        assert_eq!(ten.tally.no_holder_ms, 0);
        let eleven = sla.ledgers()["198.51.100.11"].figures("eleven", nov(), now);
        // From the end of its session to its takeover.
        assert_eq!(eleven.tally.no_holder_ms, 4_000);
        assert_eq!(eleven.tally.one_holder_ms, 16_000);
        assert!(sla.ledgers().values().all(|l| l.pending.is_empty()));
    }

    #[test]
    fn changes_wait_in_order_for_every_unsettled_session_end() {
        let t = nov().start_ms();
        let mut ledger = Ledger::default();
        ledger.observe("lb-1", true, t);
        ledger.observe("lb-2", true, t);
        assert!(ledger.session_ended("lb-1", t + 1_000));
        // Not a holder, or already ended: nothing to wait for.
        assert!(!ledger.session_ended("lb-3", t + 1_000));
        assert!(!ledger.session_ended("lb-1", t + 1_500));
        ledger.observe("lb-3", true, t + 2_000);
        assert!(ledger.session_ended("lb-2", t + 3_000));
        ledger.observe("lb-3", false, t + 4_000);
        // lb-2's fate is known first: its release waits behind lb-1's session end.
        assert!(ledger.settle("lb-2", false));
        assert_eq!(ledger.since_ms, t);
        assert!(ledger.settle("lb-1", false));
        assert!(ledger.pending.is_empty());
        let figures = ledger.figures("vip", nov(), t + 5_000);
        // [t, t+1 s) both; [t+1 s, t+2 s) lb-2; [t+2 s, t+3 s) lb-2 and lb-3;
        // [t+3 s, t+4 s) lb-3; then nobody.
        assert_eq!(figures.tally.split_brain_ms, 2_000);
        assert_eq!(figures.tally.one_holder_ms, 2_000);
        assert_eq!(figures.tally.no_holder_ms, 1_000);
    }

    #[test]
    fn a_ledger_with_pending_changes_round_trips_and_an_old_one_reads() {
        let mut ledger = Ledger::default();
        ledger.observe("lb-1", true, nov().start_ms());
        ledger.session_ended("lb-1", nov().start_ms() + 5);
        ledger.observe("lb-2", true, nov().start_ms() + 7);
        let json = serde_json::to_vec(&ledger).expect("encode");
        let back: Ledger = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, ledger);
        // Stored before ledgers had pending changes.
        let old =
            r#"{"holders":["lb-1"],"since_ms":5,"first_ms":5,"last_sole":"lb-1","months":{}}"#;
        let old: Ledger = serde_json::from_str(old).expect("decode");
        assert!(old.pending.is_empty() && old.believes("lb-1"));
    }

    /// The same operations applied the way the index avoids: to every ledger.
    #[derive(Default)]
    struct EveryLedger(BTreeMap<String, Ledger>);

    impl EveryLedger {
        fn observe_snapshot(&mut self, node: &str, held: &[String], at_ms: u64) -> Vec<String> {
            let held: BTreeSet<String> = held.iter().map(|v| vip_key(v)).collect();
            let mut changed = BTreeSet::new();
            for (vip, ledger) in &mut self.0 {
                if ledger.settle(node, held.contains(vip)) {
                    changed.insert(vip.clone());
                }
                if !held.contains(vip) && ledger.observe(node, false, at_ms) {
                    changed.insert(vip.clone());
                }
            }
            for vip in held {
                if self
                    .0
                    .entry(vip.clone())
                    .or_default()
                    .observe(node, true, at_ms)
                {
                    changed.insert(vip);
                }
            }
            changed.into_iter().collect()
        }

        fn each(&mut self, mut f: impl FnMut(&mut Ledger) -> bool) -> Vec<String> {
            (self.0.iter_mut())
                .filter_map(|(vip, ledger)| f(ledger).then(|| vip.clone()))
                .collect()
        }
    }

    #[test]
    fn the_node_index_changes_exactly_what_visiting_every_ledger_changes() {
        let nodes = ["lb-1", "lb-2", "lb-3", "lb-4"];
        let vips = ["198.51.100.10", "198.51.100.11", "198.51.100.12"];
        // A fixed pseudo-random walk (64-bit LCG) over snapshots, session ends and lease ends.
        let mut seed: u64 = 20261203;
        let mut next = |bound: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % bound
        };
        let mut indexed = Accounting::default();
        let mut reference = EveryLedger::default();
        for step in 0..5000u64 {
            let at = 1_000 + step * 10;
            let node = nodes[next(nodes.len())];
            match next(4) {
                0 => assert_eq!(
                    indexed.session_ended(node, at),
                    reference.each(|l| l.session_ended(node, at)),
                    "step {step}: {node}'s session ended"
                ),
                1 => assert_eq!(
                    indexed.lease_ended(node),
                    reference.each(|l| l.settle(node, false)),
                    "step {step}: {node}'s lease ended"
                ),
                _ => {
                    let held: Vec<String> = (vips.iter())
                        .filter(|_| next(3) == 0)
                        .map(|vip| format!("{vip}/24"))
                        .collect();
                    assert_eq!(
                        indexed.observe_snapshot(node, &held, at),
                        reference.observe_snapshot(node, &held, at),
                        "step {step}: {node} holds {held:?}"
                    );
                }
            }
            assert_eq!(indexed.ledgers(), &reference.0, "step {step}");
        }
        // Read back from the store, the index is rebuilt from what each ledger names.
        let mut restored = Accounting::default();
        for (vip, ledger) in indexed.ledgers().clone() {
            restored.restore(vip, ledger);
        }
        for node in nodes {
            assert_eq!(
                restored.clone().lease_ended(node),
                indexed.clone().lease_ended(node),
                "{node} after a restore"
            );
        }
    }
}
