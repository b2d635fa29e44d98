//! Request metrics kept on the request path and read when Prometheus scrapes: per label set
//! (model, target model, fairness id, priority) counters, a running gauge and fixed-bucket
//! histograms with upstream's buckets. Recording takes one short shard lock and no allocation
//! once a label set exists; the number of label sets is capped and the rest fold into one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
use std::hash::{BuildHasher, RandomState};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

const SHARDS: usize = 16;
/// Label value that replaces model and target once `max_series` label sets exist.
pub const OVERFLOW: &str = "__other__";

/// Prometheus' default buckets (client_golang's DefBuckets), which upstream's histograms
/// without buckets of their own take.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0, 480.0, 600.0, 900.0,
    1200.0, 1800.0, 2700.0, 3600.0,
];
pub const TTFT_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0,
];
pub const NTPOT_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];
pub const REQUEST_SIZE_BUCKETS: &[f64] = &[
    64.0,
    128.0,
    256.0,
    512.0,
    1024.0,
    2048.0,
    4096.0,
    8192.0,
    16384.0,
    32768.0,
    65536.0,
    131072.0,
    262144.0,
    524288.0,
    1048576.0,
    2097152.0,
    4194304.0,
    8388608.0,
    16777216.0,
    33554432.0,
    67108864.0,
    134217728.0,
    268435456.0,
    536870912.0,
    1073741824.0,
];
pub const RESPONSE_SIZE_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
    32778.0, 65536.0,
];
pub const INPUT_TOKEN_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
    32778.0, 65536.0, 131072.0, 262144.0, 524288.0, 1048576.0,
];
pub const OUTPUT_TOKEN_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];
/// Upstream's request_streaming_tpot_seconds buckets.
pub const TPOT_BUCKETS: &[f64] = &[
    0.0005, 0.00205, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.3, 0.4, 0.5,
    0.6, 0.8, 1.0, 2.0,
];
pub const SCHEDULER_BUCKETS: &[f64] = &[
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
];
/// Upstream's request_streaming_itl_seconds buckets.
pub const ITL_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0,
];
/// Upstream's request_processing_duration_seconds buckets.
pub const REQUEST_PROCESSING_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.04, 0.06, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];
/// Upstream's response_processing_duration_seconds buckets.
pub const RESPONSE_PROCESSING_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A Prometheus histogram: cumulative counts are computed at read time.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last slot is +Inf.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The most buckets (bounds + 1) an [`AtomicHistogram`] holds.
const MAX_SLOTS: usize = 40;

/// A histogram recorded with relaxed atomics (no lock, no allocation), for families without
/// labels or with labels bound once (a plugin, a flow). Read whole at scrape time.
pub struct AtomicHistogram {
    bounds: &'static [f64],
    counts: [AtomicU64; MAX_SLOTS],
    /// f64 bits.
    sum: AtomicU64,
}

impl std::fmt::Debug for AtomicHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl AtomicHistogram {
    pub const fn new(bounds: &'static [f64]) -> Self {
        assert!(bounds.len() < MAX_SLOTS);
        AtomicHistogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_SLOTS],
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Relaxed);
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + v).to_bits())
        });
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// `n` observations of `v` each, as two updates.
    pub fn observe_n(&self, v: f64, n: u64) {
        if n == 0 {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(n, Relaxed);
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + v * n as f64).to_bits())
        });
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn snapshot(&self) -> Histogram {
        Histogram {
            bounds: self.bounds,
            counts: self.counts[..=self.bounds.len()]
                .iter()
                .map(|c| c.load(Relaxed))
                .collect(),
            sum: f64::from_bits(self.sum.load(Relaxed)),
        }
    }
}

/// Gaps between one streamed response's chunks, kept with the request (no lock per chunk) and
/// folded into its series when it ends: upstream's request_streaming_itl_seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkGaps {
    counts: [u32; 16],
    sum: f64,
}

impl ChunkGaps {
    pub fn observe(&mut self, seconds: f64) {
        let i = ITL_BUCKETS.partition_point(|b| *b < seconds);
        self.counts[i] += 1;
        self.sum += seconds;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|&n| u64::from(n)).sum()
    }

    fn add_to(&self, h: &mut Histogram) {
        for (total, n) in h.counts.iter_mut().zip(self.counts) {
            *total += u64::from(n);
        }
        h.sum += self.sum;
    }
}

