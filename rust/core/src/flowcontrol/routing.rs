//! Dispatchers: `Admit` (no scheduling, the embeddable limiter) and the Router, resolving
//! candidates lazily from the snapshot current at dispatch time. A request waits (rather than
//! fails) while nothing it may go to exists: an empty pool, or no endpoint in its subset hint
//! (scale from zero behind a proxy that names the candidates, upstream's "admission before
//! resolution").

use std::sync::Arc;

use super::controller::{Dispatch, Dispatcher};
use crate::datalayer::Snapshot;
use crate::scheduling::{Decision, RouteError, RouteOptions, Router};
use crate::tokenize::PreTokenized;

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
    /// The objective's priority, for admitters.
    pub priority: i32,
    /// Token ids computed before routing (see `Router::remote_tokens`).
    pub tokens: Option<Arc<PreTokenized>>,
    /// The burst window's assignment when waited for already (see `RouteOptions::burst`).
    pub burst: Option<Option<u64>>,
}

/// True when `snapshot` holds nothing a request with `subset` may go to. A subset hint that
/// names nothing at all never matches and is left to the scheduler to refuse (no wait).
pub fn no_candidates(snapshot: &Snapshot, subset: Option<&[String]>) -> bool {
    if snapshot.endpoints.is_empty() {
        return true;
    }
    match subset {
        Some(names) if !names.is_empty() => !snapshot.endpoints.iter().any(|e| {
            names
                .iter()
                .any(|n| *n == e.info.address || *n == e.info.ip)
        }),
        _ => false,
    }
}

/// A request to route as its caller holds it, borrowed: nothing is copied until it must queue.
#[derive(Debug, Clone, Copy)]
pub struct RouteView<'a> {
    pub path: &'a str,
    pub body: &'a [u8],
    pub model_rewrite: Option<&'a str>,
    pub subset: Option<&'a [String]>,
    pub headers: &'a [(String, String)],
    /// The objective's priority, for admitters.
    pub priority: i32,
    pub tokens: Option<&'a Arc<PreTokenized>>,
    pub burst: Option<Option<u64>>,
}

impl RouteRequest {
    pub fn view(&self) -> RouteView<'_> {
        RouteView {
            path: &self.path,
            body: &self.body,
            model_rewrite: self.model_rewrite.as_deref(),
            subset: self.subset.as_deref(),
            headers: &self.headers,
            priority: self.priority,
            tokens: self.tokens.as_ref(),
            burst: self.burst,
        }
    }
}

impl RouteView<'_> {
    /// The request as the queue keeps it.
    pub fn to_request(&self) -> RouteRequest {
        RouteRequest {
            path: self.path.to_owned(),
            body: self.body.to_vec(),
            model_rewrite: self.model_rewrite.map(str::to_owned),
            subset: self.subset.map(<[String]>::to_vec),
            headers: self.headers.to_vec(),
            priority: self.priority,
            tokens: self.tokens.cloned(),
            burst: self.burst,
        }
    }
}

/// Schedule over the current snapshot; an empty pool or subset waits instead of failing.
pub fn route_when_possible(
    router: &Router,
    r: &RouteRequest,
) -> Dispatch<Result<Decision, RouteError>> {
    route_view_when_possible(router, r.view())
}

/// `route_when_possible` for a borrowed request.
pub fn route_view_when_possible(
    router: &Router,
    r: RouteView<'_>,
) -> Dispatch<Result<Decision, RouteError>> {
    if no_candidates(&router.store().snapshot(), r.subset) {
        return Dispatch::NoCandidates;
    }
    let options = RouteOptions {
        model_rewrite: r.model_rewrite,
        subset: r.subset,
        headers: r.headers,
        priority: r.priority,
        tokens: r.tokens.map(|t| &**t),
        burst: r.burst,
    };
    Dispatch::Done(router.route_with(r.path, r.body, &options))
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
    fn no_candidates(&self, r: &RouteRequest) -> bool {
        no_candidates(&self.store().snapshot(), r.subset.as_deref())
    }
}
