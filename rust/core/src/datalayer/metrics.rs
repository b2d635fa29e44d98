//! What the scheduler needs from a model server's /metrics, per engine (vLLM, SGLang,
//! trtllm-serve), with the metric names the upstream EPP uses. A scrape yields a partial
//! `MetricsUpdate`; merging it keeps the last value of any metric the scrape lacked.

use super::exposition::{samples_of, Sample};

/// Model-server kind, chosen per endpoint by the `llm-d.ai/engine-type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    #[default]
    Vllm,
    Sglang,
    Trtllm,
}

pub const ENGINE_LABEL: &str = "llm-d.ai/engine-type";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine '{0}': expected vllm, sglang or trtllm")]
pub struct UnknownEngine(pub String);

impl Engine {
    pub fn from_name(name: &str) -> Result<Engine, UnknownEngine> {
        match name {
            "vllm" => Ok(Engine::Vllm),
            "sglang" => Ok(Engine::Sglang),
            "trtllm" | "trtllm-serve" => Ok(Engine::Trtllm),
            other => Err(UnknownEngine(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
            Engine::Trtllm => "trtllm",
        }
    }
}

/// Last known load and cache facts of one endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointMetrics {
    pub waiting: u32,
    pub running: u32,
    /// Fraction of the KV cache in use, 0..1.
    pub kv_usage: f64,
    pub running_loras: Vec<String>,
    pub waiting_loras: Vec<String>,
    pub max_lora: u32,
    pub block_size: u32,
    pub num_gpu_blocks: u64,
}

/// The metrics one scrape found; `None` where the text lacked the metric.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsUpdate {
    pub waiting: Option<u32>,
    pub running: Option<u32>,
    pub kv_usage: Option<f64>,
    pub loras: Option<LoraInfo>,
    pub block_size: Option<u32>,
    pub num_gpu_blocks: Option<u64>,
    /// Lines that were not valid samples (a sign of a broken or foreign endpoint).
    pub skipped_lines: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraInfo {
    pub running: Vec<String>,
    pub waiting: Vec<String>,
    pub max_lora: u32,
}

impl EndpointMetrics {
    pub fn merge(&mut self, update: &MetricsUpdate) {
        if let Some(v) = update.waiting {
            self.waiting = v;
        }
        if let Some(v) = update.running {
            self.running = v;
        }
        if let Some(v) = update.kv_usage {
            self.kv_usage = v;
        }
        if let Some(l) = &update.loras {
            self.running_loras.clone_from(&l.running);
            self.waiting_loras.clone_from(&l.waiting);
            self.max_lora = l.max_lora;
        }
        if let Some(v) = update.block_size {
            self.block_size = v;
        }
        if let Some(v) = update.num_gpu_blocks {
            self.num_gpu_blocks = v;
        }
    }
}

/// Metric names of one engine.
struct Names {
    waiting: &'static str,
    running: &'static str,
    kv_usage: &'static str,
    kv_usage_fallback: Option<&'static str>,
    lora_info: Option<&'static str>,
    cache_info: Option<&'static str>,
    /// trtllm-serve exports cache geometry as plain gauges instead of an info metric.
    block_size_gauge: Option<&'static str>,
    num_blocks_gauge: Option<&'static str>,
}

const VLLM: Names = Names {
    waiting: "vllm:num_requests_waiting",
    running: "vllm:num_requests_running",
    kv_usage: "vllm:kv_cache_usage_perc",
    kv_usage_fallback: Some("vllm:gpu_cache_usage_perc"),
    lora_info: Some("vllm:lora_requests_info"),
    cache_info: Some("vllm:cache_config_info"),
    block_size_gauge: None,
    num_blocks_gauge: None,
};

const SGLANG: Names = Names {
    waiting: "sglang:num_queue_reqs",
    running: "sglang:num_running_reqs",
    kv_usage: "sglang:token_usage",
    kv_usage_fallback: None,
    lora_info: None,
    cache_info: Some("sglang:cache_config_info"),
    block_size_gauge: None,
    num_blocks_gauge: None,
};

const TRTLLM: Names = Names {
    waiting: "trtllm_num_requests_waiting",
    running: "trtllm_num_requests_running",
    kv_usage: "trtllm_kv_cache_utilization",
    kv_usage_fallback: None,
    lora_info: None,
    cache_info: None,
    block_size_gauge: Some("trtllm_kv_cache_tokens_per_block"),
    num_blocks_gauge: Some("trtllm_kv_cache_max_blocks"),
};

fn names(engine: Engine) -> &'static Names {
    match engine {
        Engine::Vllm => &VLLM,
        Engine::Sglang => &SGLANG,
        Engine::Trtllm => &TRTLLM,
    }
}

