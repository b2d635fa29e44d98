//! dcgm-data-source + dcgm-extractor (llm-d): GPU utilization from the NVIDIA DCGM exporter.
//! The source polls `GET <scheme>://<host>:<port><path>`, the host being the endpoint's IP (the
//! exporter as a sidecar of the model server) or, with `useNodeAddress`, its Pod's node IP (the
//! exporter as a DaemonSet, one per node, labelling each sample with its pod); the extractor reads the `DCGM_FI_DEV_GPU_UTIL` gauge (percent, one sample per
//! GPU), keeps the samples of this endpoint's pod (those without a `pod` label too), takes the
//! busiest GPU and publishes it as the endpoint's `GPUUtilization` attribute in [0, 1].
//! A failed scrape or extraction keeps the last value, as upstream.

use super::endpoints::EndpointInfo;
use super::exposition::samples_of;
use super::tls::TlsClient;

/// The metric the DCGM exporter names GPU utilization (percent).
pub const GPU_UTIL_METRIC: &str = "DCGM_FI_DEV_GPU_UTIL";
/// The attribute the extractor publishes, and the producer type it is published under.
pub const GPU_UTILIZATION: &str = "GPUUtilization";
pub const DCGM_EXTRACTOR: &str = "dcgm-extractor";
const POD_LABEL: &str = "pod";

/// Where the GPU scraper polls each endpoint's exporter.
#[derive(Clone)]
pub struct GpuProbe {
    pub port: u16,
    pub path: String,
    /// Poll the exporter on the Pod's node (`status.hostIP`) rather than at the endpoint's IP.
    pub use_node_address: bool,
    /// https (`scheme: https`): how to connect; None: plain http, upstream's default.
    pub tls: Option<TlsClient>,
}

impl GpuProbe {
    /// The exporter's host for this endpoint: its IP, or with `use_node_address` its Pod's node
    /// address, which only Kubernetes mode knows.
    pub fn host<'a>(&self, info: &'a EndpointInfo) -> Result<&'a str, String> {
        if !self.use_node_address {
            return Ok(&info.ip);
        }
        info.pod.node_address.as_deref().ok_or_else(|| {
            "useNodeAddress: the Pod's node address (status.hostIP) is not known".to_owned()
        })
    }

    /// The exporter's address at `host`.
    pub fn address(&self, host: &str) -> String {
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The `pod` label value of this endpoint's samples: its Pod's name in Kubernetes mode (an
    /// endpoint's name adds the rank), else the endpoint's name.
    pub fn pod<'a>(&self, info: &'a EndpointInfo) -> &'a str {
        info.pod.name.as_deref().unwrap_or(&info.name)
    }
}

