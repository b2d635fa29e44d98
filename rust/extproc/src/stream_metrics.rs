//! upstream's opt-in ext_proc stream metrics (--enable-grpc-stream-metrics): streams open now,
//! how long each stayed open, how each ended by gRPC code. Counted here with atomics per stream
//! (never per message); Python reads a snapshot at scrape time and names the families.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tonic::Code;

/// upstream's bucket bounds in seconds (the last bucket, +Inf, is implicit).
pub const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// gRPC codes by number, spelled as Go's codes.Code.String() so upstream's queries match.
pub const CODE_NAMES: [&str; 17] = [
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

#[derive(Default)]
pub struct StreamMetrics {
    inflight: AtomicI64,
    /// Non-cumulative: observations per bucket, the last one for above 600 s.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    ended: [AtomicU64; CODE_NAMES.len()],
}

/// What a scrape reads; buckets are cumulative (Prometheus' `le`), the last one is +Inf.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMetricsSnapshot {
    pub inflight: i64,
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
    pub ended: Vec<(&'static str, u64)>,
}

impl StreamMetrics {
    /// A stream opened: counted in flight until the returned guard is finished or dropped.
    pub fn opened(self: &Arc<Self>) -> OpenStream {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        OpenStream {
            metrics: self.clone(),
            start: Instant::now(),
            code: None,
        }
    }

    fn ended(&self, code: Code, start: Instant) {
        let elapsed = start.elapsed();
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        let index = (code as usize).min(CODE_NAMES.len() - 1);
        self.ended[index].fetch_add(1, Ordering::Relaxed);
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StreamMetricsSnapshot {
        let mut total = 0;
        let buckets = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        StreamMetricsSnapshot {
            inflight: self.inflight.load(Ordering::Relaxed),
            buckets,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            ended: CODE_NAMES
                .iter()
                .zip(&self.ended)
                .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// One open stream. Ends with the code it was given, or Canceled when dropped without one
/// (the proxy reset the stream or went away, as Go's handler sees a cancelled context).
pub struct OpenStream {
    metrics: Arc<StreamMetrics>,
    start: Instant,
    code: Option<Code>,
}

impl OpenStream {
    pub fn finish(&mut self, code: Code) {
        self.code.get_or_insert(code);
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics
            .ended(self.code.unwrap_or(Code::Cancelled), self.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_in_flight_until_it_ends_then_counted_by_go_code_name() {
        let metrics = Arc::new(StreamMetrics::default());
        let mut ok = metrics.opened();
        let reset = metrics.opened();
        assert_eq!(metrics.snapshot().inflight, 2);
        ok.finish(Code::Ok);
        drop(ok);
        drop(reset);
        let snap = metrics.snapshot();
        assert_eq!(snap.inflight, 0);
        assert_eq!(snap.ended, vec![("OK", 1), ("Canceled", 1)]);
        assert_eq!(snap.buckets.len(), BUCKETS.len() + 1);
        assert_eq!(*snap.buckets.last().unwrap(), 2);
    }

    #[test]
    fn the_first_code_given_is_the_one_counted() {
        let metrics = Arc::new(StreamMetrics::default());
        let mut s = metrics.opened();
        s.finish(Code::ResourceExhausted);
        s.finish(Code::Ok);
        drop(s);
        assert_eq!(metrics.snapshot().ended, vec![("ResourceExhausted", 1)]);
    }
}