/// How long one plugin took per call, by extension point: upstream's plugin_duration_seconds.
pub struct PluginTiming {
    pub extension_point: &'static str,
    pub kind: String,
    pub name: String,
    pub duration: AtomicHistogram,
}

/// The process's plugin timings, one per (extension point, plugin type, plugin name) as
/// upstream's vector: a configuration rebuilt with the same plugin keeps counting in its series.
static PLUGIN_TIMINGS: Mutex<Vec<Arc<PluginTiming>>> = Mutex::new(Vec::new());

/// The timing handle of one plugin at one extension point, bound when the plugin is configured.
pub fn plugin_timing(extension_point: &'static str, kind: &str, name: &str) -> Arc<PluginTiming> {
    let mut all = PLUGIN_TIMINGS.lock();
    if let Some(t) = all
        .iter()
        .find(|t| t.extension_point == extension_point && t.kind == kind && t.name == name)
    {
        return t.clone();
    }
    let t = Arc::new(PluginTiming {
        extension_point,
        kind: kind.to_owned(),
        name: name.to_owned(),
        duration: AtomicHistogram::new(SCHEDULER_BUCKETS),
    });
    all.push(t.clone());
    t
}

/// Every plugin timing: (extension point, plugin type, plugin name, histogram).
pub fn plugin_timings() -> Vec<(&'static str, String, String, Histogram)> {
    let all: Vec<Arc<PluginTiming>> = PLUGIN_TIMINGS.lock().clone();
    let mut out: Vec<_> = all
        .iter()
        .map(|t| {
            let h = t.duration.snapshot();
            (t.extension_point, t.kind.clone(), t.name.clone(), h)
        })
        .collect();
    out.sort_by(|a, b| (a.0, &a.1, &a.2).cmp(&(b.0, &b.1, &b.2)));
    out
}

/// Who a request was for: the label set of every per-request family.
#[derive(Debug, Clone, Copy)]
pub struct RequestLabels<'a> {
    pub model: &'a str,
    pub target_model: &'a str,
    pub fairness_id: &'a str,
    pub priority: i32,
}

/// How a request ended. Sizes and tokens the EPP did not see are None and not observed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome<'a> {
    /// Set when the request failed: the HTTP status or reason upstream reports as `error_code`.
    pub error_code: Option<&'a str>,
    pub request_bytes: Option<u64>,
    pub response_bytes: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub duration_s: Option<f64>,
    pub ttft_s: Option<f64>,
    pub streaming: bool,
    /// Gaps between the chunks of a streamed response.
    pub itl: Option<&'a ChunkGaps>,
}

/// Everything counted for one label set.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub model: String,
    pub target_model: String,
    pub fairness_id: String,
    pub priority: i32,
    pub requests: u64,
    /// error_code -> count
    pub errors: Vec<(String, u64)>,
    pub running: i64,
    pub duration: Histogram,
    pub request_size: Histogram,
    pub response_size: Histogram,
    pub input_tokens: Histogram,
    pub output_tokens: Histogram,
    pub cached_tokens: Histogram,
    pub ntpot: Histogram,
    /// [non-streaming, streaming]
    pub ttft: [Histogram; 2],
    /// Streaming only: (duration - ttft) / (output tokens - 1), as upstream.
    pub tpot: Histogram,
    /// Streaming only: time between consecutive response chunks.
    pub itl: Histogram,
}

