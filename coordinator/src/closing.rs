//! How the long-lived streams end when the coordinator stops: an agent's `Connect`, an operator's
//! `WatchEvents` and `WatchRollout` end with `UNAVAILABLE` and the reason ([`SHUTTING_DOWN`]), so
//! an agent logs why its link dropped and havctl says why its watch ended, instead of a clean end
//! that reads as "nothing more to say".
//!
//! Guarantees: only the responses of those three methods are touched, so a unary call in flight
//! when the stop begins completes as it would have; a stream that ended before the stop keeps its
//! own status. The watches end themselves when `stopping` turns true ([`until_stopped`]), after
//! what was already queued for them; an agent's stream is ended by this layer, after the
//! commands it had ready. This layer decides the status they all end with, in one place for both
//! services.
//!
//! Guarantee: a message queued for a stream before the stop began (an event published to the
//! watchers, a command queued for an agent) is sent before the stream's end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::codegen::http::{HeaderMap, Request, Response};

/// The message of the status a long-lived stream ends with when the coordinator stops.
pub const SHUTTING_DOWN: &str = "hav-coordinator is shutting down";

/// The gRPC paths of the long-lived streams.
const LONG_LIVED: [&str; 3] = [
    "/hav.v1.AgentService/Connect",
    "/hav.v1.FleetService/WatchEvents",
    "/hav.v1.FleetService/WatchRollout",
];

/// How many items a stream may still yield once the stop has begun: what was queued before it,
/// bounded so that a source that keeps producing cannot hold the stop up.
const DRAIN_AT_STOP: usize = 4096;

/// `stream` until the coordinator stops: once `stopping` is true, the items it has ready are
/// still yielded (at most [`DRAIN_AT_STOP`]), and it ends at the first poll that finds none
/// (a `Pending` from tokio's exhausted cooperative budget is not "none": it is polled again).
pub fn until_stopped<S: Stream + Unpin>(
    stream: S,
    stopping: watch::Receiver<bool>,
) -> UntilStopped<S> {
    UntilStopped {
        inner: stream,
        stop: stop_future(stopping),
        drained: None,
    }
}

/// The stream of [`until_stopped`].
pub struct UntilStopped<S> {
    inner: S,
    stop: BoxFuture<()>,
    /// Items yielded since the stop began; `None` before it.
    drained: Option<usize>,
}

impl<S: Stream + Unpin> Stream for UntilStopped<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.drained.is_none() && self.stop.as_mut().poll(cx).is_ready() {
            self.drained = Some(0);
        }
        match self.drained {
            Some(n) if n >= DRAIN_AT_STOP => Poll::Ready(None),
            Some(n) => match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    self.drained = Some(n + 1);
                    Poll::Ready(Some(item))
                }
                Poll::Pending if out_of_budget(cx) => Poll::Pending,
                Poll::Ready(None) | Poll::Pending => {
                    self.drained = Some(DRAIN_AT_STOP);
                    Poll::Ready(None)
                }
            },
            None => Pin::new(&mut self.inner).poll_next(cx),
        }
    }
}

/// Whether a `Pending` just seen may be tokio's cooperative budget running out rather than
/// nothing being ready; if so the task is woken to look again on its next turn.
fn out_of_budget(cx: &mut Context<'_>) -> bool {
    if tokio::task::coop::has_budget_remaining() {
        return false;
    }
    cx.waker().wake_by_ref();
    true
}

/// Resolves once `stopping` is true, or its sender is gone (the coordinator is gone: a stop too).
fn stop_future(mut stopping: watch::Receiver<bool>) -> BoxFuture<()> {
    Box::pin(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    })
}

/// A tower layer ending the long-lived streams with [`SHUTTING_DOWN`] once `stopping` is true.
#[derive(Debug, Clone)]
pub struct EndStreamsOnStop {
    stopping: watch::Receiver<bool>,
}

impl EndStreamsOnStop {
    pub fn new(stopping: watch::Receiver<bool>) -> EndStreamsOnStop {
        EndStreamsOnStop { stopping }
    }
}

