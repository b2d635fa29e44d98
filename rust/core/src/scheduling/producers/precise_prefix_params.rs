//! precise-prefix-cache-producer's parameters in upstream's shape (llm-d-kv-cache's
//! `tokenProcessorConfig`, `indexerConfig`, `kvEventsConfig`, plus `speculativeIndexing` /
//! `speculativeTTL`), and sluicegate's earlier flat `blockSize` / `socketPort` / `topicFilter`.

use std::time::Duration;

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenProcessorConfig {
    /// Deprecated upstream in favour of blockSizeTokens.
    pub block_size: usize,
    pub block_size_tokens: usize,
    /// Upstream's seed of the block-key chain; also the engines' PYTHONHASHSEED, against which
    /// sluicegate checks the engine hashes events carry (a wrong seed shows at once).
    pub hash_seed: String,
    /// Only upstream's default, "cbor-fnv", is implemented.
    pub hash_algorithm: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct IndexerConfig {
    pub kv_block_index_config: KvBlockIndexConfig,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct KvBlockIndexConfig {
    /// Selects the index shared through Redis / Valkey; absent: in memory.
    pub redis_config: Option<RedisConfig>,
    pub valkey_config: Option<RedisConfig>,
    pub enable_metrics: bool,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default, rename_all = "camelCase")]
pub struct RedisConfig {
    /// "redis://host:port", "host:port" or "valkey://host:port".
    pub address: String,
}

#[derive(Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KvEventsConfig {
    /// The ZMQ endpoint the EPP binds and every engine's publisher dials.
    pub zmq_endpoint: String,
    /// Default "kv@" (upstream) with a zmqEndpoint; "" when dialling each pod.
    pub topic_filter: Option<String>,
    pub concurrency: usize,
    pub engine_type: String,
    /// Upstream's per-pod subscribers (the EPP dials each pod's publisher).
    pub discover_pods: bool,
    pub pod_discovery_config: PodDiscoveryConfig,
}

impl Default for KvEventsConfig {
    fn default() -> Self {
        KvEventsConfig {
            zmq_endpoint: String::new(),
            topic_filter: None,
            concurrency: 4,
            engine_type: "vllm".into(),
            discover_pods: false,
            pod_discovery_config: PodDiscoveryConfig::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodDiscoveryConfig {
    pub socket_port: u16,
    /// The port of each engine's replay socket (vLLM's `replay_endpoint`, a ZMQ ROUTER); 0 or
    /// below: no replay (upstream's default).
    pub replay_socket_port: i64,
}

impl Default for PodDiscoveryConfig {
    fn default() -> Self {
        PodDiscoveryConfig {
            socket_port: 5557,
            replay_socket_port: 0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ProducerParams {
    pub token_processor_config: TokenProcessorConfig,
    pub indexer_config: IndexerConfig,
    pub kv_events_config: KvEventsConfig,
    pub speculative_indexing: bool,
    /// A Go duration ("2s", "500ms"); default 2s.
    #[serde(rename = "speculativeTTL")]
    pub speculative_ttl: String,
    // sluicegate's earlier flat shape.
    pub block_size: Option<usize>,
    pub socket_port: Option<u16>,
    pub topic_filter: Option<String>,
}

/// The parameters resolved, defaults applied.
pub struct Resolved {
    pub block_tokens: usize,
    pub hash_seed: String,
    pub zmq_endpoint: String,
    pub topic_filter: String,
    pub socket_port: u16,
    /// 0: the engines keep no replay socket.
    pub replay_socket_port: u16,
    pub speculative_ttl: Option<Duration>,
    pub redis: Option<RedisConfig>,
}

/// A Go duration of one unit ("2s", "250ms", "1m", "1.5s").
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

impl ProducerParams {
    pub fn resolve(self) -> Result<Resolved, String> {
        let tp = &self.token_processor_config;
        if self.block_size == Some(0) {
            return Err("parameters.blockSize: must be >= 1".into());
        }
        let block_tokens = [
            tp.block_size_tokens,
            tp.block_size,
            self.block_size.unwrap_or(0),
        ]
        .into_iter()
        .find(|&n| n > 0)
        .unwrap_or(16);
        if !matches!(tp.hash_algorithm.as_str(), "" | "cbor-fnv") {
            return Err(format!(
                "parameters.tokenProcessorConfig.hashAlgorithm: {:?} is not supported (only \"cbor-fnv\")",
                tp.hash_algorithm
            ));
        }
        if self.kv_events_config.engine_type != "vllm" {
            return Err(format!(
                "parameters.kvEventsConfig.engineType: {:?} is not supported (only \"vllm\")",
                self.kv_events_config.engine_type
            ));
        }
        let socket_port = self
            .socket_port
            .unwrap_or(self.kv_events_config.pod_discovery_config.socket_port);
        if socket_port == 0 {
            return Err("parameters.socketPort: must be a port number >= 1".into());
        }
        let replay = self
            .kv_events_config
            .pod_discovery_config
            .replay_socket_port;
        let replay_socket_port = u16::try_from(replay.max(0)).map_err(|_| {
            format!("parameters.kvEventsConfig.podDiscoveryConfig.replaySocketPort: {replay} is not a port number")
        })?;
        let speculative_ttl = if self.speculative_indexing {
            let text = if self.speculative_ttl.is_empty() {
                "2s"
            } else {
                &self.speculative_ttl
            };
            Some(parse_duration(text).ok_or_else(|| {
                format!("parameters.speculativeTTL: {text:?} is not a duration like \"2s\"")
            })?)
        } else {
            None
        };
        let kbi = self.indexer_config.kv_block_index_config;
        let zmq_endpoint = self.kv_events_config.zmq_endpoint;
        let topic_filter = self
            .topic_filter
            .or(self.kv_events_config.topic_filter)
            .unwrap_or_else(|| {
                if zmq_endpoint.is_empty() {
                    String::new()
                } else {
                    "kv@".into()
                }
            });
        let redis = kbi.redis_config.or(kbi.valkey_config);
        if let Some(r) = &redis {
            if r.address.is_empty() {
                return Err(
                    "parameters.indexerConfig.kvBlockIndexConfig.redisConfig.address: required"
                        .into(),
                );
            }
        }
        Ok(Resolved {
            block_tokens,
            hash_seed: self.token_processor_config.hash_seed,
            zmq_endpoint,
            topic_filter,
            socket_port,
            replay_socket_port,
            speculative_ttl,
            redis,
        })
    }
}
