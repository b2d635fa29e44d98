//! One ext_proc stream = one HTTP request: buffer the request body, admit it (flow control),
//! route it once, echo the rest. Every path through it (completion, error, client gone: `Drop`)
//! releases the request's in-flight count and flow-control place once and records the
//! request's metrics once, in the Router's RequestStats. A request flow control queues leaves
//! its answer pending; the gRPC layer polls `poll_admission` until the outcome arrives.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sluicegate_core::flowcontrol::eviction::{EVICTED_MESSAGE, EVICTED_REASON};
use sluicegate_core::flowcontrol::RouteView;
use sluicegate_core::parse::{
    find_usage, find_usage_object, model_of, replace_model_in_chunk_cow, GrpcResponse, Usage,
};
use sluicegate_core::scheduling::cycle::ScheduleError;
use sluicegate_core::scheduling::{BurstTicket, Decision, RouteError, RouteOptions};
use sluicegate_core::stats::{ChunkGaps, Outcome, RequestLabels, RequestStats};
use sluicegate_core::tokenize::{PreTokenized, TokenizeError};

use crate::admission::{Admitted, Ask, Decided, Gate, Refusal, Tracked, Waiting};
use crate::log::{self, Field, Level};
use crate::pb::processing_request::Request;
use crate::pb::{
    body_mode, value, HeaderValue, HttpBody, HttpHeaders, Metadata, ProcessingRequest,
    ProcessingResponse,
};
use crate::protocol;
use crate::responses::{self, Phase, Route};
use crate::SharedRouter;

/// Answers queued for the proxy; the gRPC layer drains it after each request message.
pub type Outbox = VecDeque<ProcessingResponse>;

/// Why a request is answered by the EPP instead of routed: an HTTP status and a message.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    status: u16,
    message: String,
    reason: &'static str,
}

impl From<RouteError> for Failure {
    fn from(e: RouteError) -> Failure {
        let (status, reason) = match e {
            RouteError::BadRequest(_) => (400, ""),
            // An admitter's refusal: upstream answers it 500 ("request cannot be admitted").
            RouteError::NoEndpoints(ScheduleError::NotAdmitted(_)) => (500, ""),
            RouteError::NoEndpoints(_) => (503, "rejected-no-endpoints"),
            RouteError::ModelNotServed { .. } => (404, ""),
        };
        Failure {
            status,
            message: e.to_string(),
            reason,
        }
    }
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Failure {
        Failure {
            status: r.rejection.status(),
            message: r.message,
            reason: r.rejection.reason(),
        }
    }
}

fn bad_request(message: String) -> Failure {
    Failure {
        status: 400,
        message,
        reason: "",
    }
}

/// Default cap on a buffered request body (as the gRPC message cap).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// What answers the request phase once the decision is known.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Header-only request: the decision rides on the headers answer.
    Headers,
    /// The body is complete; `trailers` when the request trailers came and wait for an answer.
    Body { end_of_stream: bool, trailers: bool },
}

/// A request being tokenized through the model server's render API before it is admitted
/// and routed: the call runs on tokio's blocking pool, bounded by a timeout, so no routing
/// thread waits on it.
struct Tokenizing {
    call: Pin<Box<dyn Future<Output = PreTokenized> + Send>>,
    body: Bytes,
    answer: Answer,
}

/// A request waiting for its burst-prefix-cache-producer window to seal.
struct Bursting {
    ticket: BurstTicket,
    body: Bytes,
    answer: Answer,
}

/// A request flow control queued: its outcome, and how to answer once it comes.
struct Pending {
    waiting: Waiting,
    answer: Answer,
}

pub struct RequestStream {
    router: SharedRouter,
    gate: Option<Arc<Gate>>,
    pending: Option<Pending>,
    tokenizing: Option<Tokenizing>,
    bursting: Option<Bursting>,
    /// The burst window's assignment once waited for (see `RouteOptions::burst`).
    burst: Option<Option<u64>>,
    /// The prompt's token ids when the token-producer tokenizes remotely (or why it could not).
    tokens: Option<Arc<PreTokenized>>,
    /// The request holds a flow-control place (freed when it ends).
    placed: bool,
    /// In-flight eviction tracks it while it runs (`enableEviction`).
    tracked: Option<Tracked>,
    skip_response: bool,
    max_body_bytes: usize,
    req_mode: i32,
    resp_mode: i32,
    path: String,
    rewrite: Option<String>,
    subset: Option<Vec<String>>,
    /// The request's headers (names lower-case, no pseudo-headers), collected only when some
    /// plugin reads them.
    headers: Vec<(String, String)>,
    parts: Vec<Bytes>,
    chunks: usize,
    decision: Option<Decision>,
    released: bool,
    finished: bool,
    served: String,
    objective: String,
    fairness_id: String,
    priority: i32,
    request_id: String,
    slo_ttft: Option<Duration>,
    metrics: Metrics,
}

