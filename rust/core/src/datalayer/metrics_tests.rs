//! Metric extraction from text shaped like each engine's real /metrics output.

use super::*;

const VLLM_TEXT: &str = r#"# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12345.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.4215
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="4",running_lora_adapters="old-lora",waiting_lora_adapters=""} 1.7312e+09
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql-lora,chat-lora",waiting_lora_adapters="tool-lora"} 1.7315e+09
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",calculate_kv_scales="False",enable_prefix_caching="True",gpu_memory_utilization="0.9",num_cpu_blocks="None",num_gpu_blocks="27386",prefix_caching_hash_algo="builtin"} 1.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 52.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 52.0
"#;

const SGLANG_TEXT: &str = r#"# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="qwen/qwen2.5-7b",tp_rank="0"} 5.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="qwen/qwen2.5-7b",tp_rank="0"} 2.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="qwen/qwen2.5-7b",tp_rank="0"} 0.28
# HELP sglang:cache_config_info Information of the cache config
# TYPE sglang:cache_config_info gauge
sglang:cache_config_info{model_name="qwen/qwen2.5-7b",num_pages="120000",page_size="1"} 1.0
"#;

const TRTLLM_TEXT: &str = r#"# TYPE trtllm_num_requests_running gauge
trtllm_num_requests_running{model_name="llama"} 4
# TYPE trtllm_num_requests_waiting gauge
trtllm_num_requests_waiting{model_name="llama"} 9
# TYPE trtllm_kv_cache_utilization gauge
trtllm_kv_cache_utilization{model_name="llama"} 0.75
trtllm_kv_cache_tokens_per_block{model_name="llama"} 32
trtllm_kv_cache_max_blocks{model_name="llama"} 4096
"#;

fn merged(update: &MetricsUpdate) -> EndpointMetrics {
    let mut m = EndpointMetrics::default();
    m.merge(update);
    m
}

#[test]
fn vllm_load_and_cache_metrics_are_read() {
    let m = merged(&parse_metrics(VLLM_TEXT, Engine::Vllm));
    assert_eq!((m.waiting, m.running), (7, 3));
    assert!((m.kv_usage - 0.4215).abs() < 1e-12);
    assert_eq!((m.block_size, m.num_gpu_blocks), (16, 27386));
}

#[test]
fn vllm_lora_info_comes_from_the_newest_series() {
    let m = merged(&parse_metrics(VLLM_TEXT, Engine::Vllm));
    assert_eq!(m.running_loras, vec!["sql-lora", "chat-lora"]);
    assert_eq!(m.waiting_loras, vec!["tool-lora"]);
    assert_eq!(m.max_lora, 4);
}

#[test]
fn older_vllm_gpu_cache_usage_is_the_fallback() {
    let text = "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.3\nvllm:num_requests_waiting 1\n";
    assert_eq!(parse_metrics(text, Engine::Vllm).kv_usage, Some(0.3));
    let both = "vllm:gpu_cache_usage_perc 0.3\nvllm:kv_cache_usage_perc 0.6\n";
    assert_eq!(parse_metrics(both, Engine::Vllm).kv_usage, Some(0.6));
}

#[test]
fn counts_are_summed_over_per_model_series() {
    let text = "vllm:num_requests_waiting{model_name=\"a\"} 2\nvllm:num_requests_waiting{model_name=\"b\"} 5\n\
                vllm:kv_cache_usage_perc{engine=\"0\"} 0.2\nvllm:kv_cache_usage_perc{engine=\"1\"} 0.7\n";
    let u = parse_metrics(text, Engine::Vllm);
    assert_eq!(u.waiting, Some(7));
    assert_eq!(u.kv_usage, Some(0.7));
}

#[test]
fn sglang_metrics_and_page_geometry_are_read() {
    let m = merged(&parse_metrics(SGLANG_TEXT, Engine::Sglang));
    assert_eq!((m.waiting, m.running), (2, 5));
    assert!((m.kv_usage - 0.28).abs() < 1e-12);
    assert_eq!((m.block_size, m.num_gpu_blocks), (1, 120000));
}

#[test]
fn trtllm_serve_metrics_are_read() {
    let m = merged(&parse_metrics(TRTLLM_TEXT, Engine::Trtllm));
    assert_eq!((m.waiting, m.running), (9, 4));
    assert_eq!(m.kv_usage, 0.75);
    assert_eq!((m.block_size, m.num_gpu_blocks), (32, 4096));
}

#[test]
fn another_engines_names_are_ignored() {
    let u = parse_metrics(SGLANG_TEXT, Engine::Vllm);
    assert_eq!((u.waiting, u.running, u.kv_usage), (None, None, None));
}

#[test]
fn missing_metrics_keep_their_last_value_on_merge() {
    let mut m = merged(&parse_metrics(VLLM_TEXT, Engine::Vllm));
    m.merge(&parse_metrics(
        "vllm:num_requests_waiting 1\n",
        Engine::Vllm,
    ));
    assert_eq!((m.waiting, m.running, m.block_size), (1, 3, 16));
    assert_eq!(m.running_loras, vec!["sql-lora", "chat-lora"]);
}

#[test]
fn garbage_lines_are_counted_not_fatal() {
    let u = parse_metrics(
        "<html>oops</html>\nvllm:num_requests_waiting 4\n{}\n",
        Engine::Vllm,
    );
    assert_eq!(u.waiting, Some(4));
    assert_eq!(u.skipped_lines, 2);
}

#[test]
fn nan_and_infinite_values_do_not_become_load() {
    let u = parse_metrics(
        "vllm:num_requests_waiting NaN\nvllm:kv_cache_usage_perc +Inf\n",
        Engine::Vllm,
    );
    assert_eq!((u.waiting, u.kv_usage), (None, None));
}

#[test]
fn engine_names_include_the_upstream_trtllm_spelling() {
    assert_eq!(Engine::from_name("trtllm-serve"), Ok(Engine::Trtllm));
    assert!(Engine::from_name("tgi")
        .unwrap_err()
        .to_string()
        .contains("tgi"));
}
