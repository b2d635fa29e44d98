//! One replica under Poisson arrivals as a birth–death chain on n = requests in the replica,
//! with the engine-step service rate of `queueing.metric_arrays` ("step"). States 0..B are
//! explicit; from B on the batch is full and the rate constant, so the queue (B..B+Q) is a
//! geometric tail summed in closed form. Times are ms, rates requests per second outside and
//! per ms inside.

/// Newton rounds for the step length below B (the Python model uses the same count, so both
/// land on the same iterate, not merely near the root).
const NEWTON_ROUNDS: usize = 4;

/// One replica's profile and request shape (`queueing.ServerParams`, "step" formulation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepModel {
    pub alpha: f64, // decode step, ms: alpha + beta * batch
    pub beta: f64,
    pub gamma: f64, // prefill, ms: gamma + delta * input_tokens * admitted
    pub delta: f64,
    pub input_tokens: f64,
    pub output_tokens: f64,
    pub max_batch: usize,
    pub max_queue: usize,
}

/// What sizing compares with the SLO.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    pub throughput_rps: f64,
    pub ttft_ms: f64,
    pub itl_ms: f64,
}

/// Per state n: the step's mean and second moment and the step that admits an arrival.
struct Moments {
    mean: f64,
    residual: f64,
    admit: f64,
}

impl StepModel {
    fn decode_ms(&self, batch: f64) -> f64 {
        self.alpha + self.beta * batch
    }

    /// Mean engine step with the batch full: B decodes, and the B/out requests that finish
    /// per step replaced (admissions ~ Poisson, so gamma only on steps with one).
    pub fn saturated_step_ms(&self) -> f64 {
        let b = self.max_batch as f64;
        let x = b / self.output_tokens;
        self.decode_ms(b) + self.gamma * -(-x).exp_m1() + self.delta * self.input_tokens * x
    }

    /// The most requests per second the replica can complete.
    pub fn capacity_rps(&self) -> f64 {
        self.max_batch as f64 / (self.output_tokens * self.saturated_step_ms()) * 1000.0
    }

    fn moments(&self, lam: f64, n: usize, saturated: f64) -> Moments {
        let (b, g) = (self.max_batch, self.gamma);
        let pre = self.delta * self.input_tokens;
        let m = n.min(b) as f64;
        let dec = if n > 0 { self.decode_ms(m) } else { 0.0 };
        let full = n >= b;
        let x;
        let mean;
        if full {
            mean = saturated.max(1e-300);
            x = b as f64 / self.output_tokens;
        } else {
            // admissions per step x = lambda * step: step = dec + g(1-e^-x) + pre x, by
            // Newton from the all-admitting bound above the root.
            let slack = (1.0 - pre * lam).max(1e-9);
            let mut s = (dec + g) / slack;
            for _ in 0..NEWTON_ROUNDS {
                let decay = (-lam * s).exp();
                s -= (slack * s - dec - g * (1.0 - decay)) / (slack - g * lam * decay).max(1e-12);
            }
            mean = s.max(1e-300);
            x = lam * mean;
        }
        let with_admission = -(-x).exp_m1();
        let first = dec * (dec + 2.0 * (g * with_admission + pre * x))
            + g * g * with_admission
            + 2.0 * g * pre * x
            + pre * pre * x;
        // Below B the next step's admissions depend on this step's length: Var feeds back.
        let second = if full {
            first + (pre * x) * (pre * x)
        } else {
            first / (1.0 - (pre * lam) * (pre * lam)).max(1e-9)
        };
        let residual = if n > 0 { second / (2.0 * mean) } else { 0.0 };
        let admit = if n == 0 {
            g + pre
        } else {
            dec + g + pre * (1.0 + if full { x } else { lam * 2.0 * residual })
        };
        Moments {
            mean,
            residual,
            admit,
        }
    }

