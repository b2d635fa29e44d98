//! session-affinity-filter (llm-d): pins a session to the endpoint that served it before, as a
//! hard constraint. When that endpoint is a candidate it is the only one left; with no session,
//! an unknown one, or its endpoint gone, every candidate passes (never none). Strategies and
//! parameters as session-affinity-scorer (`scheduling::session`).
//! multicluster-session-affinity-filter is the same filter: cluster identity comes from
//! discovery, so pinning the endpoint pins its cluster.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Picks;
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::session::{self, ProfileRef, SessionIds, Strategy};

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::Filter(match session::parse(p)? {
        Strategy::Encoded { header, .. } => Arc::new(TokenFilter { header }),
        Strategy::SessionId(ids) => Arc::new(SessionIdFilter { ids }),
    }))
}

fn keep_only(candidates: &mut Vec<u32>, at: Option<usize>) {
    if let Some(i) = at {
        let kept = candidates[i];
        candidates.clear();
        candidates.push(kept);
    }
}

/// The encoded-endpoint-header strategy.
pub struct TokenFilter {
    header: String,
}

impl Filter for TokenFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        let at = session::token_candidate(cycle, &self.header, candidates);
        keep_only(candidates, at);
        Ok(())
    }
}

/// The session-id strategy.
pub struct SessionIdFilter {
    ids: SessionIds,
}

impl Filter for SessionIdFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        let at = self.ids.bound_candidate(cycle, candidates);
        keep_only(candidates, at);
        Ok(())
    }

    fn picked(&self, cycle: &Cycle<'_>, picks: &Picks) {
        self.ids.commit(cycle, picks);
    }

    fn endpoint_removed(&self, id: u64) {
        self.ids.endpoint_removed(id);
    }

    fn session_profile(&self) -> Option<&ProfileRef> {
        Some(&self.ids.profile)
    }

    fn learns(&self) -> bool {
        true
    }
}
