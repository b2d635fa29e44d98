//! What one scheduling cycle sees: the snapshot it runs over, the request's facts and hints, the
//! clock reading that decides which endpoints are fresh, and state plugins share within the cycle.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::datalayer::{Endpoint, Snapshot};
use crate::scheduling::producers::approx_prefix_cache_producer::BYTES_PER_TOKEN;
use crate::scheduling::producers::mm_embeddings_cache_producer::{request_items, MediaItem};

/// The request as plugins see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// The model the request will be served as (after any rewrite); "" when none.
    pub model: &'a str,
    /// The flat prompt text, for prefix hashing.
    pub prompt: &'a [u8],
    pub cache_salt: Option<&'a str>,
    /// The request path and body as received, for plugins that tokenize the request.
    pub path: &'a str,
    pub body: &'a [u8],
    /// Request headers, names lower-case.
    pub headers: &'a [(String, String)],
    /// The request's objective priority (< 0: sheddable), read by admitters.
    pub priority: i32,
    /// Request attributes data producers published (session-id-producer), keyed by upstream's
    /// DataKey string "DataType/ProducerName".
    pub attributes: &'a [(String, String)],
    /// The body carries image, video or audio content (read only when a multimodal decider
    /// is configured).
    pub multimodal: bool,
    /// The prompt's token ids, computed before the cycle when the token-producer needs the
    /// network (render API); None: a plugin that needs them tokenizes in the cycle.
    pub tokens: Option<&'a crate::tokenize::PreTokenized>,
    /// The endpoint (id) the burst-prefix-cache-producer's window assigned the request to;
    /// None: no affinity, or no such producer.
    pub burst: Option<u64>,
}

impl Request<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first of `names` (a header and its deprecated aliases) the request carries.
    pub fn header_of(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.header(n))
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What the prefix-cache scorer learned in this cycle, read by the no-hit-lru scorer and the
/// disaggregation decider, and by the scorer itself when the pick is known.
#[derive(Debug, Default)]
pub struct PrefixState {
    /// Which producer cut these blocks (its address): with two prefix scorers, the last one's.
    pub producer: usize,
    pub hashes: Vec<u64>,
    pub block_tokens: usize,
    /// (candidate, leading blocks it has cached); candidates with no match are left out.
    pub matched: Vec<(u32, usize)>,
}

impl PrefixState {
    pub fn matched_blocks(&self, candidate: u32) -> usize {
        self.matched
            .iter()
            .find(|(c, _)| *c == candidate)
            .map_or(0, |(_, n)| *n)
    }
}

/// One profile's run as an explained cycle records it: the candidates left by the filters, each
/// scorer's raw scores (before clamping) with its weight, the weighted totals and the picks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileTrace {
    pub profile: String,
    pub candidates: Vec<u32>,
    pub scores: Vec<(String, f64, Vec<f64>)>,
    pub totals: Vec<f64>,
    pub picked: Vec<u32>,
}

/// The predicted-latency-producer's output for this cycle, by snapshot position.
#[derive(Debug, Default)]
pub struct LatencyState {
    /// (TTFT ms, TPOT ms); None where the predictor had nothing.
    pub predicted: Vec<Option<(f64, f64)>>,
    /// The request's TTFT SLO in ms (0 when absent).
    pub ttft_slo: f64,
    /// The request's TPOT SLO in ms times the buffer factor (0 when absent); None when TPOT is
    /// not judged (upstream judges it only in streaming mode): TPOT headroom is then 0.
    pub tpot_slo: Option<f64>,
}

impl LatencyState {
    /// (TTFT headroom, TPOT headroom): SLO minus prediction, positive = meets it.
    pub fn headroom(&self, candidate: u32) -> Option<(f64, f64)> {
        let (ttft, tpot) = (*self.predicted.get(candidate as usize)?)?;
        Some((
            self.ttft_slo - ttft,
            self.tpot_slo.map_or(0.0, |slo| slo - tpot),
        ))
    }
}