    /// Stationary throughput, mean TTFT and ITL at `arrival_rps` (>= 0; 0 is an idle replica).
    pub fn evaluate(&self, arrival_rps: f64) -> Metrics {
        if arrival_rps == 0.0 {
            // idle: no wait, a lone prefill, decodes at batch 1 (as the reference's idle rows)
            return Metrics {
                throughput_rps: 0.0,
                ttft_ms: self.gamma + self.delta * self.input_tokens,
                itl_ms: self.decode_ms(1.0),
            };
        }
        let (b, q) = (self.max_batch, self.max_queue);
        let lam = arrival_rps.max(1e-300) / 1000.0;
        let log_lam = lam.ln();
        let saturated = self.saturated_step_ms();
        let states: Vec<Moments> = (0..=b).map(|n| self.moments(lam, n, saturated)).collect();
        // log p(n) / p(0) for n = 0..B, by the birth-death balance lam p(n-1) = mu(n) p(n).
        let mut log_p = Vec::with_capacity(b + 1);
        log_p.push(0.0);
        let mut acc = 0.0;
        for (n, s) in states.iter().enumerate().skip(1) {
            let mu = n as f64 / (self.output_tokens * s.mean);
            acc += log_lam - mu.ln();
            log_p.push(acc);
        }
        let mu_full = b as f64 / (self.output_tokens * states[b].mean);
        let log_r = log_lam - mu_full.ln();
        let (c, s0, s1) = geometric(log_r, q);
        let log_full = log_p[b] + c;
        let top = log_p[..b].iter().fold(log_full, |a, &v| a.max(v));
        let head: Vec<f64> = log_p[..b].iter().map(|v| (v - top).exp()).collect();
        let tail = (log_full - top).exp();
        let z = head.iter().sum::<f64>() + tail * s0;
        let full = tail * s0 / z;
        let lq = tail * s1 / z;
        let blocking = (log_p[b] + q as f64 * log_r - top).exp() / z;
        let throughput = arrival_rps * (1.0 - blocking);
        let thr_ms = throughput / 1000.0;
        let queued = if thr_ms > 0.0 { lq / thr_ms } else { 0.0 };
        let (mut residual, mut admit, mut tokens, mut per_step) = (0.0, 0.0, 0.0, 0.0);
        for (k, (h, s)) in head.iter().zip(&states).enumerate() {
            let p = h / z;
            residual += p * s.residual;
            admit += p * s.admit;
            tokens += p * k as f64;
            per_step += p * (k as f64 / s.mean);
        }
        let last = &states[b];
        let bf = b as f64;
        let wait = queued + residual + full * last.residual;
        let ttft = wait + admit + full * last.admit;
        let tokens = tokens + full * bf;
        let per_step = per_step + full * bf / last.mean;
        let itl = if tokens > 0.0 {
            tokens / per_step.max(1e-300)
        } else {
            self.decode_ms(1.0)
        };
        Metrics {
            throughput_rps: throughput,
            ttft_ms: ttft,
            itl_ms: itl,
        }
    }
}

/// (c, s0, s1) with sum_{j<=q} r^j = e^c s0 and sum_{j<=q} j r^j = e^c s1, r = e^log_r of any
/// size (r > 1 is summed backwards from r^q, so nothing overflows).
fn geometric(log_r: f64, q: usize) -> (f64, f64, f64) {
    let qf = q as f64;
    let up = log_r > 0.0;
    let lu = if up { -log_r } else { log_r };
    let k1 = qf * (qf + 1.0) / 2.0;
    let k2 = qf * (qf + 1.0) * (2.0 * qf + 1.0) / 6.0;
    let (s0u, s1u) = if qf * lu.abs() < 1e-3 {
        // r ~ 1: second-order series (the closed form cancels)
        (
            (qf + 1.0) + lu * k1 + lu * lu / 2.0 * k2,
            k1 + lu * k2 + lu * lu / 2.0 * k1 * k1,
        )
    } else {
        let one_minus = -lu.exp_m1();
        let u = lu.exp();
        (
            -((qf + 1.0) * lu).exp_m1() / one_minus,
            u * (1.0 - (qf + 1.0) * (qf * lu).exp() + qf * ((qf + 1.0) * lu).exp())
                / (one_minus * one_minus),
        )
    };
    if up {
        (qf * log_r, s0u, qf * s0u - s1u)
    } else {
        (0.0, s0u, s1u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StepModel {
        StepModel {
            alpha: 8.2,
            beta: 0.11,
            gamma: 6.0,
            delta: 0.021,
            input_tokens: 128.0,
            output_tokens: 128.0,
            max_batch: 64,
            max_queue: 640,
        }
    }

    #[test]
    fn geometric_sums_match_direct_sums() {
        for (log_r, q) in [(-0.3, 10), (0.2, 7), (1e-6, 50), (-1e-7, 40), (0.0, 5)] {
            let r: f64 = f64::exp(log_r);
            let (c, s0, s1) = geometric(log_r, q);
            let d0: f64 = (0..=q).map(|j| r.powi(j as i32)).sum();
            let d1: f64 = (0..=q).map(|j| j as f64 * r.powi(j as i32)).sum();
            assert!((c.exp() * s0 / d0 - 1.0).abs() < 1e-9, "s0 at {log_r}, {q}");
            if d1 > 0.0 {
                assert!((c.exp() * s1 / d1 - 1.0).abs() < 1e-6, "s1 at {log_r}, {q}");
            }
        }
    }

    #[test]
    fn light_load_is_a_lone_request_and_load_raises_ttft() {
        let p = sample();
        let lone = p.evaluate(1e-6);
        // a lone request: no wait, prefill gamma + delta * in, decode at batch 1
        assert!(
            (lone.ttft_ms - (6.0 + 0.021 * 128.0)).abs() < 1e-3,
            "{lone:?}"
        );
        assert!((lone.itl_ms - 8.31).abs() < 1e-3, "{lone:?}");
        let idle = p.evaluate(0.0);
        assert_eq!(idle.ttft_ms, 6.0 + 0.021 * 128.0);
        assert_eq!(idle.itl_ms, 8.2 + 0.11);
        assert_eq!(idle.throughput_rps, 0.0);
        let busy = p.evaluate(0.9 * p.capacity_rps());
        assert!(
            busy.ttft_ms > lone.ttft_ms && busy.itl_ms > lone.itl_ms,
            "{busy:?}"
        );
        assert!(busy.throughput_rps <= 0.9 * p.capacity_rps());
    }
}
