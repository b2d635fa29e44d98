//! The admitter contract (upstream's requestcontrol `Admitter`): after the data producers and
//! before any profile runs, each admitter listed in `plugins:` may refuse the request; the first
//! refusal ends the cycle with `ScheduleError::NotAdmitted` (HTTP 500 upstream: "request cannot
//! be admitted"). Admitters need no profile reference.

use crate::scheduling::cycle::Cycle;

pub trait Admitter: Send + Sync {
    /// `candidates` are the snapshot positions the request may go to (its subset hint applied).
    /// Err carries the reason.
    fn admit(&self, cycle: &Cycle<'_>, candidates: &[u32]) -> Result<(), String>;
}
