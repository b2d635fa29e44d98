//! Upstream plugin types that sluicegate does not run, each with the reason. A config naming one
//! is refused with that reason at load time: never accepted and then ignored.

pub const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "multicluster-approx-prefix-cache-producer",
        "multi-cluster pools are not supported",
    ),
    (
        "precise-prefix-cache-scorer",
        "use prefix-cache-scorer with a precise-prefix-cache-producer",
    ),
    (
        "burst-prefix-cache-producer",
        "burst prefix-cache prediction is not implemented",
    ),
    (
        "p2p-source-producer",
        "peer-to-peer KV transfer sources are not implemented",
    ),
    (
        "mm-embeddings-cache-producer",
        "multimodal embedding caches are not tracked",
    ),
    (
        "mm-embeddings-cache-scorer",
        "multimodal embedding caches are not tracked",
    ),
    ("token-load-scorer", "token-load scoring is not implemented"),
    (
        "multicluster-queue-scorer",
        "multi-cluster pools are not supported",
    ),
    (
        "multicluster-kv-cache-utilization-scorer",
        "multi-cluster pools are not supported",
    ),
    (
        "multicluster-prefix-cache-scorer",
        "multi-cluster pools are not supported",
    ),
    (
        "prefix-cache-affinity-filter",
        "prefix matches are scored after the filters here, so no filter can read them",
    ),
    (
        "disaggregatedset-rollout-screener",
        "rollout screening is not implemented",
    ),
    (
        "request-attribute-reporter",
        "request attribute reporting is not implemented",
    ),
    (
        "sheddable-eviction-filter",
        "flow control does not evict dispatched requests",
    ),
    (
        "priority-then-time-eviction-order-policy",
        "flow control does not evict dispatched requests",
    ),
];

/// The reason a known upstream type is refused, if it is one.
pub fn reason(kind: &str) -> Option<&'static str> {
    UNSUPPORTED
        .iter()
        .find(|(t, _)| *t == kind)
        .map(|(_, r)| *r)
}
