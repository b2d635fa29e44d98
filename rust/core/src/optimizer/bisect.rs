//! The largest arrival rate one replica carries within its SLOs, by bisection over
//! [0, capacity / served fraction] (throughput cannot exceed capacity, so beyond that the served
//! share fails). Same rounds, bracket and tie rules as `sluicegate.optimizer.sizing`, so the
//! rates are the same midpoints.

use super::step::StepModel;

/// Halvings of the bracket: 2^-17 of the replica's capacity.
pub const BISECTION_ROUNDS: usize = 17;

/// 0 when even a lone request misses the SLO; otherwise always a rate evaluated as feasible.
pub fn max_rate_rps(model: &StepModel, ttft_ms: f64, itl_ms: f64, min_served: f64) -> f64 {
    let met = |rate: f64| {
        let m = model.evaluate(rate);
        m.ttft_ms <= ttft_ms && m.itl_ms <= itl_ms && m.throughput_rps / rate >= min_served
    };
    let mut hi = model.capacity_rps() / min_served;
    let lone = hi * 1e-9;
    if !met(lone) {
        return 0.0;
    }
    let mut lo = 0.0;
    for _ in 0..BISECTION_ROUNDS {
        let mid = (lo + hi) / 2.0;
        if met(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if lo > 0.0 {
        lo
    } else {
        lone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looser_slos_carry_more_and_impossible_ones_nothing() {
        let p = StepModel {
            alpha: 8.2,
            beta: 0.11,
            gamma: 6.0,
            delta: 0.021,
            input_tokens: 1024.0,
            output_tokens: 32.0,
            max_batch: 32,
            max_queue: 320,
        };
        let tight = max_rate_rps(&p, 80.0, 20.0, 0.99);
        let loose = max_rate_rps(&p, 400.0, 40.0, 0.99);
        assert!(tight > 0.0 && loose > tight, "{tight} {loose}");
        assert!(loose <= p.capacity_rps() / 0.99);
        let m = p.evaluate(tight);
        assert!(m.ttft_ms <= 80.0 && m.itl_ms <= 20.0, "{m:?}");
        assert_eq!(max_rate_rps(&p, 1.0, 20.0, 0.99), 0.0); // below a lone prefill
    }
}
