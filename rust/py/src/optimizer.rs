//! Bindings for the optimizer's sizing kernel (sluicegate_core::optimizer): columns of options
//! in, one max rate per option out, computed without the GIL.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sluicegate_core::optimizer::{max_rate_rps, StepModel};

/// (throughput req/s, mean TTFT ms, mean ITL ms) of one replica ("step" formulation) at
/// `arrival_rps`: what the plan reports for the option it picked.
#[pyfunction]
#[pyo3(signature = (max_batch, max_queue, alpha, beta, gamma, delta, input_tokens, output_tokens, arrival_rps))]
#[allow(clippy::too_many_arguments)]
fn evaluate_step(
    max_batch: usize,
    max_queue: usize,
    alpha: f64,
    beta: f64,
    gamma: f64,
    delta: f64,
    input_tokens: f64,
    output_tokens: f64,
    arrival_rps: f64,
) -> PyResult<(f64, f64, f64)> {
    if max_batch < 1 {
        return Err(PyValueError::new_err(format!(
            "max_batch={max_batch}: must be >= 1"
        )));
    }
    if !(arrival_rps >= 0.0 && arrival_rps.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "arrival_rps={arrival_rps}: must be finite and >= 0"
        )));
    }
    let model = StepModel {
        alpha,
        beta,
        gamma,
        delta,
        input_tokens,
        output_tokens,
        max_batch,
        max_queue,
    };
    let m = model.evaluate(arrival_rps);
    Ok((m.throughput_rps, m.ttft_ms, m.itl_ms))
}

/// Largest arrival rate (req/s) per option meeting its SLO, "step" formulation, all options of
/// one max batch and max queue. Every column has one entry per option.
#[pyfunction]
#[pyo3(signature = (max_batch, max_queue, alpha, beta, gamma, delta, input_tokens, output_tokens, ttft_ms, itl_ms, min_served_fraction))]
#[allow(clippy::too_many_arguments)]
fn max_rates_step(
    py: Python<'_>,
    max_batch: usize,
    max_queue: usize,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    gamma: Vec<f64>,
    delta: Vec<f64>,
    input_tokens: Vec<f64>,
    output_tokens: Vec<f64>,
    ttft_ms: Vec<f64>,
    itl_ms: Vec<f64>,
    min_served_fraction: Vec<f64>,
) -> PyResult<Vec<f64>> {
    if max_batch < 1 {
        return Err(PyValueError::new_err(format!(
            "max_batch={max_batch}: must be >= 1"
        )));
    }
    let n = alpha.len();
    let columns = [
        ("beta", &beta),
        ("gamma", &gamma),
        ("delta", &delta),
        ("input_tokens", &input_tokens),
        ("output_tokens", &output_tokens),
        ("ttft_ms", &ttft_ms),
        ("itl_ms", &itl_ms),
        ("min_served_fraction", &min_served_fraction),
    ];
    for (name, col) in columns {
        if col.len() != n {
            return Err(PyValueError::new_err(format!(
                "{name}: {} entries, alpha has {n}",
                col.len()
            )));
        }
    }
    Ok(py.detach(|| {
        (0..n)
            .map(|i| {
                let model = StepModel {
                    alpha: alpha[i],
                    beta: beta[i],
                    gamma: gamma[i],
                    delta: delta[i],
                    input_tokens: input_tokens[i],
                    output_tokens: output_tokens[i],
                    max_batch,
                    max_queue,
                };
                max_rate_rps(&model, ttft_ms[i], itl_ms[i], min_served_fraction[i])
            })
            .collect()
    }))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(max_rates_step, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate_step, m)?)?;
    Ok(())
}
