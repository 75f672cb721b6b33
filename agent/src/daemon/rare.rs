//! The event loop's rare sources (signals, coordinator commands, status requests, real-server
//! and tracker reports, link changes) behind a [`Gate`]: they are polled only in a turn after
//! one of them woke the loop (or handed it something), so a turn that only hears an advert or
//! meets the engine's deadline does not visit them.
//!
//! This holds because each source is a channel whose receiver lives as long as the loop and keeps
//! the waker it was last polled with until a message arrives: the gate's own waker, which opens
//! the gate and then wakes the loop's task. Sources that forget their waker when dropped
//! (sleeps, `Notify`) are not for the gate.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::mpsc;

use super::fleet;
use super::links::HostWatch;
use super::signals::{Received, Signals};
use super::status;
use crate::control::PendingCommand;
use crate::lb::{Balancer, check::CheckReport};
use crate::track::TrackEvent;

/// What a rare source handed over.
pub enum Rare {
    Signal(Received),
    Command(PendingCommand),
    Status(status::Request),
    CheckReport(CheckReport),
    Track(TrackEvent),
    HostChanged,
}

/// The rare sources, in the order the loop serves them.
pub struct Sources<'a> {
    pub signals: &'a mut Signals,
    pub link: &'a mut Option<fleet::Link>,
    pub status_requests: &'a mut mpsc::Receiver<status::Request>,
    pub balancer: &'a mut Balancer,
    pub trackers: &'a mut mpsc::Receiver<TrackEvent>,
    pub host: &'a mut HostWatch,
    /// Link changes wait while the agent stops.
    pub stopping: bool,
}

impl Sources<'_> {
    /// The first source with something to hand over; each one polled registers `cx`.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Rare> {
        if let Poll::Ready(signal) = poll_once(cx, self.signals.recv()) {
            return Poll::Ready(Rare::Signal(signal));
        }
        if let Poll::Ready(Some(command)) = poll_once(cx, next_command(self.link)) {
            return Poll::Ready(Rare::Command(command));
        }
        if let Poll::Ready(Some(reply)) = self.status_requests.poll_recv(cx) {
            return Poll::Ready(Rare::Status(reply));
        }
        if let Poll::Ready(Some(report)) = poll_once(cx, self.balancer.next_report()) {
            return Poll::Ready(Rare::CheckReport(report));
        }
        if let Poll::Ready(Some(event)) = self.trackers.poll_recv(cx) {
            return Poll::Ready(Rare::Track(event));
        }
        if !self.stopping && poll_once(cx, self.host.changed()).is_ready() {
            return Poll::Ready(Rare::HostChanged);
        }
        Poll::Pending
    }
}

/// Polls a future once; dropping it keeps a channel's registered waker.
fn poll_once<F: Future>(cx: &mut Context<'_>, future: F) -> Poll<F::Output> {
    std::pin::pin!(future).poll(cx)
}

/// The next coordinator command; never resolves without a link.
async fn next_command(link: &mut Option<fleet::Link>) -> Option<PendingCommand> {
    match link {
        Some(link) => link.side.commands.recv().await,
        None => std::future::pending().await,
    }
}

/// The gate; open at first, so every source is polled (and registers its waker) once.
pub struct Gate {
    signal: Arc<Signal>,
    waker: Waker,
}

/// What a rare source's wake-up sets, and the task it wakes.
struct Signal {
    open: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.open.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        let signal = Arc::new(Signal {
            open: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Self {
            waker: Waker::from(signal.clone()),
            signal,
        }
    }
}

impl Gate {
    /// Runs `poll_sources` with the gate's waker if the gate is open, else `Pending` (the
    /// caller's task is woken when a source is). A source that handed something over may hold
    /// more, so the gate stays open after `Ready`.
    pub fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        poll_sources: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        {
            let mut task = (self.signal.task.lock()).unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|task| task.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        // Closed before the sources are polled: a wake-up while they are is not lost.
        if !self.signal.open.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let polled = poll_sources(&mut Context::from_waker(&self.waker));
        if polled.is_ready() {
            self.signal.open.store(true, Ordering::Release);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    #[tokio::test]
    async fn a_closed_gate_polls_nothing_until_a_source_wakes_it() {
        let gate = Gate::default();
        let (tx, mut rx) = mpsc::channel::<u32>(4);
        let polls = std::cell::Cell::new(0);
        let mut poll_rx = |cx: &mut Context<'_>| {
            polls.set(polls.get() + 1);
            rx.poll_recv(cx)
        };
        // Open at first: the source is polled, finds nothing, and the gate closes.
        let first = poll_fn(|cx| Poll::Ready(gate.poll(cx, &mut poll_rx))).await;
        assert!(first.is_pending());
        let again = poll_fn(|cx| Poll::Ready(gate.poll(cx, &mut poll_rx))).await;
        assert!(again.is_pending());
        assert_eq!(polls.get(), 1, "a closed gate polls nothing");
        tx.send(7).await.expect("receiver alive");
        let received = tokio::time::timeout(
            Duration::from_secs(5),
            poll_fn(|cx| gate.poll(cx, &mut poll_rx)),
        )
        .await
        .expect("the send woke the gate");
        assert_eq!(received, Some(7));
        assert_eq!(polls.get(), 2, "polled again after the wake-up");
    }

    #[tokio::test]
    async fn stays_open_after_a_source_handed_something_over() {
        let gate = Gate::default();
        let (tx, mut rx) = mpsc::channel::<u32>(4);
        tx.send(1).await.expect("receiver alive");
        tx.send(2).await.expect("receiver alive");
        let first = poll_fn(|cx| gate.poll(cx, |cx| rx.poll_recv(cx))).await;
        let second = poll_fn(|cx| gate.poll(cx, |cx| rx.poll_recv(cx))).await;
        assert_eq!((first, second), (Some(1), Some(2)));
    }
}
