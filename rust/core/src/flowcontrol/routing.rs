//! Dispatchers: `Admit` (no scheduling, the embeddable limiter) and the Router, resolving
//! candidates lazily from the snapshot current at dispatch time.

use std::sync::Arc;

use super::controller::{Dispatch, Dispatcher};
use crate::scheduling::{Decision, RouteError, RouteOptions, Router};

/// Dispatch means "you may go now"; the caller picks its own upstream.
pub struct Admit;

impl Dispatcher for Admit {
    type Request = ();
    type Output = ();
    fn dispatch(&self, _: &()) -> Dispatch<()> {
        Dispatch::Done(())
    }
    fn pool_empty(&self) -> bool {
        false
    }
}

/// What the Router needs to schedule a request.
#[derive(Debug, Clone, Default)]
pub struct RouteRequest {
    pub path: String,
    pub body: Vec<u8>,
    pub model_rewrite: Option<String>,
    pub subset: Option<Vec<String>>,
    /// Request headers for header-driven plugins (session affinity, ...).
    pub headers: Vec<(String, String)>,
}

/// Schedule over the current snapshot; an empty pool waits instead of failing.
pub fn route_when_possible(
    router: &Router,
    r: &RouteRequest,
) -> Dispatch<Result<Decision, RouteError>> {
    if router.store().snapshot().endpoints.is_empty() {
        return Dispatch::NoCandidates;
    }
    let options = RouteOptions {
        model_rewrite: r.model_rewrite.as_deref(),
        subset: r.subset.as_deref(),
        headers: &r.headers,
    };
    Dispatch::Done(router.route_with(&r.path, &r.body, &options))
}

impl Dispatcher for Arc<Router> {
    type Request = RouteRequest;
    type Output = Result<Decision, RouteError>;
    fn dispatch(&self, r: &RouteRequest) -> Dispatch<Self::Output> {
        route_when_possible(self, r)
    }
    fn pool_empty(&self) -> bool {
        self.store().snapshot().endpoints.is_empty()
    }
}
