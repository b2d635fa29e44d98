//! Hand-written prost structs for the subset of the Envoy ext_proc v3 API the EPP speaks, so no
//! .proto files or protoc are needed. Field numbers follow the Envoy API exactly (checked against
//! the descriptors of the Python `xds-protos` stubs by tests/integration/test_extproc_wire.py,
//! which decodes every answer with the generated classes and finds no unknown field).

mod base;
mod ext_proc;
mod structs;

pub use base::{
    HeaderMap, HeaderValue, HeaderValueOption, HttpStatus, Metadata, OVERWRITE_IF_EXISTS_OR_ADD,
};
pub use ext_proc::*;
pub use structs::{value, ListValue, Struct, Value};
