"""parse_metrics: model-server /metrics text -> EndpointMetrics, per engine."""

import pytest

from sluicegate import _core
from sluicegate.errors import ConfigError

VLLM = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.5
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="2",running_lora_adapters="old",waiting_lora_adapters=""} 1.7e+09
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql,chat",waiting_lora_adapters="tool"} 1.8e+09
vllm:cache_config_info{block_size="16",num_gpu_blocks="2048",cache_dtype="auto"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 4.0
"""


def test_vllm_text_gives_load_cache_and_lora_facts():
    m = _core.parse_metrics(VLLM, "vllm")
    assert (m.waiting, m.running, m.kv_usage) == (7, 3, 0.5)
    assert (m.block_size, m.num_gpu_blocks) == (16, 2048)
    assert (m.running_loras, m.waiting_loras, m.max_lora) == (["sql", "chat"], ["tool"], 2)


def test_sglang_names_are_read_for_the_sglang_engine():
    text = b'sglang:num_queue_reqs{tp_rank="0"} 4\nsglang:num_running_reqs{tp_rank="0"} 6\nsglang:token_usage 0.2\n'
    m = _core.parse_metrics(text, "sglang")
    assert (m.waiting, m.running, m.kv_usage) == (4, 6, 0.2)


def test_trtllm_serve_names_are_read_for_the_trtllm_engine():
    text = b"trtllm_num_requests_waiting 2\ntrtllm_num_requests_running 5\ntrtllm_kv_cache_utilization 0.9\n"
    m = _core.parse_metrics(text, "trtllm")
    assert (m.waiting, m.running, m.kv_usage) == (2, 5, 0.9)


def test_garbage_and_missing_metrics_give_zero_values():
    m = _core.parse_metrics(b"<html>\nnot metrics at all\n", "vllm")
    assert (m.waiting, m.running, m.kv_usage, m.running_loras) == (0, 0, 0.0, [])


def test_unknown_engine_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="tgi"):
        _core.parse_metrics(VLLM, "tgi")
