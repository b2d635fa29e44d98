//! The envoy.service.ext_proc.v3.ExternalProcessor gRPC service, written as tonic's generated
//! code would be (no protoc): one bidirectional `Process` stream per HTTP request.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tonic::body::Body as GrpcBody;
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Status, Streaming};

use crate::admission::Gate;
use crate::log::{self, Field, Level};
use crate::pb::{ProcessingRequest, ProcessingResponse};
use crate::protocol;
use crate::stream::{Outbox, RequestStream, MAX_BODY_BYTES};
use crate::stream_metrics::{OpenStream, StreamMetrics};
use crate::trim::OpenStreamCount;
use crate::SharedRouter;
use std::sync::Arc;

const PROCESS_PATH: &str = "/envoy.service.ext_proc.v3.ExternalProcessor/Process";
/// Bodies are buffered whole (BUFFERED mode, large prompts): allow what the Python server allows.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct ExternalProcessorService {
    router: SharedRouter,
    gate: Option<Arc<Gate>>,
    skip_response: bool,
    max_body_bytes: usize,
    /// gRPC message limits (--grpc-max-recv-msg-size / --grpc-max-send-msg-size).
    max_recv_bytes: usize,
    max_send_bytes: usize,
    /// --enable-grpc-stream-metrics: each Process stream counted; None = not counted.
    stream_metrics: Option<Arc<StreamMetrics>>,
}

impl ExternalProcessorService {
    pub fn new(router: SharedRouter, skip_response: bool) -> ExternalProcessorService {
        ExternalProcessorService {
            router,
            gate: None,
            skip_response,
            max_body_bytes: MAX_BODY_BYTES,
            max_recv_bytes: MAX_MESSAGE_BYTES,
            max_send_bytes: MAX_MESSAGE_BYTES,
            stream_metrics: None,
        }
    }

    /// Count each Process stream (open, duration, ending code) into `metrics`.
    pub fn with_stream_metrics(
        mut self,
        metrics: Option<Arc<StreamMetrics>>,
    ) -> ExternalProcessorService {
        self.stream_metrics = metrics;
        self
    }

    /// Admit requests through flow control (or legacy shedding) before routing.
    pub fn with_gate(mut self, gate: Option<Arc<Gate>>) -> ExternalProcessorService {
        self.gate = gate;
        self
    }

    /// Largest gRPC message received and sent; None keeps the default (64 MiB).
    pub fn with_message_limits(
        mut self,
        recv: Option<usize>,
        send: Option<usize>,
    ) -> ExternalProcessorService {
        self.max_recv_bytes = recv.unwrap_or(MAX_MESSAGE_BYTES);
        self.max_send_bytes = send.unwrap_or(MAX_MESSAGE_BYTES);
        self
    }

    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> ExternalProcessorService {
        self.max_body_bytes = max_body_bytes;
        self
    }
}

impl NamedService for ExternalProcessorService {
    const NAME: &'static str = protocol::EXT_PROC_SERVICE;
}

impl<B> Service<http::Request<B>> for ExternalProcessorService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<GrpcBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != PROCESS_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("only Process is served here").into_http())
            });
        }
        let method = ProcessMethod(self.clone());
        let limits = (Some(self.max_recv_bytes), Some(self.max_send_bytes));
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<ProcessingResponse, ProcessingRequest>::default();
            let mut grpc = Grpc::new(codec).apply_max_message_size_config(limits.0, limits.1);
            Ok(grpc.streaming(method, req).await)
        })
    }
}

struct ProcessMethod(ExternalProcessorService);

impl StreamingService<ProcessingRequest> for ProcessMethod {
    type Response = ProcessingResponse;
    type ResponseStream = ProcessStream;
    type Future = std::future::Ready<Result<tonic::Response<ProcessStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<ProcessingRequest>>) -> Self::Future {
        let state = RequestStream::new(self.0.router.clone(), self.0.skip_response)
            .with_max_body_bytes(self.0.max_body_bytes)
            .with_gate(self.0.gate.clone());
        std::future::ready(Ok(tonic::Response::new(ProcessStream {
            inbound: request.into_inner(),
            state,
            outbox: VecDeque::with_capacity(4),
            inbound_done: false,
            counted: self.0.stream_metrics.as_ref().map(|m| m.opened()),
            _open: OpenStreamCount::new(),
        })))
    }
}

/// The answers of one stream: drains the outbox, waits for flow control's outcome when the
/// request is queued, then reads the next proxy message. Ends (OK) when the proxy half-closes
/// or the state machine is finished; dropping it (client gone) drops the state machine, which
/// cancels a queued request and releases a running one.
pub struct ProcessStream {
    inbound: Streaming<ProcessingRequest>,
    state: RequestStream,
    outbox: Outbox,
    inbound_done: bool,
    /// Open in the stream metrics until the stream ends (dropped unfinished = Canceled).
    counted: Option<OpenStream>,
    /// Counted while open; the end of a burst hands its freed memory back (trim.rs).
    _open: OpenStreamCount,
}

impl ProcessStream {
    fn ended(&mut self, code: tonic::Code) {
        if let Some(open) = self.counted.as_mut() {
            open.finish(code);
        }
    }
}

impl Stream for ProcessStream {
    type Item = Result<ProcessingResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(answer) = this.outbox.pop_front() {
                return Poll::Ready(Some(Ok(answer)));
            }
            if this.state.waiting() {
                match this.state.poll_admission(cx, &mut this.outbox) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => continue,
                }
            }
            // A running request flow control revoked is answered now (in-flight eviction).
            if this.state.poll_revoked(cx, &mut this.outbox).is_ready() {
                continue;
            }
            if this.inbound_done || this.state.finished() {
                this.state.close();
                this.ended(tonic::Code::Ok);
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inbound).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(req))) => this.state.handle(req, &mut this.outbox),
                Poll::Ready(Some(Err(status))) => {
                    this.inbound_done = true;
                    this.state.close();
                    log::line(
                        Level::Warning,
                        "ext_proc stream failed",
                        &[
                            ("request_id", Field::Str(this.state.request_id())),
                            ("grpc_status", Field::Str(&format!("{:?}", status.code()))),
                            ("error", Field::Str(status.message())),
                        ],
                    );
                    // As upstream's handler: the proxy cancelling its stream ends it cleanly.
                    this.ended(match status.code() {
                        tonic::Code::Cancelled => tonic::Code::Ok,
                        code => code,
                    });
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(None) => this.inbound_done = true,
            }
        }
    }
}
