//! The coordinator side of the dashboard: one `WatchEvents` stream (reconnected with jittered
//! backoff) and a status refresh (`ListNodes` every few seconds and shortly after each event
//! that changes node state) feed the [`Hub`], which keeps the [`FleetModel`] and fans changes out
//! to the pages as pre-rendered server-sent-event frames.
//!
//! The fan-out is a bounded broadcast: a page that reads too slowly loses frames and is sent the
//! whole picture again; the coordinator stream never waits for a page.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hav_proto::v1::fleet_service_client::FleetServiceClient;
use hav_proto::v1::{FleetEvent, ListNodesRequest, WatchEventsRequest};
use hyper::body::Bytes;
use serde_json::Value;
use tokio::sync::{Notify, broadcast};
use tonic::transport::Channel;

use super::model::FleetModel;

pub type Fleet = FleetServiceClient<Channel>;

/// Frames kept for the slowest page before it lags.
pub const FRAMES_BUFFERED: usize = 64;
/// How long after an event the status is fetched (the agent's snapshot follows its event).
const REFRESH_DELAY: Duration = Duration::from_millis(150);
/// And once more after this, for snapshots that came later.
const REFRESH_AGAIN: Duration = Duration::from_secs(1);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The model and its subscribers.
pub struct Hub {
    inner: Mutex<Inner>,
    frames: broadcast::Sender<Bytes>,
    refresh: Notify,
}

struct Inner {
    model: FleetModel,
    /// The status last sent to the pages (a new one is sent only when it differs).
    published_status: Value,
}

impl Hub {
    pub fn new(model: FleetModel) -> Hub {
        let (frames, _) = broadcast::channel(FRAMES_BUFFERED);
        let published_status = model.status_json();
        Hub {
            inner: Mutex::new(Inner {
                model,
                published_status,
            }),
            frames,
            refresh: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change is one assignment or one bounded insertion: a panic elsewhere leaves
        // nothing half-written that matters more than keeping the pages alive.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The whole picture as a `snapshot` frame, and a receiver for every frame after it: taken
    /// under one lock, so nothing falls between the two.
    pub fn subscribe(&self) -> (Bytes, broadcast::Receiver<Bytes>) {
        let inner = self.lock();
        (
            frame("snapshot", &inner.model.snapshot_json()),
            self.frames.subscribe(),
        )
    }

    /// Reads the model.
    pub fn with<T>(&self, read: impl FnOnce(&FleetModel) -> T) -> T {
        read(&self.lock().model)
    }

    /// Asks the refresher to fetch the statuses soon.
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// A new `ListNodes` answer.
    pub fn set_nodes(&self, nodes: Vec<hav_proto::v1::NodeStatus>) {
        let mut inner = self.lock();
        inner.model.set_nodes(nodes);
        self.publish_status(&mut inner);
    }

    /// The coordinator link went up or down.
    pub fn set_link(&self, connected: bool, error: String) {
        let mut inner = self.lock();
        if inner.model.set_link(connected, error, unix_ms()) {
            self.publish("link", &inner.model.link_json());
        }
    }

    /// A fleet event.
    pub fn event(&self, event: &FleetEvent) {
        let mut inner = self.lock();
        let applied = inner.model.apply(event);
        if let Some(entry) = &applied.timeline {
            self.publish("timeline", entry);
        }
        if let Some(rollout) = &applied.rollout {
            self.publish("rollout", rollout);
        }
        if applied.status_changed {
            self.publish_status(&mut inner);
        }
        drop(inner);
        if applied.refresh {
            self.request_refresh();
        }
    }

    fn publish_status(&self, inner: &mut Inner) {
        let status = inner.model.status_json();
        if status != inner.published_status {
            self.publish("status", &status);
            inner.published_status = status;
        }
    }

    fn publish(&self, name: &str, data: &Value) {
        // No page connected is not an error.
        let _ = self.frames.send(frame(name, data));
    }
}

/// One server-sent event: `event: NAME` and the JSON on one `data:` line.
pub fn frame(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Follows the coordinator's `WatchEvents` for as long as the process runs.
pub async fn follow_events(hub: Arc<Hub>, mut fleet: Fleet) {
    let mut backoff = Backoff::new();
    loop {
        match fleet
            .watch_events(WatchEventsRequest { nodes: Vec::new() })
            .await
        {
            Ok(response) => {
                hub.set_link(true, String::new());
                hub.request_refresh();
                backoff.reset();
                let mut events = response.into_inner();
                let ended = loop {
                    match events.message().await {
                        Ok(Some(event)) => hub.event(&event),
                        Ok(None) => break "the coordinator ended the event stream".to_owned(),
                        Err(status) => break hav_proto::transport::explain_status(&status),
                    }
                };
                hub.set_link(false, ended);
            }
            Err(status) => hub.set_link(false, hav_proto::transport::explain_status(&status)),
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

/// Fetches the statuses every `every`, and shortly after each event that asks for it.
pub async fn refresh_status(hub: Arc<Hub>, mut fleet: Fleet, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let asked = tokio::select! {
            _ = tick.tick() => false,
            () = hub.refresh.notified() => true,
        };
        if asked {
            // Events come in bursts (a transition on both nodes, presence): one fetch for all.
            tokio::time::sleep(REFRESH_DELAY).await;
            tick.reset_after(REFRESH_AGAIN);
        }
        match fleet.list_nodes(ListNodesRequest {}).await {
            Ok(response) => hub.set_nodes(response.into_inner().nodes),
            Err(status) => hub.set_link(false, hav_proto::transport::explain_status(&status)),
        }
    }
}

/// Exponential backoff with full jitter between [`BACKOFF_MIN`] and the current ceiling.
struct Backoff {
    ceiling: Duration,
    state: u64,
}

impl Backoff {
    fn new() -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            ceiling: BACKOFF_MIN,
            state: seed ^ u64::from(std::process::id()),
        }
    }

    fn reset(&mut self) {
        self.ceiling = BACKOFF_MIN;
    }

    fn next(&mut self) -> Duration {
        // xorshift64: jitter only, nothing secret.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let span = self.ceiling.saturating_sub(BACKOFF_MIN).as_millis() as u64;
        let wait = BACKOFF_MIN + Duration::from_millis(self.state % (span + 1));
        self.ceiling = (self.ceiling * 2).min(BACKOFF_MAX);
        wait
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_bounds_and_resets() {
        let mut backoff = Backoff::new();
        for _ in 0..20 {
            let wait = backoff.next();
            assert!((BACKOFF_MIN..=BACKOFF_MAX).contains(&wait), "{wait:?}");
        }
        assert_eq!(backoff.ceiling, BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.next(), BACKOFF_MIN);
    }

    #[test]
    fn a_frame_is_one_event_with_its_json_on_one_data_line() {
        let frame = frame("status", &serde_json::json!({"a": "x\ny"}));
        assert_eq!(&frame[..], b"event: status\ndata: {\"a\":\"x\\ny\"}\n\n");
    }

    #[test]
    fn a_page_that_subscribes_gets_the_picture_then_each_change() {
        let hub = Hub::new(FleetModel::new(serde_json::json!({"who": "olga"}), None));
        let (first, mut rx) = hub.subscribe();
        assert!(first.starts_with(b"event: snapshot\n"));
        hub.set_link(true, String::new());
        let next = rx.try_recv().expect("a link frame");
        assert!(next.starts_with(b"event: link\n"));
    }
}
