//! How long requests spent in flow control, by how they left it: upstream's
//! `flow_control_request_queue_duration_seconds` (fairness id, priority, outcome, model, target
//! model). Recorded once per request where its outcome is decided, read when Prometheus
//! scrapes; the requests-by-outcome counter is the histograms' counts, so the two always agree.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use super::item::Rejection;
use crate::stats::{Histogram, OVERFLOW};

/// Upstream's buckets for the queue-duration histogram, in seconds.
pub const QUEUE_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Upstream's QueueOutcome names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueOutcome {
    Dispatched,
    RejectedCapacity,
    EvictedTtl,
    EvictedNoEndpoints,
    EvictedContextCancelled,
    EvictedOther,
}

impl QueueOutcome {
    pub fn name(self) -> &'static str {
        match self {
            QueueOutcome::Dispatched => "Dispatched",
            QueueOutcome::RejectedCapacity => "RejectedCapacity",
            QueueOutcome::EvictedTtl => "EvictedTTL",
            QueueOutcome::EvictedNoEndpoints => "EvictedNoEndpoints",
            QueueOutcome::EvictedContextCancelled => "EvictedContextCancelled",
            QueueOutcome::EvictedOther => "EvictedOther",
        }
    }
}

impl QueueOutcome {
    const ALL: [QueueOutcome; 6] = [
        QueueOutcome::Dispatched,
        QueueOutcome::RejectedCapacity,
        QueueOutcome::EvictedTtl,
        QueueOutcome::EvictedNoEndpoints,
        QueueOutcome::EvictedContextCancelled,
        QueueOutcome::EvictedOther,
    ];

    /// The outcome upstream names `name`.
    pub fn from_name(name: &str) -> Option<QueueOutcome> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }
}

impl From<Rejection> for QueueOutcome {
    fn from(r: Rejection) -> QueueOutcome {
        match r {
            Rejection::Capacity => QueueOutcome::RejectedCapacity,
            Rejection::TtlExpired => QueueOutcome::EvictedTtl,
            Rejection::NoEndpoints => QueueOutcome::EvictedNoEndpoints,
            Rejection::ShuttingDown => QueueOutcome::EvictedOther,
        }
    }
}

/// Who left the queue: the histogram's label values other than the outcome.
#[derive(Debug, Clone, Copy)]
pub struct QueueLabels<'a> {
    pub fairness_id: &'a str,
    pub priority: i32,
    pub model: &'a str,
    pub target_model: &'a str,
}

/// One label set's histogram, as a scrape reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSeries {
    pub fairness_id: String,
    pub priority: i32,
    pub outcome: &'static str,
    pub model: String,
    pub target_model: String,
    pub duration: Histogram,
}

/// One label set's histogram as requests record it: atomics, so recorders never wait on each
/// other (nor on a recorder the scheduler preempted).
struct Series {
    labels: QueueSeries,
    counts: Box<[AtomicU64]>,
    /// f64 bits.
    sum: AtomicU64,
}

impl Series {
    fn observe(&self, seconds: f64) {
        let i = QUEUE_BUCKETS.partition_point(|b| *b < seconds);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + seconds).to_bits())
            });
    }

    fn read(&self) -> QueueSeries {
        let mut out = self.labels.clone();
        for (c, a) in out.duration.counts.iter_mut().zip(self.counts.iter()) {
            *c = a.load(Ordering::Relaxed);
        }
        out.duration.sum = f64::from_bits(self.sum.load(Ordering::Relaxed));
        out
    }
}

/// Label sets are few and long-lived: a request takes the map's read lock (shared with every
/// other request) to find its own; only a new label set takes the write lock.
pub struct QueueDurations {
    series: RwLock<HashMap<String, Series>>,
    max_series: usize,
}

thread_local! {
    static KEY: RefCell<String> = RefCell::new(String::with_capacity(96));
}

impl QueueDurations {
    /// `max_series` caps distinct label sets; later ones count under model `__other__`.
    pub fn new(max_series: usize) -> QueueDurations {
        QueueDurations {
            series: RwLock::new(HashMap::new()),
            max_series: max_series.max(1),
        }
    }

    /// One request left flow control after `seconds`; no allocation once its label set exists.
    pub fn observe(&self, l: QueueLabels<'_>, outcome: QueueOutcome, seconds: f64) {
        KEY.with_borrow_mut(|key| {
            write_key(key, &l, outcome);
            if let Some(s) = self.series.read().get(key.as_str()) {
                s.observe(seconds);
                return;
            }
            let mut map = self.series.write();
            let mut l = l;
            if !map.contains_key(key.as_str()) && map.len() >= self.max_series {
                l.model = OVERFLOW;
                l.target_model = OVERFLOW;
                write_key(key, &l, outcome);
            }
            map.entry(key.clone())
                .or_insert_with(|| Series {
                    labels: QueueSeries {
                        fairness_id: l.fairness_id.to_owned(),
                        priority: l.priority,
                        outcome: outcome.name(),
                        model: l.model.to_owned(),
                        target_model: l.target_model.to_owned(),
                        duration: Histogram::new(QUEUE_BUCKETS),
                    },
                    counts: (0..=QUEUE_BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
                    sum: AtomicU64::new(0f64.to_bits()),
                })
                .observe(seconds);
        })
    }

    /// Every label set, ordered so scrapes are stable.
    pub fn snapshot(&self) -> Vec<QueueSeries> {
        let mut out: Vec<QueueSeries> = self.series.read().values().map(Series::read).collect();
        out.sort_by(|a, b| {
            (
                &a.fairness_id,
                a.priority,
                a.outcome,
                &a.model,
                &a.target_model,
            )
                .cmp(&(
                    &b.fairness_id,
                    b.priority,
                    b.outcome,
                    &b.model,
                    &b.target_model,
                ))
        });
        out
    }
}

fn write_key(key: &mut String, l: &QueueLabels<'_>, outcome: QueueOutcome) {
    key.clear();
    let _ = write!(
        key,
        "{}\0{}\0{}\0{}\0{}",
        l.fairness_id,
        l.priority,
        outcome.name(),
        l.model,
        l.target_model
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(flow: &'a str, model: &'a str) -> QueueLabels<'a> {
        QueueLabels {
            fairness_id: flow,
            priority: 1,
            model,
            target_model: model,
        }
    }

    #[test]
    fn one_histogram_per_label_set_and_outcome() {
        let q = QueueDurations::new(10);
        q.observe(labels("a", "m"), QueueOutcome::Dispatched, 0.002);
        q.observe(labels("a", "m"), QueueOutcome::Dispatched, 0.2);
        q.observe(labels("a", "m"), Rejection::TtlExpired.into(), 3.0);
        let s = q.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].outcome, s[0].duration.count()), ("Dispatched", 2));
        assert_eq!((s[1].outcome, s[1].duration.count()), ("EvictedTTL", 1));
        assert_eq!(s[0].duration.sum, 0.202);
    }

    #[test]
    fn label_sets_past_the_cap_fold_into_the_overflow_model() {
        let q = QueueDurations::new(1);
        q.observe(labels("a", "m1"), QueueOutcome::Dispatched, 0.1);
        q.observe(labels("a", "m2"), QueueOutcome::Dispatched, 0.1);
        q.observe(labels("a", "m3"), QueueOutcome::Dispatched, 0.1);
        let s = q.snapshot();
        let total: u64 = s.iter().map(|s| s.duration.count()).sum();
        assert_eq!(total, 3, "nothing is lost");
        assert!(s
            .iter()
            .any(|s| s.model == OVERFLOW && s.duration.count() == 2));
    }
}