/// What the request's metrics need beyond the decision; recorded once, when it ends.
struct Metrics {
    recorded: bool,
    started_at: Instant,
    ttft_s: Option<f64>,
    request_bytes: u64,
    response_bytes: u64,
    /// The response's last bytes, where the `usage` object is.
    tail: Vec<u8>,
    /// A gRPC response (vllmgrpc / vertexai parsers): its frames, read for their usage.
    grpc: Option<GrpcResponse>,
    /// The request phase's processing time is recorded (routed or answered by the EPP).
    request_timed: bool,
    /// Streamed responses: gaps between body chunks, and when the last one came.
    itl: ChunkGaps,
    last_chunk: Option<Instant>,
    /// When the response headers came; the EPP's own time on the response so far.
    response_at: Option<Instant>,
    response_handling: Duration,
    /// The model a request names that failed before it was routed (its error's label).
    failed_model: Option<String>,
}

impl Metrics {
    /// The token usage the response reported (OpenAI JSON, or the gRPC messages' counts).
    fn usage(&self) -> Option<Usage> {
        match &self.grpc {
            Some(g) => g.usage(),
            None => find_usage(&self.tail),
        }
    }

    /// The request phase ended (routed, queued then routed, or refused): time since receipt.
    fn request_done(&mut self, stats: &RequestStats) {
        if !std::mem::replace(&mut self.request_timed, true) {
            stats
                .request_processing
                .observe_duration(self.started_at.elapsed());
        }
    }
}

/// Enough of the response's end for its usage object (as the Python path keeps).
const TAIL_BYTES: usize = 2048;

/// HTTP status of a failed request → upstream's `error_code` label.
fn error_code(status: u16) -> &'static str {
    match status {
        400 | 413 => "BadRequest",
        404 => "NotFound", // a model the pool's allow-list does not name (upstream's code)
        429 => "ResourceExhausted",
        500 => "Internal",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    }
}

impl RequestStream {
    pub fn new(router: SharedRouter, skip_response: bool) -> RequestStream {
        RequestStream {
            router,
            gate: None,
            pending: None,
            tokenizing: None,
            bursting: None,
            burst: None,
            tokens: None,
            placed: false,
            tracked: None,
            skip_response,
            max_body_bytes: MAX_BODY_BYTES,
            req_mode: body_mode::FULL_DUPLEX_STREAMED,
            resp_mode: body_mode::FULL_DUPLEX_STREAMED,
            path: "/".to_owned(),
            rewrite: None,
            subset: None,
            headers: Vec::new(),
            parts: Vec::new(),
            chunks: 0,
            decision: None,
            released: false,
            finished: false,
            served: String::new(),
            objective: String::new(),
            fairness_id: protocol::DEFAULT_FAIRNESS_ID.to_owned(),
            priority: 0,
            request_id: String::new(),
            slo_ttft: None,
            metrics: Metrics {
                recorded: false,
                started_at: Instant::now(),
                ttft_s: None,
                request_bytes: 0,
                response_bytes: 0,
                tail: Vec::new(),
                grpc: None,
                request_timed: false,
                itl: ChunkGaps::default(),
                last_chunk: None,
                response_at: None,
                response_handling: Duration::ZERO,
                failed_model: None,
            },
        }
    }

    /// Bodies above `n` bytes get 413 as soon as they cross it; what was buffered is dropped.
    pub fn with_max_body_bytes(mut self, n: usize) -> RequestStream {
        self.max_body_bytes = n;
        self
    }

    /// Admit through flow control (or, gate off, legacy shedding) before routing.
    pub fn with_gate(mut self, gate: Option<Arc<Gate>>) -> RequestStream {
        self.gate = gate;
        self
    }