impl Series {
    fn new(l: RequestLabels<'_>) -> Self {
        Series {
            model: l.model.to_owned(),
            target_model: l.target_model.to_owned(),
            fairness_id: l.fairness_id.to_owned(),
            priority: l.priority,
            requests: 0,
            errors: Vec::new(),
            running: 0,
            duration: Histogram::new(DURATION_BUCKETS),
            request_size: Histogram::new(REQUEST_SIZE_BUCKETS),
            response_size: Histogram::new(RESPONSE_SIZE_BUCKETS),
            input_tokens: Histogram::new(INPUT_TOKEN_BUCKETS),
            output_tokens: Histogram::new(OUTPUT_TOKEN_BUCKETS),
            cached_tokens: Histogram::new(INPUT_TOKEN_BUCKETS),
            ntpot: Histogram::new(NTPOT_BUCKETS),
            ttft: [Histogram::new(TTFT_BUCKETS), Histogram::new(TTFT_BUCKETS)],
            tpot: Histogram::new(TPOT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
        }
    }

    fn record(&mut self, o: &Outcome<'_>) {
        self.requests += 1;
        if let Some(code) = o.error_code {
            match self.errors.iter_mut().find(|(c, _)| c == code) {
                Some((_, n)) => *n += 1,
                None => self.errors.push((code.to_owned(), 1)),
            }
        }
        let observe = |h: &mut Histogram, v: Option<u64>| {
            if let Some(v) = v {
                h.observe(v as f64)
            }
        };
        observe(&mut self.request_size, o.request_bytes);
        observe(&mut self.response_size, o.response_bytes);
        observe(&mut self.input_tokens, o.input_tokens);
        observe(&mut self.output_tokens, o.output_tokens);
        observe(&mut self.cached_tokens, o.cached_tokens);
        if let Some(d) = o.duration_s {
            self.duration.observe(d);
            if let Some(out) = o.output_tokens.filter(|n| *n > 0) {
                self.ntpot.observe(d / out as f64);
            }
        }
        if let Some(t) = o.ttft_s {
            self.ttft[o.streaming as usize].observe(t);
        }
        if let Some(tpot) = tpot(o) {
            self.tpot.observe(tpot);
        }
        if let Some(gaps) = o.itl {
            gaps.add_to(&mut self.itl);
        }
    }
}

/// Time per output token after the first, for a streamed response with two tokens or more whose
/// first token came before its end (upstream skips the rest).
fn tpot(o: &Outcome<'_>) -> Option<f64> {
    let (duration, ttft, out) = (o.duration_s?, o.ttft_s?, o.output_tokens?);
    if !o.streaming || out <= 1 || ttft <= 0.0 || duration <= ttft {
        return None;
    }
    Some((duration - ttft) / (out - 1) as f64)
}

thread_local! {
    static KEY: RefCell<String> = RefCell::new(String::with_capacity(128));
}

/// Request metrics of one EPP, shared by every request path that serves it.
pub struct RequestStats {
    shards: Vec<Mutex<HashMap<String, Series>>>,
    hasher: RandomState,
    max_series: usize,
    series: AtomicUsize,
    scheduler: Mutex<Histogram>,
    /// "success\0target model\0endpoint name\0endpoint address" -> scheduling attempts.
    attempts: Mutex<HashMap<String, u64>>,
    /// "rule\0model\0target" -> weighted model-rewrite decisions.
    rewrites: Mutex<HashMap<String, u64>>,
    /// From request receipt until its body was handled (admission and routing included).
    pub request_processing: AtomicHistogram,
    /// The EPP's own time on a response: its chunk handlers (streamed) or headers to end.
    pub response_processing: AtomicHistogram,
    /// Scheduling cycles scored a second time because requests routed on other threads
    /// changed the load while they scored (`Scheduler::schedule`).
    pub rescored: AtomicU64,
}

/// Model-rewrite decisions of one rule, request model and picked target.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrites {
    pub rule: String,
    pub model: String,
    pub target: String,
    pub count: u64,
}

/// Scheduling attempts of one outcome, target model and picked endpoint (empty on failure).
#[derive(Debug, Clone, PartialEq)]
pub struct Attempts {
    pub success: bool,
    pub target_model: String,
    pub endpoint_name: String,
    pub endpoint_address: String,
    pub count: u64,
}

impl RequestStats {
    /// `max_series` caps distinct label sets; later ones count under model `__other__`.
    pub fn new(max_series: usize) -> Self {
        RequestStats {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            max_series: max_series.max(1),
            series: Default::default(),
            scheduler: Mutex::new(Histogram::new(SCHEDULER_BUCKETS)),
            attempts: Mutex::new(HashMap::new()),
            rewrites: Mutex::new(HashMap::new()),
            request_processing: AtomicHistogram::new(REQUEST_PROCESSING_BUCKETS),
            response_processing: AtomicHistogram::new(RESPONSE_PROCESSING_BUCKETS),
            rescored: AtomicU64::new(0),
        }
    }

