//! Upstream's --enable-grpc-stream-metrics for the Rust server: each ext_proc `Process` stream is
//! counted while open, timed until its response body ends or is dropped, and counted by its gRPC
//! status (Go's `codes.Code` spelling, so upstream's queries match). A stream whose body is
//! dropped before its trailers (the proxy reset it) ends `Canceled`, as grpc-go reports it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame};
use sluicegate_core::stats::Histogram;
use tonic::body::Body as GrpcBody;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;

const PROCESS_PATH: &str = "/envoy.service.ext_proc.v3.ExternalProcessor/Process";
/// Upstream's extproc_stream_duration_seconds buckets.
pub const STREAM_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
const GO_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

pub struct StreamMetrics {
    inflight: AtomicI64,
    ended: Mutex<(Histogram, [u64; 17])>,
}

/// What a scrape reads: streams open now, ended streams by code, their durations.
pub struct StreamSnapshot {
    pub inflight: i64,
    pub ended: Vec<(&'static str, u64)>,
    pub duration: Histogram,
}

impl Default for StreamMetrics {
    fn default() -> Self {
        StreamMetrics {
            inflight: AtomicI64::new(0),
            ended: Mutex::new((Histogram::new(STREAM_DURATION_BUCKETS), [0; 17])),
        }
    }
}

impl StreamMetrics {
    pub fn snapshot(&self) -> StreamSnapshot {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        StreamSnapshot {
            inflight: self.inflight.load(Ordering::Relaxed),
            ended: GO_CODES
                .iter()
                .zip(ended.1)
                .filter(|(_, n)| *n > 0)
                .map(|(c, n)| (*c, n))
                .collect(),
            duration: ended.0.clone(),
        }
    }

    fn finish(&self, code: usize, seconds: f64) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        ended.0.observe(seconds);
        ended.1[code.min(GO_CODES.len() - 1)] += 1;
    }
}

/// One open stream; recorded when dropped (with the body, or with the call when never answered).
struct StreamGuard {
    metrics: Arc<StreamMetrics>,
    started: Instant,
    code: Option<usize>,
}

impl StreamGuard {
    fn start(metrics: Arc<StreamMetrics>) -> StreamGuard {
        metrics.inflight.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            metrics,
            started: Instant::now(),
            code: None,
        }
    }

    fn read_status(&mut self, headers: &http::HeaderMap) {
        if let Some(v) = headers.get("grpc-status") {
            let code = v.to_str().ok().and_then(|s| s.parse::<usize>().ok());
            self.code = Some(code.unwrap_or(UNKNOWN));
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.metrics.finish(self.code.unwrap_or(CANCELED), seconds);
    }
}

/// The ext_proc service with its `Process` streams counted.
#[derive(Clone)]
pub struct Counted<S> {
    pub inner: S,
    pub metrics: Arc<StreamMetrics>,
}

impl<S: NamedService> NamedService for Counted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Counted<S>
where
    S: Service<
        http::Request<B>,
        Response = http::Response<GrpcBody>,
        Error = Infallible,
        Future = BoxFuture<http::Response<GrpcBody>, Infallible>,
    >,
{
    type Response = http::Response<GrpcBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != PROCESS_PATH {
            return self.inner.call(req);
        }
        let mut guard = StreamGuard::start(self.metrics.clone());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let (parts, body) = answer.await?.into_parts();
            guard.read_status(&parts.headers); // a trailers-only answer carries its status here
            let body = GrpcBody::new(CountedBody { inner: body, guard });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

struct CountedBody {
    inner: GrpcBody,
    guard: StreamGuard,
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(trailers) = frame.trailers_ref() {
                self.guard.read_status(trailers);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_ends_with_its_trailer_status_or_canceled_when_dropped_before_it() {
        let metrics = Arc::new(StreamMetrics::default());
        let mut finished = StreamGuard::start(metrics.clone());
        let reset = StreamGuard::start(metrics.clone());
        assert_eq!(metrics.snapshot().inflight, 2);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        finished.read_status(&trailers);
        drop(finished);
        drop(reset);
        let snap = metrics.snapshot();
        assert_eq!(snap.inflight, 0);
        assert_eq!(snap.ended, vec![("OK", 1), ("Canceled", 1)]);
        assert_eq!(snap.duration.count(), 2);
    }
}