impl<S> tower::Layer<S> for EndStreamsOnStop {
    type Service = EndStreamsOnStopService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EndStreamsOnStopService {
            inner,
            stopping: self.stopping.clone(),
        }
    }
}

/// The service of [`EndStreamsOnStop`].
#[derive(Debug, Clone)]
pub struct EndStreamsOnStopService<S> {
    inner: S,
    stopping: watch::Receiver<bool>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<Request<Body>> for EndStreamsOnStopService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let long_lived = LONG_LIVED.contains(&request.uri().path());
        let stopping = self.stopping.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // A trailers-only response (the call was refused) has no body to end.
            if !long_lived
                || response.body().is_end_stream()
                || response.headers().contains_key("grpc-status")
            {
                return Ok(response);
            }
            Ok(response.map(|body| Body::new(EndOnStop::new(body, stopping))))
        })
    }
}

/// A response body that ends with [`SHUTTING_DOWN`] trailers once the coordinator stops, after
/// the messages its stream had ready.
///
/// It relies on its stream to wake it when the stop begins, and keeps no wake-up of its own
/// (one per connected agent): the watches end by themselves on the stop ([`until_stopped`]),
/// and an agent's stream ends when its session does, which the session's loop ends on the stop.
struct EndOnStop {
    inner: Body,
    /// Read on every poll: the value is set before anything reacts to the stop, so an end the
    /// stop caused is always seen as one.
    stopping: watch::Receiver<bool>,
    ended: bool,
}

impl EndOnStop {
    fn new(inner: Body, stopping: watch::Receiver<bool>) -> EndOnStop {
        EndOnStop {
            inner,
            stopping,
            ended: false,
        }
    }
}

impl http_body::Body for EndOnStop {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let stopped = *self.stopping.borrow();
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if !stopped {
            if let Poll::Ready(None) = frame {
                self.ended = true;
            }
            return frame;
        }
        // Stopped: the messages the stream still had ready go out; its own end (OK trailers,
        // which it reaches on the same signal) or a stream with nothing ready ends with ours.
        match frame {
            Poll::Ready(Some(Ok(frame))) if frame.is_data() => Poll::Ready(Some(Ok(frame))),
            Poll::Pending if out_of_budget(cx) => Poll::Pending,
            _ => {
                self.ended = true;
                Poll::Ready(Some(Ok(Frame::trailers(shutting_down_trailers()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn shutting_down_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    // The message is plain ASCII, which always encodes as a header value.
    let _ = tonic::Status::unavailable(SHUTTING_DOWN).add_header(&mut trailers);
    trailers
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_stopped_stream_yields_what_it_had_ready_then_ends() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let (stop, stopping) = watch::channel(false);
        let mut stream = until_stopped(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            stopping,
        );
        tx.send(1).expect("the stream holds the receiver");
        assert_eq!(stream.next().await, Some(1));
        tx.send(2).expect("the stream holds the receiver");
        tx.send(3).expect("the stream holds the receiver");
        stop.send_replace(true);
        assert_eq!(stream.next().await, Some(2));
        assert_eq!(stream.next().await, Some(3));
        // Nothing ready: the end, and nothing after it even if more arrives.
        assert_eq!(stream.next().await, None);
        tx.send(4).expect("the stream holds the receiver");
        assert_eq!(stream.next().await, None);
    }

    #[tokio::test]
    async fn a_source_that_never_pauses_cannot_hold_the_stop_up() {
        let (stop, stopping) = watch::channel(false);
        let mut stream = until_stopped(futures::stream::repeat(0u8), stopping);
        assert_eq!(stream.next().await, Some(0));
        stop.send_replace(true);
        let mut after = 0;
        while stream.next().await.is_some() {
            after += 1;
        }
        assert_eq!(after, DRAIN_AT_STOP);
    }

    #[tokio::test]
    async fn a_dropped_sender_is_a_stop() {
        let (stop, stopping) = watch::channel(false);
        let mut stream = until_stopped(futures::stream::pending::<u8>(), stopping);
        drop(stop);
        assert_eq!(stream.next().await, None);
    }
}
