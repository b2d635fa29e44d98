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

/// What routes a request: the destination, the headers the decision adds to the request (stage
/// peers, data-parallel rank), and with --emit-endpoint-scores the primary profile's scores.
#[derive(Debug, Clone, Copy, Default)]
pub struct Route<'a> {
    /// "ip:port[,ip:port...]": primary first, then fallbacks.
    pub endpoints: &'a str,
    pub headers: &'a [(String, String)],
    /// Inbound request headers the decision strips.
    pub remove: &'a [&'a str],
    pub scores: Option<&'a [(String, f64)]>,
}

/// Request-phase answer that routes to `route.endpoints`.
fn destination_mutation(route: &Route<'_>, content_length: Option<usize>) -> CommonResponse {
    let mut headers = Vec::with_capacity(2 + route.headers.len());
    headers.push(set(
        protocol::DESTINATION_ENDPOINT,
        Bytes::copy_from_slice(route.endpoints.as_bytes()),
    ));
    if let Some(n) = content_length {
        headers.push(set("content-length", n.to_string()));
    }
    for (k, v) in route.headers {
        headers.push(set(k, Bytes::copy_from_slice(v.as_bytes())));
    }
    CommonResponse {
        header_mutation: Some(HeaderMutation {
            set_headers: headers,
            remove_headers: route.remove.iter().map(|&h| h.to_owned()).collect(),
        }),
        clear_route_cache: true,
        ..Default::default()
    }
}

/// envoy.lb: the destination and, when the decision carries them, the scores (as upstream: a
/// struct of "ip:port" -> number, only when there are scores).
fn destination_metadata(route: &Route<'_>) -> Struct {
    let mut inner = Struct {
        fields: HashMap::from([(
            protocol::DESTINATION_ENDPOINT.to_owned(),
            Value::string(route.endpoints),
        )]),
    };
    if let Some(scores) = route.scores.filter(|s| !s.is_empty()) {
        let scores = Struct {
            fields: scores
                .iter()
                .map(|(address, score)| (address.clone(), Value::number(*score)))
                .collect(),
        };
        inner.fields.insert(
            protocol::DESTINATION_ENDPOINT_SCORES.to_owned(),
            Value::structure(scores),
        );
    }
    Struct {
        fields: HashMap::from([(
            protocol::DESTINATION_NAMESPACE.to_owned(),
            Value::structure(inner),
        )]),
    }
}

/// Values reported for a finished response (request-attribute-reporter): `namespace.key`.
pub fn reported_metadata<'a>(values: impl Iterator<Item = (&'a str, &'a str, i64)>) -> Struct {
    let mut out = Struct::default();
    for (namespace, key, value) in values {
        let inner = out
            .fields
            .entry(namespace.to_owned())
            .or_insert_with(|| Value::structure(Struct::default()));
        if let Some(crate::pb::value::Kind::StructValue(s)) = &mut inner.kind {
            s.fields.insert(key.to_owned(), Value::number(value as f64));
        }
    }
    out
}

/// Full duplex and header-only requests: the decision rides on the request-headers answer.
pub fn routed_headers(route: &Route<'_>, content_length: Option<usize>) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(Response::RequestHeaders(HeadersResponse {
            response: Some(destination_mutation(route, content_length)),
        })),
        dynamic_metadata: Some(destination_metadata(route)),
    }
}

/// BUFFERED/STREAMED modes: the decision rides on the body answer (headers are held until then).
pub fn routed_body(route: &Route<'_>, body: Option<Bytes>) -> ProcessingResponse {
    let mut common = destination_mutation(route, body.as_ref().map(Bytes::len));
    if let Some(body) = body {
        common.body_mutation = Some(BodyMutation {
            mutation: Some(Mutation::Body(body)),
        });
    }
    ProcessingResponse {
        response: Some(Response::RequestBody(BodyResponse {
            response: Some(common),
        })),
        dynamic_metadata: Some(destination_metadata(route)),
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

/// The response-headers answer: headers the decision adds for the client (a session token),
/// the served-endpoint verdict when destination-endpoint-served-verifier is listed, and
/// `content-length` removed when the body will change size (the model is rewritten back; the
/// proxy re-frames it).
pub fn response_headers(
    add: &[(String, String)],
    verdict: Option<(&str, String)>,
    drop_length: bool,
) -> ProcessingResponse {
    if add.is_empty() && verdict.is_none() && !drop_length {
        return empty_response_headers();
    }
    let mut set_headers: Vec<HeaderValueOption> = add
        .iter()
        .map(|(k, v)| set(k, Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    set_headers.extend(verdict.map(|(k, v)| set(k, v)));
    let common = CommonResponse {
        header_mutation: Some(HeaderMutation {
            set_headers,
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
