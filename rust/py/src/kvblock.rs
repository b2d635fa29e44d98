//! Token-level block hashing and in-process tokenization, exposed so tests and tools can
//! compare what the EPP computes for a prompt with what a model server publishes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sluicegate_core::kvblock::{EngineHasher, RequestKeys};
use sluicegate_core::scheduling::BlockIndexStats;
use sluicegate_core::tokenize::{TokenSource, Tokenizer};

pub fn stats_map(s: BlockIndexStats) -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("batches", s.batches),
        ("events", s.events),
        ("decode_failures", s.decode_failures),
        ("seq_gaps", s.seq_gaps),
        ("block_size_mismatches", s.block_size_mismatches),
        ("unknown_parents", s.unknown_parents),
        ("admissions", s.admissions),
        ("evictions", s.evictions),
        ("engine_hash_checks", s.engine_hash_checks),
        ("engine_hash_mismatches", s.engine_hash_mismatches),
        ("lookups", s.lookups),
        ("lookup_blocks", s.lookup_blocks),
        ("lookup_hits", s.lookup_hits),
        ("tokenize_failures", s.tokenize_failures),
        ("dedup_forwarded", s.dedup_forwarded),
        ("dedup_suppressed", s.dedup_suppressed),
        ("size", s.size),
    ])
}

/// vLLM's sha256_cbor block hashes of `tokens`, in the integer form KV events carry.
#[pyfunction]
#[pyo3(signature = (tokens, block_size, hash_seed, lora = None, cache_salt = None))]
fn vllm_block_hashes(
    tokens: Vec<u32>,
    block_size: usize,
    hash_seed: &str,
    lora: Option<&str>,
    cache_salt: Option<&str>,
) -> Vec<u64> {
    EngineHasher::new(hash_seed, block_size).external_hashes(&tokens, lora, cache_salt)
}

/// llm-d's cbor-fnv block keys of a prompt's tokens, as the precise index keys them.
#[pyfunction]
#[pyo3(signature = (tokens, block_size, hash_seed, model, cache_salt = None))]
fn request_block_keys(
    tokens: Vec<u32>,
    block_size: usize,
    hash_seed: &str,
    model: &str,
    cache_salt: Option<&str>,
) -> Vec<u64> {
    RequestKeys::new(hash_seed, block_size).prompt_keys(&tokens, model, cache_salt)
}

/// A token-producer's in-process tokenizer (a tokenizer.json or model directory).
#[pyclass(module = "sluicegate._core", name = "LocalTokenizer", frozen)]
struct PyLocalTokenizer {
    inner: Arc<TokenSource>,
}

#[pymethods]
impl PyLocalTokenizer {
    #[new]
    fn new(path: &str) -> PyResult<Self> {
        let t =
            Tokenizer::load(Path::new(path)).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyLocalTokenizer {
            inner: Arc::new(TokenSource::Local(Box::new(t))),
        })
    }

    /// The token ids of a request body sent to `path`, as the EPP computes them.
    fn tokens(&self, py: Python<'_>, path: &str, body: &Bound<'_, PyBytes>) -> PyResult<Vec<u32>> {
        let body = body.as_bytes();
        py.detach(|| self.inner.tokens(path, body))
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(vllm_block_hashes, m)?)?;
    m.add_function(wrap_pyfunction!(request_block_keys, m)?)?;
    m.add_class::<PyLocalTokenizer>()?;
    Ok(())
}
