//! The running health trackers and what each last reported, and how their health reaches the
//! engine: every router gets, per tracker it follows, the effect of that tracker's health and its
//! weight (keepalived's semantics, [`track::contribution`]).
//!
//! Trackers are keyed `kind:name`; a reload restarts only those whose definition changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use hav_vrrp::engine::{Engine, TrackEffect};
use tokio::sync::mpsc;

use super::plan::Plan;
use crate::track::{self, Contribution, Health, TrackError, TrackEvent, TrackerHandle};

struct RunningTracker {
    handle: TrackerHandle,
    fingerprint: String,
}

pub struct Trackers {
    running: HashMap<String, RunningTracker>,
    health: BTreeMap<String, Health>,
    tx: mpsc::Sender<TrackEvent>,
    pub events: mpsc::Receiver<TrackEvent>,
}

impl Trackers {
    pub fn new() -> Self {
        let (tx, events) = mpsc::channel(256);
        Self {
            running: HashMap::new(),
            health: BTreeMap::new(),
            tx,
            events,
        }
    }

    /// What each tracker last reported.
    pub fn health(&self) -> &BTreeMap<String, Health> {
        &self.health
    }

    /// Starts the trackers `plan` has and we do not run (or run with another definition); stops
    /// those it no longer has.
    pub fn sync(&mut self, plan: &Plan) -> Result<(), TrackError> {
        let wanted: HashSet<&String> = plan.trackers.keys().collect();
        self.running.retain(|key, _| wanted.contains(key));
        self.health.retain(|key, _| wanted.contains(key));
        for (key, planned) in &plan.trackers {
            if self
                .running
                .get(key)
                .is_some_and(|running| running.fingerprint == planned.fingerprint)
            {
                continue;
            }
            self.health.remove(key);
            let handle = track::spawn(key.clone(), planned.spec.clone(), self.tx.clone())?;
            self.running.insert(
                key.clone(),
                RunningTracker {
                    handle,
                    fingerprint: planned.fingerprint.clone(),
                },
            );
        }
        Ok(())
    }

    /// Waits until every tracker has said how it is (or `wait` passes), so that a node does not
    /// win an election only to give it up a moment later.
    pub async fn await_first_reports(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while self
            .running
            .keys()
            .any(|key| !self.health.contains_key(key))
        {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    tracing::info!(tracker = %event.name, health = %event.health, "tracker reported");
                    self.health.insert(event.name, event.health);
                }
                Ok(None) | Err(_) => {
                    let silent: Vec<&String> = (self.running.keys())
                        .filter(|key| !self.health.contains_key(*key))
                        .collect();
                    tracing::warn!(?silent, "starting before every tracker reported");
                    break;
                }
            }
        }
    }

    /// Records a report; the routers following the tracker get its effect.
    pub fn record(&mut self, event: TrackEvent, plan: &Plan, engine: &mut Engine, now: Instant) {
        tracing::info!(tracker = %event.name, health = %event.health, "tracker changed");
        let key = event.name.clone();
        self.health.insert(event.name, event.health);
        self.apply(&key, plan, engine, now);
    }

    /// Gives every router that follows tracker `key` its current effect.
    fn apply(&self, key: &str, plan: &Plan, engine: &mut Engine, now: Instant) {
        let Some(health) = self.health.get(key) else {
            return;
        };
        for (router, refs) in &plan.tracker_refs {
            for (tracked, weight) in refs {
                if tracked != key {
                    continue;
                }
                let Some(id) = engine.router_id(router) else {
                    continue;
                };
                engine.set_tracker(now, id, key, effect(track::contribution(health, *weight)));
            }
        }
    }

    /// Gives every router the effect of every tracker it follows; routers that followed a
    /// tracker under `previous` and no longer do lose its effect.
    pub fn apply_all(
        &self,
        plan: &Plan,
        previous: Option<&Plan>,
        engine: &mut Engine,
        now: Instant,
    ) {
        for (router, refs) in previous.map(|p| &p.tracker_refs).into_iter().flatten() {
            let Some(id) = engine.router_id(router) else {
                continue;
            };
            for (key, _) in refs {
                if !plan.refs_of(router).iter().any(|(k, _)| k == key) {
                    engine.set_tracker(now, id, key, TrackEffect::Adjust(0));
                }
            }
        }
        for key in self.health.keys() {
            self.apply(key, plan, engine, now);
        }
    }

    /// Stops every tracker.
    pub async fn stop(&mut self) {
        for (_, tracker) in self.running.drain() {
            tracker.handle.stop().await;
        }
    }
}

fn effect(contribution: Contribution) -> TrackEffect {
    match contribution {
        Contribution::Adjust(weight) => TrackEffect::Adjust(weight),
        Contribution::Fault => TrackEffect::Fault,
    }
}
