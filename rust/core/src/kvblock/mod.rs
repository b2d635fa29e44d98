//! Token-level KV-block hashing as model servers and llm-d's indexer do it: vLLM's own chained
//! sha256-over-CBOR hashes (`engine_hash`) and the EPP's cbor-fnv block keys (`request_keys`).

pub mod cbor;
pub mod engine_hash;
pub mod index;
pub mod request_keys;

pub use engine_hash::{external, EngineHash, EngineHasher};
pub use index::{EndpointKeys, KeyIndex};
pub use request_keys::RequestKeys;
