//! Builders for the ProcessingResponse messages the EPP sends back to the proxy (the Rust twin
//! of python/sluicegate/extproc/messages.py).

use std::collections::HashMap;

use bytes::Bytes;

use crate::pb::processing_response::Response;
use crate::pb::{
    body_mutation::Mutation, BodyMutation, BodyResponse, CommonResponse, HeaderMutation,
    HeaderValue, HeaderValueOption, HeadersResponse, HttpStatus, ImmediateResponse,
    ProcessingResponse, StreamedBodyResponse, Struct, TrailersResponse, Value,
    OVERWRITE_IF_EXISTS_OR_ADD,
};
use crate::protocol;

/// Which side of the exchange a body answer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

fn of(response: Response) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        dynamic_metadata: None,
    }
}

pub fn empty_request_headers() -> ProcessingResponse {
    of(Response::RequestHeaders(HeadersResponse::default()))
}

pub fn empty_response_headers() -> ProcessingResponse {
    of(Response::ResponseHeaders(HeadersResponse::default()))
}

pub fn empty_request_body() -> ProcessingResponse {
    of(Response::RequestBody(BodyResponse::default()))
}

pub fn empty_response_body() -> ProcessingResponse {
    of(Response::ResponseBody(BodyResponse::default()))
}

pub fn cleared_request_body() -> ProcessingResponse {
    let common = CommonResponse {
        body_mutation: Some(BodyMutation {
            mutation: Some(Mutation::ClearBody(true)),
        }),
        ..Default::default()
    };
    of(Response::RequestBody(BodyResponse {
        response: Some(common),
    }))
}

pub fn empty_request_trailers() -> ProcessingResponse {
    of(Response::RequestTrailers(TrailersResponse::default()))
}

pub fn empty_response_trailers() -> ProcessingResponse {
    of(Response::ResponseTrailers(TrailersResponse::default()))
}

fn set(key: &str, value: impl Into<Bytes>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: String::new(),
            raw_value: value.into(),
        }),
        append_action: OVERWRITE_IF_EXISTS_OR_ADD,
        keep_empty_value: false,
    }
}

/// Request-phase answer that routes to `endpoints` ("ip:port[,ip:port...]").
fn destination_mutation(endpoints: &str, content_length: Option<usize>) -> CommonResponse {
    let mut headers = Vec::with_capacity(2);
    headers.push(set(
        protocol::DESTINATION_ENDPOINT,
        Bytes::copy_from_slice(endpoints.as_bytes()),
    ));
    if let Some(n) = content_length {
        headers.push(set("content-length", n.to_string()));
    }
    CommonResponse {
        header_mutation: Some(HeaderMutation {
            set_headers: headers,
            remove_headers: Vec::new(),
        }),
        clear_route_cache: true,
        ..Default::default()
    }
}

fn destination_metadata(endpoints: &str) -> Struct {
    let inner = Struct {
        fields: HashMap::from([(
            protocol::DESTINATION_ENDPOINT.to_owned(),
            Value::string(endpoints),
        )]),
    };
    Struct {
        fields: HashMap::from([(
            protocol::DESTINATION_NAMESPACE.to_owned(),
            Value::structure(inner),
        )]),
    }
}

/// Full duplex and header-only requests: the decision rides on the request-headers answer.
pub fn routed_headers(endpoints: &str, content_length: Option<usize>) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(Response::RequestHeaders(HeadersResponse {
            response: Some(destination_mutation(endpoints, content_length)),
        })),
        dynamic_metadata: Some(destination_metadata(endpoints)),
    }
}

/// BUFFERED/STREAMED modes: the decision rides on the body answer (headers are held until then).
pub fn routed_body(endpoints: &str, body: Option<Bytes>) -> ProcessingResponse {
    let mut common = destination_mutation(endpoints, body.as_ref().map(Bytes::len));
    if let Some(body) = body {
        common.body_mutation = Some(BodyMutation {
            mutation: Some(Mutation::Body(body)),
        });
    }
    ProcessingResponse {
        response: Some(Response::RequestBody(BodyResponse {
            response: Some(common),
        })),
        dynamic_metadata: Some(destination_metadata(endpoints)),
    }
}

/// Full duplex: the body goes back to the proxy as streamed_response chunks (one, empty, for an
/// empty body). Chunks are slices of `body`, not copies.
pub fn push_streamed_chunks(
    out: &mut impl Extend<ProcessingResponse>,
    body: Bytes,
    end_of_stream: bool,
    phase: Phase,
) {
    let size = protocol::BODY_CHUNK_BYTES;
    let last = body.len().saturating_sub(1) / size;
    out.extend((0..=last).map(|i| {
        let chunk = body.slice(i * size..((i + 1) * size).min(body.len()));
        let streamed = StreamedBodyResponse {
            body: chunk,
            end_of_stream: end_of_stream && i == last,
        };
        let answer = BodyResponse {
            response: Some(CommonResponse {
                body_mutation: Some(BodyMutation {
                    mutation: Some(Mutation::StreamedResponse(streamed)),
                }),
                ..Default::default()
            }),
        };
        of(match phase {
            Phase::Request => Response::RequestBody(answer),
            Phase::Response => Response::ResponseBody(answer),
        })
    }));
}

/// BUFFERED response mode: the whole body replaced (model name rewritten back).
pub fn replaced_response_body(body: Bytes) -> ProcessingResponse {
    let length = body.len().to_string();
    let common = CommonResponse {
        header_mutation: Some(HeaderMutation {
            set_headers: vec![set("content-length", length)],
            remove_headers: Vec::new(),
        }),
        body_mutation: Some(BodyMutation {
            mutation: Some(Mutation::Body(body)),
        }),
        ..Default::default()
    };
    of(Response::ResponseBody(BodyResponse {
        response: Some(common),
    }))
}

/// The response-headers answer: without `content-length` when the body will change size (the
/// model is rewritten back; the proxy re-frames it), with `header` set when one is given.
pub fn response_headers(drop_length: bool, header: Option<(&str, String)>) -> ProcessingResponse {
    if !drop_length && header.is_none() {
        return empty_response_headers();
    }
    let common = CommonResponse {
        header_mutation: Some(HeaderMutation {
            set_headers: header.map(|(k, v)| set(k, v)).into_iter().collect(),
            remove_headers: if drop_length {
                vec!["content-length".to_owned()]
            } else {
                Vec::new()
            },
        }),
        ..Default::default()
    };
    of(Response::ResponseHeaders(HeadersResponse {
        response: Some(common),
    }))
}

fn error_type(status: u16) -> &'static str {
    match status {
        400 => "BadRequestError",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        500 => "InternalError",
        _ => "error",
    }
}

/// An error answered by the proxy on the EPP's behalf, with an OpenAI-style JSON body.
pub fn immediate(status: u16, message: &str, reason: &str) -> ProcessingResponse {
    let body = serde_json::json!({"error": {"message": message, "type": error_type(status), "code": status}});
    let mut headers = vec![set("content-type", "application/json")];
    if !reason.is_empty() {
        headers.push(set(
            protocol::DROPPED_REASON,
            Bytes::copy_from_slice(reason.as_bytes()),
        ));
    }
    of(Response::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::from(status),
        }),
        headers: Some(HeaderMutation {
            set_headers: headers,
            remove_headers: Vec::new(),
        }),
        body: Bytes::from(body.to_string()),
        details: if reason.is_empty() {
            "sluicegate".to_owned()
        } else {
            reason.to_owned()
        },
    }))
}
