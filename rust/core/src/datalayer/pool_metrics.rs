//! multicluster-metrics-data-source + multicluster-metrics-extractor (llm-d): for a
//! cluster-scoped EPP whose endpoints are other clusters (multicluster-file-discovery), each
//! endpoint's `/metrics` is polled and the pool averages its EPP publishes —
//! `llm_d_epp_average_kv_cache_utilization` and `llm_d_epp_average_queue_size` by default — are
//! written to the endpoint's attributes, where the multicluster scorers read them. A metric can
//! be narrowed by labels as upstream's spec strings do (`name{label="value",...}`). A failed poll
//! or a missing metric keeps the last value, as upstream.

use super::exposition::samples_of;
use super::tls::TlsClient;

pub const KV_CACHE_UTILIZATION_METRIC: &str = "llm_d_epp_average_kv_cache_utilization";
pub const QUEUE_SIZE_METRIC: &str = "llm_d_epp_average_queue_size";

/// A metric name with the labels its sample must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSpec {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl MetricSpec {
    /// `name` or `name{k="v",k2="v2"}`.
    pub fn parse(spec: &str) -> Result<MetricSpec, String> {
        let spec = spec.trim();
        let (name, labels) = match spec.split_once('{') {
            None => (spec, ""),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .ok_or_else(|| format!("'{spec}': the label set is not closed with '}}'"))?;
                (name.trim(), inner)
            }
        };
        let valid = |s: &str| {
            s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        if !valid(name) {
            return Err(format!("'{spec}': '{name}' is not a metric name"));
        }
        let mut out = Vec::new();
        for part in labels.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{spec}': label '{part}' is not key=\"value\""))?;
            let (k, v) = (k.trim(), v.trim());
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| format!("'{spec}': the value of label '{k}' is not quoted"))?;
            if !valid(k) || k.contains(':') {
                return Err(format!("'{spec}': '{k}' is not a label name"));
            }
            out.push((k.to_owned(), v.to_owned()));
        }
        Ok(MetricSpec {
            name: name.to_owned(),
            labels: out,
        })
    }

    /// The value of the first sample of this metric carrying every label of the spec.
    pub fn read(&self, text: &str) -> Option<f64> {
        samples_of(text, |n| n == self.name)
            .find(|s| {
                self.labels
                    .iter()
                    .all(|(k, v)| s.label(k).as_deref() == Some(v.as_str()))
            })
            .map(|s| s.value)
            .filter(|v| v.is_finite())
    }
}

/// Where and what the pool-metrics poller reads on each cluster endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolProbe {
    pub path: String,
    /// https (upstream's default for this source): how to connect; None: plain http.
    pub tls: Option<TlsClient>,
    pub kv_cache_utilization: MetricSpec,
    pub queue_size: MetricSpec,
}

impl PoolProbe {
    /// (KV-cache utilization, queue size) as found in one response.
    pub fn read(&self, text: &str) -> (Option<f64>, Option<f64>) {
        (
            self.kv_cache_utilization.read(text),
            self.queue_size.read(text),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_names_and_labels_and_name_what_is_wrong() {
        let s = MetricSpec::parse(r#"llm_d_epp_average_queue_size{name="pool-a", x="1"}"#).unwrap();
        assert_eq!(s.name, QUEUE_SIZE_METRIC);
        assert_eq!(
            s.labels,
            [("name".into(), "pool-a".into()), ("x".into(), "1".into())]
        );
        assert!(MetricSpec::parse("a{b=\"c\"")
            .unwrap_err()
            .contains("not closed"));
        assert!(MetricSpec::parse("a{b=c}")
            .unwrap_err()
            .contains("not quoted"));
        assert!(MetricSpec::parse("9a")
            .unwrap_err()
            .contains("not a metric name"));
    }

    #[test]
    fn the_first_matching_sample_is_read() {
        let text = "# TYPE llm_d_epp_average_queue_size gauge\n\
                    llm_d_epp_average_queue_size{name=\"a\"} 3\n\
                    llm_d_epp_average_queue_size{name=\"b\"} 7\n\
                    llm_d_epp_average_kv_cache_utilization{name=\"a\"} 0.25\n";
        let any = MetricSpec::parse(QUEUE_SIZE_METRIC).unwrap();
        let b = MetricSpec::parse(r#"llm_d_epp_average_queue_size{name="b"}"#).unwrap();
        let none = MetricSpec::parse(r#"llm_d_epp_average_queue_size{name="c"}"#).unwrap();
        assert_eq!(
            (any.read(text), b.read(text), none.read(text)),
            (Some(3.0), Some(7.0), None)
        );
        let probe = PoolProbe {
            path: "/metrics".into(),
            tls: None,
            kv_cache_utilization: MetricSpec::parse(KV_CACHE_UTILIZATION_METRIC).unwrap(),
            queue_size: any,
        };
        assert_eq!(probe.read(text), (Some(0.25), Some(3.0)));
    }
}