    /// True while the request is being tokenized or flow control holds it: poll
    /// `poll_admission` before reading on.
    pub fn waiting(&self) -> bool {
        self.pending.is_some() || self.tokenizing.is_some() || self.bursting.is_some()
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// The gRPC layer closes the stream (OK) once this is set and the outbox is drained.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The endpoint the proxy reports as having served the request ("" until it does).
    pub fn served(&self) -> &str {
        &self.served
    }

    pub fn objective(&self) -> &str {
        &self.objective
    }

    pub fn fairness_id(&self) -> &str {
        &self.fairness_id
    }

    /// Queue the answers to one proxy message; a failure replaces them with one immediate response.
    pub fn handle(&mut self, req: ProcessingRequest, out: &mut Outbox) {
        let start = out.len();
        let result = match req.request {
            Some(Request::RequestHeaders(h)) => {
                self.on_request_headers(h, req.metadata_context, req.protocol_config, out)
            }
            Some(Request::RequestBody(b)) => self.on_request_body(b, out),
            Some(Request::RequestTrailers(_)) => self.on_request_trailers(out),
            Some(Request::ResponseHeaders(h)) => {
                self.on_response_headers(h, req.metadata_context, out);
                Ok(())
            }
            Some(Request::ResponseBody(b)) => {
                self.on_response_body(b, out);
                Ok(())
            }
            Some(Request::ResponseTrailers(_)) => {
                // A gRPC response ends in HTTP/2 trailers, its last body chunk without end of
                // stream (upstream finishes the response here): the reporter's values go with them.
                self.complete(None);
                let mut trailers = responses::empty_response_trailers();
                trailers.dynamic_metadata = self.reported_metadata();
                out.push_back(trailers);
                Ok(())
            }
            None => Err(bad_request("unexpected ext_proc message 'None'".to_owned())),
        };
        if let Err(f) = result {
            out.truncate(start);
            self.fail(f, out);
        }
    }

    /// Wait for flow control's outcome; once it comes, queue the answers it makes.
    pub fn poll_admission(&mut self, cx: &mut Context<'_>, out: &mut Outbox) -> Poll<()> {
        if let Some(b) = self.bursting.as_mut() {
            let placed = match Pin::new(&mut b.ticket).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(placed) => placed.ok().flatten(),
            };
            let b = self.bursting.take().expect("polled");
            self.burst = Some(placed);
            if let Err(f) = self.decide(b.body, b.answer, out) {
                self.fail(f, out);
            }
            return Poll::Ready(());
        }
        if let Some(t) = self.tokenizing.as_mut() {
            let tokens = match t.call.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(tokens) => tokens,
            };
            let t = self.tokenizing.take().expect("polled");
            self.tokens = Some(Arc::new(tokens));
            if let Err(f) = self.decide(t.body, t.answer, out) {
                self.fail(f, out);
            }
            return Poll::Ready(());
        }
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Ready(());
        };
        let decided = match Pin::new(&mut pending.waiting).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(d) => d,
        };
        let pending = self.pending.take().expect("polled");
        let result = match decided {
            Decided::Routed(d) => {
                self.place();
                let body = Bytes::copy_from_slice(pending.waiting.body());
                self.decided(d);
                self.answer(body, pending.answer, out);
                Ok(())
            }
            Decided::Failed(e) => Err(self.named(pending.waiting.body(), e.into())),
            Decided::Refused(r) => Err(self.named(pending.waiting.body(), r.into())),
        };
        if let Err(f) = result {
            self.fail(f, out);
        }
        Poll::Ready(())
    }

    /// The request holds a flow-control place now; with eviction on it may be revoked.
    fn place(&mut self) {
        self.placed = true;
        self.tracked = self.gate.as_ref().and_then(|g| g.track(self.priority));
    }

    /// Ready once flow control revoked the running request (in-flight eviction): it is answered
    /// 429 `evicted` as upstream does, which makes the proxy reset the model server's stream.
    pub fn poll_revoked(&mut self, cx: &mut Context<'_>, out: &mut Outbox) -> Poll<()> {
        let Some(tracked) = self.tracked.as_mut() else {
            return Poll::Pending;
        };
        match tracked.poll_revoked(cx) {
            Poll::Ready(true) if !self.released => {
                self.fail(
                    Failure {
                        status: 429,
                        message: EVICTED_MESSAGE.to_owned(),
                        reason: EVICTED_REASON,
                    },
                    out,
                );
                Poll::Ready(())
            }
            _ => Poll::Pending,
        }
    }

    /// Answer the request with an error instead of routing it; logged at default verbosity.
    fn fail(&mut self, f: Failure, out: &mut Outbox) {
        self.finished = true;
        self.pending = None;
        self.tokenizing = None;
        self.bursting = None;
        if self.metrics.response_at.is_none() {
            self.metrics.request_done(self.router.router().stats());
        }
        self.complete(Some(error_code(f.status)));
        log::line(
            Level::Warning,
            "request answered by the endpoint picker",
            &[
                ("request_id", Field::Str(&self.request_id)),
                ("status", Field::Int(i64::from(f.status))),
                ("reason", Field::Str(f.reason)),
                ("error", Field::Str(&f.message)),
            ],
        );
        out.push_back(responses::immediate(f.status, &f.message, f.reason));
    }

    /// The stream ended (normally, by error, or by client disconnect).
    pub fn close(&mut self) {
        self.complete(None);
        self.parts = Vec::new();
    }

    // request phase

    fn on_request_headers(
        &mut self,
        headers: HttpHeaders,
        metadata: Option<Metadata>,
        config: Option<crate::pb::ProtocolConfiguration>,
        out: &mut Outbox,
    ) -> Result<(), Failure> {
        if let Some(c) = config {
            self.req_mode = c.request_body_mode;
            self.resp_mode = c.response_body_mode;
        }
        let mut explicit_fairness = false;
        let keep_headers = self.router.router().reads_headers();
        for h in headers.headers.iter().flat_map(|m| m.headers.iter()) {
            let key = h.key.as_str();
            if keep_headers && !key.starts_with(':') {
                self.headers
                    .push((key.to_ascii_lowercase(), header_text(h)));
            }
            if key == ":path" {
                self.path = header_text(h);
            } else if protocol::MODEL_REWRITE_HEADERS.contains(&key) {
                self.rewrite = Some(header_text(h)).filter(|v| !v.is_empty());
            } else if protocol::OBJECTIVE_HEADERS.contains(&key) {
                self.objective = header_text(h);
            } else if protocol::FAIRNESS_HEADERS.contains(&key) {
                explicit_fairness = true;
                let id = header_text(h);
                self.fairness_id = if id.is_empty() {
                    protocol::DEFAULT_FAIRNESS_ID.to_owned()
                } else {
                    id
                };
            } else if key == protocol::REQUEST_ID {
                self.request_id = header_text(h);
            } else if protocol::SLO_TTFT_HEADERS.contains(&key) {
                self.slo_ttft = slo_ttft(&header_text(h));
            }
        }
        if !explicit_fairness {
            // agent-identity: an agent's session header names the fairness queue.
            let all = headers.headers.iter().flat_map(|m| m.headers.iter());
            let pairs = all.map(|h| (h.key.as_str(), header_str(h)));
            if let Some(id) = self.router.router().agent_identity(pairs) {
                self.fairness_id = id.to_owned();
            }
        }
        self.subset = subset_hint(metadata.as_ref());
        if self.gate.is_some() || self.router.router().has_admitters() {
            let policies = self.router.router().policies();
            self.priority = policies.objectives.priority_of(&self.objective);
        }
        if headers.end_of_stream || self.req_mode == body_mode::NONE {
            self.decide(Bytes::new(), Answer::Headers, out)?;
        } else if self.req_mode != body_mode::FULL_DUPLEX_STREAMED {
            out.push_back(responses::empty_request_headers());
        } // full duplex: the answer waits for the whole body
        Ok(())
    }

    fn on_request_body(&mut self, body: HttpBody, out: &mut Outbox) -> Result<(), Failure> {
        self.metrics.request_bytes += body.body.len() as u64;
        if self.decision.is_none() && self.metrics.request_bytes > self.max_body_bytes as u64 {
            self.parts.clear();
            return Err(Failure {
                status: 413,
                message: format!(
                    "request body exceeds the limit of {} bytes (--max-request-body-bytes)",
                    self.max_body_bytes
                ),
                reason: "",
            });
        }
        self.parts.push(body.body);
        self.chunks += 1;
        if !body.end_of_stream {
            return Ok(()); // STREAMED chunks are answered together once the decision is made
        }
        self.answer_request(true, false, out)
    }

    fn on_request_trailers(&mut self, out: &mut Outbox) -> Result<(), Failure> {
        if self.decision.is_none() {
            return self.answer_request(false, true, out);
        }
        if !self.finished {
            out.push_back(responses::empty_request_trailers());
        }
        Ok(())
    }

    fn answer_request(
        &mut self,
        end_of_stream: bool,
        trailers: bool,
        out: &mut Outbox,
    ) -> Result<(), Failure> {
        let body = self.take_body();
        let answer = Answer::Body {
            end_of_stream,
            trailers,
        };
        self.decide(body, answer, out)
    }

    /// Admit, route and answer; a request flow control queues is answered when its turn comes.
    fn decide(&mut self, body: Bytes, answer: Answer, out: &mut Outbox) -> Result<(), Failure> {
        if self.decision.is_some()
            || self.released
            || self.pending.is_some()
            || self.tokenizing.is_some()
            || self.bursting.is_some()
        {
            // Out of order (a body after the trailers, or after the request ended): routing again
            // would leak the first pick or start a request nothing ends.
            return Err(bad_request(
                "ext_proc: the request was routed already; message out of order".to_owned(),
            ));
        }
        if self.tokens.is_none() && !body.is_empty() {
            if let Some(call) = self.tokenize(&body) {
                self.tokenizing = Some(Tokenizing { call, body, answer });
                return Ok(());
            }
        }
        if self.burst.is_none() {
            let router = self.router.router();
            match router.burst_ticket(&self.path, &body, self.subset.as_deref()) {
                Some(Ok(ticket)) => {
                    self.bursting = Some(Bursting {
                        ticket,
                        body,
                        answer,
                    });
                    return Ok(());
                }
                // The window is full: routed without the producer's data, as upstream.
                Some(Err(_)) => self.burst = Some(None),
                None => {}
            }
        }
        let Some(gate) = self.gate.clone() else {
            self.route(&body).map_err(|f| self.named(&body, f))?;
            self.answer(body, answer, out);
            return Ok(());
        };
        let ask = Ask {
            priority: self.priority,
            flow: &self.fairness_id,
            size: body.len() as u64,
            slo_ttft: self.slo_ttft,
        };
        let request = RouteView {
            path: &self.path,
            body: &body,
            model_rewrite: self.rewrite.as_deref(),
            subset: self.subset.as_deref(),
            headers: &self.headers,
            priority: self.priority,
            tokens: self.tokens.as_ref(),
            burst: self.burst,
        };
        match admit(&gate, &ask, request)? {
            Admitted::Direct => {
                self.route(&body).map_err(|f| self.named(&body, f))?;
            }
            Admitted::Now(routed) => {
                let d = routed.map_err(|e| self.named(&body, e.into()))?;
                self.place();
                self.decided(d);
            }
            Admitted::Waiting(waiting) => {
                self.pending = Some(Pending { waiting, answer });
                return Ok(());
            }
            Admitted::Refused(r) => return Err(self.named(&body, r.into())),
        }
        self.answer(body, answer, out);
        Ok(())
    }

    /// When the token-producer tokenizes through the render API: that call for this body, run
    /// on the blocking pool and bounded by the client's timeout (a failure is scored as no
    /// prefix match and counted). None when tokenizing is local or no runtime runs us.
    fn tokenize(&self, body: &Bytes) -> Option<Pin<Box<dyn Future<Output = PreTokenized> + Send>>> {
        let source = self.router.router().remote_tokens()?;
        let limit = source.call_timeout()?;
        tokio::runtime::Handle::try_current().ok()?;
        let (path, body) = (self.path.clone(), body.clone());
        let call = tokio::task::spawn_blocking(move || source.tokens(&path, &body));
        Some(Box::pin(async move {
            match tokio::time::timeout(limit, call).await {
                Ok(Ok(tokens)) => tokens,
                Ok(Err(e)) => Err(TokenizeError(format!("render call failed: {e}"))),
                Err(_) => Err(TokenizeError(format!(
                    "render call took longer than {limit:?}"
                ))),
            }
        }))
    }

    /// The request-phase answers once the decision is made.
    fn answer(&mut self, body: Bytes, answer: Answer, out: &mut Outbox) {
        let Some(decision) = self.decision.as_mut() else {
            return;
        };
        let rewritten = decision.body.take().map(Bytes::from);
        let route = Route {
            endpoints: &decision.endpoints,
            headers: &decision.headers,
            remove: decision.removed_headers(),
            scores: decision.endpoint_scores.as_deref(),
        };
        let Answer::Body {
            end_of_stream,
            trailers,
        } = answer
        else {
            out.push_back(responses::routed_headers(&route, None));
            self.after_request();
            return;
        };
        if self.req_mode == body_mode::FULL_DUPLEX_STREAMED {
            let body = rewritten.unwrap_or(body);
            out.push_back(responses::routed_headers(&route, Some(body.len())));
            responses::push_streamed_chunks(out, body, end_of_stream, Phase::Request);
        } else {
            // STREAMED sent earlier chunks unanswered: answer each; a rewritten body replaces them all.
            let held = if rewritten.is_some() {
                responses::cleared_request_body()
            } else {
                responses::empty_request_body()
            };
            out.extend(std::iter::repeat_n(held, self.chunks.saturating_sub(1)));
            out.push_back(responses::routed_body(&route, rewritten));
        }
        self.after_request();
        if trailers && !self.finished {
            out.push_back(responses::empty_request_trailers());
        }
    }

    /// The buffered body as one buffer; a body that came in one message is not copied.
    fn take_body(&mut self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.pop().unwrap_or_default(),
            _ => {
                let mut whole = BytesMut::with_capacity(self.parts.iter().map(Bytes::len).sum());
                for part in self.parts.drain(..) {
                    whole.extend_from_slice(&part);
                }
                whole.freeze()
            }
        }
    }

    fn route(&mut self, body: &[u8]) -> Result<(), Failure> {
        let (router, path) = (self.router.router(), &self.path);
        let options = RouteOptions {
            model_rewrite: self.rewrite.as_deref(),
            subset: self.subset.as_deref(),
            headers: &self.headers,
            priority: self.priority,
            tokens: self.tokens.as_deref(),
            burst: self.burst,
        };
        // A bug must not hang the request: a panic is answered 500 and the stream closed.
        let routed = catch_unwind(AssertUnwindSafe(|| router.route_with(path, body, &options)))
            .map_err(|_| Failure {
                status: 500,
                message: "internal error: panic in routing".to_owned(),
                reason: "",
            })?;
        self.decided(routed?);
        Ok(())
    }

    /// A request refused after its body parsed keeps the model it names for its error's labels
    /// (as upstream, which parses first); a body that does not parse has none.
    fn named(&mut self, body: &[u8], f: Failure) -> Failure {
        if f.status != 400 {
            self.metrics.failed_model = model_of(body);
        }
        f
    }

    /// The request runs now: count it started (and say where it went at debug level).
    fn decided(&mut self, d: Decision) {
        self.metrics.request_done(self.router.router().stats());
        let decision = self.decision.insert(d);
        self.metrics.grpc = decision.grpc.map(GrpcResponse::new);
        let (model, target_model) = labels_of(decision);
        self.router.router().stats().started(RequestLabels {
            model,
            target_model,
            fairness_id: &self.fairness_id,
            priority: self.priority,
        });
        if log::enabled(Level::Debug) {
            log::line(
                Level::Debug,
                "routed",
                &[
                    ("request_id", Field::Str(&self.request_id)),
                    ("model", Field::Str(model)),
                    ("endpoints", Field::Str(&decision.endpoints)),
                    ("fairness_id", Field::Str(&self.fairness_id)),
                    ("priority", Field::Int(i64::from(self.priority))),
                ],
            );
        }
    }

    fn after_request(&mut self) {
        // Full duplex ignores mode_override: the only way to skip the response phase is to close.
        // Not when the response must be rewritten back or carry headers (a session token).
        if self.skip_response
            && self
                .decision
                .as_ref()
                .is_some_and(|d| d.target_model.is_none() && d.response_headers.is_empty())
        {
            self.finished = true;
            self.complete(None);
        }
    }

    // response phase

    fn on_response_headers(
        &mut self,
        headers: HttpHeaders,
        metadata: Option<Metadata>,
        out: &mut Outbox,
    ) {
        let lb = metadata
            .as_ref()
            .and_then(|m| m.filter_metadata.get(protocol::DESTINATION_NAMESPACE));
        let served = lb.and_then(|s| s.fields.get(protocol::SERVED_ENDPOINT));
        if let Some(v) = served {
            self.served = v.as_str().to_owned();
        }
        let at = Instant::now();
        self.metrics.response_at.get_or_insert(at);
        let verdict = self
            .router
            .router()
            .served_verdict(lb.is_some(), served.map(|v| v.as_str()));
        if headers.end_of_stream {
            self.complete(None);
        }
        let add = self
            .decision
            .as_ref()
            .map_or(&[][..], |d| &d.response_headers[..]);
        out.push_back(responses::response_headers(
            add,
            verdict,
            self.rewriting_back().is_some(),
        ));
        self.metrics.response_handling += at.elapsed();
    }

    fn on_response_body(&mut self, body: HttpBody, out: &mut Outbox) {
        let at = Instant::now();
        self.on_response_chunk(body, out);
        self.metrics.response_handling += at.elapsed();
    }

    fn on_response_chunk(&mut self, body: HttpBody, out: &mut Outbox) {
        if self.metrics.ttft_s.is_none() {
            // The first response byte: prefill is done, the prompt tokens it held go back.
            if let Some(d) = &mut self.decision {
                self.router.router().first_byte(d);
            }
        }
        let end = self.ends_response(&body);
        self.answer_response_chunk(body, out);
        if end {
            if let (Some(md), Some(last)) = (self.reported_metadata(), out.back_mut()) {
                last.dynamic_metadata = Some(md);
            }
        }
    }

    /// request-attribute-reporter: the values computed from the finished response's usage.
    fn reported_metadata(&self) -> Option<crate::pb::Struct> {
        let router = self.router.router();
        if !router.reports_usage() || self.decision.is_none() {
            return None;
        }
        let usage = match &self.metrics.grpc {
            Some(g) => g.usage_object(),
            None => find_usage_object(&self.metrics.tail),
        };
        let usage = serde_json::Value::Object(usage?);
        let values = router.usage_attributes(&usage);
        (!values.is_empty()).then(|| responses::reported_metadata(values.into_iter()))
    }

    /// The response's last body message: end of stream, or the one message of BUFFERED mode,
    /// which holds the whole body also when trailers follow (a gRPC response's, which Envoy does
    /// not send in that mode: trailer mode SKIP).
    fn ends_response(&self, body: &HttpBody) -> bool {
        body.end_of_stream || self.resp_mode == body_mode::BUFFERED
    }

    fn answer_response_chunk(&mut self, body: HttpBody, out: &mut Outbox) {
        self.observe_response(&body.body);
        if self.ends_response(&body) {
            self.complete(None);
        }
        let mut chunk = body.body;
        let full_duplex = self.resp_mode == body_mode::FULL_DUPLEX_STREAMED;
        if let Some((target, model)) = self.rewriting_back() {
            if let std::borrow::Cow::Owned(replaced) =
                replace_model_in_chunk_cow(&chunk, target, model)
            {
                chunk = Bytes::from(replaced);
            }
            if !full_duplex {
                out.push_back(responses::replaced_response_body(chunk));
                return;
            }
        } else if !full_duplex {
            out.push_back(responses::empty_response_body());
            return;
        }
        responses::push_streamed_chunks(out, chunk, body.end_of_stream, Phase::Response);
    }

    /// (model sent upstream, model the client named) when the response must be rewritten back.
    fn rewriting_back(&self) -> Option<(&str, &str)> {
        let d = self.decision.as_ref()?;
        match (d.target_model.as_deref(), d.model.as_deref()) {
            (Some(target), Some(model)) if target != model => Some((target, model)),
            _ => None,
        }
    }

    fn complete(&mut self, error_code: Option<&'static str>) {
        if !self.released {
            self.released = true; // ended: nothing routes after this
            self.pending = None; // still queued: cancelled, its place freed
            if let Some(d) = &mut self.decision {
                self.router.router().finish(d);
            }
            if std::mem::take(&mut self.placed) {
                if let Some(gate) = &self.gate {
                    if let Some(tracked) = self.tracked.take() {
                        gate.untrack(tracked);
                    }
                    gate.release();
                }
            }
        }
        if !self.metrics.recorded {
            self.record(error_code);
        }
    }

    // metrics: one call when the request starts running and one when it ends

    fn observe_response(&mut self, chunk: &[u8]) {
        let m = &mut self.metrics;
        if m.recorded {
            return;
        }
        m.ttft_s
            .get_or_insert_with(|| m.started_at.elapsed().as_secs_f64());
        m.response_bytes += chunk.len() as u64;
        // Inter-token latency: the gap since the previous chunk of a streamed response.
        if !chunk.is_empty() && self.decision.as_ref().is_some_and(|d| d.stream) {
            let now = Instant::now();
            if let Some(last) = m.last_chunk.replace(now) {
                m.itl.observe((now - last).as_secs_f64());
            }
        }
        if let Some(g) = &mut m.grpc {
            g.feed(chunk);
            return;
        }
        let keep = chunk.len().min(TAIL_BYTES);
        let drop = (m.tail.len() + keep).saturating_sub(TAIL_BYTES);
        m.tail.drain(..drop);
        m.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
    }

    fn record(&mut self, error_code: Option<&str>) {
        let m = &mut self.metrics;
        m.recorded = true;
        let usage = m.usage();
        let saw_response = m.ttft_s.is_some();
        let failed = m.failed_model.as_deref().unwrap_or("");
        let (model, target_model) = self.decision.as_ref().map_or((failed, failed), labels_of);
        let streaming = self.decision.as_ref().is_some_and(|d| d.stream);
        let stats = self.router.router().stats();
        // The EPP's time on the response: its handlers (streamed), or headers to end (unary).
        if let Some(at) = m.response_at {
            let took = if streaming {
                m.response_handling
            } else {
                at.elapsed()
            };
            stats.response_processing.observe_duration(took);
        }
        let outcome = Outcome {
            error_code,
            request_bytes: Some(m.request_bytes),
            response_bytes: saw_response.then_some(m.response_bytes),
            input_tokens: usage.map(|u| u.prompt_tokens),
            output_tokens: usage.map(|u| u.completion_tokens),
            cached_tokens: usage.map(|u| u.cached_tokens()).filter(|n| *n > 0),
            duration_s: saw_response.then(|| m.started_at.elapsed().as_secs_f64()),
            ttft_s: m.ttft_s,
            streaming,
            itl: (m.itl.count() > 0).then_some(&m.itl),
        };
        // A served request trains the latency predictor (predicted-latency-producer), if any.
        if let (None, Some(d), Some(ttft), Some(total)) = (
            error_code,
            &self.decision,
            outcome.ttft_s,
            outcome.duration_s,
        ) {
            let tpot = usage
                .filter(|u| u.completion_tokens > 1)
                .map(|u| (total - ttft) / (u.completion_tokens - 1) as f64);
            self.router.router().observe_latency(d, ttft, tpot);
        }
        if let (Some(gate), Some(u), true) = (&self.gate, usage, self.decision.is_some()) {
            gate.completed(&self.fairness_id, u.prompt_tokens, u.completion_tokens);
        }
        let labels = RequestLabels {
            model,
            target_model,
            fairness_id: &self.fairness_id,
            priority: self.priority,
        };
        stats.finished(labels, self.decision.is_some(), &outcome);
    }
}

