//! dcgm-data-source + dcgm-extractor (llm-d): GPU utilization from the NVIDIA DCGM exporter.
//! The source polls `GET http://<endpoint ip>:<port><path>` (the exporter as a sidecar of the
//! model server); the extractor reads the `DCGM_FI_DEV_GPU_UTIL` gauge (percent, one sample per
//! GPU), keeps the samples of this endpoint's pod (those without a `pod` label too), takes the
//! busiest GPU and publishes it as the endpoint's `GPUUtilization` attribute in [0, 1].
//! A failed scrape or extraction keeps the last value, as upstream.

use super::exposition::samples_of;

/// The metric the DCGM exporter names GPU utilization (percent).
pub const GPU_UTIL_METRIC: &str = "DCGM_FI_DEV_GPU_UTIL";
/// The attribute the extractor publishes, and the producer type it is published under.
pub const GPU_UTILIZATION: &str = "GPUUtilization";
pub const DCGM_EXTRACTOR: &str = "dcgm-extractor";
const POD_LABEL: &str = "pod";

/// Where the GPU scraper polls each endpoint's exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuProbe {
    pub port: u16,
    pub path: String,
}

impl GpuProbe {
    /// The exporter's address next to the endpoint at `ip`.
    pub fn address(&self, ip: &str) -> String {
        if ip.contains(':') {
            format!("[{ip}]:{}", self.port)
        } else {
            format!("{ip}:{}", self.port)
        }
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
        };
        assert_eq!(probe.address("10.0.0.1"), "10.0.0.1:9400");
        assert_eq!(probe.address("fd00::1"), "[fd00::1]:9400");
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
