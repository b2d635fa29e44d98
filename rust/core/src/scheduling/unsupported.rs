//! Upstream plugin types that sluicegate does not run, each with the reason. A config naming one
//! is refused with that reason at load time: never accepted and then ignored.

pub const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "approx-prefix-cache-producer",
        "the prefix-cache scorer keeps its own approximate index",
    ),
    (
        "multicluster-approx-prefix-cache-producer",
        "the cluster-scoped alias of approx-prefix-cache-producer, which is not registered here",
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
    (
        "session-id-producer",
        "session ids are read from request headers by session-affinity-scorer (session_id strategy)",
    ),
    (
        "token-load-scorer",
        "in-flight token estimates (tokenized prompt sizes held until the first streamed byte) are not kept; in-flight requests are (active-request-scorer)",
    ),
    (
        "session-affinity-filter",
        "use session-affinity-scorer (a soft preference) instead",
    ),
    (
        "multicluster-session-affinity-filter",
        "the cluster-scoped alias of session-affinity-filter, which is not registered here",
    ),
    (
        "multicluster-queue-scorer",
        "it reads the pool averages other clusters' EPPs publish (multicluster-metrics-data-source), which sluicegate does not read",
    ),
    (
        "multicluster-kv-cache-utilization-scorer",
        "it reads the pool averages other clusters' EPPs publish (multicluster-metrics-data-source), which sluicegate does not read",
    ),
    (
        "prefix-cache-affinity-filter",
        "prefix matches are scored after the filters here, and its TTFT gate reads in-flight tokens, which are not kept",
    ),
    (
        "latency-slo-admitter",
        "admission by predicted latency is not implemented (use flow control)",
    ),
    (
        "probabilistic-admitter",
        "admission by probability is not implemented (use flow control)",
    ),
    (
        "disaggregatedset-rollout-screener",
        "rollout screening is not implemented",
    ),
    (
        "request-attribute-reporter",
        "its values are CEL expressions over the response usage, and no CEL evaluator is built in",
    ),
    (
        "program-aware-fairness",
        "program-aware fairness is not implemented in flow control",
    ),
    (
        "soft-reflective-ceiling-policy",
        "the soft reflective ceiling usage policy is not implemented",
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
