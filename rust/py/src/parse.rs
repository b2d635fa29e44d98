//! Bindings for request parsing, body rewriting and prefix hashing: bytes in, plain values out.
//! The GIL is released around work on large inputs so other Python threads keep running.

use std::borrow::Cow;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sluicegate_core::{parse, prefix};

use crate::errors::parse_error;

/// Below this many bytes the work is shorter than releasing and re-taking the GIL.
const DETACH_MIN_BYTES: usize = 16 * 1024;

/// Run `f` without the GIL when `len` makes it worth it.
fn maybe_detach<T: Send>(py: Python<'_>, len: usize, f: impl FnOnce() -> T + Send) -> T {
    if len >= DETACH_MIN_BYTES {
        py.detach(f)
    } else {
        f()
    }
}

/// What the router needs from a request body.
#[pyclass(name = "ParsedRequest", module = "sluicegate._core", frozen, get_all)]
pub struct PyParsedRequest {
    kind: &'static str,
    model: Option<String>,
    stream: bool,
    max_tokens: Option<u64>,
    cache_salt: Option<String>,
    prompt_len: usize,
}

#[pymethods]
impl PyParsedRequest {
    fn __repr__(&self) -> String {
        format!(
            "ParsedRequest(kind={:?}, model={:?}, stream={}, max_tokens={:?}, cache_salt={:?}, prompt_len={})",
            self.kind, self.model, self.stream, self.max_tokens, self.cache_salt, self.prompt_len
        )
    }
}

impl From<parse::ParsedRequest> for PyParsedRequest {
    fn from(r: parse::ParsedRequest) -> Self {
        PyParsedRequest {
            kind: r.kind.as_str(),
            model: r.model,
            stream: r.stream,
            max_tokens: r.max_tokens,
            cache_salt: r.cache_salt,
            prompt_len: r.prompt.len(),
        }
    }
}

#[pyfunction]
fn parse_request(
    py: Python<'_>,
    path: &str,
    body: &Bound<'_, PyBytes>,
) -> PyResult<PyParsedRequest> {
    let body = body.as_bytes();
    maybe_detach(py, body.len(), || parse::parse_request(path, body))
        .map(Into::into)
        .map_err(parse_error)
}

#[pyfunction]
fn rewrite_model<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyBytes>,
    model: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let body = body.as_bytes();
    let out =
        maybe_detach(py, body.len(), || parse::rewrite_model(body, model)).map_err(parse_error)?;
    Ok(PyBytes::new(py, &out))
}

/// Hands the caller's bytes object back when the chunk holds no model to replace.
#[pyfunction]
fn replace_model_in_chunk<'py>(
    chunk: &Bound<'py, PyBytes>,
    old: &str,
    new: &str,
) -> Bound<'py, PyBytes> {
    match parse::replace_model_in_chunk_cow(chunk.as_bytes(), old, new) {
        Cow::Borrowed(_) => chunk.clone(),
        Cow::Owned(out) => PyBytes::new(chunk.py(), &out),
    }
}

/// (prompt_tokens, completion_tokens, cached_tokens) of the last `usage` object in `tail`.
#[pyfunction]
fn find_usage(tail: &Bound<'_, PyBytes>) -> Option<(u64, u64, u64)> {
    parse::find_usage(tail.as_bytes())
        .map(|u| (u.prompt_tokens, u.completion_tokens, u.cached_tokens()))
}

#[pyfunction]
fn prefix_block_hashes(
    py: Python<'_>,
    model: &str,
    cache_salt: Option<&str>,
    prompt: &Bound<'_, PyBytes>,
    block_bytes: usize,
) -> PyResult<Vec<u64>> {
    if block_bytes == 0 {
        return Err(PyValueError::new_err("block_bytes must be positive, got 0"));
    }
    let prompt = prompt.as_bytes();
    Ok(maybe_detach(py, prompt.len(), || {
        prefix::block_hashes(model, cache_salt, prompt, block_bytes)
    }))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyParsedRequest>()?;
    m.add_function(wrap_pyfunction!(parse_request, m)?)?;
    m.add_function(wrap_pyfunction!(rewrite_model, m)?)?;
    m.add_function(wrap_pyfunction!(replace_model_in_chunk, m)?)?;
    m.add_function(wrap_pyfunction!(prefix_block_hashes, m)?)?;
    m.add_function(wrap_pyfunction!(find_usage, m)?)?;
    Ok(())
}
