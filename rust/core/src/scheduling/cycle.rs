//! What one scheduling cycle sees: the snapshot it runs over, the request's hints and the
//! clock reading that decides which endpoints are fresh.

use std::time::{Duration, Instant};

use crate::datalayer::{Endpoint, Snapshot};

pub struct Cycle<'a> {
    pub snapshot: &'a Snapshot,
    pub now: Instant,
    pub staleness: Duration,
    /// Endpoint subset hint from the proxy ("ip" or "ip:port" entries); None = no restriction.
    pub subset: Option<&'a [String]>,
}

impl Cycle<'_> {
    /// Candidates are positions in `snapshot.endpoints`.
    pub fn endpoint(&self, candidate: u32) -> &Endpoint {
        &self.snapshot.endpoints[candidate as usize]
    }

    pub fn is_fresh(&self, candidate: u32) -> bool {
        self.endpoint(candidate).is_fresh(self.now, self.staleness)
    }
}

/// Why a cycle could not pick an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("no endpoints: {0}")]
    NoEndpoints(String),
}
