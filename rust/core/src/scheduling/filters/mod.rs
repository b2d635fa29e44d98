//! Filters: each narrows the candidate list (never adds to it). Stale and subset filters are
//! built into every profile; the rest are configured by upstream type name.
pub mod by_label_filter;
pub mod endpoint_attribute_filter;
pub mod header_based_testing_filter;
pub mod label_selector_filter;
pub mod prefix_cache_affinity_filter;
pub mod role_filter;
pub mod saturation_detector_filter;
pub mod session_affinity_filter;
pub mod slo_headroom_tier_filter;
pub mod stale_filter;
pub mod subset_filter;
pub mod topology_affinity_filter;
pub mod utilization_filter;
