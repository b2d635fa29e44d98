//! Screeners: narrow the endpoints every profile may use, once per request; one file per
//! upstream type.
pub mod disaggregatedset_rollout_screener;
