//! What a plugin factory builds: one configured plugin instance of one kind. The registry maps
//! upstream type names to factories; the scheduler wires the results into profiles.

use std::sync::Arc;

use crate::scheduling::contracts::admitter::Admitter;
use crate::scheduling::contracts::decider::PdDecider;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::picker::Picker;
use crate::scheduling::contracts::profile_handler::HandlerSpec;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::contracts::screener::Screener;
use crate::scheduling::producers::approx_prefix_cache_producer::ApproxPrefixProducer;
use crate::scheduling::producers::burst_prefix_cache_producer::BurstPrefixProducer;
use crate::scheduling::producers::mm_embeddings_cache_producer::MmEmbeddingsProducer;
use crate::scheduling::producers::p2p_source_producer::P2pSourceProducer;
use crate::scheduling::producers::precise_prefix_cache_producer::BlockIndex;
use crate::scheduling::producers::predicted_latency_producer::PredictedLatencyProducer;
use crate::scheduling::producers::session_id_producer::SessionIdProducer;

pub enum Plugin {
    Filter(Arc<dyn Filter>),
    Scorer(Arc<dyn Scorer>),
    /// One instance that filters and scores (upstream adds both roles when a profile names it).
    FilterAndScorer(Arc<dyn Filter>, Arc<dyn Scorer>),
    Picker(Arc<dyn Picker>),
    ProfileHandler(HandlerSpec),
    Decider(Arc<dyn PdDecider>),
    /// A data producer: the exact KV-block index fed by endpoint events.
    Producer(Arc<BlockIndex>),
    /// approx-prefix-cache-producer: the index of blocks routed to each endpoint.
    ApproxProducer(Arc<ApproxPrefixProducer>),
    /// burst-prefix-cache-producer: places each window of requests jointly.
    BurstProducer(Arc<BurstPrefixProducer>),
    /// mm-embeddings-cache-producer: which endpoints recently encoded each multimodal item.
    MmEmbeddings(Arc<MmEmbeddingsProducer>),
    /// p2p-source-producer: names a peer to pull the cached prompt prefix from.
    P2pSource(Arc<P2pSourceProducer>),
    /// token-producer: where the precise index gets a request's token ids (None: upstream's
    /// tokenizer-free estimate, i.e. sluicegate's byte scheme).
    Tokens(Option<Arc<crate::tokenize::TokenSource>>),
    /// topology-extractor: the label keys of an endpoint's locality.
    Topology(Arc<crate::scheduling::producers::topology_extractor::TopologyKeys>),
    /// agent-identity: the session headers that name a request's fairness id.
    AgentIdentity(Arc<crate::scheduling::producers::agent_identity::AgentIdentity>),
    /// destination-endpoint-served-verifier: responses report the served endpoint in a header.
    ServedVerifier,
    /// inflight-load-producer: how the in-flight tokens the Router keeps are estimated.
    InFlightLoad(crate::scheduling::producers::inflight_load_producer::TokenEstimate),
    /// request-attribute-reporter: reports a value computed from the response usage.
    AttributeReporter(
        Arc<crate::scheduling::producers::request_attribute_reporter::AttributeReporter>,
    ),
    /// session-id-producer: publishes the request's session id as a request attribute.
    SessionIdProducer(Arc<SessionIdProducer>),
    /// predicted-latency-producer: runs before the profiles; a profile may name it.
    LatencyProducer(Arc<PredictedLatencyProducer>),
    /// Runs before every profile and may refuse the request (latency-slo-, probabilistic-admitter).
    Admitter(Arc<dyn Admitter>),
    /// Runs once before every profile and narrows the endpoints they may use.
    Screener(Arc<dyn Screener>),
    /// Upstream's deprecated header handlers: the disagg handler sets these headers itself,
    /// for the profiles named here (checked against the handler's).
    HeadersHandler {
        prefill_profile: String,
        encode_profile: String,
    },
}
