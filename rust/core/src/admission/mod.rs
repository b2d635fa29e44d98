//! What a request's admission reads before it is scheduled: the priority of its objective and
//! the model rewrite rules. Both are plain tables the control plane (static config, Kubernetes
//! InferenceObjectives and InferenceModelRewrites) replaces whole; the request path only reads.

mod objectives;
mod rewrites;

pub use objectives::Objectives;
pub use rewrites::{RewriteRule, RewriteTable, RewriteTableError};

/// Everything admission reads, swapped as one value.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    pub objectives: Objectives,
    pub rewrites: RewriteTable,
}

#[cfg(test)]
mod tests;
