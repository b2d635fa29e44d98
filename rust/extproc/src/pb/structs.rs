//! google.protobuf.Struct / Value / ListValue: the dynamic metadata Envoy and the EPP exchange.

use std::collections::HashMap;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Struct {
    #[prost(map = "string, message", tag = "1")]
    pub fields: HashMap<String, Value>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Value {
    #[prost(oneof = "value::Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<value::Kind>,
}

pub mod value {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Kind {
        /// google.protobuf.NullValue (always 0).
        #[prost(int32, tag = "1")]
        NullValue(i32),
        #[prost(double, tag = "2")]
        NumberValue(f64),
        #[prost(string, tag = "3")]
        StringValue(String),
        #[prost(bool, tag = "4")]
        BoolValue(bool),
        #[prost(message, tag = "5")]
        StructValue(super::Struct),
        #[prost(message, tag = "6")]
        ListValue(super::ListValue),
    }
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ListValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

impl Value {
    pub fn string(s: impl Into<String>) -> Value {
        Value {
            kind: Some(value::Kind::StringValue(s.into())),
        }
    }

    pub fn number(n: f64) -> Value {
        Value {
            kind: Some(value::Kind::NumberValue(n)),
        }
    }

    pub fn structure(s: Struct) -> Value {
        Value {
            kind: Some(value::Kind::StructValue(s)),
        }
    }

    /// The string held, or "" for any other kind (as protobuf's `string_value` reads).
    pub fn as_str(&self) -> &str {
        match &self.kind {
            Some(value::Kind::StringValue(s)) => s,
            _ => "",
        }
    }
}
