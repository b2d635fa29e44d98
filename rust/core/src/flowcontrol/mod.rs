//! Flow control: hold requests while the pool is saturated (or empty) and release them in
//! order — strict priority across bands, fairness across flows within a band, the flow's own
//! ordering within a flow — from one dispatch thread that drains as fast as saturation allows.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use sluicegate_core::flowcontrol::*;
//!
//! // Admit-only: at most 2 requests in flight, the rest wait in priority order.
//! let config = FlowControlConfig::default();
//! let detector = SaturationDetector::Concurrency { store: None, max_concurrency: 2 };
//! let done = Arc::new(Mutex::new(Vec::new()));
//! let sink = { let done = done.clone(); move |b: &mut Vec<Completion<()>>| done.lock().unwrap().extend(b.drain(..).map(|c| c.id)) };
//! let fc = FlowController::start(config, detector, Admit, sink).unwrap();
//! let item = fc.enqueue(&Admission { flow: "tenant-a", priority: 0, size: 100, ..Default::default() }, ()).unwrap();
//! while !done.lock().unwrap().contains(&item.id) { std::thread::yield_now(); }
//! fc.release(); // the request finished: room for the next one
//! ```

mod band;
pub mod config;
mod controller;
mod dispatch;
pub mod eviction;
mod item;
mod ledger;
mod outcomes;
pub mod program_aware;
mod queue;
mod routing;
pub mod saturation;
mod scale_from_zero;
pub mod usage_limits;

pub use config::{
    BandConfig, FairnessPolicy, FlowConfigError, FlowControlConfig, HoldbackDomain, OrderingPolicy,
    SaturationConfig, UsageLimit,
};
pub use controller::{Admission, CompletionSink, Dispatch, Dispatcher, FlowController, FlowStats};
pub use eviction::{Eviction, EvictionStats};
pub use item::{Completion, Item, Outcome, Rejection};
pub use outcomes::{
    EnqueueSeries, FlowGauge, FlowGaugeRow, FlowMetrics, QueueDurations, QueueLabels, QueueOutcome,
    QueueSeries, ENQUEUED, FLOW_GC_IDLE, QUEUE_BUCKETS,
};
pub use routing::{
    no_candidates, route_view_when_possible, route_when_possible, Admit, RouteRequest, RouteView,
};
pub use saturation::SaturationDetector;
pub use scale_from_zero::{Hold, HoldCounts, OnFirstHold, ScaleFromZero};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod waiting_tests;