/// GPU utilization in [0, 1] of the pod named `pod` ("" = any sample) from one exporter
/// response, or why there is none. As upstream, the family must be a gauge.
pub fn gpu_utilization(text: &str, pod: &str) -> Result<f64, String> {
    let declared = text.lines().find_map(|l| {
        let rest = l.strip_prefix("# TYPE ")?.trim_start();
        let kind = rest.strip_prefix(GPU_UTIL_METRIC)?;
        kind.starts_with([' ', '\t']).then(|| kind.trim())
    });
    let mut found = None;
    for s in samples_of(text, |n| n == GPU_UTIL_METRIC) {
        let mine = pod.is_empty() || s.label(POD_LABEL).is_none_or(|p| p == pod);
        if mine {
            found = Some(found.map_or(s.value, |m: f64| m.max(s.value)));
        }
    }
    match (declared, found) {
        (None, None) => Err(format!(
            "metric {GPU_UTIL_METRIC} not found in the DCGM response"
        )),
        (Some(kind), _) if kind != "gauge" => Err(format!(
            "metric {GPU_UTIL_METRIC} is a {kind}, expected a gauge"
        )),
        (None, Some(_)) => Err(format!(
            "metric {GPU_UTIL_METRIC} has no '# TYPE {GPU_UTIL_METRIC} gauge' line"
        )),
        (Some(_), None) => Err(format!(
            "metric {GPU_UTIL_METRIC} present but has no samples for pod '{pod}'"
        )),
        (Some(_), Some(max)) => Ok(max.max(0.0) / 100.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What dcgm-exporter serves as a DaemonSet with DCGM_EXPORTER_KUBERNETES=true.
    const DAEMONSET: &str = "\
# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).
# TYPE DCGM_FI_DEV_SM_CLOCK gauge
DCGM_FI_DEV_SM_CLOCK{gpu=\"0\",UUID=\"GPU-a\",device=\"nvidia0\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"node-1\",container=\"vllm\",namespace=\"llm\",pod=\"vllm-0\"} 1980
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-a\",device=\"nvidia0\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"node-1\",container=\"vllm\",namespace=\"llm\",pod=\"vllm-0\"} 35
DCGM_FI_DEV_GPU_UTIL{gpu=\"1\",UUID=\"GPU-b\",device=\"nvidia1\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"node-1\",container=\"vllm\",namespace=\"llm\",pod=\"vllm-0\"} 80
DCGM_FI_DEV_GPU_UTIL{gpu=\"2\",UUID=\"GPU-c\",device=\"nvidia2\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"node-1\",container=\"vllm\",namespace=\"llm\",pod=\"vllm-1\"} 95
";

    #[test]
    fn the_busiest_gpu_of_the_pod_is_taken_and_normalised() {
        assert_eq!(gpu_utilization(DAEMONSET, "vllm-0"), Ok(0.8));
        assert_eq!(gpu_utilization(DAEMONSET, "vllm-1"), Ok(0.95));
        // No pod name: every sample counts.
        assert_eq!(gpu_utilization(DAEMONSET, ""), Ok(0.95));
    }

    #[test]
    fn sidecar_samples_without_a_pod_label_belong_to_every_pod() {
        let text = "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\nDCGM_FI_DEV_GPU_UTIL{gpu=\"0\"} 12\n";
        assert_eq!(gpu_utilization(text, "vllm-7"), Ok(0.12));
    }

    #[test]
    fn missing_foreign_or_untyped_families_are_errors() {
        let e = gpu_utilization(DAEMONSET, "other-pod").unwrap_err();
        assert!(e.contains("no samples for pod 'other-pod'"), "{e}");
        let e = gpu_utilization(
            "# TYPE DCGM_FI_DEV_SM_CLOCK gauge\nDCGM_FI_DEV_SM_CLOCK 1\n",
            "",
        )
        .unwrap_err();
        assert!(e.contains("not found"), "{e}");
        let e = gpu_utilization(
            "# TYPE DCGM_FI_DEV_GPU_UTIL counter\nDCGM_FI_DEV_GPU_UTIL 5\n",
            "",
        )
        .unwrap_err();
        assert!(e.contains("expected a gauge"), "{e}");
        let e = gpu_utilization("DCGM_FI_DEV_GPU_UTIL 5\n", "").unwrap_err();
        assert!(e.contains("TYPE"), "{e}");
    }

    #[test]
    fn ipv6_exporter_addresses_are_bracketed() {
        let probe = GpuProbe {
            port: 9400,
            path: "/metrics".into(),
            use_node_address: false,
            tls: None,
        };
        assert_eq!(probe.address("10.0.0.1"), "10.0.0.1:9400");
        assert_eq!(probe.address("fd00::1"), "[fd00::1]:9400");
    }

    /// `useNodeAddress`: the exporter is polled on each Pod's node, never at the endpoint (its
    /// 192.0.2.x documentation address would not answer), and each endpoint reads the samples
    /// of its Pod, whose name the endpoint's carries with a rank; an endpoint whose node is not
    /// known says so on its counters.
    #[test]
    fn a_daemonset_exporter_is_polled_on_the_pods_node_for_that_pods_samples() {
        use std::collections::HashMap;

        use crate::datalayer::endpoints::{PodFacts, PollSource};
        use crate::datalayer::test_server::MetricsServer;
        use crate::datalayer::EndpointSpec;
        use crate::scheduling::Router;

        let exporter = MetricsServer::start(DAEMONSET);
        let (node, port) = exporter.address.rsplit_once(':').unwrap();
        let config = format!(
            r#"{{"scrapeMetrics": false, "scrapeIntervalMs": 10,
                "gpuTelemetry": {{"port": {port}, "path": "/metrics", "intervalMs": 10,
                                 "useNodeAddress": true}}}}"#
        );
        let router = Router::from_json(&config).unwrap();
        let spec = |name: &str, i: u8| EndpointSpec {
            name: name.into(),
            address: format!("192.0.2.{i}:8000"),
            labels: vec![],
        };
        let on_node = |pod: &str| PodFacts {
            name: Some(pod.into()),
            node_address: Some(node.into()),
            ..Default::default()
        };
        let pods = HashMap::from([
            ("192.0.2.1:8000".to_owned(), on_node("vllm-0")),
            ("192.0.2.2:8000".to_owned(), on_node("vllm-1")),
        ]);
        let specs = [
            spec("vllm-0-rank-0", 1),
            spec("vllm-1-rank-0", 2),
            spec("no-node", 3),
        ];
        router.set_endpoints_with(&specs, &pods);
        router.start_scraper().unwrap();
        let snapshot = router.store().snapshot();
        let gpu = |i: usize| snapshot.endpoints[i].info.attributes.gpu_utilization();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while (gpu(0), gpu(1)) != (Some(0.8), Some(0.95)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!((gpu(0), gpu(1), gpu(2)), (Some(0.8), Some(0.95), None));
        let errors = snapshot.endpoints[2].info.attributes.source_errors();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            (errors[0].source, errors[0].poll_errors),
            (PollSource::Dcgm, 1)
        );
        let why = errors[0].last_error.as_deref().unwrap();
        assert!(why.contains("status.hostIP"), "{why}");
        router.stop_scraper();
    }

    /// The GPU scraper against a real exporter-shaped server on 127.0.0.1, through the Router:
    /// the endpoint-attribute filter drops the pod whose GPU runs hot, and follows changes.
    #[test]
    fn a_router_polls_the_exporter_and_filters_on_gpu_utilization() {
        use crate::datalayer::test_server::MetricsServer;
        use crate::datalayer::EndpointSpec;
        use crate::scheduling::Router;

        let exporter = MetricsServer::start(DAEMONSET);
        let port = exporter.address.rsplit_once(':').unwrap().1;
        let config = format!(
            r#"{{"scrapeMetrics": false, "scrapeIntervalMs": 10,
                "gpuTelemetry": {{"port": {port}, "path": "/metrics", "intervalMs": 10}},
                "plugins": [{{"type": "endpoint-attribute-filter", "name": "gpu",
                  "parameters": {{"attribute": "GPUUtilization", "producer": "dcgm-extractor",
                    "onMissing": "Fail",
                    "algorithm": {{"type": "threshold", "threshold": {{"operator": "LessThanOrEqual", "value": 0.9}}}}}}}},
                  {{"type": "max-score-picker"}}],
                "schedulingProfiles": [{{"name": "default", "plugins": [{{"pluginRef": "gpu"}}, {{"pluginRef": "max-score-picker"}}]}}],
                "stalenessMs": 3600000}}"#
        );
        let router = Router::from_json(&config).unwrap();
        // Both pods share the exporter's node address (DaemonSet); the pod label tells them apart.
        let spec = |name: &str, port: u16| EndpointSpec {
            name: name.into(),
            address: format!("127.0.0.1:{port}"),
            labels: vec![],
        };
        router.set_endpoints(&[spec("vllm-0", 8000), spec("vllm-1", 8001)]);
        for a in ["127.0.0.1:8000", "127.0.0.1:8001"] {
            router.ingest_metrics(
                a,
                "vllm:num_requests_waiting 0\n",
                crate::datalayer::Engine::Vllm,
            );
        }
        router.start_scraper().unwrap();
        let gpu = |i: usize| {
            router.store().snapshot().endpoints[i]
                .info
                .attributes
                .gpu_utilization()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while (gpu(0), gpu(1)) != (Some(0.8), Some(0.95)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!((gpu(0), gpu(1)), (Some(0.8), Some(0.95)));
        let body = br#"{"model": "m", "prompt": "hi"}"#;
        for _ in 0..5 {
            let d = router.route("/v1/completions", body, None, None).unwrap();
            assert_eq!(d.primary(), "127.0.0.1:8000");
            router.release(d.primary());
        }
        // vllm-0 heats up, vllm-1 cools down: the filter follows.
        exporter.set_body(&DAEMONSET.replace("} 80", "} 97").replace("} 95", "} 10"));
        while (gpu(0), gpu(1)) != (Some(0.97), Some(0.1)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let d = router.route("/v1/completions", body, None, None).unwrap();
        assert_eq!(d.primary(), "127.0.0.1:8001");
        router.stop_scraper();
    }

    #[test]
    fn gpu_plugins_without_a_dcgm_source_are_refused() {
        let config = r#"{"plugins": [{"type": "endpoint-attribute-scorer", "name": "g",
            "parameters": {"attributeKey": "GPUUtilization", "producer": "dcgm-extractor",
              "algorithm": {"type": "linear_lower_is_better"}}}]}"#;
        let e = crate::scheduling::Router::from_json(config).err().unwrap();
        assert!(
            e.0.contains("'g' (endpoint-attribute-scorer)") && e.0.contains("dcgm-data-source"),
            "{e}"
        );
    }
}
