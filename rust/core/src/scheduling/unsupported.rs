//! Upstream plugin types that sluicegate does not run, each with the reason. A config naming one
//! is refused with that reason at load time: never accepted and then ignored.

pub const UNSUPPORTED: &[(&str, &str)] = &[
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
        "token-load-scorer",
        "in-flight token estimates (tokenized prompt sizes held until the first streamed byte) are not kept; in-flight requests are (active-request-scorer)",
    ),
    (
        "prefix-cache-affinity-filter",
        "prefix matches are scored after the filters here, and its TTFT gate reads in-flight tokens, which are not kept",
    ),
    (
        "request-attribute-reporter",
        "its values are CEL expressions over the response usage, and no CEL evaluator is built in",
    ),
];

/// The reason a known upstream type is refused, if it is one.
pub fn reason(kind: &str) -> Option<&'static str> {
    UNSUPPORTED
        .iter()
        .find(|(t, _)| *t == kind)
        .map(|(_, r)| *r)
}
