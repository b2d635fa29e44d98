//! envoy.config.core.v3 (HeaderValue, HeaderMap, HeaderValueOption, Metadata) and envoy.type.v3.HttpStatus.

use std::collections::HashMap;

use super::structs::Struct;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    /// Filled by proxies older than Envoy 1.27; newer ones fill `raw_value`.
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub raw_value: ::bytes::Bytes,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// HeaderValueOption.HeaderAppendAction: replace the header if present, else add it.
pub const OVERWRITE_IF_EXISTS_OR_ADD: i32 = 2;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HeaderValueOption {
    #[prost(message, optional, tag = "1")]
    pub header: Option<HeaderValue>,
    // tag 2 (`append`, a BoolValue) is deprecated in favour of append_action.
    #[prost(int32, tag = "3")]
    pub append_action: i32,
    #[prost(bool, tag = "4")]
    pub keep_empty_value: bool,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Metadata {
    #[prost(map = "string, message", tag = "1")]
    pub filter_metadata: HashMap<String, Struct>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HttpStatus {
    /// envoy.type.v3.StatusCode: the HTTP status number itself.
    #[prost(int32, tag = "1")]
    pub code: i32,
}