/// (model, target model) labels: the target is the model itself when not rewritten.
fn labels_of(d: &Decision) -> (&str, &str) {
    let model = d.model.as_deref().unwrap_or("");
    (model, d.target_model.as_deref().unwrap_or(model))
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        self.complete(None);
    }
}

/// Admission that cannot hang the request on a bug: a panic is answered 500.
fn admit(gate: &Arc<Gate>, ask: &Ask<'_>, request: RouteView<'_>) -> Result<Admitted, Failure> {
    catch_unwind(AssertUnwindSafe(|| gate.admit(ask, request))).map_err(|_| Failure {
        status: 500,
        message: "internal error: panic in admission".to_owned(),
        reason: "",
    })
}

/// `x-llm-d-slo-ttft-ms` (or its alias): the TTFT objective ordering slo-deadline flows;
/// ignored when malformed.
fn slo_ttft(value: &str) -> Option<Duration> {
    let ms: f64 = value.trim().parse().ok()?;
    (ms > 0.0 && ms < 1e12).then(|| Duration::from_secs_f64(ms / 1000.0))
}

/// The header's value without copying; a raw value that is not UTF-8 reads as empty.
fn header_str(h: &HeaderValue) -> &str {
    if h.raw_value.is_empty() {
        &h.value
    } else {
        std::str::from_utf8(&h.raw_value).unwrap_or("")
    }
}

fn header_text(h: &HeaderValue) -> String {
    // Envoy fills raw_value (bytes) since 1.27; older proxies fill value.
    if h.raw_value.is_empty() {
        h.value.clone()
    } else {
        String::from_utf8_lossy(&h.raw_value).into_owned()
    }
}

/// Candidates named by the proxy; None = whole pool, Some([]) = named but empty (→ 503).
fn subset_hint(metadata: Option<&Metadata>) -> Option<Vec<String>> {
    let fields = &metadata?
        .filter_metadata
        .get(protocol::SUBSET_NAMESPACE)?
        .fields;
    let hint = fields.get(protocol::SUBSET_KEY)?;
    Some(match &hint.kind {
        Some(value::Kind::ListValue(list)) => list
            .values
            .iter()
            .map(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(value::Kind::StringValue(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    })
}

#[cfg(test)]
#[path = "stream_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "stream_admission_tests.rs"]
pub(crate) mod admission_tests;

#[cfg(test)]
#[path = "stream_headers_tests.rs"]
mod headers_tests;