/// Running totals while walking the samples.
#[derive(Default)]
struct Acc {
    waiting: Option<f64>,
    running: Option<f64>,
    kv: Option<f64>,
    kv_fallback: Option<f64>,
    /// (series value = its timestamp, info) of the newest LoRA series.
    lora: Option<(f64, LoraInfo)>,
    block_size: Option<u32>,
    num_blocks: Option<u64>,
}

/// Extract one engine's metrics from exposition text. Queue and running counts are summed
/// over series (per-model or per-engine labels); KV use takes the fullest series, since the
/// fullest cache is the one that saturates first.
pub fn parse_metrics(text: &str, engine: Engine) -> MetricsUpdate {
    let n = names(engine);
    let mut acc = Acc::default();
    let wanted = |name: &str| {
        [
            Some(n.waiting),
            Some(n.running),
            Some(n.kv_usage),
            n.kv_usage_fallback,
            n.lora_info,
            n.cache_info,
        ]
        .into_iter()
        .chain([n.block_size_gauge, n.num_blocks_gauge])
        .any(|w| w == Some(name))
    };
    let mut it = samples_of(text, wanted);
    for s in it.by_ref() {
        if !s.value.is_finite() {
            continue;
        }
        let name = s.name;
        if name == n.waiting {
            *acc.waiting.get_or_insert(0.0) += s.value;
        } else if name == n.running {
            *acc.running.get_or_insert(0.0) += s.value;
        } else if name == n.kv_usage {
            acc.kv = Some(acc.kv.map_or(s.value, |k| k.max(s.value)));
        } else if Some(name) == n.kv_usage_fallback {
            acc.kv_fallback = Some(acc.kv_fallback.map_or(s.value, |k| k.max(s.value)));
        } else if Some(name) == n.lora_info {
            take_newest_lora(&mut acc.lora, &s);
        } else if Some(name) == n.cache_info {
            read_cache_info(&mut acc, &s);
        } else if Some(name) == n.block_size_gauge {
            acc.block_size = Some(s.value as u32);
        } else if Some(name) == n.num_blocks_gauge {
            acc.num_blocks = Some(s.value as u64);
        }
    }
    MetricsUpdate {
        waiting: acc.waiting.map(count),
        running: acc.running.map(count),
        kv_usage: acc.kv.or(acc.kv_fallback).map(|k| k.clamp(0.0, 1.0)),
        loras: acc.lora.map(|(_, info)| info),
        block_size: acc.block_size,
        num_gpu_blocks: acc.num_blocks,
        skipped_lines: it.skipped,
    }
}

fn count(v: f64) -> u32 {
    v.max(0.0).min(u32::MAX as f64) as u32
}

/// vLLM keeps old LoRA series around; the one with the greatest value (its timestamp) is current.
fn take_newest_lora(slot: &mut Option<(f64, LoraInfo)>, s: &Sample<'_>) {
    if matches!(slot, Some((ts, _)) if *ts >= s.value) {
        return;
    }
    let list = |key: &str| -> Vec<String> {
        s.label(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let info = LoraInfo {
        running: list("running_lora_adapters"),
        waiting: list("waiting_lora_adapters"),
        max_lora: s
            .label("max_lora")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    };
    *slot = Some((s.value, info));
}

/// Cache geometry from an info metric: vLLM names the labels block_size / num_gpu_blocks,
/// SGLang page_size / num_pages.
fn read_cache_info(acc: &mut Acc, s: &Sample<'_>) {
    let num = |keys: [&str; 2]| {
        keys.iter()
            .find_map(|k| s.label(k))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(b) = num(["block_size", "page_size"]) {
        acc.block_size = Some(b.min(u32::MAX as u64) as u32);
    }
    if let Some(n) = num(["num_gpu_blocks", "num_pages"]) {
        acc.num_blocks = Some(n);
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
