//! How the long-lived streams end when the coordinator stops: an agent's `Connect`, an operator's
//! `WatchEvents` and `WatchRollout` end with `UNAVAILABLE` and the reason ([`SHUTTING_DOWN`]), so
//! an agent logs why its link dropped and havctl says why its watch ended, instead of a clean end
//! that reads as "nothing more to say".
//!
//! Guarantees: only the responses of those three methods are touched, so a unary call in flight
//! when the stop begins completes as it would have; a stream that ended before the stop keeps its
//! own status. The services end these streams themselves when `stopping` turns true; this layer
//! decides only the status they end with, in one place for both services.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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

/// A response body that ends with [`SHUTTING_DOWN`] trailers once the coordinator stops.
struct EndOnStop {
    inner: Body,
    /// Read on every poll: the value is set before waiters are woken, and the service's stream
    /// can end in between.
    stopping: watch::Receiver<bool>,
    /// Wakes this body when the stop begins.
    stop: BoxFuture<()>,
    ended: bool,
}

impl EndOnStop {
    fn new(inner: Body, stopping: watch::Receiver<bool>) -> EndOnStop {
        let mut waker = stopping.clone();
        EndOnStop {
            inner,
            stopping,
            stop: Box::pin(async move {
                // A dropped sender means the coordinator is gone: that is a stop too.
                let _ = waker.wait_for(|stop| *stop).await;
            }),
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
        // The stop first: the service's own stream ends on the same signal, with OK.
        let stopped = *self.stopping.borrow();
        if stopped || self.stop.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(Some(Ok(Frame::trailers(shutting_down_trailers()))));
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.ended = true;
        }
        frame
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
