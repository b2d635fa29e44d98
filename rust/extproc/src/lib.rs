//! sluicegate-extproc: the EPP's Envoy ext_proc server in Rust (tonic on tokio). Each stream runs
//! the request state machine, admits the request through flow control and calls the
//! sluicegate-core Router directly: no Python, no GIL on the request path. Python configures,
//! starts, drains and stops it through `sluicegate._core.extproc.ExtProcServer`.

pub mod admission;
pub mod log;
pub mod pb;
pub mod protocol;
pub mod responses;
mod server;
mod service;
pub mod stream;
pub mod stream_metrics;
pub mod tls;
mod trim;

pub use admission::Gate;
pub use server::{ExtProcServer, ServerError, ServerOptions, TlsPem};
pub use service::ExternalProcessorService;
pub use stream_metrics::{StreamMetrics, StreamMetricsSnapshot};
pub use tls::TlsPolicy;

use sluicegate_core::scheduling::Router;

/// Whatever keeps the Router a server routes with alive: the Router itself, or a handle of the
/// embedding program (the Python Router object), so both sides route over the same endpoints.
pub trait RouterHandle: Send + Sync + 'static {
    fn router(&self) -> &Router;
}

impl RouterHandle for Router {
    fn router(&self) -> &Router {
        self
    }
}

pub type SharedRouter = std::sync::Arc<dyn RouterHandle>;