    /// A weighted model-rewrite rule sent a request for `model` to `target` (upstream's
    /// model_rewrite_decisions_total). Request models past the series cap count as `__other__`.
    pub fn rewrote(&self, rule: &str, model: &str, target: &str) {
        KEY.with_borrow_mut(|key| {
            rewrite_key(key, rule, model, target);
            let mut map = self.rewrites.lock();
            if let Some(n) = map.get_mut(key.as_str()) {
                *n += 1;
                return;
            }
            if map.len() >= self.max_series {
                rewrite_key(key, rule, OVERFLOW, target);
            }
            *map.entry(key.clone()).or_insert(0) += 1;
        })
    }

    pub fn rewrites(&self) -> Vec<Rewrites> {
        let mut out: Vec<Rewrites> = self
            .rewrites
            .lock()
            .iter()
            .map(|(key, n)| {
                let mut parts = key.split('\0');
                let mut next = || parts.next().unwrap_or("").to_owned();
                Rewrites {
                    rule: next(),
                    model: next(),
                    target: next(),
                    count: *n,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.rule, &a.model, &a.target).cmp(&(&b.rule, &b.model, &b.target)));
        out
    }

    /// A request was routed and is now running.
    pub fn started(&self, l: RequestLabels<'_>) {
        self.with_series(l, |s| s.running += 1);
    }

    /// A request ended; `was_started` undoes its `started`.
    pub fn finished(&self, l: RequestLabels<'_>, was_started: bool, o: &Outcome<'_>) {
        self.with_series(l, |s| {
            if was_started {
                s.running -= 1;
            }
            s.record(o);
        });
    }

    /// One scheduling cycle took `seconds`.
    pub fn scheduled(&self, seconds: f64) {
        self.scheduler.lock().observe(seconds);
    }

    /// One scheduling attempt: picked `endpoint` (name, address) for `target_model`, or failed.
    /// Label sets past the series cap count under model `__other__`.
    pub fn attempted(&self, success: bool, target_model: &str, name: &str, address: &str) {
        KEY.with_borrow_mut(|key| {
            attempt_key(key, success, target_model, name, address);
            let mut map = self.attempts.lock();
            if let Some(n) = map.get_mut(key.as_str()) {
                *n += 1;
                return;
            }
            if map.len() >= self.max_series {
                attempt_key(key, success, OVERFLOW, name, address);
            }
            *map.entry(key.clone()).or_insert(0) += 1;
        })
    }

    pub fn attempts(&self) -> Vec<Attempts> {
        let mut out: Vec<Attempts> = self
            .attempts
            .lock()
            .iter()
            .map(|(key, n)| {
                let mut parts = key.split('\0');
                let mut next = || parts.next().unwrap_or("").to_owned();
                Attempts {
                    success: next() == "1",
                    target_model: next(),
                    endpoint_name: next(),
                    endpoint_address: next(),
                    count: *n,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.target_model, &a.endpoint_address, a.success).cmp(&(
                &b.target_model,
                &b.endpoint_address,
                b.success,
            ))
        });
        out
    }

    pub fn scheduler_histogram(&self) -> Histogram {
        self.scheduler.lock().clone()
    }

    /// A copy of every series, ordered by labels so scrapes are stable.
    pub fn snapshot(&self) -> Vec<Series> {
        let mut out: Vec<Series> = self
            .shards
            .iter()
            .flat_map(|s| s.lock().values().cloned().collect::<Vec<_>>())
            .collect();
        out.sort_by(|a, b| {
            (&a.model, &a.target_model, &a.fairness_id, a.priority).cmp(&(
                &b.model,
                &b.target_model,
                &b.fairness_id,
                b.priority,
            ))
        });
        out
    }

    fn with_series(&self, l: RequestLabels<'_>, f: impl FnOnce(&mut Series)) {
        KEY.with_borrow_mut(|key| {
            key.clear();
            for part in [l.model, l.target_model, l.fairness_id] {
                key.push_str(part);
                key.push('\0');
            }
            let _ = write!(key, "{}", l.priority);
            let shard = &self.shards[self.hasher.hash_one(key.as_str()) as usize % SHARDS];
            let mut map = shard.lock();
            if let Some(s) = map.get_mut(key.as_str()) {
                return f(s);
            }
            let full = self.series.load(Relaxed) >= self.max_series;
            if full && l.model != OVERFLOW {
                drop(map);
                let other = RequestLabels {
                    model: OVERFLOW,
                    target_model: OVERFLOW,
                    ..l
                };
                return self.with_series_overflow(other, f);
            }
            self.series.fetch_add(1, Relaxed);
            f(map.entry(key.clone()).or_insert_with(|| Series::new(l)));
        })
    }

    // The overflow series is keyed like any other but never refused.
    fn with_series_overflow(&self, l: RequestLabels<'_>, f: impl FnOnce(&mut Series)) {
        let key = format!("{OVERFLOW}\0{OVERFLOW}\0{}\0{}", l.fairness_id, l.priority);
        let shard = &self.shards[self.hasher.hash_one(key.as_str()) as usize % SHARDS];
        let mut map = shard.lock();
        f(map.entry(key).or_insert_with(|| Series::new(l)));
    }
}

fn rewrite_key(key: &mut String, rule: &str, model: &str, target: &str) {
    key.clear();
    for (i, part) in [rule, model, target].into_iter().enumerate() {
        if i > 0 {
            key.push('\0');
        }
        key.push_str(part);
    }
}

fn attempt_key(key: &mut String, success: bool, model: &str, name: &str, address: &str) {
    key.clear();
    key.push(if success { '1' } else { '0' });
    for part in [model, name, address] {
        key.push('\0');
        key.push_str(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(model: &str) -> RequestLabels<'_> {
        RequestLabels {
            model,
            target_model: model,
            fairness_id: "default-flow",
            priority: 0,
        }
    }

    #[test]
    fn histogram_puts_a_value_on_a_bound_in_that_bucket() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 2.0, 9.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![2, 2, 1]);
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum, 14.0);
    }

    #[test]
    fn running_goes_up_on_start_and_down_on_finish() {
        let stats = RequestStats::new(10);
        stats.started(labels("m"));
        stats.started(labels("m"));
        assert_eq!(stats.snapshot()[0].running, 2);
        stats.finished(labels("m"), true, &Outcome::default());
        let s = &stats.snapshot()[0];
        assert_eq!((s.running, s.requests), (1, 1));
    }

    #[test]
    fn errors_count_per_code_and_as_requests() {
        let stats = RequestStats::new(10);
        let failed = |code| Outcome {
            error_code: Some(code),
            ..Default::default()
        };
        stats.finished(labels("m"), false, &failed("429"));
        stats.finished(labels("m"), false, &failed("429"));
        stats.finished(labels("m"), false, &failed("503"));
        let s = &stats.snapshot()[0];
        assert_eq!(s.requests, 3);
        assert_eq!(s.errors, vec![("429".into(), 2), ("503".into(), 1)]);
    }

    #[test]
    fn outcome_fills_histograms_and_ntpot_is_duration_per_output_token() {
        let stats = RequestStats::new(10);
        let o = Outcome {
            request_bytes: Some(100),
            response_bytes: Some(10),
            input_tokens: Some(20),
            output_tokens: Some(4),
            duration_s: Some(2.0),
            ttft_s: Some(0.3),
            streaming: true,
            ..Default::default()
        };
        stats.finished(labels("m"), false, &o);
        let s = &stats.snapshot()[0];
        assert_eq!(s.ntpot.sum, 0.5);
        assert_eq!(s.ttft[1].count(), 1);
        assert_eq!(s.ttft[0].count(), 0);
        assert_eq!(s.cached_tokens.count(), 0);
        assert_eq!(s.request_size.sum, 100.0);
    }

    #[test]
    fn label_sets_past_the_cap_fold_into_other() {
        let stats = RequestStats::new(2);
        for m in ["a", "b", "c", "d"] {
            stats.finished(labels(m), false, &Outcome::default());
        }
        let snap = stats.snapshot();
        let models: Vec<_> = snap
            .iter()
            .map(|s| (s.model.as_str(), s.requests))
            .collect();
        assert_eq!(models, vec![("__other__", 2), ("a", 1), ("b", 1)]);
    }

    #[test]
    fn attempts_count_per_outcome_model_and_endpoint() {
        let stats = RequestStats::new(10);
        stats.attempted(true, "m", "ep-a", "10.0.0.1:8000");
        stats.attempted(true, "m", "ep-a", "10.0.0.1:8000");
        stats.attempted(false, "m", "", "");
        let counts: Vec<_> = stats
            .attempts()
            .iter()
            .map(|a| (a.success, a.endpoint_name.clone(), a.count))
            .collect();
        assert_eq!(
            counts,
            vec![(false, String::new(), 1), (true, "ep-a".into(), 2)]
        );
    }

    #[test]
    fn priority_is_part_of_the_label_set() {
        let stats = RequestStats::new(10);
        let high = RequestLabels {
            priority: 10,
            ..labels("m")
        };
        stats.finished(labels("m"), false, &Outcome::default());
        stats.finished(high, false, &Outcome::default());
        assert_eq!(stats.snapshot().len(), 2);
    }

    #[test]
    fn chunk_gaps_fold_into_the_series_itl_histogram() {
        let stats = RequestStats::new(10);
        let mut gaps = ChunkGaps::default();
        for g in [0.002, 0.03, 5.0] {
            gaps.observe(g);
        }
        let o = Outcome {
            streaming: true,
            itl: Some(&gaps),
            ..Default::default()
        };
        stats.finished(labels("m"), false, &o);
        stats.finished(labels("m"), false, &o);
        let s = &stats.snapshot()[0];
        assert_eq!(s.itl.count(), 6);
        assert_eq!(s.itl.counts[1], 2); // 0.002 <= 0.005
        assert_eq!(*s.itl.counts.last().unwrap(), 2); // 5 s is above the last bound
        assert!((s.itl.sum - 2.0 * 5.032).abs() < 1e-9);
    }

    #[test]
    fn atomic_histogram_counts_like_the_plain_one() {
        let a = AtomicHistogram::new(&[1.0, 2.0]);
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 2.0, 9.0] {
            a.observe(v);
            h.observe(v);
        }
        assert_eq!(a.snapshot(), h);
    }

    #[test]
    fn a_plugin_timing_is_bound_once_per_point_type_and_name() {
        let a = plugin_timing("Filter", "test-filter", "stats-test-a");
        let again = plugin_timing("Filter", "test-filter", "stats-test-a");
        assert!(Arc::ptr_eq(&a, &again));
        a.duration.observe(0.0003);
        let row = plugin_timings()
            .into_iter()
            .find(|t| t.2 == "stats-test-a")
            .expect("listed");
        assert_eq!(
            (row.0, row.1.as_str(), row.3.count()),
            ("Filter", "test-filter", 1)
        );
    }

    #[test]
    fn rewrites_count_per_rule_model_and_target() {
        let stats = RequestStats::new(10);
        stats.rewrote("canary", "m", "m-v2");
        stats.rewrote("canary", "m", "m-v2");
        stats.rewrote("canary", "m", "m-v1");
        let got: Vec<_> = stats
            .rewrites()
            .iter()
            .map(|r| (r.target.clone(), r.count))
            .collect();
        assert_eq!(got, vec![("m-v1".into(), 1), ("m-v2".into(), 2)]);
    }

    #[test]
    fn tpot_is_the_time_after_the_first_token_per_later_token_of_streams_only() {
        let stats = RequestStats::new(10);
        let streamed = Outcome {
            duration_s: Some(1.0),
            ttft_s: Some(0.2),
            output_tokens: Some(9),
            streaming: true,
            ..Default::default()
        };
        stats.finished(labels("m"), false, &streamed);
        let one_token = Outcome {
            output_tokens: Some(1),
            ..streamed
        };
        stats.finished(labels("m"), false, &one_token);
        let unary = Outcome {
            streaming: false,
            ..streamed
        };
        stats.finished(labels("m"), false, &unary);
        let s = &stats.snapshot()[0];
        assert_eq!(s.tpot.count(), 1);
        assert!((s.tpot.sum - 0.1).abs() < 1e-12);
    }
}
