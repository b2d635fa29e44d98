//! The in-process latency predictor behind predicted-latency-producer: two linear models (TTFT
//! and time per output token) over what the scheduler knows when it picks (prompt length, the
//! endpoint's queue, running requests, KV-cache use, this EPP's in-flight count), trained online
//! by recursive least squares from each finished request's observed TTFT and TPOT. Upstream runs
//! an XGBoost/LightGBM sidecar; this is the small, dependency-free stand-in.

use parking_lot::Mutex;

pub const FEATURES: usize = 6;
/// Samples before predictions are trusted; until then plugins fall back.
pub const MIN_SAMPLES: u64 = 8;

/// [1, prompt kilo-tokens, waiting, running, kv usage, in flight].
pub type Features = [f64; FEATURES];

pub fn features(
    prompt_tokens: usize,
    waiting: u32,
    running: u32,
    kv: f64,
    in_flight: u32,
) -> Features {
    [
        1.0,
        prompt_tokens as f64 / 1000.0,
        f64::from(waiting),
        f64::from(running),
        kv,
        f64::from(in_flight),
    ]
}

/// Recursive least squares with a forgetting factor, so the model follows a pool that changes.
struct Rls {
    w: Features,
    p: [[f64; FEATURES]; FEATURES],
}

const FORGET: f64 = 0.999;

impl Rls {
    fn new() -> Rls {
        let mut p = [[0.0; FEATURES]; FEATURES];
        for (i, row) in p.iter_mut().enumerate() {
            row[i] = 1e4;
        }
        Rls {
            w: [0.0; FEATURES],
            p,
        }
    }

    fn predict(&self, x: &Features) -> f64 {
        self.w.iter().zip(x).map(|(w, x)| w * x).sum()
    }

    fn update(&mut self, x: &Features, y: f64) {
        let mut px = [0.0; FEATURES];
        for (i, row) in self.p.iter().enumerate() {
            px[i] = row.iter().zip(x).map(|(p, x)| p * x).sum();
        }
        let denom = FORGET + x.iter().zip(&px).map(|(x, px)| x * px).sum::<f64>();
        if !denom.is_finite() || denom <= 0.0 {
            return;
        }
        let gain: Features = px.map(|v| v / denom);
        let err = y - self.predict(x);
        for (w, g) in self.w.iter_mut().zip(&gain) {
            *w += g * err;
        }
        for (row, g) in self.p.iter_mut().zip(&gain) {
            for (cell, pxj) in row.iter_mut().zip(&px) {
                *cell = (*cell - g * pxj) / FORGET;
            }
        }
    }
}

pub struct LatencyPredictor {
    models: Mutex<(Rls, Rls, u64)>,
}

impl Default for LatencyPredictor {
    fn default() -> Self {
        LatencyPredictor {
            models: Mutex::new((Rls::new(), Rls::new(), 0)),
        }
    }
}

impl LatencyPredictor {
    /// (TTFT ms, TPOT ms), or None until enough requests were observed.
    pub fn predict(&self, x: &Features) -> Option<(f64, f64)> {
        let m = self.models.lock();
        (m.2 >= MIN_SAMPLES).then(|| (m.0.predict(x).max(0.0), m.1.predict(x).max(0.0)))
    }

    /// One finished request: its features at the pick and what it took.
    pub fn observe(&self, x: &Features, ttft_ms: f64, tpot_ms: Option<f64>) {
        if !ttft_ms.is_finite() || ttft_ms < 0.0 {
            return;
        }
        let mut m = self.models.lock();
        m.0.update(x, ttft_ms);
        if let Some(tpot) = tpot_ms.filter(|t| t.is_finite() && *t >= 0.0) {
            m.1.update(x, tpot);
        }
        m.2 += 1;
    }

    pub fn samples(&self) -> u64 {
        self.models.lock().2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_linear_latency_from_observations() {
        let p = LatencyPredictor::default();
        assert_eq!(p.predict(&features(100, 0, 0, 0.0, 0)), None);
        // TTFT = 20 ms + 30 ms per waiting request + 50 ms per 1000 prompt tokens.
        for i in 0..200u32 {
            let (waiting, tokens) = (i % 7, (i % 5) as usize * 400);
            let ttft = 20.0 + 30.0 * f64::from(waiting) + 50.0 * tokens as f64 / 1000.0;
            p.observe(&features(tokens, waiting, 2, 0.3, 1), ttft, Some(10.0));
        }
        let (ttft, tpot) = p.predict(&features(1000, 4, 2, 0.3, 1)).unwrap();
        assert!((ttft - 190.0).abs() < 5.0, "{ttft}");
        assert!((tpot - 10.0).abs() < 1.0, "{tpot}");
    }
}
