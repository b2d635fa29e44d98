//! session-affinity-scorer (llm-d): the endpoint that served the session before scores 1, the
//! rest 0 — a soft preference other scorers can outweigh. Strategies and parameters as
//! session-affinity-filter (`scheduling::session`).

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{Picks, Scorer};
use crate::scheduling::cycle::Cycle;
use crate::scheduling::session::{self, ProfileRef, SessionIds, Strategy};

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::Scorer(match session::parse(p)? {
        Strategy::Encoded { header, .. } => Arc::new(SessionAffinityScorer { header }),
        Strategy::SessionId(ids) => Arc::new(SessionIdScorer { ids }),
    }))
}

/// The encoded-endpoint-header strategy.
pub struct SessionAffinityScorer {
    pub header: String,
}

impl Default for SessionAffinityScorer {
    fn default() -> Self {
        SessionAffinityScorer {
            header: session::SESSION_TOKEN_HEADER.to_owned(),
        }
    }
}

fn one_hot(out: &mut [f64], at: Option<usize>) {
    out.fill(0.0);
    if let Some(i) = at {
        out[i] = 1.0;
    }
}

impl Scorer for SessionAffinityScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        one_hot(
            out,
            session::token_candidate(cycle, &self.header, candidates),
        );
    }
}

/// The session-id strategy.
pub struct SessionIdScorer {
    ids: SessionIds,
}

impl Scorer for SessionIdScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        one_hot(out, self.ids.bound_candidate(cycle, candidates));
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
}