#[derive(Debug, Default)]
pub struct CycleState {
    pub prefix: Option<PrefixState>,
    /// The endpoint an earlier profile picked for this request (the decode pick, before the
    /// prefill profile runs), for plugins that place the next pick near it.
    pub peer: Option<u32>,
    pub latency: Option<LatencyState>,
    /// Session plugins (by address) whose session was bound to an endpoint that was not a
    /// candidate: the session moves to this cycle's pick.
    pub sessions_moved: Vec<usize>,
    /// The endpoints the screeners left for every profile (ascending); None = no screener.
    pub screened: Option<Vec<u32>>,
    /// The request's multimodal items, parsed from the body once by the first plugin that needs
    /// them (mm-embeddings-cache-scorer scores with them and records them after the pick).
    pub media_items: Option<Arc<[MediaItem]>>,
}

pub struct Cycle<'a> {
    pub snapshot: &'a Snapshot,
    pub now: Instant,
    pub staleness: Duration,
    /// Endpoint subset hint from the proxy ("ip" or "ip:port" entries); None = no restriction.
    pub subset: Option<&'a [String]>,
    pub request: Request<'a>,
    pub state: RefCell<CycleState>,
    /// Some when the cycle is explained: each profile run appends its trace.
    pub trace: Option<RefCell<Vec<ProfileTrace>>>,
    /// Some when decisions carry scores (--emit-endpoint-scores): the primary profile's
    /// candidates after its filters, with their weighted scores.
    pub primary_scores: Option<RefCell<Vec<(u32, f64)>>>,
    /// `snapshot.sent_total()` when the cycle began.
    sent_at: u64,
}

impl<'a> Cycle<'a> {
    pub fn new(snapshot: &'a Snapshot, now: Instant, staleness: Duration) -> Cycle<'a> {
        Cycle {
            snapshot,
            now,
            staleness,
            subset: None,
            request: Request::default(),
            state: RefCell::default(),
            trace: None,
            primary_scores: None,
            sent_at: snapshot.sent_total(),
        }
    }

    /// Some request was routed (on another thread) since the cycle began, so its load scores
    /// may have missed it.
    pub fn load_moved(&self) -> bool {
        self.snapshot.sent_total() != self.sent_at
    }

    /// The request's distinct multimodal items, parsed once per cycle.
    pub fn media_items(&self) -> Arc<[MediaItem]> {
        let cached = self.state.borrow().media_items.clone();
        if let Some(items) = cached {
            return items;
        }
        let items: Arc<[MediaItem]> = request_items(self.request.body).into();
        self.state.borrow_mut().media_items = Some(items.clone());
        items
    }

    /// Candidates are positions in `snapshot.endpoints`.
    pub fn endpoint(&self, candidate: u32) -> &Endpoint {
        &self.snapshot.endpoints[candidate as usize]
    }

    pub fn is_fresh(&self, candidate: u32) -> bool {
        self.endpoint(candidate).is_fresh(self.now, self.staleness)
    }

    /// The request's prompt in estimated tokens (upstream's tokenizer-free estimate).
    pub fn prompt_tokens(&self) -> u64 {
        self.request.prompt.len().div_ceil(BYTES_PER_TOKEN) as u64
    }

    /// The prompt tokens `candidate` would have to compute: the prompt less the leading blocks
    /// it holds, as the cycle's prefix match found them (the whole prompt when none ran).
    pub fn uncached_prompt_tokens(&self, candidate: u32) -> u64 {
        let cached = self
            .state
            .borrow()
            .prefix
            .as_ref()
            .map_or(0, |p| (p.matched_blocks(candidate) * p.block_tokens) as u64);
        self.prompt_tokens().saturating_sub(cached)
    }
}

/// Why a cycle could not pick an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("no endpoints: {0}")]
    NoEndpoints(String),
    /// An admitter refused the request (upstream answers 500).
    #[error("request cannot be admitted: {0}")]
    NotAdmitted(String),
}
